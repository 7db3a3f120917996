//! The backward of every op of a decoder layer, in float32, beside the forward it inverts
//! (each checked against finite differences below). Row-major `[tokens][width]` buffers.

use owl_kernels::ops::activation::Activation;
use owl_kernels::ops::ActivationPrecision;
use owl_kernels::parallel::DisjointSlice;
use owl_kernels::ThreadPool;
use owl_models::lora::dot;
use owl_models::skeleton::norm::inv_rms;
use owl_models::skeleton::rope::{rotate, Rope};
use owl_models::weights::Weight;

use crate::error::TrainError;

/// RMSNorm of each `w.len()`-wide row: `y = x · r · w` with `r = 1/sqrt(mean(x²) + eps)`,
/// computed as owl-models' forward computes it (`inv_rms`); `inv` receives each row's `r`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32], inv: &mut [f32]) {
    let d = w.len();
    for ((xr, yr), r) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(inv.iter_mut()) {
        *r = inv_rms(xr, eps);
        for ((yv, &xv), &wv) in yr.iter_mut().zip(xr).zip(w) {
            *yv = xv * *r * wv;
        }
    }
}

/// `dx += ∂/∂x` of [`rms_norm`]: `r·w⊙dy − x·r³·mean(x⊙w⊙dy)`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], inv: &[f32], dy: &[f32], dx: &mut [f32]) {
    let d = w.len();
    for (((xr, dyr), dxr), &r) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(inv) {
        let dot = xr.iter().zip(dyr).zip(w).map(|((x, g), w)| x * g * w).sum::<f32>() / d as f32;
        let r3 = r * r * r;
        for (((dxv, &xv), &g), &wv) in dxr.iter_mut().zip(xr).zip(dyr).zip(w) {
            *dxv += r * wv * g - xv * r3 * dot;
        }
    }
}

/// Rotates every head of every token (`[tokens][heads · head_dim]`) by its position's RoPE
/// angles for a sequence of `seq_len` positions; `inverse` rotates back (the backward of
/// a rotation is its transpose).
pub fn rope(x: &mut [f32], rope: &Rope, positions: &[usize], seq_len: usize, head_dim: usize, inverse: bool) {
    let half = rope.rot_dims() / 2;
    let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
    let width = x.len() / positions.len().max(1);
    for (row, &p) in x.chunks_exact_mut(width).zip(positions) {
        rope.fill(p, seq_len, &mut cos, &mut sin);
        if inverse {
            sin.iter_mut().for_each(|s| *s = -*s);
        }
        for head in row.chunks_exact_mut(head_dim) {
            rotate(head, &cos, &sin, rope.style());
        }
    }
}

/// Shapes of one causal attention over a whole sequence.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Causal softmax attention with grouped KV heads. `q` is `[T][H·d]`, `k`, `v` `[T][G·d]`;
/// writes `out` `[T][H·d]` and the probabilities `probs` `[H][T][T]` (kept for backward).
/// Heads run on the pool's threads; each head's arithmetic is the same on any thread.
pub fn attention(pool: &ThreadPool, s: AttnShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], probs: &mut [f32]) {
    let (t_n, d) = (s.tokens, s.head_dim);
    let (qw, kw, rep) = (s.heads * d, s.kv_heads * d, s.heads / s.kv_heads);
    out.iter_mut().for_each(|o| *o = 0.0);
    let (out, probs) = (DisjointSlice::new(out), DisjointSlice::new(probs));
    pool.parallel_for(s.heads, 1, &|_, heads| {
        for h in heads {
            let g = h / rep;
            for i in 0..t_n {
                let qi = &q[i * qw + h * d..i * qw + (h + 1) * d];
                // SAFETY: head `h`'s probabilities and output columns are written by the one
                // thread that claimed `h`.
                let p = unsafe { probs.range((h * t_n + i) * t_n..(h * t_n + i + 1) * t_n) };
                let mut max = f32::NEG_INFINITY;
                for j in 0..=i {
                    let kj = &k[j * kw + g * d..j * kw + (g + 1) * d];
                    p[j] = s.scale * dot(qi, kj);
                    max = max.max(p[j]);
                }
                let mut sum = 0.0;
                for pj in &mut p[..=i] {
                    *pj = (*pj - max).exp();
                    sum += *pj;
                }
                p[..=i].iter_mut().for_each(|pj| *pj /= sum);
                p[i + 1..].iter_mut().for_each(|pj| *pj = 0.0);
                // SAFETY: as above.
                let oi = unsafe { out.range(i * qw + h * d..i * qw + (h + 1) * d) };
                for j in 0..=i {
                    let vj = &v[j * kw + g * d..j * kw + (g + 1) * d];
                    for (o, &vv) in oi.iter_mut().zip(vj) {
                        *o += p[j] * vv;
                    }
                }
            }
        }
    });
}

