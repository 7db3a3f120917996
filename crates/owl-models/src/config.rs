//! Architecture-neutral hyperparameters, read from a Hugging Face `config.json`
//! ([`HfConfig`]) or from GGUF metadata (`{arch}.block_count`, `{arch}.rope.freq_base`, ...).
//!
//! The readers here cover what most families share; a family file starts from them and
//! applies its own conventions (Gemma's embedding scale, Phi-3's LongRoPE tensors, ...).

use owl_formats::gguf::{GgufFile, MetadataValue};
use owl_formats::hf_config::{self as hf, HfConfig};

use crate::error::ModelError;
use crate::skeleton::rope::{RopeScaling, RopeSpec, RopeStyle};
use crate::weights::TensorSet;
use owl_kernels::ops::activation::Activation;

/// Attention settings of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerAttention {
    /// Sliding window in positions, `None` for full causal attention.
    pub window: Option<usize>,
    /// Index into [`ModelConfig::ropes`]; `None` for a layer without RoPE.
    pub rope: Option<usize>,
}

/// What the forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family that runs it (registry name, e.g. "llama").
    pub family: &'static str,
    /// The architecture as the file names it (HF `model_type` or GGUF `general.architecture`).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Intermediate width of the dense MLP.
    pub ffn_dim: usize,
    pub norm_eps: f32,
    /// Context length the model was trained for.
    pub context_length: usize,
    pub tied_embeddings: bool,
    pub activation: Activation,
    pub qkv_bias: bool,
    /// Per layer: window and RoPE choice.
    pub layers: Vec<LayerAttention>,
    /// The distinct RoPE variants (Gemma 3 has a local and a global one).
    pub ropes: Vec<RopeSpec>,
    /// Multiplier on q·k.
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Multiplier on the embedding output (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f32>,
}

/// Upper bounds on sizes read from a file, so that a malformed or hostile header cannot size
/// an allocation: generous multiples of the largest open models (hidden 16k, 126 layers,
/// 256k vocabulary, head_dim 256, 1M context).
pub mod limits {
    pub const MAX_LAYERS: usize = 1 << 12;
    pub const MAX_WIDTH: usize = 1 << 18;
    pub const MAX_HEADS: usize = 1 << 12;
    pub const MAX_HEAD_DIM: usize = 1 << 12;
    pub const MAX_VOCAB: usize = 1 << 23;
    pub const MAX_CONTEXT: usize = 1 << 26;
}

impl ModelConfig {
    /// The RoPE scaling of the global-attention rope, as a phrase (see
    /// [`RopeScaling::describe`]); `None` when positions are not scaled.
    pub fn rope_scaling_description(&self) -> Option<String> {
        self.ropes.first().and_then(|r| r.scaling.describe())
    }

