//! `GgufWriter`: metadata and tensors in, a GGUF v2/v3 file out, in one streaming pass.
//!
//! The layout is the one llama.cpp (`gguf_write_to_buf`) and gguf-py write: header,
//! metadata, tensor infos, zero padding to the alignment, then each tensor's data followed
//! by zero padding to the alignment, tensors in info order. A file in that layout, read with
//! [`GgufFile`] and written back with [`GgufWriter::from_file`], comes out byte-identical.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::GgufError;
use super::ggml_type::GgmlType;
use super::read::{GgufFile, GGUF_MAGIC};
use super::read_value::MAX_ARRAY_DEPTH;
use super::tensor_info::{shape_size, TensorInfo};
use super::validate::{self, ALIGNMENT_KEY};
use super::value::{MetadataArray, MetadataValue};

/// A function that writes one tensor's bytes (see [`TensorData::Stream`]).
pub type TensorWriteFn<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + 'a>;

/// Where a tensor's bytes come from when the file is written.
pub enum TensorData<'a> {
    /// Bytes in memory: borrowed (e.g. from another file's mmap) or owned.
    Bytes(Cow<'a, [u8]>),
    /// Bytes produced at write time (e.g. quantized on the fly), so that a converter never
    /// holds more than one tensor. The function must write exactly the tensor's `n_bytes`;
    /// the writer checks. It may be called once per `write_to`.
    Stream(TensorWriteFn<'a>),
}

impl<'a> From<&'a [u8]> for TensorData<'a> {
    fn from(b: &'a [u8]) -> Self {
        TensorData::Bytes(Cow::Borrowed(b))
    }
}

impl From<Vec<u8>> for TensorData<'_> {
    fn from(b: Vec<u8>) -> Self {
        TensorData::Bytes(Cow::Owned(b))
    }
}

struct PendingTensor<'a> {
    name: String,
    shape: Vec<u64>,
    ggml_type: GgmlType,
    n_elements: u64,
    n_bytes: u64,
    data: TensorData<'a>,
}

