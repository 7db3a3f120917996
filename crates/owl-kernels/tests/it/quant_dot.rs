//! Scalar reference dot products (`vec_dot_scalar`) for every weight format:
//! - tight: against the f64 dot of the dequantized weight row and the dequantized
//!   activation row (what the integer kernels compute, up to f32 rounding);
//! - loose: against the f64 dot with the unquantized activations, within a bound derived
//!   from each activation format's worst-case rounding error.
//!
//! Weight rows: quantized gaussian rows and the fixture blocks (real and random).

use owl_kernels::quant::{self, dequantize_row, quantize_row, vec_dot_scalar, BlockFormat};

use crate::quant_common::{fixture_cases, Rng};

/// Tight tolerance, relative to Σ|w_i·a_i| (the dequantized products): the kernels sum
/// integers exactly within a block and round only the per-block scaling and the f32
/// accumulation over blocks. Measured max 1.4e-8 here.
const TIGHT_REL: f64 = 2e-6;

fn dequant(f: BlockFormat, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize_row(f, bytes, &mut y).expect("dequantize");
    y
}

/// Worst-case |dequantized − x| of element `i` after quantizing `x` to activation format
/// `act` (for Q8_0/Q8_1 the f16 rounding of the scale adds up to 127·|d − f16(d)|).
fn act_error_bound(act: BlockFormat, x: &[f32], i: usize) -> f64 {
    let block_amax = |be: usize| {
        let b = i / be * be;
        x[b..b + be].iter().fold(0.0f64, |m, v| m.max((*v as f64).abs()))
    };
    match act {
        BlockFormat::F32 => 0.0,
        BlockFormat::F16 => (x[i] as f64).abs() * 2f64.powi(-11) + 6e-8,
        BlockFormat::BF16 => (x[i] as f64).abs() * 2f64.powi(-8),
        BlockFormat::Q8_0 | BlockFormat::Q8_1 => {
            let d = block_amax(32) / 127.0;
            d * (0.5 + 127.0 * 2f64.powi(-11)) * 1.0001
        }
        BlockFormat::Q8_K => block_amax(256) / 127.0 * 0.5 * 1.0001,
        other => panic!("{other:?} is not an activation format"),
    }
}

struct DotCheck {
    tight_rel: f64,
    loose_rel_to_bound: f64,
    rel_to_norms: f64,
}

/// Checks one weight row against activations `x`; returns the measured errors.
fn check_dot(f: BlockFormat, w: &[u8], x: &[f32], what: &str) -> DotCheck {
    let act = f.vec_dot_format();
    let n = x.len();
    let mut a = vec![0u8; act.row_bytes(n).expect("act blocks")];
    quantize_row(act, x, &mut a).expect("quantize activations");
    let got = vec_dot_scalar(f, w, &a) as f64;

    let wd = dequant(f, w, n);
    let ad = dequant(act, &a, n);
    let exact: f64 = wd.iter().zip(&ad).map(|(&p, &q)| p as f64 * q as f64).sum();
    let abs_sum: f64 = wd.iter().zip(&ad).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
    // Q8_1 carries s = f16(d·Σq): the min term of Q4_1/Q5_1 uses that rounded sum.
    let s_rounding: f64 = if act == BlockFormat::Q8_1 {
        let ablocks: &[quant::q8_1::BlockQ8_1] = bytemuck_cast(&a);
        let mins: Vec<f64> = match f {
            BlockFormat::Q4_1 => bytemuck_cast::<quant::q4_1::BlockQ4_1>(w).iter().map(|b| b.m() as f64).collect(),
            BlockFormat::Q5_1 => bytemuck_cast::<quant::q5_1::BlockQ5_1>(w).iter().map(|b| b.m() as f64).collect(),
            _ => vec![0.0; ablocks.len()],
        };
        ablocks.iter().zip(&mins).map(|(b, m)| m.abs() * (b.s() as f64).abs() * 2f64.powi(-11)).sum()
    } else {
        0.0
    };
    let tight_tol = TIGHT_REL * abs_sum + s_rounding + 1e-30;
    let tight_err = (got - exact).abs();
    assert!(
        tight_err <= tight_tol,
        "{f:?} {what}: vec_dot {got:e} vs f64 dot of dequantized rows {exact:e}: error {tight_err:e} > {tight_tol:e}"
    );

    let exact_x: f64 = wd.iter().zip(x).map(|(&p, &q)| p as f64 * q as f64).sum();
    let bound: f64 = (0..n).map(|i| (wd[i] as f64).abs() * act_error_bound(act, x, i)).sum::<f64>() + tight_tol + 1e-30;
    let loose_err = (got - exact_x).abs();
    assert!(
        loose_err <= bound,
        "{f:?} {what}: vec_dot {got:e} vs f64 dot with unquantized activations {exact_x:e}: error {loose_err:e} > bound {bound:e}"
    );
    let norms = (wd.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
        * x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>())
    .sqrt();
    DotCheck {
        tight_rel: (tight_err - s_rounding).max(0.0) / abs_sum.max(1e-30),
        loose_rel_to_bound: loose_err / bound,
        rel_to_norms: loose_err / norms.max(1e-30),
    }
}

fn bytemuck_cast<T: bytemuck::Pod>(b: &[u8]) -> &[T] {
    bytemuck::cast_slice(b)
}

