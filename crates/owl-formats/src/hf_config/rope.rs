//! RoPE settings in both spellings: transformers 5's `rope_parameters` (flat, or one dict per
//! layer type for Gemma 3) and the Hub's `rope_theta` + `rope_scaling` (+ Gemma 3's
//! `rope_local_base_freq`, top-level `partial_rotary_factor`).
//!
//! Resolution follows transformers 5.24 `modeling_rope_utils.py`
//! (`convert_rope_params_to_dict`, `standardize_rope_params`, `_compute_*_parameters`) and
//! `Gemma3TextConfig.convert_rope_params_to_dict`; derived values (YaRN / LongRoPE attention
//! factors, factors implied by `max_position_embeddings / original_max_position_embeddings`)
//! are computed here so both spellings normalise to equal values.

use serde_json::Map;

use super::fields::Fields;
use super::HfConfigError;

/// Rotary position embedding settings for a group of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Base of the rotary frequencies (`rope_theta`): inv_freq_i = theta^(-2i/d).
    pub theta: f64,
    /// Frequency scaling on top of the plain RoPE.
    pub scaling: RopeScaling,
}

/// The RoPE scaling schemes (`rope_type`). Field names follow transformers.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type` "default" or no scaling dict).
    None,
    /// Positions divided by `factor` (inv_freq / factor).
    Linear {
        /// Position interpolation factor.
        factor: f64,
    },
    /// Dynamic NTK: theta grows once the sequence exceeds `original_max_position_embeddings`.
    Dynamic {
        /// Scaling factor.
        factor: f64,
        /// Context length the model was trained with.
        original_max_position_embeddings: usize,
    },
    /// Llama 3.1 frequency-band scaling.
    Llama3 {
        /// Divisor for low frequencies (long wavelengths).
        factor: f64,
        /// Wavelengths above original_max / low_freq_factor are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below original_max / high_freq_factor are unchanged.
        high_freq_factor: f64,
        /// Context length the model was trained with.
        original_max_position_embeddings: usize,
    },
    /// YaRN (DeepSeek-V3, Qwen long context).
    Yarn {
        /// Scaling factor (from the config, or max_position_embeddings / original when absent).
        factor: f64,
        /// Context length the model was trained with.
        original_max_position_embeddings: usize,
        /// Rotations above which dimensions are extrapolated (default 32).
        beta_fast: f64,
        /// Rotations below which dimensions are interpolated (default 1).
        beta_slow: f64,
        /// DeepSeek `mscale` (used for the attention factor and, in MLA, the softmax scale).
        mscale: Option<f64>,
        /// DeepSeek `mscale_all_dim` (MLA softmax scale is multiplied by mscale(factor, this)^2).
        mscale_all_dim: Option<f64>,
        /// Multiplier on cos/sin: the config's `attention_factor`, else
        /// mscale(factor, mscale) / mscale(factor, mscale_all_dim) when both are set and non-zero,
        /// else mscale(factor, 1), with mscale(s, m) = 0.1 m ln(s) + 1 (1 for s <= 1).
        attention_factor: f64,
        /// Whether the correction range is rounded to whole dimensions (default true).
        truncate: bool,
    },
    /// LongRoPE (Phi-3 / Phi-3.5 / Phi-4-mini; legacy `type` "su" too).
    LongRope {
        /// Per-frequency divisors while the sequence fits `original_max_position_embeddings`.
        short_factor: Vec<f64>,
        /// Per-frequency divisors once the sequence (max position + 1) exceeds it.
        long_factor: Vec<f64>,
        /// Context length the model was trained with.
        original_max_position_embeddings: usize,
        /// Multiplier on cos/sin: the config's `attention_factor`, else
        /// sqrt(1 + ln(f) / ln(original_max_position_embeddings)) with
        /// f = `factor` or max_position_embeddings / original (1 when f <= 1).
        attention_factor: f64,
    },
}

/// mscale(s, m) as YaRN defines it.
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The model-level facts a RoPE dict may need to resolve defaults.
pub(crate) struct RopeContext<'a> {
    pub model_type: &'a str,
    pub max_position_embeddings: Option<usize>,
    /// A top-level `original_max_position_embeddings` (Phi-3 keeps it there; it wins over the
    /// dict's value, as in transformers' `standardize_rope_params`).
    pub top_original_max: Option<usize>,
}

impl RopeContext<'_> {
    fn is_gemma3(&self) -> bool {
        self.model_type.starts_with("gemma3")
    }

    /// transformers' `default_theta` for the model class.
    fn default_theta(&self) -> f64 {
        if self.is_gemma3() {
            1_000_000.0
        } else {
            10_000.0
        }
    }
}

