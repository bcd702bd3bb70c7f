//! What the engine is asked to do, independent of HTTP: a prompt (a chat with molecules and
//! proteins, or plain text), decoding parameters, and the events it answers with.

use std::time::Instant;

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// SMILES.
    Molecule(String),
    /// Amino-acid sequence.
    Protein(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromptSpec {
    /// The reference chat (system prompt, `###` turns), molecules and proteins spliced in.
    Chat(Vec<Message>),
    /// Text continued as `generate` does (BOS in front).
    Text(String),
}

/// Decoding parameters, already range-checked by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `None`: the reference chat's 255 (plain text: 16, OpenAI's completions default), capped
    /// by the context left after the prompt.
    pub max_tokens: Option<usize>,
    /// `None` or 0: greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub n: usize,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub num_beams: usize,
    pub length_penalty: f32,
    pub early_stopping: biomedgpt_llama::EarlyStopping,
    /// Log-probabilities of the chosen tokens, with this many alternatives each.
    pub logprobs: Option<usize>,
    /// Go on past end-of-sequence tokens up to `max_tokens` (vLLM's and llama.cpp's extension,
    /// for benchmarks with fixed answer lengths).
    pub ignore_eos: bool,
    /// JSON or a JSON schema the answer is held to while it is decoded (`response_format`).
    pub response_format: Option<crate::structured::ResponseFormat>,
    /// Functions the answer may (or must) call (`tools`, `tool_choice`).
    pub tools: Option<crate::tools::Tools>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            seed: None,
            stop: Vec::new(),
            n: 1,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: biomedgpt_llama::EarlyStopping::False,
            logprobs: None,
            ignore_eos: false,
            response_format: None,
            tools: None,
        }
    }
}

impl Params {
    pub fn sampling(&self) -> bool {
        self.temperature.is_some_and(|t| t > 0.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A chosen token's log-probability under the model (raw logits, before penalties and
/// temperature, as vLLM's default), with the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// Why a request failed; `status` is the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
}

impl Failure {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Failure { status: 400, message: message.into(), param: None }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Failure { status: 500, message: message.into(), param: None }
    }
}

/// What the engine sends back, in order: `Started`, then deltas and one `Finished` per choice
/// (`Failed` instead, at any point, ends the request).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt was accepted: its positions, and how many of them came from the prefix cache.
    Started { prompt_tokens: usize, cached_tokens: usize },
    Delta { choice: usize, text: String, logprobs: Vec<TokenLogprob> },
    /// `tokens`: the answer's ids, the end-of-sequence id that ended it included.
    Finished { choice: usize, reason: FinishReason, completion_tokens: usize, tokens: Vec<u32> },
    Failed(Failure),
}

/// Features for `/v1/embeddings`.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Molecule(String),
    Protein(String),
}

pub enum Work {
    Generate { prompt: PromptSpec, params: Params },
    /// Mean-pooled encoder features, one vector per input.
    Embed(Vec<EmbedInput>),
}

/// Molecules RDKit has already read, by SMILES: the HTTP layer parses a request's molecules on
/// tokio's blocking pool, so a slow parse holds that request and not the engine (issue 39, D2).
/// The engine reads any molecule missing here itself.
pub type ParsedMolecules = std::collections::HashMap<String, biomedgpt_chem::MolGraph>;

/// A request as the engine receives it.
pub struct Job {
    pub id: String,
    pub work: Work,
    pub molecules: ParsedMolecules,
    pub events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// Embeddings come back here (or a failure).
    pub embeddings: Option<tokio::sync::oneshot::Sender<Result<(Vec<Vec<f32>>, usize), Failure>>>,
    pub submitted: Instant,
}

impl Job {
    /// The client has gone (its receiver dropped): the work is no longer wanted.
    pub fn cancelled(&self) -> bool {
        match &self.embeddings {
            Some(tx) => tx.is_closed(),
            None => self.events.is_closed(),
        }
    }
}
