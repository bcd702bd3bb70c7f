//! Qwen2 through GGUF, against what `tests/fixtures/qwen2/make_fixtures.py` recorded from the
//! references: llama.cpp's own converter (`convert_hf_to_gguf.py` wrote `gqa_tied_f16.gguf` from
//! `gqa_tied_safetensors/`) and transformers' GGUF loader (logits, greedy ids). `llama-quantize`'s
//! bytes for this file are checked in `gguf_quantize.rs`.
//!
//! Tolerance for logits: 1e-4 of the largest logit of each position, as in `tests/gguf.rs`: both
//! sides run f32 on the same f16-stored weights, only the summation order differs (measured ~1e-6).

use std::path::{Path, PathBuf};

use biomedgpt_io::{FloatType, Gguf, MetaValue};
use biomedgpt_llama::gguf_export::{QuantMix, export, tokenizer_metadata_from_gguf, tokenizer_metadata_from_json};
use biomedgpt_llama::{Architecture, DecoderInput, GenerationConfig, Llama, LlamaDir, LlamaTokenizer, Prompt, Strategy, generate};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/qwen2")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("gguf.json")).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn ids_tensor(ids: &[u32]) -> Tensor<2, Int> {
    let flat: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(flat, [1, ids.len()]), &Device::flex())
}

fn logits(model: &Llama, ids: &[u32]) -> Vec<f32> {
    model.forward(DecoderInput::Ids(ids_tensor(ids)), None, &mut model.new_cache(1)).cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// Largest |ours - want| over the last positions, relative to each position's largest logit.
fn worst_error(ours: &[f32], vocab: usize, from: usize, want: &[Vec<f32>]) -> f32 {
    let mut worst = 0f32;
    for (k, row) in want.iter().enumerate() {
        let at = (from + k) * vocab;
        let scale = row.iter().fold(0f32, |a, w| a.max(w.abs()));
        for (v, &w) in row.iter().enumerate() {
            worst = worst.max((ours[at + v] - w).abs() / scale);
        }
    }
    worst
}

fn last_logits(r: &Value) -> Vec<Vec<f32>> {
    r["last_logits"].as_array().unwrap().iter().map(|row| row.as_array().unwrap().iter().map(|w| w.as_f64().unwrap() as f32).collect()).collect()
}

#[test]
fn llama_cpp_converter_file_matches_transformers() {
    let r = reference();
    let opened = LlamaDir::open(dir().join("gqa_tied_f16.gguf"), FloatType::F32, &Device::flex()).unwrap();
    let c = opened.model.config();
    assert_eq!(c.architecture(), Architecture::Qwen2);
    assert_eq!((c.hidden_size, c.num_attention_heads, c.num_kv_heads(), c.num_hidden_layers, c.vocab_size), (64, 4, 2, 2, 430));
    assert_eq!(c.rope_theta(), 1e6);
    assert!(c.tie_word_embeddings && c.qkv_bias() && !c.o_bias());

    // The file's tokenizer (gpt2 model, qwen2 pre-tokenizer, added tokens) gives tokenizer.json's
    // ids, without BOS.
    let prompt = r["prompt"].as_str().unwrap();
    let ids = ids_of(&r["input_ids"]);
    assert_eq!(opened.tokenizer.bos_id(), None);
    assert_eq!(opened.tokenizer.encode(prompt, true).unwrap(), ids);
    assert_eq!(opened.tokenizer.decode(&ids).unwrap(), prompt.replace("<｜User｜>", "").replace("<｜Assistant｜>", ""));

    let vocab = c.vocab_size;
    let worst = worst_error(&logits(&opened.model, &ids), vocab, r["logits_from"].as_u64().unwrap() as usize, &last_logits(&r));
    eprintln!("gqa_tied_f16.gguf: largest logit error {worst:.2e} of the largest logit");
    assert!(worst <= 1e-4, "{worst}");

    let g = &r["greedy"];
    let config = GenerationConfig { max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: ids_of(&g["eos_token_id"]) };
    let got = generate(&opened.model, Prompt::Ids(ids), &config, &mut |_| {}).unwrap().tokens;
    assert_eq!(got, ids_of(&g["tokens"]));
}

#[test]
fn hf_directory_and_converter_file_agree() {
    let hf = LlamaDir::open(dir().join("gqa_tied_safetensors"), FloatType::F32, &Device::flex()).unwrap();
    let r = reference();
    let ids = ids_of(&r["input_ids"]);
    assert_eq!(hf.tokenizer.bos_id(), None, "Qwen2's tokenizer.json adds no BOS");
    assert_eq!(hf.tokenizer.encode(r["prompt"].as_str().unwrap(), true).unwrap(), ids);
    // `<think>` is an added token that is not special: decoding keeps it.
    let think = hf.tokenizer.token_to_id("<think>").unwrap();
    assert_eq!(hf.tokenizer.decode(&[think]).unwrap(), "<think>");
    // Byte-level pieces (what a server's /tokenize shows): their bytes add up to the text, also
    // where a piece is part of a character.
    let text = "Aspirin, \u{3b2}-lactam \u{1f9ea} <think>";
    let ids = hf.tokenizer.encode(text, false).unwrap();
    let bytes: Vec<u8> = ids.iter().flat_map(|&id| hf.tokenizer.token_bytes(id)).collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
}

/// A tokenizer.json whose post-processor adds a BOS (DeepSeek-R1-Distill-Qwen's does): the HF
/// directory's tokenizer adds it, as transformers' `tokenizer(text)` does.
#[test]
fn a_template_bos_is_taken_from_the_post_processor() {
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("tokenizer.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain.json");
    std::fs::write(&plain, spec.to_string()).unwrap();
    assert_eq!(LlamaTokenizer::from_file_with_template_bos(&plain).unwrap().bos_id(), None);
    spec["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [420], "tokens": ["<|endoftext|>"]}}
    });
    let with_bos = tmp.path().join("bos.json");
    std::fs::write(&with_bos, spec.to_string()).unwrap();
    let t = LlamaTokenizer::from_file_with_template_bos(&with_bos).unwrap();
    assert_eq!(t.bos_id(), Some(420));
    assert_eq!(t.encode("CCO", true).unwrap()[0], 420);
}

