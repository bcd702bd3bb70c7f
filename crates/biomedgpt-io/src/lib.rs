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

pub use checkpoint::{Checkpoint, KeyRename, TensorInfo, WeightView};
pub use dtype::{FloatType, SourceDType};
pub use error::LoadError;
pub use gguf::{Gguf, GgufTensor, MetaError, MetaValue};
