//! Text language models of either family, chosen by `config.json`'s `model_type`: LLaMA
//! (`llama`, `mistral`, or none) and GPT-2 (`gpt2`: BioMedLM). `generate`, `inspect logits`,
//! `ask` without molecules or proteins, and the multiple-choice `eval` tasks run on both through
//! [`CausalLm`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use biomedgpt_gpt2::Gpt2Dir;
use biomedgpt_io::FloatType;
use biomedgpt_llama::{CausalLm, LlamaDir, LlamaTokenizer};
use burn::tensor::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    Gpt2,
}

/// The family of an HF model directory, from its config.json (a GGUF file is a LLaMA: its
/// architecture is checked when it is opened).
pub fn family_of(dir: &Path) -> Result<Family> {
    if biomedgpt_llama::is_gguf(dir) {
        return Ok(Family::Llama);
    }
    if dir.is_file() {
        bail!("{} is a file but not a GGUF file (no `GGUF` magic): --model takes an HF model directory or a .gguf file", dir.display());
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match json.get("model_type").and_then(|t| t.as_str()) {
        None | Some("llama" | "mistral") => Ok(Family::Llama),
        Some("gpt2") => Ok(Family::Gpt2),
        Some(other) => bail!("{}: model_type `{other}` is not supported (llama, mistral and gpt2 are)", path.display()),
    }
}

pub use biomedgpt_llama::load_dtype::stored_dtype;

/// A causal LM with its tokenizer.
pub struct TextLm {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: LlamaTokenizer,
}

impl TextLm {
    /// `keep_blocks`: a GGUF file's block-quantized projections stay in their blocks.
    pub fn open(dir: &Path, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self> {
        let loading = || format!("loading {}", dir.display());
        Ok(match family_of(dir)? {
            Family::Llama => {
                let LlamaDir { model, tokenizer } = LlamaDir::open_with(dir, ty, keep_blocks, device).with_context(loading)?;
                TextLm { model: Box::new(model), tokenizer }
            }
            Family::Gpt2 => {
                let Gpt2Dir { model, tokenizer } = Gpt2Dir::open(dir, ty, device).with_context(loading)?;
                TextLm { model: Box::new(model), tokenizer }
            }
        })
    }

    /// The model only (work on token ids).
    pub fn open_model(dir: &Path, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Box<dyn CausalLm>> {
        let loading = || format!("loading {}", dir.display());
        Ok(match family_of(dir)? {
            Family::Llama => Box::new(LlamaDir::open_model_with(dir, ty, keep_blocks, device).with_context(loading)?),
            Family::Gpt2 => Box::new(Gpt2Dir::open_model(dir, ty, device).with_context(loading)?),
        })
    }
}
