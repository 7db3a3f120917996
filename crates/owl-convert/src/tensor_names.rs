//! Hugging Face tensor names to llama.cpp's GGUF names (gguf-py `tensor_mapping.py` and
//! `constants.py`: `blk.{N}.attn_q.weight`, ...), with what must be done to the values on
//! the way. Expert weights of one layer are stacked into one 3-D tensor per projection.

use crate::arch::Arch;

/// What happens to a tensor's values on the way to the GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Copy,
    /// Rows of each of `heads` heads reordered from rotate-half to adjacent pairs.
    PermuteRope {
        heads: usize,
    },
    /// `w + 1` (Gemma norm scales).
    AddOne,
}

/// Where one HF tensor goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub gguf: String,
    /// For a per-expert tensor: its expert index (the GGUF tensor stacks all experts).
    pub expert: Option<usize>,
    pub transform: Transform,
}

/// Head counts the q/k permutation needs.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
}

/// The GGUF name of a per-layer tensor path (without `.weight`/`.bias`), for `arch`.
fn layer_part(arch: Arch, part: &str) -> Option<&'static str> {
    let gemma_sandwich = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
    Some(match part {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if gemma_sandwich => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        // Phi-3's fused gate·up is llama.cpp's ffn_up of twice the width.
        "mlp.gate_up_proj" => "ffn_up",
        // Routers.
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp",
        // DeepSeek shared experts.
        "mlp.shared_experts.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_experts.up_proj" => "ffn_up_shexp",
        "mlp.shared_experts.down_proj" => "ffn_down_shexp",
        // DeepSeek multi-head latent attention.
        "self_attn.q_a_proj" => "attn_q_a",
        "self_attn.q_a_layernorm" => "attn_q_a_norm",
        "self_attn.q_b_proj" => "attn_q_b",
        "self_attn.kv_a_proj_with_mqa" => "attn_kv_a_mqa",
        "self_attn.kv_a_layernorm" => "attn_kv_a_norm",
        "self_attn.kv_b_proj" => "attn_kv_b",
        _ => return None,
    })
}

/// The stacked GGUF name of an expert projection (`mlp.experts.E.gate_proj`,
/// Mixtral's `block_sparse_moe.experts.E.w1`) and the expert index.
fn expert_part(part: &str) -> Option<(&'static str, usize)> {
    let (rest, proj) = part.rsplit_once('.')?;
    let (prefix, e) = rest.rsplit_once('.')?;
    if prefix != "mlp.experts" && prefix != "block_sparse_moe.experts" {
        return None;
    }
    let e: usize = e.parse().ok()?;
    let name = match proj {
        "gate_proj" | "w1" => "ffn_gate_exps",
        "up_proj" | "w3" => "ffn_up_exps",
        "down_proj" | "w2" => "ffn_down_exps",
        _ => return None,
    };
    Some((name, e))
}

