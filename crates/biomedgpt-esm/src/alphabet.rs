//! ESM's alphabet (`vocab.txt`, 33 tokens) and sequence encoding.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequenceError {
    #[error("{record}: the sequence is empty")]
    Empty { record: String },
    #[error("{record}: `{}` at position {position} is not in the ESM alphabet ({alphabet})", letter.escape_debug())]
    UnknownResidue {
        record: String,
        letter: char,
        position: usize,
        alphabet: String,
    },
    #[error("{record}: {length} residues exceed the maximum of {max} (use truncation to cut it)")]
    TooLong { record: String, length: usize, max: usize },
}

/// The token list of `vocab.txt` with the ids of the special tokens.
#[derive(Debug, Clone)]
pub struct Alphabet {
    tokens: Vec<String>,
    residue_ids: HashMap<char, u32>,
    pub cls_id: u32,
    pub pad_id: u32,
    pub eos_id: u32,
    pub mask_id: u32,
}

/// An encoded sequence: `<cls> residues <eos>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Residues dropped by truncation (0 when the sequence fit).
    pub truncated: usize,
}

impl Alphabet {
    pub fn from_vocab_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_tokens(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, String> {
        let find = |t: &str| {
            tokens
                .iter()
                .position(|x| x == t)
                .map(|i| i as u32)
                .ok_or_else(|| format!("vocabulary has no `{t}` token"))
        };
        let residue_ids = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.chars().count() == 1)
            .map(|(i, t)| (t.chars().next().unwrap(), i as u32))
            .collect();
        Ok(Alphabet {
            cls_id: find("<cls>")?,
            pad_id: find("<pad>")?,
            eos_id: find("<eos>")?,
            mask_id: find("<mask>")?,
            residue_ids,
            tokens,
        })
    }

    /// ESM-2's alphabet as fair-esm and HF ship it.
    pub fn esm2() -> Self {
        let tokens = "<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O . - <null_1> <mask>";
        Self::from_tokens(tokens.split(' ').map(String::from).collect()).expect("built-in alphabet")
    }

    /// The tokens in id order, as in `vocab.txt`.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Encodes one sequence (letters in either case; `<mask>` marks a masked residue) as
    /// `<cls> residues <eos>`, keeping at most `max_tokens` tokens: longer sequences are cut at
    /// the right when `truncate`, an error otherwise.
    pub fn encode(&self, record: &str, sequence: &str, max_tokens: usize, truncate: bool) -> Result<Encoded, SequenceError> {
        let mut residues = Vec::with_capacity(sequence.len());
        let mut rest = sequence.trim();
        let mut position = 0;
        while let Some(c) = rest.chars().next() {
            position += 1;
            if rest.starts_with("<mask>") {
                residues.push(self.mask_id);
                rest = &rest["<mask>".len()..];
                continue;
            }
            let upper = c.to_ascii_uppercase();
            match self.residue_ids.get(&upper) {
                Some(&id) if !c.is_whitespace() => residues.push(id),
                _ => {
                    return Err(SequenceError::UnknownResidue {
                        record: record.to_string(),
                        letter: c,
                        position,
                        alphabet: self.residue_letters(),
                    });
                }
            }
            rest = &rest[c.len_utf8()..];
        }
        if residues.is_empty() {
            return Err(SequenceError::Empty { record: record.to_string() });
        }
        let max_residues = max_tokens.saturating_sub(2);
        let mut truncated = 0;
        if residues.len() > max_residues {
            if !truncate {
                return Err(SequenceError::TooLong {
                    record: record.to_string(),
                    length: residues.len(),
                    max: max_residues,
                });
            }
            truncated = residues.len() - max_residues;
            residues.truncate(max_residues);
        }
        let mut ids = Vec::with_capacity(residues.len() + 2);
        ids.push(self.cls_id);
        ids.extend(residues);
        ids.push(self.eos_id);
        Ok(Encoded { ids, truncated })
    }

    fn residue_letters(&self) -> String {
        let mut letters: Vec<char> = self.residue_ids.keys().copied().filter(|c| c.is_ascii_alphabetic()).collect();
        letters.sort();
        letters.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_hf_tokenizer() {
        let a = Alphabet::esm2();
        assert_eq!(a.encode("s", "MAL<mask>K", 1024, false).unwrap().ids, vec![0, 20, 5, 4, 32, 15, 2]);
        assert_eq!(a.encode("s", "mal", 1024, false).unwrap().ids, vec![0, 20, 5, 4, 2]);
    }

    #[test]
    fn rejects_unknown_letters_and_empty_sequences() {
        let a = Alphabet::esm2();
        let err = a.encode("P12345", "MKJ", 1024, false).unwrap_err();
        assert!(matches!(err, SequenceError::UnknownResidue { letter: 'J', position: 3, .. }), "{err}");
        assert!(err.to_string().contains("P12345"));
        assert!(matches!(a.encode("x", "  ", 1024, false), Err(SequenceError::Empty { .. })));
        // A control character is named escaped, not printed raw (issue 39, D29).
        let err = a.encode("x", "MK\0T", 1024, false).unwrap_err().to_string();
        assert!(err.contains("`\\0` at position 3") && !err.contains('\0'), "{err}");
    }

    #[test]
    fn truncates_on_the_right_or_refuses() {
        let a = Alphabet::esm2();
        let e = a.encode("x", "MKTAYIAK", 6, true).unwrap();
        assert_eq!(e.ids, vec![0, 20, 15, 11, 5, 2]);
        assert_eq!(e.truncated, 4);
        assert!(matches!(a.encode("x", "MKTAYIAK", 6, false), Err(SequenceError::TooLong { length: 8, max: 4, .. })));
    }
}
