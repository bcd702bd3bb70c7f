//! Minimal NumPy `.npy` (format 1.0) and `.npz` (stored zip of `.npy`) writers for float32 arrays.

use std::io::Write;
use std::path::Path;

/// Encodes a little-endian float32 C-order array as `.npy` bytes.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "npy shape does not match data");
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes an `.npy` file atomically (temporary file, then rename).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    write_atomic(path, &encode_f32(shape, data))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename. An
/// error names `path` (issue 39, D20), and no temporary file is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
    })
}

/// Reads a little-endian float32 `.npy` (as written by numpy or [`encode_f32`]). Every length
/// in the file is checked against the bytes there (a forged file is an error, never a panic:
/// issue 39, D11).
pub fn read_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        2 | 3 => return Err(format!("a version-2 .npy header needs 12 bytes, the file has {}", bytes.len())),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| format!("the header says {header_len} bytes, the file has {} after the preamble", bytes.len() - start))?;
    let header = std::str::from_utf8(header).map_err(|e| format!("header: {e}"))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        let shown: String = header.chars().take(200).flat_map(char::escape_debug).collect();
        return Err(format!("expected a C-order little-endian float32 array, header {shown}"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in .npy header")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|e| format!("shape `{s}`: {e}")))
        .collect::<Result<_, _>>()?;
    let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let payload = &bytes[start + header_len..];
    if values.checked_mul(4) != Some(payload.len()) {
        return Err(format!("shape {shape:?} needs {values} float32 values, the file holds {} bytes of data", payload.len()));
    }
    let data: Vec<f32> = payload.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_alignment() {
        let bytes = encode_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let (shape, data) = read_f32(&bytes).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, vec![1., 2., 3., 4., 5., 6.]);
    }

    /// Issue 39, D11: forged files are errors, not panics.
    #[test]
    fn forged_files_are_errors() {
        let good = encode_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        assert!(read_f32(&good[..10]).is_err(), "a 10-byte file");
        let mut v2 = b"\x93NUMPY\x02\x00\x10\x00".to_vec();
        assert!(read_f32(&v2).unwrap_err().contains("12 bytes"), "a v2 header cut short");
        v2.extend_from_slice(&[0xff, 0xff]);
        assert!(read_f32(&v2).unwrap_err().contains("the header says"), "a header longer than the file");
        let forge = |shape: &str, payload: &[u8]| {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
            [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes(), payload].concat()
        };
        assert!(read_f32(&forge("(2,)", &[0; 8])).is_ok());
        let e = read_f32(&forge("(4294967296, 4294967296, 4294967296)", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = read_f32(&forge("(4294967296, 4294967296)", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = read_f32(&forge("(65536, 65536)", &[0; 16])).unwrap_err();
        assert!(e.contains("needs 4294967296 float32 values"), "{e}");
        assert!(read_f32(&forge("(-1,)", &[])).unwrap_err().contains("shape `-1`"));
        let cut = &good[..good.len() - 4];
        assert!(read_f32(cut).unwrap_err().contains("needs 6 float32 values"));
        for n in 0..good.len() {
            let _ = read_f32(&good[..n]);
        }
    }
}

/// Writes several float32 arrays as an uncompressed `.npz` (what `numpy.savez` writes), atomically.
pub fn write_npz_f32(path: &Path, arrays: &[(String, Vec<usize>, Vec<f32>)]) -> std::io::Result<()> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, shape, data) in arrays {
            zip.start_file(format!("{name}.npy"), options).map_err(std::io::Error::other)?;
            zip.write_all(&encode_f32(shape, data))?;
        }
        zip.finish().map_err(std::io::Error::other)?;
    }
    write_atomic(path, &cursor.into_inner())
}
