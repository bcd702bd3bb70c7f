//! BioMedGPT-R1 through the CLI: `ask` (config.yaml's generation, the reasoning split, --json,
//! --show-reasoning) and `serve` (`reasoning_content` beside `content`, streamed and not), on the
//! tiny random model in R1's released layout (tests/fixtures/biomedgpt_r1, recorded from the
//! PyPI-pinned transformers reference).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{biomedgpt, root};

const MODEL: &str = "tests/fixtures/biomedgpt_r1/tiny";

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/biomedgpt_r1/expected.json")).unwrap()).unwrap()
}

fn split(text: &str) -> (String, Option<String>) {
    biomedgpt_model::split_reasoning(text)
}

#[test]
fn ask_answers_as_the_reference_with_config_yaml_defaults() {
    let step = &expected()["molecule"]["steps"][0];
    let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", MODEL, "--smiles", "CC(=O)Oc1ccccc1C(=O)O", "--question", "Please describe this molecule.", "--json"]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], step["default_ids"], "2 beams, penalty 1.5, max_length counting the prompt");
    assert_eq!(out["answer"], step["default_text"]);
    assert_eq!(out["prompt_tokens"], step["kept_positions"]);
    let (reasoning, answer) = split(step["default_text"].as_str().unwrap());
    assert_eq!(out["reasoning"], Value::from(reasoning));
    assert_eq!(out["final"], answer.map(Value::from).unwrap_or(Value::Null));
}

#[test]
fn ask_prints_the_answer_and_with_show_reasoning_the_thinking() {
    // The two-turn case's first answer holds a `</think>` the random model wrote.
    let step = &expected()["two_turns"]["steps"][0];
    let text = step["default_text"].as_str().unwrap();
    let (reasoning, answer) = split(text);
    let args = ["ask", "--model", MODEL, "--smiles", "CCO", "--question", "What is it?"];
    let (ok, stdout, stderr) = biomedgpt(&args);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, format!("{}\n", answer.clone().unwrap()));
    let (ok, stdout, stderr) = biomedgpt(&[&args[..], &["--show-reasoning"]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(stdout, format!("<think>\n{reasoning}\n</think>\n\n{}\n", answer.unwrap()));

    // A thinking cut short by --max-new-tokens: no answer, and a warning that says so.
    let (ok, stdout, stderr) = biomedgpt(&[&args[..], &["--max-new-tokens", "3", "--num-beams", "1"]].concat());
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty() && stderr.contains("still thinking after 3 tokens"), "{stdout} / {stderr}");
}

#[test]
fn r1_refuses_a_system_prompt_and_other_models_refuse_show_reasoning() {
    let (ok, _, stderr) = biomedgpt(&["ask", "--model", MODEL, "--question", "Hi?", "--system-prompt", "Be brief."]);
    assert!(!ok && stderr.contains("no system prompt"), "{stderr}");
    let (ok, _, stderr) = biomedgpt(&["ask", "--model", "tests/fixtures/biomedgpt/tiny", "--question", "Hi?", "--show-reasoning"]);
    assert!(!ok && stderr.contains("not a reasoning model"), "{stderr}");
}

fn post(addr: &str, body: &Value) -> String {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The body of a chunked response, unchunked.
fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[test]
fn serve_returns_the_thinking_as_reasoning_content() {
    let (mut child, addr) = common::serve(&["--model", MODEL]);
    let messages = serde_json::json!([{"role": "user", "content": [
        {"type": "molecule", "molecule": {"smiles": "CCO"}}, {"type": "text", "text": "What is it?"}]}]);
    let answer: Value = serde_json::from_str(&post(&addr, &serde_json::json!({"messages": messages, "num_beams": 2, "repetition_penalty": 1.5}))).unwrap();
    let streamed = unchunk(&post(&addr, &serde_json::json!({"messages": messages, "num_beams": 2, "repetition_penalty": 1.5, "stream": true})));
    let greedy: Value = serde_json::from_str(&post(&addr, &serde_json::json!({"messages": messages, "temperature": 0}))).unwrap();
    let greedy_streamed = unchunk(&post(&addr, &serde_json::json!({"messages": messages, "temperature": 0, "stream": true})));
    let _ = child.kill();
    let _ = child.wait();

    // As `ask` (the reference chat): 2 beams, penalty 1.5, max_length counting the prompt.
    let step = &expected()["two_turns"]["steps"][0];
    let (reasoning, content) = split(step["default_text"].as_str().unwrap());
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], Value::from(reasoning), "{answer}");
    assert_eq!(message["content"], Value::from(content.unwrap()), "{answer}");

    // Streamed deltas add up to the same two parts, beams and greedy alike.
    for (whole, events) in [(&answer, &streamed), (&greedy, &greedy_streamed)] {
        let (mut r, mut c) = (String::new(), String::new());
        for line in events.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
            let chunk: Value = serde_json::from_str(line).unwrap();
            let delta = &chunk["choices"][0]["delta"];
            r.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
            c.push_str(delta["content"].as_str().unwrap_or(""));
        }
        let message = &whole["choices"][0]["message"];
        assert_eq!(r, message["reasoning_content"].as_str().unwrap(), "{events}");
        assert_eq!(c, message["content"].as_str().unwrap_or(""), "{events}");
    }
}