/// The backward of [`attention`]: `dq`, `dk`, `dv` (overwritten) from `dout`. KV groups run
/// on the pool's threads (a group's `dk`, `dv` gather its heads in head order, as one
/// thread would).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    pool: &ThreadPool,
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    dout: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t_n, d) = (s.tokens, s.head_dim);
    let (qw, kw, rep) = (s.heads * d, s.kv_heads * d, s.heads / s.kv_heads);
    dq.iter_mut().chain(dk.iter_mut()).chain(dv.iter_mut()).for_each(|x| *x = 0.0);
    let (dq, dk, dv) = (DisjointSlice::new(dq), DisjointSlice::new(dk), DisjointSlice::new(dv));
    pool.parallel_for(s.kv_heads, 1, &|_, groups| {
        let mut dp = vec![0f32; t_n];
        for g in groups {
            for h in g * rep..(g + 1) * rep {
                for i in 0..t_n {
                    let p = &probs[(h * t_n + i) * t_n..(h * t_n + i + 1) * t_n];
                    let doi = &dout[i * qw + h * d..i * qw + (h + 1) * d];
                    // dV_j += p_ij · dO_i ; dP_ij = dO_i · V_j
                    for j in 0..=i {
                        let vj = &v[j * kw + g * d..j * kw + (g + 1) * d];
                        dp[j] = dot(doi, vj);
                        // SAFETY: group `g`'s columns of dk and dv, and its heads' columns of
                        // dq, are written by the one thread that claimed `g`.
                        let dvj = unsafe { dv.range(j * kw + g * d..j * kw + (g + 1) * d) };
                        for (x, &o) in dvj.iter_mut().zip(doi) {
                            *x += p[j] * o;
                        }
                    }
                    // dS_ij = p_ij (dP_ij − Σ_k p_ik dP_ik), then through the scale.
                    let mean = dot(&p[..=i], &dp[..=i]);
                    let qi = &q[i * qw + h * d..i * qw + (h + 1) * d];
                    for j in 0..=i {
                        let ds = p[j] * (dp[j] - mean) * s.scale;
                        if ds == 0.0 {
                            continue;
                        }
                        let kj = &k[j * kw + g * d..j * kw + (g + 1) * d];
                        // SAFETY: as above.
                        let dqi = unsafe { dq.range(i * qw + h * d..i * qw + (h + 1) * d) };
                        for (x, &kv) in dqi.iter_mut().zip(kj) {
                            *x += ds * kv;
                        }
                        // SAFETY: as above.
                        let dkj = unsafe { dk.range(j * kw + g * d..j * kw + (g + 1) * d) };
                        for (x, &qv) in dkj.iter_mut().zip(qi) {
                            *x += ds * qv;
                        }
                    }
                }
            }
        }
    });
}

/// The derivative of the gate activation.
pub fn activation_grad(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 + x * (1.0 - s))
        }
        Activation::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2/π)
            let z = C * (x + 0.044_715 * x * x * x);
            let t = z.tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044_715 * x * x)
        }
    }
}

