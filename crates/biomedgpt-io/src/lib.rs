//! Reading model checkpoints the way users have them on disk, and writing arrays back.
//!
//! - [`Checkpoint`] opens safetensors files (single or sharded with an index), PyTorch zip
//!   checkpoints (`.bin`, `.pth`, `.pt`, single or sharded) and whole model directories. Every
//!   tensor is memory-mapped and converted one at a time into the dtype the model asks for, so
//!   loading never holds a second full copy of the weights.
//! - [`WeightView`] is a prefixed view (`llm.model.layers.3.`) that models read from with
//!   shape checks, naming the key, the expected and the found shape on error.
//! - [`gguf`] reads llama.cpp's GGUF files (metadata, tensor infos); their tensors load through
//!   [`Checkpoint`] like any other, block-quantized types dequantized on the way.
//! - [`npy`] writes float32 `.npy` / `.npz` files for users and parity tests.

mod checkpoint;
mod dtype;
mod error;
pub mod export;
pub mod gguf;
pub mod gguf_writer;
pub mod npy;
mod pickle;
mod safetensors_file;
pub mod safetensors_writer;
mod torch_zip;

/// Byte-level entry points of the readers, for the fuzz targets (`crates/biomedgpt-fuzz`).
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the pickle machine over `data` (a `data.pkl`); `Err` for anything it refuses.
    pub fn pickle(data: &[u8]) -> Result<(), String> {
        crate::pickle::load(data).map(drop)
    }

    /// Reads a safetensors header from a whole file's bytes.
    pub fn safetensors(data: &[u8]) -> Result<usize, crate::LoadError> {
        crate::safetensors_file::entries(std::path::Path::new("fuzz.safetensors"), data).map(|e| e.len())
    }

    /// Reads a PyTorch zip checkpoint's tensor list from a file.
    pub fn torch_zip(path: &std::path::Path) -> Result<usize, crate::LoadError> {
        let len = std::fs::metadata(path).map_err(|e| crate::LoadError::io(path, e))?.len() as usize;
        crate::torch_zip::entries(path, len).map(|e| e.len())
    }
}

pub use checkpoint::{Checkpoint, KeyRename, TensorInfo, WeightView};
pub use dtype::{FloatType, SourceDType};
pub use error::LoadError;
pub use gguf::{Gguf, GgufTensor, MetaError, MetaValue};
