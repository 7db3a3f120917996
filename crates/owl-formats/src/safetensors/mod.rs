//! safetensors model files: one `.safetensors` file, a directory with `model.safetensors`, or a
//! sharded directory with `model.safetensors.index.json`.
//!
//! [`SafetensorsModel::open`] maps every file once and validates its header
//! ([`parse_header`]); [`TensorView`]s borrow straight from the mapping. Any dtype loads as
//! metadata; only F32 / F16 / BF16 convert to f32 for compute.

mod header;
mod view;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

pub use header::{parse_header, Dtype, SafetensorsHeader, TensorEntry, MAX_HEADER_LEN};
pub use view::TensorView;

/// File name of a single-file model inside a model directory.
pub const SINGLE_FILE_NAME: &str = "model.safetensors";
/// File name of the shard index inside a sharded model directory.
pub const INDEX_FILE_NAME: &str = "model.safetensors.index.json";

/// Errors opening or reading safetensors files.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened, read or mapped.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem inside a named file.
    #[error("{}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<SafetensorsError>,
    },
    /// Fewer than 8 bytes: not even the header length is there.
    #[error("file is {file_len} bytes, too short for the 8-byte header length")]
    TooShort { file_len: usize },
    /// The header length exceeds [`MAX_HEADER_LEN`].
    #[error("header length {header_len} exceeds the {max}-byte limit")]
    HeaderTooLarge { header_len: u64, max: u64 },
    /// The header length runs past the end of the file.
    #[error("header length {header_len} runs past the end of the {file_len}-byte file")]
    HeaderOutOfBounds { header_len: u64, file_len: usize },
    /// The header is not a JSON object.
    #[error("header is not valid JSON: {message}")]
    HeaderJson { message: String },
    /// `__metadata__` is not an object of strings.
    #[error("header `__metadata__` {reason}")]
    BadMetadata { reason: String },
    /// A tensor entry lacks a field or has one of the wrong kind.
    #[error("tensor `{name}`: {reason}")]
    BadTensorEntry { name: String, reason: String },
    /// A dtype name the format does not define.
    #[error("tensor `{name}`: unknown dtype {dtype:?}")]
    UnknownDtype { name: String, dtype: String },
    /// product(shape) * dtype size overflows.
    #[error("tensor `{name}`: shape {shape:?} is too large (size overflows)")]
    SizeOverflow { name: String, shape: Vec<usize> },
    /// The byte range does not match the shape and dtype.
    #[error("tensor `{name}`: data_offsets cover {actual} bytes but {dtype} {shape:?} needs {expected}")]
    SizeMismatch { name: String, dtype: Dtype, shape: Vec<usize>, expected: usize, actual: usize },
    /// Offsets reversed, out of range, overlapping or leaving a hole.
    #[error("tensor `{name}`: data_offsets [{begin}, {end}] {reason}")]
    BadOffsets { name: String, begin: usize, end: usize, reason: String },
    /// The data section holds bytes no tensor covers.
    #[error("tensors cover {covered} bytes of the {data_len}-byte data section (trailing bytes are not allowed)")]
    TrailingData { covered: usize, data_len: usize },
    /// The same tensor name twice in one header.
    #[error("tensor `{name}` appears twice in the header")]
    DuplicateTensor { name: String },
    /// The same tensor name in two shards.
    #[error("tensor `{name}` is in both {} and {}", first.display(), second.display())]
    DuplicateAcrossShards { name: String, first: PathBuf, second: PathBuf },
    /// The shard index is malformed.
    #[error("{}: {reason}", path.display())]
    BadIndex { path: PathBuf, reason: String },
    /// The index maps a tensor to a shard that does not contain it.
    #[error("tensor `{name}` is listed in the index for {} but that file does not contain it", shard.display())]
    MissingFromShard { name: String, shard: PathBuf },
    /// A directory without model.safetensors or model.safetensors.index.json.
    #[error("{} has neither {SINGLE_FILE_NAME} nor {INDEX_FILE_NAME}", dir.display())]
    NoModelFiles { dir: PathBuf },
    /// A tensor that was asked for by name is not in the model.
    #[error("no tensor named `{name}`")]
    NoSuchTensor { name: String },
    /// Conversion of a dtype owl does not compute with.
    #[error("tensor `{name}` has dtype {dtype}; only F32, F16 and BF16 tensors can be used for compute")]
    UnsupportedDtype { name: String, dtype: Dtype },
    /// An output buffer of the wrong length.
    #[error("tensor `{name}`: output buffer holds {actual} values, the tensor has {expected}")]
    OutputLength { name: String, expected: usize, actual: usize },
}

