//! Weights as stored: byte views into the mapped file (or an owned buffer where a tensor had
//! to be rearranged), tagged with their block format. Nothing is converted on load except
//! 1-D tensors (norm scales, biases), which become f32.
//!
//! [`TensorSet`] lists the tensors of one file (GGUF or a safetensors directory) under their
//! names in that file; [`Binder`] hands them out to a family by name and keeps the books, so
//! that loading ends with one error listing every missing, unexpected or misshapen tensor.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use owl_kernels::ops::{matmul, matmul_prepacked, Matrix, PanelMatrix};
use owl_kernels::quant::interleave::{self, RowLayout, INTERLEAVE_ROWS};
use owl_kernels::quant::{dequantize_row, quantize_row};
use owl_kernels::BlockFormat;
use owl_kernels::ThreadPool;

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

    /// Tells the owner that bytes `range` will not be read again soon (they were copied into
    /// another layout): a memory-mapped GGUF file drops their pages from resident memory
    /// (they fault in again from the file if read). Nothing happens for other owners.
    pub fn release_pages(&self, range: std::ops::Range<usize>) {
        let owner: &(dyn Any + Send + Sync) = &*self._owner;
        if let Some(file) = owner.downcast_ref::<owl_formats::gguf::GgufFile>() {
            file.release_pages(&self.as_slice()[range]);
        }
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
    layout: RowLayout,
    /// The stored tensor this matrix was bound from, when it came through a [`Binder`]
    /// (boxed: a weight is embedded in every projection, and this is rarely read).
    origin: Option<Arc<WeightOrigin>>,
    /// Forms of this matrix made on first use by training, shared by clones (which hold the
    /// same matrix).
    derived: Arc<Derived>,
}

/// A weight's training-time forms, each made on first use.
#[derive(Debug, Default)]
struct Derived {
    /// `Wᵀ` in Q8_0, for a backward pass ([`Weight::transposed_q8_0`]).
    transposed: OnceLock<Option<Weight>>,
    /// The matrix kept unpacked in lane panels, for a caller that multiplies the frozen
    /// weights many times ([`Weight::prepacked_panels`]).
    panels: OnceLock<Option<PanelMatrix>>,
}

/// Which stored tensor a weight is, for tools that follow activations per tensor (an
/// importance matrix): its name as stored, and for one matrix of a stacked 3-D tensor
/// (llama.cpp's `*_exps`) its index among `of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightOrigin {
    pub tensor: Arc<str>,
    pub index: usize,
    pub of: usize,
}

impl Weight {
    pub fn new(format: BlockFormat, rows: usize, cols: usize, bytes: WeightBytes) -> Result<Self, String> {
        let row = format
            .row_bytes(cols)
            .ok_or_else(|| format!("{cols} columns are not a whole number of {} blocks", format.name()))?;
        if row.checked_mul(rows) != Some(bytes.len()) {
            return Err(format!("{} bytes for {rows}x{cols} {}", bytes.len(), format.name()));
        }
        Ok(Weight { format, rows, cols, bytes, layout: RowLayout::RowMajor, origin: None, derived: Arc::default() })
    }

    /// A 0x0 stand-in for a tensor that failed to bind (never used: loading then fails).
    fn absent() -> Self {
        Weight {
            format: BlockFormat::F32,
            rows: 0,
            cols: 0,
            bytes: WeightBytes::from_vec(Vec::new()),
            layout: RowLayout::RowMajor,
            origin: None,
            derived: Arc::default(),
        }
    }