/// `convert` of the HF directory writes the tokenizer llama.cpp's converter writes (tokens with
/// the `[PAD<id>]` rows past the tokenizer, token types, merges), and a file that runs as the HF
/// model does.
#[test]
fn export_of_the_hf_directory_equals_the_converter() {
    let src = dir().join("gqa_tied_safetensors");
    let config = biomedgpt_llama::LlamaConfig::from_file(src.join("config.json")).unwrap();
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap()).unwrap();
    let ours = tokenizer_metadata_from_json(&spec, &config).unwrap();
    let converter = std::fs::read(dir().join("gqa_tied_f16.gguf")).unwrap();
    let g = Gguf::parse(&dir().join("gqa_tied_f16.gguf"), &converter).unwrap();
    let theirs = tokenizer_metadata_from_gguf(&g);
    for key in ["model", "pre", "tokens", "token_type", "merges", "eos_token_id", "bos_token_id"] {
        let key = format!("tokenizer.ggml.{key}");
        let find = |m: &[(String, MetaValue)]| m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        assert_eq!(find(&ours), find(&theirs), "{key}");
    }
    assert!(ours.iter().any(|(k, v)| k == "tokenizer.ggml.add_bos_token" && *v == MetaValue::Bool(false)));

    let ckpt = biomedgpt_io::Checkpoint::open(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ours_f16.gguf");
    export(&ckpt, "", &config, "qwen2-tiny", ours, QuantMix::F16, &out).unwrap();
    let ours = LlamaDir::open(&out, FloatType::F32, &Device::flex()).unwrap();
    let theirs = LlamaDir::open(dir().join("gqa_tied_f16.gguf"), FloatType::F32, &Device::flex()).unwrap();
    assert_eq!(ours.model.config().architecture(), Architecture::Qwen2);
    let ids = ids_of(&reference()["input_ids"]);
    assert_eq!(ours.tokenizer.encode(reference()["prompt"].as_str().unwrap(), true).unwrap(), ids);
    // Both hold the same f16 values: the logits agree to summation order.
    let (a, b) = (logits(&ours.model, &ids), logits(&theirs.model, &ids));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-5 * scale, "largest difference {worst} for logits up to {scale}");
}

/// Q4_K_M: the block products (8-bit activations when decoding) stay close to the same file
/// dequantized at load, as `tests/gguf.rs` bounds them for LLaMA (1e-1 of the largest logit).
#[test]
fn quantized_qwen2_runs_close_to_its_dequantized_weights() {
    let src = dir().join("gqa_tied_f16.gguf");
    let (ckpt, config) = biomedgpt_llama::gguf::open(&src).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("q4_k_m.gguf");
    export(&ckpt, "", &config, "qwen2-tiny", tokenizer_metadata_from_gguf(ckpt.gguf().unwrap()), QuantMix::Q4KM, &out).unwrap();
    let dense = LlamaDir::open_model(&out, FloatType::F32, &Device::flex()).unwrap();
    let blocks = LlamaDir::open_model_with(&out, FloatType::F32, true, &Device::flex()).unwrap();
    let ids = ids_of(&reference()["input_ids"]);
    let (a, b) = (logits(&dense, &ids), logits(&blocks, &ids));
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-1 * scale, "prompt: largest difference {worst} for logits up to {scale}");
    let (mut cd, mut cb) = (dense.new_cache(1), blocks.new_cache(1));
    dense.forward(DecoderInput::Ids(ids_tensor(&ids)), None, &mut cd);
    blocks.forward(DecoderInput::Ids(ids_tensor(&ids)), None, &mut cb);
    for id in [5u32, 17, 200] {
        let step = |m: &Llama, c: &mut _| m.forward(DecoderInput::Ids(ids_tensor(&[id])), None, c).into_data().try_to_vec::<f32>().unwrap();
        let (a, b) = (step(&dense, &mut cd), step(&blocks, &mut cb));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("q4_k_m step {id}: {:.2e} of the largest logit", worst / scale);
        assert!(worst <= 1e-1 * scale, "step {id}: largest difference {worst} for logits up to {scale}");
    }
}
