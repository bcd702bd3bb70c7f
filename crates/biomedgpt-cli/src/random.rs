//! Random weights in the checkpoint layouts the loaders read (HF LLaMA, HF GPT-2, HF ESM-2,
//! GraphMVP GIN):
//! for benchmarks and for `init`'s untrained models.

use std::path::Path;

use anyhow::Result;
use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
use biomedgpt_io::{FloatType, SourceDType};
use biomedgpt_llama::LlamaConfig;
use half::{bf16, f16};

pub type Specs = Vec<(String, Vec<usize>)>;

/// HF LLaMA tensor names and shapes, with `vocab_rows` embedding and head rows.
pub fn llama_specs(config: &LlamaConfig, vocab_rows: usize) -> Specs {
    let (h, im, hd) = (config.hidden_size, config.intermediate_size, config.head_dim());
    let (q, kv) = (config.num_attention_heads * hd, config.num_kv_heads() * hd);
    let mut specs = vec![("model.embed_tokens.weight".to_string(), vec![vocab_rows, h])];
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}.");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![im, h]),
            ("mlp.up_proj.weight", vec![im, h]),
            ("mlp.down_proj.weight", vec![h, im]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            specs.push((format!("{p}{name}"), shape));
        }
    }
    specs.push(("model.norm.weight".into(), vec![h]));
    specs.push(("lm_head.weight".into(), vec![vocab_rows, h]));
    specs
}

pub fn is_llama_scale(name: &str) -> bool {
    name.ends_with("norm.weight")
}

/// HF GPT-2 (`GPT2LMHeadModel`) tensor names and shapes; `Conv1D` weights are `[in, out]` and
/// the head is tied to `wte`.
pub fn gpt2_specs(e: usize, layers: usize, inner: usize, vocab: usize, positions: usize) -> Specs {
    let mut specs = vec![("transformer.wte.weight".to_string(), vec![vocab, e]), ("transformer.wpe.weight".to_string(), vec![positions, e])];
    for l in 0..layers {
        let p = format!("transformer.h.{l}.");
        for (name, shape) in [
            ("ln_1.weight", vec![e]),
            ("ln_1.bias", vec![e]),
            ("attn.c_attn.weight", vec![e, 3 * e]),
            ("attn.c_attn.bias", vec![3 * e]),
            ("attn.c_proj.weight", vec![e, e]),
            ("attn.c_proj.bias", vec![e]),
            ("ln_2.weight", vec![e]),
            ("ln_2.bias", vec![e]),
            ("mlp.c_fc.weight", vec![e, inner]),
            ("mlp.c_fc.bias", vec![inner]),
            ("mlp.c_proj.weight", vec![inner, e]),
            ("mlp.c_proj.bias", vec![e]),
        ] {
            specs.push((format!("{p}{name}"), shape));
        }
    }
    specs.push(("transformer.ln_f.weight".into(), vec![e]));
    specs.push(("transformer.ln_f.bias".into(), vec![e]));
    specs
}

pub fn is_gpt2_scale(name: &str) -> bool {
    name.ends_with("ln_1.weight") || name.ends_with("ln_2.weight") || name.ends_with("ln_f.weight")
}

/// HF ESM-2 (`EsmModel`) tensor names and shapes.
pub fn esm_specs(h: usize, layers: usize, i: usize) -> Specs {
    let mut specs = vec![("embeddings.word_embeddings.weight".to_string(), vec![33, h])];
    for l in 0..layers {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.LayerNorm.weight", vec![h]),
            ("attention.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("LayerNorm.weight", vec![h]),
            ("LayerNorm.bias", vec![h]),
        ] {
            specs.push((format!("{p}{name}"), shape));
        }
    }
    specs.push(("encoder.emb_layer_norm_after.weight".into(), vec![h]));
    specs.push(("encoder.emb_layer_norm_after.bias".into(), vec![h]));
    specs
}

pub fn is_esm_scale(name: &str) -> bool {
    name.ends_with("LayerNorm.weight") || name.ends_with("emb_layer_norm_after.weight")
}

/// An HF ESM-2 directory's config.json and vocab.txt.
pub fn write_esm_dir(out: &Path, hidden: usize, layers: usize, heads: usize, intermediate: usize) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let config = serde_json::json!({
        "architectures": ["EsmForMaskedLM"], "model_type": "esm", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": intermediate, "vocab_size": 33, "pad_token_id": 1,
        "mask_token_id": 32, "position_embedding_type": "rotary", "token_dropout": true,
        "emb_layer_norm_before": false, "layer_norm_eps": 1e-5, "max_position_embeddings": 1026,
        "hidden_act": "gelu", "torch_dtype": "float32"
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::write(out.join("vocab.txt"), biomedgpt_esm::Alphabet::esm2().tokens().join("\n") + "\n")?;
    Ok(())
}

/// GraphMVP GIN tensor names and shapes.
pub fn gin_specs(num_layer: usize, d: usize) -> Specs {
    let mut specs = vec![("x_embedding1.weight".to_string(), vec![120, d]), ("x_embedding2.weight".to_string(), vec![3, d])];
    for l in 0..num_layer {
        for (name, shape) in [
            (format!("gnns.{l}.mlp.0.weight"), vec![2 * d, d]),
            (format!("gnns.{l}.mlp.0.bias"), vec![2 * d]),
            (format!("gnns.{l}.mlp.2.weight"), vec![d, 2 * d]),
            (format!("gnns.{l}.mlp.2.bias"), vec![d]),
            (format!("gnns.{l}.edge_embedding1.weight"), vec![6, d]),
            (format!("gnns.{l}.edge_embedding2.weight"), vec![3, d]),
            (format!("batch_norms.{l}.weight"), vec![d]),
            (format!("batch_norms.{l}.bias"), vec![d]),
            (format!("batch_norms.{l}.running_mean"), vec![d]),
            (format!("batch_norms.{l}.running_var"), vec![d]),
        ] {
            specs.push((name, shape));
        }
    }
    specs
}

pub fn is_gin_scale(name: &str) -> bool {
    name.starts_with("batch_norms.") && (name.ends_with(".weight") || name.ends_with("running_var"))
}

/// Streams random weights: `is_scale(name)` tensors are 1 (norm scales), other 1-D tensors 0
/// (biases), matrices uniform in +-sqrt(3/fan_in) so activations keep unit variance.
pub fn write_random(path: &Path, specs: Specs, dtype: FloatType, is_scale: impl Fn(&str) -> bool) -> Result<()> {
    let source = match dtype {
        FloatType::F32 => SourceDType::F32,
        FloatType::F16 => SourceDType::F16,
        FloatType::BF16 => SourceDType::BF16,
    };
    let specs: Vec<TensorSpec> = specs.into_iter().map(|(name, shape)| TensorSpec { name, dtype: source, shape }).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    write_streaming(path, &specs, &[("format", "pt")], |i, buf| {
        let spec = &specs[i];
        let n: usize = spec.shape.iter().product();
        let scale = if spec.shape.len() == 1 { 0.0 } else { (3.0 / spec.shape[1] as f32).sqrt() };
        let constant = if is_scale(&spec.name) { 1.0 } else { 0.0 };
        buf.reserve(n * dtype.size());
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            let v = if spec.shape.len() == 1 { constant } else { u * scale };
            match dtype {
                FloatType::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                FloatType::F16 => buf.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                FloatType::BF16 => buf.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
            }
        }
        Ok(())
    })?;
    Ok(())
}
