//! The assembled model, its loading from the fused checkpoint, and the chat.

use biomedgpt_chem::{MolGraph, featurize};
use biomedgpt_esm::{Alphabet, Esm, EsmConfig};
use biomedgpt_gin::{Gin, GinConfig, GraphBatch, JumpingKnowledge};
use biomedgpt_nn::{apply_linear, linear};
use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
use biomedgpt_io::{Checkpoint, FloatType, SourceDType, WeightView};
use biomedgpt_llama::generation::ids_tensor;
use biomedgpt_llama::{DecoderInput, GenerationConfig, Llama, LlamaConfig, LlamaTokenizer, PrefixCache, Prompt};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor};

use crate::layout::Layout;
use crate::prompt::{ChatPrompt, DEFAULT_SYSTEM_PROMPT, Modality, split_at_placeholders};
use crate::r1::R1Config;
use crate::ModelError;

/// The reference's protein length limit in ESM tokens (1022 residues + `<cls>` + `<eos>`).
pub const MAX_PROTEIN_TOKENS: usize = 1024;

struct MoleculeEncoder {
    gin: Gin,
}

/// The encoders as one module (for an optimizer, when they train): the GIN and the ESM, absent
/// when the model has no such encoder.
#[derive(Module, Debug)]
pub struct Encoders {
    pub gin: Option<Gin>,
    pub esm: Option<Esm>,
}

struct ProteinEncoder {
    esm: Esm,
    alphabet: Alphabet,
    max_tokens: usize,
}

impl Encoders {
    /// The same encoders with weights from a file with the fused checkpoint's names (what
    /// [`Self::save`] writes); every encoder present must be there with its shapes.
    pub fn replaced_from(self, path: &std::path::Path, ty: FloatType, device: &Device) -> Result<Self, ModelError> {
        let ckpt = Checkpoint::open(path)?;
        let root = ckpt.root();
        let gin = match self.gin {
            Some(g) => Some(Gin::load(g.config(), &root.pp("mol_structure_encoder"), FloatType::F32, device)?),
            None => None,
        };
        let esm = match self.esm {
            Some(e) => Some(Esm::load(e.config(), &root.pp("prot_structure_encoder"), ty, device)?),
            None => None,
        };
        Ok(Encoders { gin, esm })
    }

    /// Every encoder tensor under the fused checkpoint's names (`mol_structure_encoder.gnns.0.mlp.0.weight`,
    /// `prot_structure_encoder.encoder.layer.0.attention.self.query.weight`), f32, PyTorch's layout.
    pub fn checkpoint_tensors(&self) -> Vec<biomedgpt_io::export::NamedTensor> {
        let mut out = Vec::new();
        if let Some(gin) = &self.gin {
            out.extend(biomedgpt_io::export::float_params(gin).into_iter().map(|mut t| {
                t.name = format!("mol_structure_encoder.{}", biomedgpt_gin::checkpoint_name(&t.name));
                t
            }));
        }
        if let Some(esm) = &self.esm {
            out.extend(biomedgpt_io::export::float_params(esm).into_iter().map(|mut t| {
                t.name = format!("prot_structure_encoder.{}", biomedgpt_esm::model::hf_name(&t.name));
                t
            }));
        }
        out
    }

    /// Writes [`Self::checkpoint_tensors`] as safetensors, atomically (what `encoder_weights` in
    /// biomedgpt.json loads).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        biomedgpt_io::export::write_f32_safetensors(path, &self.checkpoint_tensors())
    }
}

/// The trainable bridge between the encoders and the LLM: `proj_mol` (GIN width -> hidden) and
/// `proj_prot` (ESM width -> hidden), absent when the model has no such encoder.
#[derive(Module, Debug)]
pub struct Adapters {
    pub proj_mol: Option<Linear>,
    pub proj_prot: Option<Linear>,
}

impl Adapters {
    /// The same adapters with weights from a safetensors file (`proj_mol.weight` [hidden, width],
    /// `proj_mol.bias`, likewise `proj_prot.*`, PyTorch's layout); every adapter this model has
    /// must be there with its shape.
    pub fn replaced_from(self, path: &std::path::Path, ty: FloatType, device: &Device) -> Result<Self, ModelError> {
        let ckpt = Checkpoint::open(path)?;
        let root = ckpt.root();
        let reload = |layer: Option<Linear>, name: &str| -> Result<Option<Linear>, ModelError> {
            let Some(layer) = layer else { return Ok(None) };
            let [d_in, d_out] = layer.weight.val().dims();
            Ok(Some(linear(&root.pp(name), d_in, d_out, true, ty, device)?))
        };
        Ok(Adapters { proj_mol: reload(self.proj_mol, "proj_mol")?, proj_prot: reload(self.proj_prot, "proj_prot")? })
    }

