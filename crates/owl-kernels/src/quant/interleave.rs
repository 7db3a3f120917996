//! The 8-row interleaved weight layout: decode's memory-speed form of a quantized matrix.
//!
//! Decode multiplies each weight once per token, so it runs at the speed the weights stream
//! from DRAM — if the kernel keeps up. Row-major kernels spend ~10 instructions per
//! 32-element block (unpack, multiply, widen, convert, scale, and a horizontal sum per
//! row), which on Zen 3 caps them at 60–71 % of one core's read bandwidth. Stored as groups
//! of 8 rows, interleaved per block so that one 256-bit register holds the same 4 elements
//! of 8 rows, one broadcast activation chunk serves all 8 rows, each register lane
//! accumulates one row, the 8 rows' scales convert in one instruction and no horizontal sum
//! is needed: 2–3× the compute rate, and decode becomes memory-bound (docs/PERFORMANCE.md).
//! ggml repacks at load time for the same reason (`ggml-cpu/repack.cpp`); the layouts here
//! are our own, one per format in `quant::<format>::x8`.
//!
//! The layout: a matrix of `rows` (a multiple of [`INTERLEAVE_ROWS`]) rows of `nb` blocks
//! is `rows / 8` consecutive groups, each `nb` group-blocks of exactly 8 blocks' bytes (so
//! the matrix keeps its row-major size). Row `8g + r` is row `r` of group `g`; a whole
//! number of groups is therefore a contiguous byte range, and so is any 8-aligned range
//! of rows. Prefill, the float32-activation path and tensor export read row-major rows:
//! [`deinterleave_rows`] turns groups back into them, exactly.

use crate::quant::{q4_0, q4_1, q4_k, q5_0, q6_k, q8_0, BlockFormat};
use crate::KernelError;

/// Rows per interleaved group.
pub const INTERLEAVE_ROWS: usize = 8;

/// How a weight matrix's rows are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowLayout {
    /// As GGUF stores it: row after row, each a run of blocks.
    #[default]
    RowMajor,
    /// Groups of [`INTERLEAVE_ROWS`] rows interleaved per block (this module).
    Interleaved8,
}

/// One format's group (de)interleaver: `(src, nb, dst)` over one group's bytes.
type GroupFn = fn(&[u8], usize, &mut [u8]);

/// The interleave and deinterleave functions of `format`, if it has the layout.
fn group_fns(format: BlockFormat) -> Option<(GroupFn, GroupFn)> {
    Some(match format {
        BlockFormat::Q4_0 => (q4_0::x8::interleave, q4_0::x8::deinterleave),
        BlockFormat::Q4_1 => (q4_1::x8::interleave, q4_1::x8::deinterleave),
        BlockFormat::Q5_0 => (q5_0::x8::interleave, q5_0::x8::deinterleave),
        BlockFormat::Q8_0 => (q8_0::x8::interleave, q8_0::x8::deinterleave),
        BlockFormat::Q4_K => (q4_k::x8::interleave, q4_k::x8::deinterleave),
        BlockFormat::Q6_K => (q6_k::x8::interleave, q6_k::x8::deinterleave),
        _ => return None,
    })
}

/// Whether `format` has an interleaved layout (and group kernels in every kernel table).
pub fn has_interleaved_layout(format: BlockFormat) -> bool {
    group_fns(format).is_some()
}

/// Whether a `rows × cols` matrix of `format` can be stored interleaved: the format has the
/// layout, and the rows are a whole, non-zero number of groups of whole blocks.
pub fn can_interleave(format: BlockFormat, rows: usize, cols: usize) -> bool {
    has_interleaved_layout(format)
        && rows > 0
        && rows.is_multiple_of(INTERLEAVE_ROWS)
        && cols > 0
        && format.row_bytes(cols).is_some()
}

