//! Decoding strategies with Hugging Face `generate` semantics: greedy, sampling (temperature,
//! top-k, top-p), repetition penalty, and the vectorised beam search of transformers >= 4.50
//! (length penalty, `early_stopping` true/false/"never", several EOS ids).
//!
//! Scores are handled on the host in f32, one row of `vocab` values per hypothesis per step, in
//! the same order of floating-point operations as transformers, so token choices match.

use burn::tensor::{DType, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::cache::KvCache;
use crate::decoder::CausalLm;
use crate::model::DecoderInput;
use crate::prefix_cache::{self, PrefixCache, PromptKeys};

/// `early_stopping` of HF's generation config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop a beam search once `num_beams` hypotheses are finished.
    True,
    /// HF's default heuristic: stop when no running beam can beat the worst finished one at the
    /// current length.
    #[default]
    False,
    /// Canonical beam search: stop only when no better hypothesis is possible at all.
    Never,
}

impl std::str::FromStr for EarlyStopping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" => Ok(EarlyStopping::True),
            "false" => Ok(EarlyStopping::False),
            "never" => Ok(EarlyStopping::Never),
            _ => Err(format!("early stopping must be true, false or never, not `{s}`")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Greedy,
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
    },
    Beam {
        num_beams: usize,
        length_penalty: f32,
        early_stopping: EarlyStopping,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub strategy: Strategy,
    /// 1.0 disables it.
    pub repetition_penalty: f32,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("the prompt is empty: at least one token or embedding is needed")]
    EmptyPrompt,
    #[error("invalid generation setting: {0}")]
    Invalid(String),
    #[error("prompt of {prompt} tokens plus {new} new tokens exceeds the model's context of {max}")]
    TooLong { prompt: usize, new: usize, max: usize },
}

/// The most beams a beam search may keep.
pub const MAX_BEAMS: usize = 64;

impl GenerationConfig {
    pub fn validate(&self) -> Result<(), GenerationError> {
        let bad = |m: &str| Err(GenerationError::Invalid(m.to_string()));
        if !(self.repetition_penalty > 0.0) {
            return bad("repetition penalty must be positive");
        }
        match &self.strategy {
            Strategy::Greedy => Ok(()),
            Strategy::Sample {
                temperature, top_p, top_k, ..
            } => {
                if !(*temperature > 0.0) {
                    return bad("temperature must be positive (use greedy decoding for temperature 0)");
                }
                if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
                    return bad("top-p must be in (0, 1]");
                }
                if *top_k == Some(0) {
                    return bad("top-k must be at least 1");
                }
                Ok(())
            }
            Strategy::Beam { num_beams, .. } if *num_beams == 0 => bad("num_beams must be at least 1"),
            // Each beam holds a cache and a row of scores per step; past this, a typo (100000)
            // would allocate gigabytes before the first token.
            Strategy::Beam { num_beams, .. } if *num_beams > MAX_BEAMS => Err(GenerationError::Invalid(format!("num_beams must be at most {MAX_BEAMS}, not {num_beams}"))),
            Strategy::Beam { length_penalty, .. } if !length_penalty.is_finite() => Err(GenerationError::Invalid(format!("length penalty must be a finite number, not {length_penalty}"))),
            Strategy::Beam { .. } => Ok(()),
        }
    }
}

/// A prompt: token ids, or input embeddings `[1, T, hidden]` with the ids the repetition
/// penalty should see as the prompt (HF passes only the `input_ids` it was given).
pub enum Prompt {
    Ids(Vec<u32>),
    Embeds { embeds: Tensor<3>, penalty_ids: Vec<u32> },
}

