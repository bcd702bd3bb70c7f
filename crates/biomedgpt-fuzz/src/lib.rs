//! Fuzz targets: each takes arbitrary bytes, feeds them to one parser or loader the way a user's
//! file or request reaches it, and must return (an error is fine) without a panic, an abort, a
//! hang or an allocation out of proportion to the input. `fuzz/` runs them coverage-guided with
//! cargo-fuzz (libFuzzer); `tests/replay.rs` feeds every committed corpus file and crash
//! regression to them in the normal `cargo test`, so a regression fails CI.
//!
//! Written by hand: no crate offers these entry points; each is a few lines over the public API.

use std::io::Write;

/// Every target, by the name of its corpus directory (`fuzz/corpus/<name>`).
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("pickle", pickle),
    ("torch_zip", torch_zip),
    ("safetensors", safetensors),
    ("gguf", gguf),
    ("smiles", smiles),
    ("fasta", fasta),
    ("llama_config", llama_config),
    ("biomedgpt_json", biomedgpt_json),
    ("r1_config", r1_config),
    ("tokenizer", tokenizer),
    ("chat_request", chat_request),
    ("completion_request", completion_request),
    ("embedding_request", embedding_request),
    ("jsonl", jsonl),
    ("npy", npy),
    ("molecule_list", molecule_list),
    ("score", score),
];

/// A `.npy` array: `train --cache-features` files, `embed` outputs read back.
pub fn npy(data: &[u8]) {
    let _ = biomedgpt_io::npy::read_f32(data);
}

/// An `embed molecule --input` file, as `.smi` and as CSV; the first SMILES of each through RDKit.
pub fn molecule_list(data: &[u8]) {
    use biomedgpt_chem::{ListFormat, featurize, read_molecule_list};
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [ListFormat::Smi, ListFormat::Csv] {
        if let Ok(molecules) = read_molecule_list(text, format)
            && let Some((_, smiles)) = molecules.first()
        {
            let _ = featurize(smiles);
        }
    }
}

/// A `score --predictions` JSONL file, its pairs through the metrics (BLEU and ROUGE on the
/// shipped word pieces; METEOR too where WordNet is installed).
pub fn score(data: &[u8]) {
    use biomedgpt_eval::metrics::{BleuMode, DEFAULT_WORDNET_DIR, Scorer, WordNet, WordPieceTokenizer, bleu, rouge};
    use std::sync::OnceLock;
    static SCORER: OnceLock<(WordPieceTokenizer, Option<Scorer>)> = OnceLock::new();
    let (tokenizer, scorer) =
        SCORER.get_or_init(|| (WordPieceTokenizer::shipped(), WordNet::open(DEFAULT_WORDNET_DIR).ok().map(|w| Scorer::new(WordPieceTokenizer::shipped(), w))));
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(pairs) = biomedgpt_eval::data::parse_predictions(text, "fuzz.jsonl") else { return };
    match scorer {
        Some(scorer) => {
            for mode in [BleuMode::Corpus, BleuMode::Sentence] {
                let _ = scorer.score(pairs.iter().map(|(p, r)| (p.as_str(), r.as_str())), mode);
            }
        }
        None => {
            for (p, r) in &pairs {
                let (hyp, reference) = (tokenizer.pieces(p), tokenizer.pieces(r));
                let (hyp, reference): (Vec<&str>, Vec<&str>) = (hyp.iter().map(String::as_str).collect(), reference.iter().map(String::as_str).collect());
                let _ = bleu::sentence_bleu(&reference, &hyp, &bleu::BLEU4, bleu::Smoothing::Epsilon);
                let _ = rouge::rouge(p, r);
            }
        }
    }
}

/// A `data.pkl` of a PyTorch checkpoint.
pub fn pickle(data: &[u8]) {
    let _ = biomedgpt_io::fuzzing::pickle(data);
}

/// A whole `.pth` file (zip + pickle + storages), read through the checkpoint loader.
pub fn torch_zip(data: &[u8]) {
    let path = scratch_file("pth", data);
    let _ = biomedgpt_io::fuzzing::torch_zip(&path);
    let _ = std::fs::remove_file(path);
}

