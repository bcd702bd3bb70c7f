use burn::tensor::DType;
#[cfg(test)]
use burn::tensor::TensorData;
use biomedgpt_kernels::quant::GgmlType;
use half::{bf16, f16};

/// Element types a checkpoint may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    /// A GGML block-quantized type (GGUF files): read through its dequantization.
    Ggml(GgmlType),
}

impl SourceDType {
    /// Bytes per element; for a GGML block type, bytes per block.
    pub fn size(self) -> usize {
        match self {
            SourceDType::Ggml(t) => t.block().1,
            SourceDType::F64 | SourceDType::I64 => 8,
            SourceDType::F32 | SourceDType::I32 => 4,
            SourceDType::F16 | SourceDType::BF16 | SourceDType::I16 => 2,
            SourceDType::I8 | SourceDType::U8 | SourceDType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            SourceDType::F64 | SourceDType::F32 | SourceDType::F16 | SourceDType::BF16 | SourceDType::Ggml(_)
        )
    }

    /// The safetensors header spelling.
    pub fn from_safetensors(name: &str) -> Option<Self> {
        Some(match name {
            "F64" => SourceDType::F64,
            "F32" => SourceDType::F32,
            "F16" => SourceDType::F16,
            "BF16" => SourceDType::BF16,
            "I64" => SourceDType::I64,
            "I32" => SourceDType::I32,
            "I16" => SourceDType::I16,
            "I8" => SourceDType::I8,
            "U8" => SourceDType::U8,
            "BOOL" => SourceDType::Bool,
            _ => return None,
        })
    }

    /// PyTorch's legacy storage class names (`torch.FloatStorage`, ...).
    pub fn from_torch_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => SourceDType::F64,
            "FloatStorage" => SourceDType::F32,
            "HalfStorage" => SourceDType::F16,
            "BFloat16Storage" => SourceDType::BF16,
            "LongStorage" => SourceDType::I64,
            "IntStorage" => SourceDType::I32,
            "ShortStorage" => SourceDType::I16,
            "CharStorage" => SourceDType::I8,
            "ByteStorage" => SourceDType::U8,
            "BoolStorage" => SourceDType::Bool,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SourceDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let SourceDType::Ggml(t) = self {
            return write!(f, "{t}");
        }
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

/// The floating-point type a model's weights are loaded in (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatType {
    #[default]
    F32,
    F16,
    BF16,
}

impl FloatType {
    pub fn dtype(self) -> DType {
        match self {
            FloatType::F32 => DType::F32,
            FloatType::F16 => DType::F16,
            FloatType::BF16 => DType::BF16,
        }
    }

    pub fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }

    /// `torch_dtype` spellings in HF configs map here too.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" | "fp32" => FloatType::F32,
            "f16" | "float16" | "half" | "fp16" => FloatType::F16,
            "bf16" | "bfloat16" => FloatType::BF16,
            _ => return None,
        })
    }
}

impl std::str::FromStr for FloatType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FloatType::parse(s).ok_or_else(|| format!("unknown dtype `{s}` (expected f32, f16 or bf16)"))
    }
}

impl std::fmt::Display for FloatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::BF16 => "bf16",
        })
    }
}

/// Reads one little-endian element as f32 (exact for f16/bf16; f64 rounds like torch's cast).
fn read_f32(src: SourceDType, b: &[u8]) -> f32 {
    match src {
        SourceDType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        SourceDType::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        SourceDType::BF16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        SourceDType::F64 => f64::from_le_bytes(b[..8].try_into().unwrap()) as f32,
        _ => unreachable!("integer tensors are rejected before conversion"),
    }
}

