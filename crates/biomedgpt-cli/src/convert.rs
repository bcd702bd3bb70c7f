//! `biomedgpt convert`: a BioMedGPT directory with the fused `.pth` -> the same model with its
//! weights as sharded f16/bf16 safetensors (memory-mapped at load, no unpickling); or a LLaMA
//! (HF directory or GGUF file) -> a GGUF file in one of llama.cpp's quantization mixes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
use biomedgpt_io::{Checkpoint, FloatType, SourceDType};
use biomedgpt_llama::LlamaConfig;
use biomedgpt_model::Layout;
use burn::tensor::{DType, Device, Tensor, TensorData};
use clap::Args;

#[derive(Args)]
pub struct ConvertArgs {
    /// BioMedGPT model directory (see `ask --model`); for GGUF output also a LLaMA directory or
    /// a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// New directory: llm/, esm/, model-*.safetensors + model.safetensors.index.json; or a
    /// `.gguf` file for the GGUF types.
    #[arg(long)]
    out: PathBuf,
    /// f16, bf16 or f32 (safetensors; the GIN, a few MB, stays f32, as `ask` runs it), or a GGUF
    /// mix: q8_0, q6_k, q5_k_m, q4_k_m, q4_0 (llama.cpp's rules and reference quantizers; f16
    /// with an --out ending in .gguf).
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// With a GGUF --dtype for a fused BioMedGPT: ESM-2's type, f16 or q8_0 (its projections as
    /// Q8_0 blocks in encoders.gguf; the 3B protein encoder is a quarter of the weights).
    #[arg(long, default_value = "f16")]
    esm_dtype: String,
    #[arg(long, default_value_t = 2.0)]
    shard_gb: f64,
    /// The line the converted model prints whenever it is loaded (replaces the source's notice;
    /// an empty string removes it).
    #[arg(long)]
    notice: Option<String>,
}

const COPIED: [&str; 6] = ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];

