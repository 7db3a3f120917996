//! Q6_K row-major ↔ 8-row interleaved layout ([`super::x8`]) with AVX2: the load-time
//! repacking and prefill's per-call deinterleave.
//!
//! Same bytes as the portable word-wise code in `x8` (tested against it and against the
//! first straightforward version), eight rows at a time: in the interleaved layout lane `r`
//! (32 bits) of each vector belongs to row `r`, so the bit work (nibbles and bit pairs ↔
//! 6-bit quants) is the portable code's, once per vector for all 8 rows. What is left is a
//! transpose: for one `(n, h)` (see `x8::row_words_at`) each row's three 16-byte runs
//! (`ql_a`, `ql_b`, `qh`) hold the words `i < 4` that the interleaved side keeps as 4
//! vectors × 8 lanes; a 4 × 8 dword transpose is 8 unpacks, with rows `r` and `r + 4` in the
//! two 128-bit halves. The scales are an 8 × 8 transpose of 16-bit pairs (24 unpacks), `d`
//! 8 two-byte moves.
//!
//! Byte shifts do not exist in AVX2: shifts are 16-bit, and every shifted value is masked
//! so no bit crosses into the neighbouring byte.

// Needed on the MSRV, redundant from 1.87 on (see `simd_x86`).
#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use super::x8::{GROUP_BLOCK_BYTES, QUANTS_AT, SCALES_AT, SUB_BLOCK_BYTES};
use super::BlockQ6K;
use crate::quant::QK_K;

const BLOCK_BYTES: usize = std::mem::size_of::<BlockQ6K>();
/// Offsets of a row-major block's fields (`repr(C)`: ql, qh, scales, d).
const QH_AT: usize = QK_K / 2;
const BLOCK_SCALES_AT: usize = QH_AT + QK_K / 4;
const D_AT: usize = BLOCK_SCALES_AT + QK_K / 16;

/// Offset in a group-block of vector `V_v` of sub-block `8n + 2k + h`.
#[inline(always)]
const fn vector_at(n: usize, k: usize, h: usize, v: usize) -> usize {
    QUANTS_AT + SUB_BLOCK_BYTES * (8 * n + 2 * k + h) + 32 * v
}

/// Offsets in a row-major block of the `ql_a`, `ql_b` and `qh` runs of `(n, h)`.
#[inline(always)]
const fn row_runs_at(n: usize, h: usize) -> [usize; 3] {
    [64 * n + 16 * h, 64 * n + 32 + 16 * h, QH_AT + 32 * n + 16 * h]
}

/// How far ahead of the group-block being read the deinterleaver asks for its cache lines.
const PREFETCH_AHEAD: usize = 2 * GROUP_BLOCK_BYTES;

/// The per-byte masks.
#[derive(Clone, Copy)]
struct Masks {
    m03: __m256i,
    m0c: __m256i,
    m0f: __m256i,
    m30: __m256i,
    m3f: __m256i,
    mc0: __m256i,
}

impl Masks {
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn new() -> Self {
        unsafe {
            Masks {
                m03: _mm256_set1_epi8(0x03),
                m0c: _mm256_set1_epi8(0x0C),
                m0f: _mm256_set1_epi8(0x0F),
                m30: _mm256_set1_epi8(0x30),
                m3f: _mm256_set1_epi8(0x3F),
                mc0: _mm256_set1_epi8(0xC0u8 as i8),
            }
        }
    }
}

/// `a & b`, `a | b`: short names for the bit work.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
    unsafe { _mm256_and_si256(a, b) }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
    unsafe { _mm256_or_si256(a, b) }
}

/// Vector `V_v` of sub-block `8n + 2k + h` of the group-block at `g`.
///
/// # Safety
/// AVX2; `g` points to a whole group-block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_vector(g: *const u8, n: usize, k: usize, h: usize, v: usize) -> __m256i {
    // SAFETY: vector_at(..) + 32 <= GROUP_BLOCK_BYTES for n, h < 2, k < 4, v < 3.
    unsafe { _mm256_loadu_si256(g.add(vector_at(n, k, h, v)).cast()) }
}

