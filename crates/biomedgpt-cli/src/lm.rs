//! Text language models of either family: [`biomedgpt_model::text_lm`] (shared with the Python
//! package), and the stored dtype `--dtype auto` reads.

pub use biomedgpt_llama::load_dtype::stored_dtype;
pub use biomedgpt_model::text_lm::{Family, TextLm, family_of};
