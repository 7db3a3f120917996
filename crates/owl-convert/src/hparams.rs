//! `{arch}.*` hyper-parameters, as llama.cpp's converter writes them for each family
//! (convert_hf_to_gguf.py `set_gguf_parameters`), plus the few keys owl and llama.cpp both
//! read that the converter leaves out where its hard-coded defaults would misdescribe the
//! model (noted where they are written).

use owl_formats::hf_config::{HfConfig, RopeScaling};
use serde_json::Value;

use crate::arch::Arch;
use crate::error::ConvertError;
use crate::file_type::FileType;
use crate::metadata::Metadata;
use crate::plan::PlannedTensor;

/// A config field as the raw JSON has it (the top level, or a nested `text_config`).
fn raw<'a>(raw: &'a Value, key: &str) -> Option<&'a Value> {
    raw.get(key).or_else(|| raw.get("text_config").and_then(|t| t.get(key))).filter(|v| !v.is_null())
}

pub fn write(
    m: &mut Metadata,
    arch: Arch,
    cfg: &HfConfig,
    raw_cfg: &Value,
    ft: FileType,
    planned: &[PlannedTensor],
) -> Result<(), ConvertError> {
    let a = arch.gguf_name();
    let k = |suffix: &str| format!("{a}.{suffix}");
    // TextModel.set_gguf_parameters: the shared keys.
    m.u32(k("block_count"), cfg.num_hidden_layers);
    m.u32(k("context_length"), cfg.max_position_embeddings);
    m.u32(k("embedding_length"), cfg.hidden_size);
    if arch != Arch::Deepseek2 || raw(raw_cfg, "intermediate_size").is_some() {
        m.u32(k("feed_forward_length"), cfg.intermediate_size);
    }
    m.u32(k("attention.head_count"), cfg.num_attention_heads);
    // DeepseekV2Model: MLA is written as MQA over the latent (one key/value head).
    m.u32(k("attention.head_count_kv"), if arch == Arch::Deepseek2 { 1 } else { cfg.num_key_value_heads });
    // GemmaModel and Gemma2Model write no theta (llama.cpp assumes 1e4); one that differs
    // is stated.
    if !matches!(arch, Arch::Gemma | Arch::Gemma2) || cfg.rope.theta != 10_000.0 {
        m.f32(k("rope.freq_base"), cfg.rope.theta);
    }
    m.f32(k("attention.layer_norm_rms_epsilon"), cfg.rms_norm_eps);
    if let Some(moe) = &cfg.moe {
        m.u32(k("expert_count"), moe.num_experts);
        m.u32(k("expert_used_count"), moe.num_experts_per_tok);
    }
    // Phi3MiniModel writes its own keys, without these.
    if raw(raw_cfg, "head_dim").is_some() && !matches!(arch, Arch::Deepseek2 | Arch::Phi3) {
        m.u32(k("attention.key_length"), cfg.head_dim);
        m.u32(k("attention.value_length"), cfg.head_dim);
    }
    m.u32("general.file_type", ft.llama_ftype() as usize);

    match arch {
        Arch::Llama => {
            m.u32(k("vocab_size"), cfg.vocab_size);
            m.u32(k("rope.dimension_count"), cfg.rotary_dim());
            if let RopeScaling::Linear { factor } = cfg.rope.scaling {
                m.string(k("rope.scaling.type"), "linear");
                m.f32(k("rope.scaling.factor"), factor);
            }
            // Not written by llama.cpp's converter (its llama graph has no window): Mistral
            // v0.1's sliding window, which owl honours.
            if let Some(w) = cfg.sliding_window {
                m.u32(k("attention.sliding_window"), w);
            }
        }
        Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe => {
            if let Some(moe) = &cfg.moe {
                m.u32(k("expert_feed_forward_length"), moe.expert_intermediate_size);
            }
            yarn(m, &k, cfg, raw_cfg);
        }
        Arch::Phi3 => {
            m.u32(k("rope.dimension_count"), cfg.rotary_dim());
            let original = match &cfg.rope.scaling {
                RopeScaling::LongRope { original_max_position_embeddings, .. } => {
                    Some(*original_max_position_embeddings)
                }
                _ => rope_params(raw_cfg)
                    .and_then(|r| r.get("original_max_position_embeddings"))
                    .or_else(|| raw(raw_cfg, "original_max_position_embeddings"))
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
            };
            if let Some(n) = original {
                m.u32(k("rope.scaling.original_context_length"), n);
            }
            if let RopeScaling::LongRope { attention_factor, .. } = &cfg.rope.scaling {
                m.f32(k("rope.scaling.attn_factor"), *attention_factor);
            }
            // 0 when there is none: llama.cpp tells Phi-4 from Phi-3 by it.
            m.u32(k("attention.sliding_window"), cfg.sliding_window.unwrap_or(0));
        }
        Arch::Gemma => {}
        Arch::Gemma2 => {
            if let Some(c) = cfg.attn_logit_softcapping {
                m.f32(k("attn_logit_softcapping"), c);
            }
            if let Some(c) = cfg.final_logit_softcapping {
                m.f32(k("final_logit_softcapping"), c);
            }
            if let Some(w) = cfg.sliding_window {
                m.u32(k("attention.sliding_window"), w);
            }
            sliding_pattern(m, &k, cfg, 2);
            attention_scale(m, &k, cfg);
        }
        Arch::Gemma3 => {
            if let Some(w) = cfg.sliding_window {
                m.u32(k("attention.sliding_window"), w);
            }
            if let RopeScaling::Linear { factor } = cfg.rope.scaling {
                m.string(k("rope.scaling.type"), "linear");
                m.f32(k("rope.scaling.factor"), factor);
            }
            // llama.cpp assumes 5 sliding layers of every 6 and a local theta of 1e4; a
            // config that says otherwise gets the keys that state it.
            sliding_pattern(m, &k, cfg, 6);
            if let Some(local) = &cfg.local_rope {
                m.f32(k("rope.freq_base_swa"), local.theta);
            }
            attention_scale(m, &k, cfg);
        }
        Arch::Deepseek2 => deepseek(m, &k, cfg, raw_cfg, planned)?,
    }
    Ok(())
}

