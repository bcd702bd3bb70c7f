//! One alignment step against PyTorch (tests/fixtures/train/make_fixtures.py) on the tiny fused
//! BioMedGPT model: the loss, the adapter gradients, and three AdamW steps (losses and weights).
//!
//! Tolerances: f32 on both sides through the same 2-layer LLM. The loss agrees to 1e-5 relative.
//! A gradient element is a sum over many positions, so its f32 rounding error scales with the
//! largest gradients, not with the element: gradients must agree within 1e-5 x the largest
//! |gradient| of the tensor (measured: 1.1e-6 x) plus 1e-4 relative. After three AdamW steps
//! (lr 1e-2) the weights agree to 1e-4 absolute.

use std::path::{Path, PathBuf};

use biomedgpt_io::{FloatType, npy};
use biomedgpt_model::{BioMedGpt, Input};
use biomedgpt_train::{AdamW, AdapterTrainer, Example, batch_loss, encode_example, freeze};
use burn::module::Param;
use burn::tensor::{DType, Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("train/expected.json")).unwrap()).unwrap()
}

fn npy_of(name: &str) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&std::fs::read(fixtures().join("train").join(name)).unwrap()).unwrap()
}

fn examples(fx: &Value) -> Vec<Example> {
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
            Example { inputs: vec![input], question: e["question"].as_str().unwrap().into(), answer: e["answer"].as_str().unwrap().into() }
        })
        .collect()
}

fn load() -> BioMedGpt {
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    freeze(&mut model);
    model
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

fn values1(t: Tensor<1>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// PyTorch stores Linear weights [out, in]; ours are [in, out].
fn transposed(shape: &[usize], data: &[f32]) -> Vec<f32> {
    let (out, inp) = (shape[0], shape[1]);
    (0..inp).flat_map(|i| (0..out).map(move |o| data[o * inp + i])).collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: ours {g}, torch {w}");
    }
}

fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn weight_param(p: &Param<Tensor<2>>) -> Tensor<2> {
    p.val()
}

#[test]
fn loss_and_adapter_gradients_equal_pytorch() {
    let fx = expected();
    let model = load();
    let batch: Vec<_> = examples(&fx).iter().map(|e| encode_example(&model, e).unwrap()).collect();
    for (k, e) in batch.iter().enumerate() {
        assert_eq!(e.prompt, fx["prompts"][k].as_str().unwrap());
        let ids: Vec<u32> = fx["answer_ids"][k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(e.answer_ids, ids);
    }
    let loss = batch_loss(&model, &model.adapters, &batch).unwrap();
    let value = loss.clone().into_scalar::<f32>() as f64;
    let want = fx["losses"][0].as_f64().unwrap();
    assert!((value - want).abs() <= 1e-5 * want.abs(), "loss: ours {value}, torch {want}");

    let grads = loss.backward();
    let mol = model.adapters.proj_mol.as_ref().unwrap();
    let prot = model.adapters.proj_prot.as_ref().unwrap();
    for (name, weight, bias) in [("proj_mol", mol, "proj_mol.bias"), ("proj_prot", prot, "proj_prot.bias")] {
        let (shape, want) = npy_of(&format!("grad_{name}.weight.npy"));
        let got = values(weight_param(&weight.weight).grad(&grads).expect("weight gradient"));
        assert_close(&format!("{name}.weight grad"), &got, &transposed(&shape, &want), 1e-5 * max_abs(&want), 1e-4);
        let (_, want) = npy_of(&format!("grad_{bias}.npy"));
        let got = values1(weight.bias.as_ref().unwrap().val().grad(&grads).expect("bias gradient"));
        assert_close(&format!("{bias} grad"), &got, &want, 1e-5 * max_abs(&want), 1e-4);
    }
}

#[test]
fn three_adamw_steps_equal_pytorch() {
    let fx = expected();
    let mut model = load();
    let batch: Vec<_> = examples(&fx).iter().map(|e| encode_example(&model, e).unwrap()).collect();
    let a = &fx["adamw"];
    let settings = AdamW {
        lr: a["lr"].as_f64().unwrap(),
        beta1: a["beta1"].as_f64().unwrap() as f32,
        beta2: a["beta2"].as_f64().unwrap() as f32,
        eps: a["eps"].as_f64().unwrap() as f32,
        weight_decay: a["weight_decay"].as_f64().unwrap() as f32,
    };
    let mut trainer = AdapterTrainer::new(&settings);
    for step in 0..fx["steps"].as_u64().unwrap() as usize {
        let loss = trainer.step(&mut model, &batch).unwrap();
        let want = fx["losses"][step].as_f64().unwrap();
        assert!((loss - want).abs() <= 1e-5 * want.abs(), "step {step} loss: ours {loss}, torch {want}");
    }
    let mol = model.adapters.proj_mol.as_ref().unwrap();
    let prot = model.adapters.proj_prot.as_ref().unwrap();
    for (name, layer) in [("proj_mol", mol), ("proj_prot", prot)] {
        let (shape, want) = npy_of(&format!("after_{name}.weight.npy"));
        assert_close(&format!("{name}.weight after 3 steps"), &values(layer.weight.val()), &transposed(&shape, &want), 1e-4, 0.0);
        let (_, want) = npy_of(&format!("after_{name}.bias.npy"));
        assert_close(&format!("{name}.bias after 3 steps"), &values1(layer.bias.as_ref().unwrap().val()), &want, 1e-4, 0.0);
    }
}
