//! Benchmarks (not tests): random-weight models of real shapes, prefill and decode speed, memory
//! bandwidth. `benches/llama.sh` runs these next to transformers and prints the ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use biomedgpt_io::FloatType;
use biomedgpt_llama::generation::{argmax, ids_tensor};
use biomedgpt_llama::{CausalLm, DecoderInput, LlamaConfig};
use burn::tensor::DType;
use clap::{Args, Subcommand};

use crate::generate::ModelArgs;
use crate::random;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write a random-weight LLaMA of a known shape (config.json + model.safetensors).
    RandomLlama(RandomArgs),
    /// Write a random-weight GPT-2 of a known shape (config.json + model.safetensors).
    RandomGpt2(RandomArgs),
    /// Prefill and KV-cache decode speed of a LLaMA or GPT-2 directory; prints one JSON line.
    #[command(alias = "llama")]
    Lm(LlamaBenchArgs),
    /// Write a random-weight ESM-2 of a published shape (config.json, vocab.txt, model.safetensors).
    RandomEsm(RandomArgs),
    /// Residues per second of an ESM directory on one random sequence; prints one JSON line.
    Esm(EsmBenchArgs),
    /// Write a random-weight GraphMVP GIN (config.json + model.safetensors); default 5 layers x 300.
    RandomGin {
        #[arg(long, default_value_t = 5)]
        num_layer: usize,
        #[arg(long, default_value_t = 300)]
        emb_dim: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Molecules per second of featurize (RDKit) + GIN on a .smi file; prints one JSON line.
    Gin(GinBenchArgs),
    /// Write a BioMedGPT-R1 of the released shape (DeepSeek-R1-Distill-Qwen-14B's Qwen2, ESM-2 3B,
    /// the 5 x 300 GIN) whose weights are all zero in a sparse f16 file (35 GB that take no disk),
    /// to convert and measure memory with (benches/memory_r1.sh).
    R1Shape {
        /// New model directory.
        #[arg(long)]
        out: PathBuf,
        /// The LLM's tokenizer.json (default: the R1 test fixture's; the vocabulary is padded to
        /// the released 151,665 rows).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Memory read bandwidth with the given number of threads (the ceiling for decoding).
    Bandwidth {
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

#[derive(Args)]
pub struct RandomArgs {
    /// LLaMA: tiny (hidden 256, 4 layers), tinyllama-1.1b, llama2-7b; GPT-2: tiny, biomedlm (2.7B)
    #[arg(long)]
    shape: String,
    #[arg(long, default_value = "f16")]
    dtype: FloatType,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct EsmBenchArgs {
    /// HF ESM directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// cpu, wgpu[:N] or cuda[:N] (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct GinBenchArgs {
    /// GIN directory (config.json + weights).
    #[arg(long)]
    model: PathBuf,
    /// One SMILES per line.
    #[arg(long)]
    smiles: PathBuf,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
}

#[derive(Args)]
pub struct LlamaBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Sequences decoded together (the same prompt in each row); tokens/s count every row.
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::RandomLlama(args) => random_llama(&args.shape, args.dtype, &args.out),
        BenchCommand::RandomGpt2(args) => random_gpt2(&args.shape, args.dtype, &args.out),
        BenchCommand::Lm(args) => lm(args),
        BenchCommand::RandomEsm(args) => random_esm(&args.shape, args.dtype, &args.out),
        BenchCommand::Esm(args) => esm(args),
        BenchCommand::RandomGin { num_layer, emb_dim, out } => random_gin(num_layer, emb_dim, &out),
        BenchCommand::Gin(args) => gin(args),
        BenchCommand::R1Shape { out, tokenizer } => r1_shape(&out, tokenizer.as_deref()),
        BenchCommand::Bandwidth { threads } => {
            println!("{}", serde_json::json!({"threads": threads, "read_gb_per_s": bandwidth(threads)}));
            Ok(())
        }
    }
}

fn shape_config(shape: &str, dtype: FloatType) -> Result<serde_json::Value> {
    let (h, i, l, heads, kv) = match shape {
        "tiny" => (256, 688, 4, 4, 4),
        "tinyllama-1.1b" => (2048, 5632, 22, 32, 4),
        "llama2-7b" => (4096, 11008, 32, 32, 32),
        other => bail!("unknown shape `{other}` (tiny, tinyllama-1.1b, llama2-7b)"),
    };
    let torch_dtype = torch_dtype_name(dtype);
    Ok(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": i, "num_hidden_layers": l, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": 32000, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 2048, "tie_word_embeddings": false, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": torch_dtype
    }))
}

