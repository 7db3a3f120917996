//! Which base tensor an adapter pair modifies, in the base file's own naming, and how B's
//! rows must be reordered on the way.
//!
//! PEFT names modules as transformers does (`model.layers.0.self_attn.q_proj`), llama.cpp's
//! GGUF adapters as its GGUF files do (`blk.0.attn_q.weight`, convert_lora_to_gguf.py). A
//! llama-architecture GGUF stores each head's q/k rows reordered for its RoPE
//! (`owl_convert::tensor_names::permuted_row`); its GGUF adapters' `lora_b` rows are
//! reordered the same way, PEFT's are not. `ΔW = B A`, so reordering W's rows is reordering
//! B's: a PEFT adapter on a llama GGUF base gets B reordered into llama.cpp's order, a GGUF
//! adapter on a Hugging Face base gets it reordered back.

use owl_convert::arch::Arch;
use owl_convert::tensor_names::{map_name, permuted_row, Heads, Transform};

/// How an adapter's B rows map onto the base's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    Keep,
    /// From transformers' order into llama.cpp's (q/k of `heads` heads).
    ToLlamaCpp {
        heads: usize,
    },
    /// From llama.cpp's order back into transformers'.
    FromLlamaCpp {
        heads: usize,
    },
}

impl RowOrder {
    /// `b` (`[rows][rank]`) reordered.
    pub fn apply(self, b: &[f32], rows: usize, rank: usize) -> Result<Vec<f32>, String> {
        let heads = match self {
            RowOrder::Keep => return Ok(b.to_vec()),
            RowOrder::ToLlamaCpp { heads } | RowOrder::FromLlamaCpp { heads } => heads,
        };
        if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
            return Err(format!("{rows} rows do not split into {heads} heads of an even size"));
        }
        let mut out = vec![0f32; b.len()];
        for r in 0..rows {
            let p = permuted_row(r, rows, heads);
            let (dst, src) = match self {
                RowOrder::ToLlamaCpp { .. } => (r, p),
                _ => (p, r),
            };
            out[dst * rank..(dst + 1) * rank].copy_from_slice(&b[src * rank..(src + 1) * rank]);
        }
        Ok(out)
    }
}

/// A transformers weight name (`model.layers.0.self_attn.q_proj.weight`) in a GGUF of
/// `arch`, with the row order its B needs. `Err`: the name has no GGUF place, or is an
/// expert's share of a stacked tensor.
pub fn hf_to_gguf(arch: Arch, heads: Heads, hf: &str) -> Result<(String, RowOrder), String> {
    let mapped =
        map_name(arch, heads, hf).ok_or_else(|| format!("{hf} has no tensor in a {} GGUF", arch.gguf_name()))?;
    if mapped.expert.is_some() {
        return Err(format!("{hf} is one expert of the stacked tensor {}", mapped.gguf));
    }
    let order = match mapped.transform {
        Transform::PermuteRope { heads } => RowOrder::ToLlamaCpp { heads },
        _ => RowOrder::Keep,
    };
    Ok((mapped.gguf, order))
}

/// The transformers name, among `candidates` (a Hugging Face base's matrices), of a GGUF
/// weight name, with the row order its B needs.
pub fn gguf_to_hf<'a>(
    arch: Arch,
    heads: Heads,
    gguf: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<(String, RowOrder)> {
    candidates.into_iter().find_map(|hf| {
        let (name, order) = hf_to_gguf(arch, heads, hf).ok()?;
        (name == gguf).then(|| {
            let back = match order {
                RowOrder::ToLlamaCpp { heads } => RowOrder::FromLlamaCpp { heads },
                other => other,
            };
            (hf.to_string(), back)
        })
    })
}

/// Phi-3's fused projections, in transformers' naming (llama.cpp's `attn_qkv` and an
/// `ffn_up` of twice the width).
const HF_FUSED: [&str; 2] = ["self_attn.qkv_proj", "mlp.gate_up_proj"];

/// The projections of a decoder layer, in transformers' naming (what LoRA targets).
const HF_PROJECTIONS: [&str; 13] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "self_attn.q_a_proj",
    "self_attn.q_b_proj",
    "self_attn.kv_a_proj_with_mqa",
    "self_attn.kv_b_proj",
    "mlp.shared_experts.up_proj",
    "mlp.shared_experts.down_proj",
];

