//! AVX2 dequantization of whole rows, and the fused dequantize-and-dot that the
//! float32-activation matmul (`ops::f32_activations`) runs for one token.
//!
//! Bit-identical to the scalar [`crate::quant::dequantize_row`] (itself bit-identical to
//! gguf-py): every element goes through the same f32 operations in the same order — the
//! integer quant converted exactly to f32, then one multiply by its (sub-)block scale and,
//! for formats with a minimum, one add or subtract. Never a fused multiply-add there, which
//! would round once where the reference rounds twice. Sub-block scales are the reference's
//! `d · sc` (one f32 multiply of exact conversions, 8 lanes at a time); f16 scales are
//! widened with F16C, exact like `f16_to_f32` (a signalling-NaN scale comes out quiet, and
//! every NaN stays a NaN).
//!
//! The fused dot products ([`RowKernels::dot`]) dequantize 32 elements into registers and
//! accumulate them exactly as `ops::float_dot::avx2::dot_f32` accumulates a dequantized
//! row (two accumulators, alternating 8-lane vectors, then the same horizontal sum), so a
//! fused result equals dequantize-then-dot bit for bit. They work on several rows at once
//! so that the accumulators' FMA latency chains of one row overlap the other rows' work.
//!
//! Layouts: ggml `ggml-common.h` (`block_q4_0` … `block_iq4_xs`); the element orders are
//! the ones the scalar `dequantize` functions of each format module spell out.
//!
//! (MSRV 1.85: helpers are `unsafe fn`s with `unsafe` blocks that Rust ≥ 1.87 finds
//! partly redundant, hence the `unused_unsafe` allowance, as in `simd_x86.rs`.)

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

use crate::dispatch::Isa;
use crate::ops::float_dot::avx2::hsum;
use crate::quant::iq4_nl::KVALUES_IQ4NL;
use crate::quant::BlockFormat;
use crate::KernelError;

/// Rows one fused-dot call works on (the latency-hiding width; see the module docs).
pub const DOT_ROWS: usize = 4;

/// One row: `dst.len()` elements from `src` (exactly their row bytes).
pub(crate) type DequantizeFn = unsafe fn(&[u8], &mut [f32]);
/// `DOT_ROWS` weight rows (each exactly the row bytes of `x.len()` elements) against `x`.
pub(crate) type DotRowsFn = unsafe fn([&[u8]; DOT_ROWS], &[f32]) -> [f32; DOT_ROWS];
/// One weight row against `x`.
pub(crate) type DotFn = unsafe fn(&[u8], &[f32]) -> f32;

/// The AVX2 kernels of one format.
#[derive(Clone, Copy)]
pub(crate) struct RowKernels {
    /// Dequantizes a row.
    pub dequantize: DequantizeFn,
    /// `DOT_ROWS` fused dequantize-and-dot products.
    pub dot_rows: DotRowsFn,
    /// One fused dequantize-and-dot product.
    pub dot: DotFn,
}

/// Whether this module has AVX2 kernels for `format` (the block formats of GGUF weights;
/// not F32/F16/BF16, which the float kernels read directly, nor the activation formats
/// Q8_1 and Q8_K).
pub fn covers(format: BlockFormat) -> bool {
    kernels(format).is_some()
}

/// Dequantizes one row like [`crate::quant::dequantize_row`], with the AVX2 kernels when
/// the CPU has AVX2, FMA and F16C and [`covers`] the format, else with the scalar one.
/// The result is the same bit for bit either way (NaNs up to their payload).
///
/// Errors: `dst.len()` not a whole number of blocks, or `src.len()` not its byte size.
pub fn dequantize_row(format: BlockFormat, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let (Some(k), true) = (kernels(format), Isa::Avx2.is_available()) else {
        return crate::quant::dequantize_row(format, src, dst);
    };
    let bytes = format.row_bytes(dst.len()).ok_or(KernelError::RowNotBlockMultiple {
        format,
        len: dst.len(),
        block: format.block_elems(),
    })?;
    if src.len() != bytes {
        return Err(KernelError::Length {
            what: "dequantize_row source",
            expected: bytes,
            got: src.len(),
            unit: "bytes",
        });
    }
    // SAFETY: the CPU features were checked above; lengths match.
    unsafe { (k.dequantize)(src, dst) };
    Ok(())
}

