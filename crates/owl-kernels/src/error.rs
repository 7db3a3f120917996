use crate::quant::BlockFormat;

/// Errors from kernel entry points: shape and format mismatches are reported, never panicked on.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{format:?}: row of {len} elements is not a multiple of the block size {block}")]
    RowNotBlockMultiple { format: BlockFormat, len: usize, block: usize },
    #[error("{what}: expected {expected} {unit}, got {got}")]
    Length { what: &'static str, expected: usize, got: usize, unit: &'static str },
    #[error("{format:?}: {op} is not implemented for this format")]
    Unsupported { format: BlockFormat, op: &'static str },
    /// The kernel set forced with `OWL_KERNELS` is unknown or not supported by this CPU.
    #[error(transparent)]
    Dispatch(#[from] crate::dispatch::DispatchError),
}