    /// Checks the invariants the forward pass relies on and the [`limits`] on every size.
    /// Called by the readers and again by `Model::assemble` (families edit configs).
    pub fn validate(&self) -> Result<(), ModelError> {
        use limits::*;
        let within = |field: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ModelError::config(field, format!("{v} is outside {lo}..={hi}")))
            }
        };
        within("vocab_size", self.vocab_size, 1, MAX_VOCAB)?;
        within("hidden_size", self.hidden_size, 1, MAX_WIDTH)?;
        within("num_hidden_layers", self.n_layers, 1, MAX_LAYERS)?;
        within("num_attention_heads", self.n_heads, 1, MAX_HEADS)?;
        within("num_key_value_heads", self.n_kv_heads, 1, self.n_heads)?;
        within("head_dim", self.head_dim, 1, MAX_HEAD_DIM)?;
        within("intermediate_size", self.ffn_dim, 0, MAX_WIDTH * 8)?;
        within("max_position_embeddings", self.context_length, 1, MAX_CONTEXT)?;
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!("{} does not divide {} heads", self.n_kv_heads, self.n_heads),
            ));
        }
        if self.layers.len() != self.n_layers {
            return Err(ModelError::config(
                "layer_types",
                format!("{} entries for {} layers", self.layers.len(), self.n_layers),
            ));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.window == Some(0) {
                return Err(ModelError::config("sliding_window", format!("layer {l}: a window of 0")));
            }
            if layer.rope.is_some_and(|r| r >= self.ropes.len()) {
                return Err(ModelError::config(
                    "rope",
                    format!("layer {l} names RoPE {:?} of {}", layer.rope, self.ropes.len()),
                ));
            }
        }
        for r in &self.ropes {
            if r.rot_dims == 0 || r.rot_dims % 2 != 0 || r.rot_dims > self.head_dim {
                return Err(ModelError::config(
                    "rope.dimension_count",
                    format!("{} rotary dims for heads of {}", r.rot_dims, self.head_dim),
                ));
            }
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return Err(ModelError::config("attention.scale", format!("{} is not a usable scale", self.attn_scale)));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(ModelError::config("rms_norm_eps", format!("{}", self.norm_eps)));
        }
        for (field, cap) in
            [("attn_logit_softcapping", self.attn_softcap), ("final_logit_softcapping", self.final_softcap)]
        {
            if cap.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(ModelError::config(field, format!("{cap:?} must be positive")));
            }
        }
        Ok(())
    }

    /// The fields every family shares, from a Hugging Face config. HF checkpoints rotate
    /// halves (`rotate_half`).
    pub fn from_hf(family: &'static str, c: &HfConfig) -> Result<Self, ModelError> {
        let activation = match c.hidden_act {
            hf::Activation::Silu => Activation::Silu,
            hf::Activation::GeluTanh => Activation::GeluTanh,
            other => return Err(ModelError::config("hidden_act", format!("{other:?} is not supported"))),
        };
        let rot_dims = c.rotary_dim();
        let mut ropes = vec![rope_from_hf(&c.rope, rot_dims)?];
        if let Some(local) = &c.local_rope {
            ropes.push(rope_from_hf(local, rot_dims)?);
        }
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let sliding = c.is_sliding_layer(l);
                LayerAttention {
                    window: if sliding { c.sliding_window } else { None },
                    rope: Some(if sliding && c.local_rope.is_some() { 1 } else { 0 }),
                }
            })
            .collect();
        let attn_scale = match c.query_pre_attn_scalar {
            Some(s) => s.powf(-0.5) as f32,
            None => (c.head_dim as f64).powf(-0.5) as f32,
        };
        let cfg = ModelConfig {
            family,
            architecture: c.model_type.clone(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            n_layers: c.num_hidden_layers,
            n_heads: c.num_attention_heads,
            n_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            ffn_dim: c.intermediate_size,
            norm_eps: c.rms_norm_eps as f32,
            context_length: c.max_position_embeddings,
            tied_embeddings: c.tie_word_embeddings,
            activation,
            qkv_bias: c.qkv_bias,
            layers,
            ropes,
            attn_scale,
            attn_softcap: c.attn_logit_softcapping.map(|v| v as f32),
            final_softcap: c.final_logit_softcapping.map(|v| v as f32),
            embed_scale: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The fields every family shares, from GGUF metadata. `style` is the pairing of the
    /// architecture's RoPE in llama.cpp (`llama_model_rope_type`): adjacent pairs for
    /// llama-type files (whose q/k rows the converter permuted), rotate-half ("NEOX") for
    /// qwen, gemma, phi3. The vocabulary size comes from the embedding tensor.
    pub fn from_gguf(
        family: &'static str,
        meta: &GgufMeta<'_>,
        tensors: &TensorSet,
        style: RopeStyle,
    ) -> Result<Self, ModelError> {
        let n_layers = meta.block_count()?;
        let hidden = meta.req_usize("embedding_length")?;
        let n_heads = meta.req_usize("attention.head_count")?;
        let n_kv_heads = meta.opt_usize("attention.head_count_kv")?.unwrap_or(n_heads);
        if n_layers == 0 || hidden == 0 || n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::config(
                meta.key("attention.head_count_kv"),
                format!(
                    "{n_kv_heads} KV heads, {n_heads} heads, {n_layers} layers, width {hidden}: not a usable shape"
                ),
            ));
        }
        let head_dim = match meta.opt_usize("attention.key_length")? {
            Some(d) => d,
            None if hidden % n_heads == 0 => hidden / n_heads,
            None => {
                return Err(ModelError::config(
                    meta.key("attention.key_length"),
                    "absent and width not divisible by heads",
                ))
            }
        };
        if let Some(v) = meta.opt_usize("attention.value_length")? {
            if v != head_dim {
                return Err(ModelError::config(
                    meta.key("attention.value_length"),
                    format!("{v} differs from key_length {head_dim}"),
                ));
            }
        }
        let vocab_size = tensors
            .get("token_embd.weight")
            .and_then(|t| t.shape.first().copied())
            .ok_or_else(|| ModelError::config("token_embd.weight", "the embedding tensor is missing"))?;
        let rot_dims = meta.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        let theta = meta.opt_f64("rope.freq_base")?.unwrap_or(10_000.0);
        let rope = RopeSpec { theta, rot_dims, style, scaling: meta.rope_scaling()? };
        // 0 is "none" (llama.cpp's converter writes it so for Phi-3, to tell it from Phi-4).
        let window = meta.opt_usize("attention.sliding_window")?.filter(|&w| w > 0);
        // llama.cpp's `{arch}.attention.scale` (LLM_KV_ATTENTION_SCALE) overrides d^-0.5.
        let attn_scale = match meta.opt_f64("attention.scale")? {
            Some(s) if s > 0.0 => s as f32,
            Some(s) => return Err(ModelError::config(meta.key("attention.scale"), format!("{s} must be positive"))),
            None => (head_dim as f64).powf(-0.5) as f32,
        };
        let eps = meta.opt_f64("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5);
        let cfg = ModelConfig {
            family,
            architecture: meta.arch().to_string(),
            vocab_size,
            hidden_size: hidden,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim: meta.req_usize("feed_forward_length")?,
            norm_eps: eps as f32,
            context_length: meta.opt_usize("context_length")?.unwrap_or(2048),
            tied_embeddings: tensors.get("output.weight").is_none(),
            activation: Activation::Silu,
            qkv_bias: tensors.get("blk.0.attn_q.bias").is_some(),
            layers: vec![LayerAttention { window, rope: Some(0) }; n_layers],
            ropes: vec![rope],
            attn_scale,
            attn_softcap: None,
            final_softcap: None,
            embed_scale: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A HF RoPE setting as the skeleton's [`RopeSpec`] (rotate-half pairing).
pub fn rope_from_hf(r: &hf::RopeConfig, rot_dims: usize) -> Result<RopeSpec, ModelError> {
    let scaling = match &r.scaling {
        hf::RopeScaling::None => RopeScaling::None,
        hf::RopeScaling::Linear { factor } => RopeScaling::Linear { factor: *factor },
        hf::RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            RopeScaling::Llama3 {
                factor: *factor,
                low_freq_factor: *low_freq_factor,
                high_freq_factor: *high_freq_factor,
                original_max_position: *original_max_position_embeddings as f64,
            }
        }
        hf::RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
            ..
        } => RopeScaling::Yarn {
            factor: *factor,
            original_max_position: *original_max_position_embeddings as f64,
            beta_fast: *beta_fast,
            beta_slow: *beta_slow,
            attention_factor: *attention_factor,
            truncate: *truncate,
        },
        hf::RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor } => {
            RopeScaling::LongRope {
                short: short_factor.clone(),
                long: long_factor.clone(),
                original_max_position: *original_max_position_embeddings,
                attention_factor: *attention_factor,
            }
        }
        other => return Err(ModelError::config("rope_scaling", format!("{other:?} is not supported"))),
    };
    Ok(RopeSpec { theta: r.theta, rot_dims, style: RopeStyle::RotateHalf, scaling })
}