/// Chunk 3 (elements 12..16) of a sub-block from the top bit pairs of its vectors
/// `V_0, V_1, V_2` (one quant a byte).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn chunk3(v0: __m256i, v1: __m256i, v2: __m256i, m: Masks) -> __m256i {
    unsafe {
        or(
            or(and(_mm256_srli_epi16::<6>(v0), m.m03), and(_mm256_srli_epi16::<4>(v1), m.m0c)),
            and(_mm256_srli_epi16::<2>(v2), m.m30),
        )
    }
}

/// Chunk `i` of the four sub-blocks `k` of one `(n, h)` (one quant a byte) → words `i` of
/// `[ql_a, ql_b, qh]`, 8 rows (as `x8::pack_chunks`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pack_chunks(c: [__m256i; 4], m: Masks) -> [__m256i; 3] {
    unsafe {
        [
            or(and(c[0], m.m0f), _mm256_slli_epi16::<4>(and(c[2], m.m0f))),
            or(and(c[1], m.m0f), _mm256_slli_epi16::<4>(and(c[3], m.m0f))),
            or(
                or(and(_mm256_srli_epi16::<4>(c[0]), m.m03), and(_mm256_srli_epi16::<2>(c[1]), m.m0c)),
                or(and(c[2], m.m30), and(_mm256_slli_epi16::<2>(c[3]), m.mc0)),
            ),
        ]
    }
}

/// Inverse of [`pack_chunks`]: words `i` of `ql_a`, `ql_b`, `qh` → chunk `i` of the four
/// sub-blocks.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack_chunks(a: __m256i, b: __m256i, q: __m256i, m: Masks) -> [__m256i; 4] {
    unsafe {
        [
            or(and(a, m.m0f), _mm256_slli_epi16::<4>(and(q, m.m03))),
            or(and(b, m.m0f), _mm256_slli_epi16::<2>(and(q, m.m0c))),
            or(and(_mm256_srli_epi16::<4>(a), m.m0f), and(q, m.m30)),
            or(and(_mm256_srli_epi16::<4>(b), m.m0f), and(_mm256_srli_epi16::<2>(q), m.m30)),
        ]
    }
}

/// `x[i]` holds dword `i` of 8 rows (lane `r` = row `r`) → the 16 bytes of row `r` (words
/// `i = 0..4`) stored at `rows[r] + off`.
///
/// # Safety
/// AVX2; every `rows[r] + off .. + 16` is writable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_transposed(x: [__m256i; 4], rows: &[*mut u8; 8], off: usize) {
    unsafe {
        let t0 = _mm256_unpacklo_epi32(x[0], x[1]); // r0: i0 i1, r1: i0 i1 | r4, r5
        let t1 = _mm256_unpackhi_epi32(x[0], x[1]); // r2, r3 | r6, r7
        let t2 = _mm256_unpacklo_epi32(x[2], x[3]); // r0: i2 i3, r1: i2 i3 | r4, r5
        let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
        let y = [
            _mm256_unpacklo_epi64(t0, t2), // r0 | r4
            _mm256_unpackhi_epi64(t0, t2), // r1 | r5
            _mm256_unpacklo_epi64(t1, t3), // r2 | r6
            _mm256_unpackhi_epi64(t1, t3), // r3 | r7
        ];
        for (r, y) in y.into_iter().enumerate() {
            // SAFETY (writes): by the caller's contract.
            _mm_storeu_si128(rows[r].add(off).cast(), _mm256_castsi256_si128(y));
            _mm_storeu_si128(rows[r + 4].add(off).cast(), _mm256_extracti128_si256::<1>(y));
        }
    }
}

/// Inverse of [`store_transposed`]: the 16 bytes at `rows[r] + off` → `x[i]` = dword `i` of
/// the 8 rows.
///
/// # Safety
/// AVX2; every `rows[r] + off .. + 16` is readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_transposed(rows: &[*const u8; 8], off: usize) -> [__m256i; 4] {
    unsafe {
        // a[r] = row r | row r + 4.
        let a = [
            _mm256_loadu2_m128i(rows[4].add(off).cast(), rows[0].add(off).cast()),
            _mm256_loadu2_m128i(rows[5].add(off).cast(), rows[1].add(off).cast()),
            _mm256_loadu2_m128i(rows[6].add(off).cast(), rows[2].add(off).cast()),
            _mm256_loadu2_m128i(rows[7].add(off).cast(), rows[3].add(off).cast()),
        ];
        let t0 = _mm256_unpacklo_epi32(a[0], a[1]); // r0 i0, r1 i0, r0 i1, r1 i1
        let t1 = _mm256_unpackhi_epi32(a[0], a[1]); // i2, i3 of r0, r1
        let t2 = _mm256_unpacklo_epi32(a[2], a[3]); // i0, i1 of r2, r3
        let t3 = _mm256_unpackhi_epi32(a[2], a[3]);
        [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ]
    }
}

