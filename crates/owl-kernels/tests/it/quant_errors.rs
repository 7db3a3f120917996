//! Malformed lengths at the byte-level entry points are errors, never panics.

use owl_kernels::quant::{dequantize_row, quantize_row, BlockFormat};
use owl_kernels::KernelError;

#[test]
fn dequantize_row_rejects_bad_lengths() {
    for f in BlockFormat::ALL {
        let be = f.block_elems();
        let bb = f.block_bytes();
        let src = vec![0u8; 4 * bb + 7];
        // Element count not a whole number of blocks (F32/F16/BF16 have 1-element blocks).
        if be > 1 {
            let mut dst = vec![0f32; 3 * be + 1];
            let e = dequantize_row(f, &src[..4 * bb], &mut dst).expect_err("partial block");
            assert!(
                matches!(e, KernelError::RowNotBlockMultiple { len, block, .. } if len == 3 * be + 1 && block == be),
                "{f:?}: {e}"
            );
        }
        let mut dst = vec![0f32; 4 * be];
        for len in [0, bb, 4 * bb - 1, 4 * bb + 1, 4 * bb + 7] {
            let e = dequantize_row(f, &src[..len], &mut dst).expect_err("wrong source length");
            match e {
                KernelError::Length { expected, got, .. } => assert_eq!((expected, got), (4 * bb, len), "{f:?}"),
                other => panic!("{f:?}: {other}"),
            }
            assert!(e.to_string().contains("bytes"), "{f:?}: message names the unit: {e}");
        }
        dequantize_row(f, &src[..4 * bb], &mut dst).expect("right lengths");
        // Empty rows are fine.
        dequantize_row(f, &[], &mut []).expect("empty row");
    }
}

#[test]
fn quantize_row_rejects_bad_lengths() {
    for f in BlockFormat::ALL {
        let be = f.block_elems();
        let bb = f.block_bytes();
        let src = vec![0.5f32; 4 * be + 1];
        let mut dst = vec![0u8; 4 * bb + 3];
        if be > 1 {
            let e = quantize_row(f, &src[..4 * be + 1], &mut dst[..4 * bb]).expect_err("partial block");
            assert!(matches!(e, KernelError::RowNotBlockMultiple { .. }), "{f:?}: {e}");
        }
        for len in [0, 4 * bb - 1, 4 * bb + 1, 4 * bb + 3] {
            let e = quantize_row(f, &src[..4 * be], &mut dst[..len]).expect_err("wrong destination length");
            assert!(
                matches!(e, KernelError::Length { expected, got, .. } if expected == 4 * bb && got == len),
                "{f:?}: {e}"
            );
        }
        quantize_row(f, &src[..4 * be], &mut dst[..4 * bb]).expect("right lengths");
        quantize_row(f, &[], &mut []).expect("empty row");
    }
}