/// A whole `.safetensors` file.
pub fn safetensors(data: &[u8]) {
    let _ = biomedgpt_io::fuzzing::safetensors(data);
}

/// A whole `.gguf` file: header, metadata, tensor infos, then the LLaMA config and tokenizer
/// read from its metadata.
pub fn gguf(data: &[u8]) {
    let path = std::path::Path::new("fuzz.gguf");
    let Ok(g) = biomedgpt_io::gguf::Gguf::parse(path, data) else { return };
    let _ = biomedgpt_llama::gguf::config(path, &g);
    let _ = biomedgpt_llama::LlamaTokenizer::from_gguf(&g);
}

/// A SMILES string through RDKit to the model's graph.
pub fn smiles(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = biomedgpt_chem::featurize(s);
    }
}

/// A FASTA file, then each record through ESM-2's alphabet.
pub fn fasta(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(records) = biomedgpt_esm::parse_fasta(text) else { return };
    let alphabet = biomedgpt_esm::Alphabet::esm2();
    for r in records.iter().take(64) {
        let _ = alphabet.encode(&r.id, &r.sequence, 1024, true);
    }
}

/// A LLaMA `config.json`.
pub fn llama_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = biomedgpt_llama::LlamaConfig::from_json(text);
    }
}

/// A `biomedgpt.json` beside a model.
pub fn biomedgpt_json(data: &[u8]) {
    if let Ok(settings) = serde_json::from_slice::<biomedgpt_model::Settings>(data) {
        let _ = settings.validate();
    }
}

/// BioMedGPT-R1's `config.yaml` (YAML through serde_norway), parsed and checked.
pub fn r1_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = biomedgpt_model::R1Config::from_yaml(text);
    }
}

/// Text through the demo model's LLaMA tokenizer (invalid UTF-8 decoded lossily, as a request
/// body's strings never are), encoded and decoded back.
pub fn tokenizer(data: &[u8]) {
    use std::sync::OnceLock;
    static TOKENIZER: OnceLock<Option<biomedgpt_llama::LlamaTokenizer>> = OnceLock::new();
    let tok = TOKENIZER.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/demo/llm/tokenizer.json");
        biomedgpt_llama::LlamaTokenizer::from_file(path, Some(1)).ok()
    });
    let Some(tok) = tok else { return };
    let text = String::from_utf8_lossy(data);
    if let Ok(ids) = tok.encode(&text, true) {
        let _ = tok.decode(&ids);
    }
}

/// A `/v1/chat/completions` body read into the engine's prompt and parameters.
pub fn chat_request(data: &[u8]) {
    use biomedgpt_serve::openai::{ChatRequest, parse_body};
    if let Ok(req) = parse_body::<ChatRequest>(data) {
        let _ = req.prompt();
        let _ = req.logprobs().and_then(|l| req.sampling.params(l));
    }
}

/// A `/v1/completions` body.
pub fn completion_request(data: &[u8]) {
    use biomedgpt_serve::openai::{CompletionRequest, parse_body};
    if let Ok(req) = parse_body::<CompletionRequest>(data) {
        let _ = req.prompt();
        let _ = req.logprobs().and_then(|l| req.sampling.params(l));
    }
}

/// A `/v1/embeddings` body.
pub fn embedding_request(data: &[u8]) {
    use biomedgpt_serve::openai::{EmbeddingRequest, parse_body};
    if let Ok(req) = parse_body::<EmbeddingRequest>(data) {
        let _ = req.inputs();
    }
}

/// An eval dataset file (PubChemQA / UniProtQA JSONL records), with and without
/// `--skip-invalid`.
pub fn jsonl(data: &[u8]) {
    use biomedgpt_eval::data::{QaTask, load_qa};
    let path = scratch_file("jsonl", data);
    for task in [QaTask::PubChemQa, QaTask::UniProtQa] {
        for skip in [false, true] {
            let _ = load_qa(&path, task, "test", skip);
        }
    }
    let _ = std::fs::remove_file(path);
}

/// A file holding `data` under the temp directory, unique per process and call.
fn scratch_file(ext: &str, data: &[u8]) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!("biomedgpt-fuzz-{}-{}.{ext}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let mut f = std::fs::File::create(&path).expect("temp file");
    f.write_all(data).expect("temp file write");
    path
}
