//! LLaMA-family models in llama.cpp's GGUF files (`general.architecture` `llama` or `qwen2`): the
//! config from the `<arch>.*` metadata, the one table from GGUF tensor names to HF names, and the
//! q/k row order llama.cpp's converter changes.
//!
//! For `llama`, llama.cpp's `convert_hf_to_gguf.py` permutes the rows of every head of `q_proj` and
//! `k_proj` so that its RoPE rotates adjacent pairs: HF row `h*hd + half*hd/2 + i` is stored as row
//! `h*hd + 2*i + half`. [`open`] asks the checkpoint to read those rows back in HF's order
//! (transformers' GGUF loader undoes the same permutation), so the model code and its rotate-half
//! RoPE stay exactly the ones used for HF checkpoints. `qwen2` files keep HF's order (llama.cpp
//! runs them with its NeoX RoPE, which is rotate-half).

use std::path::Path;

use biomedgpt_io::{Checkpoint, FloatType, Gguf, LoadError, MetaError};

use crate::config::{LlamaConfig, RopeScaling, TokenIds};

/// GGUF tensor name -> HF `LlamaForCausalLM` name (`None`: not a LLaMA tensor we read).
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// Why a GGUF file cannot be read as a LLaMA model.
#[derive(Debug, thiserror::Error)]
pub enum GgufModelError {
    #[error("{path}: {source}")]
    Meta {
        path: String,
        #[source]
        source: MetaError,
    },
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Whether llama.cpp's converter permuted the q/k rows of this architecture (see the module doc).
pub fn permutes_rope_rows(config: &LlamaConfig) -> bool {
    config.architecture() == crate::config::Architecture::Llama
}

/// The HF-style config a GGUF file's `<arch>.*` metadata describes.
pub fn config(path: &Path, g: &Gguf) -> Result<LlamaConfig, GgufModelError> {
    let meta = |source| GgufModelError::Meta {
        path: path.display().to_string(),
        source,
    };
    let unsupported = |message: String| GgufModelError::Unsupported {
        path: path.display().to_string(),
        message,
    };
    let arch = Gguf::require(g.str("general.architecture"), "general.architecture").map_err(meta)?;
    if !matches!(arch, "llama" | "qwen2") {
        return Err(unsupported(format!(
            "general.architecture `{arch}` is not supported (this build reads `llama`: LLaMA, Llama-2/3, Mistral, SmolLM2, ...; \
             and `qwen2`: Qwen2, DeepSeek-R1-Distill-Qwen)"
        )));
    }
    let key = |name: &str| format!("{arch}.{name}");
    let required = |name: &str| -> Result<usize, GgufModelError> {
        let k = key(name);
        let v = Gguf::require(g.u64(&k), &k).map_err(meta)?;
        usize::try_from(v).map_err(|_| unsupported(format!("{k} = {v} is too large")))
    };
    let optional = |name: &str| -> Result<Option<usize>, GgufModelError> {
        let k = key(name);
        g.u64(&k).map_err(meta)?.map(|v| usize::try_from(v).map_err(|_| unsupported(format!("{k} = {v} is too large")))).transpose()
    };
    let hidden_size = required("embedding_length")?;
    let num_hidden_layers = required("block_count")?;
    let intermediate_size = required("feed_forward_length")?;
    let num_attention_heads = required("attention.head_count")?;
    let num_key_value_heads = optional("attention.head_count_kv")?;
    let head_dim = optional("attention.key_length")?;
    if let (Some(k), Some(v)) = (head_dim, optional("attention.value_length")?)
        && k != v
    {
        return Err(unsupported(format!("attention.key_length {k} differs from attention.value_length {v}")));
    }
    let head_dim_value = head_dim.unwrap_or(if num_attention_heads == 0 { 0 } else { hidden_size / num_attention_heads });
    if let Some(rot) = optional("rope.dimension_count")?
        && rot != head_dim_value
    {
        return Err(unsupported(format!(
            "{arch}.rope.dimension_count {rot} differs from the head size {head_dim_value} (partial rotary embeddings are not supported)"
        )));
    }
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let rms_norm_eps = Gguf::require(g.f64(&eps_key), &eps_key).map_err(meta)?;
    let rope_theta = g.f64(&key("rope.freq_base")).map_err(meta)?;
    let max_position_embeddings = optional("context_length")?.unwrap_or(2048);
    let rope_scaling = match g.str(&key("rope.scaling.type")).map_err(meta)? {
        None | Some("none") => match g.f64(&key("rope.scale_linear")).map_err(meta)? {
            Some(f) if f != 1.0 => Some(linear_scaling(f)),
            _ => None,
        },
        Some("linear") => Some(linear_scaling(Gguf::require(g.f64(&key("rope.scaling.factor")), &key("rope.scaling.factor")).map_err(meta)?)),
        Some(other) => return Err(unsupported(format!("{arch}.rope.scaling.type `{other}` is not supported (none and linear are)"))),
    };
    if g.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err(unsupported(
            "the file carries `rope_freqs.weight` (Llama 3.1-style frequency factors), which this build does not apply yet".into(),
        ));
    }
    let tensor = |name: &str| g.tensors.iter().find(|t| t.name == name);
    let embed = tensor("token_embd.weight").ok_or_else(|| unsupported("no `token_embd.weight` tensor".into()))?;
    let vocab_size = match optional("vocab_size")? {
        Some(v) => v,
        None => embed.shape()[0],
    };
    // Qwen2's q/k/v biases come with the architecture; a LLaMA file has them only with
    // `attention_bias`, on all four projections.
    let attention_bias = arch == "llama" && tensor("blk.0.attn_q.bias").is_some();
    let token_id = |name: &str| -> Result<Option<u32>, GgufModelError> {
        let k = format!("tokenizer.ggml.{name}");
        g.u64(&k).map_err(meta)?.map(|v| u32::try_from(v).map_err(|_| unsupported(format!("{k} = {v} is not a token id")))).transpose()
    };
    let config = LlamaConfig {
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        rope_parameters: None,
        max_position_embeddings,
        tie_word_embeddings: tensor("output.weight").is_none(),
        bos_token_id: token_id("bos_token_id")?,
        eos_token_id: token_id("eos_token_id")?.map(TokenIds::One),
        pad_token_id: token_id("padding_token_id")?,
        torch_dtype: None,
        hidden_act: "silu".into(),
        attention_bias,
        mlp_bias: tensor("blk.0.ffn_up.bias").is_some(),
        model_type: Some(arch.into()),
        use_sliding_window: false,
        layer_types: None,
    };
    config.validate().map_err(unsupported)?;
    Ok(config)
}

