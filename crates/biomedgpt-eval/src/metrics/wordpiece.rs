//! The word-piece tokenization of the MolT5 protocol: an uncased BERT tokenizer (BERT
//! normalizer: clean text, CJK characters split, lowercase, accents stripped as BERT does when
//! lowercasing; BERT pre-tokenizer; WordPiece with `##` continuations), the first 512 pieces
//! kept, `[PAD]`/`[CLS]`/`[SEP]` dropped. The paper used SciBERT's uncased `vocab.txt`; any BERT
//! vocabulary file can be given.

use std::path::Path;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::Tokenizer;

/// The truncation length MolT5 passes (`text_trunc_length`).
pub const MAX_PIECES: usize = 512;

/// The vocabulary used when none is given: 8,000 word pieces trained on the ChEBI and GO
/// definitions (datasets/wordpiece/README.md). Scores with it are not comparable with the
/// paper's SciBERT-vocabulary numbers.
pub const SHIPPED_VOCAB: &str = include_str!("../../../../datasets/wordpiece/vocab.txt");
pub const SHIPPED_VOCAB_NAME: &str = "datasets/wordpiece/vocab.txt (ChEBI+GO, 8000 pieces)";

pub struct WordPieceTokenizer {
    tokenizer: Tokenizer,
    max_pieces: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("word-piece vocabulary {source_name}: {message}")]
pub struct VocabError {
    pub source_name: String,
    pub message: String,
}

impl WordPieceTokenizer {
    /// From the text of a BERT `vocab.txt` (one piece per line, the line number is its id).
    pub fn from_vocab_text(text: &str, source_name: &str) -> Result<Self, VocabError> {
        let err = |message: String| VocabError { source_name: source_name.to_string(), message };
        let vocab = WordPiece::read_bytes(text.as_bytes()).map_err(|e| err(e.to_string()))?;
        if !vocab.contains_key("[UNK]") {
            return Err(err("has no [UNK] piece; expected a BERT vocab.txt".into()));
        }
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        Ok(Self { tokenizer, max_pieces: MAX_PIECES })
    }

    pub fn from_file(path: &Path) -> Result<Self, VocabError> {
        let text = std::fs::read_to_string(path).map_err(|e| VocabError {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_vocab_text(&text, &path.display().to_string())
    }

    pub fn shipped() -> Self {
        Self::from_vocab_text(SHIPPED_VOCAB, SHIPPED_VOCAB_NAME).expect("the shipped vocabulary is valid")
    }

    /// The word pieces of `text` as the protocol uses them.
    pub fn pieces(&self, text: &str) -> Vec<String> {
        let encoding = self.tokenizer.encode(text, false).expect("BERT tokenization cannot fail");
        encoding
            .get_tokens()
            .iter()
            .take(self.max_pieces)
            .filter(|t| !matches!(t.as_str(), "[PAD]" | "[CLS]" | "[SEP]"))
            .cloned()
            .collect()
    }
}
