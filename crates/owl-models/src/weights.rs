//! Weights as stored: byte views into the mapped file (or an owned buffer where a tensor had
//! to be rearranged), tagged with their block format. Nothing is converted on load except
//! 1-D tensors (norm scales, biases), which become f32.
//!
//! [`TensorSet`] lists the tensors of one file (GGUF or a safetensors directory) under their
//! names in that file; [`Binder`] hands them out to a family by name and keeps the books, so
//! that loading ends with one error listing every missing, unexpected or misshapen tensor.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use owl_kernels::ops::Matrix;
use owl_kernels::quant::dequantize_row;
use owl_kernels::BlockFormat;

use crate::error::ModelError;

/// Immutable bytes kept alive by their owner (a memory map or a `Vec`).
#[derive(Clone)]
pub struct WeightBytes {
    ptr: *const u8,
    len: usize,
    _owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the bytes are never written after construction and live as long as `_owner`
// (an `Arc` we hold); sharing read-only bytes across threads is sound.
unsafe impl Send for WeightBytes {}
unsafe impl Sync for WeightBytes {}

impl WeightBytes {
    /// Bytes owned by this value.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let owner: Arc<Vec<u8>> = Arc::new(bytes);
        let (ptr, len) = (owner.as_ptr(), owner.len());
        WeightBytes { ptr, len, _owner: owner }
    }

    /// A view of `bytes`, which must lie inside memory owned by `owner` that does not move
    /// or change while `owner` lives (a memory map, a boxed buffer). `view` computes the
    /// slice from the owner so that this is checked by the borrow at the call site.
    pub fn view<T: Any + Send + Sync>(owner: &Arc<T>, view: impl FnOnce(&T) -> &[u8]) -> Self {
        let bytes = view(owner);
        WeightBytes { ptr: bytes.as_ptr(), len: bytes.len(), _owner: Arc::clone(owner) as Arc<dyn Any + Send + Sync> }
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: see the `Send`/`Sync` note: `ptr..ptr+len` is a live, immutable allocation
        // owned by `_owner` (both constructors take the slice from memory the owner holds at a
        // fixed address: a map or a heap buffer behind an `Arc`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.len)
    }
}

/// A weight matrix in its stored format: `rows` rows of `cols` elements (PyTorch
/// `[out, in]`, GGUF `[ne0 = in, ne1 = out]`).
#[derive(Debug, Clone)]
pub struct Weight {
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    bytes: WeightBytes,
}

impl Weight {
    pub fn new(format: BlockFormat, rows: usize, cols: usize, bytes: WeightBytes) -> Result<Self, String> {
        let row = format
            .row_bytes(cols)
            .ok_or_else(|| format!("{cols} columns are not a whole number of {} blocks", format.name()))?;
        if row.checked_mul(rows) != Some(bytes.len()) {
            return Err(format!("{} bytes for {rows}x{cols} {}", bytes.len(), format.name()));
        }
        Ok(Weight { format, rows, cols, bytes })
    }

    /// A 0x0 stand-in for a tensor that failed to bind (never used: loading then fails).
    fn absent() -> Self {
        Weight { format: BlockFormat::F32, rows: 0, cols: 0, bytes: WeightBytes::from_vec(Vec::new()) }
    }

    #[inline]
    pub fn matrix(&self) -> Matrix<'_> {
        Matrix::new(self.format, self.rows, self.cols, self.bytes.as_slice())
    }

    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Dequantizes row `r` into `out` (`cols` values). Used for embedding lookups.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let rb = self.bytes.len() / self.rows.max(1);
        dequantize_row(self.format, &self.bytes.as_slice()[r * rb..(r + 1) * rb], out)?;
        Ok(())
    }

    /// The rows `range` as a weight of their own (a view, no copy): splits fused matrices.
    pub fn rows_view(&self, range: std::ops::Range<usize>) -> Weight {
        let rb = self.bytes.len() / self.rows.max(1);
        let owner = Arc::new(self.bytes.clone());
        let bytes = WeightBytes::view(&owner, |b| &b.as_slice()[range.start * rb..range.end * rb]);
        Weight { format: self.format, rows: range.len(), cols: self.cols, bytes }
    }
}