fn copy_dir_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for name in COPIED {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Trained parts that replace tensors of the fused checkpoint: adapters, a fine-tuned LLM,
/// trained encoders, and LoRA factors merged into their projections (`W + scale * B A`, in f32).
struct Overlays {
    adapters: Option<Checkpoint>,
    lora: Option<(Checkpoint, f64)>,
    llm: Option<Checkpoint>,
    encoders: Option<Checkpoint>,
}

impl Overlays {
    fn open(layout: &Layout) -> Result<Self> {
        Ok(Overlays {
            adapters: layout.adapters.as_ref().map(Checkpoint::open).transpose()?,
            lora: layout.lora.as_ref().map(|(p, scale)| Checkpoint::open(p).map(|c| (c, *scale))).transpose()?,
            llm: layout.llm_weights.as_ref().map(Checkpoint::open).transpose()?,
            encoders: layout.encoder_weights.as_ref().map(Checkpoint::open).transpose()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.adapters.is_none() && self.lora.is_none() && self.llm.is_none() && self.encoders.is_none()
    }

    /// The tensor to write for `key`, when an overlay provides it.
    fn tensor(&self, key: &str, base: &Checkpoint, ty: FloatType) -> Result<Option<TensorData>> {
        if let Some(adapters) = &self.adapters
            && (key.starts_with("proj_mol.") || key.starts_with("proj_prot."))
        {
            return Ok(Some(adapters.load_any_shape(key, ty)?));
        }
        if let Some(encoders) = &self.encoders
            && encoders.info(key).is_some()
        {
            return Ok(Some(encoders.load_any_shape(key, ty)?));
        }
        if let Some(llm) = &self.llm
            && let Some(name) = key.strip_prefix("llm.")
            && llm.info(name).is_some()
        {
            return Ok(Some(llm.load_any_shape(name, ty)?));
        }
        if let Some((lora, scale)) = &self.lora
            && let Some(module) = key.strip_prefix("llm.").and_then(|k| k.strip_suffix(".weight"))
            && lora.info(&format!("{module}.lora_A.weight")).is_some()
        {
            let device = Device::flex();
            let tensor = |ckpt: &Checkpoint, k: &str| -> Result<Tensor<2>> {
                let data = ckpt.load_any_shape(k, FloatType::F32)?;
                let shape = data.shape().to_vec();
                Ok(Tensor::<2>::from_data(data, (&device, DType::F32)).reshape([shape[0], shape[1]]))
            };
            let w = tensor(base, key)?;
            let a = tensor(lora, &format!("{module}.lora_A.weight"))?;
            let b = tensor(lora, &format!("{module}.lora_B.weight"))?;
            let merged = w + b.matmul(a).mul_scalar(*scale);
            return Ok(Some(merged.cast(ty.dtype()).into_data()));
        }
        Ok(None)
    }
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let to_gguf = args.out.extension().is_some_and(|e| e == "gguf");
    match biomedgpt_llama::gguf_export::QuantMix::parse(&args.dtype) {
        Some(mix) if to_gguf || mix != biomedgpt_llama::gguf_export::QuantMix::F16 => convert_to_gguf(&args, mix),
        _ => convert(args, false),
    }
}

/// A LLaMA (HF directory, GGUF file, or a BioMedGPT directory's LLM) written as one GGUF file.
fn convert_to_gguf(args: &ConvertArgs, mix: biomedgpt_llama::gguf_export::QuantMix) -> Result<()> {
    use biomedgpt_llama::gguf_export::{export, tokenizer_metadata_from_gguf};
    // The layout once: a fused BioMedGPT goes to a directory, anything else to one .gguf file.
    let layout = if biomedgpt_llama::is_gguf(&args.model) { None } else { Some(Layout::resolve(&args.model)?) };
    if let Some(layout) = layout.as_ref().filter(|l| l.fused_weights.is_some()) {
        return convert_fused_to_gguf(args, layout, mix);
    }
    if args.out.extension().is_none_or(|e| e != "gguf") {
        bail!("--dtype {} writes a GGUF file: --out must end in .gguf (got {})", args.dtype, args.out.display());
    }
    if args.out.exists() {
        bail!("{} exists: choose a new file", args.out.display());
    }
    let (ckpt, config, tokenizer, name) = match &layout {
        None => {
            let (ckpt, config) = biomedgpt_llama::gguf::open(&args.model)?;
            let g = ckpt.gguf().expect("opened as GGUF");
            let name = g.str("general.name").ok().flatten().unwrap_or("model").to_string();
            let tokenizer = tokenizer_metadata_from_gguf(g);
            (ckpt, config, tokenizer, name)
        }
        Some(layout) => {
            let config = LlamaConfig::from_file(layout.llm.join("config.json"))?;
            let tokenizer = tokenizer_metadata(&layout.llm, &config)?;
            let name = layout.llm.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
            (Checkpoint::open(&layout.llm)?, config, tokenizer, name)
        }
    };
    let started = std::time::Instant::now();
    let types = export(&ckpt, "", &config, &name, tokenizer, mix, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let size = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {} ({:.1} MB, {}) in {:.1} s",
        args.out.display(),
        size as f64 / 1e6,
        type_counts(&types),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `tokenizer.ggml.*` metadata for the `tokenizer.json` of a LLaMA directory.
fn tokenizer_metadata(llm: &Path, config: &LlamaConfig) -> Result<Vec<(String, biomedgpt_io::MetaValue)>> {
    let path = llm.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let spec: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    biomedgpt_llama::gguf_export::tokenizer_metadata_from_json(&spec, config).with_context(|| format!("converting {}", path.display()))
}

/// "5 F32, 14 Q8_0": how many tensors of each type an export wrote.
fn type_counts(types: &[(String, biomedgpt_kernels::quant::GgmlType)]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (_, ty) in types {
        *counts.entry(ty.name()).or_default() += 1;
    }
    counts.iter().map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
}

/// A fused BioMedGPT model as a directory llama.cpp can read the LLM of: `llm.gguf` (the LLaMA in
/// `mix`, `[PAD]` in its vocabulary), `encoders.safetensors` (GIN in f32; ESM-2 and the adapters in
/// f16), `esm/` and a `biomedgpt.json` naming them (llama.cpp's mmproj arrangement).
fn convert_fused_to_gguf(args: &ConvertArgs, layout: &Layout, mix: biomedgpt_llama::gguf_export::QuantMix) -> Result<()> {
    use biomedgpt_llama::gguf_export::{append_token, export};
    let fused = layout.fused_weights.as_ref().expect("checked by the caller");
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {}: a file is there, not a directory", args.out.display());
    }
    if args.out.exists() && std::fs::read_dir(&args.out).with_context(|| format!("reading {}", args.out.display()))?.next().is_some() {
        bail!("{} exists and is not empty", args.out.display());
    }
    let esm_q8 = match args.esm_dtype.as_str() {
        "f16" => false,
        "q8_0" => true,
        other => bail!("--esm-dtype {other}: expected f16 or q8_0"),
    };
    let ckpt = Checkpoint::open(fused)?;
    if !Overlays::open(layout)?.is_empty() {
        bail!("{} has trained parts (adapters, LoRA, LLM or encoder weights): `merge-lora` it first, then convert the merged directory", args.model.display());
    }
    if biomedgpt_llama::is_gguf(&layout.llm) {
        bail!("{}'s LLM is already a GGUF file: requantize it with `convert --model {}`", args.model.display(), layout.llm.display());
    }
    // Written into a new directory, removed again if anything fails (no half-written model).
    let created = !args.out.exists();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let result = (|| -> Result<()> {
        let mut config = LlamaConfig::from_file(layout.llm.join("config.json"))?;
        let rows = ckpt.info("llm.model.embed_tokens.weight").map(|i| i.shape[0]).ok_or_else(|| anyhow::anyhow!("{}: no llm.model.embed_tokens.weight", fused.display()))?;
        if layout.r1.is_some() {
            // R1 resized its embeddings to the tokenizer's length: the rows are the vocabulary.
            config.vocab_size = rows;
        }
        let mut tokenizer = tokenizer_metadata(&layout.llm, &config)?;
        // The reference's `[PAD]` (id 32000): a row of the embeddings that tokenizer.json lacks.
        if layout.r1.is_none() && rows == config.vocab_size + 1 {
            append_token(&mut tokenizer, "[PAD]", 3);
        }
        let started = std::time::Instant::now();
        let llm_out = args.out.join("llm.gguf");
        let name = if layout.r1.is_some() { "BioMedGPT-R1-LM" } else { "BioMedGPT-LM" };
        let types = export(&ckpt, "llm.", &config, name, tokenizer, mix, &llm_out).with_context(|| format!("writing {}", llm_out.display()))?;
        let mut specs: Vec<(TensorSpec, FloatType)> = Vec::new();
        for key in ckpt.keys().filter(|k| !k.starts_with("llm.")) {
            let info = ckpt.info(key).expect("listed key");
            if !info.dtype.is_float() {
                continue;
            }
            let (dtype, ty) = if key.starts_with("mol_structure_encoder.") { (SourceDType::F32, FloatType::F32) } else { (SourceDType::F16, FloatType::F16) };
            specs.push((TensorSpec { name: key.to_string(), dtype, shape: info.shape }, ty));
        }
        let (specs, tys): (Vec<TensorSpec>, Vec<FloatType>) = specs.into_iter().unzip();
        let encoders = if esm_q8 {
            write_encoders_gguf(&ckpt, &specs, &args.out.join("encoders.gguf"))?;
            "encoders.gguf"
        } else {
            write_streaming(&args.out.join("encoders.safetensors"), &specs, &[("format", "pt")], |j, buf| {
                let data = ckpt.load_any_shape(&specs[j].name, tys[j]).map_err(std::io::Error::other)?;
                buf.extend_from_slice(data.as_bytes());
                ckpt.release(&specs[j].name);
                Ok(())
            })
            .context("writing encoders.safetensors")?;
            "encoders.safetensors"
        };
        if let Some(esm) = &layout.esm {
            copy_dir_files(esm, &args.out.join("esm"))?;
        }
        let s = &layout.settings;
        let mut settings = serde_json::json!({
            "llm": "llm.gguf", "weights": encoders,
            "system_prompt": s.system_prompt, "notice": args.notice.clone().or_else(|| s.notice.clone()).filter(|n| !n.is_empty()),
            "gin_num_layer": s.gin_num_layer, "gin_emb_dim": s.gin_emb_dim, "max_protein_tokens": s.max_protein_tokens,
        });
        if layout.esm.is_some() {
            settings["esm"] = "esm".into();
        }
        if carry_r1_config(layout, &args.model, &args.out)? {
            settings["r1"] = "config.yaml".into();
        }
        let settings: serde_json::Map<String, serde_json::Value> =
            settings.as_object().expect("object").iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
        biomedgpt_io::npy::write_atomic(&args.out.join("biomedgpt.json"), serde_json::to_string_pretty(&settings)?.as_bytes())?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e9).unwrap_or(0.0);
        eprintln!(
            "wrote {}: llm.gguf {:.2} GB ({}), {encoders} {:.2} GB, in {:.1} s",
            args.out.display(),
            size(&llm_out),
            type_counts(&types),
            size(&args.out.join(encoders)),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(&args.out);
    }
    result
}

/// ESM-2's projection weights, under HF `EsmModel` or fair-esm names.
fn is_esm_projection(key: &str) -> bool {
    const HF: [&str; 6] = [
        ".attention.self.query.weight", ".attention.self.key.weight", ".attention.self.value.weight",
        ".attention.output.dense.weight", ".intermediate.dense.weight", ".output.dense.weight",
    ];
    const FAIR: [&str; 6] = [".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight", ".self_attn.out_proj.weight", ".fc1.weight", ".fc2.weight"];
    key.starts_with("prot_structure_encoder.") && HF.iter().chain(FAIR.iter()).any(|s| key.ends_with(s))
}

/// The encoders and adapters as a GGUF file (used as a tensor container: our names, no llama.cpp
/// architecture): ESM-2's projections in Q8_0 (f16 where rows are not whole 32-blocks), the GIN in
/// f32, everything else f16.
fn write_encoders_gguf(ckpt: &Checkpoint, specs: &[TensorSpec], out: &Path) -> Result<()> {
    use biomedgpt_io::MetaValue;
    use biomedgpt_io::gguf_writer::{GgufTensorSpec, append_as, write_gguf};
    use biomedgpt_kernels::quant::{GgmlType, fallback};
    let tensors: Vec<GgufTensorSpec> = specs
        .iter()
        .map(|s| {
            let ty = if s.name.starts_with("mol_structure_encoder.") {
                GgmlType::F32
            } else if is_esm_projection(&s.name) && s.shape.len() == 2 {
                fallback(GgmlType::Q8_0, s.shape[1])
            } else {
                GgmlType::F16
            };
            GgufTensorSpec { name: s.name.clone(), shape: s.shape.clone(), ty }
        })
        .collect();
    let meta = vec![
        ("general.architecture".to_string(), MetaValue::String("biomedgpt-encoders".into())),
        ("general.name".to_string(), MetaValue::String("BioMedGPT encoders and adapters".into())),
    ];
    write_gguf(out, &meta, &tensors, |i, buf| {
        let t = &tensors[i];
        let values: Vec<f32> = ckpt
            .load_any_shape(&t.name, FloatType::F32)
            .map_err(std::io::Error::other)?
            .try_to_vec::<f32>()
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        ckpt.release(&t.name);
        append_as(t.ty, &values, *t.shape.last().unwrap_or(&1), buf)
    })
    .with_context(|| format!("writing {}", out.display()))
}

pub fn merge(args: ConvertArgs) -> Result<()> {
    convert(args, true)
}

/// The configs the output copies must load as `ask` loads them (issue 26, D11: a truncated
/// config.json or a hidden_size of 10^12 was copied and reported as converted): every config
/// parses with its ranges checked, and the LLM's sizes match its embedding weights.
fn check_configs(layout: &Layout, ckpt: &Checkpoint) -> Result<()> {
    let path = layout.llm.join("config.json");
    let config = LlamaConfig::from_file(&path).with_context(|| format!("{}: not a loadable LLaMA config", path.display()))?;
    let embed = "llm.model.embed_tokens.weight";
    if let Some(info) = ckpt.info(embed)
        && info.shape.get(1) != Some(&config.hidden_size)
    {
        bail!("{}: hidden_size {} does not match the weights' `{embed}` of shape {:?}", path.display(), config.hidden_size, info.shape);
    }
    if let Some(esm) = &layout.esm {
        let path = esm.join("config.json");
        if path.is_file() {
            biomedgpt_esm::EsmConfig::from_file(&path).map_err(|e| anyhow::anyhow!("{}: not a loadable ESM-2 config: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// A BioMedGPT-R1 model stays one when converted: its config.yaml (chat form, generation
/// defaults, context limit) is copied to `out/config.yaml`, which the new biomedgpt.json names.
/// Returns whether the model is R1.
fn carry_r1_config(layout: &Layout, model: &Path, out: &Path) -> Result<bool> {
    if layout.r1.is_none() {
        return Ok(false);
    }
    let yaml = match &layout.settings.r1 {
        Some(path) => model.join(path),
        None => model.join("config.yaml"),
    };
    std::fs::copy(&yaml, out.join("config.yaml")).with_context(|| format!("copying {}", yaml.display()))?;
    Ok(true)
}

fn convert(args: ConvertArgs, must_merge: bool) -> Result<()> {
    let dtype: FloatType = args.dtype.parse().map_err(|e: String| anyhow::anyhow!("--dtype: {e}, or a GGUF mix ({})", biomedgpt_llama::gguf_export::QuantMix::NAMES))?;
    let layout = Layout::resolve(&args.model)?;
    let Some(fused) = &layout.fused_weights else {
        bail!("{} has no fused BioMedGPT weights to convert", args.model.display());
    };
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {}: a file is there, not a directory", args.out.display());
    }
    if args.out.exists() && std::fs::read_dir(&args.out).with_context(|| format!("reading {}", args.out.display()))?.next().is_some() {
        bail!("{} exists and is not empty", args.out.display());
    }
    let ckpt = Checkpoint::open(fused)?;
    check_configs(&layout, &ckpt)?;
    let overlays = Overlays::open(&layout)?;
    if must_merge && overlays.is_empty() {
        bail!("{} has no LoRA factors or trained weights to merge (its biomedgpt.json names none)", args.model.display());
    }
    copy_dir_files(&layout.llm, &args.out.join("llm"))?;
    if let Some(esm) = &layout.esm {
        copy_dir_files(esm, &args.out.join("esm"))?;
    }
    // Settings that describe the model (not where its parts were) carry over.
    let s = &layout.settings;
    let r1 = carry_r1_config(&layout, &args.model, &args.out)?.then_some("config.yaml");
    let kept = serde_json::json!({
        "system_prompt": s.system_prompt, "notice": args.notice.clone().or_else(|| s.notice.clone()).filter(|n| !n.is_empty()), "gin_num_layer": s.gin_num_layer,
        "gin_emb_dim": s.gin_emb_dim, "max_protein_tokens": s.max_protein_tokens, "r1": r1,
    });
    let kept: serde_json::Map<String, serde_json::Value> =
        kept.as_object().expect("object").iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    if !kept.is_empty() {
        let settings = args.out.join("biomedgpt.json");
        std::fs::write(&settings, serde_json::to_string_pretty(&kept)?).with_context(|| format!("writing {}", settings.display()))?;
    }

    // Float tensors only (`num_batches_tracked` and other integer buffers are not read).
    let target = match dtype {
        FloatType::BF16 => SourceDType::BF16,
        FloatType::F16 => SourceDType::F16,
        FloatType::F32 => SourceDType::F32,
    };
    let mut specs: Vec<(TensorSpec, FloatType)> = Vec::new();
    let mut skipped = 0;
    for key in ckpt.keys() {
        let info = ckpt.info(key).expect("listed key");
        if !info.dtype.is_float() {
            skipped += 1;
            continue;
        }
        let (dtype, ty) = if key.starts_with("mol_structure_encoder.") { (SourceDType::F32, FloatType::F32) } else { (target, dtype) };
        specs.push((TensorSpec { name: key.to_string(), dtype, shape: info.shape }, ty));
    }
    let limit = (args.shard_gb * 1e9) as usize;
    let mut shards: Vec<Vec<(TensorSpec, FloatType)>> = vec![Vec::new()];
    let mut size = 0;
    for spec in specs {
        let bytes = spec.0.shape.iter().product::<usize>() * spec.0.dtype.size();
        if size > 0 && size + bytes > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes;
        shards.last_mut().expect("one shard").push(spec);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        let (specs, types): (Vec<TensorSpec>, Vec<FloatType>) = shard.into_iter().unzip();
        for s in &specs {
            weight_map.insert(s.name.clone(), file.clone().into());
            total += s.shape.iter().product::<usize>() * s.dtype.size();
        }
        write_streaming(&args.out.join(&file), &specs, &[("format", "pt")], |j, buf| {
            let data = match overlays.tensor(&specs[j].name, &ckpt, types[j]).map_err(std::io::Error::other)? {
                Some(data) => data,
                None => ckpt.load_any_shape(&specs[j].name, types[j]).map_err(std::io::Error::other)?,
            };
            buf.extend_from_slice(data.as_bytes());
            ckpt.release(&specs[j].name);
            Ok(())
        })
        .with_context(|| format!("writing {}", file))?;
        eprintln!("wrote {file}");
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    biomedgpt_io::npy::write_atomic(&args.out.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index)?.as_bytes())?;
    eprintln!(
        "converted {} to {} ({:.2} GB, {n} shard(s){})",
        fused.display(),
        args.out.display(),
        total as f64 / 1e9,
        if skipped > 0 { format!(", {skipped} integer buffers not copied") } else { String::new() }
    );
    Ok(())
}
