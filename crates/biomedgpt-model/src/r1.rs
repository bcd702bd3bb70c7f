//! BioMedGPT-R1 (OpenBioMed's `BioMedGPTR14Chat`): its `config.yaml`, where its LLM and ESM-2
//! directories are, and how its reasoning answers split.
//!
//! The released directory holds `config.yaml` (a top-level `model:`), one `pytorch_model.bin`
//! with every tensor under `mol_structure_encoder.`, `prot_structure_encoder.`, `llm.`
//! (`Qwen2ForCausalLM`), `proj_mol.` and `proj_prot.`, and the LLM's and ESM-2's config and
//! tokenizer files in the directories `config.yaml` names. OpenBioMed writes those names relative
//! to its own working directory (`./checkpoints/biomedgpt-r1/llm`), so they are looked up in
//! several places ([`resolve_part`]).

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::ModelError;

/// `config.yaml`: the fields of `model:` the chat uses (others, such as `name` or `drop_ratio`,
/// are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct R1File {
    pub model: R1Config,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct R1Config {
    pub molecule: MoleculeSection,
    pub protein: PartSection,
    pub llm: PartSection,
    #[serde(default)]
    pub text_generation: TextGeneration,
    /// Longest context the chat keeps (prompt plus `text_generation.max_length`); earlier
    /// positions are cut off. Absent: nothing is cut.
    #[serde(default)]
    pub context_max_length: Option<usize>,
    /// Between a turn's role and text, and after the text.
    #[serde(default = "newline")]
    pub sep_tokens: String,
}

fn newline() -> String {
    "\n".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MoleculeSection {
    pub gin_num_layers: usize,
    pub gin_hidden_dim: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PartSection {
    pub model_name_or_path: PathBuf,
    /// f16 weights and compute (`--dtype auto`); false: f32, whatever config.json's torch_dtype says.
    #[serde(default)]
    pub use_float16: bool,
}

/// `text_generation`: the keyword arguments the chat hands to transformers' `generate`; absent
/// ones take transformers' defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TextGeneration {
    #[serde(default = "one")]
    pub num_beams: usize,
    /// Counts the prompt: the answer gets `max_length - prompt positions` tokens at most.
    #[serde(default = "twenty")]
    pub max_length: usize,
    #[serde(default = "unit")]
    pub repetition_penalty: f32,
    #[serde(default = "unit")]
    pub length_penalty: f32,
    #[serde(default)]
    pub do_sample: bool,
}

fn one() -> usize {
    1
}
fn twenty() -> usize {
    20
}
fn unit() -> f32 {
    1.0
}

impl Default for TextGeneration {
    fn default() -> Self {
        TextGeneration { num_beams: 1, max_length: 20, repetition_penalty: 1.0, length_penalty: 1.0, do_sample: false }
    }
}

impl R1Config {
    /// Reads `dir/config.yaml`.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        Self::from_file(&dir.join("config.yaml"))
    }

    /// Reads an R1 `config.yaml`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Layout(format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|m| ModelError::Layout(format!("{}: {m}", path.display())))
    }

    /// Parses and checks the text of an R1 `config.yaml`.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let file: R1File = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let c = file.model;
        if c.molecule.gin_num_layers == 0 || c.molecule.gin_hidden_dim == 0 {
            return Err("molecule.gin_num_layers and gin_hidden_dim must be at least 1".into());
        }
        let g = &c.text_generation;
        if g.num_beams == 0 || g.max_length == 0 || !(g.repetition_penalty.is_finite() && g.repetition_penalty > 0.0) || !g.length_penalty.is_finite() {
            return Err("text_generation: num_beams and max_length must be at least 1, repetition_penalty positive".into());
        }
        if g.do_sample {
            return Err("text_generation.do_sample: true is not supported (the released chat decodes with beam search)".into());
        }
        if let Some(context) = c.context_max_length.filter(|&n| n <= g.max_length) {
            return Err(format!("context_max_length {context} must exceed text_generation.max_length {} (the prompt gets what is left)", g.max_length));
        }
        Ok(c)
    }

    /// How many of `positions` prompt positions the chat keeps (the last ones): all of them
    /// unless the prompt and `max_length` pass `context_max_length`.
    pub fn kept_positions(&self, positions: usize) -> usize {
        match self.context_max_length {
            Some(context) if positions + self.text_generation.max_length > context => context - self.text_generation.max_length,
            _ => positions,
        }
    }

    /// The most new tokens `text_generation.max_length` leaves after a prompt of `positions`
    /// (at least one: transformers generates one token when the prompt already fills it).
    pub fn max_new_tokens(&self, positions: usize) -> usize {
        self.text_generation.max_length.saturating_sub(positions).max(1)
    }
}

/// Whether `dir` is a BioMedGPT-R1 directory: `config.yaml` beside `pytorch_model.bin`.
pub fn is_r1_dir(dir: &Path) -> bool {
    dir.join("config.yaml").is_file() && dir.join("pytorch_model.bin").is_file()
}

