//! owl-kernels: the numeric core of owl — no files, no models.
//!
//! - [`quant::BlockFormat`]: every GGUF block format (F32, F16, BF16, Q4_0 … Q8_K, IQ4_NL,
//!   IQ4_XS), with its layout, dequantize, quantize and dot product against the companion
//!   activation format (`quant::<format>` modules; SIMD versions beside each scalar reference).
//! - [`fn@ops::matmul`]: y = W·x for a quantized weight matrix and a batch of f32 activations,
//!   split over the [`pool::ThreadPool`].
//! - [`ops`]: the matmul driver, its prefill tiles and float dot products, and the float ops
//!   of a layer: RMSNorm, rotary embeddings, gated activations, residual adds and attention
//!   over the KV cache, the router softmax (owl-models' skeleton says which op runs on which
//!   tensors).
//! - [`parallel::DisjointSlice`]: one output buffer written by pool threads in disjoint ranges.
//! - [`pool::ThreadPool`]: persistent spin-then-park workers for per-token work.
//! - [`dispatch`]: the CPU's instruction set detected once (`OWL_KERNELS=scalar|avx2|neon` forces
//!   one) and the per-format table of activation quantizers and dot products.

pub mod dispatch;
pub mod error;
pub mod ops;
pub mod parallel;
pub mod pool;
pub mod quant;

pub use error::KernelError;
pub use pool::ThreadPool;
pub use quant::BlockFormat;
