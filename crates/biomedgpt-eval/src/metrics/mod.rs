//! The text metrics of the BioMedGPT paper with the MolT5 protocol that OpenBioMed uses, each
//! equal to its reference implementation (tests/fixtures/metrics): BLEU-2/4 and METEOR on word
//! pieces (nltk), ROUGE-1/2/L on raw strings (rouge_score). All on a 0-1 scale.

pub mod bleu;
pub mod meteor;
pub mod porter;
pub mod rouge;
pub mod wordnet;
pub mod wordpiece;

use serde::{Deserialize, Serialize};

pub use bleu::Smoothing;
pub use meteor::MeteorParams;
pub use rouge::RougeScores;
pub use wordnet::{DEFAULT_WORDNET_DIR, WordNet, WordNetError};
pub use wordpiece::WordPieceTokenizer;

/// How BLEU is aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BleuMode {
    /// nltk `corpus_bleu`, no smoothing: the MolT5 protocol of the paper.
    #[default]
    Corpus,
    /// nltk `sentence_bleu` with smoothing method1, averaged: OpenBioMed's newer protocol.
    Sentence,
}

/// The metric report: the keys `score` prints and `eval` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextScores {
    pub bleu2: f64,
    pub bleu4: f64,
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    pub meteor: f64,
    pub n: usize,
}

/// One pair's scores (BLEU here is sentence-level with smoothing method1).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleScores {
    pub prediction_pieces: Vec<String>,
    pub reference_pieces: Vec<String>,
    pub meteor: f64,
    pub rouge: RougeScores,
    pub sentence_bleu2: f64,
    pub sentence_bleu4: f64,
}

pub struct Scorer {
    pub tokenizer: WordPieceTokenizer,
    pub wordnet: WordNet,
    pub meteor_params: MeteorParams,
}

fn mean(values: impl Iterator<Item = f64>, n: usize) -> f64 {
    if n == 0 { 0.0 } else { values.sum::<f64>() / n as f64 }
}

fn as_strs(pieces: &[String]) -> Vec<&str> {
    pieces.iter().map(String::as_str).collect()
}

impl Scorer {
    pub fn new(tokenizer: WordPieceTokenizer, wordnet: WordNet) -> Self {
        Self { tokenizer, wordnet, meteor_params: MeteorParams::default() }
    }

    pub fn sample(&self, prediction: &str, reference: &str) -> Result<SampleScores, WordNetError> {
        let prediction_pieces = self.tokenizer.pieces(prediction);
        let reference_pieces = self.tokenizer.pieces(reference);
        let (hyp, reference_words) = (as_strs(&prediction_pieces), as_strs(&reference_pieces));
        Ok(SampleScores {
            meteor: meteor::meteor(&reference_words, &hyp, &self.wordnet, self.meteor_params)?,
            // MolT5 calls scorer.score(output, ground_truth); the F-measure is symmetric.
            rouge: rouge::rouge(prediction, reference),
            sentence_bleu2: bleu::sentence_bleu(&reference_words, &hyp, &bleu::BLEU2, Smoothing::Epsilon),
            sentence_bleu4: bleu::sentence_bleu(&reference_words, &hyp, &bleu::BLEU4, Smoothing::Epsilon),
            prediction_pieces,
            reference_pieces,
        })
    }

    /// Scores (prediction, reference) pairs.
    pub fn score<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        mode: BleuMode,
    ) -> Result<(TextScores, Vec<SampleScores>), WordNetError> {
        let samples =
            pairs.into_iter().map(|(p, r)| self.sample(p, r)).collect::<Result<Vec<_>, _>>()?;
        Ok((aggregate(&samples, mode), samples))
    }
}

/// The report over per-pair scores: corpus BLEU from the pieces, or the mean sentence BLEU.
pub fn aggregate(samples: &[SampleScores], mode: BleuMode) -> TextScores {
    let n = samples.len();
    let (bleu2, bleu4) = match mode {
        BleuMode::Corpus => {
            let pairs: Vec<(Vec<&str>, Vec<&str>)> = samples
                .iter()
                .map(|s| (as_strs(&s.reference_pieces), as_strs(&s.prediction_pieces)))
                .collect();
            (
                bleu::corpus_bleu(&pairs, &bleu::BLEU2, Smoothing::None),
                bleu::corpus_bleu(&pairs, &bleu::BLEU4, Smoothing::None),
            )
        }
        BleuMode::Sentence => (
            mean(samples.iter().map(|s| s.sentence_bleu2), n),
            mean(samples.iter().map(|s| s.sentence_bleu4), n),
        ),
    };
    TextScores {
        bleu2,
        bleu4,
        rouge1: mean(samples.iter().map(|s| s.rouge.rouge1), n),
        rouge2: mean(samples.iter().map(|s| s.rouge.rouge2), n),
        rouge_l: mean(samples.iter().map(|s| s.rouge.rouge_l), n),
        meteor: mean(samples.iter().map(|s| s.meteor), n),
        n,
    }
}