#[test]
fn vec_dot_matches_dequantized_dot_for_every_format() {
    let mut rng = Rng::new(0xD07);
    for f in BlockFormat::ALL {
        let (mut tight, mut loose, mut rel) = (0.0f64, 0.0f64, 0.0f64);
        let mut rows = 0;
        // Quantized gaussian weight rows of several lengths, activations of varied scale.
        for (n, sigma_x) in [(256, 1.0), (1024, 0.1), (4096, 3.0), (8192, 1.0)] {
            let wrow = rng.gaussian_row(n, 0.05);
            let mut w = vec![0u8; f.row_bytes(n).expect("blocks")];
            quantize_row(f, &wrow, &mut w).expect("quantize weights");
            let x = rng.gaussian_row(n, sigma_x);
            let c = check_dot(f, &w, &x, &format!("gaussian n={n}"));
            tight = tight.max(c.tight_rel);
            loose = loose.max(c.loose_rel_to_bound);
            rel = rel.max(c.rel_to_norms);
            rows += 1;
        }
        println!(
            "{:<7} {rows} rows: tight err/Σ|w·a| max {tight:.1e}; |dot − dot(w, x)| max {rel:.1e} of ‖w‖‖x‖, {:.0}% of its bound",
            f.name(),
            loose * 100.0
        );
    }
}

#[test]
fn vec_dot_on_fixture_blocks() {
    let mut rng = Rng::new(0xF1C);
    for case in fixture_cases() {
        let f = case.format;
        let n = case.dequantized.len();
        // Whole activation blocks (F16/BF16 fixtures have 1024 elements: fine for all).
        let x = rng.gaussian_row(n, 1.0);
        let c = check_dot(f, &case.raw, &x, &case.kind);
        println!(
            "{:<7} {:<13} tight {:.1e}, vs unquantized x {:.1e} of ‖w‖‖x‖ ({:.0}% of bound)",
            f.name(),
            case.kind,
            c.tight_rel,
            c.rel_to_norms,
            c.loose_rel_to_bound * 100.0
        );
    }
}

#[test]
fn float_weights_against_f32_activations_are_exact_to_rounding() {
    let mut rng = Rng::new(0xF32);
    let n = 4096;
    let x = rng.gaussian_row(n, 1.0);
    let wrow = rng.gaussian_row(n, 0.05);
    let mut w16 = vec![quant::f16::BlockF16([0; 2]); n];
    quant::f16::quantize(&wrow, &mut w16);
    let mut wb16 = vec![quant::bf16::BlockBF16([0; 2]); n];
    quant::bf16::quantize(&wrow, &mut wb16);
    let checks: [(&str, Vec<f32>, f32); 3] = [
        ("F32", wrow.clone(), quant::f32::vec_dot(&wrow, &x)),
        ("F16", w16.iter().map(|b| b.to_f32()).collect(), quant::f16::vec_dot_f32(&w16, &x)),
        ("BF16", wb16.iter().map(|b| b.to_f32()).collect(), quant::bf16::vec_dot_f32(&wb16, &x)),
    ];
    for (name, wd, got) in checks {
        let exact: f64 = wd.iter().zip(&x).map(|(&p, &q)| p as f64 * q as f64).sum();
        let abs_sum: f64 = wd.iter().zip(&x).map(|(&p, &q)| (p as f64 * q as f64).abs()).sum();
        // f32 products (2^-24 each), f64 sum, one final rounding to f32.
        let tol = abs_sum * 2f64.powi(-24) * 1.01 + exact.abs() * 2f64.powi(-24);
        let err = (got as f64 - exact).abs();
        println!("{name:<5} · f32: error {err:.1e} (tolerance {tol:.1e})");
        assert!(err <= tol, "{name}: {got} vs {exact}");
    }
}

#[test]
fn q8_k_bytes_need_no_alignment() {
    // Q8_K blocks have alignment 4; the byte-level entry points copy when handed
    // unaligned bytes, with the same results.
    let mut rng = Rng::new(0xA1);
    let n = 256 * 40; // more than one internal chunk of 16 blocks
    let x = rng.gaussian_row(n, 1.0);
    let bytes = BlockFormat::Q8_K.row_bytes(n).expect("blocks");
    let mut aligned = vec![quant::q8_k::BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] }; n / 256];
    quant::q8_k::quantize(&x, &mut aligned);
    let aligned_bytes: &[u8] = bytemuck::cast_slice(&aligned);

    let mut storage = vec![0u8; bytes + 8];
    let off = (1..4).find(|o| !(storage.as_ptr() as usize + o).is_multiple_of(4)).expect("an unaligned offset");
    let unaligned = &mut storage[off..off + bytes];
    quantize_row(BlockFormat::Q8_K, &x, unaligned).expect("quantize unaligned");
    assert_eq!(unaligned, aligned_bytes, "quantize_row into unaligned bytes");

    let mut y1 = vec![0f32; n];
    let mut y2 = vec![0f32; n];
    dequantize_row(BlockFormat::Q8_K, aligned_bytes, &mut y1).expect("aligned");
    dequantize_row(BlockFormat::Q8_K, unaligned, &mut y2).expect("unaligned");
    assert_eq!(y1, y2);

    for f in [BlockFormat::Q4_K, BlockFormat::Q6_K, BlockFormat::IQ4_XS, BlockFormat::Q8_K] {
        let mut w = vec![0u8; f.row_bytes(n).expect("blocks")];
        quantize_row(f, &rng.gaussian_row(n, 0.05), &mut w).expect("weights");
        let d1 = vec_dot_scalar(f, &w, aligned_bytes);
        let d2 = vec_dot_scalar(f, &w, unaligned);
        assert!((d1 - d2).abs() <= 1e-6 * d1.abs().max(1e-6), "{f:?}: aligned {d1} vs unaligned {d2}");
    }
}