fn random_llama(shape: &str, dtype: FloatType, out: &Path) -> Result<()> {
    let json = shape_config(shape, dtype)?;
    let config = LlamaConfig::from_json(&json.to_string()).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&json)?)?;
    let specs = random::llama_specs(&config, config.vocab_size);
    random::write_random(&out.join("model.safetensors"), specs, dtype, random::is_llama_scale)?;
    eprintln!("wrote {shape} ({} parameters, {dtype}) to {}", config.num_parameters(), out.display());
    Ok(())
}

fn random_gpt2(shape: &str, dtype: FloatType, out: &Path) -> Result<()> {
    let (e, layers, heads) = match shape {
        "tiny" => (256, 4, 4),
        "biomedlm" => (2560, 32, 20), // stanford-crfm/BioMedLM
        other => bail!("unknown GPT-2 shape `{other}` (tiny, biomedlm)"),
    };
    let (vocab, positions) = (28896, 1024);
    let json = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": e, "n_layer": layers, "n_head": heads,
        "n_inner": null, "n_positions": positions, "vocab_size": vocab, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "bos_token_id": 28895, "eos_token_id": 28895, "tie_word_embeddings": true,
        "torch_dtype": torch_dtype_name(dtype)
    });
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&json)?)?;
    let specs = random::gpt2_specs(e, layers, 4 * e, vocab, positions);
    let parameters: usize = specs.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    random::write_random(&out.join("model.safetensors"), specs, dtype, random::is_gpt2_scale)?;
    eprintln!("wrote GPT-2 {shape} ({parameters} parameters, {dtype}) to {}", out.display());
    Ok(())
}

fn torch_dtype_name(dtype: FloatType) -> &'static str {
    match dtype {
        FloatType::F32 => "float32",
        FloatType::F16 => "float16",
        FloatType::BF16 => "bfloat16",
    }
}

fn random_esm(shape: &str, dtype: FloatType, out: &Path) -> Result<()> {
    let (layers, hidden) = match shape {
        "t6" => (6, 320),
        "t12" => (12, 480),
        "t30" => (30, 640),
        "t33" => (33, 1280),
        "t36" => (36, 2560),
        other => bail!("unknown ESM-2 shape `{other}` (t6, t12, t30, t33, t36)"),
    };
    let c = biomedgpt_esm::EsmConfig::esm2_preset(layers, hidden).expect("published size");
    random::write_esm_dir(out, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)?;
    let specs = random::esm_specs(c.hidden_size, c.num_hidden_layers, c.intermediate_size);
    random::write_random(&out.join("model.safetensors"), specs, dtype, random::is_esm_scale)?;
    eprintln!("wrote ESM-2 {shape} ({dtype}) to {}", out.display());
    Ok(())
}

