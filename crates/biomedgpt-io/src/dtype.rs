use burn::tensor::DType;
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
}

impl SourceDType {
    pub fn size(self) -> usize {
        match self {
            SourceDType::F64 | SourceDType::I64 => 8,
            SourceDType::F32 | SourceDType::I32 => 4,
            SourceDType::F16 | SourceDType::BF16 | SourceDType::I16 => 2,
            SourceDType::I8 | SourceDType::U8 | SourceDType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            SourceDType::F64 | SourceDType::F32 | SourceDType::F16 | SourceDType::BF16
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

/// Converts little-endian float bytes into `to`'s little-endian bytes. Same-type input is a copy.
pub(crate) fn convert_float(bytes: &[u8], from: SourceDType, to: FloatType) -> Vec<u8> {
    let same = matches!(
        (from, to),
        (SourceDType::F32, FloatType::F32)
            | (SourceDType::F16, FloatType::F16)
            | (SourceDType::BF16, FloatType::BF16)
    );
    if same {
        return bytes.to_vec();
    }
    let n = bytes.len() / from.size();
    let mut out = Vec::with_capacity(n * to.size());
    for chunk in bytes.chunks_exact(from.size()) {
        let v = read_f32(from, chunk);
        match to {
            FloatType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            // f64 -> f16 through f32 can double-round; no checkpoint we know stores f64 weights.
            FloatType::F16 => out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
            FloatType::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()),
        }
    }
    out
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
        let out = convert_float(&x.to_le_bytes(), SourceDType::F32, FloatType::F16);
        assert_eq!(f16::from_bits(u16::from_le_bytes([out[0], out[1]])).to_f32(), 1.0);
    }

    #[test]
    fn bf16_to_f32_is_exact() {
        let v = bf16::from_f32(-3.140625);
        let out = convert_float(&v.to_bits().to_le_bytes(), SourceDType::BF16, FloatType::F32);
        assert_eq!(f32::from_le_bytes(out[..4].try_into().unwrap()), -3.140625);
    }
}
