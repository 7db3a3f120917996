//! AVX-512 VNNI building blocks for the decode kernels over 8-row interleaved groups
//! ([`crate::quant::interleave`]): `quant::<format>::avx512_x8`.
//!
//! An x8 group-block keeps 4 bytes of each of its 8 rows per 32-byte chunk, so the AVX2
//! kernels hold one row per 32-bit lane and spend an `maddubs` + `madd` (or an i16 sum and a
//! widening) per chunk. Here two consecutive chunks `c`, `c + 1` fill one 512-bit register
//! (lanes 0–7 and 8–15, both rows 0–7), the activation words `c` and `c + 1` are paired the
//! same way ([`word_pairs`]: one permute each), and `vpdpbusd` adds each row's 4 byte
//! products straight into its i32 lane. At the end of a block the two halves add
//! ([`fold_halves`]) to the row's exact integer block sum, and the rest is the AVX2 kernel's
//! float code on 8 lanes. One linear stream per group, as in AVX2 (a variant with two
//! groups side by side, 16 rows a register, was as fast hot but streamed from DRAM up to
//! 20 % slower: two streams a thread).
//!
//! Every kernel built on this module gives, for each row, exactly the bits of its format's
//! AVX2 `dot_x8`: the integer block sums are exact in both, and the float operations per
//! lane are the same ones in the same order. So the two kernel sets mix freely (the
//! multi-token decode kernels stay AVX2), and the tests compare bits.
//!
//! Measured (kernel_bench, one thread, weights in cache, Zen 5): Q4_0 38–41 → 70–76 GB/s,
//! Q4_1 60–63 → 85–88, Q5_0 39–40 → 68–72, Q8_0 73–76 → 119–130, Q4_K 54 → 79–81 (see
//! docs/PERFORMANCE.md for the streamed and in-model figures).

// Register-only intrinsics are safe inside `#[target_feature]` functions from Rust 1.87 on,
// which makes some of the `unsafe` blocks below redundant there: see `simd_x86`.
#![allow(unused_unsafe)]

use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether the CPU has what these kernels need (AVX-512 F/BW/VNNI beside AVX2, FMA and
/// F16C), and `OWL_AVX512` leaves AVX-512 on. Read once.
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| available() && crate::ops::avx512_allowed())
}

/// Whether the CPU has what these kernels need, whatever `OWL_AVX512` says (tests).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The 8 activation words (4 bytes each) of a 32-byte block `y`, paired for the register
/// that holds chunks `c` and `c + 1` of a group-block: `[w0 ×8 | w1 ×8]`, `[w2 | w3]`,
/// `[w4 | w5]`, `[w6 | w7]`.
///
/// # Safety
/// AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn word_pairs(y: __m256i) -> [__m512i; 4] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let y = _mm512_castsi256_si512(y);
        let idx = |w: i32| _mm512_inserti64x4::<1>(_mm512_set1_epi32(w), _mm256_set1_epi32(w + 1));
        [
            _mm512_permutexvar_epi32(idx(0), y),
            _mm512_permutexvar_epi32(idx(2), y),
            _mm512_permutexvar_epi32(idx(4), y),
            _mm512_permutexvar_epi32(idx(6), y),
        ]
    }
}

/// `Σq·a` of one 32-element block, per row in the lanes of both halves: `q` the unsigned
/// quants of chunks 0–1 and 2–3, low and high (`[lo01, hi01, lo23, hi23]`); the low ones
/// meet activation words 0..4, the high ones words 4..8 (`words` from [`word_pairs`]).
///
/// # Safety
/// AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn quant_dot(q: [__m512i; 4], words: &[__m512i; 4]) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], words[0]);
        let s = _mm512_dpbusd_epi32(s, q[1], words[2]);
        let s = _mm512_dpbusd_epi32(s, q[2], words[1]);
        _mm512_dpbusd_epi32(s, q[3], words[3])
    }
}

/// [`quant_dot`] of 4-bit quants as stored: `v01`, `v23` the bytes of chunks 0–1 and 2–3,
/// split into their low and high nibbles.
///
/// # Safety
/// AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn nibble_dot(v01: __m512i, v23: __m512i, words: &[__m512i; 4]) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe {
        let low4 = _mm512_set1_epi8(0x0F);
        let hi = |v: __m512i| _mm512_and_si512(_mm512_srli_epi16::<4>(v), low4);
        quant_dot([_mm512_and_si512(v01, low4), hi(v01), _mm512_and_si512(v23, low4), hi(v23)], words)
    }
}

