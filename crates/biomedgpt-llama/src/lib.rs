//! LLaMA-family decoders (LLaMA, Llama-2/3, Mistral, Qwen2) in Burn, loaded from Hugging Face checkpoints, with a KV cache and
//! generation that reproduces transformers' `generate` (greedy, sampling, beam search).
//!
//! ```no_run
//! use biomedgpt_llama::{LlamaDir, GenerationConfig, Strategy, Prompt, generate};
//! # fn main() -> anyhow::Result<()> {
//! let device = burn::tensor::Device::flex();
//! let dir = LlamaDir::open("path/to/Llama-2-7b-hf", biomedgpt_io::FloatType::F16, &device)?;
//! let ids = dir.tokenizer.encode("The capital of France is", true)?;
//! let config = GenerationConfig { max_new_tokens: 16, strategy: Strategy::Greedy,
//!     repetition_penalty: 1.0, eos_token_ids: dir.model.config().eos_token_ids() };
//! let out = generate(&dir.model, Prompt::Ids(ids), &config, &mut |_| {})?;
//! println!("{}", dir.tokenizer.decode(&out.tokens)?);
//! # Ok(()) }
//! ```

pub mod cache;
pub mod config;
pub mod decoder;
pub mod generation;
pub mod gguf;
pub mod gguf_export;
pub mod load_dtype;
mod gguf_tokenizer;
pub mod model;
pub mod prefix_cache;
pub mod rope;
pub mod scoring;
pub mod text_stream;
pub mod tokenizer;

pub use cache::{KvCache, LayerCache, StepMask};
pub use config::{Architecture, ConfigError, LlamaConfig, RopeKind};
pub use decoder::CausalLm;
pub use gguf::GgufModelError;
pub use gguf_tokenizer::tokenizer_json as gguf_tokenizer_json;
pub use generation::{
    EarlyStopping, GenerationConfig, GenerationError, GenerationOutput, Prompt, Strategy, TokenChooser, generate, generate_cached, generate_until,
};
pub use model::{DecoderInput, Llama};
pub use prefix_cache::{BlockKey, PrefixCache};
pub use scoring::{ContinuationScore, ScoringError, choice_logprobs, continuation_logprob};
pub use tokenizer::{LlamaTokenizer, TokenizerError};

use std::path::{Path, PathBuf};

use biomedgpt_io::{Checkpoint, FloatType, Gguf, LoadError};
use burn::tensor::Device;

/// Everything that can fail while opening a model directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] LoadError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Gguf(#[from] GgufModelError),
    #[error("{0} is neither a model directory nor a .gguf file")]
    NotADirectory(PathBuf),
}

/// An HF LLaMA directory (`config.json`, weights, `tokenizer.json`) or a llama.cpp GGUF file
/// (config and tokenizer in its metadata).
pub struct LlamaDir {
    pub model: Llama,
    pub tokenizer: LlamaTokenizer,
}

impl LlamaDir {
    pub fn open(dir: impl AsRef<Path>, ty: FloatType, device: &Device) -> Result<Self, OpenError> {
        Self::open_with(dir, ty, false, device)
    }

    /// [`Self::open`]; for a GGUF file with `keep_blocks`, projections stored in a GGML block type
    /// stay in their blocks (memory-mapped) and run quantized products.
    pub fn open_with(dir: impl AsRef<Path>, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Self, OpenError> {
        let dir = dir.as_ref();
        if is_gguf(dir) {
            let (ckpt, config) = gguf::open(dir)?;
            let g = ckpt.gguf().expect("opened as GGUF");
            let tokenizer = LlamaTokenizer::from_gguf(g).map_err(|e| match e {
                TokenizerError::Load { message, .. } => TokenizerError::Load { path: dir.display().to_string(), message },
                other => other,
            })?;
            let model = Llama::load_with(&config, &ckpt.root(), ty, keep_blocks, device)?;
            return Ok(LlamaDir { model, tokenizer });
        }
        if !dir.is_dir() {
            return Err(OpenError::NotADirectory(dir.to_path_buf()));
        }
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let tokenizer = LlamaTokenizer::for_model(dir.join("tokenizer.json"), &config)?;
        let ckpt = Checkpoint::open(dir)?;
        let model = Llama::load(&config, &ckpt.root(), ty, device)?;
        Ok(LlamaDir { model, tokenizer })
    }

    /// Opens the model only (no tokenizer), for id-level work such as parity tests.
    pub fn open_model(dir: impl AsRef<Path>, ty: FloatType, device: &Device) -> Result<Llama, OpenError> {
        Self::open_model_with(dir, ty, false, device)
    }

    /// [`Self::open_model`] with [`Self::open_with`]'s `keep_blocks`.
    pub fn open_model_with(dir: impl AsRef<Path>, ty: FloatType, keep_blocks: bool, device: &Device) -> Result<Llama, OpenError> {
        let dir = dir.as_ref();
        if is_gguf(dir) {
            let (ckpt, config) = gguf::open(dir)?;
            return Ok(Llama::load_with(&config, &ckpt.root(), ty, keep_blocks, device)?);
        }
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        Ok(Llama::load(&config, &ckpt.root(), ty, device)?)
    }
}

/// A path to a GGUF file (by its magic, so the extension does not matter).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    if !path.is_file() {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && Gguf::sniff(&magic)
}