fn esm(args: EsmBenchArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let (model, alphabet) = biomedgpt_esm::open_hf_dir(&args.model, args.dtype, &device)?;
    let letters = b"LAGVSERTIDPKQNFYMHWC";
    let seq: String = (0..args.seq_len).map(|i| letters[(i * 7 + i / 3) % letters.len()] as char).collect();
    let ids = alphabet.encode("bench", &seq, args.seq_len + 2, false)?.ids;
    let run = || {
        let out = model.forward(std::slice::from_ref(&ids), false).last_hidden_state;
        let _ = out.into_data();
    };
    run(); // warm-up at the measured shape (GPU backends compile and tune kernels per shape)
    let t = Instant::now();
    for _ in 0..args.repeats {
        run();
    }
    let seconds = t.elapsed().as_secs_f64() / args.repeats as f64;
    println!(
        "{}",
        serde_json::json!({"impl": "biomedgpt-rs", "dtype": args.dtype.to_string(), "seq_len": args.seq_len,
            "seconds": seconds, "residues_per_s": args.seq_len as f64 / seconds})
    );
    Ok(())
}

fn random_gin(num_layer: usize, d: usize, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let config = serde_json::json!({"num_layer": num_layer, "emb_dim": d, "JK": "last", "drop_ratio": 0.0});
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    random::write_random(&out.join("model.safetensors"), random::gin_specs(num_layer, d), FloatType::F32, random::is_gin_scale)?;
    eprintln!("wrote a random GIN ({num_layer} layers, {d} wide) to {}", out.display());
    Ok(())
}

/// Featurize + GIN per batch, as `embed molecule` runs it (mean-pooled output read back).
fn gin(args: GinBenchArgs) -> Result<()> {
    use biomedgpt_gin::{Gin, GinConfig};
    let device = burn::tensor::Device::flex();
    let config = GinConfig::from_file(&args.model.join("config.json")).map_err(anyhow::Error::msg)?;
    let ckpt = biomedgpt_io::Checkpoint::open(&args.model)?;
    let gin = Gin::load(&config, &ckpt.root(), FloatType::F32, &device)?;
    let text = std::fs::read_to_string(&args.smiles)?;
    let smiles: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let run = |smiles: &[&str]| -> Result<(usize, f64, f64)> {
        let (mut done, mut featurize_s, mut gin_s) = (0, 0.0, 0.0);
        for chunk in smiles.chunks(args.batch_size.max(1)) {
            let t = Instant::now();
            let graphs: Vec<_> = chunk.iter().filter_map(|s| biomedgpt_chem::featurize(s).ok()).collect();
            featurize_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            done += gin.pooled_features(&graphs)?.len();
            gin_s += t.elapsed().as_secs_f64();
        }
        Ok((done, featurize_s, gin_s))
    };
    run(&smiles[..smiles.len().min(args.batch_size)])?; // warm-up
    let (done, featurize_s, gin_s) = run(&smiles)?;
    let seconds = featurize_s + gin_s;
    println!(
        "{}",
        serde_json::json!({"impl": "biomedgpt-rs", "molecules": done, "featurize_s": featurize_s, "gin_s": gin_s,
            "seconds": seconds, "molecules_per_s": done as f64 / seconds})
    );
    Ok(())
}

/// Peak and current resident memory of this process, in bytes (Linux).
pub fn resident_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// One step for every row of the batch: the greedy next token of each.
fn next_tokens(model: &dyn CausalLm, input: DecoderInput, cache: &mut biomedgpt_llama::KvCache) -> Vec<u32> {
    let logits = model.forward_last(input, None, cache);
    let values = logits.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 logits");
    values.chunks(model.vocab_size()).map(|row| argmax(row) as u32).collect()
}

/// Timed prompt runs per `bench lm` (the median is reported; `benches/llama_transformers.py`
/// runs as many).
const PREFILL_RUNS: usize = 3;

