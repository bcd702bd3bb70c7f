//! `biomedgpt train` end to end on the tiny fused model and the shipped sample data: a killed run
//! resumed from its checkpoint gives the same loss curve and weights as an uninterrupted one,
//! training drives the loss down on a fixed batch, checkpoints load in `ask`, and bad settings
//! are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

mod common;
use common::{TestDir, temp_dir};

fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_biomedgpt"));
    c.args(args).current_dir(root());
    c
}

fn biomedgpt(args: &[String]) -> (bool, String, String) {
    let out = command(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train", "--model", "tests/fixtures/biomedgpt/tiny", "--dataset", "pubchemqa=datasets/chebi", "--dataset",
        "uniprotqa=datasets/swissprot", "--limit", "24", "--valid-limit", "6", "--lr", "1e-2", "--warmup-steps", "2",
        "--batch-tokens", "600", "--grad-accum", "2", "--clip-norm", "1.0", "--seed", "5", "--save-every", "3", "--eval-every", "4",
        "--out",
    ]
    .map(String::from)
    .to_vec();
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `args` without `flag` and its value.
fn without(args: Vec<String>, flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a == flag {
            skip = true;
        } else {
            out.push(a);
        }
    }
    out
}

/// The log without wall-clock fields.
fn curve(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_curve_and_weights() {
    let dir = temp_dir("resume");
    let whole = dir.join("whole");
    let (ok, stdout, stderr) = biomedgpt(&train_args(&whole, &["--max-steps", "10"]));
    assert!(ok, "{stderr}");
    assert!(stdout.trim().ends_with("checkpoint-10"), "{stdout}");
    let expected = curve(&whole);
    assert_eq!(expected.iter().filter(|v| v.get("loss").is_some()).count(), 10);
    assert!(expected.iter().any(|v| v.get("valid_loss").is_some()));
    assert!(whole.join("loss.png").is_file());

    // The same run, killed (SIGKILL, no chance to clean up) once its first checkpoint exists.
    let killed = dir.join("killed");
    let mut child = command(&train_args(&killed, &["--max-steps", "10"])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !killed.join("checkpoint-3/trainer_state.json").is_file() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, _, stderr) = biomedgpt(&train_args(&killed, &["--max-steps", "10"]));
    assert!(!ok && stderr.contains("--resume"), "a second run must not overwrite the first: {stderr}");
    let (ok, _, stderr) = biomedgpt(&train_args(&killed, &["--max-steps", "10", "--resume"]));
    assert!(ok, "{stderr}");
    assert_eq!(curve(&killed), expected);
    for file in ["adapters.safetensors", "trainer_state.json"] {
        let a = std::fs::read(whole.join("checkpoint-10").join(file)).unwrap();
        let b = std::fs::read(killed.join("checkpoint-10").join(file)).unwrap();
        if file == "adapters.safetensors" {
            assert_eq!(a, b, "{file}");
        } else {
            let (mut a, mut b): (Value, Value) = (serde_json::from_slice(&a).unwrap(), serde_json::from_slice(&b).unwrap());
            for v in [&mut a, &mut b] {
                v.as_object_mut().unwrap().remove("param_ids");
                v["config"].as_object_mut().unwrap().remove("out");
            }
            assert_eq!(a, b, "{file}");
        }
    }

    // Settings that would change the curve are refused on resume.
    let (ok, _, stderr) = biomedgpt(&train_args(&killed, &["--max-steps", "12", "--resume", "--weight-decay", "0.1"]));
    assert!(!ok && stderr.contains("other settings"), "{stderr}");
}

#[test]
fn training_lowers_the_loss_on_a_fixed_batch_and_the_checkpoint_answers() {
    let dir = temp_dir("overfit");
    let out = dir.join("run");
    let args: Vec<String> = [
        "train", "--model", "tests/fixtures/biomedgpt/tiny", "--dataset", "pubchemqa=datasets/chebi", "--limit", "2",
        "--valid-limit", "2", "--max-steps", "30", "--lr", "3e-2", "--batch-tokens", "10000", "--eval-generate", "2",
        "--eval-max-new-tokens", "4", "--out",
    ]
    .map(String::from)
    .into_iter()
    .chain([out.display().to_string()])
    .collect();
    let (ok, stdout, stderr) = biomedgpt(&args);
    assert!(ok, "{stderr}");
    let losses: Vec<f64> = curve(&out).iter().filter_map(|v| v["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 30);
    // Adapters alone move a random 2-layer LLM only so far: measured 13.77 -> 12.67.
    assert!(losses[29] < losses[0] - 0.5, "{losses:?}");
    assert!(losses[10..].windows(2).all(|w| w[1] <= w[0] + 1e-3), "steadily down on one batch: {losses:?}");

    let last = curve(&out).into_iter().last().unwrap();
    assert_eq!(last["generated"], 2, "text metrics of the generated answers: {last}");
    for key in ["valid_loss", "bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"] {
        assert!(last[key].as_f64().is_some_and(|v| v.is_finite()), "{key}: {last}");
    }

    // The checkpoint is a model directory: the trained adapters change the molecule's logits.
    let checkpoint = stdout.trim().to_string();
    let logits = |model: &str, file: &Path| {
        let (ok, _, stderr) = biomedgpt(
            &["inspect", "logits", "--model", model, "--question", "Describe.", "--smiles", "CCO", "--dtype", "f32", "--out"]
                .map(String::from)
                .into_iter()
                .chain([file.display().to_string()])
                .collect::<Vec<_>>(),
        );
        assert!(ok, "{stderr}");
        std::fs::read(file).unwrap()
    };
    let base = logits("tests/fixtures/biomedgpt/tiny", &dir.join("base.npy"));
    let tuned = logits(&checkpoint, &dir.join("tuned.npy"));
    assert_eq!(base.len(), tuned.len());
    assert_ne!(base, tuned);
}

/// `--dtype f16` holds the frozen LLM and ESM in f16 (half the memory): the run follows the f32
/// run's curve closely (the adapters and their updates stay f32; measured within 2.8e-3 relative
/// over 10 steps at lr 1e-2; tolerance 5e-3) and its checkpoint holds f32 adapters.
#[test]
fn half_precision_base_follows_the_f32_curve() {
    let dir = temp_dir("f16");
    let run = |name: &str, dtype: &str| {
        let out = dir.join(name);
        let (ok, _, stderr) = biomedgpt(&train_args(&out, &["--max-steps", "10", "--dtype", dtype]));
        assert!(ok, "{stderr}");
        curve(&out).iter().filter_map(|v| v["loss"].as_f64()).collect::<Vec<f64>>()
    };
    let (full, half) = (run("f32", "f32"), run("f16", "f16"));
    assert_eq!(full.len(), 10);
    for (step, (a, b)) in full.iter().zip(&half).enumerate() {
        assert!((a - b).abs() <= 5e-3 * a, "step {step}: f32 {a}, f16 base {b}");
    }
    let adapters = std::fs::read(dir.join("f16/checkpoint-10/adapters.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(adapters[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&adapters[8..8 + header_len]);
    assert!(header.contains("F32") && !header.contains("F16"), "{header}");
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let dir = temp_dir("bad");
    for (extra, reason) in [
        (vec!["--max-steps", "2", "--trainable", "everything"], "the BioMedGPT recipe"),
        (vec!["--max-steps", "0"], "max_steps"),
        (vec!["--weight-decay", "0.1"], "max_steps"),
        (vec!["--max-steps", "2", "--dataset", "chebi=datasets/chebi"], "unknown task"),
        // Data-parallel training needs collective operations: Burn 0.22 has them for CUDA only.
        (vec!["--max-steps", "2", "--device", "cpu,cpu"], "CUDA only"),
        (vec!["--max-steps", "2", "--device", "cuda:0,cuda:0"], "listed twice"),
        (vec!["--max-steps", "2", "--dtype", "f16", "--trainable", "adapters+lora"], "adapters\" only"),
        (vec!["--max-steps", "2", "--dtype", "f8"], "one of f32, f16, bf16"),
    ] {
        let (ok, stdout, stderr) = biomedgpt(&train_args(&dir.join("x"), &extra));
        assert!(!ok && stdout.is_empty(), "{extra:?} should fail");
        assert!(stderr.contains(reason), "{extra:?}: {stderr}");
    }
    let config = dir.join("train.toml");
    std::fs::write(&config, "model = \"tests/fixtures/biomedgpt/tiny\"\nmax_steps = 1\nlearning_rate = 0.1\n").unwrap();
    let (ok, _, stderr) = biomedgpt(&["train".into(), "--config".into(), config.display().to_string()]);
    assert!(!ok && stderr.contains("learning_rate"), "unknown keys are named: {stderr}");
}

#[cfg(unix)]
/// Ctrl-C and SIGTERM save a checkpoint at the step they stop and exit with the signal's code
/// (130, 143), also when no checkpoint was due (`--save-every 0`; issue 39, D18/D19).
#[test]
fn ctrl_c_and_sigterm_save_a_checkpoint_and_exit_with_the_signal_code() {
    for (signal, code, name, save_every) in [("-INT", 130, "Ctrl-C", "3"), ("-TERM", 143, "SIGTERM", "0")] {
        let dir = temp_dir(&format!("signal{code}"));
        let out = dir.join("run");
        let args = without(train_args(&out, &["--max-steps", "100000"]), "--save-every");
        let args = [args, vec!["--save-every".into(), save_every.into()]].concat();
        let mut child = command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let started = Instant::now();
        while std::fs::read_to_string(out.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < 2 {
            assert!(child.try_wait().unwrap().is_none(), "the run ended early");
            assert!(started.elapsed() < Duration::from_secs(120), "training did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{name}: {stderr}");
        assert!(stderr.contains(&format!("stopped by {name}")), "{stderr}");
        let last_step = curve(&out).iter().filter_map(|v| v["step"].as_u64()).max().unwrap();
        let checkpoint = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(checkpoint.ends_with(&format!("checkpoint-{last_step}")), "{name}: {checkpoint} vs step {last_step}");
        assert!(Path::new(&checkpoint).join("adapters.safetensors").is_file());
    }
}

/// `--keep-last N` keeps the newest N checkpoints (D17); a second run on the same --out is
/// refused while the first holds it, naming its pid (D16); --out paths that cannot be
/// directories are named in the error (D20). Issue 39.
#[test]
fn checkpoints_are_pruned_and_one_run_owns_its_out_directory() {
    let dir = temp_dir("own");
    let out = dir.join("run");
    let args = without(train_args(&out, &["--max-steps", "5", "--keep-last", "2"]), "--save-every");
    let (ok, _, stderr) = biomedgpt(&[args, vec!["--save-every".into(), "1".into()]].concat());
    assert!(ok, "{stderr}");
    let mut kept: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["checkpoint-4", "checkpoint-5"]);

    let busy = dir.join("busy");
    let mut first = command(&train_args(&busy, &["--max-steps", "100000"])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !busy.join("metrics.jsonl").is_file() {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended early");
        assert!(started.elapsed() < Duration::from_secs(120), "training did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, _, stderr) = biomedgpt(&train_args(&busy, &["--max-steps", "2", "--resume"]));
    assert!(!ok && stderr.contains("in use by another training run") && stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    first.wait().unwrap();

    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (ok, _, stderr) = biomedgpt(&train_args(&file, &["--max-steps", "1"]));
    assert!(!ok && stderr.contains("a-file: a file is there"), "{stderr}");
    let (ok, _, stderr) = biomedgpt(&train_args(&file.join("sub"), &["--max-steps", "1"]));
    assert!(!ok && stderr.contains("a-file/sub"), "{stderr}");
}

/// A loss that is not a number stops the run before the update, with an error naming the step,
/// and writes no checkpoint of NaN weights (issue 39, D12): the feature cache of a finished run,
/// overwritten with NaN, feeds the next one.
#[test]
fn a_nan_loss_stops_the_run_without_a_checkpoint() {
    let dir = temp_dir("nan");
    let cache = dir.join("features");
    let (ok, _, stderr) = biomedgpt(&train_args(&dir.join("first"), &["--max-steps", "1", "--cache-features", cache.to_str().unwrap()]));
    assert!(ok, "{stderr}");
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let (shape, data) = biomedgpt_io::npy::read_f32(&std::fs::read(&path).unwrap()).unwrap();
        biomedgpt_io::npy::write_f32(&path, &shape, &vec![f32::NAN; data.len()]).unwrap();
    }
    let out = dir.join("second");
    let args = without(train_args(&out, &["--max-steps", "3", "--cache-features", cache.to_str().unwrap()]), "--save-every");
    let (ok, _, stderr) = biomedgpt(&[args, vec!["--save-every".into(), "1".into()]].concat());
    assert!(!ok, "a NaN loss must fail the run");
    assert!(stderr.contains("step 1: the loss is NaN") && stderr.contains("no checkpoint had been written"), "{stderr}");
    let checkpoints = std::fs::read_dir(&out).map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("checkpoint")).count());
    assert_eq!(checkpoints.unwrap_or(0), 0);
}

#[test]
fn cached_encoder_features_give_the_same_run() {
    let dir = temp_dir("cache");
    let cache = dir.join("features");
    let plain = dir.join("plain");
    let (ok, _, stderr) = biomedgpt(&train_args(&plain, &["--max-steps", "4"]));
    assert!(ok, "{stderr}");
    for run in ["first", "second"] {
        let out = dir.join(run);
        let (ok, _, stderr) = biomedgpt(&train_args(&out, &["--max-steps", "4", "--cache-features", cache.to_str().unwrap()]));
        assert!(ok, "{stderr}");
        assert_eq!(curve(&out), curve(&plain), "{run} run with the cache");
    }
    let files = std::fs::read_dir(&cache).unwrap().count();
    assert!(files > 0 && files <= 30, "one file per distinct molecule/protein: {files}");
}

#[test]
fn the_example_config_runs_with_flags_overriding_it() {
    let dir = temp_dir("example");
    let out = dir.join("run");
    let args: Vec<String> = [
        "train", "--config", "examples/train-adapters.toml", "--model", "tests/fixtures/biomedgpt/tiny", "--max-steps", "2",
        "--warmup-steps", "1", "--limit", "4", "--valid-limit", "2", "--eval-generate", "0", "--grad-accum", "1", "--cache-features",
    ]
    .map(String::from)
    .into_iter()
    .chain([dir.join("features").display().to_string(), "--out".into(), out.display().to_string()])
    .collect();
    let (ok, stdout, stderr) = biomedgpt(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.trim().ends_with("checkpoint-2"), "{stdout}");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint-2/trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["lr"], 1e-4, "from the file");
    assert_eq!(state["config"]["max_steps"], 2, "from the flag");
    assert_eq!(state["config"]["datasets"].as_array().unwrap().len(), 2);
}

#[test]
fn lora_runs_resume_exactly_and_merge_into_a_standalone_model() {
    let _dir = resume_and_merge("lora", &["--trainable", "adapters+lora", "--lora-rank", "2", "--lora-alpha", "4", "--max-steps", "4"], "lora.safetensors");
}

#[test]
fn full_llm_runs_resume_exactly_and_merge_into_a_standalone_model() {
    let dir = resume_and_merge("full", &["--trainable", "adapters+llm", "--max-steps", "4"], "llm.safetensors");
    // On the same batches, fine-tuning the whole LLM lowers the loss further than the adapters alone.
    let adapters_only = dir.join("adapters-only");
    let (ok, _, stderr) = biomedgpt(&train_args(&adapters_only, &["--max-steps", "4"]));
    assert!(ok, "{stderr}");
    let last = |dir: &Path| curve(dir).iter().filter_map(|v| v["loss"].as_f64()).last().unwrap();
    let (full, adapters) = (last(&dir.join("whole")), last(&adapters_only));
    assert!(full < adapters - 0.3, "full LLM {full} vs adapters only {adapters}");
}

#[test]
fn encoder_runs_resume_exactly_and_merge_into_a_standalone_model() {
    // Everything trains: encoders (GIN and ESM, features computed at every step), LLM, adapters.
    let dir = resume_and_merge("all", &["--trainable", "all", "--max-steps", "4"], "encoders.safetensors");
    let checkpoint = dir.join("whole/checkpoint-4");
    let settings: Value = serde_json::from_str(&std::fs::read_to_string(checkpoint.join("biomedgpt.json")).unwrap()).unwrap();
    assert_eq!(settings["encoder_weights"], "encoders.safetensors");
    assert_eq!(settings["llm_weights"], "llm.safetensors");
}

/// Trains 4 steps with checkpoints every 2; a run resumed from checkpoint-2 gives the same curve
/// and the same `trained` file; `merge-lora` makes a standalone model that answers the same.
fn resume_and_merge(name: &str, lora: &[&str], trained: &str) -> TestDir {
    let dir = temp_dir(name);
    let whole = dir.join("whole");
    let (ok, _, stderr) = biomedgpt(&without(train_args(&whole, &lora), "--save-every").into_iter().chain(["--save-every".into(), "2".into()]).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    let checkpoint = whole.join("checkpoint-4");
    for f in [trained, "adapters.safetensors", "optimizer.bpk"] {
        assert!(checkpoint.join(f).is_file(), "{f}");
    }

    // Resume from checkpoint-2 of the same run, as if it had stopped there.
    let resumed = dir.join("resumed");
    std::fs::create_dir_all(resumed.join("checkpoint-2")).unwrap();
    for entry in std::fs::read_dir(whole.join("checkpoint-2")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), resumed.join("checkpoint-2").join(entry.file_name())).unwrap();
    }
    let early: String = std::fs::read_to_string(whole.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["step"].as_u64().unwrap() <= 2)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(resumed.join("metrics.jsonl"), early).unwrap();
    let mut args = lora.to_vec();
    args.push("--resume");
    let (ok, _, stderr) = biomedgpt(&without(train_args(&resumed, &args), "--save-every").into_iter().chain(["--save-every".into(), "2".into()]).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    assert_eq!(curve(&resumed), curve(&whole));
    for f in [trained, "adapters.safetensors"] {
        assert_eq!(std::fs::read(resumed.join("checkpoint-4").join(f)).unwrap(), std::fs::read(checkpoint.join(f)).unwrap(), "{f}");
    }

    // merge-lora: one directory with the factors and adapters in the weights answers the same.
    let merged = dir.join("merged");
    let to_args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (ok, _, stderr) =
        biomedgpt(&to_args(&["merge-lora", "--model", checkpoint.to_str().unwrap(), "--out", merged.to_str().unwrap(), "--dtype", "f32"]));
    assert!(ok, "{stderr}");
    assert!(!merged.join(trained).exists());
    let ask = |model: &Path| {
        let (ok, stdout, stderr) = biomedgpt(&to_args(&[
            "ask", "--model", model.to_str().unwrap(), "--smiles", "CCO", "--question", "Describe.", "--dtype", "f32", "--max-new-tokens", "8", "--json",
        ]));
        assert!(ok, "{stderr}");
        serde_json::from_str::<Value>(stdout.trim()).unwrap()["token_ids"].clone()
    };
    assert_eq!(ask(&merged), ask(&checkpoint));
    let (ok, _, stderr) = biomedgpt(&to_args(&["merge-lora", "--model", "tests/fixtures/biomedgpt/tiny", "--out", dir.join("x").to_str().unwrap()]));
    assert!(!ok && stderr.contains("nothing") || stderr.contains("no LoRA"), "{stderr}");
    dir
}

#[test]
fn init_makes_a_trainable_model_of_the_architecture() {
    let dir = temp_dir("init");
    let model = dir.join("model");
    let to_args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (ok, _, stderr) = biomedgpt(&to_args(&[
        "init", "--out", model.to_str().unwrap(), "--tokenizer", "tests/fixtures/tokenizer/llama2/tokenizer.json", "--hidden-size", "32",
        "--num-hidden-layers", "1", "--intermediate-size", "64", "--esm-hidden-size", "16", "--esm-num-hidden-layers", "1",
        "--gin-num-layer", "2", "--gin-emb-dim", "16",
    ]));
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = biomedgpt(&to_args(&["init", "--out", model.to_str().unwrap(), "--tokenizer", "tests/fixtures/tokenizer/llama2/tokenizer.json"]));
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    let ask = |m: &str| {
        let (ok, stdout, stderr) = biomedgpt(&to_args(&[
            "ask", "--model", m, "--smiles", "CCO", "--protein", "MKTAYIAK", "--question", "Describe.", "--max-new-tokens", "4", "--json",
        ]));
        assert!(ok, "{stderr}");
        assert!(stderr.contains("untrained"), "the notice: {stderr}");
        serde_json::from_str::<Value>(stdout.trim()).unwrap()
    };
    let before = ask(model.to_str().unwrap());
    assert_eq!(before["prompt_tokens"].as_u64().unwrap() > 10, true);
    let out = dir.join("run");
    let (ok, stdout, stderr) = biomedgpt(&to_args(&[
        "train", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dataset", "pubchemqa=datasets/chebi",
        "--dataset", "uniprotqa=datasets/swissprot", "--limit", "8", "--valid-limit", "2", "--trainable", "adapters+llm", "--max-steps", "2",
        "--lr", "1e-2",
    ]));
    assert!(ok, "{stderr}");
    let after = ask(stdout.trim());
    assert_eq!(after["prompt_tokens"], before["prompt_tokens"]);
}
