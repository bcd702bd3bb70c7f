//! A training run: configuration (TOML, every option also a flag in the CLI), data, the loop
//! with warmup + cosine schedule, gradient accumulation and clipping, validation, the metrics
//! log and loss curve, and checkpoints that resume exactly.
//!
//! Output directory:
//! - `checkpoint-{step}/`: `biomedgpt.json` (the base model's parts by absolute path and
//!   `"adapters": "adapters.safetensors"`, so `biomedgpt ask --model` loads it), `adapters.safetensors`,
//!   `optimizer.bpk` (Burn's optimizer record), `trainer_state.json` (step, epoch, position in the
//!   epoch's order, parameter ids, configuration). Written to a temporary directory, then renamed.
//! - `metrics.jsonl`: one line per step (`loss`, `lr`, `tokens`, `tokens_per_s`) and per
//!   validation (`valid_loss`, text metrics when `eval_generate` > 0). On resume, lines after the
//!   checkpoint's step are dropped, so the log reads as one uninterrupted run.
//! - `loss.png`: the training and validation loss curves.
//!
//! With several devices the loop drives one [`Replica`] per device ([`crate::parallel`]): the
//! first in this thread (it also validates and saves), the others in worker threads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use biomedgpt_eval::data::qa::split_file;
use biomedgpt_eval::metrics::{BleuMode, DEFAULT_WORDNET_DIR, Scorer, WordNet, WordPieceTokenizer};
use biomedgpt_eval::data::{QaRecord, QaTask, Subject, load_qa};
use biomedgpt_io::FloatType;
use biomedgpt_model::{Adapters, BioMedGpt, Input, Layout};
use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::grad_clipping::GradientClippingConfig;
use burn::tensor::Device;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::parallel::{Replica, Shard, Worker, shard_batch};
use crate::schedule::{epoch_order, next_batch, warmup_cosine};
use crate::lora::LoraSettings;
use crate::{EncodedExample, Example, FeatureCache, TrainError, batch_loss, encode_example_cached, freeze};
use biomedgpt_model::ModelError;

/// Set by a Ctrl-C handler: the loop saves a checkpoint after the current step and stops.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

fn default_split_train() -> String {
    "train".into()
}
fn default_split_valid() -> String {
    "valid".into()
}
fn default_lr() -> f64 {
    1e-4
}
fn default_weight_decay() -> f32 {
    0.01
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.999
}
fn default_eps() -> f32 {
    1e-8
}
fn default_batch_tokens() -> usize {
    4096
}
fn default_max_batch_examples() -> usize {
    32
}
fn default_one() -> usize {
    1
}
fn default_dtype() -> String {
    "f32".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_eval_max_new_tokens() -> usize {
    64
}
fn default_lora_rank() -> usize {
    8
}
fn default_lora_alpha() -> f64 {
    16.0
}
fn default_lora_targets() -> Vec<String> {
    biomedgpt_model::LORA_TARGETS.iter().map(|t| t.to_string()).collect()
}
fn default_trainable() -> String {
    "adapters".into()
}

/// A dataset in the evaluation formats (PubChemQA / UniProtQA layouts or JSONL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub task: QaTask,
    pub path: PathBuf,
}

