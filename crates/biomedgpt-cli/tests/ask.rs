//! `ask`, `chat`, `inspect logits --question` and `convert` end to end on the BioMedGPT fixture
//! (tests/fixtures/biomedgpt: the PyTorch reference assembled on random weights).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt")
}

fn model() -> String {
    fixtures().join("tiny").display().to_string()
}

fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

#[test]
fn ask_json_gives_the_reference_greedy_and_beam_ids() {
    let fx = expected();
    let case = &fx["molecule"];
    let smiles = case["turns"][0][0][1].as_str().unwrap();
    let question = case["turns"][0][1][1].as_str().unwrap();
    let m = model();
    let (ok, stdout, stderr) =
        biomedgpt(&["ask", "--model", &m, "--smiles", smiles, "--question", question, "--dtype", "f32", "--max-new-tokens", "24", "--json", "--timings"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("meaningless"), "the tiny model says so: {stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], case["greedy_ids"]);
    assert_eq!(out["prompt_tokens"], case["prompt_tokens"]);
    assert!(out["answer"].is_string());
    // Greedy hands each token over as it comes: the timings are there and ordered.
    let timing = &out["timing"];
    let (load, first, rate) =
        (timing["load_s"].as_f64().unwrap(), timing["first_token_s"].as_f64().unwrap(), timing["decode_tok_s"].as_f64().unwrap());
    assert!(load > 0.0 && first > 0.0 && rate > 0.0, "{timing}");

    let case = &fx["mixed"];
    let (ok, stdout, stderr) = biomedgpt(&[
        "ask", "--model", &m, "--smiles", case["turns"][0][0][1].as_str().unwrap(), "--protein", case["turns"][0][1][1].as_str().unwrap(),
        "--question", case["turns"][0][2][1].as_str().unwrap(), "--dtype", "f32", "--max-new-tokens", "24",
        "--num-beams", "5", "--repetition-penalty", "1.5", "--json",
    ]);
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], case["beam_ids"]);
}

