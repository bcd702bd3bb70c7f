//! Writes GGUF v3 files as llama.cpp's `gguf.cpp` / gguf-py's `GGUFWriter` lay them out: header,
//! metadata in the order given, tensor infos, padding to `general.alignment` (32), each tensor's
//! data padded to the alignment. Tensors are streamed one at a time (a 7B model is never held in
//! memory), into a temporary file renamed into place when complete.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use biomedgpt_kernels::quant::GgmlType;

use crate::gguf::{MAGIC, MetaValue};

const ALIGNMENT: usize = 32;

/// One tensor to write: its name, its shape in PyTorch order (outermost first) and its type.
#[derive(Debug, Clone)]
pub struct GgufTensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl GgufTensorSpec {
    /// Bytes of the tensor's data, or an error when its rows are not whole blocks.
    pub fn nbytes(&self) -> std::io::Result<usize> {
        let row = *self.shape.last().unwrap_or(&1);
        let rows: usize = self.shape[..self.shape.len().saturating_sub(1)].iter().product();
        let row_bytes = self.ty.row_bytes(row).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tensor `{}`: rows of {row} values are not whole {} blocks of {}", self.name, self.ty, self.ty.block().0),
            )
        })?;
        Ok(rows * row_bytes)
    }
}

/// Appends f32 `values` (rows of `row_len`) to `buf` as GGUF stores them in `ty`: F32, F16, or
/// quantized with llama.cpp's reference quantizers. Errors for other types, or for rows that are
/// not whole blocks of `ty`.
pub fn append_as(ty: GgmlType, values: &[f32], row_len: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| buf.extend_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes())),
        ty if biomedgpt_kernels::quant::QUANTIZABLE.contains(&ty) => {
            let bytes = ty
                .row_bytes(row_len)
                .filter(|_| row_len > 0 && values.len() % row_len == 0)
                .ok_or_else(|| invalid(format!("{} values in rows of {row_len} are not whole {ty} blocks", values.len())))?;
            let start = buf.len();
            buf.resize(start + values.len() / row_len * bytes, 0);
            biomedgpt_kernels::quant::quantize_rows(ty, values, row_len, &mut buf[start..]);
        }
        other => return Err(invalid(format!("{other} is not a type GGUF tensors are written in here"))),
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) -> std::io::Result<()> {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => put_string(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(items) => {
            let item_type = items.first().map(type_id).unwrap_or(0);
            if items.iter().any(|i| type_id(i) != item_type) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "GGUF arrays hold one type"));
            }
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i)?;
            }
        }
    }
    Ok(())
}

/// Writes `path`. `fill(i, buf)` appends exactly the bytes of tensor `i` (little-endian; block
/// types as their blocks). Metadata keys are written in the order given.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, MetaValue)],
    tensors: &[GgufTensorSpec],
    mut fill: impl FnMut(usize, &mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut header, key);
        header.extend_from_slice(&type_id(value).to_le_bytes());
        put_value(&mut header, value)?;
    }
    let mut offset = 0usize;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let nbytes = t.nbytes()?;
        put_string(&mut header, &t.name);
        header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            header.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        header.extend_from_slice(&t.ty.id().to_le_bytes());
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += nbytes.div_ceil(ALIGNMENT) * ALIGNMENT;
        sizes.push(nbytes);
    }
    header.resize(header.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);

    let tmp = path.with_extension("gguf.partial");
    let file = std::fs::File::create(&tmp)?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    out.write_all(&header)?;
    let mut buf = Vec::new();
    for (i, &nbytes) in sizes.iter().enumerate() {
        buf.clear();
        fill(i, &mut buf)?;
        if buf.len() != nbytes {
            return Err(std::io::Error::other(format!("tensor `{}`: {} bytes given, {nbytes} expected", tensors[i].name, buf.len())));
        }
        buf.resize(nbytes.div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        out.write_all(&buf)?;
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    let _ = file.stream_position()?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Gguf;

    #[test]
    fn written_files_read_back() {
        let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
        let path = scratch.path().join(format!("biomedgpt-writer-{}.gguf", std::process::id()));
        let meta = vec![
            ("general.architecture".to_string(), MetaValue::String("llama".into())),
            ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(vec![MetaValue::String("a".into()), MetaValue::String("b".into())])),
            ("llama.block_count".to_string(), MetaValue::U32(2)),
        ];
        let tensors = vec![
            GgufTensorSpec { name: "w".into(), shape: vec![2, 3], ty: GgmlType::F32 },
            GgufTensorSpec { name: "q".into(), shape: vec![1, 32], ty: GgmlType::Q8_0 },
        ];
        write_gguf(&path, &meta, &tensors, |i, buf| {
            if i == 0 {
                for v in 0..6 {
                    buf.extend_from_slice(&(v as f32).to_le_bytes());
                }
            } else {
                buf.extend_from_slice(&[7u8; 34]);
            }
            Ok(())
        })
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let g = Gguf::parse(&path, &bytes).unwrap();
        assert_eq!(g.metadata.get("llama.block_count"), Some(&MetaValue::U32(2)));
        assert_eq!(g.tensors[0].shape(), vec![2, 3]);
        assert_eq!(g.tensors[1].ty, GgmlType::Q8_0);
        let at = g.data_offset + g.tensors[0].offset;
        assert_eq!(&bytes[at + 4..at + 8], &1f32.to_le_bytes());
        assert_eq!(g.tensors[1].offset % 32, 0);
    }

    #[test]
    fn partial_rows_are_refused() {
        let t = GgufTensorSpec { name: "w".into(), shape: vec![2, 100], ty: GgmlType::Q4K };
        assert!(t.nbytes().unwrap_err().to_string().contains("not whole Q4_K blocks"));
    }
}