/// Builder of a GGUF file. Metadata keys are unique and keep their insertion order;
/// tensors are written in the order they were added.
pub struct GgufWriter<'a> {
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor<'a>>,
    tensor_names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty GGUF v3 file (alignment 32 unless `general.alignment` is set).
    pub fn new() -> GgufWriter<'a> {
        GgufWriter { version: 3, metadata: Vec::new(), tensors: Vec::new(), tensor_names: HashSet::new() }
    }

    /// A writer holding `file`'s version, metadata (in order) and tensors (in info order),
    /// tensor data borrowed from the file's mapping.
    pub fn from_file(file: &'a GgufFile) -> GgufWriter<'a> {
        let mut w = GgufWriter::new();
        w.version = file.version();
        w.metadata = file.metadata().to_vec();
        for t in file.tensors() {
            w.tensor_names.insert(t.name.clone());
            w.tensors.push(PendingTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                ggml_type: t.ggml_type,
                n_elements: t.n_elements,
                n_bytes: t.n_bytes,
                data: TensorData::Bytes(Cow::Borrowed(file.tensor_data(t))),
            });
        }
        w
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// GGUF version 2 or 3 (identical layouts for little-endian files).
    pub fn set_version(&mut self, version: u32) -> Result<(), GgufError> {
        if !matches!(version, 2 | 3) {
            return Err(GgufError::InvalidInput {
                field: "version".into(),
                reason: format!("{version} is not a writable GGUF version (2 or 3)"),
            });
        }
        self.version = version;
        Ok(())
    }

    /// The data alignment the file will get: `general.alignment` if set, else 32.
    pub fn alignment(&self) -> Result<u64, GgufError> {
        validate::alignment(&self.metadata, &[]).map_err(invalid_metadata)
    }

    /// Sets `general.alignment` (as u32, the type the spec gives it).
    pub fn set_alignment(&mut self, alignment: u64) -> Result<(), GgufError> {
        let value = u32::try_from(alignment).map_err(|_| GgufError::InvalidInput {
            field: ALIGNMENT_KEY.into(),
            reason: format!("{alignment} does not fit u32"),
        })?;
        validate::alignment(&[(ALIGNMENT_KEY.to_string(), MetadataValue::U32(value))], &[])
            .map_err(invalid_metadata)?;
        self.set_metadata(ALIGNMENT_KEY, MetadataValue::U32(value));
        Ok(())
    }

    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// Sets `key`: replaces the value in place if the key exists, else appends it.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: MetadataValue) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    pub fn remove_metadata(&mut self, key: &str) -> Option<MetadataValue> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    /// Adds a tensor (shape in ggml order, `shape[0]` contiguous). In-memory data must be
    /// exactly the size the shape and type imply.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: Vec<u64>,
        ggml_type: GgmlType,
        data: impl Into<TensorData<'a>>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        let data = data.into();
        let invalid = |reason: String| GgufError::InvalidInput { field: format!("tensor {name:?}"), reason };
        if self.tensor_names.contains(&name) {
            return Err(invalid("a tensor with this name was already added".into()));
        }
        let (n_elements, n_bytes) = shape_size(&shape, ggml_type).map_err(|p| invalid(p.to_string()))?;
        if let TensorData::Bytes(b) = &data {
            if b.len() as u64 != n_bytes {
                return Err(invalid(format!(
                    "data is {} bytes, but shape {shape:?} of {ggml_type} takes {n_bytes}",
                    b.len()
                )));
            }
        }
        self.tensor_names.insert(name.clone());
        self.tensors.push(PendingTensor { name, shape, ggml_type, n_elements, n_bytes, data });
        Ok(())
    }

    /// The tensor infos as they will be written (offsets relative to the data section).
    pub fn tensor_infos(&self) -> Result<Vec<TensorInfo>, GgufError> {
        let alignment = self.alignment()?;
        let mut offset = 0u64;
        let mut infos = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            infos.push(TensorInfo {
                name: t.name.clone(),
                shape: t.shape.clone(),
                ggml_type: t.ggml_type,
                offset,
                n_elements: t.n_elements,
                n_bytes: t.n_bytes,
            });
            offset = padded(offset, t.n_bytes, alignment).ok_or_else(|| GgufError::InvalidInput {
                field: format!("tensor {:?}", t.name),
                reason: "data section exceeds 2^64 bytes".into(),
            })?;
        }
        Ok(infos)
    }

    /// Checks what the reader would check: alignment, tokenizer arrays, array depth.
    fn validate(&self) -> Result<u64, GgufError> {
        let alignment = self.alignment()?;
        validate::tokenizer_arrays(&self.metadata, &[]).map_err(invalid_metadata)?;
        for (key, value) in &self.metadata {
            if let MetadataValue::Array(a) = value {
                if array_depth(a) > MAX_ARRAY_DEPTH {
                    return Err(GgufError::InvalidInput {
                        field: format!("metadata {key:?}"),
                        reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels"),
                    });
                }
            }
        }
        Ok(alignment)
    }

    /// Writes the file to `out` in one pass; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, out: W) -> Result<u64, GgufError> {
        let alignment = self.validate()?;
        let infos = self.tensor_infos()?;
        let mut w = Counter { inner: BufWriter::with_capacity(1 << 20, out), written: 0 };
        match self.write_all(&mut w, &infos, alignment) {
            Ok(()) => {}
            Err(WriteFailure::Io(source)) => return Err(GgufError::Stream { written: w.written, source }),
            Err(WriteFailure::Invalid(e)) => return Err(e),
        }
        w.inner.flush().map_err(|source| GgufError::Stream { written: w.written, source })?;
        Ok(w.written)
    }

    fn write_all<W: Write>(
        &self,
        w: &mut Counter<W>,
        infos: &[TensorInfo],
        alignment: u64,
    ) -> Result<(), WriteFailure> {
        w.write_all(&GGUF_MAGIC)?;
        w.write_all(&self.version.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(w, key)?;
            w.write_all(&value.type_id().to_le_bytes())?;
            write_value(w, value)?;
        }
        for t in infos {
            write_string(w, &t.name)?;
            w.write_all(&(t.shape.len() as u32).to_le_bytes())?;
            for d in &t.shape {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ggml_type.id().to_le_bytes())?;
            w.write_all(&t.offset.to_le_bytes())?;
        }
        pad(w, alignment)?;
        for t in &self.tensors {
            let start = w.written;
            match &t.data {
                TensorData::Bytes(b) => w.write_all(b)?,
                TensorData::Stream(produce) => produce(w)?,
            }
            let wrote = w.written - start;
            if wrote != t.n_bytes {
                return Err(WriteFailure::Invalid(GgufError::InvalidInput {
                    field: format!("tensor {:?}", t.name),
                    reason: format!("its data source wrote {wrote} bytes, but the tensor takes {}", t.n_bytes),
                }));
            }
            pad(w, alignment)?;
        }
        Ok(())
    }

    /// Writes the file to `path` atomically: into a temporary file in the same directory,
    /// synced, then renamed over `path`. On any error the temporary file is removed and an
    /// existing file at `path` is left as it was.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<u64, GgufError> {
        static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);
        let path = path.as_ref();
        self.validate()?;
        let io_err = |action, source| GgufError::Io { action, path: path.to_path_buf(), source };
        let file_name = path.file_name().ok_or_else(|| GgufError::InvalidInput {
            field: "path".into(),
            reason: format!("{} has no file name", path.display()),
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp = dir.join(format!(
            ".{}.{}-{}.tmp",
            file_name.to_string_lossy(),
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_err("create a temporary file for", e))?;
        let written = self.write_to(&file).and_then(|n| {
            file.sync_all().map_err(|e| io_err("sync", e))?;
            Ok(n)
        });
        drop(file);
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(match e {
                    GgufError::Stream { source, .. } => io_err("write", source),
                    other => other,
                });
            }
        };
        if let Err(e) = fs::rename(&temp, path) {
            let _ = fs::remove_file(&temp);
            return Err(io_err("rename a temporary file onto", e));
        }
        // Make the rename itself durable; not all platforms can sync a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(written)
    }
}

