//! Hugging Face `config.json`, normalised into one typed [`HfConfig`].
//!
//! Two spellings are accepted and give equal values (tested on every fixture variant):
//! transformers 5 (`rope_parameters`, one RoPE dict per layer type for Gemma 3,
//! `partial_rotary_factor` inside `rope_parameters`, `num_local_experts`) and the Hub's
//! pre-v5 spelling (`rope_theta` + `rope_scaling` with `type` or `rope_type`,
//! `rope_local_base_freq`, `sliding_window_pattern`, top-level `partial_rotary_factor`,
//! `num_experts`). Unknown fields are ignored; a missing required field or a value of the
//! wrong type is an [`HfConfigError`] naming the field (dotted path, e.g.
//! `rope_scaling.factor`). Defaults for absent optional fields follow the transformers 5.24
//! config class of the family.

mod fields;
mod moe;
mod rope;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use fields::Fields;
pub use moe::{MlaConfig, MoeConfig, RouterScoring, TopkMethod};
pub use rope::{yarn_get_mscale, RopeConfig, RopeScaling};

/// Errors reading a `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum HfConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem inside a named file.
    #[error("{}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<HfConfigError>,
    },
    /// The text is not JSON.
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    /// The top level (or `text_config`) is not a JSON object.
    #[error("expected a JSON object at the top level, found {found}")]
    NotAnObject { found: String },
    /// A required field is absent or null.
    #[error("missing required field `{field}`")]
    MissingField { field: String },
    /// A field holds the wrong kind of JSON value.
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType { field: String, expected: &'static str, found: String },
    /// A field's value is out of range or inconsistent with another field.
    #[error("field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// A field names something owl does not implement (a RoPE type, an activation...).
    #[error("field `{field}`: unsupported value {value}")]
    Unsupported { field: String, value: String },
}

/// The attention kind of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// Causal attention over the whole context (`full_attention`).
    Full,
    /// Causal attention over the last `sliding_window` positions, the query's own included
    /// (`sliding_attention`: query i sees keys j with i - w < j <= i).
    Sliding,
}

/// Feed-forward activation (`hidden_act` / Gemma's `hidden_activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// x * sigmoid(x) ("silu", "swish").
    Silu,
    /// Exact GELU with erf ("gelu").
    Gelu,
    /// GELU with the tanh approximation ("gelu_pytorch_tanh", "gelu_new", "gelu_fast").
    GeluTanh,
    /// max(x, 0) ("relu").
    Relu,
}

/// The most decoder layers a config may declare (the largest published models have ~130).
pub const MAX_LAYERS: usize = 4096;

