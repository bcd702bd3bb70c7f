//! Writing a LLaMA-family model as the GGUF file llama.cpp's `convert_hf_to_gguf.py` +
//! `llama-quantize` would write: `llama.*` (or `qwen2.*`) metadata from the config, the tokenizer as
//! `tokenizer.ggml.*`, tensors under GGUF names with the q/k rows permuted for ggml's RoPE (LLaMA
//! only; Qwen2 keeps HF's order and writes its q/k/v biases in f32), and each matrix in the type
//! llama.cpp's mix rules (`llama_tensor_get_type` in `llama-quant.cpp`) give it, quantized with
//! the reference quantizers of `biomedgpt_kernels::quant`.
//!
//! Mixes: `f16`, `q8_0`, `q6_k`, `q5_k_m`, `q4_k_m`, `q4_0`. In the `_M` mixes `attn_v` and
//! `ffn_down` of the first and last eighth of the layers, and of every third layer between, get
//! Q6_K; the output matrix (or the tied embeddings) gets Q6_K in every quantized mix but q8_0;
//! norms stay f32. The token embeddings of an untied model keep the mix's base type, as in
//! llama.cpp.

use std::path::Path;

use biomedgpt_io::gguf_writer::{GgufTensorSpec, append_as, write_gguf};
use biomedgpt_io::{Checkpoint, FloatType, Gguf, MetaValue};
use biomedgpt_kernels::quant::{GgmlType, fallback};

use crate::config::{Architecture, LlamaConfig, RopeKind};

/// A quantization mix, by llama.cpp's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMix {
    F16,
    Q8_0,
    Q6K,
    Q5KM,
    Q4KM,
    Q4_0,
}