/// Typed access to a GGUF file's `{arch}.*` metadata, with errors naming the key.
pub struct GgufMeta<'a> {
    file: &'a GgufFile,
    arch: String,
}

impl<'a> GgufMeta<'a> {
    pub fn new(file: &'a GgufFile) -> Result<Self, ModelError> {
        let arch = file
            .architecture()
            .ok_or_else(|| ModelError::config("general.architecture", "missing (or not a string)"))?
            .to_string();
        Ok(GgufMeta { file, arch })
    }

    pub fn file(&self) -> &'a GgufFile {
        self.file
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `{arch}.{suffix}`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn wrong(&self, key: String, v: &MetadataValue, expected: &str) -> ModelError {
        ModelError::config(key, format!("expected {expected}, found {}", v.type_name()))
    }

    pub fn opt_usize(&self, suffix: &str) -> Result<Option<usize>, ModelError> {
        let key = self.key(suffix);
        let Some(v) = self.file.get(&key) else { return Ok(None) };
        match v.as_u64().map(usize::try_from) {
            Some(Ok(n)) => Ok(Some(n)),
            _ => Err(self.wrong(key, v, "a non-negative integer")),
        }
    }

    /// `{arch}.block_count`, checked against [`limits::MAX_LAYERS`] before anything is sized
    /// by it.
    pub fn block_count(&self) -> Result<usize, ModelError> {
        let n = self.req_usize("block_count")?;
        if !(1..=limits::MAX_LAYERS).contains(&n) {
            return Err(ModelError::config(
                self.key("block_count"),
                format!("{n} is outside 1..={}", limits::MAX_LAYERS),
            ));
        }
        Ok(n)
    }

