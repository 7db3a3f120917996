//! Zero-copy views of tensor data inside a mapped safetensors file.

use half::{bf16, f16};

use super::{Dtype, SafetensorsError};

/// A tensor's description and its raw little-endian bytes, borrowed from the mmap.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, outermost first (row-major).
    pub shape: &'a [usize],
    /// The tensor's bytes (length = product(shape) * dtype size, validated at open).
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (1 for a scalar).
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    fn require_compute(&self) -> Result<(), SafetensorsError> {
        if self.dtype.is_compute() {
            Ok(())
        } else {
            Err(SafetensorsError::UnsupportedDtype { name: self.name.to_string(), dtype: self.dtype })
        }
    }

    /// The values converted to f32 (F32, F16 and BF16 only; other dtypes are an
    /// [`SafetensorsError::UnsupportedDtype`] naming the tensor).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, SafetensorsError> {
        self.require_compute()?;
        let mut out = vec![0.0f32; self.n_elements()];
        self.convert_into(&mut out);
        Ok(out)
    }

    /// Converts into `out`, which must hold exactly n_elements values.
    pub fn to_f32_into(&self, out: &mut [f32]) -> Result<(), SafetensorsError> {
        self.require_compute()?;
        if out.len() != self.n_elements() {
            return Err(SafetensorsError::OutputLength {
                name: self.name.to_string(),
                expected: self.n_elements(),
                actual: out.len(),
            });
        }
        self.convert_into(out);
        Ok(())
    }

    /// Conversion proper; the byte length was validated against the shape at open, and
    /// `chunks_exact` + `from_le_bytes` needs no alignment of the mapped data.
    fn convert_into(&self, out: &mut [f32]) {
        match self.dtype {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(self.data.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(self.data.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(self.data.chunks_exact(2)) {
                    *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            _ => {}
        }
    }
}