impl QuantMix {
    pub const NAMES: &'static str = "f16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "f16" => QuantMix::F16,
            "q8_0" => QuantMix::Q8_0,
            "q6_k" => QuantMix::Q6K,
            "q5_k_m" => QuantMix::Q5KM,
            "q4_k_m" => QuantMix::Q4KM,
            "q4_0" => QuantMix::Q4_0,
            _ => return None,
        })
    }

    /// `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            QuantMix::F16 => 1,
            QuantMix::Q4_0 => 2,
            QuantMix::Q8_0 => 7,
            QuantMix::Q4KM => 15,
            QuantMix::Q5KM => 17,
            QuantMix::Q6K => 18,
        }
    }

    fn base(self) -> GgmlType {
        match self {
            QuantMix::F16 => GgmlType::F16,
            QuantMix::Q8_0 => GgmlType::Q8_0,
            QuantMix::Q6K => GgmlType::Q6K,
            QuantMix::Q5KM => GgmlType::Q5K,
            QuantMix::Q4KM => GgmlType::Q4K,
            QuantMix::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// The type of one matrix (llama.cpp's rules for these mixes, dense LLaMA models).
    fn matrix_type(self, role: Role, n_layer: usize) -> GgmlType {
        let base = self.base();
        if self == QuantMix::F16 {
            return base;
        }
        let more_bits = |i: usize| i < n_layer / 8 || i >= 7 * n_layer / 8 || (i as i64 - (n_layer / 8) as i64) % 3 == 2;
        match role {
            Role::Output => {
                if base == GgmlType::Q8_0 {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6K
                }
            }
            Role::AttnV(i) | Role::FfnDown(i) if matches!(self, QuantMix::Q4KM | QuantMix::Q5KM) && more_bits(i) => GgmlType::Q6K,
            _ => base,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    TokenEmbd,
    Output,
    AttnV(usize),
    FfnDown(usize),
    Other,
}

/// Why an export cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Load(#[from] biomedgpt_io::LoadError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The tokenizer metadata to write: copied from a GGUF source, or built from a `tokenizer.json`.
pub fn tokenizer_metadata_from_gguf(g: &Gguf) -> Vec<(String, MetaValue)> {
    g.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `tokenizer.ggml.*` for a LLaMA SentencePiece-style `tokenizer.json` (BPE with byte fallback and
/// `▁` spaces): tokens by id, token types, and scores that give back the file's merge order
/// (a token's score is minus the rank of the first merge that forms it; tokens no merge forms
/// score 0), so a reader ranking merges by score, as llama.cpp and transformers do, recovers them.
///
/// A byte-level BPE `tokenizer.json` (Qwen2's) is written as llama.cpp's converter writes it:
/// see [`byte_level_bpe_metadata`].
pub fn tokenizer_metadata_from_json(spec: &serde_json::Value, config: &LlamaConfig) -> Result<Vec<(String, MetaValue)>, ExportError> {
    let unsupported = |m: &str| ExportError::Unsupported(format!("tokenizer.json: {m}"));
    let model = &spec["model"];
    if model["type"] == "BPE" && model["byte_fallback"] != true && spec["pre_tokenizer"].to_string().contains("ByteLevel") {
        return byte_level_bpe_metadata(spec, config);
    }
    if model["type"] != "BPE" || model["byte_fallback"] != true {
        return Err(unsupported("only SentencePiece-style BPE (byte_fallback, LLaMA) and byte-level BPE (Qwen2) are exported to GGUF"));
    }
    let added = spec["added_tokens"].as_array().cloned().unwrap_or_default();
    let tokens: Vec<String> = tokens_by_id(spec)?
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| unsupported(&format!("no token has id {i}"))))
        .collect::<Result<_, _>>()?;
    let index: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut scores = vec![0f32; tokens.len()];
    let mut formed = vec![false; tokens.len()];
    let merges = model["merges"].as_array().ok_or_else(|| unsupported("no model.merges"))?;
    for (rank, m) in merges.iter().enumerate() {
        let (l, r) = match m {
            serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
            serde_json::Value::Array(p) if p.len() == 2 => Some((p[0].as_str().unwrap_or("").to_string(), p[1].as_str().unwrap_or("").to_string())),
            _ => None,
        }
        .ok_or_else(|| unsupported("a merge is not a pair"))?;
        if let Some(&id) = index.get(format!("{l}{r}").as_str())
            && !formed[id]
        {
            formed[id] = true;
            scores[id] = -(rank as f32) - 1.0;
        }
    }
    let unk = model["unk_token"].as_str().and_then(|t| index.get(t).copied());
    let special: std::collections::HashSet<u64> = added.iter().filter(|a| a["special"] == true).filter_map(|a| a["id"].as_u64()).collect();
    let types: Vec<MetaValue> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = if Some(i) == unk {
                2
            } else if special.contains(&(i as u64)) {
                3
            } else if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                6
            } else {
                1
            };
            MetaValue::I32(ty)
        })
        .collect();
    let prefix = spec["normalizer"].to_string().contains("Prepend");
    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), MetaValue::String("llama".into())),
        ("tokenizer.ggml.pre".to_string(), MetaValue::String("default".into())),
        ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(tokens.iter().map(|t| MetaValue::String(t.clone())).collect())),
        ("tokenizer.ggml.scores".to_string(), MetaValue::Array(scores.iter().map(|s| MetaValue::F32(*s)).collect())),
        ("tokenizer.ggml.token_type".to_string(), MetaValue::Array(types)),
    ];
    if let Some(b) = config.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(b)));
    }
    if let Some(e) = config.eos_token_ids().first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(*e)));
    }
    if let Some(u) = unk {
        meta.push(("tokenizer.ggml.unknown_token_id".into(), MetaValue::U32(u as u32)));
    }
    if let Some(p) = config.pad_token_id {
        meta.push(("tokenizer.ggml.padding_token_id".into(), MetaValue::U32(p)));
    }
    meta.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(true)));
    meta.push(("tokenizer.ggml.add_eos_token".into(), MetaValue::Bool(false)));
    meta.push(("tokenizer.ggml.add_space_prefix".into(), MetaValue::Bool(prefix)));
    Ok(meta)
}

/// The tokens of a `tokenizer.json` by id (its vocabulary and added tokens), `None` for ids
/// nothing names.
fn tokens_by_id(spec: &serde_json::Value) -> Result<Vec<Option<String>>, ExportError> {
    let unsupported = |m: &str| ExportError::Unsupported(format!("tokenizer.json: {m}"));
    let vocab = spec["model"]["vocab"].as_object().ok_or_else(|| unsupported("no model.vocab"))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab.len()];
    let mut put = |id: u64, t: &str| -> Result<(), ExportError> {
        let id = usize::try_from(id).ok().filter(|&i| i < 1 << 24).ok_or_else(|| unsupported(&format!("token id {id} is out of range")))?;
        if id >= tokens.len() {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some(t.to_string());
        Ok(())
    };
    for (t, id) in vocab {
        put(id.as_u64().ok_or_else(|| unsupported("vocab ids must be integers"))?, t)?;
    }
    for a in spec["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) {
            put(id, t)?;
        }
    }
    Ok(tokens)
}

