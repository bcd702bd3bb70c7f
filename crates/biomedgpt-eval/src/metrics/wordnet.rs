//! WordNet 3.0 synonyms as nltk's `WordNetCorpusReader.synsets(word)` finds them, for METEOR's
//! synonym stage. Reads the database files of Debian's `wordnet-base` (`/usr/share/wordnet`):
//! `index.{noun,verb,adj,adv}` (lemma -> synset offsets), `{noun,verb,adj,adv}.exc` (irregular
//! forms) and `data.*` (the synsets, parsed on demand at their byte offsets).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

/// Where Debian's `wordnet-base` installs WordNet 3.0.
pub const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

#[derive(Debug, Error)]
pub enum WordNetError {
    #[error(
        "cannot read WordNet file {path}: {source}. METEOR needs WordNet 3.0: install Debian's \
         `wordnet-base` (apt install wordnet-base) or pass the directory holding index.noun, data.noun, ..."
    )]
    Io { path: PathBuf, source: std::io::Error },
    #[error("WordNet file {path}, line {line}: {message}")]
    Format { path: PathBuf, line: usize, message: String },
}

/// The four parts of speech in nltk's `POS_LIST` order, with their file names and the suffix
/// substitutions of `morphy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pos {
    Noun,
    Verb,
    Adj,
    Adv,
}

impl Pos {
    const ALL: [Pos; 4] = [Pos::Noun, Pos::Verb, Pos::Adj, Pos::Adv];

    fn file(self) -> &'static str {
        match self {
            Pos::Noun => "noun",
            Pos::Verb => "verb",
            Pos::Adj => "adj",
            Pos::Adv => "adv",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Pos::Noun => "n",
            Pos::Verb => "v",
            Pos::Adj => "a",
            Pos::Adv => "r",
        }
    }

    fn substitutions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Pos::Noun => &[
                ("s", ""),
                ("ses", "s"),
                ("ves", "f"),
                ("xes", "x"),
                ("zes", "z"),
                ("ches", "ch"),
                ("shes", "sh"),
                ("men", "man"),
                ("ies", "y"),
            ],
            Pos::Verb => &[
                ("s", ""),
                ("ies", "y"),
                ("es", "e"),
                ("es", ""),
                ("ed", "e"),
                ("ed", ""),
                ("ing", "e"),
                ("ing", ""),
            ],
            Pos::Adj => &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
            Pos::Adv => &[],
        }
    }
}

struct PosData {
    /// lemma -> synset byte offsets in `data.<pos>`.
    index: HashMap<String, Vec<usize>>,
    exceptions: HashMap<String, Vec<String>>,
    data: Vec<u8>,
    data_path: PathBuf,
}

pub struct WordNet {
    parts: Vec<(Pos, PosData)>,
    /// (pos, offset) -> lemma names of the synset (markers like "(a)" removed).
    synset_cache: Mutex<HashMap<(usize, usize), Vec<String>>>,
}

fn read(path: &Path) -> Result<Vec<u8>, WordNetError> {
    std::fs::read(path).map_err(|source| WordNetError::Io { path: path.to_owned(), source })
}

fn read_text(path: &Path) -> Result<String, WordNetError> {
    let bytes = read(path)?;
    String::from_utf8(bytes).map_err(|e| WordNetError::Format {
        path: path.to_owned(),
        line: 0,
        message: format!("not UTF-8: {e}"),
    })
}

fn parse_index(path: &Path) -> Result<HashMap<String, Vec<usize>>, WordNetError> {
    let text = read_text(path)?;
    let mut index = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with(' ') || line.is_empty() {
            continue; // the licence header
        }
        let bad = |message: &str| WordNetError::Format {
            path: path.to_owned(),
            line: i + 1,
            message: message.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |k: usize| -> Result<usize, WordNetError> {
            fields.get(k).and_then(|f| f.parse().ok()).ok_or_else(|| bad("expected a number"))
        };
        // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
        let synsets = number(2)?;
        let pointers = number(3)?;
        let first_offset = 4 + pointers + 2;
        let offsets = (first_offset..first_offset + synsets).map(number).collect::<Result<Vec<_>, _>>()?;
        index.insert(fields[0].to_string(), offsets);
    }
    Ok(index)
}

