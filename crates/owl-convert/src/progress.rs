//! What a long conversion reports as it goes.

/// Events of a conversion or quantization, in order: `Start` once, then per tensor `Tensor`
/// before its data is written.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// `tensors` tensors, `bytes` bytes of tensor data to write.
    Start { tensors: usize, bytes: u64 },
    /// Tensor `index` (from 0) is being written: its name, output type and size.
    Tensor { index: usize, name: &'a str, ggml_type: &'a str, bytes: u64 },
}