/// The transformers name of a GGUF projection or output head, without a Hugging Face base
/// to look in (writing a PEFT adapter trained on a GGUF base).
pub fn gguf_to_hf_name(arch: Arch, heads: Heads, gguf: &str) -> Option<(String, RowOrder)> {
    if gguf == "output.weight" {
        return Some(("lm_head.weight".into(), RowOrder::Keep));
    }
    let layer: usize = gguf.strip_prefix("blk.")?.split('.').next()?.parse().ok()?;
    // `ffn_up` is `up_proj`, or Phi-3's fused `gate_up_proj`: the architecture decides.
    let parts =
        if arch == Arch::Phi3 { [&HF_FUSED[..], &HF_PROJECTIONS[..]].concat() } else { HF_PROJECTIONS.to_vec() };
    let candidates: Vec<String> = parts.iter().map(|p| format!("model.layers.{layer}.{p}.weight")).collect();
    gguf_to_hf(arch, heads, gguf, candidates.iter().map(String::as_str))
}

/// Whether a stored name is the token embedding, which projections' adapters cannot touch
/// (PEFT applies embedding adapters as a lookup; owl does not).
pub fn is_embedding(name: &str) -> bool {
    name == "token_embd.weight" || name.ends_with("embed_tokens.weight")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEADS: Heads = Heads { n_heads: 2, n_kv_heads: 1 };

    #[test]
    fn names_and_row_orders_follow_the_family() {
        let (name, order) = hf_to_gguf(Arch::Llama, HEADS, "model.layers.3.self_attn.k_proj.weight").unwrap();
        assert_eq!((name.as_str(), order), ("blk.3.attn_k.weight", RowOrder::ToLlamaCpp { heads: 1 }));
        let (name, order) = hf_to_gguf(Arch::Qwen2, HEADS, "model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!((name.as_str(), order), ("blk.0.attn_q.weight", RowOrder::Keep));
        assert!(hf_to_gguf(Arch::Llama, HEADS, "model.layers.0.block_sparse_moe.experts.1.w1.weight").is_err());
        let hf = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"];
        let (back, order) = gguf_to_hf(Arch::Llama, HEADS, "blk.0.attn_q.weight", hf).unwrap();
        assert_eq!((back.as_str(), order), (hf[1], RowOrder::FromLlamaCpp { heads: 2 }));
        assert!(gguf_to_hf(Arch::Llama, HEADS, "blk.1.attn_q.weight", hf).is_none());
    }

    #[test]
    fn row_orders_are_inverse() {
        let (rows, rank) = (8, 3);
        let b: Vec<f32> = (0..rows * rank).map(|i| i as f32).collect();
        let to = RowOrder::ToLlamaCpp { heads: 2 }.apply(&b, rows, rank).unwrap();
        assert_ne!(to, b);
        // Row 1 of a head of 4 rows in llama.cpp's order is row 2 of transformers' (0, 2, 1, 3).
        assert_eq!(&to[rank..2 * rank], &b[2 * rank..3 * rank]);
        assert_eq!(RowOrder::FromLlamaCpp { heads: 2 }.apply(&to, rows, rank).unwrap(), b);
        assert!(RowOrder::ToLlamaCpp { heads: 3 }.apply(&b, rows, rank).is_err());
    }

    #[test]
    fn gguf_names_map_back_by_architecture() {
        let name = |arch, gguf| gguf_to_hf_name(arch, HEADS, gguf).map(|(n, _)| n);
        assert_eq!(name(Arch::Llama, "blk.2.ffn_up.weight").as_deref(), Some("model.layers.2.mlp.up_proj.weight"));
        assert_eq!(name(Arch::Phi3, "blk.2.ffn_up.weight").as_deref(), Some("model.layers.2.mlp.gate_up_proj.weight"));
        assert_eq!(
            name(Arch::Phi3, "blk.0.attn_qkv.weight").as_deref(),
            Some("model.layers.0.self_attn.qkv_proj.weight")
        );
        let (q, order) = gguf_to_hf_name(Arch::Llama, HEADS, "blk.1.attn_q.weight").unwrap();
        assert_eq!(
            (q.as_str(), order),
            ("model.layers.1.self_attn.q_proj.weight", RowOrder::FromLlamaCpp { heads: 2 })
        );
        assert_eq!(name(Arch::Llama, "output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(name(Arch::Llama, "token_embd.weight"), None);
    }
}