    pub fn req_usize(&self, suffix: &str) -> Result<usize, ModelError> {
        self.opt_usize(suffix)?.ok_or_else(|| ModelError::config(self.key(suffix), "missing"))
    }

    pub fn opt_f64(&self, suffix: &str) -> Result<Option<f64>, ModelError> {
        let key = self.key(suffix);
        let Some(v) = self.file.get(&key) else { return Ok(None) };
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(self.wrong(key, v, "a finite number")),
        }
    }

    pub fn opt_str(&self, suffix: &str) -> Result<Option<&'a str>, ModelError> {
        let key = self.key(suffix);
        let Some(v) = self.file.get(&key) else { return Ok(None) };
        v.as_str().map(Some).ok_or_else(|| self.wrong(key, v, "a string"))
    }

    /// Which layers slide: `{arch}.attention.sliding_window_pattern` as llama.cpp reads it
    /// (`get_key_or_arr`): a period `p` (layer `l` slides unless `l % p == p - 1`) or one
    /// flag per layer (non-zero: sliding); `default_period` when absent.
    pub fn sliding_layers(&self, n_layers: usize, default_period: usize) -> Result<Vec<bool>, ModelError> {
        let key = self.key("attention.sliding_window_pattern");
        let by_period = |p: usize| (0..n_layers).map(|l| l % p < p - 1).collect();
        let Some(v) = self.file.get(&key) else { return Ok(by_period(default_period)) };
        if let Some(p) = v.as_u64() {
            if p == 0 {
                return Err(ModelError::config(key, "a period of 0"));
            }
            return Ok(by_period(p as usize));
        }
        match v.as_array().and_then(|a| a.to_i64s()) {
            Some(flags) if flags.len() == n_layers => Ok(flags.iter().map(|&f| f != 0).collect()),
            Some(flags) => Err(ModelError::config(key, format!("{} flags for {n_layers} layers", flags.len()))),
            None => Err(self.wrong(key, v, "an integer or an integer array")),
        }
    }

    /// `{arch}.rope.scaling.*`: none, linear or YaRN (llama3 and LongRoPE factors travel as
    /// tensors in GGUF; the families that use them read those).
    pub fn rope_scaling(&self) -> Result<RopeScaling, ModelError> {
        let kind = self.opt_str("rope.scaling.type")?.unwrap_or("none");
        let factor = self.opt_f64("rope.scaling.factor")?.unwrap_or(1.0);
        match kind {
            "none" => Ok(RopeScaling::None),
            _ if factor == 1.0 && kind != "yarn" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor }),
            "yarn" => {
                let orig = self.opt_usize("rope.scaling.original_context_length")?.ok_or_else(|| {
                    ModelError::config(self.key("rope.scaling.original_context_length"), "missing for yarn")
                })?;
                // ggml's rope_yarn multiplies the metadata's attn_factor (default 1) by
                // mscale(factor) = 1 + 0.1 ln(factor) (ggml-cpu/ops.cpp, rope_yarn).
                let attn = self.opt_f64("rope.scaling.attn_factor")?.unwrap_or(1.0) * hf::yarn_get_mscale(factor, 1.0);
                Ok(RopeScaling::Yarn {
                    factor,
                    original_max_position: orig as f64,
                    beta_fast: self.opt_f64("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                    beta_slow: self.opt_f64("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                    attention_factor: attn,
                    truncate: true,
                })
            }
            other => Err(ModelError::config(self.key("rope.scaling.type"), format!("{other:?} is not supported"))),
        }
    }
}