/// The kernels of `format`, or `None` where this module has none. Calling them requires
/// AVX2, FMA and F16C.
pub(crate) fn kernels(format: BlockFormat) -> Option<RowKernels> {
    macro_rules! k {
        ($m:ident) => {
            Some(RowKernels { dequantize: $m::dequantize, dot_rows: $m::dot_rows::<DOT_ROWS>, dot: $m::dot })
        };
    }
    match format {
        BlockFormat::Q4_0 => k!(q4_0),
        BlockFormat::Q4_1 => k!(q4_1),
        BlockFormat::Q5_0 => k!(q5_0),
        BlockFormat::Q5_1 => k!(q5_1),
        BlockFormat::Q8_0 => k!(q8_0),
        BlockFormat::IQ4_NL => k!(iq4_nl),
        BlockFormat::Q2_K => k!(q2_k),
        BlockFormat::Q3_K => k!(q3_k),
        BlockFormat::Q4_K => k!(q4_k),
        BlockFormat::Q5_K => k!(q5_k),
        BlockFormat::Q6_K => k!(q6_k),
        BlockFormat::IQ4_XS => k!(iq4_xs),
        BlockFormat::F32 | BlockFormat::F16 | BlockFormat::BF16 | BlockFormat::Q8_1 | BlockFormat::Q8_K => None,
    }
}

/// Generates module `$m` with `dequantize`, `dot_rows::<R>` and `dot` for a format whose
/// blocks are `$bytes` bytes of `$groups` groups of 32 elements. `$scales(block)` reads a
/// block's scales once; `$group(block, &scales, g)` returns group `g`'s 32 values as four
/// 8-lane vectors in element order.
macro_rules! row_kernels {
    ($m:ident, $bytes:expr, $groups:expr, $scales:ident, $group:ident) => {
        mod $m {
            use super::*;

            const BYTES: usize = $bytes;
            const ELEMS: usize = 32 * $groups;

            /// # Safety
            /// AVX2, FMA and F16C; `src` holds `dst.len() / ELEMS` blocks.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
                let nb = dst.len() / ELEMS;
                assert!(src.len() >= nb * BYTES && dst.len() == nb * ELEMS);
                let (mut b, mut y) = (src.as_ptr(), dst.as_mut_ptr());
                // SAFETY: block `i` is bytes `i·BYTES..(i+1)·BYTES` of `src`, its output
                // elements `i·ELEMS..(i+1)·ELEMS` of `dst` (asserted above).
                unsafe {
                    for _ in 0..nb {
                        let s = super::$scales(b);
                        for g in 0..$groups {
                            let v = super::$group(b, &s, g);
                            for (k, &vk) in v.iter().enumerate() {
                                _mm256_storeu_ps(y.add(8 * k), vk);
                            }
                            y = y.add(32);
                        }
                        b = b.add(BYTES);
                    }
                }
            }

            /// # Safety
            /// AVX2, FMA and F16C; every `w[r]` holds `x.len() / ELEMS` blocks and
            /// `x.len()` is a multiple of `ELEMS`.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn dot_rows<const R: usize>(w: [&[u8]; R], x: &[f32]) -> [f32; R] {
                let nb = x.len() / ELEMS;
                assert!(x.len() == nb * ELEMS && w.iter().all(|w| w.len() >= nb * BYTES));
                let mut wp = w.map(|w| w.as_ptr());
                let mut xp = x.as_ptr();
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                // SAFETY: as in `dequantize`; `x` has `nb·ELEMS` elements (asserted above).
                unsafe {
                    for _ in 0..nb {
                        for &p in wp.iter() {
                            prefetch_block::<BYTES>(p);
                        }
                        // (Loops, not closures: a closure here was not inlined.)
                        let mut s = [super::$scales(wp[0]); R];
                        for r in 1..R {
                            s[r] = super::$scales(wp[r]);
                        }
                        for g in 0..$groups {
                            let xv = [
                                _mm256_loadu_ps(xp),
                                _mm256_loadu_ps(xp.add(8)),
                                _mm256_loadu_ps(xp.add(16)),
                                _mm256_loadu_ps(xp.add(24)),
                            ];
                            for r in 0..R {
                                let v = super::$group(wp[r], &s[r], g);
                                // float_dot's order: vectors 0, 2 into the first
                                // accumulator, 1, 3 into the second.
                                acc[r][0] = _mm256_fmadd_ps(v[0], xv[0], acc[r][0]);
                                acc[r][1] = _mm256_fmadd_ps(v[1], xv[1], acc[r][1]);
                                acc[r][0] = _mm256_fmadd_ps(v[2], xv[2], acc[r][0]);
                                acc[r][1] = _mm256_fmadd_ps(v[3], xv[3], acc[r][1]);
                            }
                            xp = xp.add(32);
                        }
                        for p in wp.iter_mut() {
                            *p = p.add(BYTES);
                        }
                    }
                    let mut out = [0f32; R];
                    for r in 0..R {
                        out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
                    }
                    out
                }
            }

            /// # Safety
            /// As [`dot_rows`] with one row.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn dot(w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: the caller's contract.
                unsafe { dot_rows::<1>([w], x)[0] }
            }
        }
    };
}

