//! `score`'s input: a JSONL file of `{"prediction": .., "reference": ..}` pairs, one per line
//! (blank lines skipped), each text bounded before any metric reads it.

/// Longest prediction or reference scored, in words (answers are a few hundred): ROUGE-L's
/// longest common subsequence is quadratic in the words (rouge_score's too), and 50k words took
/// 13 s, a 50 MB line minutes and gigabytes (issue 26, D7).
pub const MAX_SCORED_WORDS: usize = 10_000;
/// ... and in bytes: one 200 MB "word" passed the word bound and took 4.8 GB in WordPiece
/// (issue 39, D13).
pub const MAX_SCORED_BYTES: usize = 200_000;

/// The (prediction, reference) pairs of `text`, the contents of the file `name`; an error names
/// the line.
pub fn parse_predictions(text: &str, name: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let location = format!("{name}:{}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{location}: not valid JSON: {e}"))?;
        let pair = (string_at(&v, "prediction", &location)?, string_at(&v, "reference", &location)?);
        for (key, text) in [("prediction", &pair.0), ("reference", &pair.1)] {
            if text.len() > MAX_SCORED_BYTES {
                return Err(format!("{location}: the {key} has {} bytes; at most {MAX_SCORED_BYTES} are scored", text.len()));
            }
            let words = text.split_whitespace().count();
            if words > MAX_SCORED_WORDS {
                return Err(format!(
                    "{location}: the {key} has {words} words; at most {MAX_SCORED_WORDS} are scored (ROUGE-L is quadratic in the length)"
                ));
            }
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(format!("{name}: no prediction/reference pairs"));
    }
    Ok(pairs)
}

fn string_at(v: &serde_json::Value, key: &str, location: &str) -> Result<String, String> {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{location}: {key:?} must be a string, found {}", shown(other))),
        None => Err(format!("{location}: missing {key:?}")),
    }
}

/// A JSON value for an error message, cut after 80 characters.
fn shown(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}... ({} characters)", &s[..at], s.chars().count()),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_errors_name_the_line() {
        let text = "{\"prediction\": \"a b\", \"reference\": \"a c\"}\n\n{\"prediction\": \"x\", \"reference\": \"y\"}\n";
        assert_eq!(parse_predictions(text, "p.jsonl").unwrap(), vec![("a b".into(), "a c".into()), ("x".into(), "y".into())]);
        let e = parse_predictions("{\"prediction\": 3, \"reference\": \"y\"}", "p.jsonl").unwrap_err();
        assert_eq!(e, "p.jsonl:1: \"prediction\" must be a string, found 3");
        let e = parse_predictions("\n{\"prediction\": \"x\"}", "p.jsonl").unwrap_err();
        assert_eq!(e, "p.jsonl:2: missing \"reference\"");
        assert!(parse_predictions("{", "p.jsonl").unwrap_err().starts_with("p.jsonl:1: not valid JSON"));
        assert_eq!(parse_predictions(" \n", "p.jsonl").unwrap_err(), "p.jsonl: no prediction/reference pairs");
        // A long non-string value is quoted shortly.
        let long = format!("{{\"prediction\": [{}], \"reference\": \"y\"}}", vec!["1"; 10_000].join(","));
        assert!(parse_predictions(&long, "p.jsonl").unwrap_err().len() < 200);
    }

    #[test]
    fn long_texts_are_refused_before_scoring() {
        let words = format!("{{\"prediction\": \"{}\", \"reference\": \"y\"}}", "a ".repeat(MAX_SCORED_WORDS + 1));
        assert!(parse_predictions(&words, "p").unwrap_err().contains("words; at most 10000"));
        let bytes = format!("{{\"prediction\": \"x\", \"reference\": \"{}\"}}", "a".repeat(MAX_SCORED_BYTES + 1));
        assert!(parse_predictions(&bytes, "p").unwrap_err().contains("the reference has 200001 bytes"));
    }
}