/// Everything the RoPE fields of a config resolve to.
#[derive(Debug)]
pub(crate) struct ParsedRope {
    pub global: RopeConfig,
    pub local: Option<RopeConfig>,
    pub partial_rotary_factor: f64,
}

const GEMMA3_LOCAL_THETA: f64 = 10_000.0;
const LAYER_TYPE_KEYS: [&str; 2] = ["full_attention", "sliding_attention"];

/// Reads the RoPE settings of a config object in either spelling.
pub(crate) fn parse_rope(top: Fields<'_>, ctx: &RopeContext<'_>) -> Result<ParsedRope, HfConfigError> {
    let top_theta = top.opt_f64("rope_theta")?;
    let local_base = top.opt_f64("rope_local_base_freq")?;
    let legacy_scaling = top.opt_object("rope_scaling")?;
    let params = top.opt_object("rope_parameters")?;
    let nested = params.is_some_and(|p| LAYER_TYPE_KEYS.iter().any(|k| p.contains_key(*k)));
    let empty = Map::new();

    let mut partial = top.opt_f64("partial_rotary_factor")?;
    let global_theta = top_theta.unwrap_or(ctx.default_theta());
    let local_theta = local_base.unwrap_or(GEMMA3_LOCAL_THETA);

    let (global, local) = if let Some(scaling) = legacy_scaling {
        // Hub spelling (transformers: `rope_scaling or rope_parameters`).
        let global = parse_rope_dict(Fields::new(scaling, "rope_scaling"), global_theta, ctx)?;
        let local = (ctx.is_gemma3() || local_base.is_some())
            .then_some(RopeConfig { theta: local_theta, scaling: RopeScaling::None });
        (global, local)
    } else if let (Some(params), true) = (params, nested) {
        // transformers 5, one dict per layer type (Gemma 3).
        let f = Fields::new(params, "rope_parameters");
        let full = f.opt_object("full_attention")?.unwrap_or(&empty);
        let full_fields = Fields::new(full, "rope_parameters.full_attention");
        if partial.is_none() {
            partial = full_fields.opt_f64("partial_rotary_factor")?;
        }
        let global = parse_rope_dict(full_fields, global_theta, ctx)?;
        let local = match f.opt_object("sliding_attention")? {
            Some(sliding) => {
                Some(parse_rope_dict(Fields::new(sliding, "rope_parameters.sliding_attention"), local_theta, ctx)?)
            }
            None => (ctx.is_gemma3() || local_base.is_some())
                .then_some(RopeConfig { theta: local_theta, scaling: RopeScaling::None }),
        };
        (global, local)
    } else if let Some(params) = params {
        // transformers 5, one flat dict (partial_rotary_factor lives inside it).
        let f = Fields::new(params, "rope_parameters");
        if let Some(p) = f.opt_f64("partial_rotary_factor")? {
            partial = Some(p);
        }
        let global = parse_rope_dict(f, global_theta, ctx)?;
        let local = (ctx.is_gemma3() || local_base.is_some())
            .then_some(RopeConfig { theta: local_theta, scaling: RopeScaling::None });
        (global, local)
    } else {
        let global = RopeConfig { theta: global_theta, scaling: RopeScaling::None };
        let local = (ctx.is_gemma3() || local_base.is_some())
            .then_some(RopeConfig { theta: local_theta, scaling: RopeScaling::None });
        (global, local)
    };

    let partial_rotary_factor = partial.unwrap_or(1.0);
    if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
        return Err(HfConfigError::Invalid {
            field: "partial_rotary_factor".into(),
            reason: format!("{partial_rotary_factor} is outside (0, 1]"),
        });
    }
    Ok(ParsedRope { global, local, partial_rotary_factor })
}