fn lm(args: LlamaBenchArgs) -> Result<()> {
    let start = Instant::now();
    let model = args.model.open_model()?;
    let model = model.as_ref();
    let load_s = start.elapsed().as_secs_f64();
    let (peak_after_load, rss_after_load) = resident_memory();
    let device = model.device();
    let dtype = model.dtype();
    let bytes_per_param = match dtype {
        DType::F32 => 4,
        _ => 2,
    };
    let parameters = model.num_parameters();
    // A GGUF file's weights keep their file types (block types included): the file is their size.
    let weight_bytes = if biomedgpt_llama::is_gguf(&args.model.model) && args.model.keep_blocks() {
        std::fs::metadata(&args.model.model)?.len() as usize
    } else {
        parameters * bytes_per_param
    };

    // Ids below 28000 fit every vocabulary benchmarked (LLaMA 32000, BioMedLM 28896).
    let prompt: Vec<u32> = (0..args.prompt_len).map(|i| 3 + (i as u32 * 7919) % 28000).collect();
    let batch = args.batch.max(1);
    let prompts: Vec<u32> = prompt.iter().copied().cycle().take(prompt.len() * batch).collect();
    let step = |model: &dyn CausalLm, tokens: &[u32], cache: &mut biomedgpt_llama::KvCache| {
        next_tokens(model, DecoderInput::Ids(ids_tensor(tokens, batch, &device)), cache)
    };
    // Warm-up at the measured shapes (allocator, thread pool; GPU backends compile and tune
    // kernels per shape): the whole prompt and two decoding steps, not measured.
    let mut cache = model.new_cache(batch);
    let mut warm = step(model, &prompts, &mut cache);
    for _ in 0..2 {
        warm = step(model, &warm, &mut cache);
    }
    drop(cache);

    // The prompt is timed PREFILL_RUNS times (median): one run of a small model lasts a few
    // milliseconds, where a shared VM's noise decides. transformers' side does the same.
    let mut runs = Vec::with_capacity(PREFILL_RUNS);
    let mut prefilled = None;
    for _ in 0..PREFILL_RUNS {
        let mut cache = model.new_cache(batch);
        let t = Instant::now();
        let tokens = step(model, &prompts, &mut cache);
        runs.push(t.elapsed().as_secs_f64());
        prefilled = Some((cache, tokens));
    }
    let (mut cache, mut tokens) = prefilled.expect("PREFILL_RUNS > 0");
    runs.sort_by(f64::total_cmp);
    let prefill_s = runs[PREFILL_RUNS / 2];
    let t = Instant::now();
    for _ in 0..args.new_tokens {
        tokens = step(model, &tokens, &mut cache);
    }
    let decode_s = t.elapsed().as_secs_f64();
    // After the run every weight page has been read: with memory-mapped weights this, not the
    // resident size right after loading, is what the model costs.
    let (peak_rss, _) = resident_memory();
    println!(
        "{}",
        serde_json::json!({
            "impl": "biomedgpt-rs", "dtype": format!("{dtype:?}").to_lowercase(),
            "parameters": parameters, "weight_bytes": weight_bytes,
            "load_s": load_s, "peak_rss_after_load": peak_after_load, "rss_after_load": rss_after_load, "peak_rss": peak_rss,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "batch": batch,
            "prefill_tok_s": (args.prompt_len * batch) as f64 / prefill_s,
            "decode_tok_s": (args.new_tokens * batch) as f64 / decode_s,
        })
    );
    Ok(())
}

/// Eight independent accumulators so the loop vectorises and is limited by memory, not by
/// the add latency chain.
fn sum_u64(values: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    acc.iter().chain(rest).fold(0, |a, &b| a.wrapping_add(b))
}