#[test]
fn bad_inputs_fail_with_a_reason_and_no_answer() {
    let m = model();
    for (args, reason) in [
        (vec!["--smiles", "C1CC", "--question", "q"], "unclosed ring"),
        (vec!["--protein", "MKTJ*", "--question", "q"], "not in the ESM alphabet"),
        (vec!["--smiles", "CCO", "--question", "  "], "--question is empty"),
        (vec!["--smiles", "CCO", "--question", "q", "--max-new-tokens", "100000"], "exceeds the model's context"),
    ] {
        let mut all = vec!["ask", "--model", m.as_str()];
        all.extend(args.iter().copied());
        let (ok, stdout, stderr) = biomedgpt(&all);
        assert!(!ok && stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let (ok, _, stderr) = biomedgpt(&["ask", "--model", &fixtures().display().to_string(), "--smiles", "C", "--question", "q"]);
    assert!(!ok && stderr.contains("not a model directory"), "{stderr}");
}

#[test]
fn inspect_logits_of_the_assembled_prompt_match_the_reference() {
    let fx = expected();
    let case = &fx["protein"];
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let out = scratch.path().join(format!("biomedgpt-logits-{}.npy", std::process::id()));
    let (ok, _, stderr) = biomedgpt(&[
        "inspect", "logits", "--model", &model(), "--protein", case["turns"][0][0][1].as_str().unwrap(),
        "--question", case["turns"][0][1][1].as_str().unwrap(), "--dtype", "f32", "--out", out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (shape, got) = biomedgpt_io::npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    std::fs::remove_file(&out).ok();
    assert_eq!(shape, [case["prompt_tokens"].as_u64().unwrap() as usize, 32001]);
    let (_, want) = biomedgpt_io::npy::read_f32(&std::fs::read(fixtures().join("last_logits_protein.npy")).unwrap()).unwrap();
    let last = &got[(shape[0] - 1) * 32001..];
    let worst = last.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0f32, f32::max);
    assert!(worst <= 1e-4, "{worst}");
}

#[test]
fn convert_to_f16_safetensors_gives_identical_outputs() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let out = scratch.path().join(format!("biomedgpt-convert-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let m = model();
    let (ok, _, stderr) = biomedgpt(&["convert", "--model", &m, "--out", out.to_str().unwrap(), "--dtype", "f16", "--shard-gb", "0.002"]);
    assert!(ok, "{stderr}");
    assert!(out.join("model.safetensors.index.json").is_file() && out.join("model-00001-of-00003.safetensors").is_file());
    let converted = out.display().to_string();
    let args = |dir: &str| {
        biomedgpt(&["ask", "--model", dir, "--smiles", "CCO", "--protein", "MKTAYIAK", "--question", "Same?", "--dtype", "f16", "--max-new-tokens", "8", "--json"])
    };
    let (ok_a, a, err_a) = args(&m);
    let (ok_b, b, err_b) = args(&converted);
    std::fs::remove_dir_all(&out).ok();
    assert!(ok_a && ok_b, "{err_a}{err_b}");
    assert_eq!(a, b);
    let (ok, _, stderr) = biomedgpt(&["convert", "--model", &m, "--out", &m, "--dtype", "f16"]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
}

#[test]
fn chat_answers_resets_and_quits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .args(["chat", "--model", &model(), "--max-new-tokens", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"/molecule CCO\nWhat is it?\n/molecule C1CC\n/reset\n/protein MKTAYIAK\nAnd this?\n/quit\nnever read\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "two answers: {stdout}");
    assert!(stderr.contains("molecule added") && stderr.contains("conversation cleared") && stderr.contains("protein added"), "{stderr}");
    assert!(stderr.contains("unclosed ring"), "a bad SMILES is reported and the chat goes on: {stderr}");
}

#[test]
fn openbiomed_ckpts_layout_and_text_only_llama_directories_work() {
    // OpenBioMed's ckpts/ layout, built from the fixture's files.
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let root = scratch.path().join(format!("biomedgpt-ckpts-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let tiny = fixtures().join("tiny");
    for (dir, from) in [("text_ckpts/biomedgpt-lm-7b", "llm"), ("protein_ckpts/esm2-3b", "esm")] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for entry in std::fs::read_dir(tiny.join(from)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), root.join(dir).join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("fusion_ckpts")).unwrap();
    std::fs::copy(tiny.join("biomedgpt_10b.pth"), root.join("fusion_ckpts/biomedgpt_10b.pth")).unwrap();
    let ask = |dir: &str| biomedgpt(&["ask", "--model", dir, "--smiles", "CCO", "--protein", "MKTAYIAK", "--question", "q", "--max-new-tokens", "6", "--json"]);
    let (ok_a, a, err_a) = ask(root.to_str().unwrap());
    let (ok_b, b, err_b) = ask(&model());
    std::fs::remove_dir_all(&root).ok();
    assert!(ok_a && ok_b, "{err_a}{err_b}");
    assert_eq!(a, b);

    // A plain LLaMA directory answers text-only, and refuses molecules it cannot encode.
    let llama = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama/real_vocab_f16");
    let llama = llama.to_str().unwrap();
    let (ok, stdout, stderr) = biomedgpt(&["ask", "--model", llama, "--question", "What is aspirin?", "--max-new-tokens", "5", "--json"]);
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"].as_array().unwrap().len(), 5);
    let (ok, _, stderr) = biomedgpt(&["ask", "--model", llama, "--smiles", "CCO", "--question", "q"]);
    assert!(!ok && stderr.contains("no molecule encoder"), "{stderr}");
}

/// Without --model, `ask` answers with the demo model shipped in models/demo and says in one
/// line what it is and how to use the real weights; the answer is text about the molecule.
#[test]
fn ask_without_a_model_answers_with_the_demo_and_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .env_remove("BIOMEDGPT_MODEL")
        .args(["ask", "--smiles", "CC(=O)Oc1ccccc1C(=O)O", "--question", "Please describe this molecule.", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].contains("demo") && notes[0].contains("--model") && notes[0].contains("BioMedGPT-10B"), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let text = answer["answer"].as_str().unwrap();
    assert!(text.split_whitespace().count() >= 3, "a sentence, not noise: {text:?}");

    // A protein question works the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .env_remove("BIOMEDGPT_MODEL")
        .args(["ask", "--protein", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQCGVWPAACRESVPALL", "--question", "What is the function of this protein?", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(!answer["answer"].as_str().unwrap().trim().is_empty());
}

/// Issue 26, D11: `convert` reported success for a truncated config.json or a hidden_size of
/// 10^12, and the output could not be loaded; the configs are now checked as `ask` reads them.
#[test]
fn convert_refuses_configs_ask_cannot_load() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let base = scratch.path().join(format!("biomedgpt-convert-bad-{}", std::process::id()));
    let tiny = fixtures().join("tiny");
    let config = std::fs::read_to_string(tiny.join("llm/config.json")).unwrap();
    let huge = {
        let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
        v["hidden_size"] = serde_json::json!(1_000_000_000_000u64);
        v.to_string()
    };
    for (case, text, needle) in [("truncated", config[..config.len() / 2].to_string(), "not a loadable LLaMA config"), ("huge", huge, "out of range")] {
        let dir = base.join(case);
        std::fs::create_dir_all(dir.join("llm")).unwrap();
        for f in ["biomedgpt.json", "biomedgpt_10b.pth"] {
            std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
        }
        std::fs::create_dir_all(dir.join("esm")).unwrap();
        for f in ["config.json", "vocab.txt"] {
            std::fs::copy(tiny.join("esm").join(f), dir.join("esm").join(f)).unwrap();
        }
        std::fs::copy(tiny.join("llm/tokenizer.json"), dir.join("llm/tokenizer.json")).unwrap();
        std::fs::write(dir.join("llm/config.json"), text).unwrap();
        let out = base.join(format!("{case}-out"));
        let (ok, _, stderr) = biomedgpt(&["convert", "--model", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "f16"]);
        assert!(!ok, "{case}: convert accepted it");
        assert!(stderr.contains(needle) && stderr.contains("config.json"), "{case}: {stderr}");
        assert!(!out.join("model.safetensors.index.json").exists(), "{case}: output written");
    }
    std::fs::remove_dir_all(&base).ok();
}

/// `ask --json-schema FILE`: the answer is JSON that keeps the schema (the engine behind
/// `serve`'s response_format); a bad schema or beam search is refused by name.
#[test]
fn a_json_schema_holds_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let schema = dir.join("schema.json");
    std::fs::write(&schema, r#"{"type": "object", "properties": {"class": {"enum": ["alcohol", "acid", "ketone"]}, "carbons": {"type": "integer", "minimum": 1, "maximum": 60}}, "required": ["class", "carbons"], "additionalProperties": false}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .args(["ask", "--model", &model(), "--smiles", "CCO", "--question", "Classify it.", "--json-schema", schema.to_str().unwrap(), "--max-new-tokens", "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(["alcohol", "acid", "ketone"].contains(&answer["class"].as_str().unwrap()), "{answer}");
    assert!((1..=60).contains(&answer["carbons"].as_i64().unwrap()), "{answer}");
    let refused = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .args(["ask", "--model", &model(), "--smiles", "CCO", "--question", "x", "--json-schema", schema.to_str().unwrap(), "--num-beams", "2"])
        .output()
        .unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("beam search"));
}
