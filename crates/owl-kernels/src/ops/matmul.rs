//! y = W·x for a weight matrix in any block format and a batch of f32 activations.
//!
//! One call: shapes are validated once; the activations are quantized once into the weight
//! format's companion format (Q8_0, Q8_1 or Q8_K; float weights take f32 activations as
//! they are) in the pool's reusable scratch buffer (no allocation once it has grown);
//! output rows are split into chunks that the pool's threads claim from an atomic counter,
//! so a thread slowed down by another process simply takes fewer chunks. Matrices under
//! `INLINE_MACS` multiply-adds run on the calling thread alone.
//!
//! - One token (decode, memory-bound): each thread streams its rows once. A matrix in the
//!   8-row interleaved layout (`quant::interleave`: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, as
//!   models load them) goes through its group kernel, 8 rows per activation block with no
//!   horizontal sums — the one path that keeps up with DRAM. Row-major matrices: Q4_0,
//!   Q4_1, Q5_0 and Q4_K on AVX2 four rows per kernel call (each activation block loaded
//!   once for the four, prefetch hints walking the rows after them linearly), other formats
//!   one dot product per row; a row's result is then the one-row kernel's, bit for bit.
//! - Many tokens (prefill, compute-bound), fastest applicable path first:
//!   1. panel formats on AVX2: each chunk of 16 rows is unpacked once into a lane panel
//!      (`ops::lane_panel`: the 16 rows in the SIMD lanes, 4 codes a lane) that all tokens
//!      reuse, swept by register tiles of the 16 rows × 4 to 8 tokens — the 32-element
//!      formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) against Q8_0/Q8_1 activations, Q4_K,
//!      Q5_K and Q6_K against Q8_K; AVX-512 VNNI tiles where the CPU has them, the same bits;
//!   2. float weights on AVX2: 3-row × 4-token register tiles;
//!   3. otherwise (Q2_K, Q3_K, IQ4_XS, scalar): one weight row against 4 tokens per kernel
//!      call, whose columns equal the one-token kernel bit for bit.
//!
//!   Rows and tokens are tiled so that a chunk of weight rows and a tile of activation rows
//!   stay in L2 while every pair is computed.
//!
//! Prefill needs no repacked copy: the panels are transient (one per thread, rebuilt per
//! call). Unpacking a chunk costs ~3–6 ns per 32-element block against ~70 ns of tile work
//! per block at 64 tokens (docs/PERFORMANCE.md). Interleaved weights are made row-major
//! chunk by chunk first (`RowMajorChunks`, exact), so prefill and the float32-activation
//! path give the same bits for either layout; only decode reads the interleaved groups.

use crate::dispatch::{self, FormatKernels, KernelTable};
use crate::pool::ThreadPool;
use crate::quant::interleave::{self, RowLayout, INTERLEAVE_ROWS};
use crate::quant::BlockFormat;
use crate::KernelError;

/// A weight matrix: `rows` rows of `cols` elements in `format` (GGUF's `[ne0 = cols,
/// ne1 = rows]`; PyTorch's `nn.Linear.weight` `[out = rows, in = cols]`), laid out as
/// stored (row-major) or in the 8-row interleaved layout that decode streams fastest
/// ([`crate::quant::interleave`]).
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub format: BlockFormat,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub layout: RowLayout,
}

impl<'a> Matrix<'a> {
    /// A row-major matrix, as GGUF stores it.
    pub const fn new(format: BlockFormat, rows: usize, cols: usize, data: &'a [u8]) -> Self {
        Matrix { format, rows, cols, data, layout: RowLayout::RowMajor }
    }

    /// A matrix in the 8-row interleaved layout (`data` from
    /// [`crate::quant::interleave::interleave_matrix`]).
    pub const fn interleaved(format: BlockFormat, rows: usize, cols: usize, data: &'a [u8]) -> Self {
        Matrix { format, rows, cols, data, layout: RowLayout::Interleaved8 }
    }
}

/// `y[t * w.rows + r] = Σ_c W[r, c] · x[t * w.cols + c]` for `t < n_tokens`, with the
/// kernels of the active instruction set ([`dispatch::active`]).
///
/// Errors: a shape that does not match (`x`, `y`, `w.data` lengths; `cols` not a whole
/// number of blocks), a weight format with no matmul kernel, or an unusable `OWL_KERNELS`.
pub fn matmul(pool: &ThreadPool, w: &Matrix<'_>, x: &[f32], n_tokens: usize, y: &mut [f32]) -> Result<(), KernelError> {
    matmul_with(dispatch::active()?, pool, w, x, n_tokens, y)
}

/// [`matmul`] with the kernels of a given table (tests compare every table in one process).
pub fn matmul_with(
    table: &KernelTable,
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(table, pool, w, x, n_tokens, y, Path::Auto, None)
}

/// [`matmul`] whose result for a token does not depend on the batch it came in: tokens
/// `0..n_single` each get exactly the bits a one-token call gives them, and tokens
/// `n_single..` exactly the bits of the many-token kernels, however many there are.
///
/// This is what lets a continuous-batching scheduler promise that a greedy reply is the
/// same whether its request ran alone or beside others: a decode step (one token of its
/// sequence) always takes the one-token kernel, a prompt chunk always the prefill kernels.
/// The one-token part streams each chunk of weight rows once for all its tokens (the chunk
/// stays in cache while every token's dot products run over it).
pub fn matmul_batch_invariant(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    n_single: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_batch_invariant_with(dispatch::active()?, pool, w, x, n_tokens, n_single, y)
}

