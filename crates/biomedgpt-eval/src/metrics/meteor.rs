//! METEOR as nltk 3.10's `meteor_score` computes it: words aligned in three stages (exact, Porter
//! stem, WordNet synonym), each stage matching right to left, then
//! `(1 - gamma * (chunks / matches)^beta) * P*R / (alpha*P + (1-alpha)*R)`.

use std::collections::HashMap;

use super::porter;
use super::wordnet::{WordNet, WordNetError};

/// nltk's defaults, which MolT5 and OpenBioMed use.
#[derive(Clone, Copy, Debug)]
pub struct MeteorParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
}

impl Default for MeteorParams {
    fn default() -> Self {
        Self { alpha: 0.9, beta: 3.0, gamma: 0.5 }
    }
}

/// (position in the sentence, word) pairs still unmatched.
type Enumerated = Vec<(usize, String)>;

/// Position lists per word, so that `pop()` yields the rightmost unmatched occurrence.
fn positions(words: &Enumerated) -> HashMap<&str, Vec<usize>> {
    let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, w)) in words.iter().enumerate() {
        map.entry(w.as_str()).or_default().push(j);
    }
    map
}

fn remove_matched(words: Enumerated, matched: &[usize]) -> Enumerated {
    words.into_iter().enumerate().filter(|(k, _)| !matched.contains(k)).map(|(_, p)| p).collect()
}

/// nltk `_match_enums`: each hypothesis word, right to left, takes the rightmost equal reference word.
fn match_exact(hyp: Enumerated, reference: Enumerated) -> (Vec<(usize, usize)>, Enumerated, Enumerated) {
    let mut matches = Vec::new();
    let (mut hyp_done, mut ref_done) = (Vec::new(), Vec::new());
    {
        let mut pos = positions(&reference);
        for i in (0..hyp.len()).rev() {
            if let Some(j) = pos.get_mut(hyp[i].1.as_str()).and_then(Vec::pop) {
                hyp_done.push(i);
                ref_done.push(j);
                matches.push((hyp[i].0, reference[j].0));
            }
        }
    }
    (matches, remove_matched(hyp, &hyp_done), remove_matched(reference, &ref_done))
}

fn match_stems(hyp: Enumerated, reference: Enumerated) -> (Vec<(usize, usize)>, Enumerated, Enumerated) {
    let stem_all = |words: &Enumerated| -> Enumerated {
        words.iter().map(|(i, w)| (*i, porter::stem(w))).collect()
    };
    // Matching on stems; the survivors keep their stemmed form, as in nltk.
    match_exact(stem_all(&hyp), stem_all(&reference))
}

/// nltk `_enum_wordnetsyn_match`: a hypothesis word matches the rightmost reference word among
/// its WordNet synonyms (lemma names without "_") and itself.
fn match_synonyms(
    hyp: Enumerated,
    reference: Enumerated,
    wordnet: &WordNet,
) -> Result<(Vec<(usize, usize)>, Enumerated, Enumerated), WordNetError> {
    let mut matches = Vec::new();
    let (mut hyp_done, mut ref_done) = (Vec::new(), Vec::new());
    {
        let mut pos = positions(&reference);
        for i in (0..hyp.len()).rev() {
            let mut synonyms = wordnet.synonyms(&hyp[i].1)?;
            synonyms.retain(|name| !name.contains('_'));
            synonyms.insert(hyp[i].1.clone());
            let best = synonyms
                .iter()
                .filter_map(|s| pos.get(s.as_str()).and_then(|p| p.last()).map(|&j| (j, s.as_str())))
                .max_by_key(|(j, _)| *j);
            if let Some((j, word)) = best {
                let word = word.to_string();
                pos.get_mut(word.as_str()).expect("present").pop();
                hyp_done.push(i);
                ref_done.push(j);
                matches.push((hyp[i].0, reference[j].0));
            }
        }
    }
    Ok((matches, remove_matched(hyp, &hyp_done), remove_matched(reference, &ref_done)))
}

fn count_chunks(matches: &[(usize, usize)]) -> usize {
    1 + matches.windows(2).filter(|w| !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1)).count()
}

/// nltk `single_meteor_score(reference, hypothesis)` on pre-tokenized words (lowercased here,
/// as nltk's default `preprocess=str.lower`).
pub fn meteor(
    reference: &[&str],
    hypothesis: &[&str],
    wordnet: &WordNet,
    params: MeteorParams,
) -> Result<f64, WordNetError> {
    let enumerate = |words: &[&str]| -> Enumerated {
        words.iter().enumerate().map(|(i, w)| (i, w.to_lowercase())).collect()
    };
    let (hyp, reference_words) = (enumerate(hypothesis), enumerate(reference));
    let (translation_length, reference_length) = (hyp.len(), reference_words.len());
    let (mut matches, hyp, reference_words) = match_exact(hyp, reference_words);
    let (stem_matches, hyp, reference_words) = match_stems(hyp, reference_words);
    let (synonym_matches, _, _) = match_synonyms(hyp, reference_words, wordnet)?;
    matches.extend(stem_matches);
    matches.extend(synonym_matches);
    matches.sort_by_key(|m| m.0); // stable, as Python's sorted
    let count = matches.len();
    if count == 0 || translation_length == 0 || reference_length == 0 {
        return Ok(0.0); // nltk: ZeroDivisionError -> 0.0
    }
    let precision = count as f64 / translation_length as f64;
    let recall = count as f64 / reference_length as f64;
    let MeteorParams { alpha, beta, gamma } = params;
    let fmean = (precision * recall) / (alpha * precision + (1.0 - alpha) * recall);
    let fragmentation = count_chunks(&matches) as f64 / count as f64;
    let penalty = gamma * fragmentation.powf(beta);
    Ok((1.0 - penalty) * fmean)
}
