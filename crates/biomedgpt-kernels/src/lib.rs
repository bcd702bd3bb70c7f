//! CPU compute kernels for the models, behind one dispatch point per operation.
//!
//! Every op takes and returns Burn tensors and works on any backend: plain tensors on Burn's CPU
//! backend (`flex`) go through the kernels here, everything else (autodiff, wgpu, CUDA, layouts a
//! kernel does not read) through Burn's own ops with the same semantics. Model code calls only
//! these entry points:
//!
//! | op | entry point | kernels |
//! | --- | --- | --- |
//! | linear layers | [`matmul`], [`matmul_many`] | [`matmul::matvec`] (decoding), [`matmul::gemm`] (prompts), [`matmul::bf16_dot`] + AMX (bf16) |
//! | attention | [`attention::attention`], [`attention::attention_merged`] | gemm + vector softmax, matrix-vector for decoding |
//! | activations, norms, residuals | [`activation::gelu`], [`activation::silu_mul`], [`activation::rms_norm`], [`activation::add`] | fused one-pass loops |
//! | rotary embedding | [`rotary::apply_rotary`], [`rotary::rotary_tables`] | one pass per row |
//! | GGML block types | [`quant::dequantize`] | scalar reference per type |
//!
//! Which instruction set the kernels use is decided in one place, [`isa`] (detected, or forced
//! with `BIOMEDGPT_CPU_ISA`). Below each op, the ISA-specific code lives in an `x86` submodule
//! next to the scalar reference it is tested against. Shared building blocks: [`element`]
//! (element types, conversions, weight layouts), `flex` (Burn tensors as slices), `parallel`
//! (work sharing), `math` (vector exp and erf), [`transpose`].
//!
//! Module dependencies run one way: `isa` <- `element` <- `flex`, `parallel`, `math`,
//! `transpose` <- `matmul` <- `attention`, `activation`, `rotary`.

pub mod activation;
pub mod attention;
pub mod element;
mod flex;
pub mod isa;
mod math;
pub mod matmul;
mod parallel;
pub mod quant;
pub mod rotary;
pub mod transpose;

pub use isa::Isa;
pub use matmul::{matmul, matmul_many};
pub use rotary::{apply_rotary, rotary_tables};
