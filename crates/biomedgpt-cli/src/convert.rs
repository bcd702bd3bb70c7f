//! `biomedgpt convert`: a BioMedGPT directory with the fused `.pth` -> the same model with its
//! weights as sharded f16/bf16 safetensors (memory-mapped at load, no unpickling).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
use biomedgpt_io::{Checkpoint, FloatType, SourceDType};
use biomedgpt_model::Layout;
use clap::Args;

#[derive(Args)]
pub struct ConvertArgs {
    /// BioMedGPT model directory (see `ask --model`).
    #[arg(long)]
    model: PathBuf,
    /// New directory: llm/, esm/, model-*.safetensors + model.safetensors.index.json.
    #[arg(long)]
    out: PathBuf,
    /// f16 or bf16. The GIN (a few MB) stays f32, as `ask` runs it.
    #[arg(long, default_value = "f16")]
    dtype: FloatType,
    #[arg(long, default_value_t = 2.0)]
    shard_gb: f64,
}

const COPIED: [&str; 6] = ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"];

fn copy_dir_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for name in COPIED {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.dtype == FloatType::F32 {
        bail!("--dtype must be f16 or bf16 (the released weights are already readable as f32)");
    }
    let layout = Layout::resolve(&args.model)?;
    let Some(fused) = &layout.fused_weights else {
        bail!("{} has no fused BioMedGPT weights to convert", args.model.display());
    };
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{} exists and is not empty", args.out.display());
    }
    let ckpt = Checkpoint::open(fused)?;
    copy_dir_files(&layout.llm, &args.out.join("llm"))?;
    if let Some(esm) = &layout.esm {
        copy_dir_files(esm, &args.out.join("esm"))?;
    }
    let settings = args.model.join("biomedgpt.json");
    if settings.is_file() && layout.settings.llm.is_none() && layout.settings.weights.is_none() {
        std::fs::copy(&settings, args.out.join("biomedgpt.json"))?;
    }

    // Float tensors only (`num_batches_tracked` and other integer buffers are not read).
    let target = match args.dtype {
        FloatType::BF16 => SourceDType::BF16,
        _ => SourceDType::F16,
    };
    let mut specs: Vec<(TensorSpec, FloatType)> = Vec::new();
    let mut skipped = 0;
    for key in ckpt.keys() {
        let info = ckpt.info(key).expect("listed key");
        if !info.dtype.is_float() {
            skipped += 1;
            continue;
        }
        let (dtype, ty) = if key.starts_with("mol_structure_encoder.") { (SourceDType::F32, FloatType::F32) } else { (target, args.dtype) };
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
            let data = ckpt.load_any_shape(&specs[j].name, types[j]).map_err(std::io::Error::other)?;
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
