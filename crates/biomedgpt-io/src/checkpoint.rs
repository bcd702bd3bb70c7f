use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{AllocationProperty, Bytes, TensorData};
use memmap2::{Mmap, UncheckedAdvice};

use crate::dtype::{FloatType, SourceDType, convert_chunk, convert_int, zeroed_storage};
use crate::error::LoadError;
use crate::gguf::Gguf;
use crate::{safetensors_file, torch_zip};
use biomedgpt_kernels::quant::{GgmlType, dequantize};

/// Where one tensor's bytes lie in one of the checkpoint's files.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub file: usize,
    pub dtype: SourceDType,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub nbytes: usize,
}

/// Public description of a stored tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: SourceDType,
    pub shape: Vec<usize>,
}

struct MappedFile {
    path: PathBuf,
    file: File,
    map: Arc<Mmap>,
}

/// A tensor's bytes inside a mapped file, kept alive by the tensor that uses them.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// A set of memory-mapped checkpoint files (one file, or the shards of one model) with a
/// name -> tensor index. Opening reads only headers; tensor bytes are read on demand.
pub struct Checkpoint {
    files: Vec<MappedFile>,
    entries: BTreeMap<String, RawEntry>,
    /// The header of a GGUF checkpoint (its metadata holds the config and the tokenizer).
    gguf: Option<Gguf>,
    /// Tensors whose rows are read in another order than stored: result row i = stored row
    /// `order[i]` (GGUF's q/k projections, see [`Checkpoint::reorder_rows`]).
    row_orders: BTreeMap<String, Arc<Vec<usize>>>,
    /// Reused, 8-byte aligned buffer for reads that need a dtype conversion.
    staging: std::sync::Mutex<Vec<u64>>,
}

/// Conversions read the file in chunks of this many bytes (a multiple of every element size).
const STAGING_BYTES: usize = 32 << 20;

const DIR_CANDIDATES: &str = "model.safetensors.index.json, model.safetensors, \
pytorch_model.bin.index.json, pytorch_model.bin, or *.safetensors / *.pth / *.bin files";