impl Prompt {
    fn len(&self) -> usize {
        match self {
            Prompt::Ids(ids) => ids.len(),
            Prompt::Embeds { embeds, .. } => embeds.dims()[1],
        }
    }
    fn history(&self) -> &[u32] {
        match self {
            Prompt::Ids(ids) => ids,
            Prompt::Embeds { penalty_ids, .. } => penalty_ids,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// Generated ids only (the EOS that ended generation included).
    pub tokens: Vec<u32>,
    /// True when an EOS id ended generation, false when `max_new_tokens` did.
    pub stopped_by_eos: bool,
}

/// HF `RepetitionPenaltyLogitsProcessor`: every id already present is divided by the penalty when
/// its score is positive and multiplied when negative (once per distinct id).
pub fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = vec![false; scores.len()];
    for &id in history {
        let i = id as usize;
        if i < scores.len() && !seen[i] {
            seen[i] = true;
            let s = scores[i];
            scores[i] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// `torch.log_softmax` over one row, in f32.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = *x - max - log_sum;
    }
}

/// Index of the largest score, the first one on ties (as `torch.argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Temperature, then top-k, then top-p, as HF's warpers; returns the sampling distribution.
fn sampling_probs(scores: &mut [f32], temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Vec<f32> {
    if temperature != 1.0 {
        scores.iter_mut().for_each(|s| *s /= temperature);
    }
    if let Some(k) = top_k {
        let k = k.min(scores.len());
        let mut sorted: Vec<f32> = scores.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        scores.iter_mut().filter(|s| **s < kth).for_each(|s| *s = f32::NEG_INFINITY);
    }
    if let Some(p) = top_p.filter(|&p| p < 1.0) {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b])); // ascending, like HF
        let probs = softmax(&order.iter().map(|&i| scores[i]).collect::<Vec<_>>());
        let mut cumulative = 0.0f32;
        let last = order.len() - 1;
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[rank];
            if cumulative <= 1.0 - p && rank != last {
                scores[i] = f32::NEG_INFINITY;
            }
        }
    }
    softmax(scores)
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn to_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [rows, vocab] = logits.dims();
    let data = logits.cast(DType::F32).into_data();
    let flat: Vec<f32> = data.try_to_vec::<f32>().expect("logits were cast to f32");
    (0..rows).map(|r| flat[r * vocab..(r + 1) * vocab].to_vec()).collect()
}

/// Token ids as a `[rows, ids.len() / rows]` tensor (row-major).
pub fn ids_tensor(ids: &[u32], rows: usize, device: &burn::tensor::Device) -> Tensor<2, Int> {
    let cols = ids.len() / rows;
    Tensor::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [rows, cols]),
        device,
    )
}

/// Generates a continuation of one prompt. `on_token` sees each token as it is chosen (for
/// greedy and sampling); beam search reports its final hypothesis at the end.
pub fn generate(
    model: &dyn CausalLm,
    prompt: Prompt,
    config: &GenerationConfig,
    on_token: &mut dyn FnMut(u32),
) -> Result<GenerationOutput, GenerationError> {
    generate_until(model, prompt, config, on_token, &|| false)
}

/// [`generate`], asking `stop` before every step: when it says yes (the client that wanted the
/// answer has gone, issue 39, D6), the tokens so far are returned, with `stopped_by_eos` false.
pub fn generate_until(
    model: &dyn CausalLm,
    prompt: Prompt,
    config: &GenerationConfig,
    on_token: &mut dyn FnMut(u32),
    stop: &dyn Fn() -> bool,
) -> Result<GenerationOutput, GenerationError> {
    generate_cached(model, prompt, config, on_token, stop, None)
}

/// [`generate_until`], restoring the prompt's first blocks from `prefix` when it holds them
/// and keeping the prompt's blocks there (a chat's earlier turns are not prefilled again): the
/// output is the same as without it, bit for bit (see [`crate::prefix_cache`]).
pub fn generate_cached(
    model: &dyn CausalLm,
    prompt: Prompt,
    config: &GenerationConfig,
    on_token: &mut dyn FnMut(u32),
    stop: &dyn Fn() -> bool,
    prefix: Option<&mut PrefixCache>,
) -> Result<GenerationOutput, GenerationError> {
    config.validate()?;
    if prompt.len() == 0 {
        return Err(GenerationError::EmptyPrompt);
    }
    let max = model.max_positions();
    if prompt.len().saturating_add(config.max_new_tokens) > max {
        return Err(GenerationError::TooLong {
            prompt: prompt.len(),
            new: config.max_new_tokens,
            max,
        });
    }
    if config.max_new_tokens == 0 {
        return Ok(GenerationOutput {
            tokens: vec![],
            stopped_by_eos: false,
        });
    }
    match config.strategy.clone() {
        Strategy::Beam {
            num_beams,
            length_penalty,
            early_stopping,
        } => Ok(beam_search(model, prompt, config, num_beams, length_penalty, early_stopping, on_token, stop, prefix)),
        strategy => Ok(sample_loop(model, prompt, config, TokenChooser::new(&strategy, config.repetition_penalty), on_token, stop, prefix)),
    }
}