/// Where a file's tensors came from: decides naming and a few conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Hugging Face safetensors (`model.layers.N.self_attn.q_proj.weight`).
    Hf,
    /// GGUF as llama.cpp writes it (`blk.N.attn_q.weight`).
    Gguf,
}

/// One stored tensor.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    /// `None` for element types the kernels do not compute with (named in `type_name`).
    pub format: Option<BlockFormat>,
    pub type_name: String,
    /// Outermost dimension first (PyTorch order); GGUF shapes are reversed into this order.
    pub shape: Vec<usize>,
    pub bytes: WeightBytes,
}

/// Every tensor of a model file, by its stored name.
#[derive(Debug, Default)]
pub struct TensorSet {
    pub tensors: BTreeMap<String, StoredTensor>,
}

impl TensorSet {
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }
}

/// Hands tensors to a family by name; records what is missing, misshapen or never asked for.
pub struct Binder<'a> {
    kind: SourceKind,
    set: &'a TensorSet,
    used: HashSet<String>,
    missing: Vec<String>,
    problems: Vec<String>,
    /// HF Gemma checkpoints store norm scales as `w` for a `(1 + w)` norm; GGUF stores `w + 1`.
    norm_offset: f32,
}

impl<'a> Binder<'a> {
    pub fn new(kind: SourceKind, set: &'a TensorSet) -> Self {
        Binder { kind, set, used: HashSet::new(), missing: Vec::new(), problems: Vec::new(), norm_offset: 0.0 }
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The file's tensors (for shapes a config derives from them).
    pub fn tensors(&self) -> &'a TensorSet {
        self.set
    }

    /// Marks every tensor whose name satisfies `unused` as deliberately unused (e.g. HF's
    /// stored `rotary_emb.inv_freq` buffers, which are recomputed from the config).
    pub fn ignore_where(&mut self, unused: impl Fn(&str) -> bool) {
        for name in self.set.tensors.keys() {
            if unused(name) {
                self.used.insert(name.clone());
            }
        }
    }

    /// Gemma's norms scale by `1 + w`: from HF checkpoints add 1 to every norm weight bound
    /// after this call (llama.cpp's GGUF converter already did).
    pub fn gemma_norms(&mut self) {
        if self.kind == SourceKind::Hf {
            self.norm_offset = 1.0;
        }
    }

    /// `model.layers.{l}.{hf}.weight` or `blk.{l}.{gguf}.weight`.
    pub fn layer_name(&self, layer: usize, hf: &str, gguf: &str, suffix: &str) -> String {
        match self.kind {
            SourceKind::Hf => format!("model.layers.{layer}.{hf}.{suffix}"),
            SourceKind::Gguf => format!("blk.{layer}.{gguf}.{suffix}"),
        }
    }

    /// `{hf}.weight` or `{gguf}.weight` for whole-model tensors.
    pub fn global_name(&self, hf: &str, gguf: &str) -> String {
        match self.kind {
            SourceKind::Hf => format!("{hf}.weight"),
            SourceKind::Gguf => format!("{gguf}.weight"),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.set.get(name).is_some()
    }

    /// Shape of a stored tensor (outermost first), if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.set.get(name).map(|t| t.shape.as_slice())
    }

    /// Marks a tensor as deliberately unused.
    pub fn ignore(&mut self, name: &str) {
        if self.has(name) {
            self.used.insert(name.to_string());
        }
    }

    /// A `rows x cols` matrix, in its stored format.
    pub fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Weight {
        self.optional_matrix(name, rows, cols).unwrap_or_else(|| {
            self.missing.push(name.to_string());
            Weight::absent()
        })
    }

