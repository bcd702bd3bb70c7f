//! `config.json` of HF LLaMA checkpoints, field for field, and the runtime view derived from it.

use std::path::Path;

use serde::Deserialize;

/// `eos_token_id` may be one id or a list of ids.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` (transformers 4.x) or `rope_parameters` (transformers 5.x).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct RopeScaling {
    /// `rope_type` (newer) or `type` (older configs).
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    /// Only in `rope_parameters`.
    pub rope_theta: Option<f64>,
}

/// The fields of a LLaMA `config.json` that define the computation. Unknown fields are ignored;
/// a missing required field is an error that names it.
#[derive(Debug, Clone, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub model_type: Option<String>,
    /// Qwen2: sliding-window attention on some layers (off in every released Qwen2 and
    /// DeepSeek-R1-Distill-Qwen config; refused when on).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// transformers 5: `full_attention` or `sliding_attention` per layer.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

/// Which decoder of the LLaMA family a config describes. They share every module; they differ
/// only in where the projections have biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// LLaMA, Llama-2/3, Mistral, PMC-LLaMA, SmolLM2: biases only with `attention_bias` / `mlp_bias`.
    Llama,
    /// Qwen2 (`Qwen2ForCausalLM`, DeepSeek-R1-Distill-Qwen): always a bias on q, k and v, none on o.
    Qwen2,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Reads a `config.json` and parses it with `parse`, naming the file in errors.
pub fn read_config<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.display().to_string(),
        message,
    })
}

