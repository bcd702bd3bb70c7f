//! The demo model in models/demo (the default of `ask`) against the baselines, as its card
//! reports: on the full held-out test splits of both sample datasets, with the reference
//! evaluation's decoding (5 beams, repetition penalty 1.5), it must beat the most-frequent
//! training answer on every metric. (Retrieval beats it on some; the card says where.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn demo_model_beats_the_most_frequent_answer_on_every_metric() {
    for (task, data) in [("pubchemqa", "datasets/chebi"), ("uniprotqa", "datasets/swissprot")] {
        let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
        let out = scratch.path().join(format!("biomedgpt-demo-{task}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let run = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
            .current_dir(root())
            .args(["eval", "--model", "models/demo", "--task", task, "--data", data, "--split", "test", "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
        let (model, baseline) = (&report["metrics"], &report["baselines"]["most-frequent"]);
        assert_eq!(model["n"], baseline["n"]);
        for metric in ["bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"] {
            let (m, b) = (model[metric].as_f64().unwrap(), baseline[metric].as_f64().unwrap());
            assert!(m > b, "{task} {metric}: demo {m} vs most-frequent {b}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}
