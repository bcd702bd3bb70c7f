//! Alignment fine-tuning as BioMedGPT-10B was made: the encoders and the LLM frozen, the
//! adapters (`proj_mol`, `proj_prot`) trained on question-answer pairs about molecules and
//! proteins with the reference loss.
//!
//! An example is the reference chat prompt (system prompt, the molecule or protein message with
//! the question, `### Assistant: `), its text segments tokenized on their own with BOS on the
//! first only and the projected encoder features spliced in, then the answer tokenized on its
//! own (no BOS) and EOS. Only the answer tokens and EOS are predicted: the loss is the
//! cross-entropy of each next token whose label is an answer token, averaged over all such
//! tokens of the batch (transformers' causal LM loss with prompt and padding labelled -100).
//! Sequences of a batch are right-padded with zero embeddings; with causal attention padding at
//! the end never influences real positions, so no attention mask is needed.
//!
//! Models are loaded on an autodiff device (`Device::flex().autodiff()`); the LLM is frozen by
//! [`freeze`], encoder features are detached, and only the adapters receive gradients. Other
//! recipes unfreeze LoRA factors, the whole LLM, or the encoders (whose features are then
//! computed in the graph at every step).

pub mod lora;
pub mod parallel;
pub mod params;
pub mod plot;
pub mod schedule;
pub mod session;

use biomedgpt_llama::DecoderInput;
use biomedgpt_llama::generation::ids_tensor;
use biomedgpt_model::{Adapters, BioMedGpt, Encoders, Input, Modality, ModelError};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};

/// Transformers' label for positions without a target.
pub const IGNORE: i64 = -100;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Input(String),
    /// The loss stopped being a number (issue 39, D12): nothing after it is worth keeping.
    #[error("{0}")]
    Diverged(String),
}

/// One question-answer pair about molecules and proteins.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub inputs: Vec<Input>,
    pub question: String,
    pub answer: String,
}

/// An example ready for the loss: the prompt, the answer's ids, and the encoder features of its
/// inputs computed once (frozen encoders: reused every epoch, and cacheable on disk). When the
/// encoders train, the features are computed anew from `inputs` at every step instead.
#[derive(Clone, Debug)]
pub struct EncodedExample {
    pub inputs: Vec<Input>,
    pub features: Vec<(Modality, Tensor<2>)>,
    pub prompt: String,
    pub answer_ids: Vec<u32>,
    pub answer: String,
}

/// Freezes everything but the adapters: the LLM's and the encoders' parameters no longer track
/// gradients.
pub fn freeze(model: &mut BioMedGpt) {
    model.llm = model.llm.clone().no_grad();
    model.freeze_encoders();
}

/// Encoder features on disk, one `.npy` per distinct molecule/protein, keyed by the encoder
/// weights (path, size, modification time) and the input, so a rerun skips the encoders.
pub struct FeatureCache {
    dir: std::path::PathBuf,
    model_key: String,
}

