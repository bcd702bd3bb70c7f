//! `score` and `eval` end to end: the metrics of the reference fixture, baselines on the shipped
//! sample data, resuming an interrupted run, the model path on the BioMedGPT fixture, and a
//! multiple-choice set.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).current_dir(root()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

mod common;
use common::temp_dir;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn score_prints_the_reference_metrics_of_the_fixture() {
    let (ok, stdout, stderr) = biomedgpt(&["score", "--predictions", "tests/fixtures/metrics/pairs.jsonl"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("not comparable") || stderr.contains("comparable with the paper"), "{stderr}");
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    let want = &read_json(&root().join("tests/fixtures/metrics/expected.json"))["corpus"];
    for key in ["bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"] {
        let (g, w) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!((g - w).abs() <= 1e-6, "{key}: {g} vs {w}");
    }
    assert_eq!(got["n"], 640);
    assert_eq!(got.as_object().unwrap().len(), 7, "exactly the documented keys: {got}");

    let (ok, stdout, _) = biomedgpt(&["score", "--predictions", "tests/fixtures/metrics/pairs.jsonl", "--bleu", "sentence"]);
    assert!(ok);
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    let want = &read_json(&root().join("tests/fixtures/metrics/expected.json"))["sentence_bleu"];
    assert!((got["bleu4"].as_f64().unwrap() - want["bleu4"].as_f64().unwrap()).abs() <= 1e-6);

    let dir = temp_dir("score");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prediction\": \"a\", \"reference\": \"b\"}\n{\"prediction\": \"a\"}\n").unwrap();
    let (ok, stdout, stderr) = biomedgpt(&["score", "--predictions", bad.to_str().unwrap()]);
    assert!(!ok && stdout.is_empty());
    assert!(stderr.contains("bad.jsonl:2") && stderr.contains("reference"), "{stderr}");
    let good = dir.join("good.jsonl");
    std::fs::write(&good, "{\"prediction\": \"a\", \"reference\": \"b\"}\n").unwrap();
    let (ok, _, stderr) = biomedgpt(&["score", "--predictions", good.to_str().unwrap(), "--wordnet", "/nonexistent"]);
    assert!(!ok && stderr.contains("wordnet-base"), "{stderr}");
}