fn invalid_metadata(e: GgufError) -> GgufError {
    let field = match &e {
        GgufError::BadAlignment { .. } => ALIGNMENT_KEY.to_string(),
        GgufError::TokenizerLength { key, .. } | GgufError::WrongValueType { key, .. } => key.clone(),
        _ => "metadata".to_string(),
    };
    GgufError::InvalidInput { field, reason: e.to_string() }
}

/// `offset + n` rounded up to a multiple of `alignment`.
fn padded(offset: u64, n: u64, alignment: u64) -> Option<u64> {
    offset.checked_add(n)?.checked_next_multiple_of(alignment)
}

fn array_depth(a: &MetadataArray) -> u32 {
    match a {
        MetadataArray::Array(inner) => 1 + inner.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

enum WriteFailure {
    Io(io::Error),
    Invalid(GgufError),
}

impl From<io::Error> for WriteFailure {
    fn from(e: io::Error) -> Self {
        WriteFailure::Io(e)
    }
}

/// Counts bytes on their way out, for padding and error messages.
struct Counter<W: Write> {
    inner: BufWriter<W>,
    written: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counter<W>, alignment: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut n = w.written.next_multiple_of(alignment) - w.written;
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// A value's payload (its type id is written by the caller).
fn write_value(w: &mut impl Write, v: &MetadataValue) -> io::Result<()> {
    match v {
        MetadataValue::U8(x) => w.write_all(&[*x]),
        MetadataValue::I8(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::U16(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::I16(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::U32(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::I32(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::F32(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::Bool(x) => w.write_all(&[u8::from(*x)]),
        MetadataValue::String(s) => write_string(w, s),
        MetadataValue::Array(a) => write_array(w, a),
        MetadataValue::U64(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::I64(x) => w.write_all(&x.to_le_bytes()),
        MetadataValue::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

/// An array body: element type, length, elements.
fn write_array(w: &mut impl Write, a: &MetadataArray) -> io::Result<()> {
    w.write_all(&a.element_type_id().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! numbers {
        ($v:expr) => {{
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match a {
        MetadataArray::U8(v) => w.write_all(v),
        MetadataArray::I8(v) => numbers!(v),
        MetadataArray::U16(v) => numbers!(v),
        MetadataArray::I16(v) => numbers!(v),
        MetadataArray::U32(v) => numbers!(v),
        MetadataArray::I32(v) => numbers!(v),
        MetadataArray::F32(v) => numbers!(v),
        MetadataArray::Bool(v) => {
            for &b in v {
                w.write_all(&[u8::from(b)])?;
            }
            Ok(())
        }
        MetadataArray::String(v) => {
            for s in v {
                write_string(w, s)?;
            }
            Ok(())
        }
        MetadataArray::ByteStrings(v) => {
            for s in v {
                w.write_all(&(s.len() as u64).to_le_bytes())?;
                w.write_all(s)?;
            }
            Ok(())
        }
        MetadataArray::U64(v) => numbers!(v),
        MetadataArray::I64(v) => numbers!(v),
        MetadataArray::F64(v) => numbers!(v),
        MetadataArray::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
            Ok(())
        }
    }
}
