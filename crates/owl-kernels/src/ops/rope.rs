//! The rotation of rotary position embeddings (Su et al. 2021, RoFormer): pair `i` of a
//! head turns by the angle whose cos and sin the caller gives (owl-models' `skeleton::rope`
//! computes them for every scaling scheme).
//!
//! `x0' = x0·cos - x1·sin`, `x1' = x1·cos + x0·sin`, each product rounded, then the sum:
//! the portable and AVX2 bodies give the same bits (no FMA; `vaddsubps` subtracts in the
//! even lanes and adds in the odd ones, which is the adjacent-pair formula exactly). The
//! rotate-half pairing also runs 16 lanes wide with AVX-512 F (the same operations a lane).

use crate::parallel::{DisjointSlice, PARALLEL_FLOATS};
use crate::ThreadPool;

/// Which dimensions form a rotation pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(i, i + rot_dims/2)`: HF `rotate_half`, llama.cpp NEOX.
    RotateHalf,
    /// `(2i, 2i + 1)`: GPT-J, llama.cpp NORM.
    AdjacentPairs,
}

/// Rotates one head's first `2 * cos.len()` dims in place; the rest pass through (partial
/// rotary).
#[inline]
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let h = cos.len().min(sin.len());
    assert!(x.len() >= 2 * h, "a head of {} dims cannot rotate {} pairs", x.len(), h);
    #[cfg(target_arch = "x86_64")]
    if super::float_simd_available() {
        // SAFETY: AVX2 is present; `x` holds 2h floats (asserted), `cos` and `sin` h each.
        unsafe {
            match style {
                RopeStyle::RotateHalf => avx2::rotate_half(x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr(), h),
                RopeStyle::AdjacentPairs => avx2::rotate_pairs(x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr(), h),
            }
        }
        return;
    }
    rotate_portable(x, &cos[..h], &sin[..h], style);
}