    /// A matrix that may be absent (e.g. an untied `lm_head`).
    pub fn optional_matrix(&mut self, name: &str, rows: usize, cols: usize) -> Option<Weight> {
        let t = self.set.get(name)?;
        self.used.insert(name.to_string());
        let Some(format) = t.format else {
            self.problems.push(format!("{name}: element type {} is not supported", t.type_name));
            return Some(Weight::absent());
        };
        if t.shape != [rows, cols] {
            self.problems.push(format!("{name}: shape {:?}, expected [{rows}, {cols}]", t.shape));
            return Some(Weight::absent());
        }
        match Weight::new(format, rows, cols, t.bytes.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                self.problems.push(format!("{name}: {e}"));
                Some(Weight::absent())
            }
        }
    }

    /// A 1-D tensor of `len` values, converted to f32.
    pub fn vector(&mut self, name: &str, len: usize) -> Vec<f32> {
        self.optional_vector(name, len).unwrap_or_else(|| {
            self.missing.push(name.to_string());
            Vec::new()
        })
    }

    pub fn optional_vector(&mut self, name: &str, len: usize) -> Option<Vec<f32>> {
        let t = self.set.get(name)?;
        self.used.insert(name.to_string());
        if t.shape != [len] {
            self.problems.push(format!("{name}: shape {:?}, expected [{len}]", t.shape));
            return Some(Vec::new());
        }
        let Some(format) = t.format else {
            self.problems.push(format!("{name}: element type {} is not supported", t.type_name));
            return Some(Vec::new());
        };
        let mut out = vec![0.0; len];
        if let Err(e) = dequantize_row(format, t.bytes.as_slice(), &mut out) {
            self.problems.push(format!("{name}: {e}"));
        }
        Some(out)
    }

    /// A norm scale of `len` values (with Gemma's offset applied, see [`Self::gemma_norms`]).
    pub fn norm_weight(&mut self, name: &str, len: usize) -> Vec<f32> {
        let mut w = self.vector(name, len);
        if self.norm_offset != 0.0 {
            w.iter_mut().for_each(|x| *x += self.norm_offset);
        }
        w
    }

    /// Records a problem found by the family (e.g. inconsistent sizes).
    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// Ends binding: `Ok` only if every tensor asked for was present and well-formed and
    /// every tensor of the file was used (or ignored).
    pub fn finish(self, family: &'static str) -> Result<(), ModelError> {
        let unexpected: Vec<String> =
            self.set.tensors.keys().filter(|n| !self.used.contains(n.as_str())).cloned().collect();
        if self.missing.is_empty() && unexpected.is_empty() && self.problems.is_empty() {
            return Ok(());
        }
        Err(ModelError::Weights { family, missing: self.missing, unexpected, problems: self.problems })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f32_tensor(shape: &[usize]) -> StoredTensor {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        StoredTensor {
            format: Some(BlockFormat::F32),
            type_name: "F32".into(),
            shape: shape.to_vec(),
            bytes: WeightBytes::from_vec(bytes),
        }
    }

    #[test]
    fn reports_every_missing_unexpected_and_misshapen_tensor() {
        let mut set = TensorSet::default();
        set.tensors.insert("a.weight".into(), f32_tensor(&[2, 3]));
        set.tensors.insert("b.weight".into(), f32_tensor(&[4]));
        set.tensors.insert("extra.weight".into(), f32_tensor(&[1]));
        let mut b = Binder::new(SourceKind::Hf, &set);
        let a = b.matrix("a.weight", 2, 3);
        assert_eq!(a.matrix().data.len(), 24);
        let _ = b.vector("b.weight", 5);
        let _ = b.matrix("c.weight", 1, 1);
        let err = b.finish("test").unwrap_err();
        let ModelError::Weights { missing, unexpected, problems, .. } = &err else { panic!("{err}") };
        assert_eq!(missing, &["c.weight"]);
        assert_eq!(unexpected, &["extra.weight"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = err.to_string();
        assert!(text.contains("c.weight") && text.contains("extra.weight") && text.contains("b.weight"), "{text}");
    }

    #[test]
    fn gemma_offset_applies_to_hf_only() {
        let mut set = TensorSet::default();
        set.tensors.insert("n.weight".into(), f32_tensor(&[3]));
        let mut hf = Binder::new(SourceKind::Hf, &set);
        hf.gemma_norms();
        assert_eq!(hf.norm_weight("n.weight", 3), vec![1.0, 2.0, 3.0]);
        let mut gguf = Binder::new(SourceKind::Gguf, &set);
        gguf.gemma_norms();
        assert_eq!(gguf.norm_weight("n.weight", 3), vec![0.0, 1.0, 2.0]);
    }

    #[test]
    fn row_views_share_bytes() {
        let t = f32_tensor(&[4, 2]);
        let w = Weight::new(BlockFormat::F32, 4, 2, t.bytes).unwrap();
        let v = w.rows_view(1..3);
        assert_eq!(v.rows, 2);
        assert_eq!(v.matrix().data, &w.matrix().data[8..24]);
    }
}
