//! `convert`'s GGUF output against llama.cpp's `llama-quantize` on the same f16 model
//! (tests/fixtures/gguf/quant_src_f16.gguf; llama_quantize.json holds, per mix, the type and an
//! FNV-1a hash of every tensor llama-quantize wrote, from llama.cpp in the PyPI sdist
//! llama-cpp-python==0.3.36): the same type for every tensor and identical bytes.

use std::path::{Path, PathBuf};

use biomedgpt_io::Gguf;
use biomedgpt_llama::gguf_export::{QuantMix, export, tokenizer_metadata_from_gguf};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[test]
fn every_mix_writes_llama_quantize_bytes() {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("llama_quantize.json")).unwrap()).unwrap();
    let src = dir().join("quant_src_f16.gguf");
    let (ckpt, config) = biomedgpt_llama::gguf::open(&src).unwrap();
    let tokenizer = tokenizer_metadata_from_gguf(ckpt.gguf().unwrap());
    let mut checked = 0;
    for (mix_name, tensors) in reference["mixes"].as_object().unwrap() {
        let mix = QuantMix::parse(mix_name).unwrap();
        let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
        let out = scratch.path().join(format!("biomedgpt-{mix_name}-{}.gguf", std::process::id()));
        export(&ckpt, "", &config, "quant_src_f16", tokenizer.clone(), mix, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).ok();
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
    }
    assert_eq!(checked, 5 * 21);
}