row_kernels!(q4_0, 18, 1, scale_d, group_q4_0);
row_kernels!(q4_1, 20, 1, scale_d_m, group_q4_1);
row_kernels!(q5_0, 22, 1, scale_d, group_q5_0);
row_kernels!(q5_1, 24, 1, scale_d_m, group_q5_1);
row_kernels!(q8_0, 34, 1, scale_d, group_q8_0);
row_kernels!(iq4_nl, 18, 1, scale_d, group_iq4_nl);
row_kernels!(q2_k, 84, 8, scales_q2_k, group_q2_k);
row_kernels!(q3_k, 110, 8, scales_q3_k, group_q3_k);
row_kernels!(q4_k, 144, 8, scales_k4, group_q4_k);
row_kernels!(q5_k, 176, 8, scales_k4, group_q5_k);
row_kernels!(q6_k, 210, 8, scales_q6_k, group_q6_k);
row_kernels!(iq4_xs, 136, 8, scales_iq4_xs, group_iq4_xs);

// ---------------------------------------------------------------------------------------
// Shared pieces. Every function below requires AVX2, FMA and F16C, and its pointer
// arguments to point at a whole block of its format.

/// The IEEE half at `p` (little-endian) as f32, exact (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn half(p: *const u8) -> f32 {
    // SAFETY: 2 bytes at p (caller); register-only intrinsics.
    unsafe {
        let bits = u16::from_le_bytes(p.cast::<[u8; 2]>().read_unaligned());
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// How far ahead of the block being read the fused dots ask for its cache lines: the
/// weights stream from DRAM, and the hardware prefetcher alone leaves bandwidth unused
/// (the same distance as the quantized kernels' `simd_x86::PREFETCH_BYTES`).
const PREFETCH_BYTES: usize = 2048;

/// Prefetch hints for the cache lines of the `BYTES`-byte block `PREFETCH_BYTES` past
/// `p` (one per 64 bytes, so blocks longer than a line leave none out). A hint never
/// faults, so the address may lie past the row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_block<const BYTES: usize>(p: *const u8) {
    let ahead = p.wrapping_add(PREFETCH_BYTES);
    let mut o = 0;
    while o < BYTES {
        // SAFETY: a prefetch hint, not an access.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(o).cast()) };
        o += 64;
    }
}

/// The little-endian u32 at `p`.
#[inline(always)]
unsafe fn word(p: *const u8) -> u32 {
    // SAFETY: 4 bytes at p (caller).
    u32::from_le_bytes(unsafe { p.cast::<[u8; 4]>().read_unaligned() })
}

/// The 8 signed bytes at `p` as 8 f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8_to_f32(p: *const u8) -> __m256 {
    // SAFETY: 8 bytes at p (caller).
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
}