/// [`matmul_batch_invariant`] with the kernels of a given table.
pub fn matmul_batch_invariant_with(
    table: &KernelTable,
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    n_single: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if n_single > n_tokens {
        let what = "one-token rows of a batch (at most its tokens)";
        return Err(KernelError::Length { what, expected: n_tokens, got: n_single, unit: "tokens" });
    }
    let (xs, xm) = x.split_at(x.len().min(n_single.saturating_mul(w.cols)));
    let (ys, ym) = y.split_at_mut(y.len().min(n_single.saturating_mul(w.rows)));
    if n_single > 0 {
        matmul_impl(table, pool, w, xs, n_single, ys, Path::PerToken, None)?;
    }
    if n_tokens > n_single {
        matmul_impl(table, pool, w, xm, n_tokens - n_single, ym, Path::Many, None)?;
    }
    Ok(())
}

/// Which kernels a matmul call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// The fastest for the token count: one-token kernels for one token, else the panels
    /// (from `panel_min_tokens`) or the multi-token kernels.
    Auto,
    /// As `Auto`, never the panels (A/B measurements).
    #[cfg_attr(not(test), allow(dead_code))]
    NoPanel,
    /// Every token through the one-token kernels.
    PerToken,
    /// Every token through the many-token kernels (the panels where the format has them).
    Many,
}

/// The matmul of every entry point. `prepacked`: `w`'s lane panels kept unpacked
/// ([`super::panel_matrix`]), read in place where the call takes the panel path (the same
/// bits: the panels are what that path would unpack).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_impl(
    table: &KernelTable,
    pool: &ThreadPool,
    w: &Matrix<'_>,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
    path: Path,
    prepacked: Option<&super::panel_matrix::PanelMatrix>,
) -> Result<(), KernelError> {
    let shape = Shape::validate(table, w, x, n_tokens, y)?;
    if w.rows == 0 || n_tokens == 0 {
        return Ok(());
    }
    if w.cols == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let lease = pool.lease();
    if pool.activation_precision().dequantizes(w.format) {
        super::f32_activations::matmul(table, &lease, w, shape.row_bytes, x, n_tokens, y);
        return Ok(());
    }
    let n_threads = compute_threads(&lease, w, n_tokens);
    let per_token = path == Path::PerToken || (n_tokens == 1 && path != Path::Many);
    let panel = !per_token
        && shape.kernels.has_prefill_panel()
        && match path {
            Path::Auto => n_tokens >= panel_min_tokens(w.format),
            Path::Many => true,
            Path::NoPanel | Path::PerToken => false,
        };
    let nb = w.cols / w.format.block_elems();
    let interleaved = w.layout == RowLayout::Interleaved8;
    let chunk = if panel { PANEL_ROWS } else { prefill_chunk_rows(w.rows, shape.row_bytes, n_threads, interleaved) };
    let row_chunks = if interleaved && !per_token { n_threads } else { 0 };
    let layout = ScratchLayout::new(&shape, n_tokens, nb, if panel { n_threads } else { 0 }, row_chunks, chunk);
    let mut scratch = lease.take_scratch();
    let buf = scratch.bytes_mut(layout.total);
    let (act_buf, rest) = buf.split_at_mut(layout.act);
    let (scales_buf, rest) = rest.split_at_mut(layout.scales);
    let (panels_buf, rows_buf) = rest.split_at_mut(if panel { n_threads * layout.panel } else { 0 });
    let row_major = RowMajorChunks::new(w, shape.row_bytes, rows_buf, layout.rows);
    let act: &[u8] = match shape.kernels.raw_quantize_act() {
        Some(quantize) => {
            quantize_activations(&lease, quantize, x, w.cols, n_tokens, act_buf, shape.act_stride, shape.act_row_bytes);
            act_buf
        }
        None if shape.act_in_scratch => {
            for (t, xt) in x.chunks_exact(w.cols).enumerate() {
                act_buf[t * shape.act_stride..t * shape.act_stride + shape.act_row_bytes]
                    .copy_from_slice(bytemuck::cast_slice(xt));
            }
            act_buf
        }
        None => bytemuck::cast_slice(x),
    };
    let out = SharedOut { ptr: y.as_mut_ptr(), len: y.len() };
    let work = Work { w, shape: &shape, act, n_tokens, out: &out, row_major: &row_major, prepacked };
    if per_token {
        let mut chunk = matvec_chunk_rows(w.rows, shape.row_bytes, n_threads);
        if n_tokens > 1 {
            // The chunk is read once per token: keep it small enough to stay in L2.
            chunk = chunk.min((PREFILL_CHUNK_BYTES / shape.row_bytes.max(1)).next_multiple_of(INTERLEAVE_ROWS));
        }
        let group_dot4 = if interleaved && n_tokens > 1 { shape.kernels.raw_group_dot4() } else { None };
        let row_dot4 = if !interleaved && n_tokens > 1 { shape.kernels.raw_exact_dot4() } else { None };
        let rows_all_tokens = |rows: std::ops::Range<usize>| match (group_dot4, row_dot4) {
            (Some(dot4), _) => work.group_rows_tokens(dot4, rows),
            (None, Some(dot4)) => work.rows_tokens_dot4(dot4, rows),
            (None, None) => {
                for t in 0..n_tokens {
                    work.matvec_rows(t, rows.clone());
                }
            }
        };
        if n_threads == 1 && n_tokens == 1 {
            work.matvec_rows(0, 0..w.rows);
        } else if n_threads == 1 {
            for_each_chunk(w.rows, chunk, rows_all_tokens);
        } else {
            lease.parallel_for(w.rows, chunk, &|_, rows| rows_all_tokens(rows));
        }
    } else if panel {
        #[cfg(target_arch = "x86_64")]
        panel_prefill(&lease, &work, n_threads, nb, scales_buf, panels_buf, layout.panel);
        // Panels are AVX2-only (`has_prefill_panel` is false elsewhere).
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (scales_buf, panels_buf);
    } else if n_threads > 1 {
        lease.parallel_for(w.rows, chunk, &|thread, rows| work.prefill_rows(thread, rows));
    } else if interleaved {
        for_each_chunk(w.rows, chunk, |rows| work.prefill_rows(0, rows));
    } else {
        work.prefill_rows(0, 0..w.rows);
    }
    lease.put_scratch(scratch);
    Ok(())
}

