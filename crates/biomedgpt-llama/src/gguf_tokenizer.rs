//! The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata, built as a
//! `tokenizers::Tokenizer` (through the `tokenizer.json` it is equivalent to), so the rest of the
//! code sees the same type as for HF directories.
//!
//! - `llama` (SentencePiece BPE, LLaMA/Llama-2): tokens and scores; merges recovered from the
//!   vocabulary exactly as transformers' `generate_merges` does (every split of a token into two
//!   tokens, ranked by the merged token's score); byte fallback through the `<0xNN>` tokens; the
//!   legacy SentencePiece normalizer (`▁` prefix, spaces to `▁`), which is what llama.cpp's
//!   tokenizer computes (checked against its `ggml-vocab-llama-spm.gguf` golden vectors).
//! - `gpt2` (byte-level BPE: GPT-2, Llama-3, SmolLM2, Qwen2, ...): tokens and merges; the text is
//!   split by the regular expressions llama.cpp uses for the file's `tokenizer.ggml.pre`, then
//!   byte-level encoded (checked against llama.cpp's golden vectors of each pre-tokenizer).
//!
//! Control tokens (type 3) are special added tokens and user-defined ones (type 4) plain added
//! tokens, as in transformers' GGUF tokenizer.

use std::collections::HashMap;

use biomedgpt_io::{Gguf, MetaValue};
use serde_json::{Value, json};

use crate::tokenizer::{LlamaTokenizer, TokenizerError};

/// GPT-2's split (llama.cpp `LLAMA_VOCAB_PRE_TYPE_GPT2`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama-3's split, as llama.cpp adapts it (case-insensitive contractions spelled out).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama-3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes for `tokenizer.ggml.pre` (`llm_tokenizer_bpe`): the regular
/// expressions applied one after another, and whether a word that is itself a token skips the
/// merges (`ignore_merges`).
fn pre_tokenizer(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match pre {
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "jina-v1-en" | "jina-v2-code"
        | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "a.x-4.0" | "mellum" | "modern-bert" => {
            (vec![GPT2], false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "jina-v5-nano" => {
            (vec![LLAMA3], true)
        }
        "dbrx" | "smaug-bpe" => (vec![LLAMA3], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => (vec![r"\p{N}", GPT2], false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" => (vec![QWEN2], false),
        // llama.cpp's fallback for a BPE vocabulary without (or with the "default") pre-tokenizer.
        "default" => (vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"], false),
        _ => return None,
    })
}

const SUPPORTED_PRE: &str = "gpt-2, llama-bpe (llama3), smollm, starcoder, qwen2, dbrx, default and their aliases";

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
pub(crate) fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below the surrogates")
        };
    }
    table
}

fn load_error(message: impl Into<String>) -> TokenizerError {
    TokenizerError::Load {
        path: "GGUF metadata".into(),
        message: message.into(),
    }
}

fn strings<'a>(g: &'a Gguf, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(items) = g.array(key).map_err(|e| load_error(e.to_string()))? else {
        return Ok(None);
    };
    items
        .iter()
        .map(|v| v.as_str().ok_or_else(|| load_error(format!("`{key}` holds a {}, expected strings", v.type_name()))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn numbers(g: &Gguf, key: &str, len: usize) -> Result<Option<Vec<f64>>, TokenizerError> {
    let Some(items) = g.array(key).map_err(|e| load_error(e.to_string()))? else {
        return Ok(None);
    };
    if items.len() != len {
        return Err(load_error(format!("`{key}` has {} entries for {len} tokens", items.len())));
    }
    items
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| load_error(format!("`{key}` holds a {}, expected numbers", v.type_name()))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// transformers' `generate_merges(vocab, vocab_scores)`: for every token (in vocabulary order),
/// each split into two tokens, ordered by the halves' ids; then all of them stably sorted by
/// (score, left length, right length), best first. Lengths count characters, as Python does.
fn merges_from_scores(tokens: &[&str], scores: &[f64]) -> Vec<(String, String)> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.insert(t, i);
    }
    // Python's dict(zip(tokens, scores)): a repeated token keeps its first position, last score.
    let mut score_of: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (t, &s) in tokens.iter().zip(scores) {
        if score_of.insert(t, s).is_none() {
            order.push(t);
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for merged in order {
        let score = score_of[merged];
        let mut local: Vec<(&str, &str, f64)> = merged
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = merged.split_at(at);
                (ids.contains_key(l) && ids.contains_key(r)).then_some((l, r, score))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (ids[l], ids[r]));
        merges.extend(local);
    }
    // sorted(..., reverse=True) is stable: equal keys keep their order.
    merges.sort_by(|a, b| {
        let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1)).then(kb.2.cmp(&ka.2))
    });
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

/// The `tokenizer.json` equivalent of the file's tokenizer metadata.
pub fn tokenizer_json(g: &Gguf) -> Result<Value, TokenizerError> {
    let model = g.str("tokenizer.ggml.model").map_err(|e| load_error(e.to_string()))?.ok_or_else(|| {
        load_error("the file has no tokenizer (`tokenizer.ggml.model`): pass a tokenizer.json beside it")
    })?;
    let tokens = strings(g, "tokenizer.ggml.tokens")?.ok_or_else(|| load_error("no `tokenizer.ggml.tokens`"))?;
    let types: Vec<i64> = match g.array("tokenizer.ggml.token_type").map_err(|e| load_error(e.to_string()))? {
        Some(items) if items.len() == tokens.len() => items.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        Some(items) => return Err(load_error(format!("`tokenizer.ggml.token_type` has {} entries for {} tokens", items.len(), tokens.len()))),
        None => vec![1; tokens.len()],
    };
    let token_id = |key: &str| g.u64(key).ok().flatten().map(|v| v as usize).filter(|&v| v < tokens.len());
    let byte_level = match model {
        "llama" => false,
        "gpt2" => true,
        other => {
            return Err(load_error(format!(
                "tokenizer.ggml.model `{other}` is not supported (llama (SentencePiece) and gpt2 (byte-level BPE) are)"
            )));
        }
    };
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    // transformers respells a byte-level token that uses characters outside the byte alphabet.
    // Added tokens (control, user-defined) keep their text: they are matched in the raw input.
    let spelled: Vec<String> = tokens
        .iter()
        .zip(&types)
        .map(|(t, &ty)| {
            if byte_level && !in_alphabet(t) && ty != 3 && ty != 4 {
                t.bytes().map(|b| alphabet[b as usize]).collect()
            } else {
                t.to_string()
            }
        })
        .collect();
    // A spelling that repeats keeps its first id (llama.cpp's lookup finds that one).
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (i, t) in spelled.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(json!(i));
    }
    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        let special = match ty {
            // Control tokens are matched in the raw text, also those spelled outside the byte
            // alphabet (DeepSeek's `<｜User｜>`), as llama.cpp parses them.
            3 => true,
            4 => false,
            _ => continue,
        };
        added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": special}));
    }
    let merges: Vec<(String, String)> = if let Some(list) = strings(g, "tokenizer.ggml.merges")? {
        list.iter()
            .map(|m| m.split_once(' ').map(|(l, r)| (l.to_string(), r.to_string())).ok_or_else(|| load_error(format!("merge `{m}` is not two tokens"))))
            .collect::<Result<_, _>>()?
    } else if byte_level {
        return Err(load_error("a gpt2 tokenizer needs `tokenizer.ggml.merges`"));
    } else {
        let scores = numbers(g, "tokenizer.ggml.scores", tokens.len())?.ok_or_else(|| load_error("a llama tokenizer needs `tokenizer.ggml.scores`"))?;
        merges_from_scores(&tokens, &scores)
    };
    let unk = token_id("tokenizer.ggml.unknown_token_id").map(|i| spelled[i].clone());
    let spec = if byte_level {
        let pre = g.str("tokenizer.ggml.pre").map_err(|e| load_error(e.to_string()))?.unwrap_or("default");
        let (splits, ignore_merges) = pre_tokenizer(pre)
            .ok_or_else(|| load_error(format!("tokenizer.ggml.pre `{pre}` is not supported ({SUPPORTED_PRE})")))?;
        let mut steps: Vec<Value> = splits
            .iter()
            .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
        json!({
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
        })
    } else {
        let prefix = g.bool("tokenizer.ggml.add_space_prefix").map_err(|e| load_error(e.to_string()))?.unwrap_or(true);
        let mut normalizers = Vec::new();
        if prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
        }
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({
            "normalizer": {"type": "Sequence", "normalizers": normalizers},
            "pre_tokenizer": null,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        })
    };
    let mut spec = spec;
    let object = spec.as_object_mut().expect("built as an object");
    object.insert("version".into(), json!("1.0"));
    object.insert("truncation".into(), Value::Null);
    object.insert("padding".into(), Value::Null);
    object.insert("added_tokens".into(), Value::Array(added));
    object.insert("post_processor".into(), Value::Null);
    Ok(spec)
}