/// 16 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load16(p: *const u8) -> __m128i {
    // SAFETY: 16 bytes at p (caller).
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// 32 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: 32 bytes at p (caller).
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The 16 bytes at `p` as 32 nibbles: low nibbles of bytes 0..16 first, then their high
/// nibbles (ggml's order for a 32-element block), each 0..=15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: 16 bytes at p (caller); register-only intrinsics.
    unsafe {
        let q = load16(p);
        let both = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

/// The bytes of `v` shifted right by `shift` bits and masked to `mask` (all values of a
/// byte-wise shift; the 16-bit shift's spill-over from the next byte is masked off).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn shift_mask(v: __m256i, shift: usize, mask: i8) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32)), _mm256_set1_epi8(mask)) }
}

/// Per byte: `value` where all bits of `mask` are set in `bits`, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn where_bits(bits: __m256i, mask: u8, value: i8) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let m = _mm256_set1_epi8(mask as i8);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bits, m), m), _mm256_set1_epi8(value))
    }
}

/// 32 bits (bit i = element i) as 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bit_mask(bits: u32) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        // Byte i takes input byte i / 8, then keeps only its bit i % 8.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
        );
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
    }
}

/// The IQ4_NL level of each nibble (0..=15) of `idx`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq4_levels(idx: __m256i) -> __m256i {
    // SAFETY: 16-byte table load, then register-only intrinsics.
    unsafe {
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
        _mm256_shuffle_epi8(table, idx)
    }
}

/// 32 signed bytes (element order) as four vectors of 8 f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen(q: __m256i) -> [__m256; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256::<1>(q);
        [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))),
        ]
    }
}

/// `q · d` per lane (the reference's `q as f32 * d`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn times(q: [__m256; 4], d: f32) -> [__m256; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let d = _mm256_set1_ps(d);
        [_mm256_mul_ps(q[0], d), _mm256_mul_ps(q[1], d), _mm256_mul_ps(q[2], d), _mm256_mul_ps(q[3], d)]
    }
}

/// `q · d + m` per lane: a multiply, then an add (not an FMA), as the reference.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn times_plus(q: [__m256; 4], d: f32, m: f32) -> [__m256; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let (d, m) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        [
            _mm256_add_ps(_mm256_mul_ps(q[0], d), m),
            _mm256_add_ps(_mm256_mul_ps(q[1], d), m),
            _mm256_add_ps(_mm256_mul_ps(q[2], d), m),
            _mm256_add_ps(_mm256_mul_ps(q[3], d), m),
        ]
    }
}

/// Group values with one scale per 16 elements: `d[j]·q` (then `− m[j]`), `j = 2g, 2g+1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn times16(q: [__m256; 4], d: &[f32; 16], m: Option<&[f32; 16]>, g: usize) -> [__m256; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let (d0, d1) = (_mm256_set1_ps(d[2 * g]), _mm256_set1_ps(d[2 * g + 1]));
        let v = [_mm256_mul_ps(d0, q[0]), _mm256_mul_ps(d0, q[1]), _mm256_mul_ps(d1, q[2]), _mm256_mul_ps(d1, q[3])];
        match m {
            None => v,
            Some(m) => {
                let (m0, m1) = (_mm256_set1_ps(m[2 * g]), _mm256_set1_ps(m[2 * g + 1]));
                [_mm256_sub_ps(v[0], m0), _mm256_sub_ps(v[1], m0), _mm256_sub_ps(v[2], m1), _mm256_sub_ps(v[3], m1)]
            }
        }
    }
}

/// `d · sc` for 8 unsigned byte codes in the low 8 bytes of `codes` (the reference's
/// `d * sc as f32`, 8 lanes at a time), stored to `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale8_u8(d: f32, codes: __m128i, out: &mut [f32]) {
    // SAFETY: register-only intrinsics; an 8-float store into `out[..8]` (length asserted).
    unsafe {
        assert!(out.len() >= 8);
        let v = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes)));
        _mm256_storeu_ps(out.as_mut_ptr(), v);
    }
}

