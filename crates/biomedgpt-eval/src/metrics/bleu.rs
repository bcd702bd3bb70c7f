//! BLEU as nltk 3.10's `corpus_bleu` / `sentence_bleu` compute it, for one reference per
//! hypothesis (the QA datasets have one answer): clipped n-gram counts summed over the corpus,
//! closest-reference brevity penalty, no smoothing (`method0`, where a zero n-gram precision
//! becomes the smallest positive float) or Chen & Cherry `method1` (epsilon 0.1).

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smoothing {
    /// nltk `method0` (the default): no smoothing.
    None,
    /// nltk `SmoothingFunction().method1`: a zero count becomes 0.1 / n-gram count.
    Epsilon,
}

fn ngram_counts<'a>(words: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    if words.len() >= n {
        for gram in words.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// nltk `modified_precision`: (clipped matches, max(1, hypothesis n-grams)).
fn modified_precision(reference: &[&str], hypothesis: &[&str], n: usize) -> (usize, usize) {
    let hyp = ngram_counts(hypothesis, n);
    let reference = ngram_counts(reference, n);
    let clipped: usize = hyp.iter().map(|(g, &c)| c.min(*reference.get(g).unwrap_or(&0))).sum();
    let total: usize = hyp.values().sum();
    (clipped, total.max(1))
}

fn brevity_penalty(reference_length: usize, hypothesis_length: usize) -> f64 {
    if hypothesis_length > reference_length {
        1.0
    } else if hypothesis_length == 0 {
        0.0
    } else {
        (1.0 - reference_length as f64 / hypothesis_length as f64).exp()
    }
}

/// nltk `corpus_bleu([[r] for r in references], hypotheses, weights, smoothing)`.
pub fn corpus_bleu(pairs: &[(Vec<&str>, Vec<&str>)], weights: &[f64], smoothing: Smoothing) -> f64 {
    let orders = weights.len();
    let mut numerators = vec![0usize; orders];
    let mut denominators = vec![0usize; orders];
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for (reference, hypothesis) in pairs {
        for n in 1..=orders {
            let (num, den) = modified_precision(reference, hypothesis, n);
            numerators[n - 1] += num;
            denominators[n - 1] += den;
        }
        hyp_len += hypothesis.len();
        ref_len += reference.len(); // one reference: it is the closest
    }
    let bp = brevity_penalty(ref_len, hyp_len);
    if numerators[0] == 0 {
        return 0.0;
    }
    let precisions = numerators.iter().zip(&denominators).map(|(&num, &den)| match (num, smoothing) {
        (0, Smoothing::None) => f64::MIN_POSITIVE,
        (0, Smoothing::Epsilon) => 0.1 / den as f64,
        _ => num as f64 / den as f64,
    });
    let log_sum: f64 = weights.iter().zip(precisions).map(|(w, p)| w * p.ln()).sum();
    bp * log_sum.exp()
}

/// nltk `sentence_bleu([reference], hypothesis, weights, smoothing)`.
pub fn sentence_bleu(reference: &[&str], hypothesis: &[&str], weights: &[f64], smoothing: Smoothing) -> f64 {
    corpus_bleu(&[(reference.to_vec(), hypothesis.to_vec())], weights, smoothing)
}

pub const BLEU2: [f64; 2] = [0.5, 0.5];
pub const BLEU4: [f64; 4] = [0.25, 0.25, 0.25, 0.25];
