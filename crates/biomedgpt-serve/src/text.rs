//! What part of an answer can be streamed yet: [`biomedgpt_llama::text_stream`] (shared with
//! the Python package's streaming).

pub use biomedgpt_llama::text_stream::TextTracker;