/// Fewest tokens for which the panels beat the one-row × four-token kernels: unpacking a
/// K super-block (its scales and mins, lane by lane) costs 3–4× a 32-element block's, so
/// below ~12 tokens the K-quants' one-row kernels win (`prefill_paths_ab`, Zen 5: 4 tokens
/// 136 vs 70 GFLOP/s for Q4_K, 8 tokens 135 vs 121, 12 tokens 139 vs 169; the 32-element
/// formats' panels win from 4 tokens, 97–132 vs 78–99).
fn panel_min_tokens(format: BlockFormat) -> usize {
    match format {
        BlockFormat::Q4_K | BlockFormat::Q5_K | BlockFormat::Q6_K => 12,
        _ => 4,
    }
}

/// Byte sizes of the scratch regions of one call, each a multiple of 64.
struct ScratchLayout {
    /// Quantized activations.
    act: usize,
    /// Panel path: per-token block scales and offset coefficients (two f32 arrays).
    scales: usize,
    /// Panel path: one panel per thread.
    panel: usize,
    /// Interleaved weights, many tokens: per thread, room for one chunk's rows made row-major.
    rows: usize,
    total: usize,
}

impl ScratchLayout {
    /// `panels`: threads with a panel (0: no panel path); `row_chunks`: threads that make
    /// chunks of `chunk_rows` interleaved rows row-major (0: none).
    fn new(shape: &Shape<'_>, n_tokens: usize, nb: usize, panels: usize, row_chunks: usize, chunk_rows: usize) -> Self {
        let act = if shape.act_in_scratch { n_tokens * shape.act_stride } else { 0 };
        let (scales, panel) = if panels > 0 {
            #[cfg(target_arch = "x86_64")]
            let panel = super::lane_panel::kind(shape.kernels.weight_format())
                .map_or(0, |kind| super::lane_panel::Geometry { kind, nb }.bytes());
            #[cfg(not(target_arch = "x86_64"))]
            let panel = 0;
            ((2 * n_tokens * nb * 4).next_multiple_of(64), panel)
        } else {
            (0, 0)
        };
        let rows = (chunk_rows * shape.row_bytes).next_multiple_of(64);
        ScratchLayout { act, scales, panel, rows, total: act + scales + panels * panel + row_chunks * rows }
    }
}

/// Rows a thread unpacks into its panel at a time: the 16 lanes of a lane panel
/// (`ops::lane_panel`; 16 rows of 4096 columns are an 80 KiB int8 or an 82–90 KiB K panel).
const PANEL_ROWS: usize = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(PANEL_ROWS == super::lane_panel::LANES);

/// Prefill through lane panels: the activations' block terms once (32-element formats), then
/// chunks of [`PANEL_ROWS`] rows, each unpacked by the thread that claims it into its own
/// panel and swept by register tiles of all its rows × a few tokens.
#[cfg(target_arch = "x86_64")]
fn panel_prefill(
    lease: &crate::pool::Lease<'_>,
    work: &Work<'_, '_>,
    n_threads: usize,
    nb: usize,
    scales_buf: &mut [u8],
    panels_buf: &mut [u8],
    panel_bytes: usize,
) {
    use super::lane_panel::{self as lp, Geometry, LanePanel};
    let panels = SharedOut { ptr: panels_buf.as_mut_ptr(), len: panels_buf.len() };
    let format = work.w.format;
    // `has_prefill_panel` admits only the lane panel formats.
    let Some(kind) = lp::kind(format) else { unreachable!("no lane panel for {format:?}") };
    // The AVX-512 VNNI tiles where the CPU has them (the same bits either way).
    let wide = super::lane_panel_avx512::enabled();
    let geo = Geometry { kind, nb };
    let (da, c): (&[f32], &[u32]) = if lp::is_k(kind) {
        (&[], &[])
    } else {
        let n = work.n_tokens * nb;
        let (da, c) = scales_buf[..2 * n * 4].split_at_mut(n * 4);
        let (da, c) = (bytemuck::cast_slice_mut::<u8, f32>(da), bytemuck::cast_slice_mut::<u8, u32>(c));
        let block = work.shape.kernels.act_format().block_bytes();
        lp::prepare_act(format, wide, work.act, work.shape.act_stride, block, work.n_tokens, nb, da, c);
        (da, c)
    };
    let run = |thread: usize, rows: std::ops::Range<usize>| {
        if let Some(p) = work.prepacked {
            // Chunks start on multiples of PANEL_ROWS, the panels' rows.
            let view = lp::PanelView::from_bytes(p.panel(rows.start / PANEL_ROWS), geo, wide);
            work.lane_tiles(&view, rows, da, c);
            return;
        }
        // SAFETY: each thread index owns its panel region; one chunk at a time per thread.
        let buf = unsafe { panels.slice(thread * panel_bytes, panel_bytes) };
        let mut panel = LanePanel::from_bytes(buf, geo, wide);
        // SAFETY: each thread index owns its row region; one chunk at a time per thread.
        let w_rows = unsafe { work.row_major.rows(thread, rows.clone()) };
        // SAFETY: this path is only taken from the AVX2 table (`has_prefill_panel`).
        unsafe { lp::unpack_rows(format, w_rows, rows.len(), &mut panel) };
        work.lane_tiles(&panel.view(), rows, da, c);
    };
    if n_threads == 1 {
        for_each_chunk(work.w.rows, PANEL_ROWS, |rows| run(0, rows));
    } else {
        lease.parallel_for(work.w.rows, PANEL_ROWS, &run);
    }
}

