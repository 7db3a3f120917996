//! Which element type each tensor gets.
//!
//! Float files and Q8_0 from `owl convert` follow llama.cpp's converter
//! (convert_hf_to_gguf.py `prepare_tensors`); every other type follows llama-quantize
//! (`llama_tensor_get_type`, src/llama-quant.cpp), as if the model had been converted to a
//! float GGUF and then quantized, which is how llama.cpp users make them.

use owl_formats::gguf::GgmlType;

use crate::file_type::FileType;

/// Tensors llama.cpp keeps in F32 whatever the file type: 1-D tensors, norms, biases, and
/// the MoE routers (`ffn_gate_inp`).
fn forced_f32(name: &str, n_dims: usize) -> bool {
    n_dims <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") || name.contains(".ffn_gate_inp.")
}

/// The type llama.cpp's converter gives tensor `name` of `shape` (outermost first) for a
/// float or Q8_0 file; `None` for the types it leaves to llama-quantize.
pub fn converter_type(ft: FileType, name: &str, shape: &[usize]) -> Option<GgmlType> {
    if forced_f32(name, shape.len()) {
        return Some(GgmlType::F32);
    }
    let ty = match ft {
        FileType::F32 => GgmlType::F32,
        FileType::F16 => GgmlType::F16,
        FileType::BF16 => GgmlType::BF16,
        // gguf-py raises QuantError for rows that are not whole blocks; the converter then
        // writes F16.
        FileType::Q8_0 if shape.last().is_some_and(|c| c % 32 == 0) => GgmlType::Q8_0,
        FileType::Q8_0 => GgmlType::F16,
        _ => return None,
    };
    Some(ty)
}

/// What llama-quantize knows about the model when it picks types (`quantize_state_impl`).
#[derive(Debug, Clone)]
pub struct MixModel {
    /// `{arch}.block_count`.
    pub n_layer: usize,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: usize,
    /// Query heads per KV head, layer 0.
    pub n_gqa: usize,
    /// llama.cpp's `LLM_TYPE_70B`: llama with 80 layers and GQA, or qwen2 with 80 layers.
    pub is_70b: bool,
    pub has_imatrix: bool,
}

/// A tensor as llama-quantize sees it: name and ggml shape (`ne`, innermost first).
#[derive(Debug, Clone, Copy)]
pub struct MixTensor<'a> {
    pub name: &'a str,
    pub ne: &'a [u64],
}

/// llama.cpp's `tensor_get_category` (src/llama-quant.cpp): first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionKvB,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttentionQkv
    } else if name.contains("attn_kv_b.weight") {
        AttentionKvB
    } else if name.contains("attn_v.weight") {
        AttentionV
    } else if name.contains("attn_k.weight") {
        AttentionK
    } else if name.contains("attn_q.weight") {
        AttentionQ
    } else if name.contains("attn_output.weight") {
        AttentionOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB)
}

/// `ggml_n_dims`: one more than the index of the last dimension above 1.
fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// llama-quantize's `tensor_allows_quantization` for the families owl converts: matrices
/// named `*weight`, except norms, routers, position and token-type embeddings.
pub fn allows_quantization(t: MixTensor<'_>) -> bool {
    n_dims(t.ne) >= 2
        && t.name.ends_with("weight")
        && !t.name.contains("_norm.weight")
        && !t.name.contains("ffn_gate_inp.weight")
        && t.name != "position_embd.weight"
        && t.name != "token_types.weight"
        && !t.name.contains("ssm_conv1d")
}

/// `use_more_bits`: the first and last eighth of the layers and every third between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The block number in `blk.N.` names.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's tensor order (`weight_name_comparer`): by block number (tensors outside a
/// block first), then by name.
pub fn quantize_order(a: &str, b: &str) -> std::cmp::Ordering {
    let block = |n: &str| block_of(n).map_or(-1, |b| b as i64);
    block(a).cmp(&block(b)).then_with(|| a.cmp(b))
}

