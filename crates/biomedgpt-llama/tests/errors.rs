//! Bad inputs give errors that name what was expected, never a panic.

use std::path::{Path, PathBuf};

use biomedgpt_io::FloatType;
use biomedgpt_llama::{GenerationConfig, GenerationError, LlamaDir, OpenError, Prompt, Strategy, generate};
use burn::tensor::Device;

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama").join(name)
}

/// A scratch copy of a fixture directory that the test may damage, removed when dropped
/// (issue 39, D21).
struct ScratchCopy(tempfile::TempDir);

impl AsRef<Path> for ScratchCopy {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl std::ops::Deref for ScratchCopy {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

fn scratch_copy(name: &str, tag: &str) -> ScratchCopy {
    let dst = tempfile::Builder::new().prefix(&format!("biomedgpt-test-{tag}-")).tempdir().unwrap();
    for entry in std::fs::read_dir(case_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.path().join(entry.file_name())).unwrap();
    }
    ScratchCopy(dst)
}

fn open_err(dir: &Path) -> String {
    match LlamaDir::open_model(dir, FloatType::F32, &Device::flex()) {
        Ok(_) => panic!("expected {dir:?} to fail"),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = scratch_copy("mha_untied_safetensors", "missing");
    edit_config(&dir, |c| c["num_hidden_layers"] = 3.into());
    let err = open_err(&dir);
    assert!(err.contains("missing tensor `model.layers.2."), "{err}");
}

#[test]
fn wrong_shape_names_key_and_shapes() {
    let dir = scratch_copy("mha_untied_safetensors", "shape");
    edit_config(&dir, |c| c["intermediate_size"] = 128.into());
    let err = open_err(&dir);
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
    assert!(err.contains("[160, 64]") && err.contains("[128, 64]"), "{err}");
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = scratch_copy("mha_untied_safetensors", "trunc-st");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = open_err(&dir);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn truncated_torch_zip_is_reported() {
    let dir = scratch_copy("gqa_tied_linear_bin", "trunc-bin");
    let path = dir.join("pytorch_model.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_err(&dir);
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

#[test]
fn missing_shard_is_named() {
    let dir = scratch_copy("mqa_llama3_sharded_safetensors", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = open_err(&dir);
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn malformed_configs_are_explained() {
    let dir = scratch_copy("mha_untied_safetensors", "config");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    assert!(open_err(&dir).contains("config.json"));
    edit_config_raw(&dir, r#"{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 512}"#);
    let err = open_err(&dir);
    assert!(err.contains("intermediate_size"), "{err}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(matches!(
        LlamaDir::open_model(&dir, FloatType::F32, &Device::flex()),
        Err(OpenError::Config(_))
    ));
}

fn edit_config_raw(dir: &Path, text: &str) {
    std::fs::write(dir.join("config.json"), text).unwrap();
}

#[test]
fn empty_directory_says_what_it_looked_for() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let dir = scratch.path().join(format!("biomedgpt-test-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(case_dir("mha_untied_safetensors").join("config.json"), dir.join("config.json")).unwrap();
    let err = open_err(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn empty_prompt_and_bad_settings_are_errors() {
    let model = LlamaDir::open_model(case_dir("mha_untied_safetensors"), FloatType::F32, &Device::flex()).unwrap();
    let greedy = GenerationConfig {
        max_new_tokens: 4,
        strategy: Strategy::Greedy,
        repetition_penalty: 1.0,
        eos_token_ids: vec![2],
    };
    let err = generate(&model, Prompt::Ids(vec![]), &greedy, &mut |_| {}).unwrap_err();
    assert!(matches!(err, GenerationError::EmptyPrompt));
    let too_long = GenerationConfig {
        max_new_tokens: 10_000,
        ..greedy.clone()
    };
    let err = generate(&model, Prompt::Ids(vec![1, 5]), &too_long, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("context of 512"), "{err}");
    let hot = GenerationConfig {
        strategy: Strategy::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
        ..greedy
    };
    assert!(generate(&model, Prompt::Ids(vec![1, 5]), &hot, &mut |_| {}).is_err());
}

/// The fused BioMedGPT checkpoint keeps the decoder under `llm.`: a prefixed view loads it.
#[test]
fn prefixed_checkpoint_loads_through_a_view() {
    use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
    use biomedgpt_io::{Checkpoint, SourceDType};
    use biomedgpt_llama::{DecoderInput, Llama, LlamaConfig};
    use burn::tensor::{DType, Int, Tensor, TensorData};

    let src = case_dir("mha_untied_safetensors");
    let plain = Checkpoint::open(&src).unwrap();
    let keys: Vec<String> = plain.keys().map(String::from).collect();
    let specs: Vec<TensorSpec> = keys
        .iter()
        .map(|k| TensorSpec { name: format!("llm.{k}"), dtype: SourceDType::F32, shape: plain.info(k).unwrap().shape })
        .collect();
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let fused = scratch.path().join(format!("biomedgpt-prefixed-{}.safetensors", std::process::id()));
    write_streaming(&fused, &specs, &[], |i, buf| {
        let data = plain.load_any_shape(&keys[i], FloatType::F32).unwrap();
        buf.extend_from_slice(data.as_bytes());
        Ok(())
    })
    .unwrap();

    let config = LlamaConfig::from_file(src.join("config.json")).unwrap();
    let device = Device::flex();
    let ckpt = Checkpoint::open(&fused).unwrap();
    assert!(Llama::load(&config, &ckpt.root(), FloatType::F32, &device).is_err(), "keys are prefixed");
    let prefixed = Llama::load(&config, &ckpt.root().pp("llm"), FloatType::F32, &device).unwrap();
    let reference = LlamaDir::open_model(&src, FloatType::F32, &device).unwrap();
    let ids = || DecoderInput::Ids(Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 7, 9], [1, 3]), &device));
    let a = prefixed.forward(ids(), None, &mut prefixed.new_cache(1)).cast(DType::F32).into_data();
    let b = reference.forward(ids(), None, &mut reference.new_cache(1)).cast(DType::F32).into_data();
    assert_eq!(a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
}