/// The prompt's keys and values in a one-sequence cache and its last position's logits; what
/// `prefix` holds of the prompt is restored, and the prompt's blocks are kept there.
fn prefill(model: &dyn CausalLm, prompt: Prompt, prefix: Option<&mut PrefixCache>) -> (KvCache, Vec<f32>, Vec<u32>) {
    let device = model.device();
    let history = prompt.history().to_vec();
    let len = prompt.len();
    let mut prefix = prefix.filter(|p| p.enabled());
    let keys = match (&prefix, &prompt) {
        (Some(p), Prompt::Ids(ids)) => prefix_cache::ids_keys(ids, p.block()),
        (Some(p), Prompt::Embeds { embeds, .. }) => prefix_cache::embeds_keys(embeds, p.block()),
        (None, _) => PromptKeys::default(),
    };
    let (mut cache, start) = match prefix.as_deref_mut() {
        Some(p) => match p.lookup(&keys, len) {
            hit if hit.positions(p.block()) == 0 => (model.new_cache(1), 0),
            hit => (p.restore(&keys, &hit, KvCache::room_for(len, usize::MAX), &device), hit.positions(p.block())),
        },
        None => (model.new_cache(1), 0),
    };
    let input = match prompt {
        Prompt::Ids(ids) => DecoderInput::Ids(ids_tensor(&ids[start..], 1, &device)),
        Prompt::Embeds { embeds, .. } if start > 0 => DecoderInput::Embeds(embeds.narrow(1, start, len - start)),
        Prompt::Embeds { embeds, .. } => DecoderInput::Embeds(embeds),
    };
    let logits = model.prefill_last(input, None, &mut cache);
    if let Some(p) = prefix {
        p.store(&keys, &cache);
    }
    (cache, to_rows(logits).remove(0), history)
}

type Sampler = (StdRng, f32, Option<usize>, Option<f32>);

/// Chooses the next tokens of one sequence as [`generate`] does for greedy decoding and
/// sampling: the repetition penalty, then the argmax, or temperature, top-k and top-p and a draw
/// from the sequence's own generator (seeded once, so a seed gives the same tokens whether the
/// sequence runs alone or beside others, as a server batches it).
#[derive(Clone)]
pub struct TokenChooser {
    sampler: Option<Sampler>,
    repetition_penalty: f32,
}

impl TokenChooser {
    /// For [`Strategy::Greedy`] and [`Strategy::Sample`]; beam search keeps several hypotheses
    /// per sequence and is not a per-token choice (it is treated as greedy here).
    pub fn new(strategy: &Strategy, repetition_penalty: f32) -> Self {
        let sampler = match *strategy {
            Strategy::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => Some((StdRng::seed_from_u64(seed), temperature, top_k, top_p)),
            Strategy::Greedy | Strategy::Beam { .. } => None,
        };
        TokenChooser { sampler, repetition_penalty }
    }

    /// The next token for the logits `scores` (changed in place) after `history` (the ids the
    /// repetition penalty sees).
    pub fn choose(&mut self, scores: &mut [f32], history: &[u32]) -> u32 {
        apply_repetition_penalty(scores, history, self.repetition_penalty);
        self.choose_penalized(scores)
    }

    /// [`Self::choose`] for scores the caller has already penalized.
    pub fn choose_penalized(&mut self, scores: &mut [f32]) -> u32 {
        (match &mut self.sampler {
            None => argmax(scores),
            Some((rng, temperature, top_k, top_p)) => {
                let probs = sampling_probs(scores, *temperature, *top_k, *top_p);
                let u: f32 = rng.random();
                let mut acc = 0.0;
                let mut pick = probs.len() - 1;
                for (i, p) in probs.iter().enumerate() {
                    acc += p;
                    if u < acc {
                        pick = i;
                        break;
                    }
                }
                pick
            }
        }) as u32
    }
}