/// Checks `bytes` against a `rows × cols` matrix of `format` that [`can_interleave`].
fn check(format: BlockFormat, rows: usize, cols: usize, len: usize, what: &'static str) -> Result<usize, KernelError> {
    if !can_interleave(format, rows, cols) {
        return Err(KernelError::Unsupported { format, op: "8-row interleaved layout of this shape" });
    }
    let row_bytes = format.row_bytes(cols).unwrap_or(0);
    match row_bytes.checked_mul(rows) {
        Some(n) if n == len => Ok(row_bytes),
        _ => Err(KernelError::Length { what, expected: row_bytes.saturating_mul(rows), got: len, unit: "bytes" }),
    }
}

/// Row-major `src` (a `rows × cols` matrix of `format`) → the interleaved layout in `dst`.
pub fn interleave_matrix(
    format: BlockFormat,
    rows: usize,
    cols: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), KernelError> {
    let row_bytes = check(format, rows, cols, src.len(), "interleave source")?;
    check(format, rows, cols, dst.len(), "interleave destination")?;
    let (interleave, _) = group_fns(format).ok_or(KernelError::Unsupported { format, op: "interleave" })?;
    let group = INTERLEAVE_ROWS * row_bytes;
    let nb = cols / format.block_elems();
    for (s, d) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group)) {
        interleave(s, nb, d);
    }
    Ok(())
}

/// Interleaved groups of a `format` matrix with `cols` columns (`src`: a whole number of
/// groups) → the same rows, row-major, in `dst` (same length).
pub fn deinterleave_rows(format: BlockFormat, cols: usize, src: &[u8], dst: &mut [u8]) -> Result<(), KernelError> {
    let rows = match format.row_bytes(cols) {
        Some(rb) if rb > 0 => src.len() / rb,
        _ => 0,
    };
    check(format, rows, cols, src.len(), "deinterleave source")?;
    check(format, rows, cols, dst.len(), "deinterleave destination")?;
    let (_, deinterleave) = group_fns(format).ok_or(KernelError::Unsupported { format, op: "deinterleave" })?;
    let group = src.len() / rows * INTERLEAVE_ROWS;
    let nb = cols / format.block_elems();
    for (s, d) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group)) {
        deinterleave(s, nb, d);
    }
    Ok(())
}

/// `pub fn interleave` and `pub fn deinterleave` of a format's `x8` module that has an AVX2
/// mover (`super::x8_shuffle_avx2`) and a portable one (`interleave_portable`,
/// `deinterleave_portable`, the reference for it): lengths checked once, then AVX2 where
/// the CPU has it. Both give the same bytes (each format tests it).
macro_rules! simd_group_movers {
    ($format:literal) => {
        /// 8 consecutive row-major rows of `nb` blocks (`src`) → one group (`dst`, same
        /// length) in the layout of the module header; once per weight, at model load.
        ///
        /// # Panics
        /// If `src` or `dst` is not `nb · GROUP_BLOCK_BYTES` bytes long (callers validate).
        pub fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
            $crate::quant::interleave::check_group_lengths($format, src.len(), dst.len(), nb * GROUP_BLOCK_BYTES);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present; both lengths are `nb · GROUP_BLOCK_BYTES` (checked).
                unsafe { super::x8_shuffle_avx2::interleave(src, nb, dst) };
                return;
            }
            interleave_portable(src, nb, dst);
        }

        /// The exact inverse of [`interleave`]: one group back to 8 row-major rows. Runs on
        /// every prefill matmul call for each chunk of rows, so its speed adds directly to
        /// prompt processing.
        ///
        /// # Panics
        /// If `src` or `dst` is not `nb · GROUP_BLOCK_BYTES` bytes long (callers validate).
        pub fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
            $crate::quant::interleave::check_group_lengths($format, src.len(), dst.len(), nb * GROUP_BLOCK_BYTES);
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present; both lengths are `nb · GROUP_BLOCK_BYTES` (checked).
                unsafe { super::x8_shuffle_avx2::deinterleave(src, nb, dst) };
                return;
            }
            deinterleave_portable(src, nb, dst);
        }
    };
}
pub(crate) use simd_group_movers;

