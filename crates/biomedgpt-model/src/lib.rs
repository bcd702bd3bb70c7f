//! BioMedGPT-10B and BioMedGPT-R1 assembled as the reference chats run them: a GraphMVP GIN
//! (per-atom features) and ESM-2 (per-token features, `<cls>`/`<eos>` included) projected by
//! `proj_mol` / `proj_prot` and spliced into the decoder's input embeddings (LLaMA for 10B, Qwen2
//! for R1) where the prompt holds `<moleculeHere>` / `<proteinHere>`; each text segment is
//! tokenized on its own (10B: BOS on the first only; R1: no BOS).

pub mod layout;
pub mod model;
pub mod prompt;
pub mod r1;
pub mod text_lm;

pub use layout::{Layout, LoraOverlay, Settings};
pub use model::{Adapters, Answer, BioMedGpt, DirEncoders, answer_text, Chat, Encoders, Input, LORA_TARGETS, merge_lora};
pub use prompt::{ChatPrompt, DEFAULT_SYSTEM_PROMPT, Modality, PromptStyle, Role, split_at_placeholders};
pub use r1::{R1Config, split_reasoning};

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