/// Whether llama.cpp's converter marks an added token as control although tokenizer.json does not
/// call it special (`does_token_look_special` in `convert_hf_to_gguf.py`).
fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// `tokenizer.ggml.*` for a byte-level BPE `tokenizer.json` (Qwen2, DeepSeek-R1-Distill-Qwen), as
/// `convert_hf_to_gguf.py` writes it for Qwen2 (`_set_vocab_gpt2`): model `gpt2`, pre-tokenizer
/// `qwen2`, every id up to the embedding rows (ids no token names become `[PAD<id>]`, unused),
/// added tokens as control when special or special-looking (`<|...|>`, `<｜...｜>`), else
/// user-defined; the merges; the special ids of the model's config; no BOS added.
fn byte_level_bpe_metadata(spec: &serde_json::Value, config: &LlamaConfig) -> Result<Vec<(String, MetaValue)>, ExportError> {
    let unsupported = |m: &str| ExportError::Unsupported(format!("tokenizer.json: {m}"));
    if config.architecture() != crate::config::Architecture::Qwen2 {
        return Err(unsupported("a byte-level BPE tokenizer is exported to GGUF only with a qwen2 model (its pre-tokenizer is Qwen2's)"));
    }
    let mut tokens = tokens_by_id(spec)?;
    if tokens.len() < config.vocab_size {
        tokens.resize(config.vocab_size, None);
    }
    let added: std::collections::HashMap<u64, bool> = spec["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_u64()?, a["special"] == true)))
        .collect();
    let mut types = Vec::with_capacity(tokens.len());
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (t, ty) = match (t, added.get(&(i as u64))) {
                (None, _) => (format!("[PAD{i}]"), 5),
                (Some(t), Some(&special)) => {
                    if special || looks_special(&t) {
                        (t, 3)
                    } else {
                        // The converter's pre-normalization of user-defined spaces.
                        (t.replace('\u{2581}', " "), 4)
                    }
                }
                (Some(t), None) => (t, 1),
            };
            types.push(MetaValue::I32(ty));
            t
        })
        .collect();
    let merges = spec["model"]["merges"].as_array().ok_or_else(|| unsupported("no model.merges"))?;
    let merges = merges
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Array(p) if p.len() == 2 => Ok(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))),
            _ => Err(unsupported("a merge is not a pair")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), MetaValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), MetaValue::String("qwen2".into())),
        ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(tokens.into_iter().map(MetaValue::String).collect())),
        ("tokenizer.ggml.token_type".to_string(), MetaValue::Array(types)),
        ("tokenizer.ggml.merges".to_string(), MetaValue::Array(merges.into_iter().map(MetaValue::String).collect())),
    ];
    if let Some(e) = config.eos_token_ids().first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(*e)));
    }
    if let Some(p) = config.pad_token_id {
        meta.push(("tokenizer.ggml.padding_token_id".into(), MetaValue::U32(p)));
    }
    if let Some(b) = config.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(b)));
    }
    meta.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false)));
    Ok(meta)
}

/// Appends a token (with score 0 and `token_type`) to tokenizer metadata made by
/// [`tokenizer_metadata_from_json`]: the reference BioMedGPT's `[PAD]` row, which tokenizer.json
/// does not list.
pub fn append_token(meta: &mut [(String, MetaValue)], token: &str, token_type: i32) {
    for (key, value) in meta.iter_mut() {
        if let MetaValue::Array(items) = value {
            match key.as_str() {
                "tokenizer.ggml.tokens" => items.push(MetaValue::String(token.into())),
                "tokenizer.ggml.scores" => items.push(MetaValue::F32(0.0)),
                "tokenizer.ggml.token_type" => items.push(MetaValue::I32(token_type)),
                _ => {}
            }
        }
    }
}

/// The GGUF row order of an HF q/k projection: stored row `h*hd + 2i + part` is HF row
/// `h*hd + part*hd/2 + i` (llama.cpp's `permute`).
fn rope_permutation(heads: usize, head_dim: usize) -> Vec<usize> {
    let mut order = vec![0; heads * head_dim];
    for h in 0..heads {
        for i in 0..head_dim / 2 {
            for part in 0..2 {
                order[h * head_dim + 2 * i + part] = h * head_dim + part * head_dim / 2 + i;
            }
        }
    }
    order
}

