//! A prompt prefilled in chunks (`Llama::prefill`) equals it prefilled whole, bit for bit, for
//! chunks of any length down to one position: the premise of the server's prefix cache, which
//! restores a prompt's first blocks and prefills only the rest. Checked on the GGUF fixtures
//! through every prompt path: quantized blocks (integer panels from AVX2 on, dequantized tiles at
//! the scalar level), f16 and bf16 weights, f32 weights; with a depth that is not a multiple of
//! gemm's block (`gqa_tied_q4_k_m`'s feed-forward of 768), a rest that leaves a one-query
//! attention block (65 rows of `mha_untied_mixed`, one query per key head) and rests of one to
//! eight positions (which `forward_hidden` would take through the decoding kernels). Before the
//! kernels were made row-invariant these differed by up to 1e-5 (f32) and 1e-1 (f16 hidden
//! states); CI runs this file at every instruction-set level.

use std::path::{Path, PathBuf};

use biomedgpt_io::FloatType;
use biomedgpt_llama::prefix_cache::chunk_len;
use biomedgpt_llama::{DecoderInput, Llama, LlamaDir};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
}

fn ids(v: &[u32]) -> DecoderInput {
    DecoderInput::Ids(Tensor::<2, Int>::from_data(TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, v.len()]), &Device::flex()))
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec().unwrap()
}

/// The final hidden states of `prompt` prefilled in chunks of the given lengths.
fn prefill(model: &Llama, prompt: &[u32], chunks: &[usize]) -> Vec<f32> {
    let mut cache = model.new_cache(1);
    let mut out = Vec::new();
    let mut start = 0;
    for &len in chunks {
        out.extend(values(model.prefill(ids(&prompt[start..start + len]), None, &mut cache)));
        start += len;
    }
    assert_eq!(start, prompt.len());
    out
}

fn check(name: &str, ty: FloatType, keep_blocks: bool) {
    let model = LlamaDir::open_model_with(dir().join(format!("{name}.gguf")), ty, keep_blocks, &Device::flex()).unwrap();
    let vocab = model.config().vocab_size as u32;
    let n = 150;
    let prompt: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let whole = prefill(&model, &prompt, &[n]);
    let hidden = whole.len() / n;
    let mut cuts: Vec<Vec<usize>> = [1usize, 2, 9, 16, 17, 40, 64, 85, 100, 141, 142, 145, 149].iter().map(|&s| vec![s, n - s]).collect();
    // Short chunks in the middle: a prompt fed a few positions at a time.
    cuts.push(vec![60, 1, 3, 8, 5, 2, 71]);
    // As the server cuts it: chunks of 32, the last one 22.
    let mut server = Vec::new();
    while server.iter().sum::<usize>() < n {
        server.push(chunk_len(server.iter().sum(), n, 32));
    }
    cuts.push(server);
    for chunks in cuts {
        let chunked = prefill(&model, &prompt, &chunks);
        for (i, (a, b)) in chunked.iter().zip(&whole).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} {ty:?} blocks {keep_blocks}, chunks {chunks:?}: position {} value {} is {a}, whole {b}", i / hidden, i % hidden);
        }
    }
}

