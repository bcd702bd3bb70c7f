//! Data-parallel training's arithmetic, checked on one CPU device (Burn 0.22 has collective
//! operations only for CUDA, so the all-reduce itself cannot run here): each replica's shard
//! loss, weighted by `shard_batch`, plus the zero use of every trainable parameter, gives
//! gradients whose mean over the shards (what the mean all-reduce hands every replica) equals
//! the gradient of the whole batch on one device, and the mean of the weighted losses is the
//! batch loss. The fixture batch holds a molecule and a protein question, so with two devices
//! each shard lacks one modality and one adapter. Tolerance: f32 sums in another order, 1e-5 x
//! the tensor's largest gradient (+1e-5 relative).

mod common;

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_train::parallel::{shard_batch, zero_use_of_trainables};
use biomedgpt_train::{batch_loss, freeze};
use burn::tensor::{Device, Gradients};
use common::{assert_close, fixtures, max_abs, read, values};

fn load() -> BioMedGpt {
    let device = Device::flex().autodiff();
    let mut model = BioMedGpt::load(&fixtures().join("biomedgpt/tiny"), FloatType::F32, &device).unwrap();
    freeze(&mut model);
    model
}

/// The adapters' weight and bias gradients, `None` where a tensor got none.
fn adapter_grads(model: &BioMedGpt, grads: &Gradients) -> Vec<Option<Vec<f32>>> {
    let mut out = Vec::new();
    for linear in [model.adapters.proj_mol.as_ref().unwrap(), model.adapters.proj_prot.as_ref().unwrap()] {
        out.push(linear.weight.val().grad(grads).map(values));
        out.push(linear.bias.as_ref().unwrap().val().grad(grads).map(values));
    }
    out
}

#[test]
fn shard_gradients_averaged_as_the_all_reduce_does_equal_the_whole_batch_gradient() {
    let fx = read("expected.json");
    let model = load();
    let batch = common::batch(&model, &fx);

    let whole = batch_loss(&model, &model.adapters, &batch).unwrap();
    let whole_value = whole.clone().into_scalar::<f32>() as f64;
    let want: Vec<Vec<f32>> = adapter_grads(&model, &whole.backward()).into_iter().map(Option::unwrap).collect();

    let ids: Vec<usize> = (0..batch.len()).collect();
    let tokens: Vec<usize> = batch.iter().map(|e| e.answer_tokens()).collect();
    let shards = shard_batch(&ids, &tokens, 2);
    assert_eq!((shards[0].examples.clone(), shards[1].examples.clone()), (vec![0], vec![1]));

    let mut mean_loss = 0.0;
    let mut sums: Vec<Vec<f32>> = want.iter().map(|w| vec![0.0; w.len()]).collect();
    for shard in &shards {
        let examples: Vec<_> = shard.examples.iter().map(|&i| batch[i].clone()).collect();
        let loss = batch_loss(&model, &model.adapters, &examples).unwrap().mul_scalar(shard.weight);
        mean_loss += loss.clone().into_scalar::<f32>() as f64 / shards.len() as f64;

        // Without the zero use, the shard's graph lacks the other modality's adapter: its
        // all-reduce would span one device and not be divided by two.
        let without = adapter_grads(&model, &loss.clone().backward());
        assert_eq!(without.iter().filter(|g| g.is_none()).count(), 2, "one adapter unused by a one-modality shard");

        let loss = batch_loss(&model, &model.adapters, &examples).unwrap().mul_scalar(shard.weight);
        let loss = loss + zero_use_of_trainables(&model.adapters).expect("trainable adapters");
        for (sum, grad) in sums.iter_mut().zip(adapter_grads(&model, &loss.backward())) {
            let grad = grad.expect("every trainable parameter has a gradient on every replica");
            sum.iter_mut().zip(grad).for_each(|(s, g)| *s += g);
        }
    }
    assert!((mean_loss - whole_value).abs() <= 1e-6 * whole_value, "mean of weighted shard losses {mean_loss} vs batch loss {whole_value}");
    for (k, (sum, want)) in sums.iter().zip(&want).enumerate() {
        let mean: Vec<f32> = sum.iter().map(|s| s / shards.len() as f32).collect();
        assert_close(&format!("adapter tensor {k}"), &mean, want, 1e-5 * max_abs(want), 1e-5);
    }
    // A frozen module adds nothing (and is not marked distributed: it takes no part).
    assert!(zero_use_of_trainables(&model.llm).is_none());
}
