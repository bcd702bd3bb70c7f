//! Text language models of either family, chosen by `config.json`'s `model_type`: LLaMA
//! (`llama`, `mistral`, `qwen2`, or none; a GGUF file) and GPT-2 (`gpt2`: BioMedLM). The CLI's
//! `generate`, `inspect logits`, `ask` without molecules or proteins and the multiple-choice
//! `eval` tasks run on both through [`CausalLm`], as does the Python package's `LanguageModel`.

use std::path::Path;

use biomedgpt_gpt2::Gpt2Dir;
use biomedgpt_io::FloatType;
use biomedgpt_llama::{CausalLm, LlamaDir, LlamaTokenizer};
use burn::tensor::Device;

use crate::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Gpt2,
}

/// The family of an HF model directory, from its config.json (a GGUF file is a LLaMA: its
/// architecture is checked when it is opened).
pub fn family_of(dir: &Path) -> Result<Family, ModelError> {
    if biomedgpt_llama::is_gguf(dir) {
        return Ok(Family::Llama);
    }
    if dir.is_file() {
        return Err(ModelError::Layout(format!(
            "{} is a file but not a GGUF file (no `GGUF` magic): --model takes an HF model directory or a .gguf file",
            dir.display()
        )));
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Layout(format!("reading {}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Layout(format!("parsing {}: {e}", path.display())))?;
    match json.get("model_type").and_then(|t| t.as_str()) {
        None | Some("llama" | "mistral" | "qwen2") => Ok(Family::Llama),
        Some("gpt2") => Ok(Family::Gpt2),
        Some(other) => Err(ModelError::Unsupported(format!("{}: model_type `{other}` is not supported (llama, mistral, qwen2 and gpt2 are)", path.display()))),
    }
}

/// A causal LM with its tokenizer.
pub struct TextLm {
    /// Send: the Python package moves it between threads.
    pub model: Box<dyn CausalLm + Send>,
    pub tokenizer: LlamaTokenizer,
}

fn loading(dir: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Layout(format!("loading {}: {e}", dir.display()))
}

impl TextLm {
    /// `keep_blocks`: a GGUF file's block-quantized projections stay in their blocks.
    pub fn open(dir: &Path, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, ModelError> {
        Ok(match family_of(dir)? {
            Family::Llama => {
                let LlamaDir { model, tokenizer } = LlamaDir::open_with(dir, ty, keep_blocks, device).map_err(|e| loading(dir, e))?;
                TextLm { model: Box::new(model), tokenizer }
            }
            Family::Gpt2 => {
                let Gpt2Dir { model, tokenizer } = Gpt2Dir::open(dir, ty, device).map_err(|e| loading(dir, e))?;
                TextLm { model: Box::new(model), tokenizer }
            }
        })
    }

    /// [`Self::open`] with a dtype named as `--dtype` names it (see [`biomedgpt_llama::load_dtype`]).
    pub fn open_with_dtype(dir: &Path, dtype: &str, device: &Device) -> Result<Self, ModelError> {
        let (ty, keep_blocks) = biomedgpt_llama::load_dtype::decide(dtype, dir, device).map_err(ModelError::Input)?;
        Self::open(dir, ty, keep_blocks, device)
    }

    /// The model only (work on token ids).
    pub fn open_model(dir: &Path, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Box<dyn CausalLm>, ModelError> {
        Ok(match family_of(dir)? {
            Family::Llama => Box::new(LlamaDir::open_model_with(dir, ty, keep_blocks, device).map_err(|e| loading(dir, e))?),
            Family::Gpt2 => Box::new(Gpt2Dir::open_model(dir, ty, device).map_err(|e| loading(dir, e))?),
        })
    }
}
