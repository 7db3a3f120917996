//! AVX2 building blocks shared by the per-format kernels in `quant/<format>/avx2.rs`.
//!
//! The recipes are ggml's (`ggml-cpu/arch/x86/quants.c`): nibbles unpacked with and/shift,
//! signed×signed byte products through `_mm256_maddubs_epi16` after moving the sign of one
//! operand onto the other (`_mm256_sign_epi8`), pairs of i16 summed to i32 by
//! `_mm256_madd_epi16`, block scales applied in f32 with FMA.
//!
//! Every function is `unsafe` and compiled with `avx2,fma,f16c`: the caller guarantees that the
//! CPU has these features (the dispatch table checks once at start-up). Loads take fixed-size
//! array references or bounds-checked sub-slices, so nothing reads outside its argument.
//! (Written for the workspace MSRV 1.85: no safe `#[target_feature]` functions, so every
//! helper is an `unsafe fn` and kernels wrap their bodies in one `unsafe` block. From Rust
//! 1.87 on, register-only intrinsics are safe inside such functions, which makes some of
//! those blocks redundant there; hence the `unused_unsafe` allowance in these files.)

#![allow(unused_unsafe)]

use std::arch::x86_64::*;

/// 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_u8x16(b: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b`; unaligned load.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 16 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_i8x16(b: &[i8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of `b`.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 32 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_i8x32(b: &[i8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of `b`.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 32 signed bytes starting at `s[off]` (bounds-checked; constant offsets fold the check away).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_i8x32_at(s: &[i8], off: usize) -> __m256i {
    let b = &s[off..off + 32];
    // SAFETY: `b` is exactly 32 bytes long.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 32 bytes starting at `s[off]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_u8x32_at(s: &[u8], off: usize) -> __m256i {
    let b = &s[off..off + 32];
    // SAFETY: `b` is exactly 32 bytes long.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 16 bytes starting at `s[off]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_u8x16_at(s: &[u8], off: usize) -> __m128i {
    let b = &s[off..off + 16];
    // SAFETY: `b` is exactly 16 bytes long.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// 16 i16 starting at `s[off]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_i16x16_at(s: &[i16], off: usize) -> __m256i {
    let b = &s[off..off + 16];
    // SAFETY: `b` is exactly 32 bytes long.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// 8 f32 starting at `s[off]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load_f32x8_at(s: &[f32], off: usize) -> __m256 {
    let b = &s[off..off + 8];
    // SAFETY: `b` is exactly 8 floats long.
    unsafe { _mm256_loadu_ps(b.as_ptr()) }
}

/// Stores 32 signed bytes into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn store_i8x32(out: &mut [i8; 32], v: __m256i) {
    // SAFETY: writes exactly the 32 bytes of `out`.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

/// Stores 32 signed bytes at `s[off..off + 32]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn store_i8x32_at(s: &mut [i8], off: usize, v: __m256i) {
    let b = &mut s[off..off + 32];
    // SAFETY: `b` is exactly 32 bytes long.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// How far ahead of the block being read the weight kernels ask for cache lines. Matvec
/// streams weights from DRAM; the hardware prefetcher alone left single-thread throughput well
/// below the read bandwidth here (Zen 3), a software hint 2–4 KiB ahead recovered part of it
/// (measured). Rows of a matrix are contiguous, so running past the end of a row fetches the
/// next one.
pub(crate) const PREFETCH_BYTES: usize = 2048;

/// Prefetch hints for the cache lines `PREFETCH_BYTES` past the `count` values starting at `p`
/// (one hint per 64-byte line they span). A hint, not an access: it never faults, so the
/// addresses may lie beyond the slice `p` points into.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn prefetch_ahead<T>(p: &T, count: usize) {
    let ahead = (p as *const T).cast::<i8>().wrapping_add(PREFETCH_BYTES);
    let mut off = 0;
    while off < count * std::mem::size_of::<T>() {
        // SAFETY: prefetch has no architectural effect and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off)) };
        off += 64;
    }
}

/// IEEE half (little-endian bytes, as GGUF stores scales) to f32 with F16C; exact, like
/// `half::f16::to_f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_to_f32(h: [u8; 2]) -> f32 {
    // SAFETY: register-only intrinsics; features guaranteed by the caller.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(u16::from_le_bytes(h))))) }
}

