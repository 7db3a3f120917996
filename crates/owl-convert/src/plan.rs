//! The GGUF tensors a checkpoint becomes, in llama.cpp's order: computed tensors first
//! (RoPE factor tables), then the checkpoint's tensors in file order, each stack of experts
//! where its last expert appears. Nothing is read here but names and shapes.

use std::collections::BTreeMap;

use owl_formats::hf_config::{HfConfig, RopeScaling};
use owl_formats::safetensors::SafetensorsModel;

use crate::arch::Arch;
use crate::error::ConvertError;
use crate::tensor_names::{self, Heads, Transform};

/// Where a GGUF tensor's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Producer {
    /// One checkpoint tensor.
    Tensor { hf: String, transform: Transform },
    /// Expert matrices stacked along a new outermost axis, expert 0 first.
    Experts { hf: Vec<String> },
    /// Values computed from the config.
    Values(Vec<f32>),
    /// One half of DeepSeek's `kv_b_proj` (`[H·(nope+v)][rank]`), cut per head.
    KvB { hf: String, part: KvPart, heads: usize, nope: usize, v: usize, rank: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPart {
    /// `attn_k_b`: each head's key up-projection `[nope][rank]`, transposed: `[H][rank][nope]`.
    K,
    /// `attn_v_b`: each head's value up-projection, `[H][v][rank]`.
    V,
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Outermost dimension first (PyTorch order; GGUF stores it reversed).
    pub shape: Vec<usize>,
    pub producer: Producer,
}

impl PlannedTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row (the innermost dimension).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn rows(&self) -> usize {
        self.n_elements() / self.cols().max(1)
    }
}

/// Lays out the output tensors of `st` for `arch`. Unknown checkpoint tensors are an error
/// listing all of them, as are expert sets with gaps or mismatched shapes.
///
/// Experts: like llama.cpp's converter, a layer's experts are collected until all
/// `3 × n_experts` projections have been seen, then its three stacks are emitted together,
/// in the family's order.
pub fn plan(arch: Arch, cfg: &HfConfig, st: &SafetensorsModel) -> Result<Vec<PlannedTensor>, ConvertError> {
    let heads = Heads { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads };
    let n_experts = cfg.moe.as_ref().map_or(0, |m| m.num_experts);
    let mut out = extra_tensors(arch, cfg)?;
    let mut unknown = Vec::new();
    // Per layer: stacked name -> (expert -> (hf name, shape)).
    let mut experts: BTreeMap<usize, ExpertSets> = BTreeMap::new();
    for view in st.tensors() {
        let hf = view.name;
        if tensor_names::is_ignored(hf) || (hf == "lm_head.weight" && cfg.tie_word_embeddings) {
            continue;
        }
        if !view.dtype.is_compute() {
            return Err(ConvertError::tensor(hf, format!("element type {} is not convertible", view.dtype.name())));
        }
        let Some(mapped) = tensor_names::map_name(arch, heads, hf) else {
            unknown.push(hf.to_string());
            continue;
        };
        let shape = view.shape.to_vec();
        if let Some(e) = mapped.expert {
            if e >= n_experts {
                return Err(ConvertError::tensor(hf, format!("expert {e}, but the config has {n_experts} experts")));
            }
            let layer = layer_of(&mapped.gguf);
            let sets = experts.entry(layer).or_default();
            sets.entry(mapped.gguf).or_default().insert(e, (hf.to_string(), shape));
            if sets.values().map(BTreeMap::len).sum::<usize>() == 3 * n_experts {
                if let Some(sets) = experts.remove(&layer) {
                    out.extend(stack_layer(arch, sets, n_experts)?);
                }
            }
            continue;
        }
        if let Some(parts) = kv_b_split(arch, cfg, &mapped.gguf, hf, &shape)? {
            out.extend(parts);
            continue;
        }
        out.push(PlannedTensor {
            name: mapped.gguf,
            shape,
            producer: Producer::Tensor { hf: hf.to_string(), transform: mapped.transform },
        });
    }
    if !unknown.is_empty() {
        return Err(ConvertError::UnknownTensors { arch: arch.gguf_name(), names: unknown });
    }
    if let Some((layer, sets)) = experts.into_iter().next() {
        let have: usize = sets.values().map(BTreeMap::len).sum();
        return Err(ConvertError::tensor(
            format!("model.layers.{layer}.*.experts"),
            format!("{have} expert projections, expected 3 × {n_experts}"),
        ));
    }
    Ok(out)
}

/// One layer's experts: stacked GGUF name → expert index → (HF name, shape).
type ExpertSets = BTreeMap<String, BTreeMap<usize, (String, Vec<usize>)>>;

