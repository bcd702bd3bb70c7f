//! The `biomedgpt` binary end to end, on the transformers fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use biomedgpt_io::npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama").join(name)
}

fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap()).unwrap()
}

#[test]
fn generate_json_matches_transformers_greedy() {
    let exp = expected("real_vocab_f16");
    assert_eq!(exp["greedy"]["eos_token_id"], serde_json::json!([2]), "fixture uses the config's EOS");
    let dir = fixture("real_vocab_f16");
    let (ok, stdout, stderr) = biomedgpt(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        exp["prompt"].as_str().unwrap(),
        "--max-new-tokens",
        "40",
        // The file is f16; `auto` would compute in f16. Parity is checked in f32.
        "--dtype",
        "f32",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["token_ids"], exp["greedy"]["tokens"]);
    assert_eq!(out["text"], exp["greedy"]["text"]);
}

#[test]
fn generate_streams_the_same_text() {
    let exp = expected("real_vocab_f16");
    let dir = fixture("real_vocab_f16");
    let (ok, stdout, stderr) = biomedgpt(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        exp["prompt"].as_str().unwrap(),
        "--max-new-tokens",
        "40",
        // The file is f16; `auto` would compute in f16. Parity is checked in f32.
        "--dtype",
        "f32",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim_end_matches('\n'), exp["greedy"]["text"].as_str().unwrap());
}

#[test]
fn inspect_logits_writes_npy_equal_to_transformers() {
    let name = "mha_untied_safetensors";
    let exp = expected(name);
    let ids: Vec<String> = exp["input_ids"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let out = scratch.path().join(format!("biomedgpt-logits-{}.npy", std::process::id()));
    let (ok, _, stderr) = biomedgpt(&[
        "inspect",
        "logits",
        "--model",
        fixture(name).to_str().unwrap(),
        "--token-ids",
        &ids.join(","),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(ok, "{stderr}");
    let (shape, got) = npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    let (want_shape, want) = npy::read_f32(&std::fs::read(fixture(name).join("logits.npy")).unwrap()).unwrap();
    assert_eq!(shape, want_shape);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = fixture("real_vocab_f16");
    let dir = dir.to_str().unwrap();
    for (args, needle) in [
        (vec!["generate", "--model", dir, "--prompt", "  "], "--prompt is empty"),
        (vec!["generate", "--model", "/nonexistent", "--prompt", "hi"], "/nonexistent/config.json"),
        (vec!["generate", "--model", dir, "--prompt", "hi", "--device", "cuda"], "without the CUDA backend"),
        (vec!["generate", "--model", dir, "--prompt", "hi", "--device", "tpu"], "unknown device"),
        (vec!["generate", "--model", dir, "--prompt", "hi", "--dtype", "int4"], "unknown dtype"),
        (vec!["generate", "--model", dir, "--prompt", "hi", "--num-beams", "2", "--top-p", "0.9"], "beam search with sampling"),
        (vec!["inspect", "logits", "--model", dir, "--token-ids", "1,99999", "--out", "/tmp/x.npy"], "outside the vocabulary"),
    ] {
        let (ok, stdout, stderr) = biomedgpt(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(stdout.is_empty(), "{args:?} printed an answer: {stdout}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// An output path that cannot be written is named in the error (issue 39, D20: a bare "Not a
/// directory (os error 20)" said nothing of which path).
#[test]
fn unwritable_outputs_are_named() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let dir = scratch.path().join(format!("biomedgpt-cli-outputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt/tiny");
    let gin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gin/gin_d64_l3");
    let llama = fixture("mha_untied_safetensors");
    let inside = file.join("x.npy");
    for (args, named) in [
        (vec!["convert", "--model", tiny.to_str().unwrap(), "--out", file.to_str().unwrap(), "--dtype", "f16"], file.clone()),
        (vec!["convert", "--model", tiny.to_str().unwrap(), "--out", inside.to_str().unwrap(), "--dtype", "f16"], inside.clone()),
        (vec!["embed", "molecule", "--model", gin.to_str().unwrap(), "--smiles", "C", "--out", inside.to_str().unwrap()], inside.clone()),
        (vec!["inspect", "logits", "--model", llama.to_str().unwrap(), "--token-ids", "1,2", "--out", inside.to_str().unwrap()], inside.clone()),
    ] {
        let (ok, _, stderr) = biomedgpt(&args);
        assert!(!ok && stderr.contains(named.to_str().unwrap()) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_featurize_prints_the_rdkit_graph() {
    let (ok, stdout, stderr) = biomedgpt(&["inspect", "featurize", "--smiles", "F/C=C/F"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        r#"{"atoms":[[8,0],[5,0],[5,0],[8,0]],"edge_index":[[0,1,1,2,2,3],[1,0,2,1,3,2]],"edge_attr":[[0,1],[0,1],[1,0],[1,0],[0,1],[0,1]]}"#
    );
    let (ok, stdout, stderr) = biomedgpt(&["inspect", "featurize", "--smiles", "C1CC"]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("invalid SMILES `C1CC`") && stderr.contains("unclosed ring"), "{stderr}");
}

/// `biomedgpt ... | head`: output into a closed pipe ends the process quietly (SIGPIPE, as a C
/// tool), not with a panic and a backtrace.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // A graph of 900 atoms prints ~100 KB, more than a pipe holds: the writes meet the closed end.
    let smiles = "C".repeat(900);
    let mut child = Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .args(["inspect", "featurize", "--smiles", &smiles])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}

/// The README's command table is the binary's top-level `--help`, row for row: a command added,
/// renamed or re-described in clap fails here until the README says the same.
#[test]
fn readme_command_table_equals_help() {
    let (ok, help, _) = biomedgpt(&["--help"]);
    assert!(ok);
    let from_help: Vec<(String, String)> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().split_once(char::is_whitespace).map(|(n, a)| (n.to_string(), a.trim().to_string())))
        .filter(|(n, _)| n != "help")
        .collect();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let from_readme: Vec<(String, String)> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `biomedgpt "))
        .filter_map(|l| l.split_once("` | "))
        .map(|(n, a)| (n.to_string(), a.trim_end_matches(" |").to_string()))
        .collect();
    assert!(from_help.len() >= 12, "{help}");
    assert_eq!(from_readme, from_help, "README.md's command table differs from `biomedgpt --help`");
}

/// A forced instruction set the CPU lacks is a clear error before anything runs; a known and
/// supported one is used, and `inspect isa` names it.
#[test]
fn forced_isa_is_checked() {
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(["inspect", "isa"]).env("BIOMEDGPT_CPU_ISA", "sse9").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of scalar, avx2, avx512, avx512bf16, amx"));
    let out = Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(["inspect", "isa"]).env("BIOMEDGPT_CPU_ISA", "scalar").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CPU kernels: scalar"), "{}", String::from_utf8_lossy(&out.stdout));
}