/// As [`scale8_u8`] for signed codes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale8_i8(d: f32, codes: __m128i, out: &mut [f32]) {
    // SAFETY: as scale8_u8.
    unsafe {
        assert!(out.len() >= 8);
        let v = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)));
        _mm256_storeu_ps(out.as_mut_ptr(), v);
    }
}

// ---------------------------------------------------------------------------------------
// 32-element formats: one group per block.

/// Scale of a block whose f16 `d` comes first (Q4_0, Q5_0, Q8_0, IQ4_NL).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_d(b: *const u8) -> f32 {
    // SAFETY: the caller's block.
    unsafe { half(b) }
}

/// Scale and minimum of a block that starts with f16 `d`, `m` (Q4_1, Q5_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_d_m(b: *const u8) -> (f32, f32) {
    // SAFETY: the caller's block.
    unsafe { (half(b), half(b.add(2))) }
}

/// Q4_0 (`d`, 16 bytes of nibbles): `(q − 8)·d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_0(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe { times(widen(_mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8))), *d) }
}

/// Q4_1 (`d`, `m`, 16 bytes of nibbles): `q·d + m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_1(b: *const u8, dm: &(f32, f32), _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe { times_plus(widen(nibbles(b.add(4))), dm.0, dm.1) }
}

/// The 5-bit quants of a Q5_0/Q5_1 block: nibbles at `qs`, fifth bits in the u32 at `qh`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quants5(qh: *const u8, qs: *const u8) -> __m256i {
    // SAFETY: 4 bytes at qh, 16 at qs (the caller's block).
    unsafe {
        let bits = u32::from_le_bytes(qh.cast::<[u8; 4]>().read_unaligned());
        _mm256_or_si256(nibbles(qs), _mm256_and_si256(bit_mask(bits), _mm256_set1_epi8(0x10)))
    }
}

/// Q5_0 (`d`, `qh`, nibbles): `(q − 16)·d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q5_0(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe { times(widen(_mm256_sub_epi8(quants5(b.add(2), b.add(6)), _mm256_set1_epi8(16))), *d) }
}

/// Q5_1 (`d`, `m`, `qh`, nibbles): `q·d + m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q5_1(b: *const u8, dm: &(f32, f32), _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe { times_plus(widen(quants5(b.add(4), b.add(8))), dm.0, dm.1) }
}

/// Q8_0 (`d`, 32 signed bytes): `q·d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q8_0(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block: 32 quant bytes from b + 2, 8 at a time.
    unsafe {
        let q = b.add(2);
        times([i8x8_to_f32(q), i8x8_to_f32(q.add(8)), i8x8_to_f32(q.add(16)), i8x8_to_f32(q.add(24))], *d)
    }
}

/// IQ4_NL (`d`, 16 bytes of level indices): `d·level`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_iq4_nl(b: *const u8, d: &f32, _g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe { times(widen(iq4_levels(nibbles(b.add(2)))), *d) }
}

// ---------------------------------------------------------------------------------------
// Super-blocks of 256: eight groups of 32.

/// Per-block state of the formats with a scale (and minimum) per 16 elements.
#[derive(Clone, Copy)]
struct Scales16 {
    d: [f32; 16],
    m: [f32; 16],
}

/// Per-block state of the formats with a scale (and minimum) per 32 elements.
#[derive(Clone, Copy)]
struct Scales32 {
    d: [f32; 8],
    m: [f32; 8],
}

/// Q2_K (`scales[16]`, `qs[64]`, `d`, `dmin`): per 16 elements `dl = d·(sc & 15)`,
/// `ml = dmin·(sc >> 4)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_q2_k(b: *const u8) -> Scales16 {
    // SAFETY: the caller's block (84 bytes).
    unsafe {
        let (d, dmin) = (half(b.add(80)), half(b.add(82)));
        let sc = load16(b);
        let low = _mm_and_si128(sc, _mm_set1_epi8(0x0F));
        let high = _mm_and_si128(_mm_srli_epi16::<4>(sc), _mm_set1_epi8(0x0F));
        let mut s = Scales16 { d: [0.0; 16], m: [0.0; 16] };
        scale8_u8(d, low, &mut s.d[..8]);
        scale8_u8(d, _mm_srli_si128::<8>(low), &mut s.d[8..]);
        scale8_u8(dmin, high, &mut s.m[..8]);
        scale8_u8(dmin, _mm_srli_si128::<8>(high), &mut s.m[8..]);
        s
    }
}

