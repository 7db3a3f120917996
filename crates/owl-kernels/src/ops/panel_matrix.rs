//! A weight matrix kept unpacked in lane panels ([`super::lane_panel`]), for callers that
//! multiply the same frozen weights by many batches of tokens.
//!
//! LoRA training runs every projection of the model forward, and through `Wᵀ` backward,
//! for every sequence of every step, with weights that never change; each of those calls
//! would unpack every 16-row chunk into a panel again (a tenth of a training step on the
//! demo model). A [`PanelMatrix`] holds the whole matrix unpacked once — a byte per weight
//! plus per-lane scales: 1.2× the bytes of Q8_0, 1.7–1.9× of Q5_x/Q6_K, 2.0–2.3× of
//! Q4_x/Q4_K — and [`matmul_prepacked`] reads it in place. Where the call takes the panel path the result is the bits [`super::matmul`]
//! gives (the panels are what it would unpack); elsewhere (few tokens, float32
//! activations, a kernel set without panels) it is `matmul` itself.

use crate::dispatch;
use crate::pool::ThreadPool;
use crate::quant::BlockFormat;
use crate::KernelError;

use super::matmul::{matmul_impl, Matrix, Path};

/// 64-byte-aligned storage: panels start on cache lines, as the tiles expect.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A matrix's lane panels, all of its rows, unpacked once (see the module docs).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PanelMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    /// The AVX-512 form of the panels (`lane_panel_avx512::enabled` when they were made).
    wide: bool,
    /// Bytes of one 16-row panel (a multiple of 64).
    panel_bytes: usize,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PanelMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PanelMatrix({:?}, {}×{}, {} bytes)", self.format, self.rows, self.cols, self.bytes())
    }
}

impl PanelMatrix {
    /// `w` unpacked, or None where the active kernels take no lane panels for its format
    /// (a format without panels, a CPU without AVX2, `OWL_KERNELS=scalar`, not x86-64) or
    /// its bytes do not match its shape.
    pub fn new(w: &Matrix<'_>) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            use super::lane_panel::{self as lp, LanePanel, LANES};
            use crate::quant::interleave::{self, RowLayout};
            let (geo, row_bytes) = geometry(w)?;
            let panel_bytes = geo.bytes();
            let wide = super::lane_panel_avx512::enabled();
            let chunks = w.rows.div_ceil(LANES);
            let mut lines = vec![Line([0; 64]); chunks.checked_mul(panel_bytes / 64)?];
            // SAFETY: `lines` is `len · 64` initialised bytes; u8 has no alignment or validity
            // requirement, and `lines` is not used otherwise while `buf` lives.
            let buf = unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) };
            let mut row_major = vec![0u8; if w.layout == RowLayout::RowMajor { 0 } else { LANES * row_bytes }];
            for (k, panel_buf) in buf.chunks_exact_mut(panel_bytes).enumerate() {
                let rows = k * LANES..((k + 1) * LANES).min(w.rows);
                let src = &w.data[rows.start * row_bytes..rows.end * row_bytes];
                let src = if w.layout == RowLayout::RowMajor {
                    src
                } else {
                    // Interleaved rows come in whole groups of 8; 16-row chunks start on one.
                    let dst = &mut row_major[..src.len()];
                    interleave::deinterleave_rows(w.format, w.cols, src, dst).ok()?;
                    &*dst
                };
                let mut panel = LanePanel::from_bytes(panel_buf, geo, wide);
                // SAFETY: the AVX2 table is active (`has_prefill_panel` is true only there).
                unsafe { lp::unpack_rows(w.format, src, rows.len(), &mut panel) };
            }
            Some(PanelMatrix { format: w.format, rows: w.rows, cols: w.cols, wide, panel_bytes, lines })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, dispatch::active);
            None
        }
    }

    /// The bytes [`PanelMatrix::new`] would hold for `w`, without unpacking anything; None
    /// where it would give None.
    pub fn bytes_for(w: &Matrix<'_>) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            let (geo, _) = geometry(w)?;
            w.rows.div_ceil(super::lane_panel::LANES).checked_mul(geo.bytes())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = w;
            None
        }
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// Panel `k` (rows `16k..16k + 16`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn panel(&self, k: usize) -> &[u8] {
        // SAFETY: `lines` is `len · 64` initialised bytes; u8 has no alignment requirement.
        let all = unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.lines.len() * 64) };
        &all[k * self.panel_bytes..(k + 1) * self.panel_bytes]
    }
}