/// Issue 26, D7: a 50k-word line took 13 s (a 50 MB one minutes and 3.5 GB); lines past the
/// bound are refused at once, naming the line.
#[test]
fn score_refuses_overlong_lines() {
    let dir = temp_dir("overlong");
    let path = dir.join("long.jsonl");
    let long = "w ".repeat(50_000);
    std::fs::write(&path, format!("{{\"prediction\": \"a b\", \"reference\": \"a b\"}}\n{{\"prediction\": \"{long}\", \"reference\": \"x\"}}\n")).unwrap();
    let started = std::time::Instant::now();
    let (ok, _, stderr) = biomedgpt(&["score", "--predictions", path.to_str().unwrap()]);
    assert!(!ok && stderr.contains("long.jsonl:2") && stderr.contains("50000 words"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // One 2 MB word (issue 39, D13: 200 MB of one word took 4.8 GB in WordPiece).
    let word = "a".repeat(2_000_000);
    std::fs::write(&path, format!("{{\"prediction\": \"{word}\", \"reference\": \"x\"}}\n")).unwrap();
    let (ok, _, stderr) = biomedgpt(&["score", "--predictions", path.to_str().unwrap()]);
    assert!(!ok && stderr.contains("long.jsonl:1") && stderr.contains("2000000 bytes"), "{stderr}");
}

#[test]
fn retrieval_baseline_resumes_an_interrupted_run_to_the_same_predictions() {
    let dir = temp_dir("resume");
    let clean = dir.join("clean");
    let args = |out: &Path| -> Vec<String> {
        ["eval", "--task", "pubchemqa", "--data", "datasets/chebi", "--baseline", "retrieval", "--limit", "20", "--out", out.to_str().unwrap()]
            .map(String::from)
            .to_vec()
    };
    let run = |out: &Path| {
        let a = args(out);
        biomedgpt(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (ok, stdout, stderr) = run(&clean);
    assert!(ok, "{stderr}");
    let report = read_json(&clean.join("metrics.json"));
    assert_eq!(report["metrics"]["n"], 20);
    assert_eq!(report["run"]["baseline"], "retrieval");
    assert_eq!(report["run"]["data"]["sha256"].as_str().unwrap().len(), 64);
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed, report["metrics"]);
    let full = std::fs::read_to_string(clean.join("predictions.jsonl")).unwrap();
    assert_eq!(full.lines().count(), 20);

    // A run killed after 7 predictions, in the middle of writing the 8th line.
    let resumed = dir.join("resumed");
    std::fs::create_dir_all(&resumed).unwrap();
    std::fs::copy(clean.join("run.json"), resumed.join("run.json")).unwrap();
    let partial: String = full.lines().take(7).map(|l| format!("{l}\n")).collect::<String>() + &full.lines().nth(7).unwrap()[..25];
    std::fs::write(resumed.join("predictions.jsonl"), partial).unwrap();
    let (ok, _, stderr) = run(&resumed);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("resuming: 7 of 20"), "{stderr}");
    assert_eq!(std::fs::read_to_string(resumed.join("predictions.jsonl")).unwrap(), full);
    assert_eq!(read_json(&resumed.join("metrics.json"))["metrics"], report["metrics"]);

    // Cut inside a multibyte character (issue 26, D4: the whole file then read as empty and
    // every record was answered again after the garbage).
    let cut = dir.join("cut-utf8");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(clean.join("run.json"), cut.join("run.json")).unwrap();
    let mut bytes: Vec<u8> = full.lines().take(7).flat_map(|l| format!("{l}\n").into_bytes()).collect();
    bytes.extend_from_slice(b"{\"source\": \"caf\xc3");
    std::fs::write(cut.join("predictions.jsonl"), bytes).unwrap();
    let (ok, _, stderr) = run(&cut);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("resuming: 7 of 20") && stderr.contains("incomplete last line"), "{stderr}");
    assert_eq!(std::fs::read_to_string(cut.join("predictions.jsonl")).unwrap(), full);

    // Other settings in the same directory are refused rather than mixed.
    let mut other = args(&resumed);
    other.extend(["--train-split".into(), "valid".into()]);
    let (ok, _, stderr) = biomedgpt(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && stderr.contains("other settings"), "{stderr}");
}

#[test]
fn retrieval_beats_most_frequent_answer_on_the_protein_sample() {
    let dir = temp_dir("baselines");
    let mut scores = Vec::new();
    for baseline in ["retrieval", "most-frequent"] {
        let out = dir.join(baseline);
        let (ok, _, stderr) = biomedgpt(&["eval", "--task", "uniprotqa", "--data", "datasets/swissprot", "--baseline", baseline, "--out", out.to_str().unwrap()]);
        assert!(ok, "{stderr}");
        scores.push(read_json(&out.join("metrics.json"))["metrics"].clone());
    }
    for key in ["bleu2", "rouge1", "rougeL", "meteor"] {
        assert!(scores[0][key].as_f64() > scores[1][key].as_f64(), "{key}: {scores:?}");
    }
}

#[test]
fn model_eval_answers_like_ask_and_scores_multiple_choice() {
    let dir = temp_dir("model");
    let model = "tests/fixtures/biomedgpt/tiny";
    let out = dir.join("qa");
    let (ok, _, stderr) = biomedgpt(&[
        "eval", "--model", model, "--task", "pubchemqa", "--data", "datasets/chebi", "--limit", "2", "--max-new-tokens", "8", "--dtype", "f32", "--out", out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let report = read_json(&out.join("metrics.json"));
    for baseline in ["retrieval", "most-frequent"] {
        assert_eq!(report["baselines"][baseline]["n"], 2, "baselines scored beside the model: {report}");
    }
    let run = read_json(&out.join("run.json"));
    let decoding = run["decoding"].as_str().unwrap();
    assert!(decoding.contains("num_beams: 5") && decoding.contains("repetition_penalty: 1.5"), "reference defaults: {decoding}");
    let test: Value = read_json(&root().join("datasets/chebi/test.json"));
    for (k, line) in lines(&out.join("predictions.jsonl")).iter().enumerate() {
        let smiles = test[k]["smiles"][0].as_str().unwrap();
        let (ok, stdout, stderr) = biomedgpt(&[
            "ask", "--model", model, "--smiles", smiles, "--question", "Please describe this molecule.", "--dtype", "f32",
            "--max-new-tokens", "8", "--num-beams", "5", "--repetition-penalty", "1.5", "--json",
        ]);
        assert!(ok, "{stderr}");
        let asked: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(line["prediction"], asked["answer"], "record {k}");
        assert_eq!(line["reference"], test[k]["answer"]);
    }

    let medqa = dir.join("medqa.jsonl");
    std::fs::write(
        &medqa,
        concat!(
            r#"{"question": "Best drug?", "options": {"A": "Aspirin", "B": "Heparin", "C": "Insulin", "D": "Saline"}, "answer_idx": "B"}"#, "\n",
            r#"{"sent1": "Next step?", "ending0": "Wait", "ending1": "Operate", "ending2": "Scan", "ending3": "Discharge", "label": 2}"#, "\n",
        ),
    )
    .unwrap();
    let out = dir.join("mc");
    let (ok, stdout, stderr) = biomedgpt(&["eval", "--model", model, "--task", "medqa", "--data", medqa.to_str().unwrap(), "--dtype", "f32", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let predictions = lines(&out.join("predictions.jsonl"));
    let mut correct = 0;
    for p in &predictions {
        let logprobs: Vec<f64> = p["logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(logprobs.len(), 4);
        assert!(logprobs.iter().all(|l| *l < 0.0 && l.is_finite()));
        correct += (p["prediction"] == p["gold"]) as usize;
    }
    let metrics: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(metrics["n"], 2);
    assert_eq!(metrics["acc"].as_f64().unwrap(), correct as f64 / 2.0);

    // A 10 MB question is refused before it is tokenized (issue 39, D14: 32.6 s and 1.5 GB).
    let huge = "blood ".repeat(2_000_000);
    std::fs::write(&medqa, format!("{{\"question\": \"{huge}\", \"options\": {{\"A\": \"x\", \"B\": \"y\"}}, \"answer_idx\": \"A\"}}\n")).unwrap();
    let started = std::time::Instant::now();
    let (ok, _, stderr) = biomedgpt(&["eval", "--model", model, "--task", "medqa", "--data", medqa.to_str().unwrap(), "--dtype", "f32", "--out", dir.join("huge").to_str().unwrap()]);
    assert!(!ok && stderr.contains("medqa.jsonl:1") && stderr.contains("more than the model's 512 positions"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

/// `eval --batch-size N` decodes N questions together through the serving engine: greedy and
/// seeded-sampling predictions are identical to one question at a time, molecules and proteins,
/// and the greedy ones equal `ask`'s.
#[test]
fn batched_eval_predicts_as_one_question_at_a_time() {
    let dir = temp_dir("batched");
    let model = "models/demo";
    for (task, data, limit) in [("pubchemqa", "datasets/chebi", "20"), ("uniprotqa", "datasets/swissprot", "10")] {
        for sampling in [&[][..], &["--temperature", "0.9", "--top-p", "0.95", "--seed", "11"][..]] {
            let mut predictions = Vec::new();
            for batch in ["1", "8"] {
                let out = dir.join(format!("{task}-{}-{batch}", sampling.len()));
                let mut args = vec![
                    "eval", "--model", model, "--task", task, "--data", data, "--limit", limit, "--num-beams", "1", "--repetition-penalty", "1.0",
                    "--max-new-tokens", "48", "--batch-size", batch, "--no-baselines", "--out", out.to_str().unwrap(),
                ];
                args.extend_from_slice(sampling);
                let (ok, _, stderr) = biomedgpt(&args);
                assert!(ok, "{stderr}");
                let lines = lines(&out.join("predictions.jsonl"));
                assert_eq!(lines.len(), limit.parse::<usize>().unwrap());
                predictions.push(lines.iter().map(|l| l["prediction"].as_str().unwrap().to_string()).collect::<Vec<_>>());
            }
            assert_eq!(predictions[0], predictions[1], "{task} {sampling:?}: batch 8 vs batch 1");
            assert!(predictions[0].iter().any(|p| !p.is_empty()));
            if sampling.is_empty() && task == "pubchemqa" {
                let test: Value = read_json(&root().join("datasets/chebi/test.json"));
                for k in 0..2 {
                    let smiles = test[k]["smiles"][0].as_str().unwrap();
                    let (ok, stdout, stderr) = biomedgpt(&[
                        "ask", "--model", model, "--smiles", smiles, "--question", "Please describe this molecule.", "--max-new-tokens", "48", "--json",
                    ]);
                    assert!(ok, "{stderr}");
                    let asked: Value = serde_json::from_str(stdout.trim()).unwrap();
                    assert_eq!(predictions[1][k], asked["answer"].as_str().unwrap(), "record {k}: eval --batch-size 8 vs ask");
                }
            }
        }
    }
}
