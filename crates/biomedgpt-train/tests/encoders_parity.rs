//! Training the encoders (GIN and ESM) with the adapters, the LLM frozen, against PyTorch
//! (tests/fixtures/train/encoders.json): the losses of three AdamW steps, first-step gradients
//! and final values of GIN and ESM tensors read under the fused checkpoint's names (so the
//! names that trained encoders are saved under are checked too), and a BatchNorm running mean
//! that must not move. Tolerances as in the other parity tests: loss 1e-5 relative; gradients
//! within 1e-5 x the tensor's largest (+1e-4 relative); values after three steps 1e-4 absolute,
//! except entries whose first gradient is itself below the gradient tolerance (rounding noise,
//! which Adam's normalized update turns into steps of about lr in either direction).

mod common;

use std::collections::BTreeMap;

use biomedgpt_io::FloatType;
use biomedgpt_model::{BioMedGpt, Encoders};
use biomedgpt_train::{AdapterTrainer, batch_loss};
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use common::{adamw, assert_close, fixtures, max_abs, read};
use serde_json::Value;

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap() as f32],
    }
}

/// Replaces every parameter by its gradient (zeros where it has none), so that the gradients
/// read out under the same names and layout as the weights.
struct ToGradients<'a>(&'a GradientsParams);

impl ModuleMapper for ToGradients<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let grad = self.0.get::<D>(param.id).unwrap_or_else(|| param.val().inner().zeros_like());
        Param::initialized(param.id, grad)
    }
}

fn by_name(encoders: &Encoders) -> BTreeMap<String, Vec<f32>> {
    encoders.checkpoint_tensors().into_iter().map(|t| (t.name, t.values)).collect()
}

#[test]
fn encoder_training_equals_pytorch() {
    let fx = read("expected.json");
    let want = read("encoders.json");
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    model.llm = model.llm.clone().no_grad();
    assert!(model.encoders_track_gradients());
    let batch = common::batch(&model, &fx);

    let loss = batch_loss(&model, &model.adapters, &batch).unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &model.encoders());
    let grads = by_name(&model.encoders().map(&mut ToGradients(&grads)));
    for (name, expected) in want["grads"].as_object().unwrap() {
        let expected = flat(expected);
        let got = grads.get(name).unwrap_or_else(|| panic!("no tensor named {name}"));
        assert_close(&format!("{name} grad"), got, &expected, 1e-5 * max_abs(&expected), 1e-4);
    }

    let mut settings = adamw(&fx);
    settings.lr = want["lr"].as_f64().unwrap();
    let mut trainer = AdapterTrainer::new(&settings);
    for step in 0..3 {
        let loss = trainer.step_with_llm(&mut model, &batch).unwrap();
        let expected = want["losses"][step].as_f64().unwrap();
        assert!((loss - expected).abs() <= 1e-5 * expected, "step {step}: ours {loss}, torch {expected}");
    }
    let after = by_name(&model.encoders());
    for (name, expected) in want["after"].as_object().unwrap() {
        let got = after.get(name).unwrap_or_else(|| panic!("no tensor named {name}"));
        let expected = flat(expected);
        // Entries whose first gradient is below the gradient tolerance are rounding noise in
        // both implementations, and Adam's normalized step moves them by about lr either way.
        let first = want["grads"].get(name).map(flat);
        let noise = |i: usize| first.as_ref().is_some_and(|g| g[i] != 0.0 && g[i].abs() < 1e-5 * max_abs(g));
        let (got, expected): (Vec<f32>, Vec<f32>) =
            got.iter().zip(&expected).enumerate().filter(|(i, _)| !noise(*i)).map(|(_, (a, b))| (*a, *b)).unzip();
        assert_close(&format!("{name} after 3 steps"), &got, &expected, 1e-4, 0.0);
    }
}

/// Trained encoders saved under the fused names load back (as `encoder_weights` does) into
/// encoders that compute the same features.
#[test]
fn saved_encoders_load_back() {
    let device = Device::flex();
    let model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let path = scratch.path().join(format!("biomedgpt-encoders-{}.safetensors", std::process::id()));
    model.encoders().save(&path).unwrap();
    let reloaded = model.encoders().replaced_from(&path, FloatType::F32, &device).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(by_name(&reloaded), by_name(&model.encoders()));
    let names: Vec<String> = by_name(&model.encoders()).into_keys().collect();
    assert!(names.contains(&"mol_structure_encoder.gnns.0.mlp.2.weight".to_string()), "{names:?}");
    assert!(names.contains(&"prot_structure_encoder.encoder.layer.0.attention.output.dense.weight".to_string()), "{names:?}");
}
