//! Gated activations of the feed-forward block, `out = act(gate) * up` over whole rows.
//!
//! Both activations are written as `x * sigmoid(z)`: SiLU with `z = x`, GELU-tanh with
//! `z = 2·sqrt(2/π)·(x + 0.044715·x³)`, since `0.5·(1 + tanh(y)) = sigmoid(2y)`. That costs
//! one exp and one division per element and, unlike the tanh form, keeps its digits where
//! `tanh(y) → -1` (in f32, `1 + tanh(y)` has no correct digit left below x ≈ -4.5; the
//! sigmoid form stays within a few ulp of the true value there).
//!
//! exp is [`super::exp`]'s. The AVX2+FMA path is chosen at run time (and honours
//! `OWL_KERNELS=scalar`); it agrees with the portable one to a few ulp, and both with the
//! float64 truth (see the tests for the measured bounds).

use std::f32::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

use crate::ops::exp::{exp_poly, madd, EXP_MAX};
use crate::parallel::{DisjointSlice, PARALLEL_FLOATS};
use crate::ThreadPool;

/// The activation applied to the gate projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU: llama, mistral, qwen, phi3).
    Silu,
    /// GELU with the tanh approximation (GeGLU: gemma*, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// `2·sqrt(2/π)`: GELU-tanh's `z = x·(GELU_Z1 + GELU_Z3·x²)`.
const GELU_Z1: f32 = 2.0 * FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
/// `2·sqrt(2/π)·0.044715`.
const GELU_Z3: f32 = GELU_Z1 * 0.044715;

impl Activation {
    /// Parses the Hugging Face `hidden_act` / `hidden_activation` names.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu_tanh" => Some(Activation::GeluTanh),
            _ => None,
        }
    }

    /// The activation of one value (the portable path's arithmetic).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => silu(x),
            Activation::GeluTanh => gelu_tanh(x),
        }
    }

    /// `out[i] = act(gate[i]) * up[i]` over the common length of the three slices.
    pub fn glu(self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = gate.len().min(up.len()).min(out.len());
        #[cfg(target_arch = "x86_64")]
        if super::float_simd_available() {
            // SAFETY: AVX2 and FMA are present (checked just above); the three pointers are
            // valid for `n` elements and `out` is a distinct exclusive borrow.
            unsafe { avx2::glu(self, gate.as_ptr(), up.as_ptr(), out.as_mut_ptr(), n) };
            return;
        }
        match self {
            Activation::Silu => glu_portable(silu, &gate[..n], &up[..n], &mut out[..n]),
            Activation::GeluTanh => glu_portable(gelu_tanh, &gate[..n], &up[..n], &mut out[..n]),
        }
    }

    /// `gate[i] = act(gate[i]) * up[i]` in place, over the common length.
    pub fn glu_in_place(self, gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        #[cfg(target_arch = "x86_64")]
        if super::float_simd_available() {
            // One raw pointer for both roles: a shared reborrow taken before the mutable one
            // would be invalidated by it (Stacked/Tree Borrows).
            let p = gate.as_mut_ptr();
            // SAFETY: AVX2 and FMA are present; `avx2::glu` reads element i of `gate` before
            // it writes element i of the output, so the output may be the gate itself.
            unsafe { avx2::glu(self, p.cast_const(), up.as_ptr(), p, n) };
            return;
        }
        let f = match self {
            Activation::Silu => silu,
            Activation::GeluTanh => gelu_tanh,
        };
        for (g, &u) in gate[..n].iter_mut().zip(&up[..n]) {
            *g = f(*g) * u;
        }
    }

    /// [`glu_in_place`](Self::glu_in_place) over a batch of rows of `width` floats, split
    /// over `pool` by rows from [`PARALLEL_FLOATS`] floats up (every element's bits are the
    /// same either way).
    pub fn glu_in_place_split(self, pool: &ThreadPool, gate: &mut [f32], up: &[f32], width: usize) {
        let n = gate.len().min(up.len());
        if n < PARALLEL_FLOATS || pool.n_threads() < 2 || width == 0 {
            self.glu_in_place(gate, up);
            return;
        }
        let rows = n / width;
        let (whole, tail) = gate[..n].split_at_mut(rows * width);
        let whole = DisjointSlice::new(whole);
        pool.parallel_for(rows, (PARALLEL_FLOATS / width).max(1), &|_, r| {
            let r = r.start * width..r.end * width;
            // SAFETY: each range of rows is claimed by one thread.
            self.glu_in_place(unsafe { whole.range(r.clone()) }, &up[r]);
        });
        // A partial row (callers pass whole rows; this keeps the serial path's coverage).
        self.glu_in_place(tail, &up[rows * width..n]);
    }

    /// Fused gate/up rows (Phi-3's `gate_up_proj`, llama.cpp's fused `ffn_up`): `rows` holds
    /// `n` rows of `[gate | up]`, `2 * width` floats each; the products are compacted into
    /// its first `n * width` floats. Token t's result goes to `[t*w, (t+1)*w)`: token 0's is
    /// its own gate (in place), every later token's lies below its own `[gate | up]` at
    /// `2*t*w` and past every earlier token's result. Serial: a later token's result
    /// overwrites an earlier token's `up`.
    pub fn glu_fused_rows(self, rows: &mut [f32], n: usize, width: usize) {
        for t in 0..n {
            if t == 0 {
                let (g, u) = rows.split_at_mut(width);
                self.glu_in_place(g, &u[..width]);
            } else {
                let (done, src) = rows.split_at_mut(2 * t * width);
                let (g, u) = src[..2 * width].split_at(width);
                self.glu(g, u, &mut done[t * width..(t + 1) * width]);
            }
        }
    }
}

