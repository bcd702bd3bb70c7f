//! ROUGE-1/2/L F-measures as Google's `rouge_score` (0.1.2) computes them with its default
//! tokenizer and no stemmer: lowercase, every run of characters outside [a-z0-9] becomes a space,
//! split; n-gram overlap and longest common subsequence.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScores {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

/// `rouge_score.tokenize.tokenize(text, None)`.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut map: HashMap<&[String], usize> = HashMap::new();
    if tokens.len() >= n {
        for gram in tokens.windows(n) {
            *map.entry(gram).or_insert(0) += 1;
        }
    }
    map
}

fn ngram_f(target: &[String], prediction: &[String], n: usize) -> f64 {
    let (t, p) = (ngram_counts(target, n), ngram_counts(prediction, n));
    let overlap: usize = t.iter().map(|(g, &c)| c.min(*p.get(g).unwrap_or(&0))).sum();
    let precision = overlap as f64 / p.values().sum::<usize>().max(1) as f64;
    let recall = overlap as f64 / t.values().sum::<usize>().max(1) as f64;
    fmeasure(precision, recall)
}

fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y { diagonal + 1 } else { above.max(row[j]) };
            diagonal = above;
        }
    }
    row[b.len()]
}

fn lcs_f(target: &[String], prediction: &[String]) -> f64 {
    if target.is_empty() || prediction.is_empty() {
        return 0.0;
    }
    let lcs = lcs_length(target, prediction) as f64;
    fmeasure(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// `RougeScorer(['rouge1','rouge2','rougeL']).score(target, prediction)` F-measures.
pub fn rouge(target: &str, prediction: &str) -> RougeScores {
    let (t, p) = (tokenize(target), tokenize(prediction));
    RougeScores { rouge1: ngram_f(&t, &p, 1), rouge2: ngram_f(&t, &p, 2), rouge_l: lcs_f(&t, &p) }
}