/// Below this many multiply-adds a matmul runs on the calling thread alone: waking the
/// workers costs more than it saves (a 64×64 matvec takes ~0.2 µs).
const INLINE_MACS: usize = 32 * 1024;

/// Threads one matmul of `w` with `n_tokens` tokens uses: the lease's, or 1 under
/// [`INLINE_MACS`].
pub(super) fn compute_threads(lease: &crate::pool::Lease<'_>, w: &Matrix<'_>, n_tokens: usize) -> usize {
    if w.rows.saturating_mul(w.cols).saturating_mul(n_tokens) < INLINE_MACS {
        1
    } else {
        lease.n_threads()
    }
}

/// Activation rows start on cache lines in the scratch buffer (and Q8_K needs 4 bytes).
const ACT_ALIGN: usize = 64;

/// A weight-chunk budget for prefill: a chunk of rows stays in L2 while the token tiles pass.
const PREFILL_CHUNK_BYTES: usize = 192 * 1024;

/// An activation-tile budget for prefill: a tile of quantized tokens stays in L2 while a
/// chunk of rows passes over it.
const PREFILL_TILE_BYTES: usize = 256 * 1024;

/// Chunks per thread in a matvec: enough for threads slowed by other processes to hand
/// work over, few enough that the atomic counter is not contended.
const MATVEC_CHUNKS_PER_THREAD: usize = 8;

/// Smallest matvec chunk in weight bytes (an atomic claim costs ~100 ns).
const MATVEC_MIN_CHUNK_BYTES: usize = 16 * 1024;

/// Rows per chunk for one token, a multiple of 8 (the multi-row kernels' 4 rows and the
/// interleaved layout's groups of 8).
fn matvec_chunk_rows(rows: usize, row_bytes: usize, n_threads: usize) -> usize {
    let balance = rows.div_ceil(n_threads * MATVEC_CHUNKS_PER_THREAD);
    let min = MATVEC_MIN_CHUNK_BYTES.div_ceil(row_bytes.max(1));
    balance.max(min).next_multiple_of(INTERLEAVE_ROWS)
}

/// Rows per chunk for many tokens, a multiple of 12 (the 3-row tiles and 4-row groups);
/// of 24 for interleaved weights (whole groups of 8).
fn prefill_chunk_rows(rows: usize, row_bytes: usize, n_threads: usize, interleaved: bool) -> usize {
    let balance = rows.div_ceil(n_threads * 4);
    let fit = PREFILL_CHUNK_BYTES / row_bytes.max(1);
    balance.min(fit).max(1).next_multiple_of(if interleaved { 24 } else { 12 })
}

/// `run(chunk)` for consecutive chunks of `chunk` rows covering `0..rows`, on this thread.
pub(super) fn for_each_chunk(rows: usize, chunk: usize, mut run: impl FnMut(std::ops::Range<usize>)) {
    let mut r = 0;
    while r < rows {
        let end = (r + chunk.max(1)).min(rows);
        run(r..end);
        r = end;
    }
}

/// Whole rows of a weight matrix as row-major bytes, for the paths that read rows (prefill
/// panels and tiles, the float32-activation path): a matrix stored row-major lends its own
/// bytes; an interleaved one has each chunk (whole groups) made row-major in the claiming
/// thread's own scratch region — exact, and cheap beside the many-token work per row.
pub(super) struct RowMajorChunks<'a> {
    data: &'a [u8],
    layout: RowLayout,
    format: BlockFormat,
    cols: usize,
    row_bytes: usize,
    regions: SharedOut<u8>,
    region: usize,
}

impl<'a> RowMajorChunks<'a> {
    /// `regions`: per-thread regions of `region` bytes (room for the largest chunk); unused
    /// for a row-major matrix.
    pub(super) fn new(w: &Matrix<'a>, row_bytes: usize, regions: &mut [u8], region: usize) -> Self {
        RowMajorChunks {
            data: w.data,
            layout: w.layout,
            format: w.format,
            cols: w.cols,
            row_bytes,
            regions: SharedOut { ptr: regions.as_mut_ptr(), len: regions.len() },
            region,
        }
    }

    /// Rows `rows` (for an interleaved matrix: starting and ending on whole groups) as
    /// row-major bytes.
    ///
    /// # Safety
    /// For an interleaved matrix, `thread`'s region is written: no other use of it may be
    /// alive (one chunk at a time per thread index).
    pub(super) unsafe fn rows(&self, thread: usize, rows: std::ops::Range<usize>) -> &[u8] {
        let src = &self.data[rows.start * self.row_bytes..rows.end * self.row_bytes];
        if self.layout == RowLayout::RowMajor {
            return src;
        }
        assert!(rows.start.is_multiple_of(INTERLEAVE_ROWS) && src.len() <= self.region);
        // SAFETY: the caller's promise; `slice` checks the bounds.
        let dst = unsafe { self.regions.slice(thread * self.region, src.len()) };
        if let Err(e) = interleave::deinterleave_rows(self.format, self.cols, src, dst) {
            unreachable!("validated interleaved matrix: {e}");
        }
        dst
    }
}