    #[inline]
    pub fn matrix(&self) -> Matrix<'_> {
        let data = self.bytes.as_slice();
        match self.layout {
            RowLayout::RowMajor => Matrix::new(self.format, self.rows, self.cols, data),
            RowLayout::Interleaved8 => Matrix::interleaved(self.format, self.rows, self.cols, data),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The stored tensor this weight is (see [`WeightOrigin`]).
    pub fn origin(&self) -> Option<&WeightOrigin> {
        self.origin.as_deref()
    }

    /// This weight, recorded as matrix `index` of `of` of stored tensor `tensor`.
    pub fn with_origin(self, tensor: &str, index: usize, of: usize) -> Weight {
        Weight { origin: Some(Arc::new(WeightOrigin { tensor: tensor.into(), index, of })), ..self }
    }

    /// How the rows are laid out in memory.
    pub fn layout(&self) -> RowLayout {
        self.layout
    }

    /// This weight in the 8-row interleaved layout that decode streams at memory speed
    /// (`owl_kernels::quant::interleave`), when its format and shape take it, the active
    /// kernel set has a SIMD kernel for it (AVX2; elsewhere the row-major kernels are
    /// faster) and `OWL_INTERLEAVE=0` (read once; a measurement switch) does not say
    /// otherwise; else itself. The copy is owned; the source's pages, if mapped from a GGUF file, are
    /// released from resident memory, so the model's footprint stays that of one copy.
    pub fn interleaved_for_decode(self) -> Weight {
        let fast = owl_kernels::dispatch::active()
            .ok()
            .and_then(|t| t.get(self.format))
            .is_some_and(|k| k.prefers_interleaved_layout());
        if self.layout != RowLayout::RowMajor
            || !fast
            || !interleave::can_interleave(self.format, self.rows, self.cols)
            || !interleave_enabled()
        {
            return self;
        }
        // Slices of whole groups, each source slice released as soon as it is copied: the
        // peak footprint stays one copy plus a slice per thread (a zeroed `Vec` takes no
        // memory until it is written). Large weights are split over the cores: this is
        // load time, which the first token waits for.
        const SLICE_BYTES: usize = 4 << 20;
        let group = self.bytes.len() / self.rows * INTERLEAVE_ROWS;
        let slice = (SLICE_BYTES / group).max(1) * group;
        let mut packed = DecodeBuffer::new(self.bytes.len());
        let packed_len = self.bytes.len();
        let slices = packed_len.div_ceil(slice);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(slices);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let dst = SliceCells::new(packed.as_mut_slice());
        let work = || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= slices {
                break;
            }
            let range = i * slice..((i + 1) * slice).min(packed_len);
            let rows = range.len() / group * INTERLEAVE_ROWS;
            // SAFETY: slice `i` is claimed by exactly one thread (the atomic counter).
            let out = unsafe { dst.range(range.clone()) };
            if interleave::interleave_matrix(self.format, rows, self.cols, &self.bytes.as_slice()[range.clone()], out)
                .is_err()
            {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            self.bytes.release_pages(range);
        };
        if threads > 1 {
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(work);
                }
                work();
            });
        } else {
            work();
        }
        if failed.into_inner() {
            // Not reached: `can_interleave` and `Weight::new` checked the shape and size;
            // the source is still intact (released pages read back from the file).
            return self;
        }
        Weight { bytes: packed.into_bytes(), layout: RowLayout::Interleaved8, ..self }
    }

    /// Dequantizes row `r` into `out` (`cols` values). Used for embedding lookups; an
    /// interleaved weight makes the row's group row-major first (a slow path: embeddings
    /// are never interleaved).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let rb = self.bytes.len() / self.rows.max(1);
        if self.layout == RowLayout::Interleaved8 {
            let g = r / INTERLEAVE_ROWS * INTERLEAVE_ROWS;
            let group = &self.bytes.as_slice()[g * rb..(g + INTERLEAVE_ROWS) * rb];
            let mut rows = vec![0u8; group.len()];
            interleave::deinterleave_rows(self.format, self.cols, group, &mut rows)?;
            dequantize_row(self.format, &rows[(r - g) * rb..(r - g + 1) * rb], out)?;
            return Ok(());
        }
        dequantize_row(self.format, &self.bytes.as_slice()[r * rb..(r + 1) * rb], out)?;
        Ok(())
    }

    /// Dequantizes rows `first..first + out.len() / cols` into `out` (row-major). An
    /// interleaved weight makes each group row-major once (the backward pass reads whole
    /// matrices this way).
    pub fn dequantize_rows(&self, first: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let cols = self.cols.max(1);
        let n = out.len() / cols;
        let rb = self.bytes.len() / self.rows.max(1);
        if first + n > self.rows {
            return Err(ModelError::config("rows", format!("rows {first}..{} of {}", first + n, self.rows)));
        }
        let bytes = self.bytes.as_slice();
        if self.layout == RowLayout::Interleaved8 {
            let mut group = vec![0u8; INTERLEAVE_ROWS * rb];
            let mut r = first;
            while r < first + n {
                let g = r / INTERLEAVE_ROWS * INTERLEAVE_ROWS;
                interleave::deinterleave_rows(
                    self.format,
                    self.cols,
                    &bytes[g * rb..(g + INTERLEAVE_ROWS) * rb],
                    &mut group,
                )?;
                let end = (g + INTERLEAVE_ROWS).min(first + n);
                for row in r..end {
                    let src = &group[(row - g) * rb..(row - g + 1) * rb];
                    dequantize_row(self.format, src, &mut out[(row - first) * cols..(row - first + 1) * cols])?;
                }
                r = end;
            }
            return Ok(());
        }
        for (i, dst) in out.chunks_exact_mut(cols).enumerate() {
            let row = first + i;
            dequantize_row(self.format, &bytes[row * rb..(row + 1) * rb], dst)?;
        }
        Ok(())
    }

    /// The rows `range` as a weight of their own: splits fused matrices. A view, no copy —
    /// except for an interleaved weight cut inside a group, whose rows are made row-major.
    pub fn rows_view(&self, range: std::ops::Range<usize>) -> Weight {
        let rb = self.bytes.len() / self.rows.max(1);
        let whole_groups = range.start.is_multiple_of(INTERLEAVE_ROWS) && range.len().is_multiple_of(INTERLEAVE_ROWS);
        if self.layout == RowLayout::Interleaved8 && !whole_groups {
            let mut rows = vec![0u8; self.bytes.len()];
            if interleave::deinterleave_rows(self.format, self.cols, self.bytes.as_slice(), &mut rows).is_ok() {
                let bytes = WeightBytes::from_vec(rows[range.start * rb..range.end * rb].to_vec());
                return Weight {
                    format: self.format,
                    rows: range.len(),
                    cols: self.cols,
                    bytes,
                    layout: RowLayout::RowMajor,
                    origin: self.origin.clone(),
                    derived: Arc::default(),
                };
            }
        }
        let owner = Arc::new(self.bytes.clone());
        let bytes = WeightBytes::view(&owner, |b| &b.as_slice()[range.start * rb..range.end * rb]);
        Weight {
            format: self.format,
            rows: range.len(),
            cols: self.cols,
            bytes,
            layout: self.layout,
            origin: self.origin.clone(),
            derived: Arc::default(),
        }
    }

    /// Makes this matrix's lane panels (owl-kernels' [`PanelMatrix`]: the weights unpacked,
    /// 1.2–2.3× their bytes), once, kept with the weight and its clones: for callers that
    /// multiply the same frozen weights by many batches of tokens (LoRA training runs every
    /// projection, and `Wᵀ`, for every sequence of every step), never by inference. None
    /// where the active kernels have no lane panels for the format.
    pub fn prepack_panels(&self) -> Option<&PanelMatrix> {
        self.derived.panels.get_or_init(|| PanelMatrix::new(&self.matrix())).as_ref()
    }

    /// The panels [`Weight::prepack_panels`] made, if it was called and could.
    pub fn prepacked_panels(&self) -> Option<&PanelMatrix> {
        self.derived.panels.get().and_then(Option::as_ref)
    }

    /// The bytes [`Weight::prepack_panels`] would hold (None where it would make none).
    pub fn panel_bytes(&self) -> Option<usize> {
        PanelMatrix::bytes_for(&self.matrix())
    }

    /// `y = x Wᵀ` for `n` tokens (`x` `[n][cols]`, `y` `[n][rows]`, cut to size), reading
    /// [`Weight::prepacked_panels`], where they were made, instead of unpacking the weights
    /// where the call takes the panel path: the bits of `matmul` either way.
    pub fn matmul_frozen(&self, pool: &ThreadPool, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        let (x, y) = (&x[..n * self.cols], &mut y[..n * self.rows]);
        match self.prepacked_panels() {
            Some(p) => matmul_prepacked(pool, &self.matrix(), p, x, n, y)?,
            None => matmul(pool, &self.matrix(), x, n, y)?,
        }
        Ok(())
    }

    /// `Wᵀ` (`cols` rows of `rows` elements) in Q8_0, made on first use and kept with this
    /// weight and its clones. A projection's input gradient `dx = dy W` is then an ordinary
    /// matmul of `dy` with it in the 8-bit kernels, as the forward's `x Wᵀ` is with `W`
    /// (int8 forward and input-gradient products: Wortsman et al. 2023, "Stable and
    /// low-precision training for large-scale vision-language models", SwitchBack).
    /// Q8_0 rounds each dequantized value once more, by at most half a step of 1/127 of its
    /// block's largest. None for float weights (their backward stays float32) and when
    /// `rows` is not a whole number of 32-element blocks.
    pub fn transposed_q8_0(&self) -> Option<&Weight> {
        self.derived.transposed.get_or_init(|| self.make_transposed_q8_0()).as_ref()
    }

    fn make_transposed_q8_0(&self) -> Option<Weight> {
        const QK: usize = 32;
        let (rows, cols) = (self.rows, self.cols);
        if self.format.is_float() || rows == 0 || cols == 0 || !rows.is_multiple_of(QK) {
            return None;
        }
        let block = BlockFormat::Q8_0.row_bytes(QK)?;
        let row_bytes = BlockFormat::Q8_0.row_bytes(rows)?;
        let mut out = vec![0u8; row_bytes.checked_mul(cols)?];
        // Per slab of 32 source rows: dequantize, transpose into `cols` runs of 32, quantize
        // them in one call, then place block `j` of the slab in transposed row `j`.
        let (mut slab, mut runs) = (vec![0f32; QK * cols], vec![0f32; QK * cols]);
        let mut blocks = vec![0u8; block * cols];
        for b in 0..rows / QK {
            self.dequantize_rows(b * QK, &mut slab).ok()?;
            for (j, run) in runs.chunks_exact_mut(QK).enumerate() {
                for (i, v) in run.iter_mut().enumerate() {
                    *v = slab[i * cols + j];
                }
            }
            quantize_row(BlockFormat::Q8_0, &runs, &mut blocks).ok()?;
            for (j, src) in blocks.chunks_exact(block).enumerate() {
                out[j * row_bytes + b * block..j * row_bytes + (b + 1) * block].copy_from_slice(src);
            }
        }
        Weight::new(BlockFormat::Q8_0, cols, rows, WeightBytes::from_vec(out)).ok()
    }
}