/// Writes the values of `src` (little-endian `from` elements, 8-byte aligned) into `dst`
/// (`to` elements, aligned for them). Uses `half`'s vectorised slice conversions (F16C on x86)
/// where one side is f32.
pub(crate) fn convert_chunk(src: &[u8], from: SourceDType, to: FloatType, dst: &mut [u8]) {
    use half::slice::HalfFloatSliceExt;
    fn view<T>(bytes: &[u8]) -> &[T] {
        // SAFETY: callers pass 8-byte aligned chunks whose length is a multiple of T's size;
        // every bit pattern is a valid f32/f16/bf16/u16.
        let (head, body, _) = unsafe { bytes.align_to::<T>() };
        assert!(head.is_empty(), "conversion source must be aligned");
        body
    }
    assert_eq!(src.len() / from.size() * to.size(), dst.len(), "conversion buffer sizes");
    fn dst_f32(dst: &mut [u8]) -> &mut [f32] {
        // SAFETY: `out` is freshly resized; f32 has no invalid bit patterns.
        let (head, body, _) = unsafe { dst.align_to_mut::<f32>() };
        assert!(head.is_empty(), "conversion target must be aligned");
        body
    }
    match (from, to) {
        (SourceDType::F32, FloatType::F32) | (SourceDType::F16, FloatType::F16) | (SourceDType::BF16, FloatType::BF16) => {
            dst.copy_from_slice(src)
        }
        (SourceDType::F16, FloatType::F32) => view::<f16>(src).convert_to_f32_slice(dst_f32(dst)),
        (SourceDType::BF16, FloatType::F32) => view::<bf16>(src).convert_to_f32_slice(dst_f32(dst)),
        (SourceDType::F32, FloatType::F16) => {
            let tmp: &mut [f16] = unsafe { dst.align_to_mut::<f16>().1 };
            tmp.convert_from_f32_slice(view::<f32>(src))
        }
        (SourceDType::F32, FloatType::BF16) => {
            let tmp: &mut [bf16] = unsafe { dst.align_to_mut::<bf16>().1 };
            tmp.convert_from_f32_slice(view::<f32>(src))
        }
        // Remaining pairs (bf16<->f16, f64 -> anything) go through f32 one element at a time.
        // f64 -> f16 through f32 can double-round; no checkpoint we know stores f64 weights.
        _ => {
            for (i, c) in src.chunks_exact(from.size()).enumerate() {
                let v = read_f32(from, c);
                match to {
                    FloatType::F32 => dst[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes()),
                    FloatType::F16 => dst[i * 2..i * 2 + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                    FloatType::BF16 => dst[i * 2..i * 2 + 2].copy_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
                }
            }
        }
    }
}

/// Zeroed storage for `numel` elements of `ty` whose allocation Burn can adopt without a copy.
/// Zeroed integer vectors come from `calloc`, i.e. untouched pages, so no pass over memory.
pub(crate) fn zeroed_storage(ty: FloatType, numel: usize) -> Storage {
    match ty {
        FloatType::F32 => Storage::F32(vec![0f32; numel]),
        FloatType::F16 | FloatType::BF16 => Storage::Half(vec![0u16; numel], ty),
    }
}

pub(crate) enum Storage {
    F32(Vec<f32>),
    Half(Vec<u16>, FloatType),
}

impl Storage {
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: viewing initialised plain numbers as bytes.
        match self {
            Storage::F32(v) => unsafe { v.align_to_mut::<u8>().1 },
            Storage::Half(v, _) => unsafe { v.align_to_mut::<u8>().1 },
        }
    }

    pub(crate) fn into_tensor_data(self, shape: Vec<usize>) -> burn::tensor::TensorData {
        use burn::tensor::TensorData;
        fn retype<T>(mut v: Vec<u16>) -> Vec<T> {
            assert!(std::mem::size_of::<T>() == 2 && std::mem::align_of::<T>() == 2);
            let (ptr, len, cap) = (v.as_mut_ptr(), v.len(), v.capacity());
            std::mem::forget(v);
            // SAFETY: same size and alignment, every bit pattern valid for f16/bf16.
            unsafe { Vec::from_raw_parts(ptr as *mut T, len, cap) }
        }
        match self {
            Storage::F32(v) => TensorData::new(v, shape),
            Storage::Half(v, FloatType::BF16) => TensorData::new(retype::<bf16>(v), shape),
            Storage::Half(v, _) => TensorData::new(retype::<f16>(v), shape),
        }
    }
}

/// Converts little-endian float bytes into a tensor of `to` (a plain copy when the types agree).
#[cfg(test)]
pub(crate) fn convert_float(bytes: &[u8], from: SourceDType, to: FloatType, shape: Vec<usize>) -> TensorData {
    let aligned: Vec<u64> = bytes.chunks(8).map(|c| { let mut b = [0u8; 8]; b[..c.len()].copy_from_slice(c); u64::from_le_bytes(b) }).collect();
    let src = unsafe { std::slice::from_raw_parts(aligned.as_ptr() as *const u8, bytes.len()) };
    let mut out = vec![0u8; bytes.len() / from.size() * to.size()];
    convert_chunk(src, from, to, &mut out);
    TensorData::from_bytes_vec(out, shape, to.dtype())
}

/// Reads integer tensors (token ids, counters) as i64.
pub(crate) fn convert_int(bytes: &[u8], from: SourceDType) -> Option<Vec<i64>> {
    let size = from.size();
    let conv = |b: &[u8]| -> i64 {
        match from {
            SourceDType::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()),
            SourceDType::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as i64,
            SourceDType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            SourceDType::I8 => b[0] as i8 as i64,
            SourceDType::U8 | SourceDType::Bool => b[0] as i64,
            _ => unreachable!(),
        }
    };
    if from.is_float() {
        return None;
    }
    Some(bytes.chunks_exact(size).map(conv).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        let x: f32 = 1.0 + 2f32.powi(-11); // halfway between two f16 values
        let out = convert_float(&x.to_le_bytes(), SourceDType::F32, FloatType::F16, vec![1]);
        assert_eq!(out.as_slice::<f16>().unwrap()[0].to_f32(), 1.0);
    }

    #[test]
    fn bf16_to_f32_is_exact() {
        let v = bf16::from_f32(-3.140625);
        let out = convert_float(&v.to_bits().to_le_bytes(), SourceDType::BF16, FloatType::F32, vec![1]);
        assert_eq!(out.as_slice::<f32>().unwrap()[0], -3.140625);
    }
}