/// Q2_K group `g = 4n + j`: bits `2j..2j+2` of `qs[32n..32n + 32]`; `dl·q − ml`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q2_k(b: *const u8, s: &Scales16, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe {
        let q = shift_mask(load32(b.add(16 + 32 * (g / 4))), 2 * (g % 4), 3);
        times16(widen(q), &s.d, Some(&s.m), g)
    }
}

/// Q3_K (`hmask[32]`, `qs[64]`, `scales[12]`, `d`): 16 six-bit scales, offset 32, as
/// ggml's AVX2 kernel unpacks them (the same values as `BlockQ3K::sub_scales`), times `d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_q3_k(b: *const u8) -> Scales16 {
    // SAFETY: the caller's block (110 bytes).
    unsafe {
        let (a0, a1, t) = (word(b.add(96)), word(b.add(100)), word(b.add(104)));
        const LOW: u32 = 0x0F0F_0F0F;
        const TOP: u32 = 0x0303_0303;
        let s0 = (a0 & LOW) | ((t & TOP) << 4);
        let s1 = (a1 & LOW) | (((t >> 2) & TOP) << 4);
        let s2 = ((a0 >> 4) & LOW) | (((t >> 4) & TOP) << 4);
        let s3 = ((a1 >> 4) & LOW) | (((t >> 6) & TOP) << 4);
        let codes = _mm_sub_epi8(_mm_set_epi32(s3 as i32, s2 as i32, s1 as i32, s0 as i32), _mm_set1_epi8(32));
        let d = half(b.add(108));
        let mut s = Scales16 { d: [0.0; 16], m: [0.0; 16] };
        scale8_i8(d, codes, &mut s.d[..8]);
        scale8_i8(d, _mm_srli_si128::<8>(codes), &mut s.d[8..]);
        s
    }
}

/// Q3_K group `g = 4n + j`: bits `2j..2j+2` of `qs[32n..]`, minus 4 where bit `g` of
/// `hmask` is clear; `dl·q`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q3_k(b: *const u8, s: &Scales16, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe {
        let low = shift_mask(load32(b.add(32 + 32 * (g / 4))), 2 * (g % 4), 3);
        let high_set = where_bits(load32(b), 1 << g, 4);
        // q = low − 4 + (4 where the bit is set).
        let q = _mm256_add_epi8(_mm256_sub_epi8(low, _mm256_set1_epi8(4)), high_set);
        times16(widen(q), &s.d, None, g)
    }
}

/// Q4_K / Q5_K (`d`, `dmin`, `scales[12]` at offset 4): 8 six-bit scales and mins
/// (ggml `get_scale_min_k4`, with its 32-bit mask trick), times `d` and `dmin`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_k4(b: *const u8) -> Scales32 {
    // SAFETY: the caller's block (at least 16 bytes).
    unsafe {
        let (u0, u1, u2) = (word(b.add(4)), word(b.add(8)), word(b.add(12)));
        let sc_lo = u0 & 0x3f3f_3f3f;
        let mn_lo = u1 & 0x3f3f_3f3f;
        let sc_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
        let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
        let mut s = Scales32 { d: [0.0; 8], m: [0.0; 8] };
        scale8_u8(half(b), _mm_set_epi32(0, 0, sc_hi as i32, sc_lo as i32), &mut s.d);
        scale8_u8(half(b.add(2)), _mm_set_epi32(0, 0, mn_hi as i32, mn_lo as i32), &mut s.m);
        s
    }
}

/// `d1·q − m1` for a whole group of 32 with one scale and minimum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn times32_minus(q: [__m256; 4], s: &Scales32, g: usize) -> [__m256; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let (d, m) = (_mm256_set1_ps(s.d[g]), _mm256_set1_ps(s.m[g]));
        [
            _mm256_sub_ps(_mm256_mul_ps(d, q[0]), m),
            _mm256_sub_ps(_mm256_mul_ps(d, q[1]), m),
            _mm256_sub_ps(_mm256_mul_ps(d, q[2]), m),
            _mm256_sub_ps(_mm256_mul_ps(d, q[3]), m),
        ]
    }
}