/// f32 to IEEE half bits, round to nearest even (F16C), like `half::f16::from_f32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_to_f16(x: f32) -> [u8; 2] {
    // SAFETY: register-only intrinsics.
    let bits = unsafe { _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) };
    (bits as u16).to_le_bytes()
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_f32x8(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Sum of the 8 i32 lanes (wrapping, like the scalar i32 sums it replaces).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_i32x8(v: __m256i) -> i32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Sum of the 4 i32 lanes (wrapping).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_i32x4(v: __m128i) -> i32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// The 8 six-bit scales and 8 six-bit mins of a Q4_K/Q5_K super-block (12 packed bytes, as
/// `get_scale_min_k4` reads them), as bytes 0..8 of two vectors. Done with 32-bit masks on the
/// three little-endian words (ggml's `utmp` trick): scales 0..4 and mins 0..4 are the low six
/// bits of words 0 and 1; scales/mins 4..8 take their low nibbles from word 2 and their top
/// two bits from the spare top bits of words 0/1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn k4_scales_mins(q: &[u8; 12]) -> (__m128i, __m128i) {
    let word = |k: usize| u32::from_le_bytes([q[4 * k], q[4 * k + 1], q[4 * k + 2], q[4 * k + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let scales_lo = u0 & 0x3f3f_3f3f;
    let mins_lo = u1 & 0x3f3f_3f3f;
    let scales_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
    let mins_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
    // SAFETY: register-only intrinsics.
    unsafe {
        (_mm_set_epi32(0, 0, scales_hi as i32, scales_lo as i32), _mm_set_epi32(0, 0, mins_hi as i32, mins_lo as i32))
    }
}

/// `_mm256_shuffle_epi8` mask that broadcasts i16 element `j < 8` of each 128-bit lane to the
/// whole lane (a sub-block's scale across the 16 pair sums of its 32 quants).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn broadcast_i16_mask(j: usize) -> __m256i {
    let b = (2 * j) as i16;
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_set1_epi16(((b + 1) << 8) | b) }
}

/// Scales of two 16-element sub-blocks `k` and `k + 1` (signed bytes `k < 15` of `scales`)
/// as i16: `[s_k ×8 | s_{k+1} ×8]`, matching the pair sums `_mm256_maddubs_epi16` leaves for
/// 32 consecutive quants (elements 0..16 in the low lane, 16..32 in the high lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn sub16_scale_pair(scales: __m128i, k: usize) -> __m256i {
    let lo = k as u64 * 0x0101_0101_0101_0101;
    let hi = (k as u64 + 1) * 0x0101_0101_0101_0101;
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, _mm_set_epi64x(hi as i64, lo as i64))) }
}

/// 16 packed bytes → 32 nibbles: the low nibbles of bytes 0..16 in bytes 0..16 and their high
/// nibbles in bytes 16..32 (the order ggml's 32-element blocks use), each in 0..=15.
/// (A broadcast load and one variable shift per 64-bit lane: cheaper on Zen 3 than the
/// shift + `vinserti128` pair, measured.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles_32(b: &[u8; 16]) -> __m256i {
    // SAFETY: load of a 16-byte array, then register-only intrinsics.
    unsafe {
        let both = _mm256_broadcastsi128_si256(load_u8x16(b));
        let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }
}

/// The 32 unsigned 5-bit codes of a Q5_0/Q5_1 block (0..=31): [`nibbles_32`] of `qs` with
/// bit `i` of `qh` (little-endian) OR-ed into code `i` as 0x10.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn five_bit_codes_32(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    // SAFETY: a load of a 16-byte array, then register-only intrinsics.
    unsafe {
        let fifth = _mm256_and_si256(bits_to_byte_mask(u32::from_le_bytes(qh)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(nibbles_32(qs), fifth)
    }
}

/// [`nibbles_32`] of the 16 bytes at `s[off..off + 16]` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles_32_at(s: &[u8], off: usize) -> __m256i {
    // SAFETY: bounds-checked load, then register-only intrinsics.
    unsafe {
        let both = _mm256_broadcastsi128_si256(load_u8x16_at(s, off));
        let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }
}

/// Per byte: `value` where the bits of `mask` are all set in `bits`, 0 elsewhere (a selected
/// bit of every byte turned into a quant's high part, shift-free).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn select_bit(bits: __m256i, mask: u8, value: i8) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let m = _mm256_set1_epi8(mask as i8);
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(bits, m), m), _mm256_set1_epi8(value))
    }
}

/// Four IEEE halves (little-endian bytes) to f32 with one F16C conversion. Converting the
/// scales of a block pair together instead of one `vpinsrw` + `vcvtph2ps` each nearly
/// doubled the Q4_0 kernel's throughput on Zen 3 (measured: 6 → 10+ GB/s).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16x4_to_f32(h: [[u8; 2]; 4]) -> __m128 {
    let bits = u64::from(u16::from_le_bytes(h[0]))
        | u64::from(u16::from_le_bytes(h[1])) << 16
        | u64::from(u16::from_le_bytes(h[2])) << 32
        | u64::from(u16::from_le_bytes(h[3])) << 48;
    // SAFETY: register-only intrinsics.
    unsafe { _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64)) }
}