/// A Hugging Face model config, normalised across both spellings.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// `model_type` as written (e.g. "llama", "gemma3_text", "deepseek_v3"); for a multimodal
    /// wrapper read through its `text_config`, that config's model type.
    pub model_type: String,
    /// `architectures` (e.g. ["LlamaForCausalLM"]); empty when absent.
    pub architectures: Vec<String>,
    /// Vocabulary size: rows of the embedding and output matrices.
    pub vocab_size: usize,
    /// Width of the residual stream (`hidden_size`).
    pub hidden_size: usize,
    /// Hidden width of a dense MLP (`intermediate_size`).
    pub intermediate_size: usize,
    /// Number of decoder layers (`num_hidden_layers`).
    pub num_hidden_layers: usize,
    /// Query heads (`num_attention_heads`).
    pub num_attention_heads: usize,
    /// Key/value heads (`num_key_value_heads`, default = num_attention_heads).
    pub num_key_value_heads: usize,
    /// Per-head width (`head_dim`; if absent hidden_size / num_attention_heads, or
    /// qk_rope_head_dim for DeepSeek as transformers sets it). For MLA models use [`MlaConfig`].
    pub head_dim: usize,
    /// Longest context the model supports (`max_position_embeddings`).
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_norm_eps: f64,
    /// Output projection shares the embedding matrix (`tie_word_embeddings`; default true for
    /// the Gemma families, false otherwise).
    pub tie_word_embeddings: bool,
    /// `attention_bias` as written (default false): bias on q, k, v and o projections.
    pub attention_bias: bool,
    /// Whether q/k/v projections carry a bias: `attention_bias`, or always for Qwen2 / Qwen2-MoE.
    pub qkv_bias: bool,
    /// Whether the attention output projection carries a bias (= `attention_bias`).
    pub o_bias: bool,
    /// Whether MLP projections carry a bias (`mlp_bias`, default false).
    pub mlp_bias: bool,
    /// Feed-forward activation (`hidden_activation` if set, else `hidden_act`; Gemma v1's
    /// "gelu" means the tanh approximation, as in the original implementation).
    pub hidden_act: Activation,
    /// RoPE for full-attention layers (and every layer unless `local_rope` is set).
    pub rope: RopeConfig,
    /// RoPE for sliding-window layers when it differs (Gemma 3: `rope_local_base_freq` or
    /// `rope_parameters.sliding_attention`); `None` means sliding layers use `rope`.
    pub local_rope: Option<RopeConfig>,
    /// Fraction of each head's dims that are rotated (first factor * head_dim dims; default 1).
    pub partial_rotary_factor: f64,
    /// Window of sliding-attention layers (`sliding_window`; `None` if no layer slides; Qwen
    /// configs only when `use_sliding_window` is true).
    pub sliding_window: Option<usize>,
    /// Attention kind of every layer (length num_hidden_layers): the config's `layer_types`
    /// when present, else derived (Gemma 2 alternation sliding/full, Gemma 3
    /// `sliding_window_pattern` (default 6), Qwen `max_window_layers`, all-sliding when a
    /// `sliding_window` is set (Mistral), all-full otherwise).
    pub layer_types: Vec<LayerType>,
    /// Gemma 2/3 attention scale is query_pre_attn_scalar^-0.5 instead of head_dim^-0.5
    /// (default 256 for Gemma 2/3, `None` = use head_dim).
    pub query_pre_attn_scalar: Option<f64>,
    /// Attention-score softcap cap*tanh(s/cap), after scaling and before the mask (Gemma 2:
    /// default 50; `null` turns it off).
    pub attn_logit_softcapping: Option<f64>,
    /// Final-logit softcap (Gemma 2: default 30; `null` turns it off).
    pub final_logit_softcapping: Option<f64>,
    /// Mixture-of-experts settings; `None` for dense models.
    pub moe: Option<MoeConfig>,
    /// DeepSeek multi-head latent attention; `None` for ordinary attention.
    pub mla: Option<MlaConfig>,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (one id or a list; empty when absent).
    pub eos_token_ids: Vec<u32>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
    /// Storage dtype of the checkpoint (`dtype`, or the older `torch_dtype`), e.g. "bfloat16".
    pub dtype: Option<String>,
}

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn from_model_dir(dir: &Path) -> Result<HfConfig, HfConfigError> {
        HfConfig::from_file(&dir.join("config.json"))
    }

    /// Reads a config file; errors carry the path.
    pub fn from_file(path: &Path) -> Result<HfConfig, HfConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| HfConfigError::Io { path: path.to_path_buf(), source })?;
        HfConfig::from_json_str(&text)
            .map_err(|e| HfConfigError::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// Parses config JSON text.
    pub fn from_json_str(text: &str) -> Result<HfConfig, HfConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| HfConfigError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        HfConfig::from_value(&value)
    }

    /// Normalises an already parsed JSON value.
    pub fn from_value(value: &Value) -> Result<HfConfig, HfConfigError> {
        let Value::Object(obj) = value else {
            return Err(HfConfigError::NotAnObject { found: fields::kind_of(value) });
        };
        let top = Fields::new(obj, "");
        // Multimodal wrappers (Gemma3ForConditionalGeneration, ...) keep the language model's
        // settings in `text_config`.
        if !top.has("hidden_size") {
            if let Some(text) = top.opt_object("text_config")? {
                return parse_object(text, "text_config", Some(top));
            }
        }
        parse_object(obj, "", None)
    }

    /// Whether layer `layer` uses sliding-window attention.
    pub fn is_sliding_layer(&self, layer: usize) -> bool {
        self.layer_types.get(layer) == Some(&LayerType::Sliding)
    }

    /// The RoPE settings that apply to layer `layer`.
    pub fn rope_for_layer(&self, layer: usize) -> &RopeConfig {
        match (&self.local_rope, self.is_sliding_layer(layer)) {
            (Some(local), true) => local,
            _ => &self.rope,
        }
    }

    /// Number of rotated dims per head: head_dim * partial_rotary_factor (qk_rope_head_dim for MLA).
    pub fn rotary_dim(&self) -> usize {
        match &self.mla {
            Some(mla) => mla.qk_rope_head_dim,
            None => (self.head_dim as f64 * self.partial_rotary_factor) as usize,
        }
    }

    /// Whether layer `layer` has a MoE feed-forward.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.is_sparse_layer(layer))
    }
}

fn is_gemma_family(model_type: &str) -> bool {
    model_type.starts_with("gemma")
}

fn is_qwen_family(model_type: &str) -> bool {
    model_type.starts_with("qwen2") || model_type.starts_with("qwen3")
}

