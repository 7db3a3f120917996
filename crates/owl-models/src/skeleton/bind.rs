//! Binding the tensors that most families name alike, in both namings:
//! Hugging Face (`model.layers.N.self_attn.q_proj.weight`) and llama.cpp's GGUF
//! (`blk.N.attn_q.weight`). A family file calls these and spells out only what differs.

use super::attention::{Attention, AttentionSpec, QkvProj};
use super::linear::Linear;
use super::mlp::{GateUp, GatedMlp};
use super::norm::RmsNorm;
use crate::config::ModelConfig;
use crate::weights::{Binder, Weight};
use owl_kernels::ops::attention::ScoreParams;

/// The attention shape of layer `layer`.
pub fn attention_spec(cfg: &ModelConfig, layer: usize) -> AttentionSpec {
    let la = cfg.layers[layer];
    AttentionSpec {
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
        window: la.window,
        rope: la.rope,
        scores: ScoreParams { scale: cfg.attn_scale, softcap: cfg.attn_softcap },
    }
}

/// An RMSNorm of `dim` values of layer `layer`.
pub fn layer_norm(w: &mut Binder<'_>, cfg: &ModelConfig, layer: usize, hf: &str, gguf: &str, dim: usize) -> RmsNorm {
    let name = w.layer_name(layer, hf, gguf, "weight");
    RmsNorm::new(w.norm_weight(&name, dim), cfg.norm_eps)
}

/// A projection of layer `layer` with `rows` outputs and `cols` inputs, with a bias if `bias`.
pub fn linear(w: &mut Binder<'_>, layer: usize, hf: &str, gguf: &str, rows: usize, cols: usize, bias: bool) -> Linear {
    let weight = w.matrix(&w.layer_name(layer, hf, gguf, "weight"), rows, cols);
    let bias = bias.then(|| w.vector(&w.layer_name(layer, hf, gguf, "bias"), rows));
    Linear::new(weight, bias)
}

/// Separate q, k, v (biases when `cfg.qkv_bias`) and o projections.
pub fn attention(w: &mut Binder<'_>, cfg: &ModelConfig, layer: usize) -> Attention {
    let (h, qw, kw) = (cfg.hidden_size, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let b = cfg.qkv_bias;
    let q = linear(w, layer, "self_attn.q_proj", "attn_q", qw, h, b);
    let k = linear(w, layer, "self_attn.k_proj", "attn_k", kw, h, b);
    let v = linear(w, layer, "self_attn.v_proj", "attn_v", kw, h, b);
    let o = linear(w, layer, "self_attn.o_proj", "attn_output", h, qw, false);
    Attention::new(attention_spec(cfg, layer), QkvProj::Separate { q, k, v }, o)
}

/// Per-head query and key norms over `head_dim` (Qwen3, Gemma 3).
pub fn qk_norms(w: &mut Binder<'_>, cfg: &ModelConfig, layer: usize) -> (RmsNorm, RmsNorm) {
    let d = cfg.head_dim;
    (
        layer_norm(w, cfg, layer, "self_attn.q_norm", "attn_q_norm", d),
        layer_norm(w, cfg, layer, "self_attn.k_norm", "attn_k_norm", d),
    )
}

/// The gated MLP with separate gate, up and down projections.
pub fn mlp(w: &mut Binder<'_>, cfg: &ModelConfig, layer: usize) -> GatedMlp {
    let (h, f) = (cfg.hidden_size, cfg.ffn_dim);
    let gate = linear(w, layer, "mlp.gate_proj", "ffn_gate", f, h, false);
    let up = linear(w, layer, "mlp.up_proj", "ffn_up", f, h, false);
    let down = linear(w, layer, "mlp.down_proj", "ffn_down", h, f, false);
    GatedMlp::new(GateUp::Separate { gate, up }, down, cfg.activation)
}

/// Token embeddings `[vocab][hidden]`.
pub fn embedding(w: &mut Binder<'_>, cfg: &ModelConfig) -> Weight {
    let name = w.global_name("model.embed_tokens", "token_embd");
    w.matrix(&name, cfg.vocab_size, cfg.hidden_size)
}

/// The final norm.
pub fn final_norm(w: &mut Binder<'_>, cfg: &ModelConfig) -> RmsNorm {
    let name = w.global_name("model.norm", "output_norm");
    RmsNorm::new(w.norm_weight(&name, cfg.hidden_size), cfg.norm_eps)
}

/// The output projection, or the embedding matrix when the model ties them (a tied HF
/// checkpoint that still stores `lm_head.weight` has it ignored).
pub fn head(w: &mut Binder<'_>, cfg: &ModelConfig, embedding: &Weight) -> Weight {
    let name = w.global_name("lm_head", "output");
    if cfg.tied_embeddings {
        w.ignore(&name);
        embedding.clone()
    } else {
        w.matrix(&name, cfg.vocab_size, cfg.hidden_size)
    }
}