/// Eight IEEE halves to f32 with one F16C conversion.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16x8_to_f32(lo: [[u8; 2]; 4], hi: [[u8; 2]; 4]) -> __m256 {
    let pack = |h: [[u8; 2]; 4]| {
        (u64::from(u16::from_le_bytes(h[0]))
            | u64::from(u16::from_le_bytes(h[1])) << 16
            | u64::from(u16::from_le_bytes(h[2])) << 32
            | u64::from(u16::from_le_bytes(h[3])) << 48) as i64
    };
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_cvtph_ps(_mm_set_epi64x(pack(hi), pack(lo))) }
}

/// Block-pair scales `(dx0·dy0, dx1·dy1)`, each broadcast to 8 lanes; the products are the
/// scalar code's `x.d() * y.d()` (one f32 multiply of the exact conversions).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pair_scales(dx0: [u8; 2], dx1: [u8; 2], dy0: [u8; 2], dy1: [u8; 2]) -> (__m256, __m256) {
    // SAFETY: register-only intrinsics.
    unsafe {
        let f = f16x4_to_f32([dx0, dx1, dy0, dy1]);
        let d = _mm_mul_ps(f, _mm_movehl_ps(f, f));
        (_mm256_broadcastss_ps(d), _mm256_broadcastss_ps(_mm_movehdup_ps(d)))
    }
}

/// Σ over groups of 4 adjacent bytes of `(u[i] − off)·s[i]` as 8 i32 lanes, for unsigned
/// quants `u` with an offset (Q4_0: 8, Q5_0: 16): `maddubs(u, s) − maddubs(off, s)` in i16,
/// exact for u ≤ 31, off ≤ 16 and any `s` (pairs stay within ±7936 and ±4096), so unlike the
/// sign trick it needs no -128-free activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_offset_u8i8x32(u: __m256i, off: __m256i, s: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(off, s));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// 32 bits (bit i = element i) → 32 bytes, 0xFF where the bit is set and 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bits_to_byte_mask(bits: u32) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        // Byte i gets input byte i / 8; then each byte keeps only its own bit i % 8.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
        );
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
    }
}

/// Σ over groups of 4 adjacent bytes of `x[i]·y[i]`, signed × signed, as 8 i32 lanes.
///
/// Exact when `y` has no byte equal to -128 where `x` is negative (the sign move would
/// overflow): our activation quantizers produce -127..=127 only. `x` may be anything.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_i8x32(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { dot_u8i8x32(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)) }
}

/// Σ over groups of 4 adjacent bytes of `u[i]·s[i]`, unsigned × signed, as 8 i32 lanes.
/// Exact as long as no pair `u[2k]·s[2k] + u[2k+1]·s[2k+1]` leaves i16 (maddubs saturates):
/// true for u ≤ 128 and s ≥ -127, or u ≤ 127 and any s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_u8i8x32(u: __m256i, s: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
}

/// Largest |x| over `v`, NaNs ignored, 0 when there is none — exactly the scalar
/// `fold(0.0, |m, v| m.max(v.abs()))`. (`_mm256_max_ps(a, b)` returns `b` when either is NaN,
/// so the candidate goes first and the running maximum second.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn max_abs(v: &[__m256]) -> f32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for &x in v {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, x), m);
        }
        max_lane(m)
    }
}

/// Largest lane of 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn max_lane(m: __m256) -> f32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }
}

/// Rounds to the nearest integer, halfway cases away from zero — exactly `f32::round`
/// (C `roundf`), which ggml's scalar Q8_0/Q8_1 quantizers use. (`_mm256_round_ps` only offers
/// ties-to-even.) `x - trunc(x)` is exact in binary floating point, so the comparison with 0.5
/// decides ties without any intermediate rounding.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn round_half_away(x: __m256) -> __m256 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
        let sign = _mm256_set1_ps(-0.0);
        let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(x, t));
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
        // ±1 with the sign of x where |frac| >= 0.5, else 0.
        let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(sign, x));
        _mm256_add_ps(t, _mm256_and_ps(up, one))
    }
}

/// Rounds to the nearest integer, halfway cases to even (the current MXCSR mode is not
/// consulted). Equals ggml's `nearest_int` (the 1.5·2^23 trick) for |x| < 2^22, which is the
/// range quantizers feed it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn round_half_even(x: __m256) -> __m256 {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) }
}

/// Four vectors of 8 i32 (elements 0..8, 8..16, 16..24, 24..32), each within -128..=127, packed
/// to 32 i8 in element order. The pack instructions work per 128-bit lane, so a final
/// permutation restores the order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn pack_i32_to_i8(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let a = _mm256_packs_epi32(i0, i1); // 0..4 8..12 | 4..8 12..16
        let b = _mm256_packs_epi32(i2, i3); // 16..20 24..28 | 20..24 28..32
        let c = _mm256_packs_epi16(a, b); // 0..4 8..12 16..20 24..28 | 4..8 12..16 20..24 28..32
        _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

