//! AVX2 versions of [`super::x8::interleave`] / [`super::x8::deinterleave`]: the same bytes
//! as the portable code (which stays the reference, and the tests compare the two), at
//! memory speed, for model load and for every prefill / float32-activation matmul that
//! turns interleaved groups back into row-major rows.
//!
//! One group-block (8 rows' super-block, 1152 bytes) at a time, all three parts as 4 × 4
//! transposes of 32-bit words inside each 128-bit lane (8 unpacks per four registers, no
//! lane-crossing shuffle):
//! - quants: for each `j < 4`, the 256 bytes at `128 + 256·j` are an 8 × 8 matrix of u32
//!   (`c`, row `r`), and the row-major block wants its transpose. Loading rows 0..4 of
//!   chunks `c` and `c + 4` into the two lanes of one register (one `vinserti128` from
//!   memory) makes the 8 × 8 transpose two in-lane 4 × 4 ones whose outputs are whole
//!   32-byte row slices; the inverse is the same transpose, stored by halves.
//! - `d`, `dmin` and the 12 scale bytes: the first 16 bytes of a row-major block are four
//!   u32 words — `d | dmin << 16` and the three scale words of [`super::x8`]'s word mapping
//!   — so with one register per word (lane `r` = row `r`) one more 4 × 4 transpose yields
//!   each row's 16 bytes (rows `r` and `r + 4` in the two lanes). The scale words come from
//!   the group-block's three 32-byte scale arrays by a byte shuffle (the 4 × 4 byte
//!   transpose of each half, its own inverse) and nibble masks.

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QS_OFF};
use super::BlockQ4K;

const BLOCK_BYTES: usize = size_of::<BlockQ4K>();
/// How far ahead of the group-block being read [`deinterleave`] prefetches.
const PREFETCH_AHEAD: usize = 2 * GROUP_BLOCK_BYTES;
/// Offset of `qs` in a row-major block (after d, dmin and the 12 scale bytes).
const BLOCK_QS_OFF: usize = 16;

/// Byte shuffle transposing the 4 × 4 bytes of each 128-bit lane (an involution): byte
/// `4·s + l` ↔ `4·l + s`. Gathers a row's four bytes of a scale array (stride 4) into one
/// u32 and scatters them back.
#[inline]
#[target_feature(enable = "avx2")]
fn byte_transpose_4x4() -> __m256i {
    _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, //
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
    )
}

/// Transposes the 4 × 4 u32 matrix in each 128-bit lane: word `k` of output `i` is word `i`
/// of input `k`, lane by lane.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_4x4_epi32(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> [__m256i; 4] {
    let ab_lo = _mm256_unpacklo_epi32(a, b);
    let cd_lo = _mm256_unpacklo_epi32(c, d);
    let ab_hi = _mm256_unpackhi_epi32(a, b);
    let cd_hi = _mm256_unpackhi_epi32(c, d);
    [
        _mm256_unpacklo_epi64(ab_lo, cd_lo),
        _mm256_unpackhi_epi64(ab_lo, cd_lo),
        _mm256_unpacklo_epi64(ab_hi, cd_hi),
        _mm256_unpackhi_epi64(ab_hi, cd_hi),
    ]
}

/// The 16 bytes at `lo` in lane 0 and the 16 at `hi` in lane 1.
///
/// # Safety
/// AVX2; both pointers readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_lanes(lo: *const u8, hi: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { _mm256_loadu2_m128i(hi.cast(), lo.cast()) }
}

/// Stores lane 0 of `v` at `lo` and lane 1 at `hi`.
///
/// # Safety
/// AVX2; both pointers writable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_lanes(lo: *mut u8, hi: *mut u8, v: __m256i) {
    // SAFETY: the caller's contract.
    unsafe { _mm256_storeu2_m128i(hi.cast(), lo.cast(), v) }
}

