//! Log-likelihood of a continuation given a context, as lm-evaluation-harness scores
//! multiple-choice answers: one forward pass over context + continuation, the log-softmax of
//! the logits at the positions that predict each continuation token.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, s};

use crate::generation::ids_tensor;
use crate::decoder::CausalLm;
use crate::model::DecoderInput;

#[derive(Clone, Debug, PartialEq)]
pub struct ContinuationScore {
    /// Sum of the continuation tokens' log-probabilities.
    pub logprob: f64,
    /// Whether every continuation token is the argmax at its position (lm-eval `is_greedy`).
    pub is_greedy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error("the context is empty: scoring needs at least one token (a BOS) before the continuation")]
    EmptyContext,
    #[error("the continuation is empty")]
    EmptyContinuation,
    #[error("context + continuation is {len} tokens, more than the model's {max} positions")]
    TooLong { len: usize, max: usize },
}

/// Sums the log-probabilities of `tokens` from logits rows `[n, vocab]` where row k predicts
/// token k.
fn score_rows(rows: burn::tensor::Tensor<2>, tokens: &[u32]) -> ContinuationScore {
    let vocab = rows.dims()[1];
    let logp = log_softmax(rows.cast(DType::F32), 1).into_data().try_to_vec::<f32>().expect("f32 log-probabilities");
    let mut total = 0f64;
    let mut is_greedy = true;
    for (k, &token) in tokens.iter().enumerate() {
        let row = &logp[k * vocab..(k + 1) * vocab];
        total += row[token as usize] as f64;
        let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        is_greedy &= best == token as usize;
    }
    ContinuationScore { logprob: total, is_greedy }
}

/// Scores each of `continuations` after one `context`: the context runs once and its KV cache is
/// shared, so k choices cost one context pass plus k short continuation passes.
pub fn choice_logprobs(model: &dyn CausalLm, context: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<ContinuationScore>, ScoringError> {
    if context.is_empty() {
        return Err(ScoringError::EmptyContext);
    }
    let max = model.max_positions();
    for c in continuations {
        if c.is_empty() {
            return Err(ScoringError::EmptyContinuation);
        }
        if context.len() + c.len() > max {
            return Err(ScoringError::TooLong { len: context.len() + c.len(), max });
        }
    }
    let device = model.device();
    let mut context_cache = model.new_cache(1);
    let last = model.forward_last(DecoderInput::Ids(ids_tensor(context, 1, &device)), None, &mut context_cache);
    Ok(continuations
        .iter()
        .map(|continuation| {
            let mut rows = last.clone();
            if continuation.len() > 1 {
                let mut cache = context_cache.clone();
                let ids = ids_tensor(&continuation[..continuation.len() - 1], 1, &device);
                let more = model.forward(DecoderInput::Ids(ids), None, &mut cache).squeeze_dim::<2>(0);
                rows = burn::tensor::Tensor::cat(vec![rows.cast(more.dtype()), more], 0);
            }
            score_rows(rows, continuation)
        })
        .collect())
}

/// Scores `continuation` after `context` (token ids; the context usually starts with BOS).
pub fn continuation_logprob(model: &dyn CausalLm, context: &[u32], continuation: &[u32]) -> Result<ContinuationScore, ScoringError> {
    if context.is_empty() {
        return Err(ScoringError::EmptyContext);
    }
    if continuation.is_empty() {
        return Err(ScoringError::EmptyContinuation);
    }
    let ids: Vec<u32> = context.iter().chain(continuation).copied().collect();
    let max = model.max_positions();
    if ids.len() > max {
        return Err(ScoringError::TooLong { len: ids.len(), max });
    }
    let input = ids_tensor(&ids, 1, &model.device());
    let logits = model.forward(DecoderInput::Ids(input), None, &mut model.new_cache(1));
    let (from, to) = (context.len() - 1, ids.len() - 1);
    let rows = logits.slice(s![0, from..to, ..]).squeeze_dim::<2>(0);
    Ok(score_rows(rows, continuation))
}
