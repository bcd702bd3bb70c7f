//! GPT-2-family models (BioMedLM's architecture) through the same commands as LLaMA models:
//! `generate`, `inspect logits`, text-only `ask` and multiple-choice `eval`, on the small random
//! GPT2LMHeadModel fixtures recorded with transformers (tests/fixtures/gpt2).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const MODEL: &str = "tests/fixtures/gpt2/tiny_safetensors";

fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).current_dir(root()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn expected(case: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/gpt2").join(case).join("expected.json")).unwrap()).unwrap()
}

mod common;
use common::temp_dir;

#[test]
fn generate_gives_the_reference_greedy_ids() {
    for case in ["tiny_safetensors", "inner_sharded_bin"] {
        let exp = expected(case);
        let model = format!("tests/fixtures/gpt2/{case}");
        let (ok, stdout, stderr) = biomedgpt(&["generate", "--model", &model, "--prompt", exp["prompt"].as_str().unwrap(), "--max-new-tokens", "30", "--json"]);
        assert!(ok, "{stderr}");
        let out: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(out["token_ids"], exp["greedy"]["tokens"], "{case}");
        assert_eq!(out["text"], exp["greedy"]["text"], "{case}");
    }
}

#[test]
fn inspect_logits_of_token_ids_match_transformers() {
    let exp = expected("tiny_safetensors");
    let ids: Vec<String> = exp["input_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let dir = temp_dir("logits");
    let out = dir.join("logits.npy");
    let (ok, _, stderr) = biomedgpt(&["inspect", "logits", "--model", MODEL, "--token-ids", &ids.join(","), "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let read = |p: &Path| biomedgpt_io::npy::read_f32(&std::fs::read(p).unwrap()).unwrap();
    let (shape, got) = read(&out);
    let (want_shape, want) = read(&root().join(MODEL).join("logits.npy"));
    assert_eq!(shape, want_shape);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn ask_is_text_only_and_refuses_molecules() {
    // The tiny fixture has a 64-token context: a short system prompt instead of the reference one.
    let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", MODEL, "--system-prompt", "Answer briefly.", "--question", "What is aspirin?", "--max-new-tokens", "6", "--json"]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"].as_array().unwrap().len(), 6);
    assert!(out["prompt_tokens"].as_u64().unwrap() > 5);
    let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", MODEL, "--smiles", "CCO", "--question", "What is it?"]);
    assert!(!ok && stdout.is_empty() && stderr.contains("GPT-2") && stderr.contains("--smiles"), "{stderr}");
}

#[test]
fn multiple_choice_eval_scores_a_gpt2_model() {
    let dir = temp_dir("mc");
    let medqa = dir.join("medqa.jsonl");
    std::fs::write(
        &medqa,
        concat!(
            r#"{"question": "Which is an acid?", "options": {"A": "acetic acid", "B": "ethanol", "C": "benzene", "D": "water"}, "answer_idx": "A"}"#, "\n",
            r#"{"sent1": "A member of the class of", "ending0": "benzoic acids", "ending1": "purines", "ending2": "steroids", "ending3": "lipids", "label": 0}"#, "\n",
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let (ok, stdout, stderr) = biomedgpt(&["eval", "--model", MODEL, "--task", "medqa", "--data", medqa.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let metrics: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(metrics["n"], 2);
    let predictions: Vec<Value> =
        std::fs::read_to_string(out.join("predictions.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for p in &predictions {
        let logprobs = p["logprobs"].as_array().unwrap();
        assert_eq!(logprobs.len(), 4);
        assert!(logprobs.iter().all(|l| l.as_f64().unwrap() < 0.0));
    }
}