/// See [`super::x8::interleave`].
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If either length is not `nb · GROUP_BLOCK_BYTES`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_K interleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_K interleave: destination length");
    let row_bytes = nb * BLOCK_BYTES;
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let transpose_bytes = byte_transpose_4x4();
    // Within a lane: d of 4 rows, then their dmin (from words `d | dmin << 16`).
    let split_d_dmin = _mm256_setr_epi8(
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, //
        0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
    );
    for i in 0..nb {
        // SAFETY: `i < nb`, so block `i` of row `r < 8` lies at `r·row_bytes + i·144` of
        // `src` (8·row_bytes bytes, asserted) and group-block `i` at `i·1152` of `dst`; every
        // access below stays inside those 144 / 1152 bytes.
        unsafe {
            let rows: [*const u8; 8] = std::array::from_fn(|r| src.as_ptr().add(r * row_bytes + i * BLOCK_BYTES));
            let gb = dst.as_mut_ptr().add(i * GROUP_BLOCK_BYTES);

            // Header: each row's first 16 bytes, rows r and r + 4 in one register.
            let [dd, w0, w1, w2] = transpose_4x4_epi32(
                load_lanes(rows[0], rows[4]),
                load_lanes(rows[1], rows[5]),
                load_lanes(rows[2], rows[6]),
                load_lanes(rows[3], rows[7]),
            );
            // d of rows 0..8 then dmin of rows 0..8: bytes 0..32 of the group-block.
            let d_dmin = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(dd, split_d_dmin));
            _mm256_storeu_si256(gb.cast(), d_dmin);
            // The word mapping of `super::x8` (`group_words_from_scales`), 8 rows at once.
            let lo0 = _mm256_or_si256(
                _mm256_and_si256(w0, low_nibbles),
                _mm256_slli_epi16::<4>(_mm256_and_si256(w1, low_nibbles)),
            );
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(w0), low_nibbles),
                _mm256_andnot_si256(low_nibbles, w1),
            );
            _mm256_storeu_si256(gb.add(32).cast(), _mm256_shuffle_epi8(lo0, transpose_bytes));
            _mm256_storeu_si256(gb.add(64).cast(), _mm256_shuffle_epi8(w2, transpose_bytes));
            _mm256_storeu_si256(gb.add(96).cast(), _mm256_shuffle_epi8(hi, transpose_bytes));

            // Quants: row r's qs[32j..32j + 32] → word r of the 8 chunks at 128 + 256j.
            for j in 0..4 {
                let q = |r: usize| _mm256_loadu_si256(rows[r].add(BLOCK_QS_OFF + 32 * j).cast());
                let out = gb.add(QS_OFF + 256 * j);
                // Lane 0 of output k: chunk k, rows 0..4 (or 4..8); lane 1: chunk k + 4.
                let low_rows = transpose_4x4_epi32(q(0), q(1), q(2), q(3));
                let high_rows = transpose_4x4_epi32(q(4), q(5), q(6), q(7));
                for k in 0..4 {
                    store_lanes(out.add(32 * k), out.add(32 * (k + 4)), low_rows[k]);
                    store_lanes(out.add(32 * k + 16), out.add(32 * (k + 4) + 16), high_rows[k]);
                }
            }
        }
    }
}

/// See [`super::x8::deinterleave`].
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If either length is not `nb · GROUP_BLOCK_BYTES`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert_eq!(src.len(), nb * GROUP_BLOCK_BYTES, "Q4_K deinterleave: source length");
    assert_eq!(dst.len(), nb * GROUP_BLOCK_BYTES, "Q4_K deinterleave: destination length");
    let row_bytes = nb * BLOCK_BYTES;
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let transpose_bytes = byte_transpose_4x4();
    for i in 0..nb {
        // SAFETY: as in `interleave`, with the roles of `src` and `dst` swapped.
        unsafe {
            let gb = src.as_ptr().add(i * GROUP_BLOCK_BYTES);
            // The read stream a few group-blocks ahead (a hint: never faults, so the
            // address may pass the end; `wrapping_add` keeps it a plain address).
            for line in 0..GROUP_BLOCK_BYTES / 64 {
                _mm_prefetch::<_MM_HINT_T0>(gb.wrapping_add(PREFETCH_AHEAD + 64 * line).cast());
            }
            let rows: [*mut u8; 8] = std::array::from_fn(|r| dst.as_mut_ptr().add(r * row_bytes + i * BLOCK_BYTES));

            // Header: word `d | dmin << 16` of row r in lane r.
            let d = _mm_loadu_si128(gb.cast());
            let dmin = _mm_loadu_si128(gb.add(16).cast());
            let dd = _mm256_set_m128i(_mm_unpackhi_epi16(d, dmin), _mm_unpacklo_epi16(d, dmin));
            // Each row's four bytes of a scale array gathered into word r.
            let gather = |off: usize| _mm256_shuffle_epi8(_mm256_loadu_si256(gb.add(off).cast()), transpose_bytes);
            let (lo0, lo1, hi) = (gather(32), gather(64), gather(96));
            // The word mapping of `super::x8` (`scale_words_from_groups`), 8 rows at once.
            let w0 = _mm256_or_si256(
                _mm256_and_si256(lo0, low_nibbles),
                _mm256_slli_epi16::<4>(_mm256_and_si256(hi, low_nibbles)),
            );
            let w1 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(lo0), low_nibbles),
                _mm256_andnot_si256(low_nibbles, hi),
            );
            let header = transpose_4x4_epi32(dd, w0, w1, lo1);
            for (r, h) in header.into_iter().enumerate() {
                store_lanes(rows[r], rows[r + 4], h);
            }

            // Quants: word r of the 8 chunks at 128 + 256j → row r's qs[32j..32j + 32].
            for j in 0..4 {
                let chunks = gb.add(QS_OFF + 256 * j);
                // Chunks k and k + 4, rows 0..4 (`half` 0) or 4..8 (`half` 1).
                let pair = |k: usize, half: usize| {
                    load_lanes(chunks.add(32 * k + 16 * half), chunks.add(32 * (k + 4) + 16 * half))
                };
                let low_rows = transpose_4x4_epi32(pair(0, 0), pair(1, 0), pair(2, 0), pair(3, 0));
                let high_rows = transpose_4x4_epi32(pair(0, 1), pair(1, 1), pair(2, 1), pair(3, 1));
                for r in 0..4 {
                    _mm256_storeu_si256(rows[r].add(BLOCK_QS_OFF + 32 * j).cast(), low_rows[r]);
                    _mm256_storeu_si256(rows[r + 4].add(BLOCK_QS_OFF + 32 * j).cast(), high_rows[r]);
                }
            }
        }
    }
}
