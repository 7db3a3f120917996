//! The GGUF path of every dense family, checked against the same transformers reference:
//! each fixture is converted to a GGUF file the way llama.cpp's `convert_hf_to_gguf.py`
//! writes one (tensor names `blk.N.*`, ggml shape order, llama q/k row permutation, Gemma's
//! `norm + 1`, Phi-3's fused `attn_qkv` / `ffn_up`, LongRoPE and Llama 3 factors as tensors,
//! untied `output.weight` only when present) and must give the reference logits.
//!
//! Where a tiny fixture departs from what llama.cpp hard-codes for real checkpoints
//! (Gemma 2/3's query_pre_attn_scalar 32 ≠ head_dim, Gemma 3's pattern of 3), the file states
//! it with the metadata keys llama.cpp defines for that purpose (`attention.scale`,
//! `attention.sliding_window_pattern`, `rope.freq_base_swa`).

use std::path::Path;

use owl_formats::gguf::{GgmlType, GgufWriter, MetadataArray, MetadataValue};
use owl_formats::hf_config::{HfConfig, LayerType, RopeScaling};
use owl_models::{KvDtype, LoadOptions, Model};

use crate::common::*;

fn gguf_arch(model_type: &str) -> &str {
    match model_type {
        "llama" | "mistral" => "llama",
        "gemma3_text" => "gemma3",
        other => other,
    }
}

/// The llama.cpp name of a HF tensor.
fn gguf_name(hf: &str, arch: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or_else(|| panic!("unexpected tensor {hf}"));
    let (layer, rest) = rest.split_once('.').expect("layer index");
    let (stem, suffix) = rest.rsplit_once('.').expect("suffix");
    let sandwich = arch == "gemma2" || arch == "gemma3";
    let g = match stem {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if sandwich => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" | "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("unmapped tensor {other}"),
    };
    format!("blk.{layer}.{g}.{suffix}")
}

