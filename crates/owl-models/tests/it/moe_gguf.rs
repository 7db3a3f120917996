//! The GGUF path of the MoE and DeepSeek families. There is no GGUF fixture for them, so each
//! fixture is converted here the way llama.cpp's `convert_hf_to_gguf.py` writes one (read
//! from its `MixtralModel`/`LlamaModel`, `Qwen3MoeModel`, `DeepseekV2Model` and
//! `src/llama-arch.cpp`): experts stacked into 3-D `blk.N.ffn_{gate,up,down}_exps`
//! (`[E][rows][cols]`, ggml shape reversed), router `ffn_gate_inp`, `exp_probs_b.bias`,
//! shared experts `ffn_*_shexp`, MLA `attn_q_a`/`attn_q_a_norm`/`attn_q_b`/`attn_q`,
//! `attn_kv_a_mqa`, `attn_kv_a_norm`, and either the older fused `attn_kv_b` or the current
//! split `attn_k_b` (per head transposed) / `attn_v_b` with `key_length_mla`; Mixtral as a
//! `llama` file (q/k rows permuted), also with the legacy per-expert `ffn_gate.E` names.
//! The result must give transformers' logits and greedy continuation. This checks our
//! reading of those conventions, not a file made by llama.cpp itself.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use owl_formats::gguf::{GgmlType, GgufWriter, MetadataValue};
use owl_formats::hf_config::{HfConfig, RopeScaling, RouterScoring};
use owl_models::{KvDtype, LoadOptions, Model};

use crate::common::*;

#[derive(Clone, Copy, Debug)]
struct Options {
    /// DeepSeek: write `attn_k_b` / `attn_v_b` (current converter) instead of `attn_kv_b`.
    split_kv_b: bool,
    /// Mixtral: per-expert `blk.N.ffn_gate.E.weight` (old converters) instead of stacked.
    legacy_experts: bool,
    /// Store the expert, shared-expert and k_b/v_b matrices as F16.
    f16: bool,
}

const PLAIN: Options = Options { split_kv_b: false, legacy_experts: false, f16: false };

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect()
}

/// llama.cpp's `LlamaModel.permute` of q/k rows (rotate-half → adjacent pairs).
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

struct Writer<'a> {
    w: GgufWriter<'a>,
    arch: String,
}

