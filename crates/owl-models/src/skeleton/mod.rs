//! The transformer skeleton every family is built from: the decoder [`block::Block`] with
//! its two seams ([`block::Mixer`], [`block::FeedForward`]), the standard attention and MLP,
//! and the element-wise numerics they need.
//!
//! The numerics here (`norm`, `rope`, `activation`, `attend`) are generic kernels that
//! belong in owl-kernels' `ops/` once that directory settles; they are allocation-free and
//! have unit tests against their definitions.

pub mod activation;
pub mod attend;
pub mod attention;
pub mod bind;
pub mod block;
pub mod linear;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod parallel;
pub mod rope;