fn parse_exceptions(path: &Path) -> Result<HashMap<String, Vec<String>>, WordNetError> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut terms = line.split_whitespace().map(str::to_string);
            let form = terms.next()?;
            Some((form, terms.collect()))
        })
        .collect())
}

impl WordNet {
    /// Loads the index and exception files of a WordNet 3.0 `dict` directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, WordNetError> {
        let dir = dir.as_ref();
        let mut parts = Vec::new();
        for pos in Pos::ALL {
            let data_path = dir.join(format!("data.{}", pos.file()));
            parts.push((
                pos,
                PosData {
                    index: parse_index(&dir.join(format!("index.{}", pos.file())))?,
                    exceptions: parse_exceptions(&dir.join(format!("{}.exc", pos.file())))?,
                    data: read(&data_path)?,
                    data_path,
                },
            ));
        }
        Ok(Self { parts, synset_cache: Mutex::new(HashMap::new()) })
    }

    /// nltk `_morphy(form, pos)`: the exception list's base forms (or, without an exception,
    /// one round of suffix substitutions), with the form itself first, kept when in the index.
    fn morphy<'a>(&self, form: &str, pos: Pos, part: &'a PosData) -> Vec<String> {
        let candidates: Vec<String> = match part.exceptions.get(form) {
            Some(bases) => bases.clone(),
            None => pos
                .substitutions()
                .iter()
                .filter(|(old, _)| form.ends_with(old))
                .map(|(old, new)| format!("{}{}", &form[..form.len() - old.len()], new))
                .collect(),
        };
        let mut seen = HashSet::new();
        std::iter::once(form.to_string())
            .chain(candidates)
            .filter(|f| part.index.contains_key(f) && seen.insert(f.clone()))
            .collect()
    }

    fn synset_lemmas(&self, part_index: usize, offset: usize) -> Result<Vec<String>, WordNetError> {
        if let Some(names) = self.synset_cache.lock().expect("cache lock").get(&(part_index, offset)) {
            return Ok(names.clone());
        }
        let (pos, part) = &self.parts[part_index];
        let bad = |message: String| WordNetError::Format {
            path: part.data_path.clone(),
            line: 0,
            message: format!("synset at byte {offset} ({}): {message}", pos.tag()),
        };
        let rest = part.data.get(offset..).ok_or_else(|| bad("offset past the end".into()))?;
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = std::str::from_utf8(&rest[..end]).map_err(|e| bad(e.to_string()))?;
        let columns = line.split('|').next().unwrap_or("");
        let fields: Vec<&str> = columns.split_whitespace().collect();
        // synset_offset lex_filenum ss_type w_cnt(hex) [word lex_id(hex)]...
        if fields.first().and_then(|f| f.parse::<usize>().ok()) != Some(offset) {
            return Err(bad("the line there does not start with that offset".into()));
        }
        let count = fields
            .get(3)
            .and_then(|f| usize::from_str_radix(f, 16).ok())
            .ok_or_else(|| bad("no word count".into()))?;
        let names: Vec<String> = (0..count)
            .map(|k| fields.get(4 + 2 * k).map(|w| strip_marker(w).to_string()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("fewer words than its count".into()))?;
        self.synset_cache.lock().expect("cache lock").insert((part_index, offset), names.clone());
        Ok(names)
    }

    /// The names of every lemma of every synset of `word` (nltk `wordnet.synsets(word)`, all
    /// parts of speech), as METEOR collects them.
    pub fn synonyms(&self, word: &str) -> Result<HashSet<String>, WordNetError> {
        let lemma = word.to_lowercase();
        let mut names = HashSet::new();
        for (k, (pos, part)) in self.parts.iter().enumerate() {
            for form in self.morphy(&lemma, *pos, part) {
                for &offset in &part.index[&form] {
                    names.extend(self.synset_lemmas(k, offset)?);
                }
            }
        }
        Ok(names)
    }
}

/// Adjective lemmas can carry a syntactic marker, "(a)", "(p)" or "(ip)", which nltk removes.
fn strip_marker(word: &str) -> &str {
    if word.ends_with(')') {
        if let Some(open) = word.rfind('(') {
            if !word[open + 1..word.len() - 1].contains(['(', ')']) {
                return &word[..open];
            }
        }
    }
    word
}