impl Writer<'_> {
    fn u32(&mut self, k: &str, v: usize) {
        self.w.set_metadata(format!("{}.{k}", self.arch), MetadataValue::U32(v as u32));
    }
    fn f32(&mut self, k: &str, v: f64) {
        self.w.set_metadata(format!("{}.{k}", self.arch), MetadataValue::F32(v as f32));
    }
    /// `shape` outermost first (PyTorch order); stored reversed as ggml does.
    fn tensor(&mut self, name: &str, shape: &[usize], data: &[f32], half: bool) {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        let (t, bytes) = if half { (GgmlType::F16, f16_bytes(data)) } else { (GgmlType::F32, f32_bytes(data)) };
        self.w.add_tensor(name, dims, t, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn convert(variant: &str, out: &Path, opt: Options) {
    let dir = variant_dir(variant);
    let c = HfConfig::from_model_dir(&dir).unwrap();
    let moe = c.moe.as_ref().expect("a MoE fixture");
    let arch = match c.model_type.as_str() {
        "mixtral" => "llama",
        "qwen3_moe" => "qwen3moe",
        _ => "deepseek2",
    };
    let mut w = Writer { w: GgufWriter::new(), arch: arch.to_string() };
    w.w.set_metadata("general.architecture", MetadataValue::String(arch.into()));
    w.u32("block_count", c.num_hidden_layers);
    w.u32("context_length", c.max_position_embeddings);
    w.u32("embedding_length", c.hidden_size);
    w.u32("feed_forward_length", c.intermediate_size);
    w.u32("attention.head_count", c.num_attention_heads);
    w.f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
    w.f32("rope.freq_base", c.rope.theta);
    w.u32("rope.dimension_count", c.rotary_dim());
    w.u32("expert_count", moe.num_experts);
    w.u32("expert_used_count", moe.num_experts_per_tok);
    if arch != "llama" {
        w.u32("expert_feed_forward_length", moe.expert_intermediate_size);
    }
    if let Some(mla) = &c.mla {
        // DeepseekV2Model.set_gguf_parameters.
        let (rank, rope) = (mla.kv_lora_rank, mla.qk_rope_head_dim);
        if opt.split_kv_b {
            w.u32("attention.head_count_kv", 1);
            w.u32("attention.key_length", rank + rope);
            w.u32("attention.value_length", rank);
            w.u32("attention.key_length_mla", mla.qk_head_dim());
            w.u32("attention.value_length_mla", mla.v_head_dim);
        } else {
            w.u32("attention.head_count_kv", c.num_attention_heads);
            w.u32("attention.key_length", mla.qk_head_dim());
            w.u32("attention.value_length", mla.v_head_dim);
        }
        if let Some(q) = mla.q_lora_rank {
            w.u32("attention.q_lora_rank", q);
        }
        w.u32("attention.kv_lora_rank", rank);
        w.u32("leading_dense_block_count", moe.first_k_dense_replace);
        w.u32("expert_shared_count", moe.n_shared_experts);
        w.f32("expert_weights_scale", moe.routed_scaling_factor);
        if moe.norm_topk_prob && c.model_type == "deepseek_v3" {
            w.w.set_metadata("deepseek2.expert_weights_norm", MetadataValue::Bool(true));
        }
        if moe.scoring == RouterScoring::Sigmoid {
            w.u32("expert_gating_func", 2);
        }
        if moe.n_group > 1 || c.model_type == "deepseek_v3" {
            w.u32("expert_group_count", moe.n_group);
            w.u32("expert_group_used_count", moe.topk_group);
        }
        if let RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            mscale_all_dim,
            ..
        } = &c.rope.scaling
        {
            w.w.set_metadata("deepseek2.rope.scaling.type", MetadataValue::String("yarn".into()));
            w.f32("rope.scaling.factor", *factor);
            w.u32("rope.scaling.original_context_length", *original_max_position_embeddings);
            w.f32("rope.scaling.yarn_beta_fast", *beta_fast);
            w.f32("rope.scaling.yarn_beta_slow", *beta_slow);
            w.f32("rope.scaling.yarn_log_multiplier", 0.1 * mscale_all_dim.unwrap_or(0.0));
        }
    } else {
        w.u32("attention.head_count_kv", c.num_key_value_heads);
        w.u32("attention.key_length", c.head_dim);
        w.u32("attention.value_length", c.head_dim);
    }

    let tensors = owl_test::load_safetensors_f32(&dir.join("model.safetensors"));
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    // Experts: (layer, gguf stem) -> per-expert matrices.
    let mut experts: HashMap<(usize, &str), Vec<Option<&owl_test::FixtureTensor>>> = HashMap::new();
    for name in names {
        let t = &tensors[name];
        let simple = match name.as_str() {
            "model.embed_tokens.weight" => Some("token_embd.weight".to_string()),
            "model.norm.weight" => Some("output_norm.weight".to_string()),
            "lm_head.weight" => Some("output.weight".to_string()),
            _ => None,
        };
        if let Some(g) = simple {
            w.tensor(&g, &t.shape, &t.data, false);
            continue;
        }
        let rest = name.strip_prefix("model.layers.").unwrap_or_else(|| panic!("unexpected tensor {name}"));
        let (layer, rest) = rest.split_once('.').unwrap();
        let l: usize = layer.parse().unwrap();
        if let Some(e_rest) =
            rest.strip_prefix("mlp.experts.").or_else(|| rest.strip_prefix("block_sparse_moe.experts."))
        {
            let (e, m) = e_rest.split_once('.').unwrap();
            let stem = match m {
                "gate_proj.weight" | "w1.weight" => "ffn_gate",
                "up_proj.weight" | "w3.weight" => "ffn_up",
                "down_proj.weight" | "w2.weight" => "ffn_down",
                other => panic!("expert tensor {other}"),
            };
            let slot = experts.entry((l, stem)).or_insert_with(|| vec![None; moe.num_experts]);
            slot[e.parse::<usize>().unwrap()] = Some(t);
            continue;
        }
        if rest == "self_attn.kv_b_proj.weight" && opt.split_kv_b {
            // DeepseekV2Model.modify_tensors: view [H, nope+v, rank], k_b transposed per head.
            let mla = c.mla.as_ref().unwrap();
            let (heads, nope, v, rank) =
                (c.num_attention_heads, mla.qk_nope_head_dim, mla.v_head_dim, mla.kv_lora_rank);
            let (mut k_b, mut v_b) = (Vec::new(), Vec::new());
            for h in 0..heads {
                let head = &t.data[h * (nope + v) * rank..(h + 1) * (nope + v) * rank];
                for r in 0..rank {
                    for i in 0..nope {
                        k_b.push(head[i * rank + r]);
                    }
                }
                v_b.extend_from_slice(&head[nope * rank..]);
            }
            w.tensor(&format!("blk.{l}.attn_k_b.weight"), &[heads, rank, nope], &k_b, opt.f16);
            w.tensor(&format!("blk.{l}.attn_v_b.weight"), &[heads, v, rank], &v_b, opt.f16);
            continue;
        }
        let (stem, suffix) = match rest {
            "mlp.gate.e_score_correction_bias" => ("exp_probs_b", "bias"),
            _ => rest.rsplit_once('.').unwrap(),
        };
        let (g, half) = match stem {
            "exp_probs_b" => ("exp_probs_b", false),
            "input_layernorm" => ("attn_norm", false),
            "post_attention_layernorm" => ("ffn_norm", false),
            "self_attn.q_proj" => ("attn_q", false),
            "self_attn.k_proj" => ("attn_k", false),
            "self_attn.v_proj" => ("attn_v", false),
            "self_attn.o_proj" => ("attn_output", false),
            "self_attn.q_norm" => ("attn_q_norm", false),
            "self_attn.k_norm" => ("attn_k_norm", false),
            "self_attn.q_a_proj" => ("attn_q_a", false),
            "self_attn.q_a_layernorm" => ("attn_q_a_norm", false),
            "self_attn.q_b_proj" => ("attn_q_b", false),
            "self_attn.kv_a_proj_with_mqa" => ("attn_kv_a_mqa", false),
            "self_attn.kv_a_layernorm" => ("attn_kv_a_norm", false),
            "self_attn.kv_b_proj" => ("attn_kv_b", false),
            "mlp.gate" | "block_sparse_moe.gate" => ("ffn_gate_inp", false),
            "mlp.gate_proj" => ("ffn_gate", false),
            "mlp.up_proj" => ("ffn_up", false),
            "mlp.down_proj" => ("ffn_down", false),
            "mlp.shared_experts.gate_proj" => ("ffn_gate_shexp", opt.f16),
            "mlp.shared_experts.up_proj" => ("ffn_up_shexp", opt.f16),
            "mlp.shared_experts.down_proj" => ("ffn_down_shexp", opt.f16),
            other => panic!("unmapped tensor {other}"),
        };
        let mut data = t.data.clone();
        if arch == "llama" && (stem == "self_attn.q_proj" || stem == "self_attn.k_proj") {
            let heads = if stem == "self_attn.q_proj" { c.num_attention_heads } else { c.num_key_value_heads };
            data = permute_rows(&data, t.shape[0], t.shape[1], heads);
        }
        w.tensor(&format!("blk.{l}.{g}.{suffix}"), &t.shape, &data, half);
    }
    let mut keys: Vec<_> = experts.keys().copied().collect();
    keys.sort();
    for (l, stem) in keys {
        let parts: Vec<&owl_test::FixtureTensor> =
            experts[&(l, stem)].iter().map(|p| p.expect("every expert")).collect();
        if opt.legacy_experts {
            for (e, p) in parts.iter().enumerate() {
                w.tensor(&format!("blk.{l}.{stem}.{e}.weight"), &p.shape, &p.data, opt.f16);
            }
        } else {
            let data: Vec<f32> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
            let shape = [parts.len(), parts[0].shape[0], parts[0].shape[1]];
            w.tensor(&format!("blk.{l}.{stem}_exps.weight"), &shape, &data, opt.f16);
        }
    }
    w.w.write_file(out).unwrap();
}

/// Logits of the prompt and the greedy continuation through the cache, against the
/// reference; returns the max abs logit error.
fn run(variant: &str, path: &Path, tol: f32) -> f32 {
    let mut model = Model::load_gguf(path, &LoadOptions { threads: 2, max_batch_tokens: 32 })
        .unwrap_or_else(|e| panic!("{variant}: {e}"));
    let r = reference(variant);
    let prompt = ids(&r["input_ids"]);
    let vocab = model.vocab_size();
    let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).unwrap();
    let logits = prompt_logits(&mut model, &mut kv, 0, &prompt);
    let mut e = owl_test::assert_close(&format!("{variant} via GGUF"), &logits, &r["logits"].data, tol);
    let want = ids(&r["generated_ids"]);
    let want_logits = &r["generated_logits"].data;
    let mut step = logits[(prompt.len() - 1) * vocab..].to_vec();
    for (i, &wid) in want.iter().enumerate() {
        let what = format!("{variant} via GGUF: generated_logits[{i}]");
        e = e.max(owl_test::assert_close(&what, &step, &want_logits[i * vocab..(i + 1) * vocab], tol));
        let next = argmax(&step) as u32;
        assert_eq!(next, wid, "{variant} via GGUF: greedy token {i}");
        step = prompt_logits(&mut model, &mut kv, 0, &[next]);
    }
    e
}