/// The memory of an interleaved weight: a piece of a shared anonymous map asked for
/// transparent huge pages ([`crate::decode_arena`]), so that filling hundreds of MB at load
/// takes fewer page faults and decode walks them with fewer TLB misses; a `Vec` if no map
/// can be made.
enum DecodeBuffer {
    Arena(crate::decode_arena::Piece),
    Vec(Vec<u8>),
}

impl DecodeBuffer {
    fn new(len: usize) -> Self {
        match crate::decode_arena::piece(len) {
            Some(piece) => DecodeBuffer::Arena(piece),
            None => DecodeBuffer::Vec(vec![0u8; len]),
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            DecodeBuffer::Arena(p) => p.as_mut_slice(),
            DecodeBuffer::Vec(v) => v,
        }
    }

    fn into_bytes(self) -> WeightBytes {
        match self {
            DecodeBuffer::Arena(p) => p.into_bytes(),
            DecodeBuffer::Vec(v) => WeightBytes::from_vec(v),
        }
    }
}

/// A byte buffer whose disjoint ranges several threads fill at once.
struct SliceCells {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: threads only write disjoint ranges (the caller's promise in `range`), and the
// buffer outlives the scope the threads run in.
unsafe impl Sync for SliceCells {}

impl SliceCells {
    fn new(buf: &mut [u8]) -> Self {
        SliceCells { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// # Safety
    /// No other live reference may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, range: std::ops::Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// False when the environment sets `OWL_INTERLEAVE=0`: weights then stay row-major (a
/// measurement switch: decode with and without the interleaved layout in one build).
fn interleave_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("OWL_INTERLEAVE").map_or(true, |v| v.trim() != "0"))
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
            Ok(w) => Some(w.with_origin(name, 0, 1)),
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

    /// A `rows × 64` Q8_0 weight whose row `r` dequantizes to values around `r`.
    fn q8_0_weight(rows: usize) -> (Weight, Vec<Vec<f32>>) {
        let rb = BlockFormat::Q8_0.row_bytes(64).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        let mut want = Vec::new();
        for r in 0..rows {
            let src: Vec<f32> = (0..64).map(|c| r as f32 + c as f32 / 64.0).collect();
            owl_kernels::quant::quantize_row(BlockFormat::Q8_0, &src, &mut bytes[r * rb..(r + 1) * rb]).unwrap();
            let mut deq = vec![0f32; 64];
            dequantize_row(BlockFormat::Q8_0, &bytes[r * rb..(r + 1) * rb], &mut deq).unwrap();
            want.push(deq);
        }
        (Weight::new(BlockFormat::Q8_0, rows, 64, WeightBytes::from_vec(bytes)).unwrap(), want)
    }

    #[test]
    fn interleaved_weights_keep_their_rows() {
        let (w, want) = q8_0_weight(16);
        let simd =
            owl_kernels::dispatch::active().unwrap().get(BlockFormat::Q8_0).unwrap().prefers_interleaved_layout();
        assert_eq!(simd, owl_kernels::dispatch::active().unwrap().isa() == owl_kernels::dispatch::Isa::Avx2);
        let w = w.interleaved_for_decode();
        // Only a kernel set with a SIMD group kernel gets the layout.
        let layout = if simd { RowLayout::Interleaved8 } else { RowLayout::RowMajor };
        assert_eq!(w.layout(), layout);
        assert_eq!(w.matrix().layout, layout);
        let mut row = vec![0f32; 64];
        for (r, want) in want.iter().enumerate() {
            w.dequantize_row(r, &mut row).unwrap();
            assert_eq!(&row, want, "row {r}");
        }
        // Whole groups stay an interleaved view; a cut inside a group becomes row-major.
        for (range, layout) in [(8..16, layout), (4..12, RowLayout::RowMajor)] {
            let v = w.rows_view(range.clone());
            assert_eq!((v.layout(), v.rows), (layout, range.len()));
            for (i, r) in range.enumerate() {
                v.dequantize_row(i, &mut row).unwrap();
                assert_eq!(row, want[r], "view row {i}");
            }
        }
        // Shapes and formats without the layout are left as they are.
        let (odd, _) = q8_0_weight(12);
        assert_eq!(odd.interleaved_for_decode().layout(), RowLayout::RowMajor);
    }

    #[test]
    fn transposed_q8_0_is_the_transpose_within_one_rounding() {
        // 64 rows (two blocks of the transpose), interleaved or not: the same transpose.
        let (w, want) = q8_0_weight(64);
        for w in [w.clone(), w.interleaved_for_decode()] {
            let t = w.transposed_q8_0().expect("a quantized weight with whole blocks of rows");
            assert_eq!((t.format, t.rows, t.cols), (BlockFormat::Q8_0, 64, 64));
            let mut row = vec![0f32; 64];
            for c in 0..64 {
                t.dequantize_row(c, &mut row).unwrap();
                for (r, (&v, source)) in row.iter().zip(&want).enumerate() {
                    // Half a step of the block's largest (|v| < 32 in rows 0..32, < 64 after),
                    // and the f16 rounding of the block's scale (≤ 2⁻¹¹ of it, 127 times).
                    let step = if r < 32 { 32.0 } else { 64.0 } / 127.0;
                    let w = source[c];
                    assert!((v - w).abs() <= step * (0.5 + 127.0 / 2048.0), "({c}, {r}): {v} vs {w}");
                }
            }
            // Made once, shared by clones.
            assert!(std::ptr::eq(t, w.clone().transposed_q8_0().unwrap()));
        }
        // Rows not a whole number of blocks, or a float weight: none.
        assert!(q8_0_weight(48).0.transposed_q8_0().is_none());
        let f = Weight::new(BlockFormat::F32, 32, 1, WeightBytes::from_vec(vec![0; 128])).unwrap();
        assert!(f.transposed_q8_0().is_none());
    }

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
