//! `Llama::decode_step`, the continuous-batching step: sequences of different lengths, each with
//! its own cache, stepped together give exactly (bit for bit) the logits each gives alone, on
//! float weights (f32, f16) and on GGML blocks kept in place, with multi-head and grouped-query
//! attention. A server's greedy answers then cannot depend on what else is in the batch.

use std::path::{Path, PathBuf};

use biomedgpt_io::FloatType;
use biomedgpt_llama::generation::{argmax, ids_tensor};
use biomedgpt_llama::{DecoderInput, KvCache, Llama, LlamaDir};
use burn::tensor::{DType, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fixtures/gguf/{name}.gguf"))
}

fn rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [b, v] = logits.dims();
    let flat = logits.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap();
    (0..b).map(|r| flat[r * v..(r + 1) * v].to_vec()).collect()
}

/// Prefills `prompt` alone and returns the cache and the first greedy token.
fn prefill(model: &Llama, prompt: &[u32]) -> (KvCache, u32) {
    let mut cache = model.new_cache(1);
    let logits = model.forward_last(DecoderInput::Ids(ids_tensor(prompt, 1, &model.device())), None, &mut cache);
    (cache, argmax(&rows(logits)[0]) as u32)
}

fn check(model: &Llama, what: &str) {
    let vocab = model.config().vocab_size as u32;
    // Up to 20 sequences at once: the decoding kernels run them in groups of 8 over each
    // piece of the weights.
    let prompts: Vec<Vec<u32>> = [7usize, 1, 13, 4, 9, 2, 5, 11, 3, 8, 6, 12, 1, 10, 2, 7, 4, 9, 5, 3, 6, 2, 8, 1]
        .iter()
        .enumerate()
        .map(|(s, &len)| (0..len).map(|i| (s as u32 * 37 + i as u32 * 11 + 3) % vocab).collect())
        .collect();
    let steps = 6;
    // Alone: each sequence decoded with batch-of-one steps.
    let solo: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|p| {
            let (mut cache, mut next) = prefill(model, p);
            (0..steps)
                .map(|_| {
                    let row = rows(model.forward_last(DecoderInput::Ids(ids_tensor(&[next], 1, &model.device())), None, &mut cache)).remove(0);
                    next = argmax(&row) as u32;
                    row
                })
                .collect()
        })
        .collect();
    // Together: sequences join at different steps (as requests arrive) and all step at once.
    let mut live: Vec<(usize, KvCache, u32, usize)> = Vec::new(); // (sequence, cache, next, step)
    let mut joined = 0;
    while joined < prompts.len() || !live.is_empty() {
        for _ in 0..4 {
            if joined < prompts.len() {
                let (cache, next) = prefill(model, &prompts[joined]);
                live.push((joined, cache, next, 0));
                joined += 1;
            }
        }
        let ids: Vec<u32> = live.iter().map(|l| l.2).collect();
        let mut caches: Vec<&mut KvCache> = live.iter_mut().map(|l| &mut l.1).collect();
        let out = rows(model.decode_step(&ids, &mut caches));
        for (l, row) in live.iter_mut().zip(out) {
            let expected = &solo[l.0][l.3];
            let same = row.iter().zip(expected).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what}: sequence {} step {} differs from its solo run", l.0, l.3);
            l.2 = argmax(&row) as u32;
            l.3 += 1;
        }
        live.retain(|l| l.3 < steps);
    }
}

#[test]
fn batched_decoding_equals_each_sequence_alone() {
    let device = Device::flex();
    for name in ["mha_untied_mixed", "gqa_tied_q4_k_m", "gqa_f16"] {
        for (ty, keep_blocks) in [(FloatType::F32, false), (FloatType::F16, false), (FloatType::F16, true)] {
            let model = LlamaDir::open_model_with(fixture(name), ty, keep_blocks, &device).unwrap();
            check(&model, &format!("{name} {ty:?} keep_blocks={keep_blocks}"));
        }
    }
}
