//! BioMedGPT-10B assembled as the reference chat runs it: a GraphMVP GIN (per-atom features) and
//! ESM-2 (per-token features, `<cls>`/`<eos>` included) projected by `proj_mol` / `proj_prot` and
//! spliced into the LLaMA decoder's input embeddings where the prompt holds `<moleculeHere>` /
//! `<proteinHere>`; each text segment is tokenized on its own, BOS on the first only.

pub mod layout;
pub mod model;
pub mod prompt;
pub mod text_lm;

pub use layout::{Layout, LoraOverlay, Settings};
pub use model::{Adapters, Answer, BioMedGpt, DirEncoders, answer_text, Chat, Encoders, Input, LORA_TARGETS, merge_lora};
pub use prompt::{ChatPrompt, DEFAULT_SYSTEM_PROMPT, Modality, Role, split_at_placeholders};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Open(#[from] biomedgpt_llama::OpenError),
    #[error(transparent)]
    Weights(#[from] biomedgpt_io::LoadError),
    #[error(transparent)]
    Esm(#[from] biomedgpt_esm::EsmError),
    #[error(transparent)]
    Sequence(#[from] biomedgpt_esm::SequenceError),
    #[error(transparent)]
    Molecule(#[from] biomedgpt_chem::FeaturizeError),
    #[error(transparent)]
    Graph(#[from] biomedgpt_chem::GraphError),
    #[error(transparent)]
    Tokenizer(#[from] biomedgpt_llama::TokenizerError),
    #[error(transparent)]
    Generation(#[from] biomedgpt_llama::GenerationError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Input(String),
}

impl ModelError {
    /// Whether the error is the input's fault (an invalid molecule, sequence, prompt, or what
    /// the model cannot do), not the model's files or the machine: the server's 400 against
    /// 500, Python's ValueError against RuntimeError.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ModelError::Input(_)
                | ModelError::Molecule(_)
                | ModelError::Graph(_)
                | ModelError::Sequence(_)
                | ModelError::Unsupported(_)
                | ModelError::Generation(_)
                | ModelError::Tokenizer(_)
        )
    }
}
