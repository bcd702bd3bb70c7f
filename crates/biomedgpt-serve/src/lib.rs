//! `biomedgpt serve`: an OpenAI-compatible HTTP server for BioMedGPT, with molecules and
//! proteins as content parts, and continuous batching.
//!
//! - [`engine`]: the thread that owns the model and batches the requests' decoding steps.
//! - [`openai`]: request bodies read into the engine's terms, response bodies.
//! - [`server`]: the axum routes, limits, streaming (SSE), metrics and the graceful stop.
//! - [`text`]: what part of an answer can be streamed yet (stop strings, UTF-8, trimming).
//! - [`tools`]: function calling's template, grammar and parsing.

pub mod connections;
pub mod engine;
pub mod openai;
pub mod reasoning;
pub mod request;
pub mod server;
pub mod structured;
pub mod text;
pub mod tools;

pub use connections::ConnectionLimits;
pub use engine::{Engine, EngineConfig, Stats};
pub use server::{ServeOptions, Server};
