//! Qwen2 models through the commands LLaMA models run: `generate`, `inspect logits`, `eval`
//! (multiple choice), `convert --dtype q4_k_m` and `serve`, on the random Qwen2ForCausalLM fixtures
//! recorded with transformers and llama.cpp's converter (tests/fixtures/qwen2).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{biomedgpt, root, serve, temp_dir};

const MODEL: &str = "tests/fixtures/qwen2/gqa_tied_safetensors";

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

#[test]
fn generate_gives_transformers_greedy_ids_from_the_directory_and_the_converter_file() {
    let exp = json(&format!("{MODEL}/expected.json"));
    let (ok, stdout, stderr) = biomedgpt(&["generate", "--model", MODEL, "--dtype", "f32", "--prompt", exp["prompt"].as_str().unwrap(), "--max-new-tokens", "40", "--json"]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], exp["greedy"]["tokens"]);

    let r = json("tests/fixtures/qwen2/gguf.json");
    let (ok, stdout, stderr) =
        biomedgpt(&["generate", "--model", "tests/fixtures/qwen2/gqa_tied_f16.gguf", "--dtype", "f32", "--prompt", r["prompt"].as_str().unwrap(), "--max-new-tokens", "24", "--json"]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], r["greedy"]["tokens"], "EOS is the file's (the reference stopped at it too)");
}

#[test]
fn inspect_logits_of_the_prompt_match_transformers() {
    let exp = json(&format!("{MODEL}/expected.json"));
    let dir = temp_dir("logits");
    let out = dir.join("logits.npy");
    let (ok, _, stderr) = biomedgpt(&["inspect", "logits", "--model", MODEL, "--prompt", exp["prompt"].as_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let read = |p: &Path| biomedgpt_io::npy::read_f32(&std::fs::read(p).unwrap()).unwrap();
    let (shape, got) = read(&out);
    let (want_shape, want) = read(&root().join(MODEL).join("logits.npy"));
    assert_eq!(shape, want_shape, "no BOS: one position per prompt id");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn multiple_choice_eval_and_q4_k_m_conversion_run() {
    let dir = temp_dir("mc");
    let gguf = dir.join("q4_k_m.gguf");
    let (ok, _, stderr) = biomedgpt(&["convert", "--model", MODEL, "--dtype", "q4_k_m", "--out", gguf.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let medqa = dir.join("medqa.jsonl");
    std::fs::write(&medqa, concat!(r#"{"question": "Which is an acid?", "options": {"A": "acetic acid", "B": "ethanol", "C": "benzene", "D": "water"}, "answer_idx": "A"}"#, "\n")).unwrap();
    for model in [MODEL, gguf.to_str().unwrap()] {
        let out = dir.join(format!("out-{}", model.len()));
        let (ok, stdout, stderr) = biomedgpt(&["eval", "--model", model, "--task", "medqa", "--data", medqa.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(ok, "{model}: {stderr}");
        let metrics: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(metrics["n"], 1);
        let prediction: Value = serde_json::from_str(std::fs::read_to_string(out.join("predictions.jsonl")).unwrap().lines().next().unwrap()).unwrap();
        let logprobs = prediction["logprobs"].as_array().unwrap();
        assert_eq!(logprobs.len(), 4);
        assert!(logprobs.iter().all(|l| l.as_f64().unwrap() < 0.0), "{model}: {logprobs:?}");
    }
}

/// `serve` on a Qwen2 directory: a completion equals `generate`'s greedy text.
#[test]
fn serve_completes_as_generate_does() {
    let (mut child, addr) = serve(&["--model", MODEL, "--dtype", "f32"]);
    let prompt = "Please describe this molecule:";
    let body = serde_json::json!({"prompt": prompt, "max_tokens": 12, "temperature": 0}).to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let answer: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let (ok, stdout, stderr) = biomedgpt(&["generate", "--model", MODEL, "--dtype", "f32", "--prompt", prompt, "--max-new-tokens", "12", "--json"]);
    assert!(ok, "{stderr}");
    let generated: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["choices"][0]["text"], generated["text"], "{response}");
    assert_eq!(answer["usage"]["completion_tokens"].as_u64().unwrap() as usize, generated["token_ids"].as_array().unwrap().len());
}
