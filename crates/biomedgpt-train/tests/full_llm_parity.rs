//! Full fine-tuning of the LLM with the adapters against PyTorch (tests/fixtures/train/
//! full_llm.json): the losses of three AdamW steps, first-step gradients and final values of
//! some LLM tensors (for the vocabulary matrices, the rows of the answer tokens). Tolerances:
//! loss 1e-5 relative; gradients within 1e-5 x the tensor's largest (+1e-4 relative); values
//! after three steps 1e-4 absolute.

mod common;

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_train::{AdapterTrainer, batch_loss};
use burn::tensor::{Device, Gradients, Tensor};
use common::{adamw, assert_close, fixtures, max_abs, read, values};
use serde_json::Value;

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().unwrap() as f32],
    }
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
    // The PyTorch recipe trains the LLM and the adapters; the encoders stay frozen (as the
    // `trainable = "adapters+llm"` session freezes them).
    model.freeze_encoders();
    let batch = common::batch(&model, &fx);

    let loss = batch_loss(&model, &model.adapters, &batch).unwrap();
    let grads = loss.backward();
    for (name, got) in watched(&model, &rows, Some(&grads)) {
        let want = flat(&full["grads"][name]);
        assert_close(&format!("{name} grad"), &got, &want, 1e-5 * max_abs(&want), 1e-4);
    }

    let mut trainer = AdapterTrainer::new(&adamw(&fx));
    for step in 0..3 {
        let loss = trainer.step_with_llm(&mut model, &batch).unwrap();
        let want = full["losses"][step].as_f64().unwrap();
        assert!((loss - want).abs() <= 1e-5 * want, "step {step}: ours {loss}, torch {want}");
    }
    for (name, got) in watched(&model, &rows, None) {
        assert_close(&format!("{name} after 3 steps"), &got, &flat(&full["after"][name]), 1e-4, 0.0);
    }
}