/// The RoPE parameters of the full-attention layers as the config states them
/// (transformers 5's `rope_parameters`, or `rope_scaling`).
fn rope_params(raw_cfg: &Value) -> Option<&Value> {
    let r = raw(raw_cfg, "rope_parameters").or_else(|| raw(raw_cfg, "rope_scaling"))?;
    Some(r.get("full_attention").unwrap_or(r))
}

/// YaRN settings (TextModel.set_gguf_parameters): type, factor, original context, and the
/// extrapolation/attention factors and betas the config states.
fn yarn(m: &mut Metadata, k: &dyn Fn(&str) -> String, cfg: &HfConfig, raw_cfg: &Value) {
    if let RopeScaling::Yarn { factor, original_max_position_embeddings, .. } = cfg.rope.scaling {
        m.string(k("rope.scaling.type"), "yarn");
        m.f32(k("rope.scaling.factor"), factor);
        m.u32(k("rope.scaling.original_context_length"), original_max_position_embeddings);
        let params = rope_params(raw_cfg);
        let number = |names: &[&str]| names.iter().find_map(|n| params?.get(*n)?.as_f64());
        for (key, names) in [
            ("rope.scaling.yarn_ext_factor", &["extrapolation_factor"][..]),
            ("rope.scaling.yarn_attn_factor", &["attention_factor", "attn_factor"][..]),
            ("rope.scaling.yarn_beta_fast", &["beta_fast"][..]),
            ("rope.scaling.yarn_beta_slow", &["beta_slow"][..]),
        ] {
            if let Some(v) = number(names) {
                m.f32(k(key), v);
            }
        }
    }
}