/// Sums a 1 GiB buffer with `threads` threads; best of 5, in GB/s.
pub fn bandwidth(threads: usize) -> f64 {
    let n = (1usize << 30) / 8;
    let data: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads);
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(chunk)
                .map(|c| s.spawn(move || sum_u64(c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// A BioMedGPT-R1 of the released shape, every weight zero, in our layout (`biomedgpt.json`
/// naming `llm/`, `protein/`, `model.safetensors` and R1's `config.yaml`). The safetensors file
/// is written as a header and a length: its data is a hole that reads as zeros and takes no disk.
/// Zeros change no size: what it measures is memory and time, not answers.
fn r1_shape(out: &Path, tokenizer: Option<&Path>) -> Result<()> {
    use crate::random::{esm_specs, gin_specs, llama_specs, write_esm_dir};
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty", out.display());
    }
    // DeepSeek-R1-Distill-Qwen-14B's config.json; BioMedGPT-R1 resized its embeddings to the
    // tokenizer's 151,665 tokens.
    let rows = 151_665;
    let llm = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "tie_word_embeddings": false,
        "use_sliding_window": false, "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "torch_dtype": "bfloat16"
    });
    let config = LlamaConfig::from_json(&llm.to_string()).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out.join("llm"))?;
    std::fs::write(out.join("llm/config.json"), serde_json::to_string_pretty(&llm)?)?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt_r1/tiny/llm/tokenizer.json");
    std::fs::copy(tokenizer.unwrap_or(&fixture), out.join("llm/tokenizer.json")).context("copying the tokenizer")?;
    let (esm_hidden, esm_layers, esm_heads) = (2560, 36, 40);
    write_esm_dir(&out.join("protein"), esm_hidden, esm_layers, esm_heads, 4 * esm_hidden)?;

    let mut specs: Vec<(String, Vec<usize>)> = llama_specs(&config, rows).into_iter().map(|(k, s)| (format!("llm.{k}"), s)).collect();
    let (q, kv) = (config.num_attention_heads * config.head_dim(), config.num_kv_heads() * config.head_dim());
    for l in 0..config.num_hidden_layers {
        for (name, n) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            specs.push((format!("llm.model.layers.{l}.self_attn.{name}.bias"), vec![n]));
        }
    }
    specs.extend(esm_specs(esm_hidden, esm_layers, 4 * esm_hidden).into_iter().map(|(k, s)| (format!("prot_structure_encoder.{k}"), s)));
    specs.extend(gin_specs(5, 300).into_iter().map(|(k, s)| (format!("mol_structure_encoder.{k}"), s)));
    for (name, width) in [("proj_mol", 300), ("proj_prot", esm_hidden)] {
        specs.push((format!("{name}.weight"), vec![config.hidden_size, width]));
        specs.push((format!("{name}.bias"), vec![config.hidden_size]));
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &specs {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(name.clone(), serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut text = serde_json::to_string(&header)?.into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let path = out.join("model.safetensors");
    let mut file = std::fs::File::create(&path)?;
    use std::io::Write;
    file.write_all(&(text.len() as u64).to_le_bytes())?;
    file.write_all(&text)?;
    file.set_len((8 + text.len() + offset) as u64)?;

    let yaml = "model:\n  name: biomedgpt-r1\n  molecule:\n    gin_hidden_dim: 300\n    gin_num_layers: 5\n    drop_ratio: 0.0\n  \
                protein:\n    model_name_or_path: protein\n    use_float16: true\n  llm:\n    model_name_or_path: llm\n    use_float16: true\n  \
                text_generation:\n    num_beams: 2\n    max_length: 512\n    min_length: 1\n    repetition_penalty: 1.5\n    length_penalty: 1\n  \
                context_max_length: 2048\n";
    std::fs::write(out.join("config.yaml"), yaml)?;
    let settings = serde_json::json!({"llm": "llm", "esm": "protein", "weights": "model.safetensors", "r1": "config.yaml",
        "notice": "BioMedGPT-R1's shape with zero weights (bench r1-shape): for memory and speed measurements only"});
    std::fs::write(out.join("biomedgpt.json"), serde_json::to_string_pretty(&settings)?)?;
    let parameters: usize = specs.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    eprintln!("wrote {} ({:.2}B parameters, {:.1} GB of f16 zeros in a sparse file)", out.display(), parameters as f64 / 1e9, offset as f64 / 1e9);
    Ok(())
}
