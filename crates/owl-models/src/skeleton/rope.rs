//! Rotary position embeddings: the frequency schedule of every scaling scheme the families
//! use, a per-batch cos/sin table, and the rotation itself.
//!
//! A rotary head of `rot_dims` dimensions is rotated as `rot_dims / 2` pairs; pair `i`
//! turns by `position * inv_freq[i]` radians. Two pairings exist in the wild:
//! - [`RopeStyle::RotateHalf`] pairs dim `i` with `i + rot_dims/2` (HF checkpoints, and the
//!   GGUF "NEOX" families: qwen2/3, gemma*, phi3);
//! - [`RopeStyle::AdjacentPairs`] pairs `(2i, 2i+1)` (GPT-J; llama-architecture GGUFs, whose
//!   converter permutes the q/k rows so that this pairing equals HF's rotate-half; DeepSeek).
//!
//! Dimensions past `rot_dims` (partial rotary) pass through unchanged.
//!
//! Frequencies follow transformers' `modeling_rope_utils.py` (`_compute_*_parameters`);
//! llama.cpp's `rope_freqs` tensor is [`RopeScaling::FreqFactors`].
//!
//! LongRoPE picks its short or long factors as transformers does (`dynamic_rope_update`):
//! from the length a sequence reaches in the current forward call, for every token of that
//! call. Keys cached by earlier calls keep the rotation they were stored with, so prefilling
//! across `original_max_position` in several chunks differs from one call (as it does in
//! transformers); llama.cpp instead decides once from the context size it was given.

use owl_kernels::ThreadPool;

use crate::error::ModelError;

pub use owl_kernels::ops::rope::{rotate, RopeStyle};

/// How the base frequencies `theta^(-2i/d)` are modified.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (transformers "linear").
    Linear {
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth band between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
    /// YaRN: interpolation/extrapolation blend over a correction range, cos/sin scaled by
    /// `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        /// Round the correction range to whole dims (transformers' default `truncate`).
        truncate: bool,
    },
    /// Phi-3 LongRoPE: per-frequency divisors, `long` when the sequence is longer than
    /// `original_max_position`, else `short`; cos/sin scaled by `attention_factor`.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_max_position: usize,
        attention_factor: f64,
    },
    /// llama.cpp's explicit per-frequency divisors (`rope_freqs.weight`), cos/sin scaled by
    /// `attention_factor`.
    FreqFactors {
        factors: Vec<f64>,
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// One phrase for a user: which scaling, with its factor; `None` for no scaling.
    pub fn describe(&self) -> Option<String> {
        match self {
            RopeScaling::None => None,
            RopeScaling::Linear { factor } => Some(format!("linear, factor {factor}")),
            RopeScaling::Llama3 { factor, original_max_position, .. } => {
                Some(format!("llama3, factor {factor} over {original_max_position} trained positions"))
            }
            RopeScaling::Yarn { factor, original_max_position, .. } => {
                Some(format!("YaRN, factor {factor} over {original_max_position} trained positions"))
            }
            RopeScaling::LongRope { original_max_position, .. } => {
                Some(format!("LongRoPE over {original_max_position} trained positions"))
            }
            RopeScaling::FreqFactors { .. } => Some("per-frequency factors from rope_freqs.weight".to_string()),
        }
    }
}

/// Everything that fixes a rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    /// Dimensions that rotate (even, at most the head dim).
    pub rot_dims: usize,
    pub style: RopeStyle,
    pub scaling: RopeScaling,
}

/// A rotary embedding with its frequencies computed once at load.
#[derive(Debug, Clone)]
pub struct Rope {
    spec: RopeSpec,
    inv_freq: Vec<f64>,
    /// LongRoPE's second schedule and the sequence length above which it applies.
    long: Option<(Vec<f64>, usize)>,
    attention_factor: f64,
}

