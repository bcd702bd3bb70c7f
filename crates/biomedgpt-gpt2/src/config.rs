//! `config.json` of HF GPT-2 checkpoints (`model_type: gpt2`), with transformers' names and
//! defaults. Unknown fields are ignored; a missing required one is an error naming it.

use std::path::Path;

use biomedgpt_llama::ConfigError;
use biomedgpt_llama::config::{TokenIds, read_config};
use serde::Deserialize;

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// Context length (learned position embeddings).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Feed-forward width; `None` means 4 x `n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Scores divided by sqrt(head_dim).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Scores further divided by (layer index + 1).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Only the float precision of the scores in transformers; ours are f32 in any case.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub model_type: Option<String>,
    /// `torch_dtype` (transformers 4.x) or `dtype` (5.x).
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub add_cross_attention: bool,
}

impl Gpt2Config {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        read_config(path.as_ref(), Self::from_json)
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Gpt2Config = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type
            && t != "gpt2"
        {
            return Err(format!("model_type `{t}` is not a GPT-2 model"));
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu" | "gelu_pytorch_tanh" | "relu") {
            return Err(format!(
                "activation_function `{}` is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu are)",
                self.activation_function
            ));
        }
        if self.n_head == 0 || self.n_embd % self.n_head != 0 {
            return Err(format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head));
        }
        if self.add_cross_attention {
            return Err("add_cross_attention: encoder-decoder GPT-2 is not supported".into());
        }
        // Special tokens index the embeddings and the logits (issue 39, D10).
        let vocab = self.vocab_size;
        if let Some(bos) = self.bos_token_id.filter(|&b| b as usize >= vocab) {
            return Err(format!("bos_token_id {bos} is outside the vocabulary of {vocab} tokens"));
        }
        if let Some(eos) = self.eos_token_id.as_ref().and_then(|e| e.to_vec().into_iter().find(|&e| e as usize >= vocab)) {
            return Err(format!("eos_token_id {eos} is outside the vocabulary of {vocab} tokens"));
        }
        Ok(())
    }

    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Gpt2Config;

    /// Issue 39, D10: special tokens outside the vocabulary are refused at load, by name.
    #[test]
    fn special_tokens_outside_the_vocabulary_are_refused() {
        let config = |extra: &str| format!(r#"{{"vocab_size": 100, "n_embd": 8, "n_head": 2, "n_layer": 1, "n_positions": 16{extra}}}"#);
        assert!(Gpt2Config::from_json(&config("")).is_ok());
        let e = Gpt2Config::from_json(&config(r#", "bos_token_id": 100"#)).unwrap_err();
        assert!(e.contains("bos_token_id 100 is outside the vocabulary of 100"), "{e}");
        let e = Gpt2Config::from_json(&config(r#", "eos_token_id": 50256"#)).unwrap_err();
        assert!(e.contains("eos_token_id 50256"), "{e}");
    }
}
