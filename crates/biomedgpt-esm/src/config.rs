//! `config.json` of HF ESM checkpoints (`EsmConfig`), field for field.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct EsmConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_true")]
    pub token_dropout: bool,
    #[serde(default = "default_mask")]
    pub mask_token_id: u32,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    #[serde(default)]
    pub emb_layer_norm_before: Option<bool>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub is_decoder: bool,
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn default_vocab() -> usize {
    33
}
fn default_eps() -> f64 {
    1e-5
}
fn default_position_type() -> String {
    "rotary".into()
}
fn default_true() -> bool {
    true
}
fn default_mask() -> u32 {
    32
}
fn default_pad() -> u32 {
    1
}
fn default_max_positions() -> usize {
    1026
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "gelu".into()
}

impl EsmConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let c: EsmConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if c.position_embedding_type != "rotary" {
            return Err(format!(
                "position_embedding_type `{}` is not supported: ESM-2 uses rotary embeddings (ESM-1b is not supported)",
                c.position_embedding_type
            ));
        }
        if c.hidden_act != "gelu" {
            return Err(format!("hidden_act `{}` is not supported (ESM uses erf gelu)", c.hidden_act));
        }
        if c.is_decoder {
            return Err("decoder ESM configs are not supported".into());
        }
        if c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            ));
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The published ESM-2 sizes, for fair-esm checkpoints that carry no HF config:
    /// (layers, hidden) -> heads and FFN width.
    pub fn esm2_preset(num_layers: usize, hidden: usize) -> Option<Self> {
        let heads = match (num_layers, hidden) {
            (6, 320) | (12, 480) | (30, 640) | (33, 1280) => 20,
            (36, 2560) | (48, 5120) => 40,
            _ => return None,
        };
        Some(EsmConfig {
            hidden_size: hidden,
            num_hidden_layers: num_layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            vocab_size: 33,
            layer_norm_eps: 1e-5,
            position_embedding_type: "rotary".into(),
            token_dropout: true,
            mask_token_id: 32,
            pad_token_id: 1,
            emb_layer_norm_before: Some(false),
            max_position_embeddings: 1026,
            rope_theta: 10000.0,
            hidden_act: "gelu".into(),
            is_decoder: false,
            torch_dtype: None,
        })
    }
}