    /// Writes the adapters as f32 safetensors in PyTorch's layout (what [`Self::replaced_from`]
    /// and the fused checkpoint's keys use), atomically.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut specs = Vec::new();
        let mut data: Vec<Vec<f32>> = Vec::new();
        for (name, layer) in [("proj_mol", &self.proj_mol), ("proj_prot", &self.proj_prot)] {
            let Some(layer) = layer else { continue };
            let weight = layer.weight.val().transpose().cast(DType::F32); // ours [in, out] -> [out, in]
            let [d_out, d_in] = weight.dims();
            specs.push(TensorSpec { name: format!("{name}.weight"), dtype: SourceDType::F32, shape: vec![d_out, d_in] });
            data.push(weight.into_data().try_to_vec::<f32>().map_err(|e| std::io::Error::other(format!("{e:?}")))?);
            if let Some(bias) = &layer.bias {
                let bias = bias.val().cast(DType::F32);
                specs.push(TensorSpec { name: format!("{name}.bias"), dtype: SourceDType::F32, shape: vec![d_out] });
                data.push(bias.into_data().try_to_vec::<f32>().map_err(|e| std::io::Error::other(format!("{e:?}")))?);
            }
        }
        write_streaming(path, &specs, &[("format", "pt")], |i, buf| {
            buf.extend(data[i].iter().flat_map(|v| v.to_le_bytes()));
            Ok(())
        })
    }

    /// The encoder width an adapter reads (`None` without that adapter).
    pub fn input_width(&self, modality: Modality) -> Option<usize> {
        let proj = match modality {
            Modality::Molecule => self.proj_mol.as_ref(),
            Modality::Protein => self.proj_prot.as_ref(),
        };
        proj.map(|p| p.weight.val().dims()[0])
    }

    /// Projects encoder features `[rows, width]` into the LLM's embedding space.
    pub fn project(&self, modality: Modality, features: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        let proj = match modality {
            Modality::Molecule => self.proj_mol.as_ref(),
            Modality::Protein => self.proj_prot.as_ref(),
        };
        let proj = proj.ok_or_else(|| ModelError::Unsupported(format!("this model has no {modality:?} adapter")))?;
        // Training keeps the adapters in f32 beside a half-precision LLM: the features come in
        // the LLM's dtype and the projection goes back to it.
        let dtype = features.dtype();
        Ok(apply_linear(proj, features.cast(proj.weight.val().dtype())).cast(dtype))
    }
}

/// BioMedGPT-10B, BioMedGPT-R1 (with `r1`), or any LLaMA-family model, text-only, when the
/// directory has no encoders.
pub struct BioMedGpt {
    pub llm: Llama,
    pub tokenizer: LlamaTokenizer,
    pub adapters: Adapters,
    molecule: Option<MoleculeEncoder>,
    protein: Option<ProteinEncoder>,
    pub system_prompt: String,
    /// `biomedgpt.json`'s notice, for the CLI to show.
    pub notice: Option<String>,
    /// BioMedGPT-R1's config.yaml: its chat prompt, generation defaults and context limit.
    pub r1: Option<R1Config>,
}

/// A molecule or protein given by the user.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Smiles(String),
    /// A molecule RDKit has already read (the server parses SMILES off its engine thread).
    Graph { smiles: String, graph: MolGraph },
    /// A protein sequence; `name` appears in error messages (FASTA id or "protein").
    Protein { name: String, sequence: String },
}

impl Input {
    /// A molecule's SMILES as given (R1's prompt quotes it).
    pub fn smiles(&self) -> Option<&str> {
        match self {
            Input::Smiles(s) | Input::Graph { smiles: s, .. } => Some(s),
            Input::Protein { .. } => None,
        }
    }

    pub fn modality(&self) -> Modality {
        match self {
            Input::Smiles(_) | Input::Graph { .. } => Modality::Molecule,
            Input::Protein { .. } => Modality::Protein,
        }
    }
}