/// `h = act(g) ⊙ u`.
pub fn glu(act: Activation, g: &[f32], u: &[f32], h: &mut [f32]) {
    for ((hv, &gv), &uv) in h.iter_mut().zip(g).zip(u) {
        *hv = act.apply(gv) * uv;
    }
}

/// The backward of [`glu`]: `dg`, `du` (overwritten).
pub fn glu_backward(act: Activation, g: &[f32], u: &[f32], dh: &[f32], dg: &mut [f32], du: &mut [f32]) {
    for i in 0..g.len() {
        dg[i] = dh[i] * u[i] * activation_grad(act, g[i]);
        du[i] = dh[i] * act.apply(g[i]);
    }
}

/// `dx += dy · W` for `W` `[rows][cols]` as stored (any format): the input gradient of a
/// projection `y = x Wᵀ`.
///
/// Under the pool's default (quantized) activation precision a quantized `W` takes its
/// Q8_0 transpose ([`Weight::transposed_q8_0`]) through the same 8-bit matmul as the
/// forward, `dy` quantized like an activation. Otherwise (float weights, float32
/// activations) the tokens are split over the pool's threads; each thread dequantizes the
/// rows a slab at a time and uses each slab for all its tokens.
pub fn matmul_transposed_acc(pool: &ThreadPool, w: &Weight, dy: &[f32], dx: &mut [f32]) -> Result<(), TrainError> {
    let (rows, cols) = (w.rows, w.cols);
    let n = dy.len() / rows.max(1);
    if pool.activation_precision() == ActivationPrecision::Quantized {
        if let Some(wt) = w.transposed_q8_0() {
            let mut product = vec![0f32; n * cols];
            wt.matmul_frozen(pool, &dy[..n * rows], n, &mut product)?;
            dx[..n * cols].iter_mut().zip(&product).for_each(|(d, p)| *d += p);
            return Ok(());
        }
    }
    let threads = pool.n_threads().clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    let failed = std::sync::Mutex::new(None);
    let out = DisjointSlice::new(dx);
    pool.parallel_for(threads, 1, &|_, items| {
        for item in items {
            let (t0, t1) = (item * per, ((item + 1) * per).min(n));
            if t0 >= t1 {
                continue;
            }
            // SAFETY: the token ranges of the items are disjoint.
            let dx = unsafe { out.range(t0 * cols..t1 * cols) };
            if let Err(e) = transposed_rows(w, &dy[t0 * rows..t1 * rows], dx) {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`matmul_transposed_acc`] for one range of tokens, on this thread.
fn transposed_rows(w: &Weight, dy: &[f32], dx: &mut [f32]) -> Result<(), TrainError> {
    let (rows, cols) = (w.rows, w.cols);
    let n = dy.len() / rows.max(1);
    const SLAB: usize = 64;
    let mut slab = vec![0f32; SLAB * cols];
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + SLAB).min(rows);
        let buf = &mut slab[..(r1 - r0) * cols];
        w.dequantize_rows(r0, buf)?;
        for t in 0..n {
            let dxt = &mut dx[t * cols..(t + 1) * cols];
            for (i, wr) in buf.chunks_exact(cols).enumerate() {
                let g = dy[t * rows + r0 + i];
                if g != 0.0 {
                    for (x, &wv) in dxt.iter_mut().zip(wr) {
                        *x += g * wv;
                    }
                }
            }
        }
        r0 = r1;
    }
    Ok(())
}

/// Cross-entropy of one logits row against `target`: returns `-log softmax[target]` and
/// writes `weight · (softmax − onehot)` into `grad`.
pub fn cross_entropy(logits: &[f32], target: usize, weight: f32, grad: &mut [f32]) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let log_z = max as f64 + sum.ln();
    for (g, &v) in grad.iter_mut().zip(logits) {
        *g = weight * ((f64::from(v) - log_z).exp() as f32);
    }
    grad[target] -= weight;
    (log_z - f64::from(logits[target])) as f32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// Checks `grad` of `f` at `x` against central differences (f64 accumulation in `f`).
    fn check(x: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64, tol: f64) {
        let h = 1e-3f32;
        for i in 0..x.len() {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[i] += h;
            down[i] -= h;
            let fd = (f(&up) - f(&down)) / (2.0 * f64::from(h));
            let err = (fd - f64::from(grad[i])).abs();
            assert!(err < tol * (1.0 + fd.abs()), "element {i}: analytic {} vs finite difference {fd}", grad[i]);
        }
    }

    /// A random linear functional of an op's output: `L = Σ c ⊙ y`, so `dL/dy = c`.
    fn dot(c: &[f32], y: &[f32]) -> f64 {
        c.iter().zip(y).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum()
    }

    #[test]
    fn rms_norm_gradient() {
        let (t, d) = (3, 8);
        let (x, w, c) = (values(t * d, 1), values(d, 2), values(t * d, 3));
        let f = |x: &[f32]| {
            let (mut y, mut inv) = (vec![0f32; t * d], vec![0f32; t]);
            rms_norm(x, &w, 1e-5, &mut y, &mut inv);
            dot(&c, &y)
        };
        let (mut y, mut inv) = (vec![0f32; t * d], vec![0f32; t]);
        rms_norm(&x, &w, 1e-5, &mut y, &mut inv);
        let mut dx = vec![0f32; t * d];
        rms_norm_backward(&x, &w, &inv, &c, &mut dx);
        check(&x, &dx, &f, 2e-3);
    }

    #[test]
    fn attention_gradients() {
        let s = AttnShape { tokens: 5, heads: 4, kv_heads: 2, head_dim: 3, scale: 0.6 };
        let (qw, kw) = (12, 6);
        let (q, k, v, c) = (values(5 * qw, 4), values(5 * kw, 5), values(5 * kw, 6), values(5 * qw, 7));
        // Two threads: heads (forward) and KV groups (backward) split over the pool.
        let pool = ThreadPool::new(2);
        let run = |q: &[f32], k: &[f32], v: &[f32]| {
            let (mut out, mut p) = (vec![0f32; 5 * qw], vec![0f32; 4 * 25]);
            attention(&pool, s, q, k, v, &mut out, &mut p);
            (out, p)
        };
        let (out, probs) = run(&q, &k, &v);
        let (mut dq, mut dk, mut dv) = (vec![0f32; 5 * qw], vec![0f32; 5 * kw], vec![0f32; 5 * kw]);
        attention_backward(&pool, s, &q, &k, &v, &probs, &c, &mut dq, &mut dk, &mut dv);
        check(&q, &dq, &|q| dot(&c, &run(q, &k, &v).0), 2e-3);
        check(&k, &dk, &|k| dot(&c, &run(&q, k, &v).0), 2e-3);
        check(&v, &dv, &|v| dot(&c, &run(&q, &k, v).0), 2e-3);
        // One thread gives the same bits.
        let one = ThreadPool::new(1);
        let (mut out1, mut p1) = (vec![0f32; 5 * qw], vec![0f32; 4 * 25]);
        attention(&one, s, &q, &k, &v, &mut out1, &mut p1);
        let (mut dq1, mut dk1, mut dv1) = (vec![0f32; 5 * qw], vec![0f32; 5 * kw], vec![0f32; 5 * kw]);
        attention_backward(&one, s, &q, &k, &v, &probs, &c, &mut dq1, &mut dk1, &mut dv1);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!((bits(&out), bits(&probs)), (bits(&out1), bits(&p1)));
        assert_eq!((bits(&dq), bits(&dk), bits(&dv)), (bits(&dq1), bits(&dk1), bits(&dv1)));
    }

    #[test]
    fn glu_gradients() {
        for act in [Activation::Silu, Activation::GeluTanh] {
            let (g, u, c) = (values(16, 8), values(16, 9), values(16, 10));
            let run = |g: &[f32], u: &[f32]| {
                let mut h = vec![0f32; 16];
                glu(act, g, u, &mut h);
                dot(&c, &h)
            };
            let (mut dg, mut du) = (vec![0f32; 16], vec![0f32; 16]);
            glu_backward(act, &g, &u, &c, &mut dg, &mut du);
            check(&g, &dg, &|g| run(g, &u), 2e-3);
            check(&u, &du, &|u| run(&g, u), 2e-3);
        }
    }

    #[test]
    fn rope_backward_is_the_inverse_rotation() {
        use owl_models::skeleton::rope::{RopeScaling, RopeSpec, RopeStyle};
        for style in [RopeStyle::RotateHalf, RopeStyle::AdjacentPairs] {
            let r = Rope::new(RopeSpec { theta: 10_000.0, rot_dims: 8, style, scaling: RopeScaling::None }).unwrap();
            let positions = [0, 3, 7];
            let (x, c) = (values(3 * 16, 11), values(3 * 16, 12));
            let f = |x: &[f32]| {
                let mut y = x.to_vec();
                rope(&mut y, &r, &positions, 8, 8, false);
                dot(&c, &y)
            };
            let mut g = c.clone();
            rope(&mut g, &r, &positions, 8, 8, true);
            check(&x, &g, &f, 2e-3);
        }
    }

    #[test]
    fn projection_input_gradient() {
        use owl_kernels::BlockFormat;
        use owl_models::weights::WeightBytes;
        let (rows, cols, t) = (70, 5, 3);
        let w = values(rows * cols, 14);
        let bytes = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let weight = Weight::new(BlockFormat::F32, rows, cols, WeightBytes::from_vec(bytes)).unwrap();
        let (x, c) = (values(t * cols, 15), values(t * rows, 16));
        let f = |x: &[f32]| {
            let y: Vec<f32> = (0..t * rows)
                .map(|i| (0..cols).map(|k| x[i / rows * cols + k] * w[i % rows * cols + k]).sum())
                .collect();
            dot(&c, &y)
        };
        let mut dx = vec![0f32; t * cols];
        matmul_transposed_acc(&ThreadPool::new(2), &weight, &c, &mut dx).unwrap();
        check(&x, &dx, &f, 2e-3);
    }

    #[test]
    fn quantized_projection_input_gradient() {
        // A Q4_0 weight: under quantized activations dy·W runs through Wᵀ in Q8_0 and the
        // 8-bit kernels; it stays within the roundings of dy and Wᵀ (8 bits of each block's
        // largest) of the float32 product over the same dequantized weight.
        use owl_kernels::ops::ActivationPrecision;
        use owl_kernels::BlockFormat;
        use owl_models::weights::WeightBytes;
        let (rows, cols, t) = (96, 64, 5);
        let w = values(rows * cols, 17);
        let rb = BlockFormat::Q4_0.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        for (src, dst) in w.chunks_exact(cols).zip(bytes.chunks_exact_mut(rb)) {
            owl_kernels::quant::quantize_row(BlockFormat::Q4_0, src, dst).unwrap();
        }
        let weight = Weight::new(BlockFormat::Q4_0, rows, cols, WeightBytes::from_vec(bytes)).unwrap();
        let dy = values(t * rows, 18);
        let mut pool = ThreadPool::new(2);
        let mut exact = vec![0.5f32; t * cols];
        pool.set_activation_precision(ActivationPrecision::F32);
        matmul_transposed_acc(&pool, &weight, &dy, &mut exact).unwrap();
        let mut quantized = vec![0.5f32; t * cols];
        pool.set_activation_precision(ActivationPrecision::Quantized);
        matmul_transposed_acc(&pool, &weight, &dy, &mut quantized).unwrap();
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = exact.iter().zip(&quantized).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst > 0.0 && worst < 0.02 * scale, "worst {worst} of {scale}");
    }

    #[test]
    fn cross_entropy_gradient() {
        let logits = values(10, 13);
        let f = |l: &[f32]| {
            let mut g = vec![0f32; 10];
            f64::from(cross_entropy(l, 3, 1.0, &mut g))
        };
        let mut g = vec![0f32; 10];
        cross_entropy(&logits, 3, 1.0, &mut g);
        check(&logits, &g, &f, 2e-3);
    }
}
