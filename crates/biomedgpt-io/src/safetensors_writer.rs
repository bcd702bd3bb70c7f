//! Streams a safetensors file tensor by tensor, so files larger than memory can be written
//! (checkpoint conversion, random benchmark models).

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::dtype::SourceDType;

fn dtype_name(d: SourceDType) -> std::io::Result<&'static str> {
    Ok(match d {
        SourceDType::F64 => "F64",
        SourceDType::F32 => "F32",
        SourceDType::F16 => "F16",
        SourceDType::BF16 => "BF16",
        SourceDType::I64 => "I64",
        SourceDType::I32 => "I32",
        SourceDType::I16 => "I16",
        SourceDType::I8 => "I8",
        SourceDType::U8 => "U8",
        SourceDType::Bool => "BOOL",
        SourceDType::Ggml(t) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("safetensors has no {t} type (GGML block types are written as GGUF)"),
            ));
        }
    })
}

/// One tensor to write: name, dtype, shape.
pub struct TensorSpec {
    pub name: String,
    pub dtype: SourceDType,
    pub shape: Vec<usize>,
}

/// Writes `specs` in order; `fill(i, buf)` must append exactly the bytes of tensor `i`
/// (little-endian). The file is written to a temporary name and renamed when complete.
pub fn write_streaming(
    path: &Path,
    specs: &[TensorSpec],
    metadata: &[(&str, &str)],
    mut fill: impl FnMut(usize, &mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        header.insert("__metadata__".into(), meta.into());
    }
    let mut offset = 0usize;
    for spec in specs {
        let nbytes = spec.shape.iter().product::<usize>() * spec.dtype.size();
        header.insert(
            spec.name.clone(),
            serde_json::json!({"dtype": dtype_name(spec.dtype)?, "shape": spec.shape, "data_offsets": [offset, offset + nbytes]}),
        );
        offset += nbytes;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let tmp = path.with_extension("safetensors.partial");
    let mut out = BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut buf = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        buf.clear();
        fill(i, &mut buf)?;
        let nbytes = spec.shape.iter().product::<usize>() * spec.dtype.size();
        if buf.len() != nbytes {
            return Err(std::io::Error::other(format!(
                "tensor `{}`: {} bytes given, {nbytes} expected",
                spec.name,
                buf.len()
            )));
        }
        out.write_all(&buf)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(tmp, path)
}