/// Where a directory `config.yaml` names is: the path itself when absolute, else relative to the
/// model directory, then to the working directory, then the longest tail of the path that
/// exists under the model directory (`./checkpoints/biomedgpt-r1/llm` -> `DIR/llm`).
pub fn resolve_part(model_dir: &Path, named: &Path, what: &str) -> Result<PathBuf, ModelError> {
    if named.is_absolute() {
        if named.is_dir() {
            return Ok(named.to_path_buf());
        }
    } else {
        for base in [Some(model_dir.to_path_buf()), std::env::current_dir().ok()].into_iter().flatten() {
            let candidate = base.join(named);
            if candidate.is_dir() {
                return Ok(candidate);
            }
        }
    }
    let parts: Vec<&std::ffi::OsStr> = named.components().filter_map(|c| if let Component::Normal(p) = c { Some(p) } else { None }).collect();
    for start in 0..parts.len() {
        let candidate = parts[start..].iter().fold(model_dir.to_path_buf(), |p, c| p.join(c));
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(ModelError::Layout(format!(
        "{}: {what}.model_name_or_path `{}` was found neither as given, nor under {}, nor under the working directory, \
         nor as a tail of it under the model directory",
        model_dir.join("config.yaml").display(),
        named.display(),
        model_dir.display()
    )))
}

/// The thinking and the final answer of a reasoning model's text (what DeepSeek's API and
/// vLLM's reasoning parsers return): the thinking is what comes before the first `</think>`
/// (the prompt opened `<think>`), the answer what follows, both trimmed. Without `</think>` the
/// model never finished thinking: everything is thinking and there is no answer.
pub fn split_reasoning(text: &str) -> (String, Option<String>) {
    match text.split_once("</think>") {
        Some((thinking, answer)) => (thinking.trim().to_string(), Some(answer.trim().to_string())),
        None => (text.trim().to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "model:\n  name: biomedgpt-r1\n  molecule:\n    gin_hidden_dim: 300\n    gin_num_layers: 5\n    drop_ratio: 0.1\n  \
        protein:\n    model_name_or_path: ./checkpoints/biomedgpt-r1/protein\n    use_float16: true\n  \
        llm:\n    model_name_or_path: ./checkpoints/biomedgpt-r1/llm\n    use_float16: true\n  \
        text_generation:\n    num_beams: 2\n    max_length: 512\n    min_length: 1\n    repetition_penalty: 1.5\n    length_penalty: 1\n    temperature: 0\n  \
        context_max_length: 2048\n";

    fn write(dir: &Path, yaml: &str) {
        std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    }

    #[test]
    fn config_yaml_reads_as_openbiomed_writes_it() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), YAML);
        let c = R1Config::from_dir(tmp.path()).unwrap();
        assert_eq!((c.molecule.gin_num_layers, c.molecule.gin_hidden_dim), (5, 300));
        assert!(c.llm.use_float16 && c.protein.use_float16);
        assert_eq!(c.text_generation, TextGeneration { num_beams: 2, max_length: 512, repetition_penalty: 1.5, length_penalty: 1.0, do_sample: false });
        assert_eq!(c.sep_tokens, "\n");
        // 1600 positions + 512 pass 2048: the first 64 are cut.
        assert_eq!(c.kept_positions(1600), 1536);
        assert_eq!(c.kept_positions(100), 100);
        assert_eq!(c.max_new_tokens(100), 412);
        assert_eq!(c.max_new_tokens(600), 1);
    }

    #[test]
    fn bad_values_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        for (from, to, needle) in [
            ("num_beams: 2", "num_beams: 0", "num_beams"),
            ("context_max_length: 2048", "context_max_length: 500", "context_max_length 500 must exceed"),
            ("gin_num_layers: 5", "gin_num_layers: x", "gin_num_layers"),
            ("  llm:\n", "  llx:\n", "llm"),
        ] {
            write(tmp.path(), &YAML.replace(from, to));
            let e = R1Config::from_dir(tmp.path()).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("config.yaml"), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn parts_are_found_where_openbiomed_left_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("llm")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints/biomedgpt-r1/protein")).unwrap();
        // The longest existing tail under the model directory.
        assert_eq!(resolve_part(dir, Path::new("./checkpoints/biomedgpt-r1/llm"), "llm").unwrap(), dir.join("llm"));
        // Relative to the model directory as written.
        assert_eq!(resolve_part(dir, Path::new("./checkpoints/biomedgpt-r1/protein"), "protein").unwrap(), dir.join("./checkpoints/biomedgpt-r1/protein"));
        // Absolute.
        assert_eq!(resolve_part(dir, &dir.join("llm"), "llm").unwrap(), dir.join("llm"));
        let e = resolve_part(dir, Path::new("./checkpoints/other/esm"), "protein").unwrap_err().to_string();
        assert!(e.contains("protein.model_name_or_path `./checkpoints/other/esm`"), "{e}");
    }

    #[test]
    fn reasoning_splits_at_the_first_end_of_thinking() {
        assert_eq!(split_reasoning("Okay, so.\n</think>\n\nIt is ethanol."), ("Okay, so.".into(), Some("It is ethanol.".into())));
        assert_eq!(split_reasoning("still thinking"), ("still thinking".into(), None));
        assert_eq!(split_reasoning("a</think>b</think>c"), ("a".into(), Some("b</think>c".into())));
    }
}