/// llama.cpp's `LlamaModel.permute`: within each head, rows `[0, d/2)` and `[d/2, d)`
/// interleave (new row 2i = old i, 2i+1 = old i + d/2).
fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let (new, old) = (h * d + 2 * i + j, h * d + j * (d / 2) + i);
                out[new * cols..(new + 1) * cols].copy_from_slice(&data[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn convert(variant: &str, out: &Path) {
    let dir = variant_dir(variant);
    let c = HfConfig::from_model_dir(&dir).unwrap();
    let arch = gguf_arch(&c.model_type).to_string();
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{arch}.{k}");
    let u32v = |v: usize| MetadataValue::U32(v as u32);
    let f32v = |v: f64| MetadataValue::F32(v as f32);
    w.set_metadata("general.architecture", MetadataValue::String(arch.clone()));
    w.set_metadata(key("block_count"), u32v(c.num_hidden_layers));
    w.set_metadata(key("context_length"), u32v(c.max_position_embeddings));
    w.set_metadata(key("embedding_length"), u32v(c.hidden_size));
    w.set_metadata(key("feed_forward_length"), u32v(c.intermediate_size));
    w.set_metadata(key("attention.head_count"), u32v(c.num_attention_heads));
    w.set_metadata(key("attention.head_count_kv"), u32v(c.num_key_value_heads));
    w.set_metadata(key("attention.key_length"), u32v(c.head_dim));
    w.set_metadata(key("attention.value_length"), u32v(c.head_dim));
    w.set_metadata(key("attention.layer_norm_rms_epsilon"), f32v(c.rms_norm_eps));
    w.set_metadata(key("rope.freq_base"), f32v(c.rope.theta));
    w.set_metadata(key("rope.dimension_count"), u32v(c.rotary_dim()));
    if let Some(win) = c.sliding_window {
        w.set_metadata(key("attention.sliding_window"), u32v(win));
    }
    if arch == "gemma2" {
        w.set_metadata(key("attn_logit_softcapping"), f32v(c.attn_logit_softcapping.unwrap_or(0.0)));
        w.set_metadata(key("final_logit_softcapping"), f32v(c.final_logit_softcapping.unwrap_or(0.0)));
    }
    if arch == "gemma2" || arch == "gemma3" {
        if let Some(q) = c.query_pre_attn_scalar {
            w.set_metadata(key("attention.scale"), f32v(q.powf(-0.5)));
        }
        let flags = c.layer_types.iter().map(|t| u32::from(*t == LayerType::Sliding)).collect();
        w.set_metadata(key("attention.sliding_window_pattern"), MetadataValue::Array(MetadataArray::U32(flags)));
    }
    if let Some(local) = &c.local_rope {
        w.set_metadata(key("rope.freq_base_swa"), f32v(local.theta));
    }
    let half = c.rotary_dim() / 2;
    match &c.rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            w.set_metadata(key("rope.scaling.type"), MetadataValue::String("linear".into()));
            w.set_metadata(key("rope.scaling.factor"), f32v(*factor));
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            // convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: per-frequency divisors.
            let orig = *original_max_position_embeddings as f64;
            let (low_wl, high_wl) = (orig / low_freq_factor, orig / high_freq_factor);
            let factors: Vec<f32> = (0..half)
                .map(|i| {
                    let freq = c.rope.theta.powf(-((2 * i) as f64) / (2 * half) as f64);
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    if wavelen < high_wl {
                        1.0
                    } else if wavelen > low_wl {
                        *factor as f32
                    } else {
                        let s = (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 / ((1.0 - s) / factor + s)) as f32
                    }
                })
                .collect();
            w.add_tensor("rope_freqs.weight", vec![half as u64], GgmlType::F32, f32_bytes(&factors)).unwrap();
        }
        RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor } => {
            let to32 = |v: &[f64]| f32_bytes(&v.iter().map(|&x| x as f32).collect::<Vec<_>>());
            w.add_tensor("rope_factors_long.weight", vec![half as u64], GgmlType::F32, to32(long_factor)).unwrap();
            w.add_tensor("rope_factors_short.weight", vec![half as u64], GgmlType::F32, to32(short_factor)).unwrap();
            w.set_metadata(key("rope.scaling.original_context_length"), u32v(*original_max_position_embeddings));
            w.set_metadata(key("rope.scaling.attn_factor"), f32v(*attention_factor));
        }
        other => panic!("{variant}: no GGUF spelling for {other:?}"),
    }

    let tensors = owl_test::load_safetensors_f32(&dir.join("model.safetensors"));
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        let mut data = t.data.clone();
        if arch == "llama" && (name.contains("q_proj.") || name.contains("k_proj.")) {
            let heads = if name.contains("q_proj.") { c.num_attention_heads } else { c.num_key_value_heads };
            let cols = if t.shape.len() == 2 { t.shape[1] } else { 1 };
            data = permute_rows(&data, t.shape[0], cols, heads);
        }
        if arch.starts_with("gemma") && name.ends_with("norm.weight") {
            data.iter_mut().for_each(|x| *x += 1.0);
        }
        let shape = t.shape.iter().rev().map(|&d| d as u64).collect();
        w.add_tensor(gguf_name(name, &arch), shape, GgmlType::F32, f32_bytes(&data)).unwrap();
    }
    w.write_file(out).unwrap();
}

#[test]
fn dense_variants_through_gguf_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for variant in DENSE_VARIANTS {
        let path = tmp.path().join(format!("{variant}.gguf"));
        convert(variant, &path);
        let mut model = Model::load_gguf(&path, &LoadOptions { threads: 2, max_batch_tokens: 32 })
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        let r = reference(variant);
        let prompt = ids(&r["input_ids"]);
        let vocab = model.vocab_size();
        let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).unwrap();
        let logits = prompt_logits(&mut model, &mut kv, 0, &prompt);
        let e = owl_test::assert_close(&format!("{variant} via GGUF"), &logits, &r["logits"].data, 1e-4);
        // Greedy continuation through the cache.
        let want = ids(&r["generated_ids"]);
        let mut next = argmax(&logits[(prompt.len() - 1) * vocab..]) as u32;
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(next, w, "{variant} via GGUF: greedy token {i}");
            let step = prompt_logits(&mut model, &mut kv, 0, &[next]);
            next = argmax(&step) as u32;
        }
        println!("{variant:22} via GGUF ({}): logits {e:.2e}, greedy 12/12", model.config().family);
    }
}
