//! Softmax over one short vector (a router's expert scores), `e^(x_i - max) / Σ e^(x_j - max)`
//! with the maximum subtracted, as torch computes it.
//!
//! It keeps libm's correctly rounded `exp`, not the polynomial of `ops::exp`: a router has
//! 8–256 scores a token, so the cost is nil, and a top-k choice between near-equal experts
//! should see the reference's values. Attention's softmax is part of the streamed attention
//! kernel (`ops::attention`), never a separate pass over scores.

/// Softmax of `x` in place. An empty slice is left alone.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_one_and_matches_float64() {
        let mut x = vec![1.0f32, 2.0, 3.0, -50.0, 80.0, 79.5];
        let want: Vec<f64> = {
            let m = 80.0f64;
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_in_place(&mut x);
        for (g, w) in x.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-7, "{g} vs {w}");
        }
        assert!((x.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-6);
        let mut empty: [f32; 0] = [];
        softmax_in_place(&mut empty);
    }
}