/// Where `hf` goes in a GGUF of `arch`; `None` for a name the converter does not know.
pub fn map_name(arch: Arch, heads: Heads, hf: &str) -> Option<Mapped> {
    let plain = |gguf: String| Some(Mapped { gguf, expert: None, transform: Transform::Copy });
    match hf {
        "model.embed_tokens.weight" => return plain("token_embd.weight".into()),
        "model.norm.weight" => {
            let transform = if arch.norms_offset_by_one() { Transform::AddOne } else { Transform::Copy };
            return Some(Mapped { gguf: "output_norm.weight".into(), expert: None, transform });
        }
        "lm_head.weight" => return plain("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if rest == "mlp.gate.e_score_correction_bias" {
        return plain(format!("blk.{layer}.exp_probs_b.bias"));
    }
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    if let Some((name, e)) = expert_part(part) {
        return Some(Mapped {
            gguf: format!("blk.{layer}.{name}.{suffix}"),
            expert: Some(e),
            transform: Transform::Copy,
        });
    }
    let name = layer_part(arch, part)?;
    let transform = if arch.norms_offset_by_one() && name.ends_with("norm") && suffix == "weight" {
        Transform::AddOne
    } else if arch.permutes_rope_rows() && name == "attn_q" {
        Transform::PermuteRope { heads: heads.n_heads }
    } else if arch.permutes_rope_rows() && name == "attn_k" {
        Transform::PermuteRope { heads: heads.n_kv_heads }
    } else {
        Transform::Copy
    };
    Some(Mapped { gguf: format!("blk.{layer}.{name}.{suffix}"), expert: None, transform })
}

/// HF tensors that have no place in a GGUF file: buffers transformers recomputes.
pub fn is_ignored(hf: &str) -> bool {
    hf.ends_with(".rotary_emb.inv_freq")
}

/// llama.cpp's LLaMA q/k row order: within each head of `d` rows, output row `2a + b` is
/// input row `b·d/2 + a` (convert_hf_to_gguf.py `LlamaModel.permute`: reshape to
/// `(heads, 2, d/2, ...)`, swap axes 1 and 2).
pub fn permuted_row(row: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, j) = (row / d, row % d);
    let (a, b) = (j / 2, j % 2);
    h * d + b * (d / 2) + a
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEADS: Heads = Heads { n_heads: 4, n_kv_heads: 2 };

    fn gguf(arch: Arch, hf: &str) -> Option<String> {
        map_name(arch, HEADS, hf).map(|m| m.gguf)
    }

    #[test]
    fn maps_the_names_llama_cpp_uses() {
        let a = Arch::Llama;
        assert_eq!(gguf(a, "model.embed_tokens.weight").as_deref(), Some("token_embd.weight"));
        assert_eq!(gguf(a, "model.layers.3.self_attn.o_proj.weight").as_deref(), Some("blk.3.attn_output.weight"));
        assert_eq!(gguf(a, "model.layers.0.post_attention_layernorm.weight").as_deref(), Some("blk.0.ffn_norm.weight"));
        assert_eq!(
            gguf(Arch::Gemma3, "model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.post_attention_norm.weight")
        );
        assert_eq!(
            gguf(Arch::Gemma2, "model.layers.1.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.ffn_norm.weight")
        );
        let m = map_name(a, HEADS, "model.layers.1.block_sparse_moe.experts.5.w3.weight").unwrap();
        assert_eq!((m.gguf.as_str(), m.expert), ("blk.1.ffn_up_exps.weight", Some(5)));
        assert_eq!(
            gguf(Arch::Deepseek2, "model.layers.2.mlp.gate.e_score_correction_bias").as_deref(),
            Some("blk.2.exp_probs_b.bias")
        );
        assert_eq!(gguf(a, "model.layers.0.self_attn.frobnicate.weight"), None);
        assert_eq!(gguf(a, "model.layers.x.self_attn.q_proj.weight"), None);
    }

    #[test]
    fn transforms_follow_the_family() {
        let t = |arch, hf| map_name(arch, HEADS, hf).unwrap().transform;
        assert_eq!(t(Arch::Llama, "model.layers.0.self_attn.q_proj.weight"), Transform::PermuteRope { heads: 4 });
        assert_eq!(t(Arch::Llama, "model.layers.0.self_attn.k_proj.bias"), Transform::PermuteRope { heads: 2 });
        assert_eq!(t(Arch::Qwen2, "model.layers.0.self_attn.q_proj.weight"), Transform::Copy);
        assert_eq!(t(Arch::Gemma3, "model.layers.0.self_attn.q_norm.weight"), Transform::AddOne);
        assert_eq!(t(Arch::Gemma, "model.norm.weight"), Transform::AddOne);
        assert_eq!(t(Arch::Qwen3, "model.layers.0.self_attn.q_norm.weight"), Transform::Copy);
    }

    #[test]
    fn permutation_pairs_rotate_half_partners() {
        // One head of 8 rows: adjacent output rows (2a, 2a+1) are input rows (a, a+4).
        let rows: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 1)).collect();
        assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7]);
        let two: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 2)).collect();
        assert_eq!(two, [0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
