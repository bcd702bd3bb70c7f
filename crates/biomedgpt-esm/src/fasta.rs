//! FASTA reading: `>id description` header lines, sequence lines joined.

#[derive(Debug, Clone, PartialEq)]
pub struct FastaRecord {
    /// The first word of the header.
    pub id: String,
    pub sequence: String,
}

/// Parses FASTA text. Text before the first header is an error naming the line. A UTF-8 byte
/// order mark (Windows editors write one) is skipped.
pub fn parse(text: &str) -> Result<Vec<FastaRecord>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records: Vec<FastaRecord> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if let Some(header) = line.strip_prefix('>') {
            let id = header.split_whitespace().next().unwrap_or("").to_string();
            let id = if id.is_empty() { format!("record{}", records.len() + 1) } else { id };
            records.push(FastaRecord { id, sequence: String::new() });
        } else if !line.trim().is_empty() {
            match records.last_mut() {
                Some(r) => r.sequence.push_str(line.trim()),
                None => return Err(format!("line {}: sequence data before the first `>` header", n + 1)),
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    #[test]
    fn multi_line_records() {
        let r = super::parse(">sp|P1|X desc\nMKT\nAYI\n\n>P2\nGG\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].id.as_str(), r[0].sequence.as_str()), ("sp|P1|X", "MKTAYI"));
        assert_eq!(r[1].sequence, "GG");
        assert!(super::parse("MKT\n>a\nG").unwrap_err().contains("line 1"));
    }

    /// A byte order mark before the first header is not sequence data (issue 39, D29).
    #[test]
    fn byte_order_mark_is_skipped() {
        let r = super::parse("\u{feff}>P1\nMKT\n").unwrap();
        assert_eq!((r[0].id.as_str(), r[0].sequence.as_str()), ("P1", "MKT"));
    }
}
