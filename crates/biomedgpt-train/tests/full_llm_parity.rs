//! Full fine-tuning of the LLM with the adapters against PyTorch (tests/fixtures/train/
//! full_llm.json): the losses of three AdamW steps, first-step gradients and final values of
//! some LLM tensors (for the vocabulary matrices, the rows of the answer tokens). Tolerances:
//! loss 1e-5 relative; gradients within 1e-5 x the tensor's largest (+1e-4 relative); values
//! after three steps 1e-4 absolute.

use std::path::{Path, PathBuf};

use biomedgpt_io::FloatType;
use biomedgpt_model::{BioMedGpt, Input};
use biomedgpt_train::{AdamW, AdapterTrainer, Example, batch_loss, encode_example};
use burn::tensor::{DType, Device, Gradients, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("train").join(name)).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap() as f32],
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: ours {g}, torch {w}");
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The watched tensors in PyTorch's layout and rows, from the model (or from its gradients).
fn watched(model: &BioMedGpt, rows: &[usize], grads: Option<&Gradients>) -> Vec<(&'static str, Vec<f32>)> {
    let get2 = |t: Tensor<2>| -> Tensor<2> {
        match grads {
            Some(g) => t.grad(g).expect("gradient"),
            None => t,
        }
    };
    let get1 = |t: Tensor<1>| -> Tensor<1> {
        match grads {
            Some(g) => t.grad(g).expect("gradient"),
            None => t,
        }
    };
    let llm = &model.llm.model;
    let pick_rows = |m: Vec<f32>, cols: usize| -> Vec<f32> { rows.iter().flat_map(|&r| m[r * cols..(r + 1) * cols].to_vec()).collect() };
    let q = get2(llm.layers[0].self_attn.q_proj.weight.val()).transpose();
    let down = get2(llm.layers[1].mlp.down_proj.weight.val()).transpose();
    let norm = get1(llm.norm.weight.val());
    let head = get2(model.llm.lm_head.as_ref().unwrap().weight.val()).transpose(); // [vocab, hidden]
    let embed = get2(llm.embed_tokens.weight.val());
    let hidden = embed.dims()[1];
    vec![
        ("model.layers.0.self_attn.q_proj.weight", values(q)),
        ("model.layers.1.mlp.down_proj.weight", values(down)),
        ("model.norm.weight", values(norm)),
        ("lm_head.weight", pick_rows(values(head), hidden)),
        ("model.embed_tokens.weight", pick_rows(values(embed), hidden)),
    ]
}

#[test]
fn full_llm_fine_tuning_equals_pytorch() {
    let fx = read("expected.json");
    let full = read("full_llm.json");
    let rows: Vec<usize> = full["rows"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    let examples: Vec<Example> = fx["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let payload = e["payload"].as_str().unwrap().to_string();
            let input = if e["kind"] == "molecule" { Input::Smiles(payload) } else { Input::Protein { name: "protein".into(), sequence: payload } };
            Example { inputs: vec![input], question: e["question"].as_str().unwrap().into(), answer: e["answer"].as_str().unwrap().into() }
        })
        .collect();
    let batch: Vec<_> = examples.iter().map(|e| encode_example(&model, e).unwrap()).collect();

    let loss = batch_loss(&model, &model.adapters, &batch).unwrap();
    let grads = loss.backward();
    for (name, got) in watched(&model, &rows, Some(&grads)) {
        let want = flat(&full["grads"][name]);
        assert_close(&format!("{name} grad"), &got, &want, 1e-5 * max_abs(&want), 1e-4);
    }

    let a = &fx["adamw"];
    let mut trainer = AdapterTrainer::new(&AdamW {
        lr: a["lr"].as_f64().unwrap(),
        beta1: a["beta1"].as_f64().unwrap() as f32,
        beta2: a["beta2"].as_f64().unwrap() as f32,
        eps: a["eps"].as_f64().unwrap() as f32,
        weight_decay: a["weight_decay"].as_f64().unwrap() as f32,
    });
    for step in 0..3 {
        let loss = trainer.step_with_llm(&mut model, &batch).unwrap();
        let want = full["losses"][step].as_f64().unwrap();
        assert!((loss - want).abs() <= 1e-5 * want, "step {step}: ours {loss}, torch {want}");
    }
    for (name, got) in watched(&model, &rows, None) {
        assert_close(&format!("{name} after 3 steps"), &got, &flat(&full["after"][name]), 1e-4, 0.0);
    }
}