// --- Multi-row matvec (decode) helpers ----------------------------------------------------

/// Rows per call of the multi-row matvec kernels (`vec_dot_rows::<R>`, `R ≤ MATVEC_ROWS`):
/// four rows share each activation block's load and offset sums. (Measured on Zen 3: two rows
/// leave part of the gain, eight run out of the 16 ymm registers.)
pub(crate) const MATVEC_ROWS: usize = 4;

/// Least distance, in bytes, of the matvec kernels' prefetch ahead of the group of rows being
/// read (see [`group_prefetch_ahead`]).
pub(crate) const MATVEC_PREFETCH_MIN: usize = 4096;

/// Prefetch hints for a group of `R` consecutive weight rows of `row_bytes` each starting at
/// `base`, read in lockstep: the rows read `step` bytes each per iteration, so the group
/// consumes `R·step` bytes of its `R·row_bytes` per iteration. The hints walk the memory
/// *after* the group linearly at the same pace (`ahead + R·done`, `ahead` at least one group
/// and [`MATVEC_PREFETCH_MIN`]), so DRAM and the hardware prefetchers see one ascending stream
/// instead of R interleaved ones (per-row hints 2 KiB ahead ran at 45 % of the read bandwidth
/// with 4 rows, the linear stream at 89 %, measured on Zen 3). Hints never fault; past the
/// end of the matrix they are simply wasted.
#[inline(always)]
pub(crate) fn group_prefetch_ahead(row_bytes: usize, rows: usize) -> usize {
    (rows * row_bytes).max(MATVEC_PREFETCH_MIN)
}

/// One iteration's hints of [`group_prefetch_ahead`]: lines covering
/// `base + ahead + done .. + len` (every line of the walk is hit by some iteration).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn prefetch_rows_ahead(base: *const u8, ahead: usize, done: usize, len: usize) {
    let p = base.wrapping_add(ahead + done);
    let mut off = 0;
    while off < len {
        // SAFETY: prefetch has no architectural effect and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast()) };
        off += 64;
    }
}

/// The f16 scale fields of up to 4 rows' blocks (`f(r)` for `r < R`, zero halves above), as
/// one `[[u8; 2]; 4]` for [`f16x4_to_f32`] / [`f16x8_to_f32`].
#[inline(always)]
pub(crate) fn halves4<const R: usize>(f: impl Fn(usize) -> [u8; 2]) -> [[u8; 2]; 4] {
    std::array::from_fn(|r| if r < R { f(r) } else { [0, 0] })
}

/// `[Σ v[0], Σ v[1], Σ v[2], Σ v[3]]` over the 8 i32 lanes of each vector (wrapping, exact
/// for the block sums it reduces): one transposing reduction for four rows instead of four
/// horizontal sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum4_i32x8(v: [__m256i; 4]) -> __m128i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        // Per 128-bit lane: [Σv0, Σv1, Σv2, Σv3] of that lane's half.
        let h = _mm256_hadd_epi32(h01, h23);
        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
    }
}

/// `[Σ v[0], Σ v[1], Σ v[2], Σ v[3]]` over the 4 i32 lanes of each vector (wrapping).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum4_i32x4(v: [__m128i; 4]) -> __m128i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm_hadd_epi32(_mm_hadd_epi32(v[0], v[1]), _mm_hadd_epi32(v[2], v[3])) }
}

/// The 16 bytes at `lo` in the low half and at `hi` in the high half of one register.
///
/// # Safety
/// AVX2; 16 readable bytes at each pointer.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn load_halves(lo: *const u8, hi: *const u8) -> __m256i {
    // SAFETY: the caller's contract; unaligned loads.
    unsafe {
        let lo = _mm_loadu_si128(lo.cast());
        let hi = _mm_loadu_si128(hi.cast());
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
    }
}

/// A 4×4 transpose of 32-bit words within each 128-bit half: word `k` of half `h` of `v[j]`
/// becomes word `j` of half `h` of result `k`. Its own inverse. In the 8-row interleaved
/// layouts it turns row pairs (register `r` = row r's 4 quant words | row r + 4's) into
/// chunks (register `c` = word c of rows 0–3 | of rows 4–7) and back.
///
/// # Safety
/// AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn transpose_words_4x4_halves(v: [__m256i; 4]) -> [__m256i; 4] {
    // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
    unsafe {
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]); // v0w0 v1w0 v0w1 v1w1
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]); // v0w2 v1w2 v0w3 v1w3
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]); // v2w0 v3w0 v2w1 v3w1
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]); // v2w2 v3w2 v2w3 v3w3
        [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ]
    }
}
