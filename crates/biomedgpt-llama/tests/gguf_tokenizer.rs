//! Tokenizers built from GGUF metadata against llama.cpp's golden vectors (`models/ggml-vocab-*
//! .gguf` with `.inp`/`.out`, from llama.cpp's sources in the PyPI sdist llama-cpp-python==0.3.36).
//! The LLaMA SentencePiece and GPT-2 vocabularies are committed under tests/fixtures/gguf; every
//! other vocabulary of that directory is checked too when `BIOMEDGPT_LLAMA_CPP_MODELS` points at it.

use std::path::{Path, PathBuf};

use biomedgpt_io::Gguf;
use biomedgpt_llama::LlamaTokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Every golden case of one vocabulary: (text, expected ids). llama.cpp's test-tokenizer-0 runs
/// without BOS and with special tokens parsed.
fn check(vocab: &Path) -> usize {
    match differences(vocab) {
        Ok(n) => n,
        Err(report) => panic!("{report}"),
    }
}

fn differences(vocab: &Path) -> Result<usize, String> {
    let bytes = std::fs::read(vocab).unwrap();
    let g = Gguf::parse(vocab, &bytes).unwrap();
    let tokenizer = LlamaTokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{}: {e}", vocab.display()));
    let inputs = std::fs::read_to_string(format!("{}.inp", vocab.display())).unwrap();
    let outputs = std::fs::read_to_string(format!("{}.out", vocab.display())).unwrap();
    let cases: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = outputs.split('\n').collect();
    assert!(cases.len() >= 30 && expected.len() >= cases.len(), "{}: {} cases", vocab.display(), cases.len());
    let mut failures = Vec::new();
    for (text, line) in cases.iter().zip(&expected) {
        let want: Vec<u32> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let got = tokenizer.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: ours {got:?}, llama.cpp {want:?}"));
        }
    }
    if failures.is_empty() {
        Ok(cases.len())
    } else {
        Err(format!("{}: {} of {} cases differ:\n{}", vocab.display(), failures.len(), cases.len(), failures.join("\n")))
    }
}

#[test]
fn llama_spm_vocabulary_matches_llama_cpp() {
    let path = fixtures().join("gguf/ggml-vocab-llama-spm.gguf");
    check(&path);
    let g = Gguf::parse(&path, &std::fs::read(&path).unwrap()).unwrap();
    let tokenizer = LlamaTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tokenizer.encode("Hello world", true).unwrap(), vec![1, 15043, 3186]);
    assert_eq!(tokenizer.decode(&[1, 15043, 3186]).unwrap(), "Hello world");
}

#[test]
fn gpt2_vocabulary_matches_llama_cpp() {
    let path = fixtures().join("gguf/ggml-vocab-gpt-2.gguf");
    check(&path);
    let g = Gguf::parse(&path, &std::fs::read(&path).unwrap()).unwrap();
    let tokenizer = LlamaTokenizer::from_gguf(&g).unwrap();
    assert_eq!(tokenizer.bos_id(), None, "GPT-2 adds no BOS");
    let ids = tokenizer.encode(" Hello, world! 123", false).unwrap();
    assert_eq!(tokenizer.decode(&ids).unwrap(), " Hello, world! 123");
}

/// The pre-tokenizers LLaMA-architecture models use (Llama-2, Llama-3, SmolLM2 and the
/// StarCoder family, Mistral, GPT-2-style): these must match llama.cpp on every golden case.
const MUST_MATCH: &[&str] = &["llama-spm", "gpt-2", "llama-bpe", "starcoder", "qwen2", "mpt", "refact"];

/// The same check on every llama/gpt2 vocabulary of a llama.cpp `models/` directory.
#[test]
fn every_llama_cpp_vocabulary_when_present() {
    let Ok(dir) = std::env::var("BIOMEDGPT_LLAMA_CPP_MODELS") else {
        eprintln!("BIOMEDGPT_LLAMA_CPP_MODELS not set: only the committed vocabularies were checked");
        return;
    };
    let mut checked = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("ggml-vocab-") || !name.ends_with(".gguf") || !Path::new(&format!("{}.inp", path.display())).exists() {
            continue;
        }
        let g = Gguf::parse(&path, &std::fs::read(&path).unwrap()).unwrap();
        let model = g.str("tokenizer.ggml.model").unwrap().unwrap_or("").to_string();
        let pre = g.str("tokenizer.ggml.pre").unwrap().unwrap_or("").to_string();
        if model != "llama" && model != "gpt2" {
            eprintln!("{name}: tokenizer {model}, not a LLaMA-family tokenizer, skipped");
            continue;
        }
        let must = MUST_MATCH.iter().any(|m| name == format!("ggml-vocab-{m}.gguf"));
        match LlamaTokenizer::from_gguf(&g).map_err(|e| e.to_string()).and_then(|_| differences(&path)) {
            Ok(n) => checked.push(format!("{name} ({model}, pre {pre}): {n} cases equal")),
            Err(report) if must => panic!("{report}"),
            Err(report) => eprintln!("not matched (not a pre-tokenizer of a supported model family): {}", report.lines().take(2).collect::<Vec<_>>().join(" / ")),
        }
    }
    eprintln!("checked:\n{}", checked.join("\n"));
    assert!(!checked.is_empty());
}
