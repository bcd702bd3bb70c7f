//! PubChemQA and UniProtQA in OpenBioMed's file layouts, and the same records as JSONL.
//!
//! - PubChemQA: `DIR/{train,valid,test}.json`, a JSON array of
//!   `{"smiles": [..], "question": .., "answer": .., ...}` (a single string is accepted too).
//! - UniProtQA: `DIR/{split}.json` of `{"protein_accession": [..], "question": .., "answer": ..}`
//!   with `DIR/sequences.json` mapping accession -> sequence.
//! - JSONL (`*.jsonl`, or `DIR/{split}.jsonl`): one object per line with `smiles` or
//!   `sequence` (optionally `protein_accession` as its name) inline.
//!
//! Records with several molecules or proteins are skipped and counted, as the reference
//! evaluation does. A malformed record is an error naming the file and line (JSONL) or record
//! index (JSON array); with `skip_invalid` it is counted and left out instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QaTask {
    PubChemQa,
    UniProtQa,
}

impl QaTask {
    pub fn name(self) -> &'static str {
        match self {
            QaTask::PubChemQa => "pubchemqa",
            QaTask::UniProtQa => "uniprotqa",
        }
    }
}

/// The molecule or protein a question is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Molecule { smiles: String },
    Protein { name: String, sequence: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct QaRecord {
    /// `file:line` (JSONL) or `file#index` (JSON array), for messages and resuming.
    pub source: String,
    pub subject: Subject,
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadStats {
    /// Records kept.
    pub records: usize,
    /// Records with more than one molecule / protein (skipped, as the reference does).
    pub multi_subject: usize,
    /// Malformed records left out under `skip_invalid`, with their messages.
    pub invalid: Vec<String>,
}

#[derive(Debug, Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{location}: {message} (use --skip-invalid to leave such records out)")]
    Record { location: String, message: String },
    #[error(
        "{path}: no data for split {split:?}: expected {split}.json or {split}.jsonl in that \
         directory, or a .json / .jsonl file"
    )]
    NoSplit { path: PathBuf, split: String },
}

fn read(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_owned(), source })
}

/// The file of `split` when `path` is a directory, or `path` itself.
pub fn split_file(path: &Path, split: &str) -> Result<PathBuf, DataError> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    for ext in ["json", "jsonl"] {
        let candidate = path.join(format!("{split}.{ext}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::NoSplit { path: path.to_owned(), split: split.to_string() })
}

/// JSON records of a file with their locations: a JSON array, or one object per line.
pub(crate) fn json_records(path: &Path) -> Result<Vec<(String, Result<Value, String>)>, DataError> {
    let text = read(path)?;
    let name = path.display();
    let is_jsonl = path.extension().is_some_and(|e| e == "jsonl")
        || !text.trim_start().starts_with('[');
    if is_jsonl {
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                (format!("{name}:{}", i + 1), serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}")))
            })
            .collect())
    } else {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| DataError::Json { path: path.to_owned(), message: e.to_string() })?;
        let Value::Array(items) = value else {
            return Err(DataError::Json { path: path.to_owned(), message: "expected an array of records".into() });
        };
        Ok(items.into_iter().enumerate().map(|(i, v)| (format!("{name}#{i}"), Ok(v))).collect())
    }
}

fn string_field(record: &Value, key: &str) -> Result<String, String> {
    match record.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("field {key:?} is empty")),
        Some(other) => Err(format!("field {key:?} must be a string, found {other}")),
        None => Err(format!("missing field {key:?}")),
    }
}

/// A string or a list of strings (OpenBioMed stores lists even for one molecule).
fn string_list(record: &Value, key: &str) -> Result<Option<Vec<String>>, String> {
    match record.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("field {key:?} must hold strings, found {v}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("field {key:?} must be a string or a list of strings, found {other}")),
    }
}

enum Parsed {
    Record(Subject),
    MultiSubject,
}

fn parse_subject(record: &Value, task: QaTask, sequences: Option<&HashMap<String, String>>) -> Result<Parsed, String> {
    if !record.is_object() {
        return Err(format!("expected a JSON object, found {record}"));
    }
    match task {
        QaTask::PubChemQa => {
            let smiles = string_list(record, "smiles")?.ok_or("missing field \"smiles\"")?;
            match smiles.as_slice() {
                [] => Err("field \"smiles\" is empty".into()),
                [one] if one.trim().is_empty() => Err("field \"smiles\" is empty".into()),
                [one] => Ok(Parsed::Record(Subject::Molecule { smiles: one.trim().to_string() })),
                _ => Ok(Parsed::MultiSubject),
            }
        }
        QaTask::UniProtQa => {
            let accessions = string_list(record, "protein_accession")?;
            if let Some(sequence) = string_list(record, "sequence")? {
                if sequence.len() > 1 {
                    return Ok(Parsed::MultiSubject);
                }
                let name = accessions.and_then(|a| a.into_iter().next()).unwrap_or_else(|| "protein".into());
                let sequence = sequence.into_iter().next().unwrap_or_default();
                if sequence.trim().is_empty() {
                    return Err("field \"sequence\" is empty".into());
                }
                return Ok(Parsed::Record(Subject::Protein { name, sequence: sequence.trim().to_string() }));
            }
            let accessions = accessions.ok_or("missing field \"protein_accession\" (or an inline \"sequence\")")?;
            match accessions.as_slice() {
                [] => Err("field \"protein_accession\" is empty".into()),
                [one] => {
                    let sequences = sequences.ok_or(format!(
                        "protein {one:?} has no inline \"sequence\" and there is no sequences.json beside the file"
                    ))?;
                    let sequence = sequences.get(one).ok_or(format!("protein {one:?} is not in sequences.json"))?;
                    Ok(Parsed::Record(Subject::Protein { name: one.clone(), sequence: sequence.clone() }))
                }
                _ => Ok(Parsed::MultiSubject),
            }
        }
    }
}

fn load_sequences(dir: &Path) -> Result<Option<HashMap<String, String>>, DataError> {
    let path = dir.join("sequences.json");
    if !path.is_file() {
        return Ok(None);
    }
    let map: HashMap<String, String> = serde_json::from_str(&read(&path)?)
        .map_err(|e| DataError::Json { path: path.clone(), message: format!("expected {{accession: sequence}}: {e}") })?;
    Ok(Some(map))
}

/// Loads the records of one split of a QA dataset (`path`: a directory or a file).
pub fn load_qa(path: &Path, task: QaTask, split: &str, skip_invalid: bool) -> Result<(Vec<QaRecord>, LoadStats), DataError> {
    let file = split_file(path, split)?;
    let sequences = match task {
        QaTask::UniProtQa => load_sequences(file.parent().unwrap_or(Path::new(".")))?,
        QaTask::PubChemQa => None,
    };
    let mut stats = LoadStats::default();
    let mut records = Vec::new();
    for (location, value) in json_records(&file)? {
        let parsed = value.and_then(|record| {
            let subject = parse_subject(&record, task, sequences.as_ref())?;
            Ok((subject, string_field(&record, "question")?, string_field(&record, "answer")?))
        });
        match parsed {
            Ok((Parsed::Record(subject), question, answer)) => {
                records.push(QaRecord { source: location, subject, question, answer })
            }
            Ok((Parsed::MultiSubject, ..)) => stats.multi_subject += 1,
            Err(message) if skip_invalid => stats.invalid.push(format!("{location}: {message}")),
            Err(message) => return Err(DataError::Record { location, message }),
        }
    }
    stats.records = records.len();
    Ok((records, stats))
}