/// Shapes checked against each other once per call.
struct Shape<'t> {
    kernels: &'t FormatKernels,
    row_bytes: usize,
    act_row_bytes: usize,
    /// Distance between activation rows: in scratch, `act_row_bytes` rounded up to
    /// [`ACT_ALIGN`] (one line more if that is a multiple of 4 KiB); `cols * 4` in place.
    act_stride: usize,
    /// Activations live in the scratch buffer (quantized, or f32 rows re-spaced).
    act_in_scratch: bool,
}

impl<'t> Shape<'t> {
    fn validate(
        table: &'t KernelTable,
        w: &Matrix<'_>,
        x: &[f32],
        n_tokens: usize,
        y: &[f32],
    ) -> Result<Self, KernelError> {
        let kernels = table.get(w.format).ok_or(KernelError::Unsupported { format: w.format, op: "matmul" })?;
        let not_blocks =
            |format: BlockFormat| KernelError::RowNotBlockMultiple { format, len: w.cols, block: format.block_elems() };
        let row_bytes = w.format.row_bytes(w.cols).ok_or_else(|| not_blocks(w.format))?;
        let act = kernels.act_format();
        let act_row_bytes = act.row_bytes(w.cols).ok_or_else(|| not_blocks(act))?;
        let too_big =
            |what| KernelError::Length { what, expected: usize::MAX, got: usize::MAX, unit: "(size overflows)" };
        let w_bytes = w.rows.checked_mul(row_bytes).ok_or_else(|| too_big("matmul W"))?;
        if w.data.len() != w_bytes {
            return Err(KernelError::Length { what: "matmul W", expected: w_bytes, got: w.data.len(), unit: "bytes" });
        }
        let x_len = n_tokens.checked_mul(w.cols).ok_or_else(|| too_big("matmul x"))?;
        if x.len() != x_len {
            return Err(KernelError::Length { what: "matmul x", expected: x_len, got: x.len(), unit: "f32" });
        }
        let y_len = n_tokens.checked_mul(w.rows).ok_or_else(|| too_big("matmul y"))?;
        if y.len() != y_len {
            return Err(KernelError::Length { what: "matmul y", expected: y_len, got: y.len(), unit: "f32" });
        }
        if w.layout == RowLayout::Interleaved8
            && !(interleave::can_interleave(w.format, w.rows, w.cols) && kernels.raw_group_matvec().is_some())
        {
            return Err(KernelError::Unsupported {
                format: w.format,
                op: "matmul of this shape in the 8-row interleaved layout",
            });
        }
        let align = dispatch::weight_align(w.format);
        if !(w.data.as_ptr() as usize).is_multiple_of(align) {
            return Err(KernelError::Length {
                what: "matmul W alignment (Q8_K weights need 4-byte aligned data)",
                expected: align,
                got: w.data.as_ptr() as usize % align,
                unit: "bytes",
            });
        }
        // f32 activations are used in place, except in prefill when their rows are a multiple
        // of 4 KiB apart: then the rows of a token tile all map to the same L1 sets and evict
        // each other, so they are copied to rows one cache line further apart.
        let act_in_scratch = kernels.raw_quantize_act().is_some() || (n_tokens > 1 && act_row_bytes % 4096 == 0);
        let act_stride = if act_in_scratch {
            let mut stride = act_row_bytes.next_multiple_of(ACT_ALIGN);
            if stride % 4096 == 0 {
                stride += ACT_ALIGN;
            }
            n_tokens.checked_mul(stride).ok_or_else(|| too_big("matmul activation scratch"))?;
            stride
        } else {
            act_row_bytes
        };
        Ok(Shape { kernels, row_bytes, act_row_bytes, act_stride, act_in_scratch })
    }
}

/// Quantizes each token's activations into its row of `buf`, in parallel when there is
/// enough of it.
#[allow(clippy::too_many_arguments)]
fn quantize_activations(
    lease: &crate::pool::Lease<'_>,
    quantize: dispatch::QuantizeFn,
    x: &[f32],
    cols: usize,
    n_tokens: usize,
    buf: &mut [u8],
    stride: usize,
    row_bytes: usize,
) {
    /// Elements below which quantizing on one thread is cheaper than waking the others.
    const PARALLEL_ELEMS: usize = 64 * 1024;
    if n_tokens == 1 || n_tokens * cols < PARALLEL_ELEMS || lease.n_threads() == 1 {
        for (t, xt) in x.chunks_exact(cols).enumerate() {
            quantize(xt, &mut buf[t * stride..t * stride + row_bytes]);
        }
        return;
    }
    let out = SharedOut { ptr: buf.as_mut_ptr(), len: buf.len() };
    let tokens_per_chunk = (PARALLEL_ELEMS / 4 / cols).max(1);
    lease.parallel_for(n_tokens, tokens_per_chunk, &|_, tokens| {
        for t in tokens {
            // SAFETY: token rows are disjoint and each token is claimed by one thread.
            let dst = unsafe { out.slice(t * stride, row_bytes) };
            quantize(&x[t * cols..(t + 1) * cols], dst);
        }
    });
}

/// The output (or scratch) buffer, shared by the threads of one call; each element is
/// written by exactly one thread (rows are partitioned, tokens within a row are not).
pub(super) struct SharedOut<T> {
    pub(super) ptr: *mut T,
    pub(super) len: usize,
}

// SAFETY: threads write disjoint elements (see uses), and the buffer outlives the run.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// # Safety
    /// No other thread may access `start..start + len` while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

impl SharedOut<f32> {
    /// # Safety
    /// No other thread may access element `i` concurrently.
    #[inline(always)]
    pub(super) unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds; exclusivity is the caller's promise.
        unsafe { *self.ptr.add(i) = v };
    }
}

