//! PyTorch's zip checkpoint format (`torch.save` since 1.6): `<archive>/data.pkl` describes the
//! object, `<archive>/data/<key>` holds each storage's raw little-endian bytes, stored without
//! compression. We locate each storage inside the mapped zip and point tensors straight at it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::checkpoint::RawEntry;
use crate::error::LoadError;
use crate::pickle;

pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

pub(crate) fn entries(path: &Path, file_len: usize) -> Result<Vec<(String, RawEntry)>, LoadError> {
    let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        LoadError::format(path, format!("not a readable PyTorch zip checkpoint ({e}); truncated file?"))
    })?;

    let mut pickle_name = None;
    let mut storages: HashMap<String, (usize, usize)> = HashMap::new(); // name -> (offset, size)
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| LoadError::format(path, format!("zip entry {i}: {e}")))?;
        let name = entry.name().to_string();
        if name.ends_with("/data.pkl") && pickle_name.is_none() {
            pickle_name = Some(name.clone());
        }
        if let Some(pos) = name.find("/data/") {
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(LoadError::format(
                    path,
                    format!("storage {name} is compressed; PyTorch never writes that"),
                ));
            }
            let key = name[pos + "/data/".len()..].to_string();
            storages.insert(key, (entry.data_start() as usize, entry.size() as usize));
        }
    }
    let pickle_name = pickle_name
        .ok_or_else(|| LoadError::format(path, "zip has no data.pkl: not a torch.save checkpoint"))?;
    let mut pkl = Vec::new();
    archive
        .by_name(&pickle_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| LoadError::format(path, format!("reading {pickle_name}: {e}")))?;
    let root = pickle::load(&pkl)
        .map_err(|e| LoadError::format(path, format!("cannot parse {pickle_name}: {e}")))?;

    let mut tensors = Vec::new();
    pickle::flatten_tensors(root, "", &mut tensors);
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (storage_offset, storage_len) = *storages.get(&t.storage_key).ok_or_else(|| {
            LoadError::format(path, format!("tensor `{name}` refers to missing storage {}", t.storage_key))
        })?;
        if !is_contiguous(&t.shape, &t.stride) {
            return Err(LoadError::format(
                path,
                format!(
                    "tensor `{name}` is not contiguous (shape {:?}, stride {:?}); re-save it with .contiguous()",
                    t.shape, t.stride
                ),
            ));
        }
        // Every size from the pickle is checked arithmetic: a forged offset or shape must not wrap
        // around (release builds have no overflow checks) into another tensor's bytes.
        let size = t.dtype.size();
        let span = t.shape.iter().try_fold(size, |n, &d| n.checked_mul(d)).and_then(|nbytes| {
            let begin = t.offset.checked_mul(size)?;
            Some((begin, nbytes, begin.checked_add(nbytes)?))
        });
        let Some((begin, nbytes, end)) = span else {
            return Err(LoadError::format(
                path,
                format!("tensor `{name}`: storage offset {} with shape {:?} overflows the address space", t.offset, t.shape),
            ));
        };
        if end > storage_len || storage_offset.checked_add(storage_len).is_none_or(|e| e > file_len) {
            return Err(LoadError::format(
                path,
                format!("truncated file: tensor `{name}` lies beyond the end of its storage"),
            ));
        }
        out.push((
            name,
            RawEntry {
                file: 0,
                dtype: t.dtype,
                shape: t.shape,
                offset: storage_offset + begin,
                nbytes,
            },
        ));
    }
    Ok(out)
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&dim, &st) in shape.iter().zip(stride).rev() {
        if dim != 1 && st != expected {
            return false;
        }
        expected *= dim;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// A `torch.save` zip of one float32 tensor `w` of shape [2] with the storage offset given as
    /// LONG1 bytes (little-endian two's complement), over a 4-float storage.
    fn checkpoint(dir: &std::path::Path, offset: &[u8]) -> std::path::PathBuf {
        let mut p: Vec<u8> = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ".to_vec();
        p.push(0x8a);
        p.push(offset.len() as u8);
        p.extend_from_slice(offset);
        p.extend_from_slice(b"K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.");
        let path = dir.join(format!("offset-{}.pth", offset.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", options).unwrap();
        zip.write_all(&p).unwrap();
        zip.start_file("archive/data/0", options).unwrap();
        zip.write_all(&[1f32, 2., 3., 4.].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()).unwrap();
        zip.finish().unwrap();
        path
    }

    /// Defect D3 (issue 26): a negative or huge storage offset used to be accepted (-1 read the 4
    /// bytes before the storage; +-2^62 wrapped around to 0). Now each is refused by name, and the
    /// offsets that fit still read the right values.
    #[test]
    fn forged_storage_offsets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let entries = |offset: &[u8]| super::entries(&checkpoint(dir.path(), offset), usize::MAX);
        let ok = entries(&[2]).unwrap();
        assert_eq!(ok[0].1.nbytes, 8);
        let first = entries(&[0]).unwrap()[0].1.offset;
        assert_eq!(ok[0].1.offset, first + 8, "offset 2 floats");
        assert!(entries(&[3]).unwrap_err().to_string().contains("beyond the end of its storage"));
        let negative = entries(&[0xff]).unwrap_err().to_string();
        assert!(negative.contains("offset -1 is negative"), "{negative}");
        let huge = (1i64 << 62).to_le_bytes();
        let e = entries(&huge).unwrap_err().to_string();
        assert!(e.contains("overflows") || e.contains("beyond"), "{e}");
        let e = entries(&(-(1i64 << 62)).to_le_bytes()).unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
    }
}
