//! Every fixture config parses in both spellings (transformers 5 `config.json` and the Hub's
//! `config.legacy.json`) to EQUAL typed configs, with per-variant spot checks of the values
//! the fixtures README documents.

use owl_formats::hf_config::{
    Activation, HfConfig, LayerType, MoeConfig, RopeConfig, RopeScaling, RouterScoring, TopkMethod,
};
use LayerType::{Full, Sliding};

const VARIANTS: [&str; 19] = [
    "llama",
    "llama3_rope",
    "llama_tied",
    "mistral",
    "mixtral",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_rope_scaling",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "phi3",
    "phi3_partial_rotary",
    "phi3_longrope",
    "phi3_longrope_long",
    "deepseek_v3",
    "deepseek_v3_yarn_groups",
    "deepseek_v2",
];

fn load(variant: &str) -> HfConfig {
    let v5 = HfConfig::from_file(&owl_test::fixture(&format!("models/{variant}/config.json")))
        .unwrap_or_else(|e| panic!("{variant}/config.json: {e}: {:?}", std::error::Error::source(&e)));
    let legacy = HfConfig::from_file(&owl_test::fixture(&format!("models/{variant}/config.legacy.json")))
        .unwrap_or_else(|e| panic!("{variant}/config.legacy.json: {e}: {:?}", std::error::Error::source(&e)));
    assert_eq!(v5, legacy, "{variant}: config.json and config.legacy.json normalise differently");
    v5
}

fn rope(theta: f64) -> RopeConfig {
    RopeConfig { theta, scaling: RopeScaling::None }
}

#[test]
fn every_fixture_variant_is_covered() {
    let dir = owl_test::fixture("models");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("models dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = VARIANTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "fixture variants changed: update VARIANTS and the spot checks");
}

#[test]
fn both_spellings_agree_and_common_values() {
    for variant in VARIANTS {
        let c = load(variant);
        let reference = owl_test::fixture_json(&format!("models/{variant}/reference.json"));
        assert_eq!(c.model_type, reference["model_type"].as_str().expect("model_type"), "{variant}");
        assert_eq!(c.architectures, vec![reference["architecture"].as_str().expect("architecture").to_string()]);
        assert_eq!(c.vocab_size, 512, "{variant}");
        assert_eq!(c.hidden_size, 64, "{variant}");
        assert_eq!(c.intermediate_size, 128, "{variant}");
        assert_eq!(c.max_position_embeddings, 128, "{variant}");
        assert_eq!(c.layer_types.len(), c.num_hidden_layers, "{variant}");
        assert_eq!(c.bos_token_id, Some(1), "{variant}");
        assert_eq!(c.eos_token_ids, vec![2], "{variant}");
        assert_eq!(c.dtype.as_deref(), Some("float32"), "{variant}");
        assert!(c.num_hidden_layers == 2 || c.num_hidden_layers == 3, "{variant}");
    }
}

#[test]
fn llama_family() {
    let c = load("llama");
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.num_hidden_layers), (4, 2, 16, 2));
    assert_eq!(c.rope, rope(10_000.0));
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.hidden_act, Activation::Silu);
    assert!(!c.tie_word_embeddings && !c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert_eq!(c.layer_types, vec![Full, Full]);
    assert_eq!((c.sliding_window, c.local_rope.as_ref(), c.moe.as_ref(), c.mla.as_ref()), (None, None, None, None));

    let c = load("llama3_rope");
    assert_eq!(
        c.rope,
        RopeConfig {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64
            }
        }
    );

    let c = load("llama_tied");
    assert!(c.tie_word_embeddings);
    assert_eq!(c.num_hidden_layers, 3);
}

