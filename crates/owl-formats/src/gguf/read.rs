//! `GgufFile`: a GGUF v2/v3 file opened over mmap, its header, metadata and tensor infos
//! parsed and checked, tensor data left untouched until a caller slices it.
//!
//! Layout (ggml/docs/gguf.md): magic "GGUF", u32 version, u64 tensor count, u64 metadata
//! count, the metadata key/values, the tensor infos, zero padding to the alignment, then the
//! tensor data, each tensor at `data_offset + offset`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Cursor;
use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::read_value::read_value;
use super::tensor_info::{shape_size, TensorInfo, MAX_DIMS};
use super::validate;
use super::value::{MetadataArray, MetadataValue};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Smallest encoding of a metadata entry: u64 key length, u32 type, 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of a tensor info: u64 name length, u32 n_dims, one u64 dim, u32 type,
/// u64 offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Metadata and tensor infos are owned; tensor data is a view into
/// the mapped (or owned) bytes.
pub struct GgufFile {
    backing: Backing,
    path: Option<PathBuf>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    /// Byte offset of each metadata entry (its key), parallel to `metadata`.
    metadata_offsets: Vec<u64>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    /// Byte offset of each tensor info (its name), parallel to `tensors`.
    tensor_info_offsets: Vec<u64>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file and parses and validates everything but the tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |action, source| GgufError::Io { action, path: path.to_path_buf(), source };
        let file = File::open(path).map_err(|e| io_err("open", e))?;
        let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and private to this process. Like every mmap
            // reader (llama.cpp, safetensors, candle) we rely on the file not being truncated
            // or rewritten in place while it is open; owl's own writers replace files by
            // rename, which leaves this mapping intact.
            Backing::Mmap(unsafe { Mmap::map(&file) }.map_err(|e| io_err("map", e))?)
        };
        let mut parsed = GgufFile::parse(backing)?;
        parsed.path = Some(path.to_path_buf());
        Ok(parsed)
    }

    /// Parses a GGUF file held in memory (tests, fuzzing, files from the network).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let header = parse_header(backing.bytes())?;
        let key_index = header.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect::<HashMap<_, _>>();
        let tensor_index =
            header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect::<HashMap<_, _>>();
        Ok(GgufFile {
            backing,
            path: None,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            metadata_offsets: header.metadata_offsets,
            key_index,
            tensors: header.tensors,
            tensor_info_offsets: header.tensor_info_offsets,
            tensor_index,
        })
    }

    /// The path given to [`GgufFile::open`]; `None` for [`GgufFile::from_bytes`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor offset (`general.alignment`, or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the tensor data section (tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Drops the mapped pages lying wholly inside `range` (a part of [`bytes`](Self::bytes),
    /// e.g. a tensor's data) from this process's resident memory, for data that has been
    /// copied elsewhere (weights repacked at load time): the map stays valid, and a later
    /// read of those bytes faults them in again from the file, unchanged. Nothing happens
    /// for an owned (not mapped) file or a range outside the file; the OS may refuse the
    /// hint, which is not an error.
    pub fn release_pages(&self, range: &[u8]) {
        if let Backing::Mmap(m) = &self.backing {
            crate::mapped::release_pages(m, range);
        }
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Byte offset of the metadata entry `key` in the file (for error messages).
    pub fn metadata_offset(&self, key: &str) -> Option<u64> {
        self.key_index.get(key).map(|&i| self.metadata_offsets[i])
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any integer type with a non-negative value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer type whose value fits `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// An f32 or f64 value, or an integer converted.
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_array(&self, key: &str) -> Option<&MetadataArray> {
        self.get(key)?.as_array()
    }

    /// `general.architecture` (e.g. `"llama"`, `"gemma3"`, `"qwen2"`).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Byte offset of the tensor info named `name` in the file (for error messages).
    pub fn tensor_info_offset(&self, name: &str) -> Option<u64> {
        self.tensor_index.get(name).map(|&i| self.tensor_info_offsets[i])
    }

    /// The data of `t`, exactly `t.n_bytes` long, without copying.
    ///
    /// Every tensor of this file was checked at open to lie inside the file. Panics if `t`
    /// describes bytes outside this file (a `TensorInfo` made up by the caller or taken from
    /// another file); use [`GgufFile::try_tensor_data`] for such infos.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        match self.try_tensor_data(t) {
            Some(data) => data,
            None => panic!(
                "tensor {:?} ({} bytes at offset {}) is not inside this {}-byte GGUF file",
                t.name,
                t.n_bytes,
                t.offset,
                self.file_size()
            ),
        }
    }

    /// The data of `t`, or `None` if it would lie outside the file.
    pub fn try_tensor_data(&self, t: &TensorInfo) -> Option<&[u8]> {
        let start = self.data_offset.checked_add(t.offset)?;
        let end = start.checked_add(t.n_bytes)?;
        let start = usize::try_from(start).ok()?;
        let end = usize::try_from(end).ok()?;
        self.bytes().get(start..end)
    }
}

/// Everything before the tensor data.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    metadata_offsets: Vec<u64>,
    tensors: Vec<TensorInfo>,
    tensor_info_offsets: Vec<u64>,
}

fn parse_header(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor::new(bytes);
    let magic = c.take(4, || "field `magic`".to_string())?;
    if magic != GGUF_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = c.u32(|| "field `version`".to_string())?;
    check_version(version)?;

    let count_offset = c.pos();
    let tensor_count = c.u64(|| "field `tensor_count`".to_string())?;
    let kv_offset = c.pos();
    let kv_count = c.u64(|| "field `metadata_kv_count`".to_string())?;
    c.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, count_offset, || "field `tensor_count`".to_string())?;
    c.check_count(kv_count, MIN_KV_BYTES, kv_offset, || "field `metadata_kv_count`".to_string())?;

    // Counts are bounded by the file size above, so these capacities are too.
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut metadata_offsets = Vec::with_capacity(kv_count as usize);
    let mut first_seen: HashMap<&str, u64> = HashMap::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        let offset = c.pos();
        let key = c.str(|| format!("metadata entry {i} key"))?;
        if let Some(&first_offset) = first_seen.get(key) {
            return Err(GgufError::DuplicateKey { key: key.to_string(), offset, first_offset });
        }
        first_seen.insert(key, offset);
        let type_offset = c.pos();
        let type_id = c.u32(|| format!("metadata {key:?} value type"))?;
        let value = read_value(&mut c, type_id, type_offset, &|| format!("metadata {key:?}"))?;
        metadata.push((key.to_string(), value));
        metadata_offsets.push(offset);
    }

    let alignment = validate::alignment(&metadata, &metadata_offsets)?;
    validate::tokenizer_arrays(&metadata, &metadata_offsets)?;

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut tensor_info_offsets = Vec::with_capacity(tensor_count as usize);
    let mut names: HashMap<&str, u64> = HashMap::with_capacity(tensor_count as usize);
    let mut offset_fields = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let info_offset = c.pos();
        let name = c.str(|| format!("tensor info {i} name"))?;
        if let Some(&first_offset) = names.get(name) {
            return Err(GgufError::DuplicateTensor { name: name.to_string(), offset: info_offset, first_offset });
        }
        names.insert(name, info_offset);

        let dims_offset = c.pos();
        let n_dims = c.u32(|| format!("tensor {name:?} field `n_dims`"))?;
        let bad_shape = |problem| GgufError::BadShape { tensor: name.to_string(), offset: dims_offset, problem };
        if n_dims as usize > MAX_DIMS {
            return Err(bad_shape(super::tensor_info::ShapeProblem::TooManyDims { n_dims: n_dims.into() }));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            shape.push(c.u64(|| format!("tensor {name:?} field `ne[{d}]`"))?);
        }
        let type_offset = c.pos();
        let type_id = c.u32(|| format!("tensor {name:?} field `type`"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
            tensor: name.to_string(),
            offset: type_offset,
            type_id,
        })?;
        let (n_elements, n_bytes) = shape_size(&shape, ggml_type).map_err(bad_shape)?;
        offset_fields.push(c.pos());
        let offset = c.u64(|| format!("tensor {name:?} field `offset`"))?;
        tensors.push(TensorInfo { name: name.to_string(), shape, ggml_type, offset, n_elements, n_bytes });
        tensor_info_offsets.push(info_offset);
    }

    // The data section starts at the next multiple of the alignment. alignment <= 1 MiB and
    // the position is inside the file, so this cannot overflow.
    let data_offset = c.pos().div_ceil(alignment) * alignment;
    validate::tensor_layout(&tensors, &offset_fields, data_offset, alignment, c.file_size())?;

    Ok(Header { version, alignment, data_offset, metadata, metadata_offsets, tensors, tensor_info_offsets })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(GgufError::UnsupportedVersion {
            version,
            hint: " (v1 used 32-bit counts; re-convert the model with a current llama.cpp)",
        }),
        _ if matches!(version.swap_bytes(), 1..=3) => Err(GgufError::BigEndian { swapped: version.swap_bytes() }),
        _ => Err(GgufError::UnsupportedVersion { version, hint: "" }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gguf_file_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GgufFile>();
    }

    #[test]
    fn versions() {
        assert!(check_version(2).is_ok() && check_version(3).is_ok());
        assert!(matches!(check_version(1), Err(GgufError::UnsupportedVersion { version: 1, .. })));
        assert!(matches!(check_version(3u32.swap_bytes()), Err(GgufError::BigEndian { swapped: 3 })));
        assert!(matches!(check_version(7), Err(GgufError::UnsupportedVersion { version: 7, .. })));
    }
}