impl Checkpoint {
    /// Opens a checkpoint file, a sharded index (`*.index.json`) or a model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::open_files(&find_weight_files(path)?);
        }
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_files(&shards_from_index(path)?);
        }
        Self::open_files(&[path.to_path_buf()])
    }

    /// Opens several files as one checkpoint (shards). Keys must not repeat across files.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = BTreeMap::new();
        let mut gguf = None;
        for (index, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
            // SAFETY: the file is opened read-only and mapped privately; users must not modify a
            // checkpoint while it loads (the same contract as safetensors and PyTorch mmap).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
            let listed = if Gguf::sniff(&map) {
                if paths.len() > 1 {
                    return Err(LoadError::format(path, "split GGUF files (gguf-split) are not supported: merge them with `llama-gguf-split --merge`"));
                }
                let header = Gguf::parse(path, &map)?;
                let listed = header.entries();
                gguf = Some(header);
                listed
            } else if torch_zip::is_zip(&map) {
                torch_zip::entries(path, map.len())?
            } else if path.extension().is_some_and(|e| e == "safetensors") || looks_like_safetensors(&map) {
                safetensors_file::entries(path, &map)?
            } else {
                return Err(LoadError::format(
                    path,
                    "neither a safetensors file nor a PyTorch zip checkpoint (legacy non-zip \
                     torch.save files are not supported: re-save with torch >= 1.6)",
                ));
            };
            for (name, mut entry) in listed {
                entry.file = index;
                if entries.contains_key(&name) {
                    return Err(LoadError::format(path, format!("tensor `{name}` appears in two shards")));
                }
                entries.insert(name, entry);
            }
            files.push(MappedFile {
                path: path.clone(),
                file,
                map: Arc::new(map),
            });
        }
        Ok(Checkpoint {
            files,
            entries,
            gguf,
            row_orders: BTreeMap::new(),
            staging: std::sync::Mutex::new(Vec::new()),
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn info(&self, key: &str) -> Option<TensorInfo> {
        self.entries.get(key).map(|e| TensorInfo {
            dtype: e.dtype,
            shape: e.shape.clone(),
        })
    }

    /// The parsed header when the checkpoint is a GGUF file.
    pub fn gguf(&self) -> Option<&Gguf> {
        self.gguf.as_ref()
    }

    /// Renames tensors: `rename(stored)` gives the name models ask for, or `None` to keep the
    /// stored one (GGUF's `blk.0.attn_q.weight` -> HF's `model.layers.0.self_attn.q_proj.weight`,
    /// from the one table of the model crate). Two tensors may not end up with one name.
    pub fn rename(&mut self, rename: impl Fn(&str) -> Option<String>) -> Result<(), LoadError> {
        let mut renamed = BTreeMap::new();
        for (name, entry) in std::mem::take(&mut self.entries) {
            let new = rename(&name).unwrap_or_else(|| name.clone());
            if renamed.contains_key(&new) {
                return Err(LoadError::format(self.files[entry.file].path.clone(), format!("tensors `{name}` and another map to `{new}`")));
            }
            renamed.insert(new, entry);
        }
        self.entries = renamed;
        Ok(())
    }

    /// Reads `key`'s rows (outermost dimension) in `order`: row i of what [`Checkpoint::load`]
    /// returns is stored row `order[i]`. llama.cpp's converter stores LLaMA's q/k projection rows
    /// interleaved for its RoPE; this undoes it at load. `order` must be a permutation.
    pub fn reorder_rows(&mut self, key: &str, order: Vec<usize>) -> Result<(), LoadError> {
        let entry = self.entry(key)?;
        let rows = entry.shape.first().copied().unwrap_or(1);
        let mut seen = vec![false; rows];
        let is_permutation = order.len() == rows && order.iter().all(|&r| r < rows && !std::mem::replace(&mut seen[r], true));
        if !is_permutation {
            return Err(LoadError::format(
                self.files[entry.file].path.clone(),
                format!("row order for `{key}` is not a permutation of its {rows} rows"),
            ));
        }
        self.row_orders.insert(key.to_string(), Arc::new(order));
        Ok(())
    }

    /// The files this checkpoint reads.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// A view of every key, for models that read with [`WeightView::pp`].
    pub fn root(&self) -> WeightView<'_> {
        WeightView {
            ckpt: self,
            prefix: String::new(),
            rename: None,
        }
    }

    fn entry(&self, key: &str) -> Result<&RawEntry, LoadError> {
        self.entries.get(key).ok_or_else(|| LoadError::MissingKey {
            key: key.to_string(),
            hint: self.missing_hint(key),
        })
    }

    fn missing_hint(&self, key: &str) -> String {
        let tail: Vec<&str> = key.rsplitn(3, '.').take(2).collect();
        let suffix = format!("{}.{}", tail.get(1).unwrap_or(&""), tail[0]);
        let similar: Vec<&str> = self.keys().filter(|k| k.ends_with(&suffix)).take(3).collect();
        let files = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if similar.is_empty() {
            format!("{} tensors in {files}", self.entries.len())
        } else {
            format!("{} tensors in {files}; similar keys: {}", self.entries.len(), similar.join(", "))
        }
    }

    /// Copies a tensor's bytes out of the map, then tells the kernel it may drop those pages:
    /// this keeps resident memory near the size of the converted weights, not twice that.
    fn with_bytes<T>(&self, entry: &RawEntry, f: impl FnOnce(&[u8]) -> T) -> T {
        let file = &self.files[entry.file];
        let out = f(&file.map[entry.offset..entry.offset + entry.nbytes]);
        // SAFETY: the map is a read-only file mapping, so dropped pages are re-read from the file
        // if touched again; no Rust reference into this range outlives `f`.
        unsafe {
            let _ = file
                .map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, entry.offset, entry.nbytes);
        }
        out
    }

    /// Reads a float tensor, checking its shape, converted to `ty`.
    pub fn load(&self, key: &str, expected_shape: &[usize], ty: FloatType) -> Result<TensorData, LoadError> {
        let entry = self.entry(key)?;
        if entry.shape != expected_shape {
            return Err(LoadError::ShapeMismatch {
                key: key.to_string(),
                expected: expected_shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        self.load_any_shape(key, ty)
    }

    /// Reads a float tensor with whatever shape it has.
    pub fn load_any_shape(&self, key: &str, ty: FloatType) -> Result<TensorData, LoadError> {
        let entry = self.entry(key)?;
        if !entry.dtype.is_float() {
            return Err(LoadError::DType {
                key: key.to_string(),
                found: entry.dtype.to_string(),
                wanted: ty.to_string(),
            });
        }
        let data = match entry.dtype {
            SourceDType::Ggml(block) => self.read_dequantized(key, entry, block, ty)?,
            _ => self.load_plain(entry, ty)?,
        };
        match self.row_orders.get(key) {
            Some(order) => {
                let data = reorder_rows(data, order, ty);
                self.release(key);
                Ok(data)
            }
            None => Ok(data),
        }
    }

    /// A float tensor stored as a plain array: used in place when the file holds the type asked
    /// for, converted otherwise.
    fn load_plain(&self, entry: &RawEntry, ty: FloatType) -> Result<TensorData, LoadError> {
        let file = &self.files[entry.file];
        let stored_as_wanted = matches!(
            (entry.dtype, ty),
            (SourceDType::F32, FloatType::F32) | (SourceDType::F16, FloatType::F16) | (SourceDType::BF16, FloatType::BF16)
        );
        let aligned = (file.map.as_ptr() as usize + entry.offset) % entry.dtype.size() == 0;
        if stored_as_wanted && aligned {
            // Zero copy: the tensor reads the file's pages (shared with the page cache, copied
            // only if something writes to it), as llama.cpp does with mmap.
            let slice = MapSlice {
                map: file.map.clone(),
                start: entry.offset,
                len: entry.nbytes,
            };
            let bytes = Bytes::from_shared(bytes::Bytes::from_owner(slice), AllocationProperty::File);
            return Ok(TensorData::from_bytes(bytes, entry.shape.clone(), ty.dtype()));
        }
        self.read_converted(entry, ty)
    }

    /// Dequantizes a GGML block-quantized tensor into `ty`, a chunk of rows at a time through the
    /// staging buffer (f32 first, as gguf-py and transformers' GGUF loader do, then rounded once).
    fn read_dequantized(&self, key: &str, entry: &RawEntry, block: GgmlType, ty: FloatType) -> Result<TensorData, LoadError> {
        use std::os::unix::fs::FileExt;
        if !block.is_dequantizable() {
            return Err(LoadError::DType {
                key: key.to_string(),
                found: block.to_string(),
                wanted: format!("{ty} (GGML types this build reads: {})", GgmlType::DEQUANTIZABLE),
            });
        }
        let file = &self.files[entry.file];
        let row_len = entry.shape.last().copied().unwrap_or(1);
        let numel: usize = entry.shape.iter().product();
        let row_bytes = block.row_bytes(row_len).expect("checked when the header was read");
        let rows = if row_len == 0 { 0 } else { numel / row_len };
        // Chunks bounded on both sides: the blocks read and their f32 values (8x larger for Q4).
        let rows_per_chunk = (STAGING_BYTES / row_bytes.max(1)).min(STAGING_BYTES / (4 * row_len).max(1)).max(1);
        let mut storage = zeroed_storage(ty, numel);
        let out = storage.bytes_mut();
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let need = (rows_per_chunk * row_bytes).div_ceil(8);
        if staging.len() < need {
            staging.resize(need, 0);
        }
        // SAFETY: viewing initialised u64s as bytes.
        let buffer: &mut [u8] = unsafe { staging.align_to_mut::<u8>().1 };
        let mut values = if ty == FloatType::F32 { Vec::new() } else { vec![0f32; rows_per_chunk.min(rows) * row_len] };
        let mut row = 0;
        while row < rows {
            let n = rows_per_chunk.min(rows - row);
            let src = &mut buffer[..n * row_bytes];
            file.file
                .read_exact_at(src, (entry.offset + row * row_bytes) as u64)
                .map_err(|e| LoadError::io(&file.path, e))?;
            let first = row * row_len * ty.size();
            let dst = &mut out[first..first + n * row_len * ty.size()];
            if ty == FloatType::F32 {
                // SAFETY: the storage is a Vec<f32>, so `dst` is aligned f32s.
                let dst: &mut [f32] = unsafe { dst.align_to_mut::<f32>().1 };
                dequantize(block, src, dst);
            } else {
                let chunk = &mut values[..n * row_len];
                dequantize(block, src, chunk);
                // SAFETY: viewing f32s as bytes.
                let bytes: &[u8] = unsafe { chunk.align_to::<u8>().1 };
                convert_chunk(bytes, SourceDType::F32, ty, dst);
            }
            row += n;
        }
        Ok(storage.into_tensor_data(entry.shape.clone()))
    }

    /// Reads a tensor through the staging buffer with positioned reads (no page faults on the
    /// mapping), converting chunk by chunk into one buffer of the target type.
    fn read_converted(&self, entry: &RawEntry, ty: FloatType) -> Result<TensorData, LoadError> {
        use std::os::unix::fs::FileExt;
        let file = &self.files[entry.file];
        let numel = entry.nbytes / entry.dtype.size();
        let mut storage = zeroed_storage(ty, numel);
        let out = storage.bytes_mut();
        let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        if staging.len() < STAGING_BYTES / 8 {
            staging.resize(STAGING_BYTES / 8, 0);
        }
        // SAFETY: viewing initialised u64s as bytes.
        let buffer: &mut [u8] = unsafe { staging.align_to_mut::<u8>().1 };
        let mut done = 0;
        while done < entry.nbytes {
            let n = STAGING_BYTES.min(entry.nbytes - done);
            file.file
                .read_exact_at(&mut buffer[..n], (entry.offset + done) as u64)
                .map_err(|e| LoadError::io(&file.path, e))?;
            let first = done / entry.dtype.size() * ty.size();
            let count = n / entry.dtype.size() * ty.size();
            convert_chunk(&buffer[..n], entry.dtype, ty, &mut out[first..first + count]);
            done += n;
        }
        Ok(storage.into_tensor_data(entry.shape.clone()))
    }

    /// A matrix stored in a GGML block type, kept in its blocks: the file's bytes in place (or, for
    /// a tensor read in another row order, a reordered copy of them). `None` when the tensor is
    /// stored as plain floats. The shape is checked as [`Checkpoint::load`] does.
    pub fn load_blocks(&self, key: &str, expected_shape: &[usize]) -> Result<Option<biomedgpt_kernels::quant::QuantMatrix>, LoadError> {
        let entry = self.entry(key)?;
        let SourceDType::Ggml(ty) = entry.dtype else {
            return Ok(None);
        };
        if entry.shape != expected_shape {
            return Err(LoadError::ShapeMismatch { key: key.to_string(), expected: expected_shape.to_vec(), found: entry.shape.clone() });
        }
        if entry.shape.len() != 2 {
            return Err(LoadError::format(self.files[entry.file].path.clone(), format!("`{key}`: block-quantized tensors are read as matrices")));
        }
        let (rows, cols) = (entry.shape[0], entry.shape[1]);
        let file = &self.files[entry.file];
        let data: Arc<dyn AsRef<[u8]> + Send + Sync> = match self.row_orders.get(key) {
            None => Arc::new(MapSlice { map: file.map.clone(), start: entry.offset, len: entry.nbytes }),
            Some(order) => {
                let mut copy = vec![0u8; entry.nbytes];
                copy_rows_in_order(&file.map[entry.offset..entry.offset + entry.nbytes], order, &mut copy);
                self.release(key);
                Arc::new(copy)
            }
        };
        biomedgpt_kernels::quant::QuantMatrix::new(ty, rows, cols, data)
            .map(Some)
            .map_err(|e| LoadError::DType { key: key.to_string(), found: ty.to_string(), wanted: e })
    }

    /// Tells the kernel that this tensor's pages in the mapping are no longer needed (after a
    /// model copied them into another layout), so they stop counting as resident memory.
    pub fn release(&self, key: &str) {
        if let Some(entry) = self.entries.get(key) {
            let map = &self.files[entry.file].map;
            // SAFETY: read-only file mapping: dropped pages are re-read from the file if touched
            // again, so tensors still pointing at them stay valid.
            unsafe {
                let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, entry.offset, entry.nbytes);
            }
        }
    }

    /// Reads an integer tensor (e.g. BatchNorm's `num_batches_tracked`) as i64 values.
    pub fn load_int(&self, key: &str) -> Result<(Vec<i64>, Vec<usize>), LoadError> {
        let entry = self.entry(key)?;
        let values = self
            .with_bytes(entry, |b| convert_int(b, entry.dtype))
            .ok_or_else(|| LoadError::DType {
                key: key.to_string(),
                found: entry.dtype.to_string(),
                wanted: "an integer type".into(),
            })?;
        Ok((values, entry.shape.clone()))
    }
}

/// Copies `data`'s rows into the order `order` (row i = row `order[i]`).
fn reorder_rows(data: TensorData, order: &[usize], ty: FloatType) -> TensorData {
    let shape = data.shape().to_vec();
    let numel: usize = shape.iter().product();
    let mut storage = zeroed_storage(ty, numel);
    copy_rows_in_order(&data.as_bytes(), order, storage.bytes_mut());
    storage.into_tensor_data(shape)
}

/// `out`'s row i = `src`'s row `order[i]`, rows being `src.len() / order.len()` bytes (float
/// values or whole quantized blocks alike).
fn copy_rows_in_order(src: &[u8], order: &[usize], out: &mut [u8]) {
    let row_bytes = if order.is_empty() { 0 } else { src.len() / order.len() };
    for (to, &from) in out.chunks_exact_mut(row_bytes.max(1)).zip(order) {
        to.copy_from_slice(&src[from * row_bytes..(from + 1) * row_bytes]);
    }
}

/// Maps a model's own key (HF naming) to the name a checkpoint stores it under.
pub type KeyRename = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A prefixed view into a checkpoint, like candle's `VarBuilder`: `view.pp("layers").pp(3)`.
#[derive(Clone)]
pub struct WeightView<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
    rename: Option<KeyRename>,
}

