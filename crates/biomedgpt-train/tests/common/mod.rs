//! Helpers shared by the parity tests against tests/fixtures/train (made by make_fixtures.py).
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

use biomedgpt_model::{BioMedGpt, Input};
use biomedgpt_train::{AdamW, EncodedExample, Example, encode_example};
use burn::tensor::{DType, Tensor};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A JSON file of tests/fixtures/train.
pub fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("train").join(name)).unwrap()).unwrap()
}

/// The fixture's two examples (a molecule and a protein question), encoded by `model`.
pub fn batch(model: &BioMedGpt, fx: &Value) -> Vec<EncodedExample> {
    fx["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let payload = e["payload"].as_str().unwrap().to_string();
            let input = match e["kind"].as_str().unwrap() {
                "molecule" => Input::Smiles(payload),
                _ => Input::Protein { name: "protein".into(), sequence: payload },
            };
            let example = Example { inputs: vec![input], question: e["question"].as_str().unwrap().into(), answer: e["answer"].as_str().unwrap().into() };
            encode_example(model, &example).unwrap()
        })
        .collect()
}

/// The AdamW settings the fixture used.
pub fn adamw(fx: &Value) -> AdamW {
    let a = &fx["adamw"];
    AdamW {
        lr: a["lr"].as_f64().unwrap(),
        beta1: a["beta1"].as_f64().unwrap() as f32,
        beta2: a["beta2"].as_f64().unwrap() as f32,
        eps: a["eps"].as_f64().unwrap() as f32,
        weight_decay: a["weight_decay"].as_f64().unwrap() as f32,
    }
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// A row-major [rows, cols] matrix read as [cols, rows] (PyTorch Linear layout -> ours).
pub fn transposed(rows: usize, cols: usize, data: &[f32]) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| data[r * cols + c])).collect()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: ours {g}, torch {w}");
    }
}

pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}