/// Everything one matmul's threads share.
struct Work<'a, 'w> {
    w: &'a Matrix<'w>,
    shape: &'a Shape<'a>,
    /// Activation rows at `act_stride` apart, `act_row_bytes` each.
    act: &'a [u8],
    n_tokens: usize,
    out: &'a SharedOut<f32>,
    row_major: &'a RowMajorChunks<'w>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    prepacked: Option<&'a super::panel_matrix::PanelMatrix>,
}

impl Work<'_, '_> {
    #[inline(always)]
    fn act_row(&self, t: usize) -> &[u8] {
        &self.act[t * self.shape.act_stride..t * self.shape.act_stride + self.shape.act_row_bytes]
    }

    /// One token `t`: one pass over the rows — several rows per kernel call where the format
    /// has a multi-row kernel (each activation block then serves all of them), else one dot
    /// product per row. Both give the same bits.
    fn matvec_rows(&self, t: usize, rows: std::ops::Range<usize>) {
        let dot = self.shape.kernels.raw_dot();
        let a = self.act_row(t);
        let rb = self.shape.row_bytes;
        let base = t * self.w.rows;
        if self.w.layout == RowLayout::Interleaved8 {
            let Some(group_matvec) = self.shape.kernels.raw_group_matvec() else {
                unreachable!("validated: interleaved weights have a group kernel")
            };
            // SAFETY: as below; chunks are whole groups (a multiple of 8 rows, validated
            // `rows` a multiple of 8), so their bytes are whole groups too.
            let out = unsafe { self.out.slice(base + rows.start, rows.len()) };
            group_matvec(&self.w.data[rows.start * rb..rows.end * rb], a, out);
            return;
        }
        if let Some(matvec) = self.shape.kernels.raw_matvec() {
            // SAFETY: token t's outputs of the rows of a chunk belong to this thread only.
            let out = unsafe { self.out.slice(base + rows.start, rows.len()) };
            matvec(&self.w.data[rows.start * rb..rows.end * rb], rb, a, out);
            return;
        }
        for r in rows {
            let v = dot(&self.w.data[r * rb..(r + 1) * rb], a);
            // SAFETY: row r belongs to this chunk only.
            unsafe { self.out.write(base + r, v) };
        }
    }

    /// Every token over whole groups of interleaved `rows`, up to four tokens per kernel
    /// call: each token gets the bits [`Self::matvec_rows`] gives it.
    fn group_rows_tokens(&self, dot4: crate::dispatch::GroupDot4Fn, rows: std::ops::Range<usize>) {
        let rb = self.shape.row_bytes;
        let group_bytes = INTERLEAVE_ROWS * rb;
        let chunk = &self.w.data[rows.start * rb..rows.end * rb];
        for t0 in (0..self.n_tokens).step_by(4) {
            let n = (self.n_tokens - t0).min(4);
            let acts: [&[u8]; 4] = std::array::from_fn(|i| self.act_row(t0 + i.min(n - 1)));
            for (g, group) in chunk.chunks_exact(group_bytes).enumerate() {
                let out = dot4(group, acts, n);
                let r0 = rows.start + g * INTERLEAVE_ROWS;
                for (i, token) in out.iter().enumerate().take(n) {
                    // SAFETY: token t0 + i's outputs of the rows of this chunk belong to
                    // this thread only.
                    let o = unsafe { self.out.slice((t0 + i) * self.w.rows + r0, INTERLEAVE_ROWS) };
                    o.copy_from_slice(token);
                }
            }
        }
    }

    /// Every token over row-major `rows`, four tokens per call of a `dot4` whose columns are
    /// `dot`'s bits, the tokens left over one at a time ([`Self::matvec_rows`]).
    fn rows_tokens_dot4(&self, dot4: crate::dispatch::Dot4Fn, rows: std::ops::Range<usize>) {
        let rb = self.shape.row_bytes;
        let whole = self.n_tokens / 4 * 4;
        for t0 in (0..whole).step_by(4) {
            let acts: [&[u8]; 4] = std::array::from_fn(|i| self.act_row(t0 + i));
            for r in rows.clone() {
                let v = dot4(&self.w.data[r * rb..(r + 1) * rb], acts);
                for (i, v) in v.into_iter().enumerate() {
                    // SAFETY: row r of every token belongs to this chunk's thread only.
                    unsafe { self.out.write((t0 + i) * self.w.rows + r, v) };
                }
            }
        }
        for t in whole..self.n_tokens {
            self.matvec_rows(t, rows.clone());
        }
    }

