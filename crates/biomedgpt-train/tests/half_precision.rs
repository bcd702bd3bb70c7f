//! Adapter training with the frozen LLM and ESM held in f16 (`dtype = "f16"`): the adapters
//! stay f32 and so do their gradients and optimizer steps, and the loss and gradients follow the
//! f32 PyTorch reference (tests/fixtures/train) within f16's precision. f16 keeps 11 significant
//! bits (relative rounding 4.9e-4 per operation), and the CPU backend's f16 kernels round their
//! sums too: measured through the 2-layer tiny LLM, the loss is within 1.0e-4 relative and the
//! adapter gradients within 2.7e-2 of the largest (proj_mol; proj_prot 9.3e-3), the losses of
//! the next AdamW steps (lr 1e-2) within 6.9e-4. Tolerances: loss 2e-3 relative, gradients 6e-2
//! of the largest.

mod common;

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_train::{AdapterTrainer, batch_loss, freeze};
use burn::tensor::{DType, Device};
use common::{adamw, fixtures, max_abs, read, transposed, values};

const TOL_LOSS: f64 = 2e-3;
const TOL_GRAD: f32 = 6e-2;

fn load() -> BioMedGpt {
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load_with_adapters_in(&fixtures().join("biomedgpt/tiny"), FloatType::F16, FloatType::F32, &device).unwrap();
    freeze(&mut model);
    model
}

fn npy_of(name: &str) -> (Vec<usize>, Vec<f32>) {
    biomedgpt_io::npy::read_f32(&std::fs::read(fixtures().join("train").join(name)).unwrap()).unwrap()
}

#[test]
fn f16_base_with_f32_adapters_follows_the_f32_reference() {
    let fx = read("expected.json");
    let model = load();
    assert_eq!(model.llm.dtype(), DType::F16);
    let mol = model.adapters.proj_mol.as_ref().unwrap();
    assert_eq!(mol.weight.val().dtype(), DType::F32);
    let batch = common::batch(&model, &fx);

    let loss = batch_loss(&model, &model.adapters, &batch).unwrap();
    let value = loss.clone().into_scalar::<f32>() as f64;
    let want = fx["losses"][0].as_f64().unwrap();
    let loss_error = (value - want).abs() / want;
    let grads = loss.backward();
    let mut worst = 0f32;
    for (name, linear) in [("proj_mol", mol), ("proj_prot", model.adapters.proj_prot.as_ref().unwrap())] {
        let grad = linear.weight.val().grad(&grads).expect("f32 adapters get gradients through the f16 LLM");
        assert_eq!(grad.dtype(), DType::F32);
        let (shape, want) = npy_of(&format!("grad_{name}.weight.npy"));
        let want = transposed(shape[0], shape[1], &want);
        let got = values(grad);
        let scale = max_abs(&want);
        let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / scale).fold(0.0, f32::max);
        eprintln!("{name}: largest gradient {scale:.2e}, worst error {err:.2e} of it");
        worst = worst.max(err);
    }
    eprintln!("f16 base: loss relative error {loss_error:.2e}, worst gradient error {worst:.2e} of the largest");
    assert!(loss_error <= TOL_LOSS, "loss: ours {value}, torch f32 {want}");
    assert!(worst <= TOL_GRAD, "gradients: worst error {worst} of the largest");

    // Three AdamW steps: the losses follow the reference's.
    let mut model = model;
    let mut trainer = AdapterTrainer::new(&adamw(&fx));
    for step in 0..3 {
        let loss = trainer.step(&mut model, &batch).unwrap();
        let want = fx["losses"][step].as_f64().unwrap();
        eprintln!("step {step}: loss relative error {:.2e}", (loss - want).abs() / want);
        assert!((loss - want).abs() <= TOL_LOSS * want, "step {step}: ours {loss}, torch {want}");
    }
    assert_eq!(model.adapters.proj_mol.as_ref().unwrap().weight.val().dtype(), DType::F32);
}