/// One mapped file and its validated header.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    header: SafetensorsHeader,
}

/// A model's tensors across one or more mapped safetensors files.
#[derive(Debug)]
pub struct SafetensorsModel {
    /// The path given to `open` (file or directory).
    path: PathBuf,
    shards: Vec<Shard>,
    /// (shard, entry) in model order: shards in file-name order, tensors in data order.
    order: Vec<(usize, usize)>,
    by_name: HashMap<String, usize>,
}

impl SafetensorsModel {
    /// Opens a `.safetensors` file, or a directory holding `model.safetensors.index.json`
    /// (sharded) or `model.safetensors`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsModel, SafetensorsError> {
        let path = path.as_ref();
        let meta =
            std::fs::metadata(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
        if !meta.is_dir() {
            return SafetensorsModel::from_shards(path, vec![map_shard(path)?]);
        }
        let index = path.join(INDEX_FILE_NAME);
        if index.is_file() {
            return SafetensorsModel::open_index(path, &index);
        }
        let single = path.join(SINGLE_FILE_NAME);
        if single.is_file() {
            return SafetensorsModel::from_shards(path, vec![map_shard(&single)?]);
        }
        Err(SafetensorsError::NoModelFiles { dir: path.to_path_buf() })
    }

    fn open_index(dir: &Path, index: &Path) -> Result<SafetensorsModel, SafetensorsError> {
        let bad = |reason: String| SafetensorsError::BadIndex { path: index.to_path_buf(), reason };
        let text = std::fs::read(index).map_err(|source| SafetensorsError::Io { path: index.to_path_buf(), source })?;
        let json: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let Some(weight_map) = json.get("weight_map") else {
            return Err(bad("missing `weight_map`".into()));
        };
        let Value::Object(weight_map) = weight_map else {
            return Err(bad("`weight_map` is not an object".into()));
        };
        let mut wanted: Vec<(&str, &str)> = Vec::with_capacity(weight_map.len());
        let mut files = BTreeSet::new();
        for (name, file) in weight_map {
            let Value::String(file) = file else {
                return Err(bad(format!("`weight_map.{name}` is not a string")));
            };
            if !is_plain_file_name(file) {
                return Err(bad(format!(
                    "`weight_map.{name}`: {file:?} is not a file name inside the model directory"
                )));
            }
            files.insert(file.as_str());
            wanted.push((name, file));
        }
        if files.is_empty() {
            return Err(bad("`weight_map` is empty".into()));
        }
        let files: Vec<&str> = files.into_iter().collect();
        let shards = files.iter().map(|f| map_shard(&dir.join(f))).collect::<Result<Vec<_>, _>>()?;
        let model = SafetensorsModel::from_shards(dir, shards)?;
        // Every tensor the index lists must be in the shard it names.
        for (name, file) in wanted {
            let found = model.by_name.get(name).map(|&i| model.shards[model.order[i].0].path.as_path());
            let expected = dir.join(file);
            if found != Some(expected.as_path()) {
                return Err(SafetensorsError::MissingFromShard { name: name.to_string(), shard: expected });
            }
        }
        Ok(model)
    }

