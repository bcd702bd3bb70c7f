//! Where the parts of a BioMedGPT model live on disk.
//!
//! `--model DIR` may be:
//! - our layout: `llm/` (LLaMA config.json + tokenizer.json), `esm/` (ESM config.json + vocab.txt)
//!   and the fused weights beside them (`biomedgpt_10b.pth`, or safetensors, single or sharded);
//! - OpenBioMed's `ckpts/` layout: `text_ckpts/biomedgpt-lm-7b`, `protein_ckpts/esm2-3b`,
//!   `fusion_ckpts/biomedgpt_10b.pth`;
//! - BioMedGPT-R1's released layout: `config.yaml` beside `pytorch_model.bin`, the LLM's and the
//!   ESM-2's directories where `config.yaml` names them (see [`crate::r1`]);
//! - a plain LLaMA directory (config.json at the top), or a llama.cpp GGUF file (or a directory
//!   holding one GGUF file and no config.json): text-only use;
//! - any of these with a `biomedgpt.json` that names other locations and settings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ModelError;
use crate::r1::{self, R1Config};

/// `biomedgpt.json`: every field optional; paths are relative to the model directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// LLaMA directory (config.json, tokenizer.json).
    pub llm: Option<PathBuf>,
    /// ESM directory (config.json, vocab.txt).
    pub esm: Option<PathBuf>,
    /// Fused weights: a file (`.pth`, `.safetensors`, `*.index.json`) or a directory of shards.
    pub weights: Option<PathBuf>,
    pub system_prompt: Option<String>,
    /// GIN size; read from the weights when absent.
    pub gin_num_layer: Option<usize>,
    pub gin_emb_dim: Option<usize>,
    /// A line printed whenever the model is loaded (e.g. "random weights: answers are meaningless").
    pub notice: Option<String>,
    /// Longest protein in ESM tokens, `<cls>` and `<eos>` included (the reference: 1024).
    pub max_protein_tokens: Option<usize>,
    /// A safetensors file whose `proj_mol.*` / `proj_prot.*` replace the fused weights' adapters
    /// (what `biomedgpt train` writes: a checkpoint is this file plus a biomedgpt.json naming the
    /// base model's parts).
    pub adapters: Option<PathBuf>,
    /// LoRA factors of the LLM (what `biomedgpt train` with LoRA writes), merged into the
    /// weights at load: `W + (alpha / rank) B A`.
    pub lora: Option<LoraOverlay>,
    /// A safetensors file with every LLM tensor under its Hugging Face name (`model.*`,
    /// `lm_head.weight`), replacing the fused weights' `llm.*` (a fully fine-tuned LLM).
    pub llm_weights: Option<PathBuf>,
    /// A safetensors file with trained encoders under the fused checkpoint's names
    /// (`mol_structure_encoder.*`, `prot_structure_encoder.*`), replacing the fused weights'.
    pub encoder_weights: Option<PathBuf>,
    /// A BioMedGPT-R1 `config.yaml` whose chat form, generation defaults and context limit this
    /// model keeps (what `convert` writes for an R1 model; its part paths are not used).
    pub r1: Option<PathBuf>,
}