fn linear_scaling(factor: f64) -> RopeScaling {
    RopeScaling {
        rope_type: Some("linear".into()),
        factor: Some(factor),
        ..RopeScaling::default()
    }
}

/// The float type a GGUF model's weights load in by default (`--dtype auto`): the type of its
/// projection matrices when that is F32, F16 or BF16; f16 for block-quantized files (their
/// values are f16 scales times small integers, and f16 halves the memory of f32).
pub fn stored_float_type(g: &Gguf) -> FloatType {
    use biomedgpt_kernels::quant::GgmlType;
    let first = g.tensors.iter().find(|t| t.name.starts_with("blk.") && t.name.ends_with("attn_q.weight"));
    match first.map(|t| t.ty) {
        Some(GgmlType::F32) => FloatType::F32,
        Some(GgmlType::BF16) => FloatType::BF16,
        _ => FloatType::F16,
    }
}

/// HF row order of a q or k projection with `heads` heads of `head_dim` rows stored by llama.cpp:
/// entry `r` is the stored row that holds HF row `r`.
pub fn unpermute_rope_rows(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(heads * head_dim);
    for h in 0..heads {
        for part in 0..2 {
            for i in 0..half {
                order.push(h * head_dim + 2 * i + part);
            }
        }
    }
    order
}

/// Opens a GGUF file as an HF-named LLaMA checkpoint: tensors renamed by [`hf_name`], q/k rows in
/// HF's order. Returns the checkpoint and the config its metadata describes.
pub fn open(path: &Path) -> Result<(Checkpoint, LlamaConfig), GgufModelError> {
    let mut ckpt = Checkpoint::open(path)?;
    let g = ckpt.gguf().ok_or_else(|| GgufModelError::Unsupported {
        path: path.display().to_string(),
        message: "not a GGUF file".into(),
    })?;
    let config = config(path, g)?;
    ckpt.rename(hf_name)?;
    let hd = config.head_dim();
    let layers = if permutes_rope_rows(&config) { config.num_hidden_layers } else { 0 };
    for layer in 0..layers {
        for (proj, heads) in [("q_proj", config.num_attention_heads), ("k_proj", config.num_kv_heads())] {
            for param in ["weight", "bias"] {
                let key = format!("model.layers.{layer}.self_attn.{proj}.{param}");
                if ckpt.info(&key).is_some() {
                    ckpt.reorder_rows(&key, unpermute_rope_rows(heads, hd))?;
                }
            }
        }
    }
    Ok((ckpt, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(hf_name("blk.11.attn_q.weight").unwrap(), "model.layers.11.self_attn.q_proj.weight");
        assert_eq!(hf_name("blk.0.ffn_down.weight").unwrap(), "model.layers.0.mlp.down_proj.weight");
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    /// llama.cpp's `permute` (convert_hf_to_gguf.py), written out on row indices, then undone.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, hd) = (3, 8);
        let rows: Vec<usize> = (0..heads * hd).collect();
        // w.reshape(heads, 2, hd/2, ...).swapaxes(1, 2).reshape(...)
        let mut stored = vec![0; rows.len()];
        for h in 0..heads {
            for i in 0..hd / 2 {
                for part in 0..2 {
                    stored[h * hd + 2 * i + part] = rows[h * hd + part * hd / 2 + i];
                }
            }
        }
        let order = unpermute_rope_rows(heads, hd);
        let back: Vec<usize> = order.iter().map(|&r| stored[r]).collect();
        assert_eq!(back, rows);
    }
}