    /// Builds the name table over mapped files; a name in two files is an error.
    fn from_shards(path: &Path, shards: Vec<Shard>) -> Result<SafetensorsModel, SafetensorsError> {
        let total: usize = shards.iter().map(|s| s.header.tensors.len()).sum();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(total);
        for (s, shard) in shards.iter().enumerate() {
            for (e, entry) in shard.header.tensors.iter().enumerate() {
                if let Some(&prev) = by_name.get(&entry.name) {
                    let (first, _) = order[prev];
                    return Err(SafetensorsError::DuplicateAcrossShards {
                        name: entry.name.clone(),
                        first: shards[first].path.clone(),
                        second: shard.path.clone(),
                    });
                }
                by_name.insert(entry.name.clone(), order.len());
                order.push((s, e));
            }
        }
        Ok(SafetensorsModel { path: path.to_path_buf(), shards, order, by_name })
    }

    /// The path given to [`SafetensorsModel::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files the tensors come from, in model order.
    pub fn shard_paths(&self) -> impl ExactSizeIterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// Validated header of each file, in model order.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = &SafetensorsHeader> {
        self.shards.iter().map(|s| &s.header)
    }

    /// Total bytes of all files.
    pub fn file_size(&self) -> u64 {
        self.shards.iter().map(|s| s.mmap.len() as u64).sum()
    }

    /// The first file's `__metadata__` pairs (e.g. `format: pt`).
    pub fn metadata(&self) -> &[(String, String)] {
        self.shards.first().map_or(&[], |s| s.header.metadata.as_slice())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the model holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn view(&self, (s, e): (usize, usize)) -> TensorView<'_> {
        let shard = &self.shards[s];
        let entry = &shard.header.tensors[e];
        let start = shard.header.data_start + entry.data_offsets[0];
        let end = shard.header.data_start + entry.data_offsets[1];
        TensorView { name: &entry.name, dtype: entry.dtype, shape: &entry.shape, data: &shard.mmap[start..end] }
    }

    /// Every tensor, in model order (shards by file name, then data order within a file).
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> {
        self.order.iter().map(|&at| self.view(at))
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.by_name.get(name).map(|&i| self.view(self.order[i]))
    }

    /// Drops the mapped pages lying wholly inside `range` (part of a tensor's `data`) from
    /// resident memory, for bytes already copied elsewhere: a converter streaming tensor by
    /// tensor keeps its footprint near one tensor. Later reads fault them in again.
    pub fn release_pages(&self, range: &[u8]) {
        for shard in &self.shards {
            crate::mapped::release_pages(&shard.mmap, range);
        }
    }

    /// The tensor called `name`, or [`SafetensorsError::NoSuchTensor`].
    pub fn require(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        self.tensor(name).ok_or_else(|| SafetensorsError::NoSuchTensor { name: name.to_string() })
    }

    /// Total number of elements over all tensors (the parameter count of a weights file).
    pub fn n_elements(&self) -> u64 {
        self.tensors().map(|t| t.n_elements() as u64).sum()
    }
}

/// A shard file name from an index: a single normal path component (no directories, no `..`).
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!((components.next(), components.next()), (Some(std::path::Component::Normal(_)), None))
        && !name.contains('\\')
}

fn map_shard(path: &Path) -> Result<Shard, SafetensorsError> {
    let io = |source| SafetensorsError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(SafetensorsError::InFile {
            path: path.to_path_buf(),
            source: Box::new(SafetensorsError::TooShort { file_len: len as usize }),
        });
    }
    // SAFETY: the mapping is read-only; as with every mmap-based loader, the file must not be
    // truncated or rewritten by another process while the model is open.
    let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
    let header =
        parse_header(&mmap).map_err(|e| SafetensorsError::InFile { path: path.to_path_buf(), source: Box::new(e) })?;
    Ok(Shard { path: path.to_path_buf(), mmap, header })
}

#[cfg(test)]
mod tests;