#[inline(always)]
fn glu_portable(f: fn(f32) -> f32, gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = f(g) * u;
    }
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x_sigmoid(x, x)
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    x_sigmoid(x, x * madd(GELU_Z3, x * x, GELU_Z1))
}

/// `x * sigmoid(z) = x / (1 + e^-z)`. Where e^-z is past exp's clamp the denominator is
/// taken as infinite, so the result is ±0 (the true value is below |x|·6e-39) instead of
/// x / 1.65e38.
#[inline(always)]
fn x_sigmoid(x: f32, z: f32) -> f32 {
    let d = if -z > EXP_MAX { f32::INFINITY } else { 1.0 + exp_poly(-z) };
    x / d
}

/// The same arithmetic 8 lanes wide with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Activation, GELU_Z1, GELU_Z3};
    use crate::ops::exp::avx2::exp;
    use crate::ops::exp::EXP_MAX;

    /// `x * sigmoid(z)` of 8 lanes, as [`super::x_sigmoid`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn x_sigmoid(x: __m256, z: __m256) -> __m256 {
        let minus_z = _mm256_sub_ps(_mm256_setzero_ps(), z);
        let d = _mm256_add_ps(_mm256_set1_ps(1.0), exp(minus_z));
        let past = _mm256_cmp_ps::<_CMP_GT_OQ>(minus_z, _mm256_set1_ps(EXP_MAX));
        _mm256_div_ps(x, _mm256_blendv_ps(d, _mm256_set1_ps(f32::INFINITY), past))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn act8(act: Activation, x: __m256) -> __m256 {
        match act {
            Activation::Silu => x_sigmoid(x, x),
            Activation::GeluTanh => {
                let z = _mm256_fmadd_ps(_mm256_set1_ps(GELU_Z3), _mm256_mul_ps(x, x), _mm256_set1_ps(GELU_Z1));
                x_sigmoid(x, _mm256_mul_ps(x, z))
            }
        }
    }

    /// `out[i] = act(gate[i]) * up[i]` for `i < n`. Element i of `gate` is read before
    /// element i of `out` is written, so `out` may equal `gate` (in place).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `gate` and `up` must be readable and `out`
    /// writable for `n` floats; `out` must not overlap `up`, nor `gate` other than exactly.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn glu(act: Activation, gate: *const f32, up: *const f32, out: *mut f32, n: usize) {
        let done = if crate::ops::avx512_float_available() {
            // SAFETY: AVX-512 F is present (checked); the buffers are the caller's.
            unsafe { super::avx512::glu(act, gate, up, out, n) }
        } else {
            0
        };
        // SAFETY: the rest of the same buffers.
        unsafe { glu_avx2(act, gate.add(done), up.add(done), out.add(done), n - done) }
    }

    /// [`glu`] without the AVX-512 part (the reference that part is tested against).
    ///
    /// # Safety
    /// As [`glu`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn glu_avx2(act: Activation, gate: *const f32, up: *const f32, out: *mut f32, n: usize) {
        // One loop per activation, so the choice is made once per call.
        // SAFETY: the caller's contract is glu_with's.
        unsafe {
            match act {
                Activation::Silu => glu_with(Activation::Silu, gate, up, out, n),
                Activation::GeluTanh => glu_with(Activation::GeluTanh, gate, up, out, n),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn glu_with(act: Activation, gate: *const f32, up: *const f32, out: *mut f32, n: usize) {
        // SAFETY (whole body): every access is at an index below n (the caller's contract).
        unsafe {
            let mut i = 0;
            while i + 16 <= n {
                let a = act8(act, _mm256_loadu_ps(gate.add(i)));
                let b = act8(act, _mm256_loadu_ps(gate.add(i + 8)));
                _mm256_storeu_ps(out.add(i), _mm256_mul_ps(a, _mm256_loadu_ps(up.add(i))));
                _mm256_storeu_ps(out.add(i + 8), _mm256_mul_ps(b, _mm256_loadu_ps(up.add(i + 8))));
                i += 16;
            }
            if i < n {
                // The tail through an 8-lane buffer: the same arithmetic for every element.
                let (mut g, mut u) = ([0.0f32; 8], [0.0f32; 8]);
                let rest = n - i;
                for k in 0..rest.min(8) {
                    g[k] = *gate.add(i + k);
                    u[k] = *up.add(i + k);
                }
                let mut o = [0.0f32; 8];
                _mm256_storeu_ps(
                    o.as_mut_ptr(),
                    _mm256_mul_ps(act8(act, _mm256_loadu_ps(g.as_ptr())), _mm256_loadu_ps(u.as_ptr())),
                );
                for (k, &v) in o.iter().enumerate().take(rest.min(8)) {
                    *out.add(i + k) = v;
                }
                if rest > 8 {
                    glu_with(act, gate.add(i + 8), up.add(i + 8), out.add(i + 8), rest - 8);
                }
            }
        }
    }
}

/// The 16-lane part of the AVX2 body, with AVX-512 F: each lane computes what the AVX2
/// body's lane computes (same operations, element by element), so the bits are the same.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Activation, GELU_Z1, GELU_Z3};
    use crate::ops::exp::avx512::exp;
    use crate::ops::exp::EXP_MAX;

    /// `x * sigmoid(z)` of 16 lanes, as the AVX2 body's.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn x_sigmoid(x: __m512, z: __m512) -> __m512 {
        let minus_z = _mm512_sub_ps(_mm512_setzero_ps(), z);
        let d = _mm512_add_ps(_mm512_set1_ps(1.0), exp(minus_z));
        let past = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(minus_z, _mm512_set1_ps(EXP_MAX));
        _mm512_div_ps(x, _mm512_mask_blend_ps(past, d, _mm512_set1_ps(f32::INFINITY)))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn act16(act: Activation, x: __m512) -> __m512 {
        match act {
            Activation::Silu => x_sigmoid(x, x),
            Activation::GeluTanh => {
                let z = _mm512_fmadd_ps(_mm512_set1_ps(GELU_Z3), _mm512_mul_ps(x, x), _mm512_set1_ps(GELU_Z1));
                x_sigmoid(x, _mm512_mul_ps(x, z))
            }
        }
    }

    /// `out[i] = act(gate[i]) * up[i]` for the whole 16-lane chunks of `n`; returns how many
    /// elements it did (the caller finishes the rest). In place allowed, as the AVX2 body.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; otherwise the AVX2 body's contract.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn glu(act: Activation, gate: *const f32, up: *const f32, out: *mut f32, n: usize) -> usize {
        // SAFETY: the caller's contract is glu_with's.
        unsafe {
            match act {
                Activation::Silu => glu_with(Activation::Silu, gate, up, out, n),
                Activation::GeluTanh => glu_with(Activation::GeluTanh, gate, up, out, n),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn glu_with(act: Activation, gate: *const f32, up: *const f32, out: *mut f32, n: usize) -> usize {
        let mut i = 0;
        // SAFETY: i + 16 <= n for every access.
        unsafe {
            while i + 16 <= n {
                let a = act16(act, _mm512_loadu_ps(gate.add(i)));
                _mm512_storeu_ps(out.add(i), _mm512_mul_ps(a, _mm512_loadu_ps(up.add(i))));
                i += 16;
            }
        }
        i
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn silu_f64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    /// `0.5·x·(1 + tanh(y))` as `x·sigmoid(2y)`: the same function, without the f64
    /// cancellation of `1 + tanh(y)` for x < ~-7.
    fn gelu_f64(x: f64) -> f64 {
        let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        x / (1.0 + (-2.0 * y).exp())
    }

    /// torch's own f32 formulas (`gelu(approximate="tanh")`, `silu`), with libm.
    fn torch_f32(act: Activation, x: f32) -> f32 {
        match act {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::GeluTanh => {
                let k = FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
        }
    }

    /// A dense sweep over [-30, 30] plus the edges: ±0, tiny, huge, saturated.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..=600_000).map(|i| -30.0 + i as f32 * 1e-4).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 50.0, -50.0, 100.0, -100.0, 1e4, -1e4, 1e30, -1e30]);
        xs
    }

    #[test]
    fn known_values() {
        assert!((Activation::Silu.apply(1.0) - 0.731_058_6).abs() < 1e-6);
        // torch.nn.functional.gelu(torch.tensor(1.0), approximate="tanh") = 0.8411920
        assert!((Activation::GeluTanh.apply(1.0) - 0.841_192).abs() < 1e-6);
        assert!((Activation::GeluTanh.apply(-3.0) - (-0.003_637_4)).abs() < 1e-6);
        for act in [Activation::Silu, Activation::GeluTanh] {
            assert_eq!(act.apply(0.0), 0.0);
            assert!(act.apply(-0.0).is_sign_negative());
            assert_eq!(act.apply(1e30), 1e30);
            assert_eq!(act.apply(-1e30), -0.0);
        }
    }

    /// Both paths against float64 on the sweep, and against torch's f32 formula.
    ///
    /// The error bound vs float64 is relative, scaled by `max(1, |z|)`: e^-z amplifies the
    /// half-ulp rounding of z itself into a relative error of |z|·2^-24 (GELU's z reaches
    /// ~|x|³/14), which no f32 evaluation avoids. Against torch's f32 formula the bound is
    /// absolute + relative, `|Δ| <= tol·(1 + |t|)`: torch's tanh form has an absolute error of
    /// ~1e-7·|x| for negative x, where it cancels.
    #[test]
    fn glu_paths_match_float64_and_torch_formula() {
        let xs = sweep();
        let up: Vec<f32> = xs.iter().enumerate().map(|(i, _)| if i % 3 == 0 { -1.5 } else { 1.0 }).collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            type F64Fn = fn(f64) -> f64;
            let (truth, z): (F64Fn, F64Fn) = match act {
                Activation::Silu => (silu_f64, |x| x),
                Activation::GeluTanh => (gelu_f64, |x| x * 1.595_769_121_605_731 * (1.0 + 0.044715 * x * x)),
            };
            let mut portable = vec![0.0; xs.len()];
            glu_portable(if act == Activation::Silu { silu } else { gelu_tanh }, &xs, &up, &mut portable);
            let mut dispatched = vec![0.0; xs.len()];
            act.glu(&xs, &up, &mut dispatched);
            let mut in_place = xs.clone();
            act.glu_in_place(&mut in_place, &up);
            assert_eq!(in_place, dispatched);
            for (name, got) in [("portable", &portable), ("dispatched", &dispatched)] {
                let (mut rel, mut vs_torch) = (0.0f64, 0.0f64);
                for ((&x, &u), &g) in xs.iter().zip(&up).zip(got.iter()) {
                    let want = truth(x as f64) * u as f64;
                    // Below 1e-30 (x·e^z past exp's clamp) results may be flushed to ±0.
                    if want.abs() > 1e-30 {
                        let scale = z(x as f64).abs().max(1.0);
                        rel = rel.max((g as f64 - want).abs() / want.abs() / scale);
                    } else {
                        assert!((g as f64 - want).abs() < 1e-30, "{act:?} {name} at {x}: {g} vs {want}");
                    }
                    let t = torch_f32(act, x) * u;
                    if t.is_finite() {
                        vs_torch = vs_torch.max((g - t).abs() as f64 / (1.0 + t.abs() as f64));
                    }
                    assert_eq!(
                        g.is_sign_negative(),
                        x.is_sign_negative() != u.is_sign_negative(),
                        "{act:?} {name} at {x}"
                    );
                }
                println!("{act:?} {name}: relative error / max(1, |z|) vs f64 <= {rel:.2e}, |Δ|/(1+|t|) vs torch f32 <= {vs_torch:.2e}");
                assert!(rel < 4e-7, "{act:?} {name}: relative error {rel:.3e}");
                assert!(vs_torch < 5e-7, "{act:?} {name}: {vs_torch:.3e} from torch's f32 formula");
            }
            // The SIMD path against the portable one, element by element (the same |z|
            // scaling: the portable path rounds z without FMA on x86).
            let mut worst = 0.0f64;
            for ((&x, &p), &d) in xs.iter().zip(&portable).zip(&dispatched) {
                if p.abs() > 1e-30 {
                    worst = worst.max(((p - d).abs() / p.abs()) as f64 / z(x as f64).abs().max(1.0));
                } else {
                    assert!(d.abs() < 1e-30, "{act:?} at {x}: SIMD {d} vs portable {p}");
                }
            }
            println!("{act:?}: dispatched vs portable, relative / max(1, |z|) <= {worst:.2e}");
            assert!(worst < 5e-7, "{act:?}: SIMD vs portable {worst:.3e}");
        }
    }

    /// The AVX-512 part gives the AVX2 body's bits: the sweep, and every length 0–70 in
    /// place and not (runs where the CPU has AVX-512 F; elsewhere says it was skipped).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_part_gives_the_avx2_bits() {
        if !crate::ops::avx512_float_available() {
            println!("skipped: this CPU lacks avx512f (or OWL_AVX512=0 / OWL_KERNELS=scalar)");
            return;
        }
        let xs = sweep();
        let up: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            for n in (0..=70).chain([xs.len()]) {
                let mut want = vec![0.0; n];
                // SAFETY: AVX2 and FMA are present (AVX-512 F implies this test's host has
                // them: `avx512_float_available` requires them); the buffers hold n floats.
                unsafe { avx2::glu_avx2(act, xs.as_ptr(), up.as_ptr(), want.as_mut_ptr(), n) };
                let mut got = vec![0.0; n];
                act.glu(&xs[..n], &up[..n], &mut got);
                let mut in_place = xs[..n].to_vec();
                act.glu_in_place(&mut in_place, &up[..n]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{act:?} n {n}");
                assert_eq!(bits(&in_place), bits(&want), "{act:?} n {n} in place");
            }
        }
    }

    /// A batch split over the pool gives the serial bits, a partial last row included.
    #[test]
    fn glu_split_over_the_pool_gives_the_serial_bits() {
        let pool = ThreadPool::new(3);
        let width = 1000;
        let n = 2 * PARALLEL_FLOATS + 3 * width + 17;
        let gate: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2001) as f32 / 1000.0 - 1.0) * 6.0).collect();
        let up: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32 * 0.5).collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            let mut serial = gate.clone();
            act.glu_in_place(&mut serial, &up);
            let mut split = gate.clone();
            act.glu_in_place_split(&pool, &mut split, &up, width);
            assert_eq!(split, serial, "{act:?}");
        }
    }

    /// Every length from 0 to 40 (the 16-wide loop, the 8-lane tail, the scalar remainder),
    /// against the per-element function.
    #[test]
    fn every_length_and_offset_is_covered() {
        let xs: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let up: Vec<f32> = (0..41).map(|i| 1.0 + i as f32 * 0.01).collect();
        for act in [Activation::Silu, Activation::GeluTanh] {
            for n in 0..=40 {
                let mut out = [f32::NAN; 41];
                act.glu(&xs[1..1 + n], &up[..n], &mut out[..n]);
                for i in 0..n {
                    let want = act.apply(xs[1 + i]) * up[i];
                    assert!((out[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "{act:?} n {n} i {i}");
                }
                assert!(out[n].is_nan(), "wrote past the end");
            }
        }
    }
}