    /// The tiles of one unpacked lane panel (`rows` of the matrix, at most its 16 lanes):
    /// every token, a tile's worth at a time, then the rest in tiles of 4, 2 and 1.
    #[cfg(target_arch = "x86_64")]
    fn lane_tiles(
        &self,
        panel: &super::lane_panel::PanelView<'_>,
        rows: std::ops::Range<usize>,
        da: &[f32],
        c: &[u32],
    ) {
        use super::lane_panel::{FOLD, K32, KMIN, MIN, SIGNED};
        match (panel.geo.kind, panel.wide) {
            (FOLD, false) => self.lane_tiles_as::<FOLD, false>(panel, rows, da, c),
            (FOLD, true) => self.lane_tiles_as::<FOLD, true>(panel, rows, da, c),
            (MIN, false) => self.lane_tiles_as::<MIN, false>(panel, rows, da, c),
            (MIN, true) => self.lane_tiles_as::<MIN, true>(panel, rows, da, c),
            (SIGNED, false) => self.lane_tiles_as::<SIGNED, false>(panel, rows, da, c),
            (SIGNED, true) => self.lane_tiles_as::<SIGNED, true>(panel, rows, da, c),
            (KMIN, false) => self.lane_tiles_as::<KMIN, false>(panel, rows, da, c),
            (KMIN, true) => self.lane_tiles_as::<KMIN, true>(panel, rows, da, c),
            (K32, false) => self.lane_tiles_as::<K32, false>(panel, rows, da, c),
            _ => self.lane_tiles_as::<K32, true>(panel, rows, da, c),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn lane_tiles_as<const KIND: u8, const WIDE: bool>(
        &self,
        panel: &super::lane_panel::PanelView<'_>,
        rows: std::ops::Range<usize>,
        da: &[f32],
        c: &[u32],
    ) {
        use super::lane_panel::{is_k, LANES};
        use super::{lane_panel_avx2 as avx2, lane_panel_avx512 as avx512};
        let (n_rows, n_tokens, nb) = (self.w.rows, self.n_tokens, panel.geo.nb);
        let stride = self.shape.act_stride;
        let act_block = self.shape.kernels.act_format().block_bytes();
        // Every pointer below stays inside these bounds.
        assert!(rows.len() <= LANES && rows.end <= n_rows && n_tokens * n_rows <= self.out.len);
        assert!(n_tokens > 0 && self.act.len() >= (n_tokens - 1) * stride + nb * act_block);
        assert!(is_k(KIND) || (da.len() >= n_tokens * nb && c.len() >= n_tokens * nb));
        // Q8_0 blocks hold their quants after a 2-byte scale, Q8_1 after 4; Q8_K tiles read
        // whole blocks.
        let quants = if is_k(KIND) { self.act.as_ptr() } else { self.act[act_block - 32..].as_ptr() };
        let out = self.out.ptr;
        let valid = rows.len();
        let write = |t: usize, first_lane: usize, lanes: &[f32]| {
            let n = lanes.len().min(valid.saturating_sub(first_lane));
            // SAFETY: this chunk's output rows belong to this thread; in bounds as asserted.
            unsafe {
                std::ptr::copy_nonoverlapping(lanes.as_ptr(), out.add(t * n_rows + rows.start + first_lane), n);
            }
        };
        macro_rules! sweep {
            ($T:expr) => {{
                const TT: usize = $T;
                let mut t = 0;
                while t < n_tokens {
                    let left = n_tokens - t;
                    macro_rules! tile {
                        ($n:expr) => {{
                            const N: usize = $n;
                            // SAFETY: AVX2 (the panel path's table) and, `WIDE`, AVX-512 VNNI
                            // (`lane_panel_avx512::enabled`); tokens `t..t + N` and the
                            // panel's blocks are in bounds (asserted above).
                            unsafe {
                                let act: [*const u8; N] = std::array::from_fn(|k| quants.add((t + k) * stride));
                                let da: [*const f32; N] =
                                    std::array::from_fn(|k| da.as_ptr().add(if is_k(KIND) { 0 } else { (t + k) * nb }));
                                let c: [*const u32; N] =
                                    std::array::from_fn(|k| c.as_ptr().add(if is_k(KIND) { 0 } else { (t + k) * nb }));
                                if WIDE {
                                    let v = if is_k(KIND) {
                                        avx512::tile_k::<KIND, N>(panel, act)
                                    } else {
                                        avx512::tile_int8::<KIND, N>(panel, act, act_block, da, c)
                                    };
                                    for (k, lanes) in v.iter().enumerate() {
                                        write(t + k, 0, lanes);
                                    }
                                } else {
                                    for half in 0..valid.div_ceil(8) {
                                        let v = if is_k(KIND) {
                                            avx2::tile_k::<KIND, N>(panel, half, act)
                                        } else {
                                            avx2::tile_int8::<KIND, N>(panel, half, act, act_block, da, c)
                                        };
                                        for (k, lanes) in v.iter().enumerate() {
                                            write(t + k, 8 * half, lanes);
                                        }
                                    }
                                }
                            }
                            t += N;
                        }};
                    }
                    // Whole tiles, then the rest in tiles of 4, 2 and 1 token (a token swept
                    // alone reads the whole panel for itself).
                    if left >= TT {
                        tile!(TT);
                    } else if left >= 4 && TT > 4 {
                        tile!(4);
                    } else if left >= 2 {
                        tile!(2);
                    } else {
                        tile!(1);
                    }
                }
            }};
        }
        match (WIDE, is_k(KIND)) {
            (true, true) => sweep!(avx512::TOKENS_K),
            (true, false) => sweep!(avx512::TOKENS_INT8),
            (false, _) => sweep!(avx2::TOKENS),
        }
    }

    /// Many tokens: token tiles that fit L2, each swept by every row of the chunk; four
    /// tokens per kernel call where the format has a multi-token kernel (each weight block is
    /// then unpacked once for four tokens). The 1×4 kernels' columns equal the one-token
    /// kernel bit for bit; the float 3×4 tiles sum in their own order, and every token of a
    /// 3-row group goes through them. Either way a token's output does not depend on the
    /// batch it came in.
    fn prefill_rows(&self, thread: usize, rows: std::ops::Range<usize>) {
        // SAFETY: each thread index makes one chunk at a time row-major in its own region.
        let chunk = unsafe { self.row_major.rows(thread, rows.clone()) };
        let rb = self.shape.row_bytes;
        let weight_row = |r: usize| &chunk[(r - rows.start) * rb..(r - rows.start + 1) * rb];
        let dot = self.shape.kernels.raw_dot();
        let dot4 = self.shape.kernels.raw_dot4();
        let tile3x4 = self.shape.kernels.raw_tile3x4();
        let n_rows = self.w.rows;
        let tile = (PREFILL_TILE_BYTES / self.shape.act_stride.max(1)).next_multiple_of(4).max(4).min(self.n_tokens);
        let mut t0 = 0;
        while t0 < self.n_tokens {
            let t1 = (t0 + tile).min(self.n_tokens);
            let mut r = rows.start;
            if let Some(tile3x4) = tile3x4 {
                while r + 3 <= rows.end {
                    let wr = [weight_row(r), weight_row(r + 1), weight_row(r + 2)];
                    let mut t = t0;
                    while t + 4 <= t1 {
                        let a = [self.act_row(t), self.act_row(t + 1), self.act_row(t + 2), self.act_row(t + 3)];
                        for (i, v) in tile3x4(wr, a).into_iter().enumerate() {
                            for (k, v) in v.into_iter().enumerate() {
                                // SAFETY: rows of this chunk belong to this thread only.
                                unsafe { self.out.write((t + k) * n_rows + r + i, v) };
                            }
                        }
                        t += 4;
                    }
                    if t < t1 {
                        // The last 1–3 tokens take the tile too (the last one repeated to fill
                        // it), not the one-token kernel: a token's bits then do not depend on
                        // where the batch's tile edges fall (`matmul_batch_invariant`).
                        let a = [0, 1, 2, 3].map(|k| self.act_row((t + k).min(t1 - 1)));
                        for (i, v) in tile3x4(wr, a).into_iter().enumerate() {
                            for (k, v) in v.into_iter().enumerate().take(t1 - t) {
                                // SAFETY: as above.
                                unsafe { self.out.write((t + k) * n_rows + r + i, v) };
                            }
                        }
                    }
                    r += 3;
                }
            }
            for r in r..rows.end {
                let wr = weight_row(r);
                let mut t = t0;
                if let Some(dot4) = dot4 {
                    while t + 4 <= t1 {
                        let a = [self.act_row(t), self.act_row(t + 1), self.act_row(t + 2), self.act_row(t + 3)];
                        let v = dot4(wr, a);
                        for (k, v) in v.into_iter().enumerate() {
                            // SAFETY: row r belongs to this chunk only.
                            unsafe { self.out.write((t + k) * n_rows + r, v) };
                        }
                        t += 4;
                    }
                }
                for t in t..t1 {
                    let v = dot(wr, self.act_row(t));
                    // SAFETY: row r belongs to this chunk only.
                    unsafe { self.out.write(t * n_rows + r, v) };
                }
            }
            t0 = t1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Isa;

    /// A/B of the prefill paths on one thread, alternating short batches so both see the same
    /// machine load; on-CPU time of the best batch. A measurement, not a check:
    /// `cargo test -p owl-kernels --lib prefill_paths_ab -- --ignored --nocapture`.
    #[test]
    #[ignore]
    #[cfg(target_os = "linux")]
    fn prefill_paths_ab() {
        let Ok(table) = dispatch::table(Isa::Avx2) else { return };
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        let cpu_ns = || -> u64 {
            let mut ts = Timespec { sec: 0, nsec: 0 };
            // SAFETY: CLOCK_THREAD_CPUTIME_ID (3) with a valid out pointer.
            unsafe { clock_gettime(3, &mut ts) };
            ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
        };
        let pool = ThreadPool::new(1);
        // 1024×4096, then the demo models' FFN shapes (few blocks per row).
        for (rows, cols, tokens) in [
            (1024, 4096, 64),
            (640, 2048, 128),
            (2048, 640, 128),
            (896, 4864, 128),
            (4864, 896, 128),
            (640, 2048, 4),
            (640, 2048, 8),
            (640, 2048, 12),
            (640, 2048, 16),
        ] {
            for format in [
                BlockFormat::Q4_0,
                BlockFormat::Q4_1,
                BlockFormat::Q5_0,
                BlockFormat::Q8_0,
                BlockFormat::IQ4_NL,
                BlockFormat::Q4_K,
                BlockFormat::Q5_K,
                BlockFormat::Q6_K,
                BlockFormat::F16,
                BlockFormat::F32,
                BlockFormat::BF16,
            ] {
                let Some(rb) = format.row_bytes(cols) else { continue };
                let src: Vec<f32> = (0..cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
                let mut row = vec![0u8; rb];
                crate::quant::quantize_row(format, &src, &mut row).expect("quantize");
                let data: Vec<u8> = row.iter().copied().cycle().take(rows * rb).collect();
                let w = Matrix::new(format, rows, cols, &data);
                let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5).collect();
                let mut y = vec![0f32; tokens * rows];
                let mut best = [f64::MAX; 2];
                for round in 0..40 {
                    let panel = round % 2 == 0;
                    // `Many`: the panels even below `panel_min_tokens` (which these figures set).
                    let path = if panel { Path::Many } else { Path::NoPanel };
                    let c0 = cpu_ns();
                    for _ in 0..3 {
                        matmul_impl(table, &pool, &w, &x, tokens, &mut y, path, None).expect("matmul");
                    }
                    let secs = (cpu_ns() - c0) as f64 * 1e-9 / 3.0;
                    best[panel as usize] = best[panel as usize].min(secs);
                }
                let gflops = |s: f64| 2.0 * (rows * cols * tokens) as f64 / s / 1e9;
                println!(
                    "{format:?} {rows}x{cols} {tokens:>3} tokens: one-row x4 kernel {:.1} GFLOP/s, panel {:.1} GFLOP/s",
                    gflops(best[0]),
                    gflops(best[1])
                );
            }
        }
    }
}