impl FeatureCache {
    pub fn new(dir: &std::path::Path, weights: &std::path::Path) -> Result<Self, TrainError> {
        let io = |e: std::io::Error| TrainError::Input(format!("feature cache {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let meta = std::fs::metadata(weights).map_err(io)?;
        let canonical = std::fs::canonicalize(weights).map_err(io)?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        Ok(Self { dir: dir.to_owned(), model_key: format!("{}|{}|{modified}", canonical.display(), meta.len()) })
    }

    /// The file of an input's features in `dtype` (f32 keys are those of earlier versions).
    fn path(&self, input: &Input, dtype: DType) -> std::path::PathBuf {
        use sha2::{Digest, Sha256};
        let what = match input {
            Input::Smiles(s) | Input::Graph { smiles: s, .. } => format!("molecule|{s}"),
            Input::Protein { sequence, .. } => format!("protein|{sequence}"),
        };
        let dtype = if dtype == DType::F32 { String::new() } else { format!("|{dtype:?}") };
        let key = Sha256::digest(format!("{}|{what}{dtype}", self.model_key).as_bytes());
        self.dir.join(format!("{key:x}.npy"))
    }

    fn features(&self, model: &BioMedGpt, input: &Input) -> Result<(Modality, Tensor<2>), TrainError> {
        let path = self.path(input, model.llm.dtype());
        let modality = input.modality();
        if let Ok(bytes) = std::fs::read(&path) {
            let (shape, data) = biomedgpt_io::npy::read_f32(&bytes)
                .map_err(|e| TrainError::Input(format!("{}: {e} (delete it to recompute)", path.display())))?;
            // Features the adapter can read: rows of its input width (issue 39, D11).
            let width = model.adapters.input_width(modality);
            match shape[..] {
                [rows, w] if rows > 0 && Some(w) == width => {
                    let device = model.llm.device();
                    let t = Tensor::<2>::from_data(TensorData::new(data, [rows, w]), &device).cast(model.llm.dtype());
                    return Ok((modality, t));
                }
                _ => {
                    return Err(TrainError::Input(format!(
                        "{}: features of shape {shape:?}, expected [rows, {}] (delete it to recompute)",
                        path.display(),
                        width.map_or("?".to_string(), |w| w.to_string())
                    )));
                }
            }
        }
        let (m, features, _) = model.features(input)?;
        let [rows, width] = features.dims();
        let values = features.clone().cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 features");
        biomedgpt_io::npy::write_f32(&path, &[rows, width], &values)
            .map_err(|e| TrainError::Input(format!("writing {}: {e}", path.display())))?;
        Ok((m, features))
    }
}

/// Runs the frozen encoders and tokenizes the answer (without BOS) followed by EOS.
pub fn encode_example(model: &BioMedGpt, example: &Example) -> Result<EncodedExample, TrainError> {
    encode_example_cached(model, example, None)
}

/// [`encode_example`], reading and writing encoder features through `cache` when given.
pub fn encode_example_cached(model: &BioMedGpt, example: &Example, cache: Option<&FeatureCache>) -> Result<EncodedExample, TrainError> {
    if example.question.trim().is_empty() {
        return Err(TrainError::Input("the question is empty".into()));
    }
    if example.answer.trim().is_empty() {
        return Err(TrainError::Input("the answer is empty".into()));
    }
    let mut prompt = model.new_prompt();
    let mut features = Vec::new();
    for input in &example.inputs {
        let (modality, f) = match cache {
            Some(cache) => cache.features(model, input)?,
            None => model.features(input).map(|(m, f, _)| (m, f))?,
        };
        features.push((modality, f.detach()));
        prompt.push_modality(modality, input.smiles().unwrap_or(""));
    }
    prompt.push_question(&example.question);
    let eos = model.llm.config().eos_token_ids().first().copied().unwrap_or(2);
    let mut answer_ids = model.tokenizer.encode(&example.answer, false).map_err(ModelError::from)?;
    answer_ids.push(eos);
    Ok(EncodedExample { inputs: example.inputs.clone(), features, prompt: prompt.render(), answer_ids, answer: example.answer.clone() })
}

impl EncodedExample {
    /// The example with its stored features on `device` (a data-parallel replica's).
    pub fn to_device(&self, device: &burn::tensor::Device) -> EncodedExample {
        let features = self.features.iter().map(|(m, f)| (*m, f.clone().to_device(device))).collect();
        EncodedExample { features, ..self.clone() }
    }

    /// The answer tokens the loss predicts (the answer's ids and EOS).
    pub fn answer_tokens(&self) -> usize {
        self.answer_ids.len()
    }
}

/// The example's encoder features: the stored ones, or, when the encoders train (their
/// parameters track gradients), computed now in the autodiff graph.
fn current_features(model: &BioMedGpt, example: &EncodedExample) -> Result<Vec<(Modality, Tensor<2>)>, TrainError> {
    if !model.encoders_track_gradients() {
        return Ok(example.features.clone());
    }
    example.inputs.iter().map(|input| Ok(model.features(input).map(|(m, f, _)| (m, f))?)).collect()
}

/// Input embeddings `[T, hidden]` and labels `[T]` (answer tokens, [`IGNORE`] elsewhere).
fn example_embeds(model: &BioMedGpt, adapters: &Adapters, example: &EncodedExample) -> Result<(Tensor<2>, Vec<i64>), TrainError> {
    let items = current_features(model, example)?
        .into_iter()
        .map(|(m, f)| Ok((m, adapters.project(m, f)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let (prompt, _) = model.prompt_embeds(&example.prompt, &items)?;
    let answer = model.llm.embed(ids_tensor(&example.answer_ids, 1, &model.llm.device()));
    let embeds = Tensor::cat(vec![prompt, answer.cast(model.llm.dtype())], 1);
    let [_, t, h] = embeds.dims();
    let mut labels = vec![IGNORE; t - example.answer_ids.len()];
    labels.extend(example.answer_ids.iter().map(|&id| id as i64));
    Ok((embeds.reshape([t, h]), labels))
}

/// The reference loss of a batch (scalar tensor, in the autodiff graph of the adapters).
pub fn batch_loss(model: &BioMedGpt, adapters: &Adapters, batch: &[EncodedExample]) -> Result<Tensor<1>, TrainError> {
    if batch.is_empty() {
        return Err(TrainError::Input("empty batch".into()));
    }
    let rows = batch.iter().map(|e| example_embeds(model, adapters, e)).collect::<Result<Vec<_>, _>>()?;
    let width = rows.iter().map(|(e, _)| e.dims()[0]).max().expect("a row");
    let device = model.llm.device();
    let hidden = rows[0].0.dims()[1];
    let b = rows.len();
    // Next-token targets: position i predicts label i + 1.
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    let mut padded = Vec::with_capacity(b);
    for (row, (embeds, labels)) in rows.into_iter().enumerate() {
        for (i, pair) in labels.windows(2).enumerate() {
            if pair[1] != IGNORE {
                positions.push((row * width + i) as i64);
                targets.push(pair[1]);
            }
        }
        let t = embeds.dims()[0];
        let embeds = if t < width {
            let pad = Tensor::<2>::zeros([width - t, hidden], (&device, embeds.dtype()));
            Tensor::cat(vec![embeds, pad], 0)
        } else {
            embeds
        };
        padded.push(embeds.unsqueeze_dim::<3>(0));
    }
    let embeds = Tensor::cat(padded, 0);
    // Only the positions that predict an answer token need the LM head (the vocabulary-wide
    // matmul), so the hidden states are gathered first.
    let hidden_states = model.llm.forward_hidden(DecoderInput::Embeds(embeds), None, &mut model.llm.new_cache(b));
    let n = positions.len();
    let index = Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device);
    let target = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let selected = hidden_states.reshape([b * width, hidden]).select(0, index).unsqueeze_dim::<3>(0);
    let logits = model.llm.logits(selected);
    let vocab = logits.dims()[2];
    let rows = logits.reshape([n, vocab]).cast(DType::F32);
    let picked = log_softmax(rows, 1).gather(1, target);
    Ok(picked.mean().neg())
}

/// Greedy answer to an encoded example's prompt with the current adapters (as `ask` answers:
/// special tokens dropped, the text after the last "Assistant:", trimmed).
pub fn generate_answer(model: &BioMedGpt, example: &EncodedExample, max_new_tokens: usize) -> Result<String, TrainError> {
    let items = current_features(model, example)?
        .into_iter()
        .map(|(m, f)| Ok((m, model.adapters.project(m, f)?.detach())))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let (embeds, _) = model.prompt_embeds(&example.prompt, &items)?;
    let config = biomedgpt_llama::GenerationConfig {
        max_new_tokens,
        strategy: biomedgpt_llama::Strategy::Greedy,
        repetition_penalty: 1.0,
        eos_token_ids: model.eos_token_ids(),
    };
    let bos = model.llm.config().bos_token_id.unwrap_or(1);
    let prompt = biomedgpt_llama::Prompt::Embeds { embeds: embeds.detach(), penalty_ids: vec![bos] };
    let output = biomedgpt_llama::generate(&model.llm, prompt, &config, &mut |_| {}).map_err(ModelError::from)?;
    let mut ids = output.tokens;
    if output.stopped_by_eos {
        ids.pop();
    }
    let text = model.tokenizer.decode(&ids).map_err(ModelError::from)?;
    Ok(text.rsplit("Assistant:").next().unwrap_or("").trim().to_string())
}

/// AdamW settings with torch.optim.AdamW's names and defaults, except weight decay 0.01.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Everything that may train, as one module for the optimizer: parameters that do not track
/// gradients (a frozen LLM's base weights, frozen encoders) get none and stay as they are.
#[derive(Module, Debug)]
pub struct Trainable {
    pub adapters: Adapters,
    pub llm: biomedgpt_llama::Llama,
    pub encoders: Encoders,
}

impl Trainable {
    /// The model's trainable parts (shared tensors, not copies), e.g. to collect gradients.
    pub fn of(model: &BioMedGpt) -> Trainable {
        Trainable { adapters: model.adapters.clone(), llm: model.llm.clone(), encoders: model.encoders() }
    }

    /// As [`Self::of`], taking the adapters out of the model (for an optimizer step, which
    /// consumes the module; [`Self::put_into`] puts the stepped parts back).
    pub fn take_from(model: &mut BioMedGpt) -> Trainable {
        let adapters = std::mem::replace(&mut model.adapters, Adapters { proj_mol: None, proj_prot: None });
        Trainable { adapters, llm: model.llm.clone(), encoders: model.encoders() }
    }

    pub fn put_into(self, model: &mut BioMedGpt) -> Result<(), TrainError> {
        model.adapters = self.adapters;
        model.llm = self.llm;
        model.set_encoders(self.encoders)?;
        Ok(())
    }
}

/// Trains the adapters of a model with AdamW.
pub struct AdapterTrainer {
    optimizer: ModuleOptimizer,
    pub lr: f64,
}

impl AdapterTrainer {
    pub fn new(settings: &AdamW) -> Self {
        let optimizer = AdamWConfig::new()
            .with_beta_1(settings.beta1)
            .with_beta_2(settings.beta2)
            .with_epsilon(settings.eps)
            .with_weight_decay(settings.weight_decay)
            .init();
        Self { optimizer, lr: settings.lr }
    }

    /// One optimizer step on `batch`; returns the loss before the step.
    pub fn step(&mut self, model: &mut BioMedGpt, batch: &[EncodedExample]) -> Result<f64, TrainError> {
        let loss = batch_loss(model, &model.adapters, batch)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &model.adapters);
        let adapters = std::mem::replace(&mut model.adapters, Adapters { proj_mol: None, proj_prot: None });
        model.adapters = self.optimizer.step(self.lr, adapters, grads);
        Ok(value)
    }

    /// One step on the adapters, the LLM's trainable parameters (LoRA factors, or all of them)
    /// and the encoders when they track gradients.
    pub fn step_with_llm(&mut self, model: &mut BioMedGpt, batch: &[EncodedExample]) -> Result<f64, TrainError> {
        let loss = batch_loss(model, &model.adapters, batch)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &Trainable::of(model));
        let all = self.optimizer.step(self.lr, Trainable::take_from(model), grads);
        all.put_into(model)?;
        Ok(value)
    }
}
