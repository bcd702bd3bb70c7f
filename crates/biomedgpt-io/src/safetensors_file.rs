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
        let nbytes = entry.shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d));
        if end < begin || Some(end - begin) != nbytes {
            return Err(LoadError::format(
                path,
                format!(
                    "tensor `{name}`: {} bytes for shape {:?} of {dtype}",
                    end.saturating_sub(begin),
                    entry.shape
                ),
            ));
        }
        if data_start.checked_add(end).is_none_or(|e| e > bytes.len()) {
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
                offset: data_start + begin,
                nbytes: end - begin,
            },
        ));
    }
    // Two tensors over the same bytes: a writing one would change the other (the safetensors
    // library refuses this too).
    let mut spans: Vec<(usize, usize, &str)> = out.iter().map(|(n, e)| (e.offset, e.offset + e.nbytes, n.as_str())).collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((_, end, a), (begin, _, b)) = (pair[0], pair[1]);
        if begin < end {
            return Err(LoadError::format(path, format!("tensors `{a}` and `{b}` overlap in the file (bad data_offsets)")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    /// Overlapping offsets and sizes that overflow are refused (issue 26).
    #[test]
    fn overlaps_and_overflowing_shapes_are_refused() {
        let p = std::path::Path::new("t.safetensors");
        let ok = file(r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#, 12);
        assert_eq!(super::entries(p, &ok).unwrap().len(), 2);
        let overlap = file(r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, 12);
        let e = super::entries(p, &overlap).unwrap_err().to_string();
        assert!(e.contains("overlap"), "{e}");
        let huge = file(r#"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}"#, 0);
        assert!(super::entries(p, &huge).unwrap_err().to_string().contains("bytes for shape"));
        let past = file(r#"{"a": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}}"#, 0);
        assert!(super::entries(p, &past).unwrap_err().to_string().contains("truncated"));
    }
}