#[test]
fn mistral_and_mixtral() {
    let c = load("mistral");
    assert_eq!(c.sliding_window, Some(8));
    assert_eq!(c.layer_types, vec![Sliding, Sliding]);
    assert!(c.is_sliding_layer(0) && c.is_sliding_layer(1));

    let c = load("mixtral");
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.layer_types, vec![Full, Full]);
    assert_eq!(c.rope, rope(1_000_000.0));
    assert_eq!(c.rms_norm_eps, 1e-5);
    let moe = c.moe.as_ref().expect("mixtral is MoE");
    assert_eq!(
        moe,
        &MoeConfig {
            num_experts: 4,
            num_experts_per_tok: 2,
            expert_intermediate_size: 128,
            norm_topk_prob: true,
            scoring: RouterScoring::Softmax,
            topk_method: TopkMethod::Greedy,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            n_shared_experts: 0,
            shared_expert_intermediate_size: 0,
            shared_expert_gate: false,
            first_k_dense_replace: 0,
            moe_layer_freq: 1,
            decoder_sparse_step: 1,
            mlp_only_layers: vec![],
            sparse_layers: vec![true, true],
        }
    );
}

#[test]
fn gemma_family() {
    let c = load("gemma");
    assert!(c.tie_word_embeddings);
    assert_eq!(c.hidden_act, Activation::GeluTanh);
    assert_eq!((c.num_key_value_heads, c.head_dim), (1, 16));
    assert_eq!(c.query_pre_attn_scalar, None);

    let c = load("gemma2");
    assert_eq!(c.hidden_act, Activation::GeluTanh);
    assert_eq!(c.attn_logit_softcapping, Some(1.0));
    assert_eq!(c.final_logit_softcapping, Some(3.0));
    assert_eq!(c.query_pre_attn_scalar, Some(32.0));
    assert_eq!(c.sliding_window, Some(8));
    assert_eq!(c.layer_types, vec![Sliding, Full, Sliding]);
    assert_eq!(c.local_rope, None);
    assert!(c.tie_word_embeddings);

    let c = load("gemma3");
    assert_eq!(c.model_type, "gemma3_text");
    assert_eq!(c.layer_types, vec![Sliding, Sliding, Full]);
    assert_eq!(c.sliding_window, Some(8));
    assert_eq!(c.rope, rope(1_000_000.0));
    assert_eq!(c.local_rope, Some(rope(10_000.0)));
    assert_eq!(c.rope_for_layer(0).theta, 10_000.0);
    assert_eq!(c.rope_for_layer(1).theta, 10_000.0);
    assert_eq!(c.rope_for_layer(2).theta, 1_000_000.0);
    assert_eq!(c.query_pre_attn_scalar, Some(32.0));
    assert_eq!((c.attn_logit_softcapping, c.final_logit_softcapping), (None, None));

    let c = load("gemma3_rope_scaling");
    assert_eq!(c.rope, RopeConfig { theta: 1_000_000.0, scaling: RopeScaling::Linear { factor: 8.0 } });
    assert_eq!(c.local_rope, Some(rope(10_000.0)));
    assert_eq!(c.rope_for_layer(0), &rope(10_000.0));
}

#[test]
fn qwen_family() {
    let c = load("qwen2");
    assert!(c.qkv_bias && !c.o_bias && !c.attention_bias);
    assert_eq!(c.rope, rope(1_000_000.0));
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.layer_types, vec![Full, Full]);

    let c = load("qwen3");
    assert!(!c.qkv_bias);
    assert!(c.moe.is_none());

    let c = load("qwen3_moe");
    let moe = c.moe.as_ref().expect("qwen3_moe is MoE");
    assert_eq!((moe.num_experts, moe.num_experts_per_tok, moe.expert_intermediate_size), (4, 2, 64));
    assert!(moe.norm_topk_prob);
    assert_eq!((moe.scoring, moe.topk_method), (RouterScoring::Softmax, TopkMethod::Greedy));
    assert_eq!(moe.sparse_layers, vec![true, true]);
    assert_eq!(moe.n_shared_experts, 0);
}