/// Panics unless both buffers of a group move are `want` bytes long.
#[track_caller]
pub(crate) fn check_group_lengths(format: &str, src: usize, dst: usize, want: usize) {
    assert!(src == want && dst == want, "{format} group (de)interleave: {src} and {dst} bytes, expected {want}");
}

/// Interleaves the word-shaped layouts (Q4_0, Q8_0): a `BLOCK`-byte row block is `FIELDS`
/// f16 fields then `WORDS` 4-byte words of quants; in a group-block, field `f` of row `r`
/// sits at `16f + 2r` and word `c` of row `r` at `16·FIELDS + 32c + 4r`. Moves whole words
/// with one bounds check per call: deinterleave runs on every prefill chunk.
pub(crate) fn interleave_words<const BLOCK: usize, const FIELDS: usize, const WORDS: usize>(
    src: &[u8],
    nb: usize,
    dst: &mut [u8],
) {
    move_words::<BLOCK, FIELDS, WORDS, true>(src, nb, dst)
}

/// The inverse of [`interleave_words`].
pub(crate) fn deinterleave_words<const BLOCK: usize, const FIELDS: usize, const WORDS: usize>(
    src: &[u8],
    nb: usize,
    dst: &mut [u8],
) {
    move_words::<BLOCK, FIELDS, WORDS, false>(src, nb, dst)
}

/// Row-major ↔ group moves of [`interleave_words`]: `INTO_GROUP` reads rows from `src` and
/// writes the group to `dst`, else the reverse.
fn move_words<const BLOCK: usize, const FIELDS: usize, const WORDS: usize, const INTO_GROUP: bool>(
    src: &[u8],
    nb: usize,
    dst: &mut [u8],
) {
    const { assert!(BLOCK == 2 * FIELDS + 4 * WORDS) };
    let group_block = INTERLEAVE_ROWS * BLOCK;
    assert!(src.len() == nb * group_block && dst.len() == src.len());
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    for b in 0..nb {
        for r in 0..INTERLEAVE_ROWS {
            let (row, group) = ((r * nb + b) * BLOCK, b * group_block);
            // Byte offsets (in `src`, in `dst`) of a piece at `row_off` in the row block and
            // `group_off` in the group-block.
            let at = |row_off: usize, group_off: usize| {
                if INTO_GROUP {
                    (row + row_off, group + group_off)
                } else {
                    (group + group_off, row + row_off)
                }
            };
            // SAFETY: `row + BLOCK ≤ 8·nb·BLOCK` and `group + 8·BLOCK ≤ nb·8·BLOCK`, both the
            // (asserted) length of either buffer, and every field and word offset lies inside
            // its block or group-block (16·FIELDS + 32·WORDS = 8·BLOCK): all reads are in
            // `src`, all writes in `dst` (distinct buffers), unaligned.
            unsafe {
                for f in 0..FIELDS {
                    let (s, d) = at(2 * f, 16 * f + 2 * r);
                    to.add(d).cast::<[u8; 2]>().write_unaligned(from.add(s).cast::<[u8; 2]>().read_unaligned());
                }
                for c in 0..WORDS {
                    let (s, d) = at(2 * FIELDS + 4 * c, 16 * FIELDS + 32 * c + 4 * r);
                    to.add(d).cast::<u32>().write_unaligned(from.add(s).cast::<u32>().read_unaligned());
                }
            }
        }
    }
}

/// Checks shared by the formats' group movers (`quant::<fmt>::x8`, `x8_shuffle_avx2`).
#[cfg(test)]
pub(crate) mod mover_tests {
    use crate::quant::test_values;

    /// A group mover: `(src, nb, dst)` over one group's bytes.
    pub(crate) type GroupMove = fn(&[u8], usize, &mut [u8]);

