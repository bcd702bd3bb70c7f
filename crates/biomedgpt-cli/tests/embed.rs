//! `biomedgpt embed protein` end to end on the transformers ESM fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use biomedgpt_io::npy;

fn esm_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/esm").join(name)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("biomedgpt-embed-{}-{name}", std::process::id()))
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(esm_fixture("t2_h4_safetensors").join("expected.json")).unwrap()).unwrap()
}

#[test]
fn one_sequence_gives_per_token_features_equal_to_transformers() {
    let dir = esm_fixture("t2_h4_safetensors");
    let exp = expected();
    let seq = exp["sequences"][1].as_str().unwrap();
    let out = tmp("one.npy");
    let (ok, err) = run(&["embed", "protein", "--model", dir.to_str().unwrap(), "--sequence", seq, "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (shape, got) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![seq.len() + 2, 64]);
    // Row 1 of the padded transformers batch holds this sequence.
    let (bshape, batch) = npy::read_f32(&std::fs::read(dir.join("last_hidden_state.npy")).unwrap()).unwrap();
    let row = &batch[bshape[1] * 64..bshape[1] * 64 + got.len()];
    for (g, w) in got.iter().zip(row) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn fasta_with_mean_pool_matches_transformers_and_npz_holds_every_record() {
    let dir = esm_fixture("t2_h4_safetensors");
    let exp = expected();
    let seqs: Vec<&str> = exp["sequences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let fasta = tmp("in.fasta");
    let text: String = seqs.iter().enumerate().map(|(i, s)| format!(">rec{i} some description\n{s}\n")).collect();
    std::fs::write(&fasta, text).unwrap();
    let out = tmp("mean.npy");
    let (ok, err) = run(&["embed", "protein", "--model", dir.to_str().unwrap(), "--fasta", fasta.to_str().unwrap(),
        "--out", out.to_str().unwrap(), "--pool", "mean", "--batch-size", "3"]);
    assert!(ok, "{err}");
    let (shape, got) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![seqs.len(), 64]);
    let want: Vec<f32> = exp["mean_pooled"].as_array().unwrap().iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<_>>())
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
    let npz = tmp("all.npz");
    let (ok, err) = run(&["embed", "protein", "--model", dir.to_str().unwrap(), "--fasta", fasta.to_str().unwrap(),
        "--out", npz.to_str().unwrap()]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&npz).unwrap();
    for i in 0..seqs.len() {
        let name = format!("rec{i}.npy");
        assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{name} missing from the npz");
    }
}

#[test]
fn bad_sequences_and_settings_are_clear_errors() {
    let dir = esm_fixture("t2_h4_safetensors");
    let dir = dir.to_str().unwrap();
    let out = tmp("bad.npy");
    let out = out.to_str().unwrap();
    let fasta = tmp("bad.fasta");
    std::fs::write(&fasta, ">good\nMKT\n>broken\nMK1T\n").unwrap();
    for (args, needle) in [
        (vec!["embed", "protein", "--model", dir, "--sequence", "MKJT", "--out", out], "`J` at position 3"),
        (vec!["embed", "protein", "--model", dir, "--fasta", fasta.to_str().unwrap(), "--out", out], "broken: `1` at position 3"),
        (vec!["embed", "protein", "--model", dir, "--sequence", " ", "--out", out], "empty"),
        (vec!["embed", "protein", "--model", dir, "--sequence", "MKT", "--out", out, "--layer", "9"], "--layer 9"),
        (vec!["embed", "protein", "--model", dir, "--sequence", "MKTAYIAK", "--out", out, "--max-length", "6", "--no-truncate"], "exceed"),
    ] {
        let (ok, err) = run(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, err) = run(&["embed", "protein", "--model", dir, "--sequence", "MKTAYIAK", "--out", out, "--max-length", "6"]);
    assert!(ok && err.contains("truncated by 4 residues"), "{err}");
    let (shape, _) = npy::read_f32(&std::fs::read(out).unwrap()).unwrap();
    assert_eq!(shape, vec![6, 64]);
}