/// Writes `ckpt` (HF names: `model.layers.0.self_attn.q_proj.weight`, ...; q/k rows in HF order)
/// as a GGUF file at `out` in `mix`. `prefix` is where the LLaMA lives in the checkpoint (`""`, or
/// `llm.` in the fused BioMedGPT checkpoint). Prints nothing; returns the tensors' types.
pub fn export(
    ckpt: &Checkpoint,
    prefix: &str,
    config: &LlamaConfig,
    name: &str,
    tokenizer: Vec<(String, MetaValue)>,
    mix: QuantMix,
    out: &Path,
) -> Result<Vec<(String, GgmlType)>, ExportError> {
    let c = config;
    if !matches!(c.rope_kind().map_err(ExportError::Unsupported)?, RopeKind::Default | RopeKind::Linear { .. }) {
        return Err(ExportError::Unsupported("llama3 rope scaling is not exported to GGUF yet (llama.cpp stores it as rope_freqs)".into()));
    }
    if c.o_bias() || c.mlp_bias || (c.qkv_bias() && c.architecture() == Architecture::Llama) {
        return Err(ExportError::Unsupported("LLaMA projection biases are not exported to GGUF".into()));
    }
    let arch = if c.architecture() == Architecture::Qwen2 { "qwen2" } else { "llama" };
    // The reader's rule, written the other way (crate::gguf::open undoes it).
    let permute = |heads: usize| crate::gguf::permutes_rope_rows(c).then_some(heads);
    let (h, hd, n_layer) = (c.hidden_size, c.head_dim(), c.num_hidden_layers);
    let vocab = ckpt.info(&format!("{prefix}model.embed_tokens.weight")).map(|i| i.shape[0]).unwrap_or(c.vocab_size);
    // (GGUF name, HF name, shape, role, q/k heads to permute)
    let mut plan: Vec<(String, String, Vec<usize>, Role, Option<usize>)> = Vec::new();
    plan.push(("token_embd.weight".into(), "model.embed_tokens.weight".into(), vec![vocab, h], Role::TokenEmbd, None));
    for i in 0..n_layer {
        let hf = |m: &str| format!("model.layers.{i}.{m}.weight");
        let g = |m: &str| format!("blk.{i}.{m}.weight");
        let (q, kv) = (c.num_attention_heads * hd, c.num_kv_heads() * hd);
        plan.push((g("attn_norm"), hf("input_layernorm"), vec![h], Role::Other, None));
        plan.push((g("attn_q"), hf("self_attn.q_proj"), vec![q, h], Role::Other, permute(c.num_attention_heads)));
        plan.push((g("attn_k"), hf("self_attn.k_proj"), vec![kv, h], Role::Other, permute(c.num_kv_heads())));
        plan.push((g("attn_v"), hf("self_attn.v_proj"), vec![kv, h], Role::AttnV(i), None));
        if c.qkv_bias() {
            for (gname, hname, rows) in [("attn_q", "q_proj", q), ("attn_k", "k_proj", kv), ("attn_v", "v_proj", kv)] {
                plan.push((format!("blk.{i}.{gname}.bias"), format!("model.layers.{i}.self_attn.{hname}.bias"), vec![rows], Role::Other, None));
            }
        }
        plan.push((g("attn_output"), hf("self_attn.o_proj"), vec![h, q], Role::Other, None));
        plan.push((g("ffn_norm"), hf("post_attention_layernorm"), vec![h], Role::Other, None));
        plan.push((g("ffn_gate"), hf("mlp.gate_proj"), vec![c.intermediate_size, h], Role::Other, None));
        plan.push((g("ffn_up"), hf("mlp.up_proj"), vec![c.intermediate_size, h], Role::Other, None));
        plan.push((g("ffn_down"), hf("mlp.down_proj"), vec![h, c.intermediate_size], Role::FfnDown(i), None));
    }
    plan.push(("output_norm.weight".into(), "model.norm.weight".into(), vec![h], Role::Other, None));
    let tied = c.tie_word_embeddings || ckpt.info(&format!("{prefix}lm_head.weight")).is_none();
    if !tied {
        plan.push(("output.weight".into(), "lm_head.weight".into(), vec![vocab, h], Role::Output, None));
    }
    let specs: Vec<GgufTensorSpec> = plan
        .iter()
        .map(|(g, _, shape, role, _)| {
            let ty = if shape.len() == 1 {
                GgmlType::F32
            } else {
                // Tied embeddings are the output matrix too: llama.cpp gives them its type.
                let role = if tied && matches!(role, Role::TokenEmbd) { Role::Output } else { *role };
                fallback(mix.matrix_type(role, n_layer), shape[1])
            };
            GgufTensorSpec { name: g.clone(), shape: shape.clone(), ty }
        })
        .collect();
    for s in &specs {
        s.nbytes().map_err(|e| ExportError::Unsupported(e.to_string()))?;
    }

    let key = |name: &str| format!("{arch}.{name}");
    let mut meta: Vec<(String, MetaValue)> = vec![
        ("general.architecture".into(), MetaValue::String(arch.into())),
        ("general.type".into(), MetaValue::String("model".into())),
        ("general.name".into(), MetaValue::String(name.into())),
        (key("block_count"), MetaValue::U32(n_layer as u32)),
        (key("context_length"), MetaValue::U32(c.max_position_embeddings as u32)),
        (key("embedding_length"), MetaValue::U32(h as u32)),
        (key("feed_forward_length"), MetaValue::U32(c.intermediate_size as u32)),
        (key("attention.head_count"), MetaValue::U32(c.num_attention_heads as u32)),
        (key("attention.head_count_kv"), MetaValue::U32(c.num_kv_heads() as u32)),
        (key("rope.freq_base"), MetaValue::F32(c.rope_theta() as f32)),
        (key("attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_norm_eps as f32)),
        (key("attention.key_length"), MetaValue::U32(hd as u32)),
        (key("attention.value_length"), MetaValue::U32(hd as u32)),
        (key("vocab_size"), MetaValue::U32(vocab as u32)),
        (key("rope.dimension_count"), MetaValue::U32(hd as u32)),
        ("general.file_type".into(), MetaValue::U32(mix.file_type())),
    ];
    if let RopeKind::Linear { factor } = c.rope_kind().map_err(ExportError::Unsupported)? {
        meta.push((key("rope.scaling.type"), MetaValue::String("linear".into())));
        meta.push((key("rope.scaling.factor"), MetaValue::F32(factor as f32)));
    }
    if mix != QuantMix::F16 {
        meta.push(("general.quantization_version".into(), MetaValue::U32(2)));
    }
    meta.extend(tokenizer);

    let write_error = |source: std::io::Error| ExportError::Io { path: out.display().to_string(), source };
    let mut load_error: Option<ExportError> = None;
    let result = write_gguf(out, &meta, &specs, |i, buf| {
        let (_, hf, shape, _, heads) = &plan[i];
        let key = format!("{prefix}{hf}");
        let data = match ckpt.load(&key, shape, FloatType::F32) {
            Ok(d) => d,
            Err(e) => {
                load_error = Some(e.into());
                return Err(std::io::Error::other("load failed"));
            }
        };
        let values: Vec<f32> = data.try_to_vec::<f32>().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        ckpt.release(&key);
        let row = *shape.last().expect("non-empty shape");
        let values = match heads {
            Some(n) => rope_permutation(*n, hd).iter().flat_map(|&r| values[r * row..(r + 1) * row].iter().copied()).collect(),
            None => values,
        };
        append_as(specs[i].ty, &values, row, buf)
    });
    if let Some(e) = load_error {
        return Err(e);
    }
    result.map_err(write_error)?;
    Ok(specs.into_iter().map(|s| (s.name, s.ty)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_inverts_the_reader() {
        let (heads, hd) = (3, 8);
        let write = rope_permutation(heads, hd);
        let read = crate::gguf::unpermute_rope_rows(heads, hd);
        // HF row r is stored at position p where write[p] = r; reading takes stored row read[r].
        for r in 0..heads * hd {
            assert_eq!(write[read[r]], r);
        }
    }

    #[test]
    fn q4_k_m_mix_follows_llama_cpp() {
        let mix = QuantMix::Q4KM;
        // 32 layers (LLaMA-7B): more bits for 0..4, 28..32 and every third layer from 6.
        let q6: Vec<usize> = (0..32).filter(|&i| mix.matrix_type(Role::FfnDown(i), 32) == GgmlType::Q6K).collect();
        assert_eq!(q6, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
        assert_eq!(mix.matrix_type(Role::Output, 32), GgmlType::Q6K);
        assert_eq!(mix.matrix_type(Role::TokenEmbd, 32), GgmlType::Q4K);
        assert_eq!(QuantMix::Q8_0.matrix_type(Role::Output, 32), GgmlType::Q8_0);
        assert_eq!(QuantMix::Q4_0.matrix_type(Role::Output, 32), GgmlType::Q6K);
    }

    #[test]
    fn rows_that_are_not_whole_blocks_fall_back_as_in_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4K, 576), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q5K, 576), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6K, 576), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q8_0, 80), GgmlType::F16);
        assert_eq!(fallback(GgmlType::Q4K, 4096), GgmlType::Q4K);
    }
}
