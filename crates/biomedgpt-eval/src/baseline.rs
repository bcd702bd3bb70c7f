//! Baselines reported beside model numbers, in the same report format:
//!
//! - retrieval: the training answer of the most similar training molecule (Morgan radius 2,
//!   2048 bits, Tanimoto) or protein (Jaccard similarity of the sets of 5-mers, found through an
//!   inverted index so that UniProtQA-sized training sets stay fast) asked the same question.
//!   Strong on UniProtQA-style data, where close homologues share annotations across splits.
//!   A query with nothing in common with any training subject gets the most frequent answer.
//! - most frequent: the most frequent training answer to the same question.
//!
//! Ties go to the earliest training record, so results do not depend on hashing.

use std::collections::HashMap;

use biomedgpt_chem::{Fingerprint, morgan_fingerprint};

use crate::data::{QaRecord, Subject};

/// Protein k-mer length: 5-mers are rare enough (20^5 of them) that sharing several means
/// homology, and their posting lists stay short.
const KMER: usize = 5;

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
    let mut out: Vec<u64> =
        sequence.as_bytes().windows(KMER).map(|w| w.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A distinct training subject and the answers it was given, per question (first one kept).
struct Entry {
    answers: HashMap<String, String>,
}

/// Proteins: k-mer -> training subjects containing it, and each subject's k-mer count.
#[derive(Default)]
struct ProteinIndex {
    postings: HashMap<u64, Vec<u32>>,
    sizes: Vec<u32>,
}

impl ProteinIndex {
    /// (training protein, Jaccard similarity) of every protein sharing a k-mer with the query.
    /// Counts go to a dense array (one slot per training subject) touched sparsely: no hashing
    /// in the inner loop, which walks long posting lists for common k-mers.
    fn similar(&self, query: &[u64]) -> Vec<(u32, f64)> {
        let mut shared = vec![0u32; self.sizes.len()];
        let mut touched = Vec::new();
        for kmer in query {
            for &p in self.postings.get(kmer).map(Vec::as_slice).unwrap_or(&[]) {
                let slot = &mut shared[p as usize];
                if *slot == 0 {
                    touched.push(p);
                }
                *slot += 1;
            }
        }
        touched
            .into_iter()
            .map(|p| {
                let common = shared[p as usize];
                let union = query.len() as u32 + self.sizes[p as usize] - common;
                (p, common as f64 / union as f64)
            })
            .collect()
    }
}

pub struct Baseline {
    kind: BaselineKind,
    entries: Vec<Entry>,
    molecules: Vec<(u32, Fingerprint)>,
    proteins: ProteinIndex,
    most_frequent: HashMap<String, String>,
    /// Training records whose molecule RDKit could not parse (left out of retrieval).
    pub unusable_training_records: usize,
}

fn most_frequent_answers(train: &[QaRecord]) -> HashMap<String, String> {
    // question -> (answer, count, first index)
    let mut counts: HashMap<&str, Vec<(&str, usize, usize)>> = HashMap::new();
    for (order, record) in train.iter().enumerate() {
        let answers = counts.entry(record.question.as_str()).or_default();
        match answers.iter_mut().find(|(a, ..)| *a == record.answer) {
            Some(entry) => entry.1 += 1,
            None => answers.push((record.answer.as_str(), 1, order)),
        }
    }
    counts
        .into_iter()
        .map(|(question, answers)| {
            let (answer, ..) =
                answers.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2))).expect("a question has an answer");
            (question.to_string(), answer.to_string())
        })
        .collect()
}

impl Baseline {
    pub fn fit(kind: BaselineKind, train: &[QaRecord]) -> Self {
        let mut baseline = Self {
            kind,
            entries: Vec::new(),
            molecules: Vec::new(),
            proteins: ProteinIndex::default(),
            most_frequent: most_frequent_answers(train),
            unusable_training_records: 0,
        };
        if kind == BaselineKind::Retrieval {
            baseline.index(train);
        }
        baseline
    }

    fn index(&mut self, train: &[QaRecord]) {
        let mut ids: HashMap<&Subject, u32> = HashMap::new();
        for record in train {
            let id = match ids.get(&record.subject) {
                Some(&id) => id,
                None => {
                    let id = self.entries.len() as u32;
                    // `sizes` has one slot per entry (0 for molecules) so ids index it directly.
                    match &record.subject {
                        Subject::Molecule { smiles } => match morgan_fingerprint(smiles) {
                            Ok(fp) => {
                                self.molecules.push((id, fp));
                                self.proteins.sizes.push(0);
                            }
                            Err(_) => {
                                self.unusable_training_records += 1;
                                continue;
                            }
                        },
                        Subject::Protein { sequence, .. } => {
                            let kmers = kmers(sequence);
                            self.proteins.sizes.push(kmers.len() as u32);
                            for k in kmers {
                                self.proteins.postings.entry(k).or_default().push(id);
                            }
                        }
                    }
                    self.entries.push(Entry { answers: HashMap::new() });
                    ids.insert(&record.subject, id);
                    id
                }
            };
            self.entries[id as usize].answers.entry(record.question.clone()).or_insert_with(|| record.answer.clone());
        }
    }

    pub fn kind(&self) -> BaselineKind {
        self.kind
    }

    /// The baseline's answer, or None when no training record was asked this question.
    pub fn answer(&self, record: &QaRecord) -> Option<String> {
        let fallback = self.most_frequent.get(&record.question).cloned();
        if self.kind == BaselineKind::MostFrequent {
            return fallback;
        }
        let candidates: Vec<(u32, f64)> = match &record.subject {
            Subject::Molecule { smiles } => match morgan_fingerprint(smiles) {
                Ok(query) => self.molecules.iter().map(|(id, fp)| (*id, query.tanimoto(fp))).collect(),
                Err(_) => Vec::new(),
            },
            Subject::Protein { sequence, .. } => self.proteins.similar(&kmers(sequence)),
        };
        // The best (highest similarity, then earliest) candidate asked this question; the
        // question is looked up only for candidates that would beat the best so far.
        let mut best: Option<(u32, f64, &String)> = None;
        for (id, similarity) in candidates {
            let beats = match best {
                None => similarity > 0.0,
                Some((best_id, best_similarity, _)) => {
                    similarity > best_similarity || (similarity == best_similarity && id < best_id)
                }
            };
            if beats && let Some(answer) = self.entries[id as usize].answers.get(&record.question) {
                best = Some((id, similarity, answer));
            }
        }
        best.map(|(.., answer)| answer.clone()).or(fallback)
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
        assert_eq!(baseline.answer(&record(protein("GGGGSSSSGGGG"), "F", "?")).as_deref(), Some("linker"));
        // Nothing in common with any training protein: the most frequent answer (first seen on ties).
        assert_eq!(baseline.answer(&record(protein("WWWWWWWWW"), "F", "?")).as_deref(), Some("kinase"));
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