/// `eval` decodes as `ask` does (config.yaml's generation, max_length counting the prompt) and
/// scores the text after `</think>`, keeping the thinking beside it.
#[test]
fn eval_scores_the_final_answers_ask_gives() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qa");
    let (ok, _, stderr) = biomedgpt(&["eval", "--model", MODEL, "--task", "pubchemqa", "--data", "datasets/chebi", "--limit", "2", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let test: Value = serde_json::from_str(&std::fs::read_to_string(root().join("datasets/chebi/test.json")).unwrap()).unwrap();
    let predictions = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    for (k, line) in predictions.lines().enumerate() {
        let line: Value = serde_json::from_str(line).unwrap();
        let smiles = test[k]["smiles"][0].as_str().unwrap();
        let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", MODEL, "--smiles", smiles, "--question", "Please describe this molecule.", "--json"]);
        assert!(ok, "{stderr}");
        let asked: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(line["prediction"], asked["final"].as_str().map(Value::from).unwrap_or_else(|| Value::from("")), "record {k}");
        assert_eq!(line["reasoning"], asked["reasoning"], "record {k}");
    }
}

/// `convert` keeps an R1 model R1 (its config.yaml comes along): to f16 safetensors and to a
/// q8_0 GGUF LLM beside the encoders, both answer in R1's form with the same prompt.
#[test]
fn converted_models_stay_r1() {
    let dir = tempfile::tempdir().unwrap();
    let ask = |model: &str| -> Value {
        let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", model, "--smiles", "CCO", "--question", "What is it?", "--json", "--max-new-tokens", "4", "--num-beams", "1"]);
        assert!(ok, "{model}: {stderr}");
        serde_json::from_str(stdout.trim()).unwrap()
    };
    let original = ask(MODEL);
    for mix in ["f16", "q8_0"] {
        let out = dir.path().join(mix);
        let (ok, _, stderr) = biomedgpt(&["convert", "--model", MODEL, "--dtype", mix, "--out", out.to_str().unwrap()]);
        assert!(ok, "{mix}: {stderr}");
        let settings: Value = serde_json::from_str(&std::fs::read_to_string(out.join("biomedgpt.json")).unwrap()).unwrap();
        assert_eq!(settings["r1"], "config.yaml", "{mix}: {settings}");
        let answer = ask(out.to_str().unwrap());
        assert_eq!(answer["prompt_tokens"], original["prompt_tokens"], "{mix}: the same R1 prompt");
        assert!(answer.get("reasoning").is_some() && answer["token_ids"].as_array().unwrap().len() == 4, "{mix}: {answer}");
    }
}

/// `train` on R1 follows its recipe by default (adapters and LoRA r=8, alpha 16 on q/k/v/o,
/// encoders frozen); the checkpoint and its merge answer in R1's form.
#[test]
fn training_follows_r1s_recipe_and_checkpoints_stay_r1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (ok, stdout, stderr) = biomedgpt(&[
        "train", "--model", MODEL, "--dataset", "pubchemqa=datasets/chebi", "--limit", "4", "--valid-limit", "2", "--max-steps", "2", "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let checkpoint = PathBuf::from(stdout.trim().lines().last().unwrap());
    let settings: Value = serde_json::from_str(&std::fs::read_to_string(checkpoint.join("biomedgpt.json")).unwrap()).unwrap();
    assert_eq!(settings["lora"]["rank"], 8, "{settings}");
    assert_eq!(settings["lora"]["alpha"], 16.0, "{settings}");
    assert!(settings["r1"].as_str().unwrap().ends_with("config.yaml"), "{settings}");
    let merged = dir.path().join("merged");
    let (ok, _, stderr) = biomedgpt(&["merge-lora", "--model", checkpoint.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    for model in [checkpoint.to_str().unwrap(), merged.to_str().unwrap()] {
        let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", model, "--question", "What is aspirin?", "--json", "--max-new-tokens", "3", "--num-beams", "1"]);
        assert!(ok, "{model}: {stderr}");
        let answer: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(answer.get("reasoning").is_some(), "{model}: {answer}");
    }
}

/// `inspect logits --question` gives the reference's logits of the positions R1 reads (the
/// protein case's prompt is cut to its context); `--prompt` runs the LLM on text alone.
#[test]
fn inspect_logits_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let case = &expected()["protein"]["turns"][0];
    let (ok, _, stderr) = biomedgpt(&[
        "inspect", "logits", "--model", MODEL, "--protein", case[0][1].as_str().unwrap(), "--question", case[1][1].as_str().unwrap(), "--out", out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let read = |p: &Path| biomedgpt_io::npy::read_f32(&std::fs::read(p).unwrap()).unwrap();
    let (shape, got) = read(&out);
    let (want_shape, want) = read(&root().join("tests/fixtures/biomedgpt_r1/logits_protein.npy"));
    assert_eq!(shape, want_shape);
    assert_eq!(shape[0] as u64, expected()["protein"]["steps"][0]["kept_positions"].as_u64().unwrap());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
    }
    let (ok, _, stderr) = biomedgpt(&["inspect", "logits", "--model", MODEL, "--prompt", "What is aspirin?", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(read(&out).0[1] as u64, expected()["_settings"]["vocab_rows"].as_u64().unwrap());
}

/// `chat` holds R1's conversation as the reference does: the first answer (thinking included)
/// goes into the second turn's prompt; each turn prints the text after `</think>`.
#[test]
fn chat_keeps_the_reference_conversation() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .args(["chat", "--model", MODEL])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"/molecule CCO\nWhat is it?\nIs it toxic?\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let steps = &expected()["two_turns"]["steps"];
    let want: String = (0..2)
        .map(|t| match split(steps[t]["default_text"].as_str().unwrap()) {
            (_, Some(answer)) => format!("{answer}\n"),
            (_, None) => String::new(), // no answer: a warning on stderr instead
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
