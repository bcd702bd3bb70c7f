use std::path::PathBuf;

/// Everything that can go wrong while reading a checkpoint. Each variant names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("no checkpoint found in {path}: expected {expected}")]
    NoCheckpoint { path: PathBuf, expected: String },
    #[error("missing tensor `{key}` in the checkpoint ({hint})")]
    MissingKey { key: String, hint: String },
    #[error("tensor `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{key}` is stored as {found}, which cannot be read as {wanted}")]
    DType {
        key: String,
        found: String,
        wanted: String,
    },
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        LoadError::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