    /// Random bytes: every bit pattern is a valid row block and a valid group-block.
    pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        test_values(len, seed, 0.0, 256.0).iter().map(|&v| v as u8).collect()
    }

    /// Each `(name, interleave, deinterleave)` of `versions` gives the bytes of `reference`
    /// in both directions on random input of each `(nb, seed)` — destinations start filled
    /// with junk, so an unwritten byte fails — and its deinterleave undoes its interleave.
    pub(crate) fn assert_movers_equal(
        reference: (GroupMove, GroupMove),
        versions: &[(&str, GroupMove, GroupMove)],
        group_block: usize,
        cases: &[(usize, u64)],
    ) {
        for &(nb, seed) in cases {
            let rows = random_bytes(nb * group_block, seed);
            let groups = random_bytes(nb * group_block, seed ^ 0x5555);
            let (mut want, mut want_rows) = (vec![0u8; rows.len()], vec![0u8; rows.len()]);
            reference.0(&rows, nb, &mut want);
            reference.1(&groups, nb, &mut want_rows);
            for &(name, interleave, deinterleave) in versions {
                let mut got = vec![0xA5u8; rows.len()];
                interleave(&rows, nb, &mut got);
                assert!(got == want, "{name} interleave differs, nb {nb}");
                let mut got = vec![0x5Au8; rows.len()];
                deinterleave(&groups, nb, &mut got);
                assert!(got == want_rows, "{name} deinterleave differs, nb {nb}");
                let mut back = vec![0x3Cu8; rows.len()];
                deinterleave(&want, nb, &mut back);
                assert!(back == rows, "{name} round trip differs, nb {nb}");
            }
        }
    }

    /// `interleave` then `deinterleave` gives random rows back byte for byte, and the group
    /// is not the rows (the layout moves bytes).
    pub(crate) fn assert_round_trip(
        interleave: GroupMove,
        deinterleave: GroupMove,
        group_block: usize,
        cases: &[(usize, u64)],
    ) {
        for &(nb, seed) in cases {
            let rows = random_bytes(nb * group_block, seed);
            let mut group = vec![0u8; rows.len()];
            interleave(&rows, nb, &mut group);
            assert_ne!(group, rows, "nb {nb}: interleaving must move bytes");
            let mut back = vec![0xA5u8; rows.len()];
            deinterleave(&group, nb, &mut back);
            assert_eq!(back, rows, "nb {nb}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{test_rows, test_values};

    #[test]
    fn matrices_round_trip_and_bad_shapes_are_errors() {
        for format in BlockFormat::ALL.into_iter().filter(|&f| has_interleaved_layout(f)) {
            let (rows, cols) = (16, 2 * format.block_elems());
            let (w, _) = test_rows(format, &test_values(rows * cols, 9, 0.0, 1.0), rows, cols);
            let mut g = vec![0u8; w.len()];
            interleave_matrix(format, rows, cols, &w, &mut g).expect("interleave");
            assert_ne!(g, w, "{format:?}: the layout moves bytes");
            let mut back = vec![0u8; w.len()];
            deinterleave_rows(format, cols, &g, &mut back).expect("deinterleave");
            assert_eq!(back, w, "{format:?}");
            // The second group alone is rows 8..16.
            let half = w.len() / 2;
            deinterleave_rows(format, cols, &g[half..], &mut back[..half]).expect("one group");
            assert_eq!(back[..half], w[half..], "{format:?}");
            assert!(interleave_matrix(format, 12, cols, &w[..w.len() * 3 / 4], &mut g[..w.len() * 3 / 4]).is_err());
            assert!(interleave_matrix(format, rows, cols, &w[1..], &mut g[1..]).is_err());
            assert!(deinterleave_rows(format, cols, &g[..half - 1], &mut back[..half - 1]).is_err());
        }
        assert!(!has_interleaved_layout(BlockFormat::F16));
        assert!(!can_interleave(BlockFormat::Q4_0, 8, 33));
    }
}
