//! Text-only biomedical multiple-choice sets in their public formats, turned into the prompts
//! and choices of lm-evaluation-harness (scored by the log-likelihood of each choice continuing
//! the prompt, the target delimiter " " in front of each choice):
//!
//! - PubMedQA (`ori_pqal.json`: {id: {QUESTION, CONTEXTS, final_decision, ...}}, or JSONL of
//!   such objects): "Abstract: {contexts joined by newlines}\nQuestion: {question}\nAnswer:",
//!   choices yes / no / maybe.
//! - MedMCQA (the release's JSONL: question, opa..opd, cop): "Question: {q}\nChoices:\nA. {opa}\n
//!   ...D. {opd}\nAnswer:", choices A-D. `cop` is 1-4 in the original release and 0-3 in the
//!   Hugging Face export; a file with a 0 is read as 0-based.
//! - MedQA-USMLE (JSONL: question, options {A: .., ...}, answer_idx; or the 4-option export
//!   with sent1, ending0..3, label): "Question: {q}\nA. ..\n...Answer:", choices A, B, ...

use std::path::Path;

use serde_json::Value;

use super::qa::{DataError, LoadStats, json_records, split_file};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum McTask {
    PubMedQa,
    MedMcQa,
    MedQa,
}

impl McTask {
    pub fn name(self) -> &'static str {
        match self {
            McTask::PubMedQa => "pubmedqa",
            McTask::MedMcQa => "medmcqa",
            McTask::MedQa => "medqa",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct McRecord {
    pub source: String,
    /// The prompt, ending without a trailing space ("...Answer:").
    pub context: String,
    /// The continuations scored after the context, each starting with the " " delimiter.
    pub choices: Vec<String>,
    pub gold: usize,
}

const LETTERS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

fn text(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field {key:?} must be a string, found {other}")),
        None => Err(format!("missing field {key:?}")),
    }
}

fn letter_choices(n: usize) -> Vec<String> {
    LETTERS[..n].iter().map(|l| format!(" {l}")).collect()
}

fn pubmedqa(v: &Value) -> Result<McRecord, String> {
    let contexts = match v.get("CONTEXTS") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| c.as_str().map(str::to_string).ok_or("CONTEXTS must hold strings".to_string()))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => return Err("missing field \"CONTEXTS\"".into()),
    };
    let answers = ["yes", "no", "maybe"];
    let decision = text(v, "final_decision")?;
    let gold = answers
        .iter()
        .position(|a| *a == decision.trim().to_lowercase())
        .ok_or(format!("final_decision {decision:?} is not yes, no or maybe"))?;
    Ok(McRecord {
        source: String::new(),
        context: format!("Abstract: {}\nQuestion: {}\nAnswer:", contexts.join("\n"), text(v, "QUESTION")?),
        choices: answers.iter().map(|a| format!(" {a}")).collect(),
        gold,
    })
}

fn lettered_prompt(question: &str, options: &[String], choices_header: bool) -> String {
    let mut prompt = format!("Question: {question}\n");
    if choices_header {
        prompt.push_str("Choices:\n");
    }
    for (letter, option) in LETTERS.iter().zip(options) {
        prompt.push_str(&format!("{letter}. {option}\n"));
    }
    prompt.push_str("Answer:");
    prompt
}

fn medmcqa(v: &Value, zero_based: bool) -> Result<McRecord, String> {
    let options = ["opa", "opb", "opc", "opd"].iter().map(|k| text(v, k)).collect::<Result<Vec<_>, _>>()?;
    let cop = v.get("cop").and_then(Value::as_u64).ok_or("missing integer field \"cop\"")? as usize;
    let gold = if zero_based { Some(cop) } else { cop.checked_sub(1) };
    let gold = gold.filter(|&g| g < 4).ok_or(format!("cop {cop} is out of range"))?;
    Ok(McRecord {
        source: String::new(),
        context: lettered_prompt(&text(v, "question")?, &options, true),
        choices: letter_choices(4),
        gold,
    })
}

fn medqa(v: &Value) -> Result<McRecord, String> {
    let (question, options, gold) = if let Some(Value::Object(map)) = v.get("options") {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        if keys.is_empty() || keys.len() > LETTERS.len() || keys.iter().zip(LETTERS).any(|(k, l)| k.as_str() != l) {
            return Err(format!("options must be keyed A, B, C, ...; found {keys:?}"));
        }
        let options = keys.iter().map(|k| map[*k].as_str().map(str::to_string).ok_or("options must be strings".to_string())).collect::<Result<Vec<_>, _>>()?;
        let answer = text(v, "answer_idx")?;
        let gold = LETTERS[..options.len()].iter().position(|l| *l == answer.trim()).ok_or(format!("answer_idx {answer:?} is not one of the options"))?;
        (text(v, "question")?, options, gold)
    } else if v.get("sent1").is_some() {
        let options = (0..4).map(|k| text(v, &format!("ending{k}"))).collect::<Result<Vec<_>, _>>()?;
        let gold = v.get("label").and_then(Value::as_u64).filter(|&g| g < 4).ok_or("missing label 0-3")? as usize;
        (text(v, "sent1")?, options, gold)
    } else {
        return Err("expected \"options\" + \"answer_idx\" (MedQA) or \"sent1\" + \"ending0..3\" + \"label\"".into());
    };
    Ok(McRecord { source: String::new(), context: lettered_prompt(&question, &options, false), choices: letter_choices(options.len()), gold })
}

/// The file holding `split`: as for the QA sets, or PubMedQA's own `ori_pqal.json` in `path`.
pub fn mc_split_file(path: &Path, task: McTask, split: &str) -> Result<std::path::PathBuf, DataError> {
    split_file(path, split).or_else(|e| match task {
        McTask::PubMedQa if path.join("ori_pqal.json").is_file() => Ok(path.join("ori_pqal.json")),
        _ => Err(e),
    })
}

/// Loads one split (`path`: a directory with `{split}.json(l)`, or a file).
pub fn load_multiple_choice(path: &Path, task: McTask, split: &str, skip_invalid: bool) -> Result<(Vec<McRecord>, LoadStats), DataError> {
    let file = mc_split_file(path, task, split)?;
    let mut entries = json_records_or_map(&file)?;
    let zero_based = task == McTask::MedMcQa
        && entries.iter().any(|(_, v)| v.as_ref().ok().and_then(|v| v.get("cop")).and_then(Value::as_u64) == Some(0));
    let mut stats = LoadStats::default();
    let mut records = Vec::new();
    for (location, value) in entries.drain(..) {
        let parsed = value.and_then(|v| match task {
            McTask::PubMedQa => pubmedqa(&v),
            McTask::MedMcQa => medmcqa(&v, zero_based),
            McTask::MedQa => medqa(&v),
        });
        match parsed {
            Ok(record) => records.push(McRecord { source: location, ..record }),
            Err(message) if skip_invalid => stats.invalid.push(format!("{location}: {message}")),
            Err(message) => return Err(DataError::Record { location, message }),
        }
    }
    stats.records = records.len();
    Ok((records, stats))
}

/// PubMedQA's `ori_pqal.json` is an object keyed by PubMed id; everything else is records.
fn json_records_or_map(path: &Path) -> Result<Vec<(String, Result<Value, String>)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    if path.extension().is_some_and(|e| e == "json") && text.trim_start().starts_with('{') {
        let map: serde_json::Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| DataError::Json { path: path.to_owned(), message: e.to_string() })?;
        return Ok(map.into_iter().map(|(id, v)| (format!("{}#{id}", path.display()), Ok(v))).collect());
    }
    json_records(path)
}