/// [`rotate`] in plain Rust: the reference the SIMD bodies are tested against.
pub fn rotate_portable(x: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let h = cos.len().min(sin.len());
    match style {
        RopeStyle::RotateHalf => {
            let (a, b) = x[..2 * h].split_at_mut(h);
            for i in 0..h {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
        RopeStyle::AdjacentPairs => {
            for (i, pair) in x[..2 * h].chunks_exact_mut(2).enumerate() {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * cos[i] - x1 * sin[i];
                pair[1] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}

/// Rotates the heads of a batch of tokens in place. `x` holds `n` rows of `stride` floats;
/// token `t`'s heads are `x[t * stride + offset ..][..heads * head_dim]` (`heads` contiguous
/// heads, the first `2 * half` dims of each rotated), with angles `cos[t * half ..][..half]`
/// and `sin` alike (at least `n * half` each).
/// A large batch is split over `pool` by tokens (each head's bits do not depend on it).
#[allow(clippy::too_many_arguments)]
pub fn rotate_tokens(
    pool: &ThreadPool,
    x: &mut [f32],
    stride: usize,
    offset: usize,
    heads: usize,
    head_dim: usize,
    half: usize,
    cos: &[f32],
    sin: &[f32],
    style: RopeStyle,
) {
    if stride == 0 || head_dim == 0 {
        return;
    }
    let n = x.len() / stride;
    assert!(
        cos.len() >= n * half && sin.len() >= n * half && offset + heads * head_dim <= stride,
        "rotate_tokens: {n} rows of {stride} floats, heads at {offset}..{}, angles for {} / {} of {half}",
        offset + heads * head_dim,
        cos.len(),
        sin.len()
    );
    let one = |t: usize, row: &mut [f32]| {
        let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
        for head in row[offset..offset + heads * head_dim].chunks_exact_mut(head_dim) {
            rotate(head, c, s, style);
        }
    };
    if n * heads * head_dim < PARALLEL_FLOATS || pool.n_threads() < 2 {
        for (t, row) in x.chunks_exact_mut(stride).enumerate() {
            one(t, row);
        }
        return;
    }
    let rows = DisjointSlice::new(&mut x[..n * stride]);
    let per_chunk = (PARALLEL_FLOATS / 4 / (heads * head_dim)).max(1);
    pool.parallel_for(n, per_chunk, &|_, r| {
        for t in r {
            // SAFETY: each token's row is claimed by one thread.
            one(t, unsafe { rows.range(t * stride..(t + 1) * stride) });
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Rotate-half pairing `(i, i + h)` for `i < h`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` is valid for `2h` floats, `cos` and `sin` for `h`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn rotate_half(x: *mut f32, cos: *const f32, sin: *const f32, h: usize) {
        let mut i = 0;
        if crate::ops::avx512_float_available() {
            // SAFETY: AVX-512 F is present (checked above); same contract.
            i = unsafe { rotate_half_avx512(x, cos, sin, h) };
        }
        // SAFETY (whole block): every access is below `h` (cos, sin) or `2h` (x).
        unsafe {
            let b = x.add(h);
            while i + 8 <= h {
                let (x0, x1) = (_mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(b.add(i)));
                let (c, s) = (_mm256_loadu_ps(cos.add(i)), _mm256_loadu_ps(sin.add(i)));
                _mm256_storeu_ps(x.add(i), _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
                _mm256_storeu_ps(b.add(i), _mm256_add_ps(_mm256_mul_ps(x1, c), _mm256_mul_ps(x0, s)));
                i += 8;
            }
            while i < h {
                let (x0, x1, c, s) = (*x.add(i), *b.add(i), *cos.add(i), *sin.add(i));
                *x.add(i) = x0 * c - x1 * s;
                *b.add(i) = x1 * c + x0 * s;
                i += 1;
            }
        }
    }

    /// The 16-lane part of [`rotate_half`] (the same operations a lane); returns how many
    /// pairs it did.
    ///
    /// # Safety
    /// As [`rotate_half`], and the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    unsafe fn rotate_half_avx512(x: *mut f32, cos: *const f32, sin: *const f32, h: usize) -> usize {
        let mut i = 0;
        // SAFETY (whole block): every access is below `h` (cos, sin) or `2h` (x).
        unsafe {
            let b = x.add(h);
            while i + 16 <= h {
                let (x0, x1) = (_mm512_loadu_ps(x.add(i)), _mm512_loadu_ps(b.add(i)));
                let (c, s) = (_mm512_loadu_ps(cos.add(i)), _mm512_loadu_ps(sin.add(i)));
                _mm512_storeu_ps(x.add(i), _mm512_sub_ps(_mm512_mul_ps(x0, c), _mm512_mul_ps(x1, s)));
                _mm512_storeu_ps(b.add(i), _mm512_add_ps(_mm512_mul_ps(x1, c), _mm512_mul_ps(x0, s)));
                i += 16;
            }
        }
        i
    }

    /// Adjacent pairing `(2i, 2i + 1)` for `i < h`: 4 pairs a register, the angles of pair
    /// `i` duplicated into lanes `2i` and `2i + 1`.
    ///
    /// # Safety
    /// As [`rotate_half`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn rotate_pairs(x: *mut f32, cos: *const f32, sin: *const f32, h: usize) {
        let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
        let mut i = 0;
        // SAFETY (whole block): every access is below `h` (cos, sin) or `2h` (x).
        unsafe {
            while i + 4 <= h {
                let v = _mm256_loadu_ps(x.add(2 * i));
                let c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos.add(i))), dup);
                let s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin.add(i))), dup);
                // [x1, x0] in each pair.
                let swapped = _mm256_permute_ps::<0b1011_0001>(v);
                // Even lanes x0·c - x1·s, odd lanes x1·c + x0·s.
                _mm256_storeu_ps(x.add(2 * i), _mm256_addsub_ps(_mm256_mul_ps(v, c), _mm256_mul_ps(swapped, s)));
                i += 4;
            }
            while i < h {
                let (x0, x1, c, s) = (*x.add(2 * i), *x.add(2 * i + 1), *cos.add(i), *sin.add(i));
                *x.add(2 * i) = x0 * c - x1 * s;
                *x.add(2 * i + 1) = x1 * c + x0 * s;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((((i as u32) ^ seed).wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0 - 1.0) * 2.0).collect()
    }

    #[test]
    fn rotation_matches_the_definition() {
        let (c, s) = ((0.3f64).cos() as f32, (0.3f64).sin() as f32);
        let mut half = [1.0, 2.0, 3.0, 4.0];
        rotate(&mut half, &[c, 1.0], &[s, 0.0], RopeStyle::RotateHalf);
        assert!((half[0] - (c - 3.0 * s)).abs() < 1e-6 && (half[2] - (3.0 * c + s)).abs() < 1e-6);
        assert_eq!((half[1], half[3]), (2.0, 4.0));
        let mut pairs = [1.0, 3.0, 2.0, 4.0, 9.0];
        rotate(&mut pairs, &[c, 1.0], &[s, 0.0], RopeStyle::AdjacentPairs);
        assert!((pairs[0] - (c - 3.0 * s)).abs() < 1e-6 && (pairs[1] - (3.0 * c + s)).abs() < 1e-6);
        assert_eq!(&pairs[2..], &[2.0, 4.0, 9.0]);
    }

    /// The dispatched bodies give the portable bits for every pair count from 0 to 40 and
    /// the model head sizes, with partial rotary dims left alone.
    #[test]
    fn simd_bodies_give_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if !crate::ops::avx512_float_available() {
            println!("AVX-512 part skipped: this CPU lacks avx512f (or OWL_AVX512=0 / OWL_KERNELS=scalar)");
        }
        for style in [RopeStyle::RotateHalf, RopeStyle::AdjacentPairs] {
            for h in (0..=70).chain([32, 64, 128]) {
                let (c, s) = (values(h + 1, 1), values(h + 3, 2));
                let x = values(2 * h + 6, 3);
                // Odd offsets into every slice.
                let (c, s) = (&c[1..], &s[3..]);
                let (mut got, mut want) = (x.clone(), x.clone());
                rotate(&mut got[1..], c, s, style);
                rotate_portable(&mut want[1..], c, s, style);
                assert_eq!(got, want, "{style:?} h {h}");
                assert_eq!(&got[2 * h + 1..], &x[2 * h + 1..], "{style:?} h {h}: past the rotary dims");
                assert_eq!(got[0], x[0], "{style:?} h {h}: before the head");
            }
        }
    }

    /// A batch split over the pool gives each head the bits of rotating it alone; rows keep
    /// the parts outside `offset..offset + heads * head_dim`.
    #[test]
    fn token_batches_give_the_head_bits() {
        let pool = ThreadPool::new(3);
        let (heads, hd, half, stride, offset) = (4, 64, 16, 4 * 64 + 10, 7);
        let n = PARALLEL_FLOATS / (heads * hd) + 9;
        let (cos, sin) = (values(n * half, 4), values(n * half, 5));
        for style in [RopeStyle::RotateHalf, RopeStyle::AdjacentPairs] {
            let x = values(n * stride, 6);
            let mut got = x.clone();
            rotate_tokens(&pool, &mut got, stride, offset, heads, hd, half, &cos, &sin, style);
            let mut want = x.clone();
            for t in 0..n {
                for h in 0..heads {
                    let at = t * stride + offset + h * hd;
                    rotate_portable(&mut want[at..at + hd], &cos[t * half..][..half], &sin[t * half..][..half], style);
                }
            }
            assert_eq!(got, want, "{style:?}");
        }
    }
}
