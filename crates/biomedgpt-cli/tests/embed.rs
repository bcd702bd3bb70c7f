//! `biomedgpt embed protein` end to end on the transformers ESM fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use biomedgpt_io::npy;

fn esm_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/esm").join(name)
}

/// A path for one output file, in a directory removed when the guard is dropped (issue 39, D21).
struct TmpPath(#[allow(dead_code)] tempfile::TempDir, PathBuf);

impl AsRef<Path> for TmpPath {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl std::ops::Deref for TmpPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.1
    }
}

fn tmp(name: &str) -> TmpPath {
    let dir = tempfile::Builder::new().prefix("biomedgpt-embed-").tempdir().unwrap();
    let path = dir.path().join(name);
    TmpPath(dir, path)
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

fn gin_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gin").join(name)
}

#[test]
fn molecule_embeddings_match_the_reference_gin() {
    let dir = gin_fixture("gin_d64_l3");
    let (_, want) = npy::read_f32(&std::fs::read(dir.join("expected.npy")).unwrap()).unwrap();
    // Aspirin is the first fixture molecule: its 13 atoms are the first 13 rows.
    let out = tmp("aspirin.npy");
    let (ok, err) = run(&["embed", "molecule", "--model", dir.to_str().unwrap(), "--smiles", "CC(=O)Oc1ccccc1C(=O)O",
        "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (shape, got) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![13, 64]);
    for (g, w) in got.iter().zip(&want[..13 * 64]) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
    // A .smi file: aspirin, an invalid line, methane; mean pooled, the invalid line reported.
    let smi = tmp("mols.smi");
    std::fs::write(&smi, "CC(=O)Oc1ccccc1C(=O)O aspirin\nC1CC broken\nC methane\n").unwrap();
    let pooled = tmp("pooled.npy");
    let args = ["embed", "molecule", "--model", dir.to_str().unwrap(), "--input", smi.to_str().unwrap(), "--out", pooled.to_str().unwrap()];
    let (ok, err) = run(&args);
    assert!(!ok && err.contains("mols.smi:2") && err.contains("unclosed ring") && err.contains("--skip-invalid"), "{err}");
    let mut skipping = args.to_vec();
    skipping.push("--skip-invalid");
    let (ok, err) = run(&skipping);
    assert!(ok && err.contains("mols.smi:2: skipped"), "{err}");
    let (shape, got) = npy::read_f32(&std::fs::read(&pooled).unwrap()).unwrap();
    assert_eq!(shape, vec![2, 64]);
    let mean: Vec<f32> = (0..64).map(|j| (0..13).map(|a| want[a * 64 + j]).sum::<f32>() / 13.0).collect();
    for (g, w) in got[..64].iter().zip(&mean) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
    // A CSV: the `smiles` column wherever it is, quoted commas inside a field (issue 39, D15).
    let csv = tmp("mols.csv");
    std::fs::write(&csv, "name,smiles\n\"aspirin, acetylsalicylic acid\",CC(=O)Oc1ccccc1C(=O)O\nmethane,C\n").unwrap();
    let from_csv = tmp("from_csv.npy");
    let (ok, err) = run(&["embed", "molecule", "--model", dir.to_str().unwrap(), "--input", csv.to_str().unwrap(), "--out", from_csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&from_csv).unwrap(), std::fs::read(&pooled).unwrap(), "the same two molecules as the .smi file");
    // No `smiles` column: an error naming the columns, not column 0.
    std::fs::write(&csv, "name,structure\n\"ester, CO\",CCC\n").unwrap();
    let (ok, err) = run(&["embed", "molecule", "--model", dir.to_str().unwrap(), "--input", csv.to_str().unwrap(), "--out", from_csv.to_str().unwrap()]);
    assert!(!ok && err.contains("no `smiles` column") && err.contains("`structure`"), "{err}");
}

#[test]
fn molecule_embeddings_read_the_fused_checkpoint_prefix() {
    let dir = gin_fixture("gin_d32_l2_prefixed");
    let out = tmp("prefixed.npy");
    let base = ["embed", "molecule", "--model", dir.to_str().unwrap(), "--smiles", "C", "--out", out.to_str().unwrap()];
    let (ok, err) = run(&base);
    assert!(!ok && err.contains("missing tensor"), "{err}");
    let mut with_prefix = base.to_vec();
    with_prefix.extend(["--prefix", "mol_structure_encoder."]);
    let (ok, err) = run(&with_prefix);
    assert!(ok, "{err}");
    let (shape, _) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![1, 32]);
}

/// Issue 26, D12: with `--pool none`, a duplicate FASTA id used to become `a_` in the .npz
/// without a word; it still does (no record is lost), and the warning names both.
#[test]
fn duplicate_fasta_ids_are_reported() {
    let dir = esm_fixture("t2_h4_safetensors");
    let fasta = tmp("dup.fasta");
    std::fs::write(&fasta, ">a\nMKTAYIAK\n>a\nMKTAYIAKQR\n>b c\nMKT\n").unwrap();
    let npz = tmp("dup.npz");
    let (ok, err) = run(&["embed", "protein", "--model", dir.to_str().unwrap(), "--fasta", fasta.to_str().unwrap(), "--pool", "none", "--out", npz.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("FASTA id `a` is already taken") && err.contains("array is `a_`"), "{err}");
    let bytes = std::fs::read(&npz).unwrap();
    for name in ["a.npy", "a_.npy"] {
        assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()), "{name} missing");
    }
    let _ = std::fs::remove_file(fasta);
    let _ = std::fs::remove_file(npz);
}

/// `embed --model DIR` on a BioMedGPT model directory uses its GIN and ESM-2, the encoders `ask`
/// splices in: the features equal the loaded model's (before the adapters), row for row.
#[test]
fn a_biomedgpt_directory_gives_its_encoders_features() {
    use biomedgpt_model::{BioMedGpt, Input};
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    let model = BioMedGpt::load(&demo, biomedgpt_io::FloatType::F32, &burn::tensor::Device::flex()).unwrap();
    let features = |input: Input| {
        let (_, f, _) = model.features(&input).unwrap();
        let dims = f.dims();
        (dims.to_vec(), f.into_data().try_to_vec::<f32>().unwrap())
    };

    let out = tmp("molecule.npy");
    let (ok, err) = run(&["embed", "molecule", "--model", demo.to_str().unwrap(), "--smiles", "CC(=O)Oc1ccccc1C(=O)O", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (shape, values) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    let (want_shape, want) = features(Input::Smiles("CC(=O)Oc1ccccc1C(=O)O".into()));
    assert_eq!(shape, want_shape);
    assert!(values.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0)), "the demo's GIN features");

    let sequence = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ";
    let out = tmp("protein.npy");
    let (ok, err) = run(&["embed", "protein", "--model", demo.to_str().unwrap(), "--sequence", sequence, "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (shape, values) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    let (want_shape, want) = features(Input::Protein { name: "protein".into(), sequence: sequence.into() });
    assert_eq!(shape, want_shape, "<cls>, residues, <eos>");
    assert!(values.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0)), "the demo's ESM-2 features");

    // A GIN's own options do not apply to a model directory.
    let (ok, err) = run(&["embed", "molecule", "--model", demo.to_str().unwrap(), "--smiles", "C", "--prefix", "x.", "--out", out.to_str().unwrap()]);
    assert!(!ok && err.contains("BioMedGPT model directory"), "{err}");
}
