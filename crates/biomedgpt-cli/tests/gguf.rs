//! Commands on GGUF files (tests/fixtures/gguf: random LLaMA models written with gguf-py, their
//! greedy ids from transformers' GGUF loader): `--model FILE.gguf` works where a LLaMA directory
//! does, and a file that is not GGUF gets an error naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
}

fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap()).unwrap()
}

#[test]
fn generate_on_gguf_gives_transformers_greedy_ids() {
    for name in ["mha_untied_mixed", "gqa_f16"] {
        let exp = expected(name);
        let ids: Vec<String> = exp["ids"][0].as_array().unwrap().iter().map(|v| v.to_string()).collect();
        let want = &exp["greedy"];
        let model = fixtures().join(format!("{name}.gguf"));
        let out = std::env::temp_dir().join(format!("biomedgpt-gguf-{name}-{}.npy", std::process::id()));
        // inspect logits takes ids as given; generate's prompt is text, so compare through logits'
        // argmax of the first step, and the full greedy run through `generate --json` below.
        let (ok, _, stderr) = biomedgpt(&["inspect", "logits", "--model", model.to_str().unwrap(), "--dtype", "f32", "--token-ids", &ids.join(","), "--out", out.to_str().unwrap()]);
        assert!(ok, "{stderr}");
        let (shape, logits) = biomedgpt_io::npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
        std::fs::remove_file(&out).ok();
        let vocab = shape[1];
        let last = &logits[(shape[0] - 1) * vocab..];
        let argmax = (0..vocab).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        assert_eq!(argmax as u64, want[0].as_u64().unwrap(), "{name}: first greedy token");
    }
}

#[test]
fn generate_and_ask_read_the_gguf_tokenizer() {
    let model = fixtures().join("gqa_f16.gguf");
    let m = model.to_str().unwrap();
    let (ok, stdout, stderr) = biomedgpt(&["generate", "--model", m, "--prompt", "the protein", "--max-new-tokens", "5", "--json"]);
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"].as_array().unwrap().len(), 5);
    // Text-only BioMedGPT chat on a GGUF LLM (no encoders beside it).
    let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", m, "--question", "What is the protein?", "--max-new-tokens", "4", "--json"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("token_ids"), "{stdout}");
    let (ok, _, stderr) = biomedgpt(&["ask", "--model", m, "--smiles", "CCO", "--question", "Describe it.", "--max-new-tokens", "4"]);
    assert!(!ok && stderr.contains("molecule"), "a text-only GGUF cannot read molecules: {stderr}");
}

#[test]
fn a_file_that_is_not_gguf_is_named() {
    let not_gguf = fixtures().join("gqa_f16.json");
    let (ok, _, stderr) = biomedgpt(&["generate", "--model", not_gguf.to_str().unwrap(), "--prompt", "hi"]);
    assert!(!ok);
    assert!(stderr.contains("gqa_f16.json") && stderr.contains("not a GGUF file"), "{stderr}");
}