/// Everything a run depends on. Field names are the TOML keys and the CLI flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model directory to start from.
    pub model: PathBuf,
    /// Output directory (checkpoints, metrics.jsonl, loss.png).
    pub out: PathBuf,
    pub datasets: Vec<DatasetSpec>,
    #[serde(default = "default_split_train")]
    pub train_split: String,
    #[serde(default = "default_split_valid")]
    pub valid_split: String,
    /// What trains: "adapters" (the BioMedGPT recipe: encoders and LLM frozen), "adapters+lora"
    /// (also LoRA factors on the LLM's attention projections), "adapters+llm" (the whole LLM),
    /// "adapters+encoders" (GIN and ESM, LLM frozen) or "all" (adapters, encoders and LLM).
    #[serde(default = "default_trainable")]
    pub trainable: String,
    #[serde(default = "default_lora_rank")]
    pub lora_rank: usize,
    #[serde(default = "default_lora_alpha")]
    pub lora_alpha: f64,
    /// Attention projections that get LoRA factors.
    #[serde(default = "default_lora_targets")]
    pub lora_targets: Vec<String>,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f32,
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    #[serde(default = "default_eps")]
    pub eps: f32,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Optimizer steps of the run (the cosine schedule ends there).
    pub max_steps: usize,
    /// Padded tokens per micro-batch (examples x longest example).
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    #[serde(default = "default_max_batch_examples")]
    pub max_batch_examples: usize,
    /// Micro-batches per optimizer step (each micro-batch loss is divided by this).
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    /// Clip each parameter tensor's gradient to this L2 norm (Burn's per-tensor norm clipping).
    #[serde(default)]
    pub clip_norm: Option<f32>,
    #[serde(default)]
    pub seed: u64,
    /// Save a checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub save_every: usize,
    /// Keep only the newest N checkpoints (0: all).
    #[serde(default)]
    pub keep_last: usize,
    /// Validation loss every N steps (0: only at the end).
    #[serde(default)]
    pub eval_every: usize,
    /// Validate on the first N validation records.
    #[serde(default)]
    pub valid_limit: Option<usize>,
    /// At each validation, also answer the first N validation examples (greedy) and report the
    /// text metrics (BLEU, ROUGE, METEOR with the shipped word-piece vocabulary; needs WordNet).
    #[serde(default)]
    pub eval_generate: usize,
    #[serde(default = "default_eval_max_new_tokens")]
    pub eval_max_new_tokens: usize,
    /// Use the first N training records.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Keep the frozen encoders' features here (one .npy per molecule/protein) across runs.
    #[serde(default)]
    pub cache_features: Option<PathBuf>,
    /// The dtype of the frozen LLM and ESM: "f32", or "f16"/"bf16" to hold them in half the
    /// memory (trainable = "adapters" only). The adapters, their optimizer state and the loss
    /// stay in f32; the GIN runs in f32 as always.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default = "default_device")]
    pub device: String,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Input(m));
        if !TRAINABLE.contains(&self.trainable.as_str()) {
            return bad(format!(
                "trainable = {:?}: one of {TRAINABLE:?} (\"adapters\" is the BioMedGPT recipe)",
                self.trainable
            ));
        }
        if self.uses_lora() {
            if self.lora_rank == 0 {
                return bad("lora_rank must be at least 1".into());
            }
            if let Some(t) = self.lora_targets.iter().find(|t| !biomedgpt_model::LORA_TARGETS.contains(&t.as_str())) {
                return bad(format!("lora_targets: {t:?} is not one of {:?}", biomedgpt_model::LORA_TARGETS));
            }
        }
        if self.datasets.is_empty() {
            return bad("no datasets: give at least one {task, path}".into());
        }
        if self.max_steps == 0 {
            return bad("max_steps must be at least 1".into());
        }
        if self.grad_accum == 0 || self.max_batch_examples == 0 || self.batch_tokens == 0 {
            return bad("grad_accum, max_batch_examples and batch_tokens must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        match FloatType::parse(&self.dtype) {
            None => return bad(format!("dtype {:?}: one of f32, f16, bf16", self.dtype)),
            Some(FloatType::F32) => {}
            // LoRA factors take their base weight's dtype, and AdamW steps in half precision
            // would lose small updates; Burn 0.22 has no mixed precision to keep f32 masters.
            Some(_) if self.trainable != "adapters" => {
                return bad(format!(
                    "dtype {:?} holds the frozen LLM and ESM in half precision, for trainable = \"adapters\" only; \
                     with {:?} the trained weights would be half precision too (Burn 0.22 has no mixed precision): \
                     use dtype = \"f32\"",
                    self.dtype, self.trainable
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }

    pub fn uses_lora(&self) -> bool {
        self.trainable == "adapters+lora"
    }

    pub fn trains_llm(&self) -> bool {
        matches!(self.trainable.as_str(), "adapters+llm" | "all")
    }

    pub fn trains_encoders(&self) -> bool {
        matches!(self.trainable.as_str(), "adapters+encoders" | "all")
    }

    fn lora_settings(&self) -> LoraSettings {
        LoraSettings { rank: self.lora_rank, alpha: self.lora_alpha, targets: self.lora_targets.clone() }
    }

    /// The settings that must not change when a run resumes (lengthening it is allowed).
    fn identity(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        for volatile in ["max_steps", "save_every", "keep_last", "eval_every", "eval_generate", "eval_max_new_tokens", "out", "device", "cache_features"] {
            v.as_object_mut().expect("object").remove(volatile);
        }
        v
    }
}

/// The values of `trainable`.
pub const TRAINABLE: [&str; 5] = ["adapters", "adapters+lora", "adapters+llm", "adapters+encoders", "all"];

/// What `trainer_state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    /// Position in the current epoch's order.
    pub cursor: usize,
    /// Parameter ids of the adapters, which the optimizer record is keyed by.
    pub param_ids: BTreeMap<String, u64>,
    pub config: TrainConfig,
}

fn input_of(subject: &Subject) -> Input {
    match subject {
        Subject::Molecule { smiles } => Input::Smiles(smiles.clone()),
        Subject::Protein { name, sequence } => Input::Protein { name: name.clone(), sequence: sequence.clone() },
    }
}

fn example_of(record: &QaRecord) -> Example {
    Example { inputs: vec![input_of(&record.subject)], question: record.question.clone(), answer: record.answer.clone() }
}

/// Loads and encodes one split of every dataset; records the model cannot read are errors
/// naming their source.
/// Datasets without that split are skipped when `optional` (validation).
fn encode_split(
    model: &BioMedGpt,
    config: &TrainConfig,
    split: &str,
    limit: Option<usize>,
    optional: bool,
    cache: Option<&FeatureCache>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<EncodedExample>, TrainError> {
    let mut records = Vec::new();
    for spec in &config.datasets {
        if optional && split_file(&spec.path, split).is_err() {
            continue;
        }
        let (r, _) = load_qa(&spec.path, spec.task, split, false).map_err(|e| TrainError::Input(e.to_string()))?;
        records.extend(r);
    }
    if let Some(n) = limit {
        records.truncate(n);
    }
    let mut out = Vec::with_capacity(records.len());
    for (k, record) in records.iter().enumerate() {
        let encoded = encode_example_cached(model, &example_of(record), cache)
            .map_err(|e| TrainError::Input(format!("{}: {e}", record.source)))?;
        out.push(encoded);
        progress(split, k + 1, records.len());
    }
    Ok(out)
}

fn example_len(e: &EncodedExample, model: &BioMedGpt) -> usize {
    // Approximate: the prompt's characters / 3 for text, plus feature rows and the answer.
    let features: usize = e.features.iter().map(|(_, f)| f.dims()[0]).sum();
    let prompt_tokens = model.tokenizer.encode(&e.prompt, true).map(|ids| ids.len()).unwrap_or(e.prompt.len() / 3);
    features + prompt_tokens + e.answer_ids.len()
}

/// The adapters as contiguous copies under the ids the optimizer state is keyed by (a resumed
/// run). Loaded f32 weights are transposed views of the checkpoint's storage, and the CPU matmul
/// sums in another order for those (1e-7 apart), so a fresh and a resumed run both train copies.
fn rebuild_adapters(model: &mut BioMedGpt, ids: &BTreeMap<String, u64>) {
    let adapters = std::mem::replace(&mut model.adapters, Adapters { proj_mol: None, proj_prot: None });
    model.adapters = crate::params::rebuilt(adapters, ids);
}

fn param_ids(adapters: &Adapters, llm: &biomedgpt_llama::Llama, encoders: &biomedgpt_model::Encoders) -> BTreeMap<String, u64> {
    let mut ids: BTreeMap<String, u64> =
        crate::params::ids_by_path(llm).into_iter().map(|(k, v)| (format!("llm.{k}"), v)).collect();
    for (module, adapter) in crate::lora::factors(llm) {
        ids.insert(format!("{module}.lora_a"), adapter.a.id.val());
        ids.insert(format!("{module}.lora_b"), adapter.b.id.val());
    }
    ids.extend(crate::params::ids_by_path(adapters)); // proj_mol.weight, ...
    ids.extend(crate::params::ids_by_path(encoders).into_iter().map(|(k, v)| (format!("encoders.{k}"), v)));
    ids
}

fn io_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Input(e.to_string())
}

/// The complete checkpoints in `out`, by step.
fn checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(out) else { return Vec::new() };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join("trainer_state.json").is_file().then_some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The latest complete checkpoint in `out`.
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    checkpoints(out).pop().map(|(_, p)| p)
}

/// `--keep-last N`: removes all but the newest `keep` complete checkpoints (0 keeps all; issue
/// 39, D17). The newest is never removed, so `--resume` always has one.
fn prune_checkpoints(out: &Path, keep: usize) -> Result<(), TrainError> {
    if keep == 0 {
        return Ok(());
    }
    let all = checkpoints(out);
    for (_, dir) in &all[..all.len().saturating_sub(keep)] {
        std::fs::remove_dir_all(dir).map_err(|e| io_at(dir, e))?;
    }
    Ok(())
}

/// An exclusive lock on `out` for the run's life (`out/train.lock`, holding the owner's pid): two
/// runs writing one directory would interleave their logs and overwrite each other's checkpoints
/// (issue 39, D16). The operating system releases it when the process ends, however it ends.
fn lock_out(out: &Path) -> Result<std::fs::File, TrainError> {
    use std::io::{Read, Seek, Write};
    let path = out.join("train.lock");
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| io_at(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            let owner = if owner.is_empty() { String::new() } else { format!(" (pid {owner})") };
            return Err(TrainError::Input(format!(
                "{} is in use by another training run{owner}: wait for it, or give this run another --out",
                out.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&path, e)),
    }
    file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id())).map_err(|e| io_at(&path, e))?;
    Ok(file)
}