/// 8 × 8 transpose of 16-bit elements (its own inverse): `x[p]` element `r` → `y[r]`
/// element `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8_u16(x: [__m128i; 8]) -> [__m128i; 8] {
    unsafe {
        let a = [
            _mm_unpacklo_epi16(x[0], x[1]),
            _mm_unpackhi_epi16(x[0], x[1]),
            _mm_unpacklo_epi16(x[2], x[3]),
            _mm_unpackhi_epi16(x[2], x[3]),
            _mm_unpacklo_epi16(x[4], x[5]),
            _mm_unpackhi_epi16(x[4], x[5]),
            _mm_unpacklo_epi16(x[6], x[7]),
            _mm_unpackhi_epi16(x[6], x[7]),
        ];
        // a[0] = x0,x1 elements 0..4 interleaved; a[1] = elements 4..8; a[2], a[3] for x2,x3...
        let b = [
            _mm_unpacklo_epi32(a[0], a[2]), // elements 0, 1 of x0..x4
            _mm_unpackhi_epi32(a[0], a[2]), // elements 2, 3
            _mm_unpacklo_epi32(a[1], a[3]), // 4, 5
            _mm_unpackhi_epi32(a[1], a[3]), // 6, 7
            _mm_unpacklo_epi32(a[4], a[6]), // the same for x4..x8
            _mm_unpackhi_epi32(a[4], a[6]),
            _mm_unpacklo_epi32(a[5], a[7]),
            _mm_unpackhi_epi32(a[5], a[7]),
        ];
        [
            _mm_unpacklo_epi64(b[0], b[4]),
            _mm_unpackhi_epi64(b[0], b[4]),
            _mm_unpacklo_epi64(b[1], b[5]),
            _mm_unpackhi_epi64(b[1], b[5]),
            _mm_unpacklo_epi64(b[2], b[6]),
            _mm_unpackhi_epi64(b[2], b[6]),
            _mm_unpacklo_epi64(b[3], b[7]),
            _mm_unpackhi_epi64(b[3], b[7]),
        ]
    }
}

/// The 8 row blocks of group-block `b` in a group of `nb` blocks per row.
///
/// # Safety
/// `base` points to `8 · nb · BLOCK_BYTES` bytes and `b < nb`.
#[inline(always)]
unsafe fn row_blocks(base: *mut u8, nb: usize, b: usize) -> [*mut u8; 8] {
    let first = b * BLOCK_BYTES;
    let step = nb * BLOCK_BYTES;
    // SAFETY: (r·nb + b)·BLOCK_BYTES < 8·nb·BLOCK_BYTES by the contract.
    unsafe {
        [
            base.add(first),
            base.add(first + step),
            base.add(first + 2 * step),
            base.add(first + 3 * step),
            base.add(first + 4 * step),
            base.add(first + 5 * step),
            base.add(first + 6 * step),
            base.add(first + 7 * step),
        ]
    }
}