/// The panel geometry of `w` and its row bytes, where the active kernels take lane panels
/// for its format and its bytes match its shape (non-empty).
#[cfg(target_arch = "x86_64")]
fn geometry(w: &Matrix<'_>) -> Option<(super::lane_panel::Geometry, usize)> {
    use super::lane_panel::{self as lp, Geometry};
    let kernels = dispatch::active().ok()?.get(w.format)?;
    let kind = lp::kind(w.format)?;
    let row_bytes = w.format.row_bytes(w.cols)?;
    if !kernels.has_prefill_panel() || w.rows == 0 || w.cols == 0 || w.data.len() != w.rows.checked_mul(row_bytes)? {
        return None;
    }
    Some((Geometry { kind, nb: w.cols / w.format.block_elems() }, row_bytes))
}

/// [`super::matmul`] of `w`, reading `panels` (made from `w` by [`PanelMatrix::new`])
/// instead of unpacking `w` where the call takes the panel path: the same bits.
///
/// Errors: those of `matmul`, and panels of another format or shape than `w`.
pub fn matmul_prepacked(
    pool: &ThreadPool,
    w: &Matrix<'_>,
    panels: &PanelMatrix,
    x: &[f32],
    n_tokens: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if (panels.format, panels.rows, panels.cols) != (w.format, w.rows, w.cols) {
        return Err(KernelError::Unsupported { format: w.format, op: "lane panels of another matrix" });
    }
    // Panels made for the other tile set (not possible within one process today: the
    // choice is read once) would be misread: unpack instead.
    #[cfg(target_arch = "x86_64")]
    let panels = (panels.wide == super::lane_panel_avx512::enabled()).then_some(panels);
    #[cfg(not(target_arch = "x86_64"))]
    let panels = Some(panels);
    matmul_impl(dispatch::active()?, pool, w, x, n_tokens, y, Path::Auto, panels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::interleave::interleave_matrix;
    use crate::quant::{test_rows, test_values};

    /// Every panel format, row-major and interleaved, row counts with a partial last panel,
    /// token counts below and above the panel threshold: the bits of `matmul`.
    #[test]
    fn prepacked_gives_the_matmul_bits() {
        let pool = ThreadPool::new(2);
        let formats = [
            BlockFormat::Q4_0,
            BlockFormat::Q4_1,
            BlockFormat::Q5_0,
            BlockFormat::Q5_1,
            BlockFormat::Q8_0,
            BlockFormat::IQ4_NL,
            BlockFormat::Q4_K,
            BlockFormat::Q5_K,
            BlockFormat::Q6_K,
        ];
        for format in formats {
            let cols = 2 * format.block_elems().max(256);
            for rows in [16usize, 40] {
                let (w, _) = test_rows(format, &test_values(rows * cols, 3, 0.1, 1.0), rows, cols);
                let mut inter = vec![0u8; w.len()];
                let interleaved = interleave_matrix(format, rows, cols, &w, &mut inter).is_ok();
                let mut matrices = vec![Matrix::new(format, rows, cols, &w)];
                if interleaved {
                    matrices.push(Matrix::interleaved(format, rows, cols, &inter));
                }
                for m in &matrices {
                    let Some(panels) = PanelMatrix::new(m) else {
                        eprintln!("{format:?}: no lane panels with the active kernels; skipped");
                        continue;
                    };
                    assert_eq!(PanelMatrix::bytes_for(m), Some(panels.bytes()), "{format:?}");
                    for n in [1usize, 3, 12, 17] {
                        let x = test_values(n * cols, 7 + n as u64, -0.1, 2.0);
                        let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                        super::super::matmul(&pool, m, &x, n, &mut want).expect("matmul");
                        matmul_prepacked(&pool, m, &panels, &x, n, &mut got).expect("prepacked");
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&got), bits(&want), "{format:?} {:?} rows {rows} tokens {n}", m.layout);
                    }
                }
            }
        }
    }

    #[test]
    fn panels_of_another_matrix_are_refused() {
        let (w, _) = test_rows(BlockFormat::Q8_0, &test_values(16 * 64, 1, 0.0, 1.0), 16, 64);
        let m = Matrix::new(BlockFormat::Q8_0, 16, 64, &w);
        let Some(panels) = PanelMatrix::new(&m) else { return };
        let other = Matrix::new(BlockFormat::Q8_0, 8, 128, &w);
        let mut y = vec![0f32; 8 * 4];
        assert!(matmul_prepacked(&ThreadPool::new(1), &other, &panels, &vec![0.0; 128 * 4], 4, &mut y).is_err());
    }
}