/// An I/O error with the path it happened on (issue 39, D20: a bare "File exists (os error 17)"
/// said nothing of which file).
fn io_at(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Input(format!("{}: {e}", path.display()))
}

fn base_settings(config: &TrainConfig) -> Result<Value, TrainError> {
    let layout = Layout::resolve(&config.model)?;
    if layout.lora.is_some() {
        return Err(TrainError::Input(format!(
            "{} has LoRA factors: merge them first (`biomedgpt merge-lora --model {} --out DIR`) and train from DIR",
            config.model.display(),
            config.model.display()
        )));
    }
    let absolute = |p: &Path| std::fs::canonicalize(p).map(|p| p.display().to_string()).map_err(io_err);
    let fused = layout.fused_weights.as_ref().ok_or_else(|| {
        TrainError::Input(format!("{}: no fused weights (a text-only LLaMA directory has no adapters to train)", config.model.display()))
    })?;
    let mut settings = json!({
        "llm": absolute(&layout.llm)?,
        "weights": absolute(fused)?,
        "adapters": "adapters.safetensors",
        "system_prompt": layout.settings.system_prompt,
        "gin_num_layer": layout.settings.gin_num_layer,
        "gin_emb_dim": layout.settings.gin_emb_dim,
        "max_protein_tokens": layout.settings.max_protein_tokens,
        "notice": layout.settings.notice,
    });
    if let Some(esm) = &layout.esm {
        settings["esm"] = json!(absolute(esm)?);
    }
    // A BioMedGPT-R1 base: checkpoints keep its chat form and generation defaults.
    if layout.r1.is_some() {
        let yaml = match &layout.settings.r1 {
            Some(p) => config.model.join(p),
            None => config.model.join("config.yaml"),
        };
        settings["r1"] = json!(absolute(&yaml)?);
    }
    if let Some(w) = &layout.llm_weights {
        settings["llm_weights"] = json!(absolute(w)?); // a fully fine-tuned base; replaced if trained again
    }
    if let Some(w) = &layout.encoder_weights {
        settings["encoder_weights"] = json!(absolute(w)?);
    }
    let object = settings.as_object_mut().expect("object");
    object.retain(|_, v| !v.is_null());
    Ok(settings)
}

