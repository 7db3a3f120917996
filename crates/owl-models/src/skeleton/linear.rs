//! `y = x W^T (+ b)` over a batch of tokens, through owl-kernels' matmul in the weight's
//! stored format.

use owl_kernels::ops::{matmul, matmul_batch_invariant};
use owl_kernels::ThreadPool;

use super::block::ForwardCtx;
use crate::error::ModelError;
use crate::weights::Weight;

/// A projection: weight `[out, in]` as stored, optional f32 bias.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// A projection over `weight`, stored in the layout decode reads fastest
    /// ([`Weight::interleaved_for_decode`]).
    pub fn new(weight: Weight, bias: Option<Vec<f32>>) -> Self {
        Linear { weight: weight.interleaved_for_decode(), bias }
    }

    pub fn out_dim(&self) -> usize {
        self.weight.rows
    }

    pub fn in_dim(&self) -> usize {
        self.weight.cols
    }

    pub fn bytes(&self) -> usize {
        self.weight.bytes() + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }

    /// `y[t] = W x[t] + b` for `n` tokens: `x` is `[n][in]`, `y` is `[n][out]` (longer
    /// buffers are cut to size).
    pub fn forward(&self, pool: &ThreadPool, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        self.run(pool, x, n, None, y)
    }

    /// [`Linear::forward`] through the weight's lane panels kept unpacked
    /// ([`Weight::matmul_frozen`]): the same bits, without unpacking the weights again on
    /// every call. For callers that run the same frozen projection many times (LoRA
    /// training); it keeps the unpacked panels with the weight.
    pub fn forward_frozen(&self, pool: &ThreadPool, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        self.weight.matmul_frozen(pool, x, n, y)?;
        self.add_bias(&mut y[..n * self.weight.rows]);
        Ok(())
    }

    /// [`Linear::forward`] over the batch of `ctx`, batch-invariant when it asks for that
    /// (`ForwardCtx::n_single`).
    pub fn project(&self, ctx: &ForwardCtx<'_>, x: &[f32], y: &mut [f32]) -> Result<(), ModelError> {
        self.observe(ctx, x, ctx.n_tokens);
        self.run(ctx.pool, x, ctx.n_tokens, ctx.n_single, y)?;
        // Adapters modify whole stored matrices; an expert's share of a stacked tensor
        // (`of > 1`) is never a target (refused when an adapter is bound).
        if let (Some(lora), Some(origin)) = (ctx.lora, self.weight.origin()) {
            if origin.of == 1 {
                let (rows, cols) = (self.weight.rows, self.weight.cols);
                let n = ctx.n_tokens;
                lora.apply(ctx.pool, &origin.tensor, &x[..n * cols], cols, &mut y[..n * rows], rows);
            }
        }
        Ok(())
    }

    /// [`Linear::forward`] of `n` rows on the pool of `ctx`, shown to its observer (a routed
    /// expert's share of the batch).
    pub fn project_rows(&self, ctx: &ForwardCtx<'_>, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        self.observe(ctx, x, n);
        self.run(ctx.pool, x, n, None, y)
    }

    #[inline]
    fn observe(&self, ctx: &ForwardCtx<'_>, x: &[f32], n: usize) {
        if let (Some(observer), Some(origin)) = (ctx.observer, self.weight.origin()) {
            observer.observe(origin, &x[..n * self.weight.cols], n);
        }
    }

    fn run(
        &self,
        pool: &ThreadPool,
        x: &[f32],
        n: usize,
        n_single: Option<usize>,
        y: &mut [f32],
    ) -> Result<(), ModelError> {
        let (rows, cols) = (self.weight.rows, self.weight.cols);
        let y = &mut y[..n * rows];
        match n_single {
            None => matmul(pool, &self.weight.matrix(), &x[..n * cols], n, y)?,
            Some(k) => matmul_batch_invariant(pool, &self.weight.matrix(), &x[..n * cols], n, k, y)?,
        }
        self.add_bias(y);
        Ok(())
    }

    /// `y[t] += b` for every token row of `y`.
    fn add_bias(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.weight.rows) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }
}