fn sample_loop(
    model: &dyn CausalLm,
    prompt: Prompt,
    config: &GenerationConfig,
    mut chooser: TokenChooser,
    on_token: &mut dyn FnMut(u32),
    stop: &dyn Fn() -> bool,
    prefix: Option<&mut PrefixCache>,
) -> GenerationOutput {
    let device = model.device();
    let (mut cache, mut scores, mut history) = prefill(model, prompt, prefix);
    let mut tokens = Vec::new();
    loop {
        let next = chooser.choose(&mut scores, &history);
        tokens.push(next);
        history.push(next);
        on_token(next);
        if config.eos_token_ids.contains(&next) {
            return GenerationOutput {
                tokens,
                stopped_by_eos: true,
            };
        }
        if tokens.len() >= config.max_new_tokens || stop() {
            return GenerationOutput {
                tokens,
                stopped_by_eos: false,
            };
        }
        let logits = model.forward_last(DecoderInput::Ids(ids_tensor(&[next], 1, &device)), None, &mut cache);
        scores = to_rows(logits).remove(0);
    }
}

/// Indices of the `k` largest values, largest first; ties keep the lower index first.
fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(idx.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

#[derive(Clone)]
struct Hypothesis {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// transformers' `_beam_search` for one prompt (batch of `num_beams` hypotheses).
#[allow(clippy::too_many_arguments)]
fn beam_search(
    model: &dyn CausalLm,
    prompt: Prompt,
    config: &GenerationConfig,
    num_beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
    on_token: &mut dyn FnMut(u32),
    stop: &dyn Fn() -> bool,
    prefix: Option<&mut PrefixCache>,
) -> GenerationOutput {
    const NEG: f32 = -1.0e9;
    let device = model.device();
    let prompt_len = prompt.history().len();
    let max_length = prompt_len + config.max_new_tokens;
    let mut cur_len = prompt_len;
    let n_eos = config.eos_token_ids.len();
    let beams_to_keep = (1 + n_eos).max(2) * num_beams;
    let lp = |len: usize| (len as f64).powf(length_penalty as f64) as f32;

    let (mut cache, first, history) = prefill(model, prompt, prefix);
    cache.reorder(&vec![0; num_beams]);
    let mut rows: Vec<Vec<f32>> = vec![first; num_beams];
    let vocab = rows[0].len();

    let mut running: Vec<Vec<u32>> = vec![Vec::new(); num_beams];
    let mut running_scores: Vec<f32> = (0..num_beams).map(|i| if i == 0 { 0.0 } else { NEG }).collect();
    let mut finished: Vec<Hypothesis> = vec![
        Hypothesis {
            tokens: Vec::new(),
            score: NEG,
            finished: false
        };
        num_beams
    ];
    let mut heuristic_unsatisfied = true;

    loop {
        if stop() {
            break;
        }
        // Accumulated log-probabilities of every (beam, token) continuation.
        let mut acc = Vec::with_capacity(num_beams * vocab);
        for (beam, row) in rows.iter_mut().enumerate() {
            log_softmax(row);
            let seen: Vec<u32> = history.iter().chain(&running[beam]).copied().collect();
            apply_repetition_penalty(row, &seen, config.repetition_penalty);
            acc.extend(row.iter().map(|&x| x + running_scores[beam]));
        }
        let top = top_k_indices(&acc, beams_to_keep);
        let cand_scores: Vec<f32> = top.iter().map(|&i| acc[i]).collect();
        let cand_beam: Vec<usize> = top.iter().map(|&i| i / vocab).collect();
        let cand_token: Vec<u32> = top.iter().map(|&i| (i % vocab) as u32).collect();
        let hits: Vec<bool> = cand_token
            .iter()
            .map(|t| cur_len + 1 >= max_length || config.eos_token_ids.contains(t))
            .collect();
        let cand_seq = |i: usize| {
            let mut s = running[cand_beam[i]].clone();
            s.push(cand_token[i]);
            s
        };

        // Beams that go on: the best non-finished candidates.
        let running_pick: Vec<f32> = cand_scores
            .iter()
            .zip(&hits)
            .map(|(&s, &h)| s + (h as u8 as f32) * NEG)
            .collect();
        let next = top_k_indices(&running_pick, num_beams);
        let new_running: Vec<Vec<u32>> = next.iter().map(|&i| cand_seq(i)).collect();
        let new_scores: Vec<f32> = next.iter().map(|&i| running_pick[i]).collect();
        let origins: Vec<usize> = next.iter().map(|&i| cand_beam[i]).collect();

        // Finished hypotheses: merge the previous ones with candidates that just finished.
        let all_finished = finished.iter().all(|h| h.finished);
        let mut merged = finished.clone();
        for i in 0..beams_to_keep {
            let just_finished = hits[i] && i < num_beams;
            let mut s = cand_scores[i] / lp(cur_len + 1 - prompt_len);
            s += ((all_finished && early_stopping == EarlyStopping::True) as u8 as f32) * NEG;
            s += (!heuristic_unsatisfied as u8 as f32) * NEG;
            s += (!just_finished as u8 as f32) * NEG;
            merged.push(Hypothesis {
                tokens: cand_seq(i),
                score: s,
                finished: just_finished,
            });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
        finished = top_k_indices(&merged_scores, num_beams)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();

        running = new_running;
        running_scores = new_scores;
        cur_len += 1;

        let best_len = if early_stopping == EarlyStopping::Never && length_penalty > 0.0 {
            max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible = running_scores[0] / lp(best_len);
        let min_finished = finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
        let improvable = finished
            .iter()
            .any(|h| best_possible > if h.finished { min_finished } else { NEG });
        heuristic_unsatisfied &= improvable;

        let exists_open_beam = !(finished.iter().all(|h| h.finished) && early_stopping == EarlyStopping::True);
        let valid_continuations = !hits.iter().all(|&h| h);
        if !(heuristic_unsatisfied && exists_open_beam && valid_continuations) {
            break;
        }

        cache.reorder(&origins);
        let last: Vec<u32> = running.iter().map(|s| *s.last().unwrap()).collect();
        let logits = model.forward_last(DecoderInput::Ids(ids_tensor(&last, num_beams, &device)), None, &mut cache);
        rows = to_rows(logits);
    }

    let best = finished.swap_remove(0);
    let stopped_by_eos = best.tokens.last().is_some_and(|t| config.eos_token_ids.contains(t));
    for &t in &best.tokens {
        on_token(t);
    }
    GenerationOutput {
        tokens: best.tokens,
        stopped_by_eos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defects D5 and D10 (issue 26): `--num-beams 100000` aborted allocating 3.3 GB and a NaN
    /// length penalty was accepted; both are refused by name before any work.
    #[test]
    fn beam_settings_are_bounded() {
        let config = |num_beams, length_penalty| GenerationConfig {
            max_new_tokens: 5,
            strategy: Strategy::Beam { num_beams, length_penalty, early_stopping: EarlyStopping::False },
            repetition_penalty: 1.0,
            eos_token_ids: vec![2],
        };
        assert!(config(64, 1.0).validate().is_ok());
        let e = config(100_000, 1.0).validate().unwrap_err().to_string();
        assert!(e.contains("at most 64") && e.contains("100000"), "{e}");
        for lp in [f32::NAN, f32::INFINITY] {
            let e = config(4, lp).validate().unwrap_err().to_string();
            assert!(e.contains("length penalty must be a finite number"), "{e}");
        }
    }

    #[test]
    fn repetition_penalty_hf_semantics() {
        let mut s = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut s, &[0, 1, 1], 2.0);
        assert_eq!(s, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_orders_ties_by_index() {
        assert_eq!(top_k_indices(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities ~ [0.09, 0.24, 0.67]: top-p 0.6 keeps only the largest.
        let mut s = vec![0.0, 1.0, 2.0];
        let p = sampling_probs(&mut s, 1.0, None, Some(0.6));
        assert_eq!(p[0], 0.0);
        assert_eq!(p[1], 0.0);
        assert!((p[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut s = vec![1.0, 2.0, 2.0, 0.5];
        let p = sampling_probs(&mut s, 1.0, Some(1), None);
        assert!(p[1] > 0.0 && p[2] > 0.0 && p[0] == 0.0);
    }
}