impl Settings {
    /// Values that would load but silently change what the model sees (issue 26, D9: a
    /// `max_protein_tokens` of 0 dropped every protein).
    pub fn validate(&self) -> Result<(), String> {
        // `<cls>`, one residue, `<eos>`.
        if let Some(n) = self.max_protein_tokens
            && n < 3
        {
            return Err(format!("max_protein_tokens must be at least 3 (<cls>, a residue, <eos>), not {n}"));
        }
        for (name, v) in [("gin_num_layer", self.gin_num_layer), ("gin_emb_dim", self.gin_emb_dim)] {
            if v == Some(0) {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if let Some(lora) = &self.lora
            && (lora.rank == 0 || !lora.alpha.is_finite())
        {
            return Err(format!("lora: rank must be at least 1 and alpha a finite number (rank {}, alpha {})", lora.rank, lora.alpha));
        }
        Ok(())
    }
}

/// `"lora": {"weights": "lora.safetensors", "rank": 8, "alpha": 16}`; the file holds
/// `model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight` `[rank, in]` and `lora_B.weight`
/// `[out, rank]` (PEFT's shapes, without PEFT's `base_model.model.` prefix).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOverlay {
    pub weights: PathBuf,
    pub rank: usize,
    pub alpha: f64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub llm: PathBuf,
    pub esm: Option<PathBuf>,
    /// `None`: the LLaMA directory's own weights (text-only model).
    pub fused_weights: Option<PathBuf>,
    /// Trained adapters overriding the fused weights' (see [`Settings::adapters`]).
    pub adapters: Option<PathBuf>,
    /// LoRA factors to merge into the LLM, with their scale `alpha / rank` (see [`Settings::lora`]).
    pub lora: Option<(PathBuf, f64)>,
    /// Fine-tuned LLM weights replacing the fused ones (see [`Settings::llm_weights`]).
    pub llm_weights: Option<PathBuf>,
    /// Trained encoders replacing the fused ones (see [`Settings::encoder_weights`]).
    pub encoder_weights: Option<PathBuf>,
    pub settings: Settings,
    /// BioMedGPT-R1's `config.yaml`, when the directory is in R1's layout.
    pub r1: Option<R1Config>,
}

const FUSED_NAMES: [&str; 3] = ["biomedgpt_10b.pth", "model.safetensors.index.json", "model.safetensors"];

impl Layout {
    pub fn resolve(dir: &Path) -> Result<Self, ModelError> {
        if let Some(gguf) = gguf_model(dir) {
            return Ok(Layout {
                llm: gguf,
                esm: None,
                fused_weights: None,
                adapters: None,
                lora: None,
                llm_weights: None,
                encoder_weights: None,
                settings: Settings::default(),
                r1: None,
            });
        }
        if !dir.is_dir() {
            return Err(ModelError::Layout(format!("{} is neither a model directory nor a GGUF file", dir.display())));
        }
        let settings_path = dir.join("biomedgpt.json");
        let mut settings: Settings = if settings_path.is_file() {
            let text = std::fs::read_to_string(&settings_path)
                .map_err(|e| ModelError::Layout(format!("cannot read {}: {e}", settings_path.display())))?;
            let settings: Settings = serde_json::from_str(&text).map_err(|e| ModelError::Layout(format!("{}: {e}", settings_path.display())))?;
            settings.validate().map_err(|e| ModelError::Layout(format!("{}: {e}", settings_path.display())))?;
            settings
        } else {
            Settings::default()
        };
        let openbiomed = dir.join("text_ckpts/biomedgpt-lm-7b");
        let r1 = match &settings.r1 {
            Some(path) => Some(R1Config::from_file(&dir.join(path))?),
            None if settings.llm.is_none() && r1::is_r1_dir(dir) => Some(R1Config::from_dir(dir)?),
            None => None,
        };
        let (llm, esm, fused) = if let Some(llm) = &settings.llm {
            (dir.join(llm), settings.esm.as_ref().map(|p| dir.join(p)), settings.weights.as_ref().map(|p| dir.join(p)))
        } else if let Some(c) = r1.as_ref().filter(|_| settings.r1.is_none()) {
            settings.gin_num_layer.get_or_insert(c.molecule.gin_num_layers);
            settings.gin_emb_dim.get_or_insert(c.molecule.gin_hidden_dim);
            let llm = r1::resolve_part(dir, &c.llm.model_name_or_path, "llm")?;
            let esm = r1::resolve_part(dir, &c.protein.model_name_or_path, "protein")?;
            (llm, Some(esm), Some(dir.join("pytorch_model.bin")))
        } else if dir.join("llm").is_dir() {
            let fused = FUSED_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file());
            (dir.join("llm"), Some(dir.join("esm")), fused)
        } else if openbiomed.is_dir() {
            (openbiomed, Some(dir.join("protein_ckpts/esm2-3b")), Some(dir.join("fusion_ckpts/biomedgpt_10b.pth")))
        } else if dir.join("config.json").is_file() {
            (dir.to_path_buf(), None, None)
        } else {
            return Err(ModelError::Layout(format!(
                "{} is not a model directory: expected llm/ (+ esm/ + biomedgpt_10b.pth), OpenBioMed's \
                 text_ckpts/ protein_ckpts/ fusion_ckpts/, a LLaMA directory with config.json, or a biomedgpt.json",
                dir.display()
            )));
        };
        let fused = match (fused, settings.weights.as_ref()) {
            (Some(f), _) => Some(f),
            (None, Some(w)) => Some(dir.join(w)),
            (None, None) => None,
        };
        if let Some(f) = &fused
            && !f.exists()
        {
            return Err(ModelError::Layout(format!("fused weights {} not found", f.display())));
        }
        if !llm.join("config.json").is_file() && !biomedgpt_llama::is_gguf(&llm) {
            return Err(ModelError::Layout(format!("{} has no config.json (the LLaMA's HF config)", llm.display())));
        }
        // Without fused weights there is nothing to run encoders with: text-only.
        let esm = esm.filter(|_| fused.is_some());
        let adapters = settings.adapters.as_ref().map(|p| dir.join(p));
        if let Some(a) = &adapters {
            if fused.is_none() {
                return Err(ModelError::Layout(format!("{}: adapters are set but there are no fused weights to adapt", dir.display())));
            }
            if !a.is_file() {
                return Err(ModelError::Layout(format!("adapter weights {} not found", a.display())));
            }
        }
        let lora = match &settings.lora {
            Some(l) => {
                let path = dir.join(&l.weights);
                if !path.is_file() {
                    return Err(ModelError::Layout(format!("LoRA weights {} not found", path.display())));
                }
                if l.rank == 0 {
                    return Err(ModelError::Layout(format!("{}: lora.rank must be at least 1", dir.display())));
                }
                Some((path, l.alpha / l.rank as f64))
            }
            None => None,
        };
        let llm_weights = settings.llm_weights.as_ref().map(|p| dir.join(p));
        if let Some(w) = &llm_weights
            && !w.is_file()
        {
            return Err(ModelError::Layout(format!("LLM weights {} not found", w.display())));
        }
        let encoder_weights = settings.encoder_weights.as_ref().map(|p| dir.join(p));
        if let Some(w) = &encoder_weights
            && !w.is_file()
        {
            return Err(ModelError::Layout(format!("encoder weights {} not found", w.display())));
        }
        Ok(Layout { llm, esm, fused_weights: fused, adapters, lora, llm_weights, encoder_weights, settings, r1 })
    }
}

/// The GGUF file `path` is, or the only `.gguf` file of a directory without a config.json or a
/// biomedgpt.json.
fn gguf_model(path: &Path) -> Option<PathBuf> {
    if biomedgpt_llama::is_gguf(path) {
        return Some(path.to_path_buf());
    }
    if !path.is_dir() || path.join("config.json").exists() || path.join("biomedgpt.json").exists() {
        return None;
    }
    let mut found = std::fs::read_dir(path).ok()?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "gguf"));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused() {
        let parse = |t: &str| serde_json::from_str::<Settings>(t).unwrap().validate();
        assert!(parse(r#"{"max_protein_tokens": 1024}"#).is_ok());
        let e = parse(r#"{"max_protein_tokens": 0}"#).unwrap_err();
        assert!(e.contains("max_protein_tokens must be at least 3"), "{e}");
        assert!(parse(r#"{"gin_emb_dim": 0}"#).unwrap_err().contains("gin_emb_dim"));
        assert!(parse(r#"{"lora": {"weights": "l.safetensors", "rank": 0, "alpha": 16}}"#).unwrap_err().contains("rank"));
    }
}
