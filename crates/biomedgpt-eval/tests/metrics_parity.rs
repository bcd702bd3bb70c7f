//! The metrics against nltk 3.10.4 and rouge_score 0.1.2 on the 640 pairs of
//! tests/fixtures/metrics (make_fixtures.py): word pieces identical, every metric per pair and
//! over the corpus within 1e-6 (f64 arithmetic on small integer counts; the references differ
//! from ours only by summation order, ~1e-16).
//!
//! METEOR needs WordNet 3.0 from Debian's `wordnet-base` (or BIOMEDGPT_WORDNET=DIR).

use std::path::{Path, PathBuf};

use biomedgpt_eval::metrics::{BleuMode, Scorer, WordNet, WordPieceTokenizer, DEFAULT_WORDNET_DIR};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/metrics").join(name)
}

fn wordnet() -> WordNet {
    let dir = std::env::var("BIOMEDGPT_WORDNET").unwrap_or_else(|_| DEFAULT_WORDNET_DIR.into());
    WordNet::open(&dir).unwrap_or_else(|e| panic!("{e}"))
}

fn close(what: &str, ours: f64, reference: f64) {
    assert!((ours - reference).abs() <= TOLERANCE, "{what}: ours {ours}, reference {reference}");
}

#[test]
fn metrics_equal_nltk_and_rouge_score() {
    let pairs: Vec<Value> = std::fs::read_to_string(fixture("pairs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    assert!(pairs.len() >= 500);
    let scorer = Scorer::new(WordPieceTokenizer::shipped(), wordnet());
    let text = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let owned: Vec<(String, String)> = pairs.iter().map(|p| (text(p, "prediction"), text(p, "reference"))).collect();
    let (corpus, samples) =
        scorer.score(owned.iter().map(|(p, r)| (p.as_str(), r.as_str())), BleuMode::Corpus).unwrap();

    for (k, (sample, want)) in samples.iter().zip(expected["samples"].as_array().unwrap()).enumerate() {
        let kind = pairs[k]["kind"].as_str().unwrap();
        assert_eq!(sample.prediction_pieces.join(" "), want["prediction_tokens"].as_str().unwrap(), "pair {k} ({kind}) prediction pieces");
        assert_eq!(sample.reference_pieces.join(" "), want["reference_tokens"].as_str().unwrap(), "pair {k} ({kind}) reference pieces");
        let f = |key: &str| want[key].as_f64().unwrap();
        close(&format!("pair {k} ({kind}) meteor"), sample.meteor, f("meteor"));
        close(&format!("pair {k} ({kind}) rouge1"), sample.rouge.rouge1, f("rouge1"));
        close(&format!("pair {k} ({kind}) rouge2"), sample.rouge.rouge2, f("rouge2"));
        close(&format!("pair {k} ({kind}) rougeL"), sample.rouge.rouge_l, f("rougeL"));
        close(&format!("pair {k} ({kind}) sentence bleu2"), sample.sentence_bleu2, f("sentence_bleu2"));
        close(&format!("pair {k} ({kind}) sentence bleu4"), sample.sentence_bleu4, f("sentence_bleu4"));
    }
    let want = &expected["corpus"];
    assert_eq!(corpus.n, pairs.len());
    close("corpus bleu2", corpus.bleu2, want["bleu2"].as_f64().unwrap());
    close("corpus bleu4", corpus.bleu4, want["bleu4"].as_f64().unwrap());
    close("rouge1", corpus.rouge1, want["rouge1"].as_f64().unwrap());
    close("rouge2", corpus.rouge2, want["rouge2"].as_f64().unwrap());
    close("rougeL", corpus.rouge_l, want["rougeL"].as_f64().unwrap());
    close("meteor", corpus.meteor, want["meteor"].as_f64().unwrap());

    let sentence = biomedgpt_eval::metrics::aggregate(&samples, BleuMode::Sentence);
    close("sentence bleu2", sentence.bleu2, expected["sentence_bleu"]["bleu2"].as_f64().unwrap());
    close("sentence bleu4", sentence.bleu4, expected["sentence_bleu"]["bleu4"].as_f64().unwrap());
}

#[test]
fn porter_stems_equal_nltk() {
    let stems: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("stems.json")).unwrap()).unwrap();
    assert!(stems.len() > 5000);
    let wrong: Vec<String> = stems
        .iter()
        .filter_map(|(word, want)| {
            let ours = biomedgpt_eval::metrics::porter::stem(word);
            (ours != want.as_str().unwrap()).then(|| format!("{word}: ours {ours}, nltk {want}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} of {} stems differ: {:?}", wrong.len(), stems.len(), &wrong[..wrong.len().min(20)]);
}
