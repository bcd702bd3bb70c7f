//! `biomedgpt train`: alignment fine-tuning (adapters) from a TOML config, every key also a flag
//! (flags win). Ctrl-C saves a checkpoint after the current step and exits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use biomedgpt_train::session::{Observer, STOP_REQUESTED, TrainConfig, run};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::progress::Progress;

#[derive(Args, Serialize)]
pub struct TrainArgs {
    /// TOML file with the settings below (flags override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (same batches, same loss curve).
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Model directory to start from.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Output directory: checkpoint-N/, metrics.jsonl, loss.png.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// A dataset as TASK=PATH (pubchemqa=DIR, uniprotqa=DIR; repeatable).
    #[arg(long = "dataset", value_parser = parse_dataset)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<Value>,
    /// Split to train on (default train).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_split: Option<String>,
    /// Split to validate on, where a dataset has it (default valid).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_split: Option<String>,
    /// What trains: adapters (encoders and LLM frozen, the BioMedGPT recipe), adapters+lora (the
    /// default for BioMedGPT-R1, its recipe),
    /// adapters+llm (every LLM weight), adapters+encoders (GIN and ESM, LLM frozen) or all.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainable: Option<String>,
    /// LoRA rank (default 8).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha; the factors are scaled by alpha / rank (default 16).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    /// Attention projections with LoRA factors (default q_proj,k_proj,v_proj,o_proj).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<Vec<String>>,
    /// Peak learning rate (AdamW).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// AdamW weight decay (default 0.01).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// AdamW beta1 (default 0.9).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f32>,
    /// AdamW beta2 (default 0.999).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f32>,
    /// AdamW epsilon (default 1e-8).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f32>,
    /// Linear warmup steps before the cosine decay.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Optimizer steps of the run (required; the cosine schedule ends there).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Padded tokens per micro-batch (examples x longest).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_tokens: Option<usize>,
    /// Most examples per micro-batch (default 32).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_examples: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accum: Option<usize>,
    /// Clip each gradient tensor to this L2 norm.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f32>,
    /// Seed of the data order and LoRA initialization (default 0).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Checkpoint every N steps (0: at the end only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    /// Keep only the newest N checkpoints, deleting older ones as new ones are saved (0: all).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Validation loss every N steps (0: at the end only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Validate on the first N validation records.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_limit: Option<usize>,
    /// At each validation, answer the first N validation examples and log BLEU/ROUGE/METEOR.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_generate: Option<usize>,
    /// Longest generated answer for --eval-generate (default 64).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_max_new_tokens: Option<usize>,
    /// Train on the first N records.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Keep the frozen encoders' features in this directory across runs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_features: Option<PathBuf>,
    /// dtype of the frozen LLM and ESM: f32 (default), or f16/bf16 for half the memory with
    /// --trainable adapters (the adapters, their optimizer state and the loss stay f32).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// cpu, wgpu[:N] or cuda[:N] (default cpu); several CUDA devices, comma-separated
    /// (cuda:0,cuda:1), train data-parallel.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

fn parse_dataset(text: &str) -> Result<Value, String> {
    let (task, path) = text.split_once('=').ok_or("expected TASK=PATH, e.g. pubchemqa=datasets/chebi")?;
    if !matches!(task, "pubchemqa" | "uniprotqa") {
        return Err(format!("unknown task {task:?}: pubchemqa or uniprotqa"));
    }
    Ok(serde_json::json!({"task": task, "path": path}))
}

/// The config file's settings with the flags laid over them.
fn merged_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut base = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
            serde_json::to_value(table)?
        }
        None => Value::Object(Default::default()),
    };
    let Value::Object(flags) = serde_json::to_value(args)? else { unreachable!("a struct") };
    let object = base.as_object_mut().context("the config file must be a TOML table")?;
    for (key, value) in flags {
        object.insert(key, value);
    }
    // BioMedGPT-R1's recipe trains LoRA factors beside the adapters (r=8, alpha 16, q/k/v/o).
    if !object.contains_key("trainable")
        && let Some(model) = object.get("model").and_then(Value::as_str)
        && biomedgpt_model::Layout::resolve(std::path::Path::new(model)).is_ok_and(|l| l.r1.is_some())
    {
        object.insert("trainable".into(), "adapters+lora".into());
    }
    let config: TrainConfig = serde_json::from_value(base).map_err(|e| {
        anyhow::anyhow!("training settings: {e} (give it in --config or as a flag; see `biomedgpt train --help`)")
    })?;
    Ok(config)
}

struct Bar {
    encode: Option<Progress>,
    train: Option<Progress>,
}

impl Observer for Bar {
    fn encoding(&mut self, split: &str, done: usize, total: usize) {
        let bar = self.encode.get_or_insert_with(|| {
            eprintln!("encoding the {split} examples with the frozen encoders");
            Progress::new(total, "examples", true)
        });
        bar.advance(1);
        if done == total {
            bar.finish();
            self.encode = None;
        }
    }

    fn step(&mut self, step: usize, total: usize, loss: f64, tokens_per_s: f64) {
        let bar = self.train.get_or_insert_with(|| Progress::new(total, "steps", true).starting_at(step - 1));
        bar.set_note(format!("loss {loss:.4}, {tokens_per_s:.0} tok/s"));
        bar.advance(1);
    }

    fn validation(&mut self, step: usize, loss: f64) {
        eprintln!("\nstep {step}: validation loss {loss:.4}");
    }

    fn checkpoint(&mut self, path: &Path) {
        eprintln!("\nsaved {}", path.display());
    }
}

/// The signal that stopped the run (0: none): SIGINT (Ctrl-C) and SIGTERM (what `kill`, systemd
/// and job schedulers send) both save a checkpoint at the end of the step, then the process
/// exits with the shell's code for that signal, 130 or 143 (issue 39, D18/D19).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

#[cfg(unix)]
fn on_signal_save_and_stop() {
    extern "C" fn handler(signal: libc::c_int) {
        STOP_SIGNAL.store(signal, std::sync::atomic::Ordering::SeqCst);
        STOP_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
}

#[cfg(not(unix))]
fn on_signal_save_and_stop() {}

pub fn train(args: TrainArgs) -> Result<()> {
    let config = merged_config(&args)?;
    let devices = crate::device::parse_training_devices(&config.device)?;
    on_signal_save_and_stop();
    let mut bar = Bar { encode: None, train: None };
    let last = run(&config, args.resume, &devices, &mut bar)?;
    if let Some(bar) = &bar.train {
        bar.finish();
    }
    println!("{}", last.display());
    if !last.join("adapters.safetensors").is_file() {
        bail!("{}: checkpoint incomplete", last.display());
    }
    let signal = STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
    if signal != 0 {
        let name = if signal == libc::SIGINT { "Ctrl-C" } else { "SIGTERM" };
        eprintln!("stopped by {name}; saved {}; continue with --resume", last.display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(128 + signal);
    }
    Ok(())
}