/// The projections LoRA may adapt, as named in the checkpoint.
pub const LORA_TARGETS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// Merges LoRA factors from a safetensors file into the LLM's attention projections:
/// `W + scale * B A` (PyTorch layout; ours is transposed). Computed in f32, cast back.
pub fn merge_lora(mut llm: Llama, path: &std::path::Path, scale: f64) -> Result<Llama, ModelError> {
    let ckpt = Checkpoint::open(path)?;
    let root = ckpt.root();
    let device = llm.device();
    let mut merged = 0;
    for (i, layer) in llm.model.layers.iter_mut().enumerate() {
        let attn = &mut layer.self_attn;
        for (name, proj) in LORA_TARGETS.iter().zip([&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj, &mut attn.o_proj]) {
            let prefix = format!("model.layers.{i}.self_attn.{name}");
            if ckpt.info(&format!("{prefix}.lora_A.weight")).is_none() {
                continue;
            }
            if proj.is_quantized() {
                return Err(ModelError::Layout(format!("{prefix}: LoRA factors cannot be merged into block-quantized weights (load with --dtype f16 or f32)")));
            }
            let weight = proj.weight.val();
            let [d_in, d_out] = weight.dims();
            let view = root.pp(&prefix);
            let a_info = ckpt.info(&format!("{prefix}.lora_A.weight")).expect("present");
            let rank = a_info.shape.first().copied().unwrap_or(0);
            let a = view.pp("lora_A").load("weight", &[rank, d_in], FloatType::F32)?;
            let b = view.pp("lora_B").load("weight", &[d_out, rank], FloatType::F32)?;
            let a: Tensor<2> = Tensor::from_data(a, (&device, DType::F32));
            let b: Tensor<2> = Tensor::from_data(b, (&device, DType::F32));
            let delta = b.matmul(a).transpose().mul_scalar(scale); // [in, out]
            let dtype = weight.dtype();
            let updated = (weight.cast(DType::F32) + delta).cast(dtype);
            proj.weight = burn::module::Param::from_tensor(Tensor::from_data(updated.into_data(), (&device, dtype)));
            merged += 1;
        }
    }
    if merged == 0 {
        return Err(ModelError::Layout(format!("{}: no LoRA factors (model.layers.N.self_attn.*.lora_A.weight)", path.display())));
    }
    Ok(llm)
}

/// Rows of the GIN checkpoint that give its size: `gnns.{i}.mlp.0.weight` count and width.
fn gin_size(view: &WeightView, ckpt: &Checkpoint) -> Option<(usize, usize)> {
    let emb = ckpt.info(&view.key("x_embedding1.weight"))?;
    let layers = (0..).take_while(|i| ckpt.info(&view.key(&format!("gnns.{i}.mlp.0.weight"))).is_some()).count();
    Some((layers, emb.shape[1]))
}

/// The encoders of a model directory as [`BioMedGpt::load`] finds them: trained ones
/// (`encoder_weights`) before the fused checkpoint's, the GIN's size from its weights unless
/// `biomedgpt.json` says it, the ESM-2 where the directory has its config.
struct DirEncoderParts {
    gin: Option<Gin>,
    esm: Option<ProteinEncoder>,
}