impl Rope {
    pub fn new(spec: RopeSpec) -> Result<Self, ModelError> {
        let d = spec.rot_dims;
        if d == 0 || !d.is_multiple_of(2) {
            return Err(ModelError::config(
                "rope.dimension_count",
                format!("rotary dims {d} must be even and positive"),
            ));
        }
        if !(spec.theta.is_finite() && spec.theta > 1.0) {
            return Err(ModelError::config("rope_theta", format!("{} is not a usable base", spec.theta)));
        }
        let half = d / 2;
        let base: Vec<f64> = (0..half).map(|i| spec.theta.powf(-((2 * i) as f64) / d as f64)).collect();
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(ModelError::config(format!("rope_scaling.{name}"), format!("{v} must be positive")))
            }
        };
        let per_dim = |name: &str, v: &[f64]| -> Result<(), ModelError> {
            if v.len() != half {
                return Err(ModelError::config(
                    format!("rope_scaling.{name}"),
                    format!("{} factors for {half} rotary frequencies", v.len()),
                ));
            }
            for &f in v {
                positive(name, f)?;
            }
            Ok(())
        };
        let mut long = None;
        let mut attention_factor = 1.0;
        let inv_freq = match &spec.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => {
                let f = positive("factor", *factor)?;
                base.iter().map(|b| b / f).collect()
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                let factor = positive("factor", *factor)?;
                let low = positive("low_freq_factor", *low_freq_factor)?;
                let high = positive("high_freq_factor", *high_freq_factor)?;
                let orig = positive("original_max_position_embeddings", *original_max_position)?;
                if high <= low {
                    return Err(ModelError::config("rope_scaling.high_freq_factor", "must exceed low_freq_factor"));
                }
                let (low_wavelen, high_wavelen) = (orig / low, orig / high);
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let s = (orig / wavelen - low) / (high - low);
                            (1.0 - s) * f / factor + s * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                attention_factor: af,
                truncate,
            } => {
                let factor = positive("factor", *factor)?;
                let orig = positive("original_max_position_embeddings", *original_max_position)?;
                attention_factor = positive("attention_factor", *af)?;
                // transformers `_compute_yarn_parameters`: the dims whose wavelength fits
                // fewer than beta_fast / more than beta_slow turns into the original context.
                let correction_dim = |rotations: f64| {
                    d as f64 * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * spec.theta.ln())
                };
                let (mut lo, mut hi) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    lo = lo.floor();
                    hi = hi.ceil();
                }
                let lo = lo.max(0.0);
                let hi = hi.min((d - 1) as f64);
                let hi = if hi == lo { hi + 0.001 } else { hi };
                base.iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let ramp = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
            RopeScaling::LongRope { short, long: long_f, original_max_position, attention_factor: af } => {
                per_dim("short_factor", short)?;
                per_dim("long_factor", long_f)?;
                attention_factor = positive("attention_factor", *af)?;
                long = Some((base.iter().zip(long_f).map(|(b, e)| b / e).collect(), *original_max_position));
                base.iter().zip(short).map(|(b, e)| b / e).collect()
            }
            RopeScaling::FreqFactors { factors, attention_factor: af } => {
                per_dim("rope_freqs", factors)?;
                attention_factor = positive("attention_factor", *af)?;
                base.iter().zip(factors).map(|(b, e)| b / e).collect()
            }
        };
        Ok(Rope { spec, inv_freq, long, attention_factor })
    }

    pub fn spec(&self) -> &RopeSpec {
        &self.spec
    }

    pub fn rot_dims(&self) -> usize {
        self.spec.rot_dims
    }

    pub fn style(&self) -> RopeStyle {
        self.spec.style
    }

    /// The inverse frequencies for a sequence of `seq_len` positions (LongRoPE switches
    /// schedule on it, like transformers' `dynamic_rope_update`; everything else ignores it).
    fn inv_freq_for(&self, seq_len: usize) -> &[f64] {
        match &self.long {
            Some((long, orig)) if seq_len > *orig => long,
            _ => &self.inv_freq,
        }
    }

    /// Writes `cos` and `sin` (`rot_dims / 2` values each) for one token at `position` of a
    /// sequence that this forward call extends to `seq_len` positions. Angles in f64: at
    /// 32k positions an f32 product is off by ~1e-3 rad.
    pub fn fill(&self, position: usize, seq_len: usize, cos: &mut [f32], sin: &mut [f32]) {
        let p = position as f64;
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(self.inv_freq_for(seq_len)) {
            let (sn, cs) = (p * f).sin_cos();
            *c = (cs * self.attention_factor) as f32;
            *s = (sn * self.attention_factor) as f32;
        }
    }
}

/// cos/sin of every token of one batch for one [`Rope`]: `[n_tokens][rot_dims/2]` each.
#[derive(Debug, Clone)]
pub struct RopeTable {
    half: usize,
    style: RopeStyle,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Room for `max_tokens` tokens (allocated once, reused by every forward).
    pub fn with_capacity(rope: &Rope, max_tokens: usize) -> Self {
        let half = rope.rot_dims() / 2;
        RopeTable { half, style: rope.style(), cos: vec![0.0; max_tokens * half], sin: vec![0.0; max_tokens * half] }
    }

    /// Fills the rows of the batch: token `t` is at `positions[t]` of a sequence extending to
    /// `seq_lens[t]` positions after this call.
    pub fn fill(&mut self, rope: &Rope, positions: &[usize], seq_lens: &[usize]) {
        let h = self.half;
        for (t, (&p, &len)) in positions.iter().zip(seq_lens).enumerate() {
            let (c, s) = (&mut self.cos[t * h..(t + 1) * h], &mut self.sin[t * h..(t + 1) * h]);
            rope.fill(p, len, c, s);
        }
    }