/// `attention.sliding_window_pattern` as one flag per layer, written only when the
/// config's layer types differ from llama.cpp's fixed period for the family.
fn sliding_pattern(m: &mut Metadata, k: &dyn Fn(&str) -> String, cfg: &HfConfig, period: usize) {
    let n = cfg.num_hidden_layers;
    let assumed = (0..n).map(|l| l % period < period - 1);
    let actual: Vec<bool> = (0..n).map(|l| cfg.is_sliding_layer(l)).collect();
    if assumed.ne(actual.iter().copied()) {
        let flags = actual.iter().map(|&s| i32::from(s)).collect();
        m.set(
            k("attention.sliding_window_pattern"),
            owl_formats::gguf::MetadataValue::Array(owl_formats::gguf::MetadataArray::I32(flags)),
        );
    }
}

/// Gemma 2/3 scale scores by `query_pre_attn_scalar^-0.5`; llama.cpp assumes head_dim
/// (27B: hidden/heads), so a config that differs states its scale in `attention.scale`.
fn attention_scale(m: &mut Metadata, k: &dyn Fn(&str) -> String, cfg: &HfConfig) {
    if let Some(s) = cfg.query_pre_attn_scalar {
        let assumed =
            if cfg.num_hidden_layers == 62 { cfg.hidden_size / cfg.num_attention_heads.max(1) } else { cfg.head_dim };
        if s != assumed as f64 {
            m.f32(k("attention.scale"), s.powf(-0.5));
        }
    }
}

/// DeepSeek V2/V3 (DeepseekV2Model.set_gguf_parameters).
fn deepseek(
    m: &mut Metadata,
    k: &dyn Fn(&str) -> String,
    cfg: &HfConfig,
    raw_cfg: &Value,
    planned: &[PlannedTensor],
) -> Result<(), ConvertError> {
    let mla = cfg.mla.as_ref().ok_or_else(|| ConvertError::field("kv_lora_rank", "missing for DeepSeek"))?;
    m.u32(k("vocab_size"), cfg.vocab_size);
    if let Some(r) = mla.q_lora_rank {
        m.u32(k("attention.q_lora_rank"), r);
    }
    m.u32(k("attention.kv_lora_rank"), mla.kv_lora_rank);
    // The absorbed (MQA) form's sizes, and the per-head sizes in *_mla.
    m.u32(k("attention.key_length"), mla.kv_lora_rank + mla.qk_rope_head_dim);
    m.u32(k("attention.value_length"), mla.kv_lora_rank);
    m.u32(k("attention.key_length_mla"), mla.qk_nope_head_dim + mla.qk_rope_head_dim);
    m.u32(k("attention.value_length_mla"), mla.v_head_dim);
    if let Some(moe) = &cfg.moe {
        m.u32(k("leading_dense_block_count"), moe.first_k_dense_replace);
        m.u32(k("expert_feed_forward_length"), moe.expert_intermediate_size);
        m.u32(k("expert_shared_count"), moe.n_shared_experts);
        m.f32(k("expert_weights_scale"), moe.routed_scaling_factor);
        if moe.norm_topk_prob {
            m.bool(k("expert_weights_norm"), true);
        }
        // Written from scoring_func as llama.cpp does; a V3 config that leaves it out means
        // sigmoid (transformers' DeepseekV3), which llama.cpp's default (softmax) would
        // misdescribe, so owl states it.
        let sigmoid = moe.scoring == owl_formats::hf_config::RouterScoring::Sigmoid;
        if raw(raw_cfg, "scoring_func").is_some() || sigmoid {
            m.u32(k("expert_gating_func"), if sigmoid { 2 } else { 1 });
        }
        if raw(raw_cfg, "n_group").is_some() {
            m.u32(k("expert_group_count"), moe.n_group);
        }
        if raw(raw_cfg, "topk_group").is_some() {
            m.u32(k("expert_group_used_count"), moe.topk_group);
        }
    }
    m.u32(k("rope.dimension_count"), mla.qk_rope_head_dim);
    if let RopeScaling::Yarn { .. } = cfg.rope.scaling {
        yarn(m, k, cfg, raw_cfg);
        let mscale_all = raw(raw_cfg, "rope_scaling")
            .or_else(|| raw(raw_cfg, "rope_parameters"))
            .and_then(|r| r.get("mscale_all_dim"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        m.f32(k("rope.scaling.yarn_log_multiplier"), 0.1 * mscale_all);
    }
    let _ = planned;
    Ok(())
}