fn save_checkpoint(
    out: &Path,
    base: &Value,
    model: &BioMedGpt,
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
) -> Result<PathBuf, TrainError> {
    let final_dir = out.join(format!("checkpoint-{}", state.step));
    let tmp = out.join(format!(".checkpoint-{}.tmp", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_at(&tmp, e))?;
    let io_err = |e: String| io_at(&tmp, e);
    let mut settings = base.clone();
    if state.config.trains_llm() {
        crate::params::save_llm(&model.llm, &tmp.join("llm.safetensors")).map_err(|e| io_err(e.to_string()))?;
        settings["llm_weights"] = json!("llm.safetensors");
    }
    if state.config.trains_encoders() {
        model.encoders().save(&tmp.join("encoders.safetensors")).map_err(|e| io_err(e.to_string()))?;
        settings["encoder_weights"] = json!("encoders.safetensors");
    }
    if state.config.uses_lora() {
        crate::lora::save(&model.llm, &tmp.join("lora.safetensors")).map_err(|e| io_err(e.to_string()))?;
        settings["lora"] = json!({"weights": "lora.safetensors", "rank": state.config.lora_rank, "alpha": state.config.lora_alpha});
    }
    std::fs::write(tmp.join("biomedgpt.json"), serde_json::to_string_pretty(&settings).map_err(|e| io_err(e.to_string()))?).map_err(|e| io_err(e.to_string()))?;
    model.adapters.save(&tmp.join("adapters.safetensors")).map_err(|e| io_err(e.to_string()))?;
    optimizer.save(tmp.join("optimizer.bpk")).map_err(|e| io_err(format!("{e:?}")))?;
    std::fs::write(tmp.join("trainer_state.json"), serde_json::to_string_pretty(state).map_err(|e| io_err(e.to_string()))?).map_err(|e| io_err(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(|e| io_at(&final_dir, e))?;
    Ok(final_dir)
}

/// Reports from the loop, for the CLI's progress bar.
pub trait Observer {
    fn encoding(&mut self, split: &str, done: usize, total: usize);
    fn step(&mut self, step: usize, total: usize, loss: f64, tokens_per_s: f64);
    fn validation(&mut self, step: usize, loss: f64);
    fn checkpoint(&mut self, path: &Path);
}

/// Runs (or with `resume`, continues) the training that `config` describes on `devices`: one
/// device, or several for data-parallel training (see [`crate::parallel`]; the batches, and so
/// the run, are those of a single device). Returns the last checkpoint.
pub fn run(config: &TrainConfig, resume: bool, devices: &[Device], observer: &mut dyn Observer) -> Result<PathBuf, TrainError> {
    config.validate()?;
    let Some(first_device) = devices.first() else {
        return Err(TrainError::Input("no device to train on".into()));
    };
    // Burn's CPU backend has no collective operations (marking a parameter distributed panics).
    if devices.len() > 1 && devices.iter().any(|d| format!("{d:?}").contains("Flex")) {
        return Err(TrainError::Input(
            "data-parallel training needs collective operations, which Burn 0.22 implements for CUDA only (NCCL); \
             the CPU backend trains on one device"
                .into(),
        ));
    }
    if config.out.exists() && !config.out.is_dir() {
        return Err(TrainError::Input(format!("--out {}: a file is there, not a directory", config.out.display())));
    }
    std::fs::create_dir_all(&config.out).map_err(|e| io_at(&config.out, e))?;
    let _lock = lock_out(&config.out)?;
    let checkpoint = if resume {
        Some(latest_checkpoint(&config.out).ok_or_else(|| {
            TrainError::Input(format!("--resume: no complete checkpoint-* in {}", config.out.display()))
        })?)
    } else {
        if latest_checkpoint(&config.out).is_some() {
            return Err(TrainError::Input(format!(
                "{} already holds checkpoints: pass --resume to continue that run, or another --out",
                config.out.display()
            )));
        }
        None
    };
    let base = base_settings(config)?;
    let device = first_device.clone().autodiff();
    // The base model; a resumed run then takes the checkpoint's adapters and (unmerged) LoRA factors.
    let dtype = FloatType::parse(&config.dtype).expect("validated");
    let mut model = BioMedGpt::load_with_adapters_in(&config.model, dtype, FloatType::F32, &device)?;
    // Encoders are frozen while the examples are encoded (a graph kept per example would fill
    // memory) and unfrozen afterwards when they train; the LLM is frozen unless it trains.
    model.freeze_encoders();
    if !config.trains_llm() {
        freeze(&mut model);
    }
    if let Some(dir) = &checkpoint {
        let adapters = std::mem::replace(&mut model.adapters, Adapters { proj_mol: None, proj_prot: None });
        model.adapters = adapters.replaced_from(&dir.join("adapters.safetensors"), FloatType::F32, &device)?;
        if config.trains_llm() {
            let ckpt = biomedgpt_io::Checkpoint::open(dir.join("llm.safetensors")).map_err(ModelError::from)?;
            let llm_config = model.llm.config().clone();
            model.llm = biomedgpt_llama::Llama::load(&llm_config, &ckpt.root(), FloatType::F32, &device).map_err(ModelError::from)?;
        }
        if config.trains_encoders() {
            let encoders = model.encoders().replaced_from(&dir.join("encoders.safetensors"), FloatType::F32, &device)?;
            model.set_encoders(encoders.no_grad())?;
        }
    }
    let mut state = match &checkpoint {
        Some(dir) => {
            let text = std::fs::read_to_string(dir.join("trainer_state.json")).map_err(io_err)?;
            let saved: TrainerState = serde_json::from_str(&text).map_err(io_err)?;
            if saved.config.identity() != config.identity() {
                return Err(TrainError::Input(format!(
                    "{} was made with other settings ({}); now: {}",
                    dir.display(),
                    saved.config.identity(),
                    config.identity()
                )));
            }
            rebuild_adapters(&mut model, &saved.param_ids);
            if config.trains_llm() {
                let ids: BTreeMap<String, u64> =
                    saved.param_ids.iter().filter_map(|(k, v)| k.strip_prefix("llm.").map(|k| (k.to_string(), *v))).collect();
                model.llm = crate::params::rebuilt(model.llm.clone(), &ids);
            }
            if config.uses_lora() {
                let mut given = crate::lora::load(&dir.join("lora.safetensors"), &device).map_err(ModelError::from)?;
                for (module, f) in given.iter_mut() {
                    let id = |s: &str| saved.param_ids.get(&format!("{module}.{s}")).copied();
                    f.ids = id("lora_a").zip(id("lora_b"));
                }
                model.llm = crate::lora::attach(model.llm.clone(), &config.lora_settings(), given, config.seed);
            }
            TrainerState { config: config.clone(), ..saved }
        }
        None => {
            rebuild_adapters(&mut model, &BTreeMap::new());
            // A trained LLM gets contiguous copies, as a resumed run loads them (exact resume). A
            // frozen one keeps the load's layout in both: copying it would briefly hold the
            // weights twice (measured on the 1.1B bench model: peak 8.8 GB instead of 7.9 GB, for
            // a speed-up within this machine's run-to-run noise).
            if config.trains_llm() {
                model.llm = crate::params::rebuilt(model.llm.clone(), &BTreeMap::new());
            }
            if config.uses_lora() {
                model.llm = crate::lora::attach(model.llm.clone(), &config.lora_settings(), Default::default(), config.seed);
            }
            TrainerState { step: 0, epoch: 0, cursor: 0, param_ids: param_ids(&model.adapters, &model.llm, &model.encoders()), config: config.clone() }
        }
    };
    let optimizer = new_optimizer(config, checkpoint.as_deref())?;

    let (train, valid) = {
        let mut report = |split: &str, done: usize, total: usize| observer.encoding(split, done, total);
        let cache = match &config.cache_features {
            Some(dir) => Some(FeatureCache::new(dir, &Layout::resolve(&config.model)?.fused_weights.expect("checked by base_settings"))?),
            None => None,
        };
        let train = encode_split(&model, config, &config.train_split, config.limit, false, cache.as_ref(), &mut report)?;
        let valid = encode_split(&model, config, &config.valid_split, config.valid_limit, true, cache.as_ref(), &mut report)?;
        (train, valid)
    };
    if train.is_empty() {
        return Err(TrainError::Input("no training examples".into()));
    }
    if config.trains_encoders() {
        // Contiguous copies under the ids the optimizer state is keyed by, as for the adapters.
        let ids: BTreeMap<String, u64> =
            state.param_ids.iter().filter_map(|(k, v)| k.strip_prefix("encoders.").map(|k| (k.to_string(), *v))).collect();
        model.set_encoders(crate::params::rebuilt(model.encoders().set_require_grad(true), &ids))?;
    }
    let lengths: Vec<usize> = train.iter().map(|e| example_len(e, &model)).collect();
    let valid_lengths: Vec<usize> = valid.iter().map(|e| example_len(e, &model)).collect();
    let answer_tokens: Vec<usize> = train.iter().map(EncodedExample::answer_tokens).collect();

    // Data parallel: Burn's communication context for the run, and a replica (forked from the
    // ready model, so parameter ids agree) with its own optimizer on every other device.
    let _context = (devices.len() > 1).then(|| {
        DistributedContext::init(devices.to_vec(), DistributedConfig { all_reduce_op: ReduceOperation::Mean })
    });
    let mut workers = Vec::new();
    for other in &devices[1..] {
        let other = other.clone().autodiff();
        let replica = Replica::distributed(model.fork(&other), new_optimizer(config, checkpoint.as_deref())?)?;
        workers.push(Worker::start(replica, other));
    }
    let mut main = if workers.is_empty() { Replica::single(model, optimizer) } else { Replica::distributed(model, optimizer)? };

    // The metrics log continues from the checkpoint: later lines belong to the interrupted run.
    let log_path = config.out.join("metrics.jsonl");
    let mut log_lines: Vec<Value> = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["step"].as_u64().is_some_and(|s| s as usize <= state.step))
        .collect();
    let rewrite: String = log_lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&log_path, rewrite).map_err(io_err)?;
    let mut log = std::fs::OpenOptions::new().append(true).open(&log_path).map_err(io_err)?;
    let mut append = |v: Value, lines: &mut Vec<Value>| -> Result<(), TrainError> {
        writeln!(log, "{v}").map_err(io_err)?;
        log.flush().map_err(io_err)?;
        lines.push(v);
        Ok(())
    };

    let scorer = if config.eval_generate > 0 {
        let dir = std::env::var("BIOMEDGPT_WORDNET").unwrap_or_else(|_| DEFAULT_WORDNET_DIR.into());
        let wordnet = WordNet::open(&dir).map_err(io_err)?;
        Some(Scorer::new(WordPieceTokenizer::shipped(), wordnet))
    } else {
        None
    };
    let mut last_checkpoint = checkpoint.clone();
    let start = Instant::now();
    let mut tokens_seen = 0usize;
    while state.step < config.max_steps {
        let lr = warmup_cosine(state.step, config.lr, config.warmup_steps, config.max_steps);
        let mut loss_sum = 0.0;
        let mut step_tokens = 0;
        for _ in 0..config.grad_accum {
            let mut order = epoch_order(train.len(), config.seed, state.epoch);
            if state.cursor >= order.len() {
                state.epoch += 1;
                state.cursor = 0;
                order = epoch_order(train.len(), config.seed, state.epoch);
            }
            let batch_ids = next_batch(&order, state.cursor, &lengths, config.batch_tokens, config.max_batch_examples);
            state.cursor += batch_ids.len();
            step_tokens += batch_ids.iter().map(|&i| lengths[i]).sum::<usize>();
            // One shard per device (the whole batch on one device), computed at the same time.
            let shards = shard_batch(&batch_ids, &answer_tokens, devices.len());
            let examples = |shard: &Shard| -> Vec<EncodedExample> { shard.examples.iter().map(|&i| train[i].clone()).collect() };
            for (worker, shard) in workers.iter().zip(&shards[1..]) {
                worker.send_micro_batch(examples(shard), shard.weight, config.grad_accum)?;
            }
            let mut loss = main.micro_batch(&examples(&shards[0]), shards[0].weight, config.grad_accum)?;
            for worker in &workers {
                loss += worker.wait()?;
            }
            loss_sum += loss / devices.len() as f64;
        }
        // A NaN or infinite loss would be written into every weight by the update: stop before
        // it, keeping the checkpoints written so far (issue 39, D12).
        if !loss_sum.is_finite() {
            workers.into_iter().for_each(Worker::stop);
            let kept = match &last_checkpoint {
                Some(dir) => format!("the last good checkpoint, {}, is kept", dir.display()),
                None => "no checkpoint had been written".to_string(),
            };
            return Err(TrainError::Diverged(format!(
                "step {}: the loss is {loss_sum}: stopped before updating the weights ({kept}); try a lower --lr or check the data (and its --cache-features files)",
                state.step + 1
            )));
        }
        for worker in &workers {
            worker.send_step(lr)?;
        }
        main.step(lr)?;
        for worker in &workers {
            worker.wait()?;
        }
        let model = &main.model;
        state.step += 1;
        tokens_seen += step_tokens;
        let tokens_per_s = tokens_seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
        append(json!({"step": state.step, "epoch": state.epoch, "loss": loss_sum, "lr": lr, "tokens": step_tokens, "tokens_per_s": tokens_per_s}), &mut log_lines)?;
        observer.step(state.step, config.max_steps, loss_sum, tokens_per_s);

        let last = state.step == config.max_steps;
        let stopping = STOP_REQUESTED.load(Ordering::SeqCst);
        if !valid.is_empty() && (last || (config.eval_every > 0 && state.step % config.eval_every == 0)) {
            let valid_loss = validation_loss(model, &valid, &valid_lengths, config)?;
            let mut line = json!({"step": state.step, "valid_loss": valid_loss});
            if let Some(scorer) = &scorer {
                let n = config.eval_generate.min(valid.len());
                let predictions = valid[..n]
                    .iter()
                    .map(|e| crate::generate_answer(model, e, config.eval_max_new_tokens))
                    .collect::<Result<Vec<_>, _>>()?;
                let pairs = predictions.iter().zip(&valid[..n]).map(|(p, e)| (p.as_str(), e.answer.as_str()));
                let (scores, _) = scorer.score(pairs, BleuMode::Corpus).map_err(io_err)?;
                let object = line.as_object_mut().expect("object");
                for (k, v) in serde_json::to_value(scores).map_err(io_err)?.as_object().expect("object") {
                    object.insert(if k == "n" { "generated".into() } else { k.clone() }, v.clone());
                }
            }
            append(line, &mut log_lines)?;
            observer.validation(state.step, valid_loss);
        }
        if last || stopping || (config.save_every > 0 && state.step % config.save_every == 0) {
            let dir = save_checkpoint(&config.out, &base, model, &main.optimizer, &state)?;
            prune_checkpoints(&config.out, config.keep_last)?;
            observer.checkpoint(&dir);
            last_checkpoint = Some(dir);
            write_plot(&config.out, &log_lines)?;
        }
        if stopping {
            break;
        }
    }
    workers.into_iter().for_each(Worker::stop);
    last_checkpoint.ok_or_else(|| TrainError::Input("the run was already complete".into()))
}

/// AdamW with the run's settings; with a checkpoint, its state.
fn new_optimizer(config: &TrainConfig, checkpoint: Option<&Path>) -> Result<ModuleOptimizer, TrainError> {
    let optimizer = AdamWConfig::new()
        .with_beta_1(config.beta1)
        .with_beta_2(config.beta2)
        .with_epsilon(config.eps)
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(config.clip_norm.map(GradientClippingConfig::Norm))
        .init();
    match checkpoint {
        Some(dir) => optimizer.load(dir.join("optimizer.bpk")).map_err(|e| io_err(format!("{}: {e:?}", dir.display()))),
        None => Ok(optimizer),
    }
}

/// Mean loss over the answer tokens of the validation examples (`lengths` as batching counts them).
pub fn validation_loss(model: &BioMedGpt, valid: &[EncodedExample], lengths: &[usize], config: &TrainConfig) -> Result<f64, TrainError> {
    let order: Vec<usize> = (0..valid.len()).collect();
    let (mut total, mut tokens, mut cursor) = (0.0, 0usize, 0);
    while cursor < order.len() {
        let ids = next_batch(&order, cursor, lengths, config.batch_tokens, config.max_batch_examples);
        cursor += ids.len();
        let batch: Vec<EncodedExample> = ids.iter().map(|&i| valid[i].clone()).collect();
        let n: usize = batch.iter().map(|e| e.answer_ids.len()).sum();
        let loss = batch_loss(model, &model.adapters, &batch)?.detach().into_scalar::<f32>() as f64;
        total += loss * n as f64;
        tokens += n;
    }
    Ok(total / tokens.max(1) as f64)
}

fn write_plot(out: &Path, lines: &[Value]) -> Result<(), TrainError> {
    let points = |key: &str| -> Vec<(usize, f64)> {
        lines.iter().filter_map(|v| Some((v["step"].as_u64()? as usize, v[key].as_f64()?))).collect()
    };
    crate::plot::loss_curve(&out.join("loss.png"), &points("loss"), &points("valid_loss")).map_err(io_err)
}