    pub fn bytes(&self) -> usize {
        (self.cos.len() + self.sin.len()) * 4
    }

    /// Rotates every head of token `t` in `x` (`n_heads` heads of `head_dim`, contiguous).
    #[inline]
    pub fn apply(&self, t: usize, x: &mut [f32], head_dim: usize) {
        let h = self.half;
        let (cos, sin) = (&self.cos[t * h..(t + 1) * h], &self.sin[t * h..(t + 1) * h]);
        for head in x.chunks_exact_mut(head_dim) {
            rotate(head, cos, sin, self.style);
        }
    }

    /// Rotates the first `x.len() / stride` tokens of the batch: token `t`'s heads are
    /// `x[t * stride + offset ..][..heads * head_dim]` (split over `pool` for a prompt).
    pub fn apply_tokens(
        &self,
        pool: &ThreadPool,
        x: &mut [f32],
        stride: usize,
        offset: usize,
        heads: usize,
        head_dim: usize,
    ) {
        if stride == 0 {
            return;
        }
        let h = self.half;
        owl_kernels::ops::rope::rotate_tokens(
            pool, x, stride, offset, heads, head_dim, h, &self.cos, &self.sin, self.style,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(scaling: RopeScaling) -> RopeSpec {
        RopeSpec { theta: 10000.0, rot_dims: 16, style: RopeStyle::RotateHalf, scaling }
    }

    #[test]
    fn plain_frequencies_are_theta_powers() {
        let r = Rope::new(spec(RopeScaling::None)).unwrap();
        assert_eq!(r.inv_freq[0], 1.0);
        assert!((r.inv_freq[1] - 10000f64.powf(-2.0 / 16.0)).abs() < 1e-15);
    }

    #[test]
    fn llama3_bands() {
        // The fixture's setting: theta 5e5, factor 8, low 1, high 4, original 64, d 16.
        let s = RopeSpec {
            theta: 500000.0,
            rot_dims: 16,
            style: RopeStyle::RotateHalf,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 64.0,
            },
        };
        let r = Rope::new(s).unwrap();
        let plain = |i: usize| 500000f64.powf(-((2 * i) as f64) / 16.0);
        assert_eq!(r.inv_freq[0], plain(0), "highest frequency unscaled");
        assert!(r.inv_freq[1] < plain(1) && r.inv_freq[1] > plain(1) / 8.0, "band 1 smoothed");
        for i in 2..8 {
            assert!((r.inv_freq[i] - plain(i) / 8.0).abs() < 1e-18, "dim {i} divided by factor");
        }
    }

    #[test]
    fn rotation_styles_agree_under_pair_permutation() {
        // Rotate-half on x equals adjacent-pairs on x with pairs interleaved.
        let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        let cos = [0.9f32, 0.5, -0.2, 0.1];
        let sin = [0.43f32, 0.86, 0.97, -0.99];
        let mut a = x.clone();
        rotate(&mut a, &cos, &sin, RopeStyle::RotateHalf);
        let mut b: Vec<f32> = (0..4).flat_map(|i| [x[i], x[i + 4]]).collect();
        rotate(&mut b, &cos, &sin, RopeStyle::AdjacentPairs);
        for i in 0..4 {
            assert_eq!(a[i], b[2 * i]);
            assert_eq!(a[i + 4], b[2 * i + 1]);
        }
    }

    #[test]
    fn longrope_switches_on_sequence_length() {
        let s = RopeScaling::LongRope {
            short: vec![1.0; 8],
            long: vec![2.0; 8],
            original_max_position: 16,
            attention_factor: 1.5,
        };
        let r = Rope::new(spec(s)).unwrap();
        let (mut c, mut s_) = ([0f32; 8], [0f32; 8]);
        r.fill(3, 16, &mut c, &mut s_);
        assert!((c[0] - (3f64.cos() * 1.5) as f32).abs() < 1e-6);
        r.fill(3, 17, &mut c, &mut s_);
        assert!((c[0] - (1.5f64.cos() * 1.5) as f32).abs() < 1e-6);
    }

    #[test]
    fn bad_factor_lists_are_errors() {
        let s = RopeScaling::LongRope {
            short: vec![1.0; 3],
            long: vec![1.0; 8],
            original_max_position: 4,
            attention_factor: 1.0,
        };
        assert!(Rope::new(spec(s)).is_err());
        assert!(Rope::new(RopeSpec { rot_dims: 7, ..spec(RopeScaling::None) }).is_err());
    }
}