/// Several sequences' chunks in one pass (`Llama::prefill_many`, the server's batched prefill)
/// equal each chunk prefilled alone, hidden states and the caches they leave, and the last
/// positions' logits (`last_logits`) equal `prefill_last`'s: a fresh prompt, a prompt's second
/// chunk and a prompt with an embeddings input, side by side.
fn check_many(name: &str, ty: FloatType, keep_blocks: bool) {
    let model = LlamaDir::open_model_with(dir().join(format!("{name}.gguf")), ty, keep_blocks, &Device::flex()).unwrap();
    let vocab = model.config().vocab_size as u32;
    let prompt = |seed: u32, n: usize| -> Vec<u32> { (0..n as u32).map(|i| (i * 7919 + seed * 104729 + 13) % vocab).collect() };
    // b's rest (3 positions) and c (6) are shorter than the decoding kernels' 8 rows.
    let (a, b, c) = (prompt(1, 40), prompt(2, 33), prompt(3, 6));
    // Alone: a whole; b's first 30 then its rest; c as embeddings.
    let mut alone = Vec::new();
    let mut cache_a = model.new_cache(1);
    alone.push(values(model.prefill(ids(&a), None, &mut cache_a)));
    let mut cache_b = model.new_cache(1);
    let _ = model.prefill(ids(&b[..30]), None, &mut cache_b);
    alone.push(values(model.prefill(ids(&b[30..]), None, &mut cache_b)));
    let embeds = |v: &[u32]| match ids(v) {
        DecoderInput::Ids(t) => DecoderInput::Embeds(model.embed(t)),
        e => e,
    };
    let mut cache_c = model.new_cache(1);
    alone.push(values(model.prefill(embeds(&c), None, &mut cache_c)));
    let last = |input: DecoderInput, past: &[u32]| {
        let mut cache = model.new_cache(1);
        if !past.is_empty() {
            let _ = model.prefill(ids(past), None, &mut cache);
        }
        model.prefill_last(input, None, &mut cache).cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
    };
    let alone_logits = [last(ids(&a), &[]), last(ids(&b[30..]), &b[..30]), last(embeds(&c), &[])];

    let mut caches = [model.new_cache(1), model.new_cache(1), model.new_cache(1)];
    let _ = model.prefill(ids(&b[..30]), None, &mut caches[1]);
    let together = {
        let mut refs: Vec<&mut biomedgpt_llama::KvCache> = caches.iter_mut().collect();
        model.prefill_many(vec![ids(&a), ids(&b[30..]), embeds(&c)], &mut refs)
    };
    let lasts: Vec<Tensor<2>> = together.iter().map(|h| {
        let [_, t, w] = h.dims();
        h.clone().narrow(1, t - 1, 1).reshape([1, w])
    }).collect();
    let logits: Vec<f32> = model.last_logits(Tensor::cat(lasts, 0)).cast(DType::F32).into_data().try_to_vec().unwrap();
    let vocab = model.config().vocab_size;
    for (i, h) in together.into_iter().enumerate() {
        let h = values(h);
        assert_eq!(h.len(), alone[i].len());
        assert!(h.iter().zip(&alone[i]).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} {ty:?} blocks {keep_blocks}: sequence {i}'s hidden states");
        let row = &logits[i * vocab..(i + 1) * vocab];
        assert!(row.iter().zip(&alone_logits[i]).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} {ty:?} blocks {keep_blocks}: sequence {i}'s logits");
    }
    // The caches hold what the solo runs' hold: a next chunk computes the same.
    let next = prompt(4, 12);
    for (i, alone_cache) in [&mut cache_a, &mut cache_b, &mut cache_c].into_iter().enumerate() {
        let x = values(model.forward_hidden(ids(&next), None, alone_cache));
        let y = values(model.forward_hidden(ids(&next), None, &mut caches[i]));
        assert!(x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: sequence {i}'s cache");
    }
}

#[test]
fn several_prompts_in_one_pass_equal_each_alone() {
    check_many("gqa_tied_q4_k_m", FloatType::F32, true);
    check_many("mha_untied_mixed", FloatType::F16, false);
    check_many("gqa_tied_q4_k_m", FloatType::BF16, false);
    check_many("mha_untied_mixed", FloatType::F32, false);
}

#[test]
fn quantized_blocks() {
    check("gqa_tied_q4_k_m", FloatType::F32, true);
    check("mha_untied_mixed", FloatType::F32, true);
}

#[test]
fn half_precision_weights() {
    check("gqa_tied_q4_k_m", FloatType::F16, false);
    check("gqa_tied_q4_k_m", FloatType::BF16, false);
    check("mha_untied_mixed", FloatType::F16, false);
}

#[test]
fn f32_weights() {
    check("gqa_tied_q4_k_m", FloatType::F32, false);
    check("mha_untied_mixed", FloatType::F32, false);
}
