//! Dataset loaders.

pub mod multiple_choice;
pub mod predictions;
pub mod qa;

pub use multiple_choice::{McRecord, McTask, load_multiple_choice, mc_split_file};
pub use predictions::parse_predictions;
pub use qa::{DataError, LoadStats, QaRecord, QaTask, Subject, load_qa};