/// Whether llama.cpp adds BOS for this file: `tokenizer.ggml.add_bos_token`, else its default
/// (SentencePiece vocabularies and the Llama-3 family add one, other byte-level ones do not).
fn adds_bos(g: &Gguf) -> bool {
    if let Some(MetaValue::Bool(b)) = g.get("tokenizer.ggml.add_bos_token") {
        return *b;
    }
    match g.str("tokenizer.ggml.model").ok().flatten() {
        Some("llama") => true,
        _ => matches!(pre_tokenizer(g.str("tokenizer.ggml.pre").ok().flatten().unwrap_or("default")), Some((_, true))),
    }
}

impl LlamaTokenizer {
    /// The tokenizer of a GGUF file, from its metadata; BOS as llama.cpp would add it.
    pub fn from_gguf(g: &Gguf) -> Result<Self, TokenizerError> {
        let spec = tokenizer_json(g)?;
        let text = serde_json::to_string(&spec).expect("JSON values serialize");
        let inner: tokenizers::Tokenizer = text.parse().map_err(|e: tokenizers::Error| load_error(e.to_string()))?;
        let bos = if adds_bos(g) {
            g.u64("tokenizer.ggml.bos_token_id").ok().flatten().map(|v| v as u32)
        } else {
            None
        };
        Ok(LlamaTokenizer::from_parts(inner, bos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'A' as usize], 'A');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn merges_rank_by_the_merged_score() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let m = merges_from_scores(&tokens, &scores);
        let pairs: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // Equal scores: the longer left half first (the sort key is (score, len(left), len(right))).
        assert_eq!(pairs, vec![("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]);
    }
}