#[test]
fn moe_variants_through_gguf_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("mixtral", PLAIN),
        ("mixtral", Options { legacy_experts: true, ..PLAIN }),
        ("qwen3_moe", PLAIN),
        ("deepseek_v3", PLAIN),
        ("deepseek_v3", Options { split_kv_b: true, ..PLAIN }),
        ("deepseek_v3_yarn_groups", Options { split_kv_b: true, ..PLAIN }),
        ("deepseek_v2", PLAIN),
        ("deepseek_v2", Options { split_kv_b: true, ..PLAIN }),
    ];
    for (i, (variant, opt)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("{variant}-{i}.gguf"));
        convert(variant, &path, opt);
        let e = run(variant, &path, 1e-4);
        println!("{variant:24} via GGUF {opt:?}: logits {e:.2e}, greedy 12/12");
    }
}

/// F16 experts (stacked 3-D views of a 2-byte format), F16 shared experts and F16
/// `attn_k_b`/`attn_v_b` (dequantized and transposed at load): rounding the weights to F16
/// moves logits by ~1e-3; a wrong expert slice or transposition would move them by > 0.2.
#[test]
fn moe_gguf_f16_experts() {
    let tmp = tempfile::tempdir().unwrap();
    for variant in ["qwen3_moe", "deepseek_v3_yarn_groups"] {
        let path = tmp.path().join(format!("{variant}-f16.gguf"));
        convert(variant, &path, Options { split_kv_b: true, legacy_experts: false, f16: true });
        let mut model = Model::load_gguf(&path, &LoadOptions { threads: 2, max_batch_tokens: 32 }).unwrap();
        let r = reference(variant);
        let prompt = ids(&r["input_ids"]);
        let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).unwrap();
        let logits = prompt_logits(&mut model, &mut kv, 0, &prompt);
        let e = owl_test::assert_close(&format!("{variant} F16 via GGUF"), &logits, &r["logits"].data, 2e-2);
        println!("{variant:24} F16 experts via GGUF: logits {e:.2e}");
    }
}