/// `c·Σa` of one block (`c` taken as an unsigned byte: −128 is 128), spread over the lanes
/// as [`quant_dot`] spreads its sum: the offset of a format whose quants are stored `+c`.
///
/// # Safety
/// AVX-512 F/BW/VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn constant_dot(c: i8, words: &[__m512i; 4]) -> __m512i {
    // SAFETY: register-only intrinsics.
    unsafe { quant_dot([_mm512_set1_epi8(c); 4], words) }
}

/// The two 256-bit halves of `v` added: one group's 8 lanes (each half holds partial sums of
/// the same 8 rows). Exact in i32.
///
/// # Safety
/// AVX-512 F.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn fold_halves(v: __m512i) -> __m256i {
    // SAFETY: register-only intrinsics.
    unsafe { _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

/// Test support: a kernel against its format's AVX2 kernel, bit for bit.
#[cfg(test)]
pub(crate) mod testing {
    use crate::quant::interleave::interleave_matrix;
    use crate::quant::{quantize_row, test_rows, test_values, BlockFormat};

    /// A one-group kernel as the tests call it.
    pub(crate) type GroupKernel<A> = unsafe fn(&[u8], &[A]) -> [f32; 8];

    /// True when the AVX-512 kernel tests can run here; otherwise prints why they were skipped.
    pub(crate) fn can_run(test: &str) -> bool {
        let ok = super::available();
        if !ok {
            eprintln!("{test}: skipped, the CPU lacks AVX-512 F/BW/VNNI (x8_avx512::available)");
        }
        ok
    }

    /// 8 row-major rows of `nb` blocks of `format` (`w`) as one interleaved group.
    pub(crate) fn group_of(format: BlockFormat, w: &[u8], nb: usize) -> Vec<u8> {
        let mut group = vec![0u8; w.len()];
        interleave_matrix(format, 8, nb * format.block_elems(), w, &mut group).expect("interleave");
        group
    }

    /// One group of 8 quantized rows of `nb` blocks of `format` (interleaved) and a quantized
    /// activation row in its companion format, from the test value generator. `rows`: the
    /// row-major weight bytes to use instead (8 rows: fixture blocks).
    pub(crate) fn case(format: BlockFormat, nb: usize, seed: u64, rows: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
        let cols = nb * format.block_elems();
        let w = match rows {
            Some(r) => r.to_vec(),
            None => test_rows(format, &test_values(8 * cols, seed, 0.1, 1.5), 8, cols).0,
        };
        let group = group_of(format, &w, nb);
        let act_format = format.vec_dot_format();
        let x = test_values(cols, seed + 1000, -0.05, 2.0);
        let mut act = vec![0u8; act_format.row_bytes(cols).expect("whole blocks")];
        quantize_row(act_format, &x, &mut act).expect("quantize");
        (group, act)
    }

    /// [`case`] for several block counts and seeds, then the fixture blocks of `fixtures`
    /// (`quants/<name>`, 8 rows of as many whole blocks as they hold): `avx512` against
    /// `avx2` on each.
    pub(crate) fn check_format<A: bytemuck::Pod>(
        format: BlockFormat,
        fixtures: &[&str],
        avx512: GroupKernel<A>,
        avx2: GroupKernel<A>,
    ) {
        for (nb, seed) in [(1, 31), (2, 37), (5, 41), (18, 43), (48, 47)] {
            let (g, a) = case(format, nb, seed, None);
            assert_same_bits(&g, bytemuck::cast_slice(&a), avx512, avx2, &format!("{format:?} nb {nb}"));
        }
        for name in fixtures {
            let bytes = std::fs::read(owl_test::fixture(&format!("quants/{name}"))).expect("fixture");
            let block = format.row_bytes(format.block_elems()).expect("block bytes");
            let nb = bytes.len() / (8 * block);
            assert!(nb > 0, "{name}: fewer than 8 blocks");
            let (g, a) = case(format, nb, 59, Some(&bytes[..8 * nb * block]));
            assert_same_bits(&g, bytemuck::cast_slice(&a), avx512, avx2, name);
        }
    }

    /// `avx512(group, a)` equals `avx2(group, a)` in every bit of every row.
    pub(crate) fn assert_same_bits<A>(group: &[u8], a: &[A], avx512: GroupKernel<A>, avx2: GroupKernel<A>, what: &str) {
        // SAFETY: callers run only where `can_run` said yes (AVX-512 F/BW/VNNI, AVX2, FMA,
        // F16C).
        let (got, want) = unsafe { (avx512(group, a), avx2(group, a)) };
        let bits = |v: [f32; 8]| v.map(f32::to_bits);
        assert_eq!(bits(got), bits(want), "{what}: {got:?} vs {want:?}");
    }
}
