//! `biomedgpt init`: a new, untrained BioMedGPT-architecture model directory from sizes (LLaMA
//! decoder with a given tokenizer, ESM-2, GraphMVP GIN, the two adapters), random weights, in the
//! layout `ask`, `eval` and `train` read. The starting point for training a model from scratch.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use biomedgpt_io::FloatType;
use biomedgpt_llama::LlamaConfig;
use clap::Args;

use crate::random::{Specs, esm_specs, gin_specs, is_esm_scale, is_gin_scale, is_llama_scale, llama_specs, write_esm_dir, write_random};

#[derive(Args)]
pub struct InitArgs {
    /// New model directory (llm/, esm/, model.safetensors, biomedgpt.json).
    #[arg(long)]
    out: PathBuf,
    /// The LLM's tokenizer.json (e.g. LLaMA-2's). A `[PAD]` row is added to the vocabulary, as
    /// BioMedGPT-10B has.
    #[arg(long)]
    tokenizer: PathBuf,
    #[arg(long, default_value_t = 128)]
    hidden_size: usize,
    #[arg(long, default_value_t = 4)]
    num_hidden_layers: usize,
    #[arg(long, default_value_t = 4)]
    num_attention_heads: usize,
    #[arg(long, default_value_t = 344)]
    intermediate_size: usize,
    #[arg(long, default_value_t = 1024)]
    max_position_embeddings: usize,
    #[arg(long, default_value_t = 64)]
    esm_hidden_size: usize,
    #[arg(long, default_value_t = 2)]
    esm_num_hidden_layers: usize,
    #[arg(long, default_value_t = 4)]
    esm_num_attention_heads: usize,
    #[arg(long, default_value_t = 5)]
    gin_num_layer: usize,
    #[arg(long, default_value_t = 64)]
    gin_emb_dim: usize,
    /// Longest protein in ESM tokens (`<cls>`, `<eos>` included); longer ones are truncated as
    /// the reference truncates at 1024. A smaller limit makes training on long proteins cheaper.
    #[arg(long)]
    max_protein_tokens: Option<usize>,
    /// The stored weights' type: f32 (for training from scratch) or f16/bf16 (half the size,
    /// e.g. a random model of the real shapes for benchmarks).
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
}

pub fn run(args: InitArgs) -> Result<()> {
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("{} exists and is not empty", args.out.display());
    }
    for (name, v) in [("hidden_size", args.hidden_size), ("esm_hidden_size", args.esm_hidden_size), ("gin_emb_dim", args.gin_emb_dim)] {
        if v == 0 {
            bail!("--{} must be positive", name.replace('_', "-"));
        }
    }
    if args.hidden_size % args.num_attention_heads != 0 || args.esm_hidden_size % args.esm_num_attention_heads != 0 {
        bail!("hidden sizes must be multiples of their attention heads");
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&args.tokenizer)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.tokenizer.display()))?;
    let vocab = tokenizer.get_vocab_size(true);
    let llm_dir = args.out.join("llm");
    std::fs::create_dir_all(&llm_dir).with_context(|| format!("creating {}", llm_dir.display()))?;
    std::fs::copy(&args.tokenizer, llm_dir.join("tokenizer.json")).context("copying the tokenizer")?;
    let json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size, "num_hidden_layers": args.num_hidden_layers,
        "num_attention_heads": args.num_attention_heads, "num_key_value_heads": args.num_attention_heads,
        "vocab_size": vocab, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": args.max_position_embeddings, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "torch_dtype": match args.dtype { FloatType::F32 => "float32", FloatType::F16 => "float16", FloatType::BF16 => "bfloat16" }
    });
    std::fs::write(llm_dir.join("config.json"), serde_json::to_string_pretty(&json)?)?;
    let config = LlamaConfig::from_json(&json.to_string()).map_err(anyhow::Error::msg)?;
    let esm_intermediate = 4 * args.esm_hidden_size;
    write_esm_dir(&args.out.join("esm"), args.esm_hidden_size, args.esm_num_hidden_layers, args.esm_num_attention_heads, esm_intermediate)?;

    let prefixed = |prefix: &str, specs: Specs| -> Specs { specs.into_iter().map(|(k, s)| (format!("{prefix}{k}"), s)).collect() };
    let mut specs = prefixed("llm.", llm_specs_with_pad(&config, vocab));
    specs.extend(prefixed("prot_structure_encoder.", esm_specs(args.esm_hidden_size, args.esm_num_hidden_layers, esm_intermediate)));
    specs.extend(prefixed("mol_structure_encoder.", gin_specs(args.gin_num_layer, args.gin_emb_dim)));
    for (name, width) in [("proj_mol", args.gin_emb_dim), ("proj_prot", args.esm_hidden_size)] {
        specs.push((format!("{name}.weight"), vec![args.hidden_size, width]));
        specs.push((format!("{name}.bias"), vec![args.hidden_size]));
    }
    let parameters: usize = specs.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    write_random(&args.out.join("model.safetensors"), specs, args.dtype, |name| {
        name.strip_prefix("llm.").is_some_and(is_llama_scale)
            || name.strip_prefix("prot_structure_encoder.").is_some_and(is_esm_scale)
            || name.strip_prefix("mol_structure_encoder.").is_some_and(is_gin_scale)
    })?;
    let notice = "an untrained model made by `biomedgpt init` (random weights): its answers are meaningless until it is trained";
    let mut settings = serde_json::json!({"notice": notice});
    if let Some(n) = args.max_protein_tokens {
        if n < 3 {
            bail!("--max-protein-tokens must be at least 3 (<cls>, a residue, <eos>)");
        }
        settings["max_protein_tokens"] = n.into();
    }
    std::fs::write(args.out.join("biomedgpt.json"), serde_json::to_string_pretty(&settings)?)?;
    eprintln!("wrote {} ({:.1}M parameters, {})", args.out.display(), parameters as f64 / 1e6, args.dtype);
    Ok(())
}

/// The LLM with one more vocabulary row than the tokenizer, for the `[PAD]` token BioMedGPT adds.
fn llm_specs_with_pad(config: &LlamaConfig, vocab: usize) -> Specs {
    llama_specs(config, vocab + 1)
}
