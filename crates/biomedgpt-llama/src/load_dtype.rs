//! Which dtype a model loads in (`--dtype`, Python's `dtype=`), decided the same way wherever a
//! model is opened: `auto` is the stored dtype (f16 for bf16 on a CPU without bf16 dot-product
//! instructions, where bf16 products would be widened to f32 and slower), anything else is
//! parsed. Block-quantized GGUF weights stay in their blocks with `auto` on the CPU only (an
//! explicit dtype dequantizes at load, the reference semantics; GPUs get dequantized weights).

use std::path::Path;

use biomedgpt_io::FloatType;
use burn::tensor::Device;

/// The dtype a model is stored in: a GGUF file's float tensors, or `config.json`'s
/// `torch_dtype` (`dtype` in newer transformers) beside the weights.
pub fn stored_dtype(path: &Path) -> Option<FloatType> {
    if crate::is_gguf(path) {
        return biomedgpt_io::Gguf::open(path).ok().map(|g| crate::gguf::stored_float_type(&g));
    }
    let text = std::fs::read_to_string(path.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let name = json.get("torch_dtype").or_else(|| json.get("dtype"))?.as_str()?;
    FloatType::parse(name)
}

/// The dtype to load in: `requested`, or with `auto` the `stored` one (f32 when unknown).
pub fn resolve_dtype(requested: &str, stored: Option<FloatType>, on_cpu: bool) -> Result<FloatType, String> {
    if requested != "auto" {
        return requested.parse::<FloatType>();
    }
    let slow_bf16 = on_cpu && !biomedgpt_kernels::matmul::bf16_dot::available();
    Ok(match stored.unwrap_or(FloatType::F32) {
        FloatType::BF16 if slow_bf16 => FloatType::F16,
        ty => ty,
    })
}

/// Whether block-quantized GGUF weights stay in their blocks.
pub fn keeps_blocks(requested: &str, on_cpu: bool) -> bool {
    requested == "auto" && on_cpu
}

/// The dtype to load the weights at `path` in, and whether GGUF blocks stay in their blocks, for
/// a model opened with `requested` on `device` (the CPU is Burn's flex device).
pub fn decide(requested: &str, path: &Path, device: &Device) -> Result<(FloatType, bool), String> {
    let on_cpu = *device == Device::flex();
    Ok((resolve_dtype(requested, stored_dtype(path), on_cpu)?, keeps_blocks(requested, on_cpu)))
}
