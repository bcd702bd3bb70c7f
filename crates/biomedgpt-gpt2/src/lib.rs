//! GPT-2-architecture decoders (BioMedLM 2.7B, formerly PubMedGPT, and others) from Hugging Face
//! checkpoints, generating and scoring through [`biomedgpt_llama::CausalLm`] with the same
//! greedy, sampling and beam search as the LLaMA decoder.

pub mod config;
pub mod model;

use std::path::{Path, PathBuf};

use biomedgpt_io::{Checkpoint, FloatType};
use biomedgpt_llama::{LlamaTokenizer, OpenError, TokenizerError};
use burn::tensor::Device;

pub use config::Gpt2Config;
pub use model::Gpt2;

/// An HF GPT-2 directory: `config.json`, weights, and `tokenizer.json` (or `vocab.json` +
/// `merges.txt`).
pub struct Gpt2Dir {
    pub model: Gpt2,
    pub tokenizer: LlamaTokenizer,
}

impl Gpt2Dir {
    pub fn open(dir: impl AsRef<Path>, ty: FloatType, device: &Device) -> Result<Self, OpenError> {
        let dir = dir.as_ref();
        let model = Self::open_model(dir, ty, device)?;
        let tokenizer = open_tokenizer(dir)?;
        Ok(Gpt2Dir { model, tokenizer })
    }

    /// The model only (no tokenizer), for id-level work.
    pub fn open_model(dir: impl AsRef<Path>, ty: FloatType, device: &Device) -> Result<Gpt2, OpenError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(OpenError::NotADirectory(dir.to_path_buf()));
        }
        let config = Gpt2Config::from_file(dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        Ok(Gpt2::load(&config, &ckpt.root(), ty, device)?)
    }
}

/// `tokenizer.json`, else GPT-2's byte-level BPE from `vocab.json` + `merges.txt`. GPT-2 adds no
/// BOS to prompts.
pub fn open_tokenizer(dir: &Path) -> Result<LlamaTokenizer, TokenizerError> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return LlamaTokenizer::from_file(json, None);
    }
    let (vocab, merges): (PathBuf, PathBuf) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if vocab.is_file() && merges.is_file() {
        return LlamaTokenizer::from_byte_level_bpe(&vocab, &merges);
    }
    Err(TokenizerError::Load {
        path: dir.display().to_string(),
        message: "no tokenizer.json, nor vocab.json + merges.txt".into(),
    })
}
