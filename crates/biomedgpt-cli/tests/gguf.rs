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
        let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
        let out = scratch.path().join(format!("biomedgpt-gguf-{name}-{}.npy", std::process::id()));
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

/// The fused BioMedGPT model (the tiny PyTorch-reference fixture) converted to a GGUF LLM beside
/// its encoders: `ask` with a molecule and a protein gives the reference's greedy ids, with the
/// Q8_0 projections in their blocks (default) and dequantized (`--dtype f32`). Q8_0 rounds each
/// weight to 8 bits; on this random model the first 12 greedy tokens stay the reference's.
#[test]
fn fused_biomedgpt_converts_to_gguf_and_answers_the_same() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt");
    let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap()).unwrap();
    let case = &exp["mixed"];
    let turns = &case["turns"][0];
    let (smiles, protein, question) = (turns[0][1].as_str().unwrap(), turns[1][1].as_str().unwrap(), turns[2][1].as_str().unwrap());
    let want: Vec<u64> = case["greedy_ids"].as_array().unwrap().iter().take(12).map(|v| v.as_u64().unwrap()).collect();
    // ESM-2 in f16 (encoders.safetensors) or with Q8_0 projections (encoders.gguf).
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let out = scratch.path().join(format!("biomedgpt-fused-gguf-{}", std::process::id()));
    for (esm, encoders) in [("q8_0", "encoders.gguf"), ("f16", "encoders.safetensors")] {
        let _ = std::fs::remove_dir_all(&out);
        let (ok, _, stderr) = biomedgpt(&["convert", "--model", fixtures.join("tiny").to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "q8_0", "--esm-dtype", esm]);
        assert!(ok, "{stderr}");
        for f in ["llm.gguf", encoders, "biomedgpt.json", "esm/config.json"] {
            assert!(out.join(f).is_file(), "{f} written");
        }
        for dtype in ["auto", "f32"] {
            let (ok, stdout, stderr) = biomedgpt(&[
                "ask", "--model", out.to_str().unwrap(), "--dtype", dtype, "--smiles", smiles, "--protein", protein, "--question", question,
                "--max-new-tokens", "12", "--json",
            ]);
            assert!(ok, "{stderr}");
            let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(answer["prompt_tokens"], case["prompt_tokens"], "{esm} {dtype}: the same prompt");
            let got: Vec<u64> = answer["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(got, want, "ESM {esm}, --dtype {dtype}: greedy ids");
        }
    }
    // A second conversion into the same, now non-empty, directory is refused and changes nothing.
    let (ok, _, stderr) = biomedgpt(&["convert", "--model", fixtures.join("tiny").to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "q4_k_m"]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    assert!(out.join("llm.gguf").is_file());
    std::fs::remove_dir_all(&out).ok();
}
