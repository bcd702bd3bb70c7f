//! The LLaMA tokenizer through the `tokenizers` crate, read from the model's `tokenizer.json`
//! (any `tokenizer.json` works the same way; GPT-2's can also come from vocab.json + merges.txt).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {message}")]
    Load { path: String, message: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
}

#[derive(Clone)]
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
}

impl LlamaTokenizer {
    /// Loads `tokenizer.json`. The BOS id comes from the model config (`bos_token_id`).
    pub fn from_file(path: impl AsRef<Path>, bos_id: Option<u32>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(TokenizerError::Load {
                path: path.display().to_string(),
                message: "file not found (an HF LLaMA directory ships tokenizer.json; \
                          convert tokenizer.model with transformers' LlamaTokenizerFast if it lacks one)"
                    .into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(LlamaTokenizer { inner, bos_id })
    }

    /// Loads `tokenizer.json` with the BOS that its post-processor puts in front of a text, as
    /// transformers' `tokenizer(text)` does (none for Qwen2's tokenizer; DeepSeek-R1-Distill-Qwen's
    /// adds `<｜begin▁of▁sentence｜>`).
    pub fn from_file_with_template_bos(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let mut tokenizer = Self::from_file(path, None)?;
        let encode = |special| tokenizer.inner.encode("a", special).map(|e| e.get_ids().to_vec()).map_err(|e| TokenizerError::Encode(e.to_string()));
        let (with, without) = (encode(true)?, encode(false)?);
        tokenizer.bos_id = (with.len() > without.len() && with.ends_with(&without)).then(|| with[0]);
        Ok(tokenizer)
    }

    /// The `tokenizer.json` of a model directory with the BOS that model's family adds: LLaMA's is
    /// the config's `bos_token_id` (1 if unset; tokenizer.json files converted from
    /// tokenizer.model often have no post-processor), Qwen2's whatever the post-processor adds.
    pub fn for_model(path: impl AsRef<Path>, config: &crate::LlamaConfig) -> Result<Self, TokenizerError> {
        match config.architecture() {
            crate::Architecture::Llama => Self::from_file(path, config.bos_token_id.or(Some(1))),
            crate::Architecture::Qwen2 => Self::from_file_with_template_bos(path),
        }
    }

    /// A tokenizer built elsewhere (GGUF metadata), with the BOS id `encode` prepends.
    pub fn from_parts(inner: tokenizers::Tokenizer, bos_id: Option<u32>) -> Self {
        LlamaTokenizer { inner, bos_id }
    }

    /// The BOS id `encode(.., true)` prepends (`None`: the model adds none).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// GPT-2's byte-level BPE from `vocab.json` and `merges.txt` (no prefix space, GPT-2's
    /// split regex), with `<|endoftext|>` special when the vocabulary has it; no BOS.
    pub fn from_byte_level_bpe(vocab: &Path, merges: &Path) -> Result<Self, TokenizerError> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let load_error = |e: String| TokenizerError::Load { path: vocab.display().to_string(), message: e };
        let (v, m) = (vocab.to_string_lossy().into_owned(), merges.to_string_lossy().into_owned());
        let bpe = BPE::from_file(&v, &m).build().map_err(|e| load_error(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        if inner.token_to_id("<|endoftext|>").is_some() {
            inner.add_special_tokens(&[tokenizers::AddedToken::from("<|endoftext|>", true)]);
        }
        Ok(LlamaTokenizer { inner, bos_id: None })
    }

    /// Tokenizes `text` without special tokens (the SentencePiece "▁" prefix is added by the
    /// tokenizer's normalizer), with BOS in front when `add_bos`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos && let Some(bos) = self.bos_id {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Adds a special token (as `tokenizer.add_special_tokens` does in transformers) and checks
    /// that it got the id the model's weights expect.
    pub fn add_special_token(&mut self, token: &str, expected_id: u32) -> Result<(), TokenizerError> {
        self.inner.add_special_tokens(&[tokenizers::AddedToken::from(token, true)]);
        match self.inner.token_to_id(token) {
            Some(id) if id == expected_id => Ok(()),
            got => Err(TokenizerError::Encode(format!(
                "adding `{token}` gave id {got:?}, but the model expects {expected_id}: the tokenizer does not match the weights"
            ))),
        }
    }

    /// The bytes token `id` stands for, as llama.cpp's `token_to_piece` gives them: a byte-fallback
    /// token (`<0xNN>`) its byte, a byte-level BPE token (GPT-2, Qwen2) its bytes through GPT-2's
    /// byte alphabet, a SentencePiece token its text with `▁` as a space, an added token its text.
    /// A piece may be part of a UTF-8 character.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(token) = self.inner.id_to_token(id) else { return Vec::new() };
        if let Some(b) = token.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')).filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            return vec![b];
        }
        if self.inner.get_added_tokens_decoder().contains_key(&id) {
            return token.into_bytes();
        }
        if matches!(self.inner.get_decoder(), Some(tokenizers::DecoderWrapper::ByteLevel(_))) {
            let alphabet = crate::gguf_tokenizer::byte_alphabet();
            let bytes: Option<Vec<u8>> = token.chars().map(|c| alphabet.iter().position(|&a| a == c).map(|b| b as u8)).collect();
            if let Some(bytes) = bytes {
                return bytes;
            }
        }
        token.replace('\u{2581}', " ").into_bytes()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