/// Q4_K group `g`: the low (`g` even) or high nibbles of `qs[32·(g/2)..]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q4_k(b: *const u8, s: &Scales32, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block (qs at 16).
    unsafe {
        let q = shift_mask(load32(b.add(16 + 32 * (g / 2))), 4 * (g % 2), 0x0F);
        times32_minus(widen(q), s, g)
    }
}

/// Q5_K group `g`: Q4_K's nibble (qs at 48) plus 16 where bit `g` of `qh[i]` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q5_k(b: *const u8, s: &Scales32, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block (qh at 16, qs at 48).
    unsafe {
        let low = shift_mask(load32(b.add(48 + 32 * (g / 2))), 4 * (g % 2), 0x0F);
        let q = _mm256_or_si256(low, where_bits(load32(b.add(16)), 1 << g, 16));
        times32_minus(widen(q), s, g)
    }
}

/// Q6_K (`ql[128]`, `qh[64]`, `scales[16]` signed, `d`): `d·sc` per 16 elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_q6_k(b: *const u8) -> Scales16 {
    // SAFETY: the caller's block (210 bytes).
    unsafe {
        let d = half(b.add(208));
        let codes = load16(b.add(192));
        let mut s = Scales16 { d: [0.0; 16], m: [0.0; 16] };
        scale8_i8(d, codes, &mut s.d[..8]);
        scale8_i8(d, _mm_srli_si128::<8>(codes), &mut s.d[8..]);
        s
    }
}

/// Q6_K group `g = 4n + k`: low 4 bits from `ql[64n + 32(k % 2)..]` (shifted by
/// `4(k / 2)`), top 2 bits from bits `2k..2k+2` of `qh[32n..]`, minus 32; `dl·q`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_q6_k(b: *const u8, s: &Scales16, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block.
    unsafe {
        let (n, k) = (g / 4, g % 4);
        let low = shift_mask(load32(b.add(64 * n + 32 * (k % 2))), 4 * (k / 2), 0x0F);
        let high = shift_mask(load32(b.add(128 + 32 * n)), 2 * k, 3);
        let q = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16::<4>(high)), _mm256_set1_epi8(32));
        times16(widen(q), &s.d, None, g)
    }
}

/// IQ4_XS (`d`, `scales_h` u16, `scales_l[4]`, `qs[128]`): per 32 elements
/// `dl = d·(ls − 32)`, `ls` six bits (low nibble from `scales_l`, top two from `scales_h`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_iq4_xs(b: *const u8) -> Scales32 {
    // SAFETY: the caller's block (136 bytes).
    unsafe {
        let h = u16::from_le_bytes(b.add(2).cast::<[u8; 2]>().read_unaligned());
        let l = b.add(4).cast::<[u8; 4]>().read_unaligned();
        let mut codes = [0i8; 16];
        for (ib, c) in codes.iter_mut().take(8).enumerate() {
            let ls = ((l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | ((((h >> (2 * ib)) & 3) as u8) << 4);
            *c = ls as i8 - 32;
        }
        let mut s = Scales32 { d: [0.0; 8], m: [0.0; 8] };
        scale8_i8(half(b), _mm_loadu_si128(codes.as_ptr().cast()), &mut s.d);
        s
    }
}

/// IQ4_XS group `ib`: the levels of the nibbles of `qs[16·ib..]`; `dl·level`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_iq4_xs(b: *const u8, s: &Scales32, g: usize) -> [__m256; 4] {
    // SAFETY: the caller's block (qs at 8).
    unsafe {
        let q = iq4_levels(nibbles(b.add(8 + 16 * g)));
        let d = _mm256_set1_ps(s.d[g]);
        let v = widen(q);
        [_mm256_mul_ps(d, v[0]), _mm256_mul_ps(d, v[1]), _mm256_mul_ps(d, v[2]), _mm256_mul_ps(d, v[3])]
    }
}
