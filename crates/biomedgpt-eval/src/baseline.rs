//! Baselines reported beside model numbers, in the same report format:
//!
//! - retrieval: the training answer of the most similar training molecule (Morgan radius 2,
//!   2048 bits, Tanimoto) or protein (Jaccard similarity of 3-mer sets) asked the same question.
//!   Strong on UniProtQA-style data, where close homologues share annotations across splits.
//! - most frequent: the most frequent training answer to the same question.
//!
//! Ties go to the earliest training record, so results do not depend on hashing.

use std::collections::HashMap;

use biomedgpt_chem::{Fingerprint, morgan_fingerprint};

use crate::data::{QaRecord, Subject};

const KMER: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    Retrieval,
    MostFrequent,
}

impl BaselineKind {
    pub fn name(self) -> &'static str {
        match self {
            BaselineKind::Retrieval => "retrieval",
            BaselineKind::MostFrequent => "most-frequent",
        }
    }
}

/// Sorted distinct k-mers of a sequence, each packed into a u64.
fn kmers(sequence: &str) -> Vec<u64> {
    let bytes = sequence.as_bytes();
    let mut out: Vec<u64> =
        bytes.windows(KMER).map(|w| w.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    if union == 0 { 0.0 } else { common as f64 / union as f64 }
}

enum Key {
    Molecule(Fingerprint),
    Protein(Vec<u64>),
}

fn key_of(subject: &Subject) -> Option<Key> {
    match subject {
        Subject::Molecule { smiles } => morgan_fingerprint(smiles).ok().map(Key::Molecule),
        Subject::Protein { sequence, .. } => Some(Key::Protein(kmers(sequence))),
    }
}

fn similarity(a: &Key, b: &Key) -> f64 {
    match (a, b) {
        (Key::Molecule(x), Key::Molecule(y)) => x.tanimoto(y),
        (Key::Protein(x), Key::Protein(y)) => jaccard(x, y),
        _ => 0.0,
    }
}

pub struct Baseline {
    kind: BaselineKind,
    /// question -> (key, answer) of the training records asked it.
    by_question: HashMap<String, Vec<(Key, String)>>,
    most_frequent: HashMap<String, String>,
    /// Training records whose molecule RDKit could not parse (left out of retrieval).
    pub unusable_training_records: usize,
}

impl Baseline {
    pub fn fit(kind: BaselineKind, train: &[QaRecord]) -> Self {
        let mut by_question: HashMap<String, Vec<(Key, String)>> = HashMap::new();
        let mut counts: HashMap<&str, Vec<(&str, usize, usize)>> = HashMap::new();
        let mut unusable = 0;
        for (order, record) in train.iter().enumerate() {
            let answers = counts.entry(record.question.as_str()).or_default();
            match answers.iter_mut().find(|(a, ..)| *a == record.answer) {
                Some(entry) => entry.1 += 1,
                None => answers.push((record.answer.as_str(), 1, order)),
            }
            if kind == BaselineKind::Retrieval {
                match key_of(&record.subject) {
                    Some(key) => by_question.entry(record.question.clone()).or_default().push((key, record.answer.clone())),
                    None => unusable += 1,
                }
            }
        }
        let most_frequent = counts
            .into_iter()
            .map(|(question, answers)| {
                let (answer, ..) = answers
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
                    .expect("a question has an answer");
                (question.to_string(), answer.to_string())
            })
            .collect();
        Self { kind, by_question, most_frequent, unusable_training_records: unusable }
    }

    pub fn kind(&self) -> BaselineKind {
        self.kind
    }

    /// The baseline's answer, or None when no training record was asked this question.
    pub fn answer(&self, record: &QaRecord) -> Option<String> {
        match self.kind {
            BaselineKind::MostFrequent => self.most_frequent.get(&record.question).cloned(),
            BaselineKind::Retrieval => {
                let candidates = self.by_question.get(&record.question)?;
                let Some(query) = key_of(&record.subject) else {
                    return self.most_frequent.get(&record.question).cloned();
                };
                let mut best: Option<(f64, &str)> = None;
                for (key, answer) in candidates {
                    let s = similarity(&query, key);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, answer));
                    }
                }
                best.map(|(_, a)| a.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: Subject, question: &str, answer: &str) -> QaRecord {
        QaRecord { source: "test".into(), subject, question: question.into(), answer: answer.into() }
    }

    fn protein(sequence: &str) -> Subject {
        Subject::Protein { name: "p".into(), sequence: sequence.into() }
    }

    #[test]
    fn retrieval_answers_with_the_nearest_training_subject_asked_the_same_question() {
        let train = vec![
            record(Subject::Molecule { smiles: "CCO".into() }, "Q", "ethanol answer"),
            record(Subject::Molecule { smiles: "c1ccccc1O".into() }, "Q", "phenol answer"),
            record(Subject::Molecule { smiles: "c1ccccc1O".into() }, "Other", "other answer"),
        ];
        let baseline = Baseline::fit(BaselineKind::Retrieval, &train);
        let query = record(Subject::Molecule { smiles: "Cc1ccccc1O".into() }, "Q", "?");
        assert_eq!(baseline.answer(&query).as_deref(), Some("phenol answer"));
        let query = record(Subject::Molecule { smiles: "CCCO".into() }, "Q", "?");
        assert_eq!(baseline.answer(&query).as_deref(), Some("ethanol answer"));
        let unseen = record(Subject::Molecule { smiles: "CCO".into() }, "Never asked", "?");
        assert_eq!(baseline.answer(&unseen), None);

        let train = vec![
            record(protein("MKTAYIAKQRQISFVKSHFSRQ"), "F", "kinase"),
            record(protein("GGGGSSSSGGGGSSSS"), "F", "linker"),
        ];
        let baseline = Baseline::fit(BaselineKind::Retrieval, &train);
        assert_eq!(baseline.answer(&record(protein("MKTAYIAKQRQISFVKSHF"), "F", "?")).as_deref(), Some("kinase"));
    }

    #[test]
    fn most_frequent_answer_per_question_first_seen_wins_ties() {
        let m = |s: &str| Subject::Molecule { smiles: s.into() };
        let train = vec![
            record(m("C"), "Q", "a"),
            record(m("CC"), "Q", "b"),
            record(m("CCC"), "Q", "b"),
            record(m("C"), "R", "x"),
            record(m("CC"), "R", "y"),
        ];
        let baseline = Baseline::fit(BaselineKind::MostFrequent, &train);
        assert_eq!(baseline.answer(&record(m("O"), "Q", "?")).as_deref(), Some("b"));
        assert_eq!(baseline.answer(&record(m("O"), "R", "?")).as_deref(), Some("x"));
    }
}
