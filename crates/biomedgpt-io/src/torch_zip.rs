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
        let numel: usize = t.shape.iter().product();
        let size = t.dtype.size();
        let begin = t.offset * size;
        let nbytes = numel * size;
        if begin + nbytes > storage_len || storage_offset + storage_len > file_len {
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
