//! The safetensors layout: 8-byte little-endian header length, a JSON header mapping names to
//! `{dtype, shape, data_offsets}`, then the raw bytes. Only the header is parsed here; tensor bytes
//! are read from the memory map when a model asks for them.

use std::path::Path;

use crate::checkpoint::RawEntry;
use crate::dtype::SourceDType;
use crate::error::LoadError;

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Lists the tensors of a safetensors file held in `bytes` (the whole mapped file).
pub(crate) fn entries(path: &Path, bytes: &[u8]) -> Result<Vec<(String, RawEntry)>, LoadError> {
    if bytes.len() < 8 {
        return Err(LoadError::format(path, "truncated safetensors file: no header length"));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8usize
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            LoadError::format(
                path,
                format!(
                    "truncated safetensors file: header claims {header_len} bytes, file has {}",
                    bytes.len()
                ),
            )
        })?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| LoadError::format(path, format!("bad safetensors header: {e}")))?;
    let mut out = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| LoadError::format(path, format!("bad header entry `{name}`: {e}")))?;
        let dtype = SourceDType::from_safetensors(&entry.dtype).ok_or_else(|| {
            LoadError::format(path, format!("tensor `{name}` has unsupported dtype {}", entry.dtype))
        })?;
        let [begin, end] = entry.data_offsets;
        let numel: usize = entry.shape.iter().product();
        if end < begin || end - begin != numel * dtype.size() {
            return Err(LoadError::format(
                path,
                format!(
                    "tensor `{name}`: {} bytes for shape {:?} of {dtype}",
                    end.saturating_sub(begin),
                    entry.shape
                ),
            ));
        }
        let offset = data_start + begin;
        if data_start + end > bytes.len() {
            return Err(LoadError::format(
                path,
                format!(
                    "truncated file: tensor `{name}` ends at byte {}, file has {} bytes",
                    data_start + end,
                    bytes.len()
                ),
            ));
        }
        out.push((
            name,
            RawEntry {
                file: 0,
                dtype,
                shape: entry.shape,
                offset,
                nbytes: end - begin,
            },
        ));
    }
    Ok(out)
}