fn layer_of(gguf: &str) -> usize {
    gguf.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A layer's three expert stacks, in the order llama.cpp's converter emits them: the HF
/// projection names sorted (Mixtral `w1, w2, w3` = gate, down, up; others `down_proj,
/// gate_proj, up_proj`).
fn stack_layer(arch: Arch, sets: ExpertSets, n_experts: usize) -> Result<Vec<PlannedTensor>, ConvertError> {
    let order: [&str; 3] = if arch == Arch::Llama {
        ["ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"]
    } else {
        ["ffn_down_exps", "ffn_gate_exps", "ffn_up_exps"]
    };
    let mut sets: Vec<_> = sets.into_iter().collect();
    sets.sort_by_key(|(name, _)| order.iter().position(|o| name.contains(o)).unwrap_or(usize::MAX));
    let mut out = Vec::new();
    for (name, members) in sets {
        if members.len() != n_experts {
            return Err(ConvertError::tensor(&name, format!("{} of {n_experts} experts", members.len())));
        }
        let shape0 = members.values().next().map(|(_, s)| s.clone()).unwrap_or_default();
        if let Some((hf, s)) = members.values().find(|(_, s)| *s != shape0) {
            return Err(ConvertError::tensor(hf, format!("shape {s:?}, but expert 0's is {shape0:?}")));
        }
        let mut shape = vec![n_experts];
        shape.extend(&shape0);
        let hf = members.into_values().map(|(h, _)| h).collect();
        out.push(PlannedTensor { name, shape, producer: Producer::Experts { hf } });
    }
    Ok(out)
}

/// Tensors llama.cpp computes from the config (`generate_extra_tensors`): Llama 3's RoPE
/// frequency divisors and Phi-3's LongRoPE factor tables.
fn extra_tensors(arch: Arch, cfg: &HfConfig) -> Result<Vec<PlannedTensor>, ConvertError> {
    let rot = cfg.rotary_dim();
    let values = |name: &str, v: Vec<f32>| PlannedTensor {
        name: name.to_string(),
        shape: vec![v.len()],
        producer: Producer::Values(v),
    };
    match (&cfg.rope.scaling, arch) {
        (
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings },
            Arch::Llama,
        ) => {
            // LlamaModel.generate_extra_tensors: per frequency, 1 (high band), `factor`
            // (low band) or the smooth blend between. Its frequencies are a float32 torch
            // tensor, so every step after them runs in float32; so do these.
            let base = cfg.rope.theta as f32;
            let old_context = *original_max_position_embeddings as f32;
            let (factor, low, high) = (*factor as f32, *low_freq_factor as f32, *high_freq_factor as f32);
            let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
            let factors = (0..rot / 2)
                .map(|i| {
                    let freq = 1.0f32 / base.powf((2 * i) as f32 / rot as f32);
                    let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
                    if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor
                    } else {
                        let smooth = (old_context / wavelen - low) / (high - low);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    }
                })
                .collect();
            Ok(vec![values("rope_freqs.weight", factors)])
        }
        (RopeScaling::LongRope { short_factor, long_factor, .. }, Arch::Phi3) => {
            let want = rot / 2;
            for (field, v) in [("long_factor", long_factor), ("short_factor", short_factor)] {
                if v.len() != want {
                    return Err(ConvertError::field(
                        format!("rope_scaling.{field}"),
                        format!("{} values for {want} frequencies", v.len()),
                    ));
                }
            }
            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect();
            Ok(vec![
                values("rope_factors_long.weight", f(long_factor)),
                values("rope_factors_short.weight", f(short_factor)),
            ])
        }
        _ => Ok(Vec::new()),
    }
}

/// DeepSeek's `kv_b_proj` `[H·(nope+v)][rank]`, split as llama.cpp's converter does for
/// the absorbed form of MLA (conversion/deepseek.py, "MLA with the absorption
/// optimization"): `attn_k_b` `[H][rank][nope]` (each head's key rows, transposed) and
/// `attn_v_b` `[H][v][rank]`; `attn_kv_b` itself is not written.
fn kv_b_split(
    arch: Arch,
    cfg: &HfConfig,
    gguf: &str,
    hf: &str,
    shape: &[usize],
) -> Result<Option<Vec<PlannedTensor>>, ConvertError> {
    let Some(prefix) = gguf.strip_suffix("attn_kv_b.weight") else { return Ok(None) };
    if arch != Arch::Deepseek2 {
        return Ok(None);
    }
    let mla = cfg.mla.as_ref().ok_or_else(|| ConvertError::field("kv_lora_rank", "missing for DeepSeek"))?;
    let (heads, nope, v, rank) = (cfg.num_key_value_heads, mla.qk_nope_head_dim, mla.v_head_dim, mla.kv_lora_rank);
    if shape != [heads * (nope + v), rank] {
        return Err(ConvertError::tensor(
            hf,
            format!("shape {shape:?}, expected [{heads}·({nope}+{v}), {rank}] (num_key_value_heads, qk_nope_head_dim, v_head_dim, kv_lora_rank)"),
        ));
    }
    let part = |name: &str, part: KvPart, shape: Vec<usize>| PlannedTensor {
        name: format!("{prefix}{name}"),
        shape,
        producer: Producer::KvB { hf: hf.to_string(), part, heads, nope, v, rank },
    };
    Ok(Some(vec![
        part("attn_k_b.weight", KvPart::K, vec![heads, rank, nope]),
        part("attn_v_b.weight", KvPart::V, vec![heads, v, rank]),
    ]))
}