/// One RoPE dict (`rope_parameters`, one of its per-layer-type dicts, or `rope_scaling`).
fn parse_rope_dict(f: Fields<'_>, theta_fallback: f64, ctx: &RopeContext<'_>) -> Result<RopeConfig, HfConfigError> {
    let theta = f.opt_f64("rope_theta")?.unwrap_or(theta_fallback);
    if theta <= 0.0 {
        return Err(f.invalid("rope_theta", format!("{theta} must be positive")));
    }
    let (type_key, rope_type) = match (f.opt_str("rope_type")?, f.opt_str("type")?) {
        (Some(t), _) => ("rope_type", t),
        (None, Some(t)) => ("type", t),
        (None, None) => ("rope_type", "default"),
    };
    // Phi-3 maps the old "su" and "yarn" names to LongRoPE (Phi3Config.convert_rope_params_to_dict).
    let rope_type = match rope_type {
        "su" => "longrope",
        "yarn" if ctx.model_type == "phi3" => "longrope",
        other => other,
    };

    let original_max = |f: &Fields<'_>| -> Result<usize, HfConfigError> {
        if let Some(top) = ctx.top_original_max {
            return Ok(top);
        }
        if let Some(v) = f.opt_usize("original_max_position_embeddings")? {
            return Ok(v);
        }
        ctx.max_position_embeddings.ok_or_else(|| f.missing("original_max_position_embeddings"))
    };
    // `factor` when given, else max_position_embeddings / original (transformers' fallback).
    let factor_or_ratio = |f: &Fields<'_>, orig: usize| -> Result<f64, HfConfigError> {
        if let Some(factor) = f.opt_f64("factor")? {
            return Ok(factor);
        }
        let max = ctx.max_position_embeddings.ok_or_else(|| f.missing("factor"))?;
        if orig == 0 {
            return Err(f.invalid("original_max_position_embeddings", "must be at least 1"));
        }
        Ok(max as f64 / orig as f64)
    };
    let positive = |f: &Fields<'_>, key: &str, v: f64| -> Result<f64, HfConfigError> {
        if v > 0.0 {
            Ok(v)
        } else {
            Err(f.invalid(key, format!("{v} must be positive")))
        }
    };

    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: positive(&f, "factor", f.req_f64("factor")?)? },
        "dynamic" => RopeScaling::Dynamic {
            factor: positive(&f, "factor", f.req_f64("factor")?)?,
            original_max_position_embeddings: original_max(&f)?,
        },
        "llama3" => {
            let low = positive(&f, "low_freq_factor", f.req_f64("low_freq_factor")?)?;
            let high = positive(&f, "high_freq_factor", f.req_f64("high_freq_factor")?)?;
            if high <= low {
                return Err(f.invalid("high_freq_factor", format!("{high} must exceed low_freq_factor {low}")));
            }
            RopeScaling::Llama3 {
                factor: positive(&f, "factor", f.req_f64("factor")?)?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original_max(&f)?,
            }
        }
        "yarn" => {
            let orig = original_max(&f)?;
            let factor = positive(&f, "factor", factor_or_ratio(&f, orig)?)?;
            let mscale = f.opt_f64("mscale")?;
            let mscale_all_dim = f.opt_f64("mscale_all_dim")?;
            let attention_factor = match f.opt_f64("attention_factor")? {
                Some(a) => a,
                None => match (mscale, mscale_all_dim) {
                    // Python truthiness: 0.0 counts as unset.
                    (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                        yarn_get_mscale(factor, m) / yarn_get_mscale(factor, a)
                    }
                    _ => yarn_get_mscale(factor, 1.0),
                },
            };
            let nonzero_or = |v: Option<f64>, d: f64| v.filter(|x| *x != 0.0).unwrap_or(d);
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: orig,
                beta_fast: nonzero_or(f.opt_f64("beta_fast")?, 32.0),
                beta_slow: nonzero_or(f.opt_f64("beta_slow")?, 1.0),
                mscale,
                mscale_all_dim,
                attention_factor,
                truncate: f.opt_bool("truncate")?.unwrap_or(true),
            }
        }
        "longrope" => {
            let short_factor = f.opt_f64_vec("short_factor")?.ok_or_else(|| f.missing("short_factor"))?;
            let long_factor = f.opt_f64_vec("long_factor")?.ok_or_else(|| f.missing("long_factor"))?;
            if short_factor.len() != long_factor.len() {
                return Err(f.invalid(
                    "long_factor",
                    format!("has {} entries but short_factor has {}", long_factor.len(), short_factor.len()),
                ));
            }
            let orig = original_max(&f)?;
            if orig < 2 {
                return Err(f.invalid("original_max_position_embeddings", format!("{orig} must be at least 2")));
            }
            let attention_factor = match f.opt_f64("attention_factor")? {
                Some(a) => a,
                None => {
                    let factor = factor_or_ratio(&f, orig)?;
                    if factor <= 1.0 {
                        1.0
                    } else {
                        (1.0 + factor.ln() / (orig as f64).ln()).sqrt()
                    }
                }
            };
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: orig,
                attention_factor,
            }
        }
        other => {
            return Err(HfConfigError::Unsupported { field: f.name(type_key), value: format!("{other:?}") });
        }
    };
    Ok(RopeConfig { theta, scaling })
}
