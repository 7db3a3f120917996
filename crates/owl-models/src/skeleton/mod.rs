//! The transformer skeleton every family is built from: the decoder [`block::Block`] with
//! its two seams ([`block::Mixer`], [`block::FeedForward`]), the standard attention and MLP,
//! MLA and the sparse MoE.
//!
//! Only the structure lives here: which op runs on which tensors, in what order, with which
//! weights (and RoPE's frequency schedules, which are model configuration). The arithmetic —
//! RMSNorm, the rotation, gated activations, residual adds, softmax and attention — is
//! owl-kernels' `ops`, behind the same run-time dispatch as the matmuls.

pub mod attention;
pub mod bind;
pub mod block;
pub mod linear;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod rope;