/// A file whose metadata contradicts its tensors fails to load with an error naming the key
/// or the tensor.
#[test]
fn moe_gguf_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("qwen3_moe.gguf");
    convert("qwen3_moe", &good, PLAIN);
    let file = owl_formats::gguf::GgufFile::open(&good).unwrap();
    let load = |key: &str, value: u32| {
        let mut w = GgufWriter::from_file(&file);
        w.set_metadata(key, MetadataValue::U32(value));
        let path = tmp.path().join(format!("{key}-{value}.gguf"));
        w.write_file(&path).unwrap();
        match Model::load_gguf(&path, &LoadOptions { threads: 1, max_batch_tokens: 8 }) {
            Ok(_) => panic!("{key} = {value} loaded"),
            Err(e) => e.to_string(),
        }
    };
    let e = load("qwen3moe.expert_used_count", 5);
    assert!(e.contains("expert_used_count") && e.contains("5 of 4"), "{e}");
    let e = load("qwen3moe.expert_count", 3);
    assert!(e.contains("blk.0.ffn_gate_exps.weight: shape [4, 64, 64], expected [3, 64, 64]"), "{e}");
    let e = load("qwen3moe.expert_feed_forward_length", 32);
    assert!(e.contains("blk.1.ffn_down_exps.weight"), "{e}");
}