#[test]
fn phi3_family() {
    let c = load("phi3");
    assert_eq!(c.partial_rotary_factor, 1.0);
    assert_eq!(c.rope, rope(10_000.0));
    assert_eq!(c.rotary_dim(), 16);
    assert_eq!(c.rms_norm_eps, 1e-5);

    let c = load("phi3_partial_rotary");
    assert_eq!(c.partial_rotary_factor, 0.5);
    assert_eq!(c.rotary_dim(), 8);

    let c = load("phi3_longrope");
    assert_eq!(c.partial_rotary_factor, 1.0);
    let RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor } =
        &c.rope.scaling
    else {
        panic!("phi3_longrope: {:?}", c.rope.scaling)
    };
    assert_eq!(short_factor, &vec![1.2675, 1.0994, 1.3296, 1.3284, 1.1164, 1.2125, 1.1035, 1.3149]);
    assert_eq!(long_factor, &vec![1.8253, 2.1474, 2.4371, 2.4613, 2.7804, 3.2037, 4.4051, 4.4198]);
    assert_eq!(*original_max_position_embeddings, 64);
    let want = (1.0 + (128.0f64 / 64.0).ln() / 64f64.ln()).sqrt();
    assert!((attention_factor - want).abs() < 1e-12, "{attention_factor} vs {want}");

    let c = load("phi3_longrope_long");
    assert_eq!(c.partial_rotary_factor, 0.75);
    assert_eq!(c.rotary_dim(), 12);
    let RopeScaling::LongRope { long_factor, original_max_position_embeddings, attention_factor, .. } = &c.rope.scaling
    else {
        panic!("phi3_longrope_long: {:?}", c.rope.scaling)
    };
    assert_eq!(long_factor.len(), 6);
    assert_eq!(long_factor[0], 1.8283);
    assert_eq!(*original_max_position_embeddings, 16);
    let want = (1.0 + (128.0f64 / 16.0).ln() / 16f64.ln()).sqrt();
    assert!((attention_factor - want).abs() < 1e-12, "{attention_factor} vs {want}");
}

#[test]
fn deepseek_family() {
    let c = load("deepseek_v3");
    let mla = c.mla.as_ref().expect("MLA");
    assert_eq!(
        (mla.q_lora_rank, mla.kv_lora_rank, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim),
        (Some(32), 32, 16, 8, 16)
    );
    assert!(mla.rope_interleave);
    assert_eq!(c.rotary_dim(), 8);
    let moe = c.moe.as_ref().expect("MoE");
    assert_eq!((moe.num_experts, moe.num_experts_per_tok, moe.expert_intermediate_size), (4, 2, 32));
    assert_eq!((moe.scoring, moe.topk_method), (RouterScoring::Sigmoid, TopkMethod::NoAuxTc));
    assert_eq!((moe.n_group, moe.topk_group), (1, 1));
    assert!(moe.norm_topk_prob);
    assert_eq!(moe.routed_scaling_factor, 2.5);
    assert_eq!((moe.n_shared_experts, moe.shared_expert_intermediate_size), (1, 32));
    assert_eq!(moe.first_k_dense_replace, 1);
    assert_eq!(moe.sparse_layers, vec![false, true, true]);
    assert_eq!(c.rope, rope(10_000.0));

    let c = load("deepseek_v3_yarn_groups");
    let moe = c.moe.as_ref().expect("MoE");
    assert_eq!((moe.n_group, moe.topk_group), (2, 1));
    assert_eq!(
        c.rope,
        RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 32,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: Some(1.0),
                mscale_all_dim: Some(1.0),
                attention_factor: 1.0,
                truncate: true,
            }
        }
    );

    let c = load("deepseek_v2");
    let mla = c.mla.as_ref().expect("MLA");
    assert_eq!(mla.q_lora_rank, None);
    let moe = c.moe.as_ref().expect("MoE");
    assert_eq!((moe.scoring, moe.topk_method), (RouterScoring::Softmax, TopkMethod::Greedy));
    assert!(!moe.norm_topk_prob);
    assert_eq!(moe.routed_scaling_factor, 2.0);
    assert_eq!((moe.n_shared_experts, moe.shared_expert_intermediate_size), (2, 64));
    assert_eq!((moe.n_group, moe.topk_group), (1, 1));
    assert_eq!(moe.sparse_layers, vec![false, true, true]);
}
