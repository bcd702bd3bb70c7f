//! One alignment step against PyTorch (tests/fixtures/train/make_fixtures.py) on the tiny fused
//! BioMedGPT model: the loss, the adapter gradients, and three AdamW steps (losses and weights).
//!
//! Tolerances: f32 on both sides through the same 2-layer LLM. The loss agrees to 1e-5 relative.
//! A gradient element is a sum over many positions, so its f32 rounding error scales with the
//! largest gradients, not with the element: gradients must agree within 1e-5 x the largest
//! |gradient| of the tensor (measured: 1.1e-6 x) plus 1e-4 relative. After three AdamW steps
//! (lr 1e-2) the weights agree to 1e-4 absolute.

mod common;

use biomedgpt_io::{FloatType, npy};
use biomedgpt_model::BioMedGpt;
use biomedgpt_train::{AdapterTrainer, batch_loss, freeze};
use burn::tensor::Device;
use common::{adamw, assert_close, batch, fixtures, max_abs, read, transposed, values};

fn npy_of(name: &str) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&std::fs::read(fixtures().join("train").join(name)).unwrap()).unwrap()
}

fn load() -> BioMedGpt {
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    freeze(&mut model);
    model
}

#[test]
fn loss_and_adapter_gradients_equal_pytorch() {
    let fx = read("expected.json");
    let model = load();
    let batch = batch(&model, &fx);
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
        let got = values(weight.weight.val().grad(&grads).expect("weight gradient"));
        assert_close(&format!("{name}.weight grad"), &got, &transposed(shape[0], shape[1], &want), 1e-5 * max_abs(&want), 1e-4);
        let (_, want) = npy_of(&format!("grad_{bias}.npy"));
        let got = values(weight.bias.as_ref().unwrap().val().grad(&grads).expect("bias gradient"));
        assert_close(&format!("{bias} grad"), &got, &want, 1e-5 * max_abs(&want), 1e-4);
    }
}

#[test]
fn three_adamw_steps_equal_pytorch() {
    let fx = read("expected.json");
    let mut model = load();
    let batch = batch(&model, &fx);
    let mut trainer = AdapterTrainer::new(&adamw(&fx));
    for step in 0..fx["steps"].as_u64().unwrap() as usize {
        let loss = trainer.step(&mut model, &batch).unwrap();
        let want = fx["losses"][step].as_f64().unwrap();
        assert!((loss - want).abs() <= 1e-5 * want.abs(), "step {step} loss: ours {loss}, torch {want}");
    }
    let mol = model.adapters.proj_mol.as_ref().unwrap();
    let prot = model.adapters.proj_prot.as_ref().unwrap();
    for (name, layer) in [("proj_mol", mol), ("proj_prot", prot)] {
        let (shape, want) = npy_of(&format!("after_{name}.weight.npy"));
        assert_close(&format!("{name}.weight after 3 steps"), &values(layer.weight.val()), &transposed(shape[0], shape[1], &want), 1e-4, 0.0);
        let (_, want) = npy_of(&format!("after_{name}.bias.npy"));
        assert_close(&format!("{name}.bias after 3 steps"), &values(layer.bias.as_ref().unwrap().val()), &want, 1e-4, 0.0);
    }
}