fn parse_activation(f: Fields<'_>, model_type: &str) -> Result<Activation, HfConfigError> {
    let (key, name) = match (f.opt_str("hidden_activation")?, f.opt_str("hidden_act")?) {
        (Some(a), _) => ("hidden_activation", a),
        (None, Some("gelu")) if model_type == "gemma" => return Ok(Activation::GeluTanh),
        (None, Some(a)) => ("hidden_act", a),
        (None, None) if is_gemma_family(model_type) => return Ok(Activation::GeluTanh),
        (None, None) => return Ok(Activation::Silu),
    };
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
        "relu" => Ok(Activation::Relu),
        other => Err(HfConfigError::Unsupported { field: f.name(key), value: format!("{other:?}") }),
    }
}

fn parse_layer_type(f: Fields<'_>, index: usize, name: &str) -> Result<LayerType, HfConfigError> {
    match name {
        "full_attention" => Ok(LayerType::Full),
        "sliding_attention" => Ok(LayerType::Sliding),
        other => Err(HfConfigError::Unsupported {
            field: f.name(&format!("layer_types[{index}]")),
            value: format!("{other:?}"),
        }),
    }
}

fn parse_object(obj: &Map<String, Value>, prefix: &str, parent: Option<Fields<'_>>) -> Result<HfConfig, HfConfigError> {
    let f = Fields::new(obj, prefix);
    let model_type = match (f.opt_str("model_type")?, parent) {
        (Some(t), _) => t.to_string(),
        (None, Some(p)) => format!("{}_text", p.req_str("model_type")?),
        (None, None) => return Err(f.missing("model_type")),
    };
    let mut architectures = f.opt_str_vec("architectures")?.unwrap_or_default();
    if architectures.is_empty() {
        if let Some(p) = parent {
            architectures = p.opt_str_vec("architectures")?.unwrap_or_default();
        }
    }

    let vocab_size = f.req_positive("vocab_size")?;
    let hidden_size = f.req_positive("hidden_size")?;
    let intermediate_size = f.req_usize("intermediate_size")?;
    let num_hidden_layers = f.req_positive("num_hidden_layers")?;
    // Per-layer vectors are sized from this count: bound it before anything is allocated.
    if num_hidden_layers > MAX_LAYERS {
        return Err(f.invalid("num_hidden_layers", format!("{num_hidden_layers} is more than {MAX_LAYERS}")));
    }
    let num_attention_heads = f.req_positive("num_attention_heads")?;
    let num_key_value_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(f.invalid(
            "num_key_value_heads",
            format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
        ));
    }
    let mla = moe::parse_mla(f)?;
    let head_dim = match (f.opt_usize("head_dim")?, &mla) {
        (Some(d), _) => d,
        (None, Some(mla)) => mla.qk_rope_head_dim,
        (None, None) => {
            if hidden_size % num_attention_heads != 0 {
                return Err(f.invalid(
                    "head_dim",
                    format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ));
            }
            hidden_size / num_attention_heads
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(f.invalid("head_dim", format!("{head_dim} must be a positive even number")));
    }
    let max_position_embeddings = f.req_positive("max_position_embeddings")?;
    let rms_norm_eps = f.req_f64("rms_norm_eps")?;
    if rms_norm_eps < 0.0 {
        return Err(f.invalid("rms_norm_eps", format!("{rms_norm_eps} is negative")));
    }

    let gemma = is_gemma_family(&model_type);
    let gemma2 = model_type == "gemma2";
    let gemma3 = model_type.starts_with("gemma3");
    if f.opt_bool("use_bidirectional_attention")? == Some(true) {
        return Err(HfConfigError::Unsupported {
            field: f.name("use_bidirectional_attention"),
            value: "true (bidirectional encoders are not causal language models)".into(),
        });
    }

    let tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(gemma);
    let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
    let qkv_bias = attention_bias || model_type == "qwen2" || model_type == "qwen2_moe";
    let mlp_bias = f.opt_bool("mlp_bias")?.unwrap_or(false);
    let hidden_act = parse_activation(f, &model_type)?;

    let rope = rope::parse_rope(
        f,
        &rope::RopeContext {
            model_type: &model_type,
            max_position_embeddings: Some(max_position_embeddings),
            top_original_max: f.opt_usize("original_max_position_embeddings")?,
        },
    )?;

    // Sliding window: Gemma 2/3 default to 4096 when the key is absent (an explicit null turns
    // it off); Qwen only slides when `use_sliding_window` is true.
    let mut sliding_window = if gemma2 || gemma3 {
        f.usize_or_default_unless_null("sliding_window", Some(4096))?
    } else {
        f.opt_usize("sliding_window")?
    };
    if is_qwen_family(&model_type) && !f.opt_bool("use_sliding_window")?.unwrap_or(false) {
        sliding_window = None;
    }
    if sliding_window == Some(0) {
        return Err(f.invalid("sliding_window", "must be at least 1"));
    }

    let layer_types: Vec<LayerType> = if let Some(names) = f.opt_str_vec("layer_types")? {
        if names.len() != num_hidden_layers {
            return Err(f.invalid("layer_types", format!("has {} entries for {num_hidden_layers} layers", names.len())));
        }
        names.iter().enumerate().map(|(i, n)| parse_layer_type(f, i, n)).collect::<Result<_, _>>()?
    } else if gemma2 {
        (0..num_hidden_layers).map(|i| if (i + 1) % 2 != 0 { LayerType::Sliding } else { LayerType::Full }).collect()
    } else if gemma3 {
        let pattern = match f.opt_usize("sliding_window_pattern")? {
            Some(p) => p,
            None => f.opt_usize("_sliding_window_pattern")?.unwrap_or(6),
        };
        if pattern == 0 {
            return Err(f.invalid("sliding_window_pattern", "must be at least 1"));
        }
        (0..num_hidden_layers)
            .map(|i| if (i + 1) % pattern != 0 { LayerType::Sliding } else { LayerType::Full })
            .collect()
    } else if is_qwen_family(&model_type) {
        let max_window_layers = f.opt_usize("max_window_layers")?.unwrap_or(28);
        (0..num_hidden_layers)
            .map(
                |i| {
                    if sliding_window.is_some() && i >= max_window_layers {
                        LayerType::Sliding
                    } else {
                        LayerType::Full
                    }
                },
            )
            .collect()
    } else if sliding_window.is_some() {
        vec![LayerType::Sliding; num_hidden_layers]
    } else {
        vec![LayerType::Full; num_hidden_layers]
    };
    if sliding_window.is_none() && layer_types.contains(&LayerType::Sliding) {
        return Err(f.invalid("layer_types", "names sliding_attention layers but sliding_window is not set"));
    }

    let (query_pre_attn_scalar, attn_logit_softcapping, final_logit_softcapping) = if gemma2 {
        (
            f.f64_or_default_unless_null("query_pre_attn_scalar", Some(256.0))?,
            f.f64_or_default_unless_null("attn_logit_softcapping", Some(50.0))?,
            f.f64_or_default_unless_null("final_logit_softcapping", Some(30.0))?,
        )
    } else if gemma3 {
        (
            f.f64_or_default_unless_null("query_pre_attn_scalar", Some(256.0))?,
            f.opt_f64("attn_logit_softcapping")?,
            f.opt_f64("final_logit_softcapping")?,
        )
    } else {
        (
            f.opt_f64("query_pre_attn_scalar")?,
            f.opt_f64("attn_logit_softcapping")?,
            f.opt_f64("final_logit_softcapping")?,
        )
    };
    for (key, v) in [
        ("query_pre_attn_scalar", query_pre_attn_scalar),
        ("attn_logit_softcapping", attn_logit_softcapping),
        ("final_logit_softcapping", final_logit_softcapping),
    ] {
        if let Some(v) = v {
            if v <= 0.0 {
                return Err(f.invalid(key, format!("{v} must be positive")));
            }
        }
    }

    let moe = moe::parse_moe(f, &model_type, intermediate_size, num_hidden_layers)?;

    // Token ids may sit on the wrapper rather than in `text_config`.
    let token_fields = match parent {
        Some(p) if !f.has("eos_token_id") && !f.has("bos_token_id") => p,
        _ => f,
    };
    let mut dtype = None;
    for source in std::iter::once(f).chain(parent) {
        if let Some(d) = source.opt_str("dtype")?.or(source.opt_str("torch_dtype")?) {
            dtype = Some(d.to_string());
            break;
        }
    }

    Ok(HfConfig {
        model_type,
        architectures,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        max_position_embeddings,
        rms_norm_eps,
        tie_word_embeddings,
        attention_bias,
        qkv_bias,
        o_bias: attention_bias,
        mlp_bias,
        hidden_act,
        rope: rope.global,
        local_rope: rope.local,
        partial_rotary_factor: rope.partial_rotary_factor,
        sliding_window,
        layer_types,
        query_pre_attn_scalar,
        attn_logit_softcapping,
        final_logit_softcapping,
        moe,
        mla,
        bos_token_id: token_fields.opt_u32("bos_token_id")?,
        eos_token_ids: token_fields.opt_u32_or_list("eos_token_id")?,
        pad_token_id: token_fields.opt_u32("pad_token_id")?,
        dtype,
    })
}

#[cfg(test)]
mod tests;