impl<'a> WeightView<'a> {
    /// Descends into a sub-module: `pp("self_attn")` reads `<prefix>self_attn.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> WeightView<'a> {
        WeightView {
            ckpt: self.ckpt,
            prefix: format!("{}{name}.", self.prefix),
            rename: self.rename.clone(),
        }
    }

    /// Reads every key through `rename` (applied to the full HF-style key, prefix included):
    /// one explicit table for checkpoints with other names, such as fair-esm's.
    pub fn with_rename(&self, rename: KeyRename) -> WeightView<'a> {
        WeightView {
            ckpt: self.ckpt,
            prefix: self.prefix.clone(),
            rename: Some(rename),
        }
    }

    pub fn key(&self, name: &str) -> String {
        let key = format!("{}{name}", self.prefix);
        match &self.rename {
            Some(rename) => rename(&key),
            None => key,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.entries.contains_key(&self.key(name))
    }

    pub fn load(&self, name: &str, shape: &[usize], ty: FloatType) -> Result<TensorData, LoadError> {
        self.ckpt.load(&self.key(name), shape, ty)
    }

    /// See [`Checkpoint::load_blocks`].
    pub fn load_blocks(&self, name: &str, shape: &[usize]) -> Result<Option<biomedgpt_kernels::quant::QuantMatrix>, LoadError> {
        self.ckpt.load_blocks(&self.key(name), shape)
    }

    /// See [`Checkpoint::release`].
    pub fn release(&self, name: &str) {
        self.ckpt.release(&self.key(name))
    }

    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.ckpt
    }
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() > 9 && bytes[8] == b'{'
}

fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| LoadError::format(index, format!("bad index JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LoadError::format(index, "index has no `weight_map` object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let name = file
            .as_str()
            .ok_or_else(|| LoadError::format(index, "weight_map values must be file names"))?;
        let path = dir.join(name);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    shards.sort();
    Ok(shards)
}

/// Finds the weights of an HF-style model directory.
pub(crate) fn find_weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    for index in ["model.safetensors.index.json", "pytorch_model.bin.index.json"] {
        let p = dir.join(index);
        if p.is_file() {
            return shards_from_index(&p);
        }
    }
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(single);
        if p.is_file() {
            return Ok(vec![p]);
        }
    }
    let listing = std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))?;
    let mut by_ext: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for entry in listing.flatten() {
        let p = entry.path();
        for ext in ["safetensors", "pth", "bin", "pt"] {
            if p.extension().is_some_and(|e| e == ext) {
                by_ext.entry(ext).or_default().push(p.clone());
            }
        }
    }
    for ext in ["safetensors", "pth", "bin", "pt"] {
        if let Some(mut files) = by_ext.remove(ext) {
            files.sort();
            return Ok(files);
        }
    }
    Err(LoadError::NoCheckpoint {
        path: dir.to_path_buf(),
        expected: DIR_CANDIDATES.into(),
    })
}