impl LlamaConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        read_config(path.as_ref(), Self::from_json)
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: LlamaConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type
            && !matches!(t.as_str(), "llama" | "mistral" | "qwen2")
        {
            return Err(format!("model_type `{t}` is not a LLaMA-family model (llama, mistral and qwen2 are)"));
        }
        if self.use_sliding_window || self.layer_types.iter().flatten().any(|t| t != "full_attention") {
            return Err("sliding-window attention (`use_sliding_window`, `layer_types`) is not supported".into());
        }
        if self.hidden_act != "silu" {
            return Err(format!("hidden_act `{}` is not supported (LLaMA uses silu)", self.hidden_act));
        }
        if self.num_attention_heads == 0 || self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return Err("hidden_size, num_hidden_layers and num_attention_heads must be positive".into());
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let kv = self.num_kv_heads();
        if kv == 0 || self.num_attention_heads % kv != 0 {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        // Ranges (issue 26, D8): a negative or zero theta gives NaN rotary frequencies and
        // silently different answers; sizes past these are typos or forgeries, refused before
        // anything is allocated.
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("rope_theta must be a positive number, not {theta}"));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!("rms_norm_eps must be a positive number, not {}", self.rms_norm_eps));
        }
        const MAX_SIZE: usize = 1 << 20;
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 || v > MAX_SIZE {
                return Err(format!("{name} {v} is out of range (1 to {MAX_SIZE})"));
            }
        }
        if self.vocab_size == 0 || self.vocab_size > 1 << 24 {
            return Err(format!("vocab_size {} is out of range (1 to {})", self.vocab_size, 1 << 24));
        }
        // A special token outside the vocabulary indexes past the embeddings or the logits
        // (issue 39, D10: a forged GGUF with bos 40000 panicked every request).
        let vocab = self.vocab_size;
        if let Some(bos) = self.bos_token_id.filter(|&b| b as usize >= vocab) {
            return Err(format!("bos_token_id {bos} is outside the vocabulary of {vocab} tokens"));
        }
        if let Some(eos) = self.eos_token_id.as_ref().and_then(|e| e.to_vec().into_iter().find(|&e| e as usize >= vocab)) {
            return Err(format!("eos_token_id {eos} is outside the vocabulary of {vocab} tokens"));
        }
        self.rope_kind()?;
        Ok(())
    }

    pub fn architecture(&self) -> Architecture {
        match self.model_type.as_deref() {
            Some("qwen2") => Architecture::Qwen2,
            _ => Architecture::Llama,
        }
    }

    /// Whether q, k and v have biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.architecture() == Architecture::Qwen2
    }

    /// Whether the output projection has a bias (never in Qwen2, whatever `attention_bias` says:
    /// transformers' `Qwen2Attention` ignores it).
    pub fn o_bias(&self) -> bool {
        self.attention_bias && self.architecture() == Architecture::Llama
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_else(|| vec![2])
    }

    fn scaling(&self) -> Option<&RopeScaling> {
        self.rope_scaling.as_ref().or(self.rope_parameters.as_ref())
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10000.0)
    }

    /// Which inverse-frequency rule the config asks for.
    pub fn rope_kind(&self) -> Result<RopeKind, String> {
        let Some(s) = self.scaling() else {
            return Ok(RopeKind::Default);
        };
        let need = |v: Option<f64>, name: &str| v.ok_or_else(|| format!("rope scaling needs `{name}`"));
        match s.rope_type.as_deref().unwrap_or("default") {
            "default" => Ok(RopeKind::Default),
            "linear" => Ok(RopeKind::Linear {
                factor: need(s.factor, "factor")?,
            }),
            "llama3" => Ok(RopeKind::Llama3 {
                factor: need(s.factor, "factor")?,
                low_freq_factor: need(s.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: need(s.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: s
                    .original_max_position_embeddings
                    .ok_or("rope scaling needs `original_max_position_embeddings`")?,
            }),
            other => Err(format!("rope scaling type `{other}` is not supported (default, linear, llama3 are)")),
        }
    }

    /// Parameter count (embeddings and head included) and its size in bytes at `bytes_per_param`.
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.num_kv_heads() * self.head_dim();
        let q = self.num_attention_heads * self.head_dim();
        let biases = if self.qkv_bias() { q + 2 * kv } else { 0 }
            + if self.o_bias() { h } else { 0 }
            + if self.mlp_bias { 2 * self.intermediate_size + h } else { 0 };
        let layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size + 2 * h + biases;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_hidden_layers * layer + h + head
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeKind {
    Default,
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100, "some_future_field": [1, 2]}"#;

    #[test]
    fn defaults_and_unknown_fields() {
        let c = LlamaConfig::from_json(MINIMAL).unwrap();
        assert_eq!(c.num_kv_heads(), 4);
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.rope_theta(), 10000.0);
        assert_eq!(c.rope_kind().unwrap(), RopeKind::Default);
        assert_eq!(c.eos_token_ids(), vec![2]);
    }

    #[test]
    fn missing_field_is_named() {
        let err = LlamaConfig::from_json(r#"{"hidden_size": 64}"#).unwrap_err();
        assert!(err.contains("intermediate_size"), "{err}");
    }

    #[test]
    fn bad_gqa_ratio_is_rejected() {
        let text = MINIMAL.replace("\"vocab_size\"", "\"num_key_value_heads\": 3, \"vocab_size\"");
        assert!(LlamaConfig::from_json(&text).unwrap_err().contains("num_key_value_heads"));
    }

    /// Defect D8 (issue 26) and its kin: values out of range are refused by name.
    #[test]
    fn out_of_range_values_are_refused() {
        for (field, value, needle) in [
            ("rope_theta", "-1", "rope_theta must be a positive number"),
            ("rope_theta", "0", "rope_theta must be a positive number"),
            ("rms_norm_eps", "-1e-6", "rms_norm_eps must be a positive number"),
            ("max_position_embeddings", "0", "max_position_embeddings 0 is out of range"),
            ("intermediate_size", "1000000000000", "intermediate_size 1000000000000 is out of range"),
            ("num_hidden_layers", "100000000", "num_hidden_layers 100000000 is out of range"),
            // Issue 39, D10: special tokens outside the vocabulary of 100.
            ("bos_token_id", "40000", "bos_token_id 40000 is outside the vocabulary of 100 tokens"),
            ("eos_token_id", "[2, 100]", "eos_token_id 100 is outside the vocabulary of 100 tokens"),
        ] {
            let text = MINIMAL.replace(&format!("\"{field}\": "), "\"ignored\": ").replace("\"vocab_size\"", &format!("\"{field}\": {value}, \"vocab_size\""));
            let err = LlamaConfig::from_json(&text).unwrap_err();
            assert!(err.contains(needle), "{field} {value}: {err}");
        }
        let err = LlamaConfig::from_json(&MINIMAL.replace("\"vocab_size\": 100", "\"vocab_size\": 1099511627776")).unwrap_err();
        assert!(err.contains("vocab_size 1099511627776 is out of range"), "{err}");
    }

    #[test]
    fn rope_parameters_of_transformers_5() {
        let text = MINIMAL.replace(
            "\"vocab_size\"",
            "\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 500000.0}, \"vocab_size\"",
        );
        let c = LlamaConfig::from_json(&text).unwrap();
        assert_eq!(c.rope_theta(), 500000.0);
        assert_eq!(c.rope_kind().unwrap(), RopeKind::Linear { factor: 2.0 });
    }
}