/// Picks llama-quantize's type for every tensor of `tensors`, which must be in
/// [`quantize_order`] (the counters depend on it). Tensors that are not quantized get
/// `None` (they keep their type).
pub fn quantize_types(ft: FileType, model: &MixModel, tensors: &[MixTensor<'_>]) -> Vec<Option<GgmlType>> {
    let default = ft.default_type();
    let n_attention_wv = tensors.iter().filter(|t| is_attn_v(category(t.name))).count();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let mut i_attention_wv = 0usize;
    let mut i_ffn_down = 0usize;
    tensors
        .iter()
        .map(|&t| {
            if !allows_quantization(t) {
                return None;
            }
            if ft.is_float() {
                return Some(default);
            }
            let c = category(t.name);
            let ty = mixed_type(ft, model, t, c, tied, n_attention_wv, &mut i_attention_wv, &mut i_ffn_down);
            Some(shape_fallback(ty, t.ne[0]))
        })
        .collect()
}

/// `llama_tensor_get_type_impl` for the file types owl writes.
#[allow(clippy::too_many_arguments)]
fn mixed_type(
    ft: FileType,
    model: &MixModel,
    t: MixTensor<'_>,
    c: Category,
    tied: bool,
    n_attention_wv: usize,
    i_attention_wv: &mut usize,
    i_ffn_down: &mut usize,
) -> GgmlType {
    use FileType as F;
    use GgmlType as G;
    let default = ft.default_type();
    let mut ty = default;
    let e8 = model.n_expert == 8;
    if c == Category::Output || (tied && c == Category::TokenEmbd) {
        // The block size checked is the default type's, not Q6_K's (the fallback follows).
        if !t.ne[0].is_multiple_of(default.block_elems()) {
            return G::Q8_0;
        }
        return if ty != G::Q8_0 { G::Q6_K } else { ty };
    }
    if c == Category::TokenEmbd {
        return ty;
    }
    if is_attn_v(c) {
        let i = *i_attention_wv;
        if matches!(ft, F::IQ4_NL) && model.n_gqa >= 4 {
            ty = G::Q5_K;
        } else if matches!(ft, F::Q4_K_M | F::Q5_K_M) && use_more_bits(i, n_attention_wv) {
            ty = G::Q6_K;
        } else if ft == F::Q4_K_S && i < 4 {
            ty = G::Q5_K;
        }
        if model.is_70b && matches!(ty, G::Q3_K | G::Q4_K) {
            ty = G::Q5_K;
        }
        if e8 {
            ty = G::Q8_0;
        }
        *i_attention_wv += 1;
        return ty;
    }
    match c {
        Category::AttentionK if e8 => G::Q8_0,
        Category::FfnDown => {
            // MoE models take the layer from the name; dense ones count ffn_down tensors.
            let counted = *i_ffn_down;
            *i_ffn_down += 1;
            let il = if model.n_expert > 1 { block_of(t.name).unwrap_or(counted) } else { counted };
            let nl = model.n_layer;
            match ft {
                F::Q4_K_M if use_more_bits(il, nl) => G::Q6_K,
                F::Q4_K_M => ty,
                F::IQ4_NL if il < nl / 8 && !model.has_imatrix => G::Q5_K,
                F::Q5_K_M if use_more_bits(il, nl) => G::Q6_K,
                F::Q4_K_S if il < nl / 8 => G::Q5_K,
                F::Q4_0 if model.has_imatrix && il < nl / 8 => G::Q4_1,
                F::Q5_0 if model.has_imatrix && il < nl / 8 => G::Q5_1,
                _ => ty,
            }
        }
        Category::AttentionOutput if e8 && matches!(ft, F::IQ4_NL | F::Q4_K_S | F::Q4_K_M) => G::Q5_K,
        _ => ty,
    }
}

/// `tensor_type_fallback`: a row that is not whole blocks of the chosen type takes the
/// nearest type whose blocks fit, F16 when none does.
fn shape_fallback(ty: GgmlType, ne0: u64) -> GgmlType {
    use GgmlType as G;
    if ne0.is_multiple_of(ty.block_elems()) {
        return ty;
    }
    let next = match ty {
        G::IQ4_XS => G::IQ4_NL,
        G::Q2_K | G::Q3_K => G::Q4_0,
        G::Q4_K => G::Q5_0,
        G::Q5_K => G::Q5_1,
        G::Q6_K => G::Q8_0,
        other => other,
    };
    if ne0.is_multiple_of(next.block_elems()) {
        next
    } else {
        G::F16
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_cpp() {
        let on = |n| (0..n).filter(|&i| use_more_bits(i, n)).collect::<Vec<_>>();
        assert_eq!(on(16), [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(on(24), [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        assert_eq!(on(30), [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    fn model(n_layer: usize) -> MixModel {
        MixModel { n_layer, n_expert: 0, n_gqa: 3, is_70b: false, has_imatrix: false }
    }

    /// A dense 24-layer model like Qwen2.5-0.5B (hidden 896, which is not a multiple of 256).
    #[test]
    fn q4_k_m_of_a_dense_model() {
        let names: Vec<String> = std::iter::once("token_embd.weight".to_string())
            .chain(std::iter::once("output_norm.weight".to_string()))
            .chain((0..24).flat_map(|l| {
                [
                    "attn_k.weight",
                    "attn_norm.weight",
                    "attn_output.weight",
                    "attn_q.weight",
                    "attn_v.weight",
                    "ffn_down.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                ]
                .map(|n| format!("blk.{l}.{n}"))
            }))
            .collect();
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        names.sort_by(|a, b| quantize_order(a, b));
        let ne = |n: &str| -> Vec<u64> {
            if n.ends_with("norm.weight") {
                vec![896]
            } else if n.contains("ffn_down") {
                vec![4864, 896]
            } else if n.contains("token_embd") {
                vec![896, 151936]
            } else {
                vec![896, 896]
            }
        };
        let shapes: Vec<Vec<u64>> = names.iter().map(|n| ne(n)).collect();
        let tensors: Vec<MixTensor<'_>> = names.iter().zip(&shapes).map(|(&name, ne)| MixTensor { name, ne }).collect();
        let types = quantize_types(FileType::Q4_K_M, &model(24), &tensors);
        let get = |n: &str| types[names.iter().position(|x| *x == n).unwrap()];
        // Tied embeddings get the output rule: Q6_K, which 896 columns turn into Q8_0.
        assert_eq!(get("token_embd.weight"), Some(GgmlType::Q8_0));
        assert_eq!(get("output_norm.weight"), None);
        // 896 is not whole 256-blocks: Q4_K falls back to Q5_0, Q6_K to Q8_0.
        assert_eq!(get("blk.0.attn_q.weight"), Some(GgmlType::Q5_0));
        assert_eq!(get("blk.0.attn_v.weight"), Some(GgmlType::Q8_0));
        assert_eq!(get("blk.3.attn_v.weight"), Some(GgmlType::Q5_0));
        assert_eq!(get("blk.5.attn_v.weight"), Some(GgmlType::Q8_0));
        // ffn_down rows are 4864 = 19 × 256: no fallback.
        assert_eq!(get("blk.0.ffn_down.weight"), Some(GgmlType::Q6_K));
        assert_eq!(get("blk.3.ffn_down.weight"), Some(GgmlType::Q4_K));
        assert_eq!(get("blk.23.ffn_down.weight"), Some(GgmlType::Q6_K));
    }

    #[test]
    fn fallbacks_follow_llama_quantize() {
        assert_eq!(shape_fallback(GgmlType::Q4_K, 896), GgmlType::Q5_0);
        assert_eq!(shape_fallback(GgmlType::Q5_K, 896), GgmlType::Q5_1);
        assert_eq!(shape_fallback(GgmlType::Q6_K, 2880), GgmlType::Q8_0);
        assert_eq!(shape_fallback(GgmlType::Q4_K, 40), GgmlType::F16);
        assert_eq!(shape_fallback(GgmlType::Q8_0, 40), GgmlType::F16);
        assert_eq!(shape_fallback(GgmlType::Q4_K, 512), GgmlType::Q4_K);
    }
}