/// AVX2 [`super::x8::deinterleave`].
///
/// # Safety
/// The CPU has AVX2; `src.len() == dst.len() == nb * GROUP_BLOCK_BYTES`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn deinterleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    debug_assert!(src.len() == nb * GROUP_BLOCK_BYTES && dst.len() == src.len());
    let base = dst.as_mut_ptr();
    for (b, gb) in src.chunks_exact(GROUP_BLOCK_BYTES).enumerate() {
        // SAFETY: dst holds the 8 rows of nb blocks and b < nb; every access below stays
        // inside its group-block or row block (offsets from the layout constants); AVX2 by
        // the caller's contract.
        unsafe {
            let rows = row_blocks(base, nb, b);
            let g = gb.as_ptr();
            let m = Masks::new();
            let ahead = g.wrapping_add(PREFETCH_AHEAD);
            for l in 0..GROUP_BLOCK_BYTES.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l).cast());
            }
            for n in 0..2 {
                for h in 0..2 {
                    let zero = _mm256_setzero_si256();
                    let (mut ql_a, mut ql_b, mut qh) = ([zero; 4], [zero; 4], [zero; 4]);
                    for i in 0..4 {
                        // c[k]: chunk i (elements 4i..4i+4) of sub-block k, one quant a byte.
                        let mut c = [zero; 4];
                        for (k, ck) in c.iter_mut().enumerate() {
                            *ck = if i < 3 {
                                and(load_vector(g, n, k, h, i), m.m3f)
                            } else {
                                chunk3(
                                    load_vector(g, n, k, h, 0),
                                    load_vector(g, n, k, h, 1),
                                    load_vector(g, n, k, h, 2),
                                    m,
                                )
                            };
                        }
                        [ql_a[i], ql_b[i], qh[i]] = pack_chunks(c, m);
                    }
                    let [a_at, b_at, h_at] = row_runs_at(n, h);
                    store_transposed(ql_a, &rows, a_at);
                    store_transposed(ql_b, &rows, b_at);
                    store_transposed(qh, &rows, h_at);
                }
            }
            let mut scales = [_mm_setzero_si128(); 8];
            for (p, s) in scales.iter_mut().enumerate() {
                *s = _mm_loadu_si128(g.add(SCALES_AT + 16 * p).cast());
            }
            for (r, s) in transpose_8x8_u16(scales).into_iter().enumerate() {
                _mm_storeu_si128(rows[r].add(BLOCK_SCALES_AT).cast(), s);
                std::ptr::copy_nonoverlapping(g.add(2 * r), rows[r].add(D_AT), 2);
            }
        }
    }
}

/// AVX2 [`super::x8::interleave`].
///
/// # Safety
/// The CPU has AVX2; `src.len() == dst.len() == nb * GROUP_BLOCK_BYTES`.
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)] // `k` and `v` index the two dimensions of `c`
pub(crate) unsafe fn interleave(src: &[u8], nb: usize, dst: &mut [u8]) {
    debug_assert!(src.len() == nb * GROUP_BLOCK_BYTES && dst.len() == src.len());
    // Reads only; the pointers are derived from a shared slice.
    let base = src.as_ptr().cast_mut();
    for (b, gb) in dst.chunks_exact_mut(GROUP_BLOCK_BYTES).enumerate() {
        // SAFETY: as in `deinterleave`, with the roles of source and destination swapped;
        // the row pointers are only read through.
        unsafe {
            let [r0, r1, r2, r3, r4, r5, r6, r7] = row_blocks(base, nb, b);
            let rows = [r0, r1, r2, r3, r4, r5, r6, r7].map(|p| p.cast_const());
            let g = gb.as_mut_ptr();
            let m = Masks::new();
            for n in 0..2 {
                for h in 0..2 {
                    let [a_at, b_at, h_at] = row_runs_at(n, h);
                    let ql_a = load_transposed(&rows, a_at);
                    let ql_b = load_transposed(&rows, b_at);
                    let qh = load_transposed(&rows, h_at);
                    // c[i][k]: chunk i of sub-block k (the inverse of the packing above).
                    let c = [
                        unpack_chunks(ql_a[0], ql_b[0], qh[0], m),
                        unpack_chunks(ql_a[1], ql_b[1], qh[1], m),
                        unpack_chunks(ql_a[2], ql_b[2], qh[2], m),
                        unpack_chunks(ql_a[3], ql_b[3], qh[3], m),
                    ];
                    for k in 0..4 {
                        let c3 = c[3][k];
                        let tops = [_mm256_slli_epi16::<6>(c3), _mm256_slli_epi16::<4>(c3), _mm256_slli_epi16::<2>(c3)];
                        for (v, top) in tops.into_iter().enumerate() {
                            let w = or(c[v][k], and(top, m.mc0));
                            _mm256_storeu_si256(g.add(vector_at(n, k, h, v)).cast(), w);
                        }
                    }
                }
            }
            let mut scales = [_mm_setzero_si128(); 8];
            for (s, row) in scales.iter_mut().zip(&rows) {
                *s = _mm_loadu_si128(row.add(BLOCK_SCALES_AT).cast());
            }
            for (p, s) in transpose_8x8_u16(scales).into_iter().enumerate() {
                _mm_storeu_si128(g.add(SCALES_AT + 16 * p).cast(), s);
            }
            for (r, row) in rows.iter().enumerate() {
                std::ptr::copy_nonoverlapping(row.add(D_AT), g.add(2 * r), 2);
            }
        }
    }
}