fn load_encoders(layout: &Layout, fused_root: &WeightView, fused: &Checkpoint, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<DirEncoderParts, ModelError> {
    let encoder_ckpt = layout.encoder_weights.as_ref().map(Checkpoint::open).transpose()?;
    let (encoder_root, encoder_ckpt) = match &encoder_ckpt {
        Some(c) => (c.root(), c),
        None => (fused_root.clone(), fused),
    };
    let mol_view = encoder_root.pp("mol_structure_encoder");
    let gin = match gin_size(&mol_view, encoder_ckpt) {
        Some((found_layers, found_dim)) => {
            let s = &layout.settings;
            let gin_config = GinConfig {
                num_layer: s.gin_num_layer.unwrap_or(found_layers),
                emb_dim: s.gin_emb_dim.unwrap_or(found_dim),
                jk: JumpingKnowledge::Last,
                ..GinConfig::biomedgpt()
            };
            Some(Gin::load(&gin_config, &mol_view, FloatType::F32, device)?)
        }
        None => None,
    };
    let esm = match &layout.esm {
        Some(esm_dir) if esm_dir.join("config.json").is_file() => {
            let esm_config = EsmConfig::from_file(esm_dir.join("config.json")).map_err(biomedgpt_esm::EsmError::Config)?;
            let alphabet = biomedgpt_esm::alphabet_of_dir(esm_dir)?;
            let esm = Esm::load_with(&esm_config, &encoder_root.pp("prot_structure_encoder"), ty, keep_blocks, device)?;
            let max_tokens = layout.settings.max_protein_tokens.unwrap_or(MAX_PROTEIN_TOKENS);
            Some(ProteinEncoder { esm, alphabet, max_tokens })
        }
        _ => None,
    };
    Ok(DirEncoderParts { gin, esm })
}

/// The encoders of a BioMedGPT model directory alone, without its LLM (what `embed --model DIR`
/// reads): the GIN, and the ESM-2 with its alphabet and token limit, where the model has them.
pub struct DirEncoders {
    pub gin: Option<Gin>,
    /// The ESM-2, its alphabet, and the most tokens it reads (`<cls>` and `<eos>` included).
    pub esm: Option<(Esm, Alphabet, usize)>,
}

impl DirEncoders {
    /// Loads the encoders of the model directory `dir` (see [`Layout`]); `ty` is the ESM's dtype
    /// (the GIN runs in f32). A directory without fused weights has no encoders: an error.
    pub fn load(dir: &std::path::Path, ty: FloatType, device: &Device) -> Result<Self, ModelError> {
        let layout = Layout::resolve(dir)?;
        let Some(fused) = &layout.fused_weights else {
            return Err(ModelError::Layout(format!("{} is a text-only model: it has no molecule or protein encoder", dir.display())));
        };
        let ckpt = Checkpoint::open(fused)?;
        let parts = load_encoders(&layout, &ckpt.root(), &ckpt, ty, false, device)?;
        Ok(DirEncoders { gin: parts.gin, esm: parts.esm.map(|p| (p.esm, p.alphabet, p.max_tokens)) })
    }
}

impl BioMedGpt {
    /// Loads from a model directory (see [`Layout`]). `ty` is the dtype of the LLM, the ESM and
    /// the adapters; the GIN runs in f32 (it is small) and its output is cast.
    pub fn load(dir: &std::path::Path, ty: FloatType, device: &Device) -> Result<Self, ModelError> {
        Self::load_with_adapters_in(dir, ty, ty, device)
    }

    /// Loads a model directory with a dtype named as `--dtype` names it (`auto`: the LLM's
    /// stored dtype, GGUF blocks kept on the CPU; see [`biomedgpt_llama::load_dtype`]), as the
    /// CLI's commands and the Python package do.
    pub fn load_with_dtype(dir: &std::path::Path, dtype: &str, device: &Device) -> Result<Self, ModelError> {
        let layout = Layout::resolve(dir)?;
        // R1's config.yaml says the dtype (`llm.use_float16`), whatever the LLM's config.json names.
        let (ty, keep_blocks) = match &layout.r1 {
            Some(r1) if dtype == "auto" && !biomedgpt_llama::is_gguf(&layout.llm) => (if r1.llm.use_float16 { FloatType::F16 } else { FloatType::F32 }, false),
            _ => biomedgpt_llama::load_dtype::decide(dtype, &layout.llm, device).map_err(ModelError::Input)?,
        };
        Self::load_keeping_blocks(dir, ty, keep_blocks, device)
    }

    /// [`Self::load`], where an LLM in a GGUF file keeps its block-quantized projections in their
    /// blocks when `keep_blocks` (other layouts load as [`Self::load`]).
    pub fn load_keeping_blocks(dir: &std::path::Path, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, ModelError> {
        Self::load_inner(dir, ty, ty, keep_blocks, device)
    }

    /// As [`Self::load`], with the adapters in `adapter_ty` (training keeps them in f32 while
    /// a frozen LLM and ESM may be held in half precision).
    pub fn load_with_adapters_in(dir: &std::path::Path, ty: FloatType, adapter_ty: FloatType, device: &Device) -> Result<Self, ModelError> {
        Self::load_inner(dir, ty, adapter_ty, false, device)
    }

    fn load_inner(dir: &std::path::Path, ty: FloatType, adapter_ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, ModelError> {
        let layout = Layout::resolve(dir)?;
        let system_prompt = layout.settings.system_prompt.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
        // The LLM as a GGUF file (config and tokenizer in its metadata), or an HF directory.
        let gguf_llm = if biomedgpt_llama::is_gguf(&layout.llm) {
            Some(biomedgpt_llama::gguf::open(&layout.llm).map_err(biomedgpt_llama::OpenError::from)?)
        } else {
            None
        };
        let (mut config, mut tokenizer) = match &gguf_llm {
            Some((ckpt, config)) => {
                let g = ckpt.gguf().expect("opened as GGUF");
                (config.clone(), LlamaTokenizer::from_gguf(g).map_err(biomedgpt_llama::OpenError::from)?)
            }
            None => {
                let config = LlamaConfig::from_file(layout.llm.join("config.json")).map_err(biomedgpt_llama::OpenError::from)?;
                let tokenizer = LlamaTokenizer::for_model(layout.llm.join("tokenizer.json"), &config)?;
                (config, tokenizer)
            }
        };
        let Some(fused) = &layout.fused_weights else {
            let llm = match &gguf_llm {
                Some((ckpt, _)) => Llama::load_with(&config, &ckpt.root(), ty, keep_blocks, device)?,
                None => Llama::load(&config, &Checkpoint::open(&layout.llm)?.root(), ty, device)?,
            };
            let adapters = Adapters { proj_mol: None, proj_prot: None };
            return Ok(BioMedGpt { llm, tokenizer, adapters, molecule: None, protein: None, system_prompt, notice: layout.settings.notice, r1: None });
        };

        let ckpt = Checkpoint::open(fused)?;
        let root = ckpt.root();
        let llm_view = root.pp("llm");
        let mut llm = if let Some((llm_ckpt, _)) = &gguf_llm {
            // A GGUF LLM beside the encoders (what `convert --dtype q4_k_m` writes): its own
            // vocabulary, `[PAD]` included.
            Llama::load_with(&config, &llm_ckpt.root(), ty, keep_blocks, device)?
        } else {
            // The reference adds `[PAD]` (id 32000) and resizes the embeddings (R1 resizes them to
            // its tokenizer's length): the weights, not the LM's config.json, know the
            // vocabulary size.
            let embed_key = llm_view.key("model.embed_tokens.weight");
            let rows = ckpt
                .info(&embed_key)
                .ok_or_else(|| ModelError::Layout(format!("{}: no `{embed_key}`: not a BioMedGPT fused checkpoint", fused.display())))?
                .shape[0];
            if rows != config.vocab_size {
                if layout.r1.is_none() && rows == config.vocab_size + 1 && tokenizer.token_to_id("[PAD]").is_none() {
                    tokenizer.add_special_token("[PAD]", rows as u32 - 1)?;
                }
                config.vocab_size = rows;
            }
            match &layout.llm_weights {
                Some(path) => Llama::load(&config, &Checkpoint::open(path)?.root(), ty, device)?,
                None => Llama::load(&config, &llm_view, ty, device)?,
            }
        };
        if let Some((path, scale)) = &layout.lora {
            llm = merge_lora(llm, path, *scale)?;
        }
        let hidden = config.hidden_size;

        let encoders = load_encoders(&layout, &root, &ckpt, ty, keep_blocks, device)?;
        let mut adapters = Adapters { proj_mol: None, proj_prot: None };
        let molecule = match encoders.gin {
            Some(gin) => {
                adapters.proj_mol = Some(linear(&root.pp("proj_mol"), gin.config().emb_dim, hidden, true, adapter_ty, device)?);
                Some(MoleculeEncoder { gin })
            }
            None => None,
        };
        let protein = match encoders.esm {
            Some(encoder) => {
                adapters.proj_prot = Some(linear(&root.pp("proj_prot"), encoder.esm.config().hidden_size, hidden, true, adapter_ty, device)?);
                Some(encoder)
            }
            None => None,
        };
        if let Some(path) = &layout.adapters {
            adapters = adapters.replaced_from(path, adapter_ty, device)?;
        }
        Ok(BioMedGpt { llm, tokenizer, adapters, molecule, protein, system_prompt, notice: layout.settings.notice, r1: layout.r1 })
    }

    /// An empty prompt in this model's chat form (BioMedGPT-10B's with its system prompt, or R1's).
    pub fn new_prompt(&self) -> ChatPrompt {
        match &self.r1 {
            Some(r1) => ChatPrompt::r1(r1.sep_tokens.clone()),
            None => ChatPrompt::new(self.system_prompt.clone()),
        }
    }

    /// The positions of an assembled prompt the model reads: R1 keeps the last ones when the
    /// prompt and `max_length` pass `context_max_length` (as its chat does); others keep all.
    pub fn fit_to_context(&self, embeds: Tensor<3>) -> Tensor<3> {
        let Some(r1) = &self.r1 else { return embeds };
        let t = embeds.dims()[1];
        let kept = r1.kept_positions(t);
        if kept < t { embeds.narrow(1, t - kept, kept) } else { embeds }
    }

    /// A replica on another device, for data-parallel training: every module forked (parameter
    /// ids, gradient tracking and LoRA reparameterizations kept), tokenizer and settings copied.
    pub fn fork(&self, device: &Device) -> BioMedGpt {
        let encoders = self.encoders().fork(device);
        BioMedGpt {
            llm: self.llm.clone().fork(device),
            tokenizer: self.tokenizer.clone(),
            adapters: self.adapters.clone().fork(device),
            molecule: encoders.gin.map(|gin| MoleculeEncoder { gin }),
            protein: self.protein.as_ref().zip(encoders.esm).map(|(p, esm)| ProteinEncoder {
                esm,
                alphabet: p.alphabet.clone(),
                max_tokens: p.max_tokens,
            }),
            system_prompt: self.system_prompt.clone(),
            notice: self.notice.clone(),
            r1: self.r1.clone(),
        }
    }

    /// Stops the encoders' parameters from tracking gradients (on an autodiff device). Their
    /// outputs then carry no autodiff graph, which would otherwise be kept for every example
    /// encoded until a backward pass that never comes.
    pub fn freeze_encoders(&mut self) {
        if let Some(enc) = self.molecule.as_mut() {
            enc.gin = enc.gin.clone().no_grad();
        }
        if let Some(enc) = self.protein.as_mut() {
            enc.esm = enc.esm.clone().no_grad();
        }
    }

    /// The encoders (shared tensors, not copies), e.g. to hand them to an optimizer.
    pub fn encoders(&self) -> Encoders {
        Encoders { gin: self.molecule.as_ref().map(|m| m.gin.clone()), esm: self.protein.as_ref().map(|p| p.esm.clone()) }
    }

    /// The protein encoder's alphabet and the most tokens it reads (`<cls>`, `<eos>` included).
    pub fn protein_alphabet(&self) -> Option<(&Alphabet, usize)> {
        self.protein.as_ref().map(|p| (&p.alphabet, p.max_tokens))
    }

    /// Puts back encoders taken with [`Self::encoders`] (e.g. after an optimizer step); each must
    /// be present exactly when the model has that encoder.
    pub fn set_encoders(&mut self, encoders: Encoders) -> Result<(), ModelError> {
        if encoders.gin.is_some() != self.molecule.is_some() || encoders.esm.is_some() != self.protein.is_some() {
            return Err(ModelError::Input("set_encoders: the encoders do not match the model's".into()));
        }
        if let (Some(m), Some(gin)) = (self.molecule.as_mut(), encoders.gin) {
            m.gin = gin;
        }
        if let (Some(p), Some(esm)) = (self.protein.as_mut(), encoders.esm) {
            p.esm = esm;
        }
        Ok(())
    }

    /// Whether an encoder's parameters track gradients (they train): features must then be
    /// computed anew at every step rather than reused.
    pub fn encoders_track_gradients(&self) -> bool {
        let gin = self.molecule.as_ref().is_some_and(|m| m.gin.x_embedding1.weight.val().is_require_grad());
        let esm = self.protein.as_ref().is_some_and(|p| p.esm.word_embeddings.weight.val().is_require_grad());
        gin || esm
    }

    pub fn has_molecule_encoder(&self) -> bool {
        self.molecule.is_some()
    }

    pub fn has_protein_encoder(&self) -> bool {
        self.protein.is_some()
    }

    /// Projected features `[rows, hidden]` in the LLM's dtype: per atom for a molecule, per ESM
    /// token (`<cls>` and `<eos>` included) for a protein. Long proteins are truncated as the
    /// reference does; the returned count says by how many residues.
    pub fn encode(&self, input: &Input) -> Result<(Tensor<2>, usize), ModelError> {
        let (modality, features, truncated) = self.features(input)?;
        Ok((self.adapters.project(modality, features)?, truncated))
    }

    /// Encoder features before the adapter, `[rows, encoder width]` in the LLM's dtype (what
    /// training keeps fixed and may cache), with the modality and the residues truncated.
    /// Most positions an input of this kind takes in the prompt, if bounded: a protein is cut to
    /// the ESM encoder's token limit (`<cls>` and `<eos>` included); molecules take one position
    /// per atom, bounded by the featurizer's atom limit.
    pub fn max_input_positions(&self, modality: Modality) -> usize {
        match modality {
            Modality::Molecule => biomedgpt_chem::MAX_ATOMS,
            Modality::Protein => self.protein.as_ref().map_or(0, |p| p.max_tokens),
        }
    }

    fn molecule_encoder(&self) -> Result<&MoleculeEncoder, ModelError> {
        self.molecule.as_ref().ok_or_else(|| {
            ModelError::Unsupported("this model has no molecule encoder (no mol_structure_encoder.* weights)".into())
        })
    }

    /// GIN features `[atoms, 300]` of a parsed molecule, in the LLM's dtype.
    fn molecule_features(&self, graph: &MolGraph) -> Result<(Modality, Tensor<2>, usize), ModelError> {
        let enc = self.molecule_encoder()?;
        let batch = GraphBatch::new(std::slice::from_ref(graph), &self.llm.device())?;
        Ok((Modality::Molecule, enc.gin.forward(&batch).cast(self.llm.dtype()), 0))
    }

    pub fn features(&self, input: &Input) -> Result<(Modality, Tensor<2>, usize), ModelError> {
        let dtype = self.llm.dtype();
        match input {
            // The missing encoder is said before the SMILES is read.
            Input::Smiles(smiles) => self.molecule_encoder().and_then(|_| self.molecule_features(&featurize(smiles)?)),
            Input::Graph { graph, .. } => self.molecule_features(graph),
            Input::Protein { name, sequence } => {
                let enc = self.protein.as_ref().ok_or_else(|| {
                    ModelError::Unsupported(
                        "this model has no protein encoder (needs esm/config.json and prot_structure_encoder.* weights)".into(),
                    )
                })?;
                let encoded = enc.alphabet.encode(name, sequence, enc.max_tokens, true)?;
                let states = enc.esm.forward(std::slice::from_ref(&encoded.ids), false).last_hidden_state;
                let [_, t, h] = states.dims();
                Ok((Modality::Protein, states.reshape([t, h]).cast(dtype), encoded.truncated))
            }
        }
    }

    /// Input embeddings `[1, T, hidden]` of a rendered prompt, with `items` (in placeholder
    /// order) spliced in; also the token ids of each text segment.
    pub fn prompt_embeds(&self, prompt: &str, items: &[(Modality, Tensor<2>)]) -> Result<(Tensor<3>, Vec<Vec<u32>>), ModelError> {
        let (segments, slots) = split_at_placeholders(prompt);
        if slots.len() != items.len() || slots.iter().zip(items).any(|(s, (m, _))| s != m) {
            return Err(ModelError::Input(format!(
                "the prompt has placeholders {slots:?} but {:?} were encoded",
                items.iter().map(|(m, _)| *m).collect::<Vec<_>>()
            )));
        }
        let device = self.llm.device();
        let mut pieces = Vec::with_capacity(segments.len() + items.len());
        let mut segment_ids = Vec::with_capacity(segments.len());
        for (i, segment) in segments.iter().enumerate() {
            // BioMedGPT-10B: BOS on the first segment only; R1: never.
            let ids = self.tokenizer.encode(segment, i == 0 && self.r1.is_none())?;
            if !ids.is_empty() {
                pieces.push(self.llm.embed(ids_tensor(&ids, 1, &device)));
            }
            segment_ids.push(ids);
            if let Some((_, features)) = items.get(i) {
                pieces.push(features.clone().unsqueeze_dim::<3>(0));
            }
        }
        Ok((Tensor::cat(pieces, 1), segment_ids))
    }

    /// Logits `[T, vocab]` (f32) of every position of an assembled prompt.
    pub fn prompt_logits(&self, embeds: Tensor<3>) -> Tensor<2> {
        let mut cache = self.llm.new_cache(1);
        let logits = self.llm.forward(DecoderInput::Embeds(embeds), None, &mut cache);
        let [_, t, v] = logits.dims();
        logits.reshape([t, v]).cast(DType::F32)
    }

    /// What the repetition penalty sees before a chat's answer: BioMedGPT-10B's reference held a
    /// BOS as the only input id next to the prompt's embeddings; R1's (transformers >= 4.38)
    /// starts from no ids at all.
    pub fn chat_penalty_ids(&self) -> Vec<u32> {
        match &self.r1 {
            Some(_) => Vec::new(),
            None => vec![self.llm.config().bos_token_id.unwrap_or(1)],
        }
    }

    /// The reference's stop ids: the config's EOS, and for BioMedGPT-10B id 0 (`<unk>`, which
    /// it reads as an end).
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = self.llm.config().eos_token_ids();
        if self.r1.is_none() && !ids.contains(&0) {
            ids.push(0);
        }
        ids
    }
}

/// The answer as the reference returns it from the decoded ids (special tokens dropped): the
/// part after the last "Assistant:", trimmed.
pub fn answer_text(decoded: &str) -> String {
    decoded.rsplit("Assistant:").next().unwrap_or("").trim().to_string()
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The text as the reference returns it: special tokens dropped; BioMedGPT-10B: the part
    /// after the last "Assistant:", trimmed; R1: all of it, thinking included (see
    /// [`crate::split_reasoning`]).
    pub text: String,
    /// Generated ids, the final EOS included when one ended generation.
    pub token_ids: Vec<u32>,
    /// Positions of the assembled prompt the model read (R1: after cutting it to its context).
    pub prompt_tokens: usize,
}

/// A multi-turn conversation: the prompt and the encoded molecules and proteins in it.
pub struct Chat<'m> {
    model: &'m BioMedGpt,
    pub prompt: ChatPrompt,
    items: Vec<(Modality, Tensor<2>)>,
    /// R1: the answer's length is bounded as the reference bounds it, by config.yaml's
    /// `max_length` counting the prompt, not by the configuration's `max_new_tokens` (the CLI
    /// turns this off when `--max-new-tokens` is given). No effect on other models.
    pub length_from_config: bool,
    /// Keys and values of earlier turns' prompts: a turn prefills only what the last did not
    /// (answers are the same without it). None by default.
    pub prefix: Option<PrefixCache>,
}

impl<'m> Chat<'m> {
    pub fn new(model: &'m BioMedGpt) -> Self {
        Chat { model, prompt: model.new_prompt(), items: Vec::new(), length_from_config: true, prefix: None }
    }

    /// Encodes a molecule or protein and adds its message; returns residues lost to truncation.
    pub fn add(&mut self, input: &Input) -> Result<usize, ModelError> {
        let (features, truncated) = self.model.encode(input)?;
        let modality = input.modality();
        self.items.push((modality, features));
        self.prompt.push_modality(modality, input.smiles().unwrap_or(""));
        Ok(truncated)
    }

    pub fn ask(&mut self, question: &str) -> Result<(), ModelError> {
        if question.trim().is_empty() {
            return Err(ModelError::Input("the question is empty".into()));
        }
        self.prompt.push_question(question);
        Ok(())
    }

    pub fn reset(&mut self) {
        self.prompt.messages.clear();
        self.items.clear();
    }

    /// The assembled input embeddings `[1, T, hidden]` and each text segment's ids.
    pub fn embeds(&self) -> Result<(Tensor<3>, Vec<Vec<u32>>), ModelError> {
        self.model.prompt_embeds(&self.prompt.render(), &self.items)
    }

    /// Generates the assistant's answer and records it in the conversation. `on_token` sees ids
    /// as they are chosen (greedy and sampling; beam search reports at the end).
    pub fn answer(&mut self, config: &GenerationConfig, on_token: &mut dyn FnMut(u32)) -> Result<Answer, ModelError> {
        self.answer_until(config, on_token, &|| false)
    }

    /// [`Self::answer`], stopping between tokens once `stop()` says so (an interrupt): the answer
    /// so far is returned.
    pub fn answer_until(&mut self, config: &GenerationConfig, on_token: &mut dyn FnMut(u32), stop: &dyn Fn() -> bool) -> Result<Answer, ModelError> {
        let (embeds, _) = self.embeds()?;
        let embeds = self.model.fit_to_context(embeds);
        let prompt_tokens = embeds.dims()[1];
        let mut config = config.clone();
        if let Some(r1) = self.model.r1.as_ref().filter(|_| self.length_from_config) {
            config.max_new_tokens = r1.max_new_tokens(prompt_tokens);
        }
        let penalty_ids = self.model.chat_penalty_ids();
        let output = biomedgpt_llama::generate_cached(&self.model.llm, Prompt::Embeds { embeds, penalty_ids }, &config, on_token, stop, self.prefix.as_mut())?;
        let mut ids = output.tokens.clone();
        if output.stopped_by_eos {
            ids.pop();
        }
        let decoded = self.model.tokenizer.decode(&ids)?;
        // R1's chat keeps the decoded text whole (its thinking included).
        let text = if self.model.r1.is_some() { decoded } else { answer_text(&decoded) };
        self.prompt.push_answer(&text);
        Ok(Answer { text, token_ids: output.tokens, prompt_tokens })
    }
}
