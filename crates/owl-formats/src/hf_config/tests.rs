//! Unit tests: malformed and edge-case configs give errors naming the field.

use super::*;
use serde_json::json;

/// A minimal valid Llama config to mutate.
fn base() -> Value {
    json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0
    })
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v.as_object_mut().expect("object").insert(key.to_string(), val);
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

fn err(v: Value) -> String {
    match HfConfig::from_value(&v) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_derives_defaults() {
    let c = HfConfig::from_value(&base()).expect("valid");
    assert_eq!(c.head_dim, 16);
    assert_eq!(c.num_key_value_heads, 2);
    assert_eq!(c.rope, RopeConfig { theta: 10000.0, scaling: RopeScaling::None });
    assert_eq!(c.layer_types, vec![LayerType::Full; 2]);
    assert_eq!(c.hidden_act, Activation::Silu);
    assert!(!c.tie_word_embeddings);
    assert!(c.moe.is_none() && c.mla.is_none() && c.local_rope.is_none());
    assert_eq!(c.partial_rotary_factor, 1.0);
    assert_eq!(c.rotary_dim(), 16);
    let c = HfConfig::from_value(&without(base(), "num_key_value_heads")).expect("valid");
    assert_eq!(c.num_key_value_heads, 4);
}

#[test]
fn missing_required_field_is_named() {
    for key in
        ["model_type", "vocab_size", "hidden_size", "num_hidden_layers", "rms_norm_eps", "max_position_embeddings"]
    {
        let msg = err(without(base(), key));
        assert_eq!(msg, format!("missing required field `{key}`"));
    }
    // null counts as missing
    assert_eq!(err(with(base(), "hidden_size", Value::Null)), "missing required field `hidden_size`");
}

#[test]
fn wrong_types_are_named() {
    assert_eq!(
        err(with(base(), "hidden_size", json!("64"))),
        "field `hidden_size`: expected a non-negative integer, found string \"64\""
    );
    assert_eq!(
        err(with(base(), "num_attention_heads", json!(-4))),
        "field `num_attention_heads`: expected a non-negative integer, found number -4"
    );
    assert_eq!(
        err(with(base(), "tie_word_embeddings", json!(1))),
        "field `tie_word_embeddings`: expected a boolean, found number 1"
    );
    assert_eq!(
        err(with(base(), "rope_scaling", json!([1, 2]))),
        "field `rope_scaling`: expected an object, found an array of 2"
    );
    assert_eq!(
        err(with(base(), "rope_scaling", json!({"rope_type": "linear", "factor": "8"}))),
        "field `rope_scaling.factor`: expected a number, found string \"8\""
    );
    assert_eq!(
        err(with(base(), "eos_token_id", json!([2, "x"]))),
        "field `eos_token_id[1]`: expected a non-negative integer, found string \"x\""
    );
    assert!(matches!(HfConfig::from_json_str("[1]"), Err(HfConfigError::NotAnObject { .. })));
    assert!(matches!(HfConfig::from_json_str("{\"a\": "), Err(HfConfigError::Json { line: 1, .. })));
}

#[test]
fn integral_floats_are_accepted_as_integers() {
    let c = HfConfig::from_value(&with(base(), "max_position_embeddings", json!(4096.0))).expect("valid");
    assert_eq!(c.max_position_embeddings, 4096);
    assert!(err(with(base(), "max_position_embeddings", json!(4096.5))).contains("max_position_embeddings"));
}

#[test]
fn inconsistent_values_are_rejected() {
    assert_eq!(
        err(with(base(), "num_key_value_heads", json!(3))),
        "field `num_key_value_heads`: 3 does not divide num_attention_heads 4"
    );
    assert!(err(with(base(), "hidden_size", json!(66))).starts_with("field `head_dim`: absent, and hidden_size 66"));
    assert!(err(with(base(), "vocab_size", json!(0))).contains("`vocab_size`: must be at least 1"));
    assert!(err(with(base(), "layer_types", json!(["full_attention"]))).contains("has 1 entries for 2 layers"));
    assert_eq!(
        err(with(base(), "layer_types", json!(["full_attention", "linear_attention"]))),
        "field `layer_types[1]`: unsupported value \"linear_attention\""
    );
    assert!(err(with(base(), "layer_types", json!(["full_attention", "sliding_attention"])))
        .contains("sliding_window is not set"));
    assert!(err(with(base(), "partial_rotary_factor", json!(1.5))).contains("outside (0, 1]"));
    assert_eq!(err(with(base(), "hidden_act", json!("mish"))), "field `hidden_act`: unsupported value \"mish\"");
}

#[test]
fn rope_scaling_errors_name_the_field() {
    assert_eq!(
        err(with(base(), "rope_scaling", json!({"type": "su2"}))),
        "field `rope_scaling.type`: unsupported value \"su2\""
    );
    assert_eq!(
        err(with(base(), "rope_parameters", json!({"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}))),
        "missing required field `rope_parameters.low_freq_factor`"
    );
    assert_eq!(
        err(with(base(), "rope_scaling", json!({"rope_type": "linear"}))),
        "missing required field `rope_scaling.factor`"
    );
    assert!(
        err(with(base(), "rope_scaling", json!({"rope_type": "linear", "factor": 0.0}))).contains("must be positive")
    );
    assert!(err(with(
        base(),
        "rope_scaling",
        json!({"type": "longrope", "short_factor": [1.0], "long_factor": [1.0, 2.0]})
    ))
    .contains("`rope_scaling.long_factor`: has 2 entries but short_factor has 1"));
}

#[test]
fn yarn_attention_factor_follows_transformers() {
    let v = with(
        base(),
        "rope_scaling",
        json!({"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
               "mscale": 1.0, "mscale_all_dim": 0.707}),
    );
    let c = HfConfig::from_value(&v).expect("valid");
    let RopeScaling::Yarn { attention_factor, beta_fast, beta_slow, truncate, .. } = c.rope.scaling else {
        panic!("not yarn: {:?}", c.rope.scaling)
    };
    let want = (0.1 * 40f64.ln() + 1.0) / (0.1 * 0.707 * 40f64.ln() + 1.0);
    assert!((attention_factor - want).abs() < 1e-12);
    assert_eq!((beta_fast, beta_slow, truncate), (32.0, 1.0, true));
    // Without mscale pair: mscale(factor, 1).
    let v =
        with(base(), "rope_scaling", json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}));
    let c = HfConfig::from_value(&v).expect("valid");
    let RopeScaling::Yarn { attention_factor, .. } = c.rope.scaling else { panic!() };
    assert!((attention_factor - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
}

#[test]
fn gemma2_defaults_differ_between_absent_and_null() {
    let g = with(with(base(), "model_type", json!("gemma2")), "num_hidden_layers", json!(4));
    let c = HfConfig::from_value(&g).expect("valid");
    assert_eq!(c.attn_logit_softcapping, Some(50.0));
    assert_eq!(c.final_logit_softcapping, Some(30.0));
    assert_eq!(c.query_pre_attn_scalar, Some(256.0));
    assert_eq!(c.sliding_window, Some(4096));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.hidden_act, Activation::GeluTanh);
    use LayerType::{Full, Sliding};
    assert_eq!(c.layer_types, vec![Sliding, Full, Sliding, Full]);
    let c = HfConfig::from_value(&with(g, "attn_logit_softcapping", Value::Null)).expect("valid");
    assert_eq!(c.attn_logit_softcapping, None);
}

#[test]
fn gemma3_pattern_defaults_and_text_config_wrapper() {
    let text =
        with(with(without(base(), "rope_theta"), "model_type", json!("gemma3_text")), "num_hidden_layers", json!(7));
    let c = HfConfig::from_value(&text).expect("valid");
    use LayerType::{Full, Sliding};
    assert_eq!(c.layer_types, vec![Sliding, Sliding, Sliding, Sliding, Sliding, Full, Sliding]);
    assert_eq!(c.rope.theta, 1_000_000.0);
    assert_eq!(c.local_rope, Some(RopeConfig { theta: 10_000.0, scaling: RopeScaling::None }));
    assert_eq!(c.rope_for_layer(0).theta, 10_000.0);
    assert_eq!(c.rope_for_layer(5).theta, 1_000_000.0);

    let wrapper = json!({
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "eos_token_id": [1, 106],
        "torch_dtype": "bfloat16",
        "text_config": without(without(text.clone(), "model_type"), "architectures"),
    });
    let w = HfConfig::from_value(&wrapper).expect("valid");
    assert_eq!(w.model_type, "gemma3_text");
    assert_eq!(w.architectures, vec!["Gemma3ForConditionalGeneration".to_string()]);
    assert_eq!(w.eos_token_ids, vec![1, 106]);
    assert_eq!(w.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(w.layer_types, c.layer_types);
    let msg = err(json!({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}}));
    assert_eq!(msg, "missing required field `text_config.vocab_size`");
}

#[test]
fn qwen_sliding_window_needs_use_sliding_window() {
    let q = with(with(base(), "model_type", json!("qwen2")), "sliding_window", json!(32768));
    let c = HfConfig::from_value(&q).expect("valid");
    assert_eq!(c.sliding_window, None);
    assert!(c.qkv_bias && !c.o_bias);
    let q = with(with(q, "use_sliding_window", json!(true)), "max_window_layers", json!(1));
    let c = HfConfig::from_value(&q).expect("valid");
    assert_eq!(c.sliding_window, Some(32768));
    assert_eq!(c.layer_types, vec![LayerType::Full, LayerType::Sliding]);
}

#[test]
fn moe_layer_rules_and_validation() {
    let ds = json!({
        "model_type": "deepseek_v3", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 5, "num_attention_heads": 4, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 2,
        "first_k_dense_replace": 1, "moe_layer_freq": 2, "n_group": 4, "topk_group": 2,
        "kv_lora_rank": 32, "q_lora_rank": null, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16
    });
    let c = HfConfig::from_value(&ds).expect("valid");
    let moe = c.moe.as_ref().expect("moe");
    assert_eq!(moe.sparse_layers, vec![false, false, true, false, true]);
    assert_eq!((moe.scoring, moe.topk_method), (RouterScoring::Sigmoid, TopkMethod::NoAuxTc));
    assert!(moe.norm_topk_prob);
    assert_eq!(moe.shared_expert_intermediate_size, 64);
    assert_eq!(c.head_dim, 8);
    let mla = c.mla.as_ref().expect("mla");
    assert_eq!((mla.q_lora_rank, mla.qk_head_dim(), mla.rope_interleave), (None, 24, true));
    assert_eq!(c.rotary_dim(), 8);

    assert!(err(with(ds.clone(), "n_group", json!(3))).contains("`n_group`: 3 does not divide the 8 experts"));
    assert!(err(with(ds.clone(), "topk_group", json!(5))).contains("`topk_group`: 5 is not in 1..=4"));
    assert!(err(with(ds.clone(), "num_experts_per_tok", json!(9))).contains("exceeds the 8 experts"));
    assert_eq!(
        err(with(ds.clone(), "topk_method", json!("random"))),
        "field `topk_method`: unsupported value \"random\""
    );
    assert_eq!(err(without(ds.clone(), "qk_rope_head_dim")), "missing required field `qk_rope_head_dim`");

    let qwen = with(
        with(with(base(), "model_type", json!("qwen3_moe")), "num_experts", json!(4)),
        "num_experts_per_tok",
        json!(2),
    );
    let qwen = with(
        with(with(qwen, "num_hidden_layers", json!(4)), "decoder_sparse_step", json!(2)),
        "mlp_only_layers",
        json!([3]),
    );
    let c = HfConfig::from_value(&qwen).expect("valid");
    let moe = c.moe.as_ref().expect("moe");
    assert_eq!(moe.sparse_layers, vec![false, true, false, false]);
    assert_eq!(moe.expert_intermediate_size, 128);
    assert!(!moe.norm_topk_prob);
    assert!(c.is_moe_layer(1) && !c.is_moe_layer(0) && !c.is_moe_layer(99));
}

#[test]
fn file_errors_carry_the_path() {
    let e = HfConfig::from_file(Path::new("/nonexistent/config.json")).expect_err("missing file");
    assert_eq!(e.to_string(), "cannot read /nonexistent/config.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("config.json");
    std::fs::write(&p, without(base(), "hidden_size").to_string()).expect("write");
    let e = HfConfig::from_model_dir(dir.path()).expect_err("bad config");
    assert_eq!(e.to_string(), p.display().to_string());
    let source = std::error::Error::source(&e).expect("source").to_string();
    assert_eq!(source, "missing required field `hidden_size`");
}

/// Shapes of real Hub configs (abridged to the fields that matter here).
#[test]
fn hub_config_shapes() {
    // Llama 3.1 8B.
    let c = HfConfig::from_value(&json!({
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"
    }))
    .expect("llama 3.1");
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert!(matches!(c.rope.scaling, RopeScaling::Llama3 { original_max_position_embeddings: 8192, .. }));

    // Qwen2.5: a sliding_window value that is switched off.
    let c = HfConfig::from_value(&json!({
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": null,
        "sliding_window": 131072, "use_sliding_window": false, "max_window_layers": 21, "tie_word_embeddings": true
    }))
    .expect("qwen2.5");
    assert_eq!((c.head_dim, c.sliding_window), (64, None));
    assert_eq!(c.layer_types, vec![LayerType::Full; 24]);
    assert!(c.tie_word_embeddings && c.qkv_bias);

    // Phi-3.5-mini: LongRoPE with original_max_position_embeddings at the top level only.
    let short: Vec<f64> = (0..48).map(|i| 1.0 + i as f64 / 100.0).collect();
    let long: Vec<f64> = (0..48).map(|i| 1.0 + i as f64).collect();
    let c = HfConfig::from_value(&json!({
        "model_type": "phi3", "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "sliding_window": 262144,
        "rope_scaling": {"long_factor": long, "short_factor": short, "type": "longrope"}
    }))
    .expect("phi-3.5");
    let RopeScaling::LongRope { original_max_position_embeddings, attention_factor, ref long_factor, .. } =
        c.rope.scaling
    else {
        panic!("{:?}", c.rope.scaling)
    };
    assert_eq!((original_max_position_embeddings, long_factor.len()), (4096, 48));
    let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
    assert!((attention_factor - want).abs() < 1e-12);
    assert_eq!(c.layer_types, vec![LayerType::Sliding; 32]);

    // DeepSeek-V3 (671B): YaRN spelled with `type`, group-limited sigmoid routing.
    let c = HfConfig::from_value(&json!({
        "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
        "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
        "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1,
        "first_k_dense_replace": 3, "norm_topk_prob": true, "scoring_func": "sigmoid",
        "max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "num_nextn_predict_layers": 1
    }))
    .expect("deepseek-v3");
    assert_eq!(c.head_dim, 64);
    let moe = c.moe.as_ref().expect("moe");
    assert_eq!((moe.n_group, moe.topk_group, moe.num_experts), (8, 4, 256));
    assert_eq!(moe.sparse_layers.iter().filter(|s| **s).count(), 58);
    assert!(!moe.sparse_layers[2] && moe.sparse_layers[3]);
    let RopeScaling::Yarn { factor, attention_factor, mscale_all_dim, .. } = c.rope.scaling else {
        panic!("{:?}", c.rope.scaling)
    };
    assert_eq!((factor, attention_factor, mscale_all_dim), (40.0, 1.0, Some(1.0)));

    // Gemma 3 270M: explicit layer_types, local base frequency, sliding window 512.
    let mut layer_types = vec!["sliding_attention"; 18];
    for i in [5, 11, 17] {
        layer_types[i] = "full_attention";
    }
    let c = HfConfig::from_value(&json!({
        "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
        "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": null,
        "rope_local_base_freq": 10000.0, "sliding_window": 512, "_sliding_window_pattern": 6,
        "layer_types": layer_types, "query_pre_attn_scalar": 256, "attn_logit_softcapping": null,
        "final_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh"
    }))
    .expect("gemma-3-270m");
    assert_eq!((c.head_dim, c.sliding_window, c.query_pre_attn_scalar), (256, Some(512), Some(256.0)));
    assert!(c.is_sliding_layer(4) && !c.is_sliding_layer(5));
    assert_eq!(c.rope_for_layer(4).theta, 10_000.0);
    assert_eq!(c.rope_for_layer(5).theta, 1_000_000.0);
}

#[test]
fn absurd_layer_count_is_refused_before_allocating() {
    let e = err(with(base(), "num_hidden_layers", json!(1_000_000_000_000u64)));
    assert!(e.contains("num_hidden_layers") && e.contains("more than 4096"), "{e}");
}
