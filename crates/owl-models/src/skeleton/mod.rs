//! The transformer skeleton every family is built from: the decoder [`block::Block`] with
//! its two seams ([`block::Mixer`], [`block::FeedForward`]), the standard attention and MLP,
//! MLA and the sparse MoE.
//!
//! The structure lives here: which op runs on which tensors, in what order, with which
//! weights (and RoPE's frequency schedules, which are model configuration). The arithmetic
//! over activations — RMSNorm, the rotation, gated activations, residual adds, softmax and
//! attention — is owl-kernels' `ops`, behind the same run-time dispatch as the matmuls; what
//! stays here is per-token bookkeeping of a few values (an MoE router's sigmoid scores and
//! top-k, the weighted sum of its experts' rows).

pub mod attention;
pub mod bind;
pub mod block;
pub mod linear;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod rope;
