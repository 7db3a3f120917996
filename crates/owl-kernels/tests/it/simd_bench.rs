//! Single-thread matvec throughput of the scalar and AVX2 dot products (ignored by default:
//! a measurement, not a check). Run with
//! `cargo test -p owl-kernels --test it simd_bench -- --ignored --nocapture --test-threads 1`.
//!
//! For each format: a weight matrix of ~96 MiB (3× the 32 MiB L3, so rows stream from DRAM)
//! and one of ~256 KiB (L2-resident: the kernel's compute ceiling), one quantized activation
//! row; GB/s = weight bytes read per second. `x4` is `vec_dot_n::<4>` (one pass over the
//! weights for 4 activation rows, as a prefill tile does), counted as weight bytes per second.

use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use owl_kernels::quant::{self, BlockFormat};

use crate::quant_common::Rng;
use crate::simd_common::{activation_row, avx2_available, blocks_from_bytes, random_bytes};

struct Bench<W: 'static, A: 'static> {
    format: BlockFormat,
    scalar: fn(&[W], &[A]) -> f32,
    avx2: unsafe fn(&[W], &[A]) -> f32,
    avx2_n4: unsafe fn(&[W], [&[A]; 4]) -> [f32; 4],
    quantize_act: fn(&[f32], &mut [A]),
    /// Sets sane scales on random blocks (random f16 bits could be inf/NaN).
    fix: fn(&mut W),
}

/// Nanoseconds this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`), or `None` off
/// Linux. On a shared machine wall time counts other processes' time slices; this does not.
/// (`/proc/thread-self/schedstat` is only updated at scheduler ticks: useless for short
/// rounds.)
#[cfg(target_os = "linux")]
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: libc's clock_gettime writes one timespec (two i64 on x86-64 Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.sec as u64 * 1_000_000_000 + ts.nsec as u64)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Seconds per pass over the matrix for each of `passes` (on-CPU time where available, else
/// wall time): the best of several rounds, the candidates interleaved within each round so
/// that load from other processes on a shared machine hits them alike.
pub(crate) fn time_passes(passes: &mut [&mut dyn FnMut() -> f32], bytes: usize) -> Vec<f64> {
    let reps = if bytes > (64 << 20) { 1 } else { (32 << 20) / bytes };
    let mut best = vec![f64::MAX; passes.len()];
    let mut sink = 0.0f32;
    for round in 0..12 {
        for (k, pass) in passes.iter_mut().enumerate() {
            let (t, c) = (Instant::now(), thread_cpu_ns());
            for _ in 0..if round == 0 { 1 } else { reps } {
                sink += pass();
            }
            let secs = match (c, thread_cpu_ns()) {
                (Some(c0), Some(c1)) => (c1 - c0) as f64 * 1e-9,
                _ => t.elapsed().as_secs_f64(),
            };
            if round > 0 {
                best[k] = best[k].min(secs / reps as f64);
            }
        }
    }
    std::hint::black_box(sink);
    best
}

fn run<W: Pod, A: Pod + Zeroable>(b: &Bench<W, A>) {
    let cols = 4096;
    let act_format = b.format.vec_dot_format();
    let row_blocks = cols / b.format.block_elems();
    let row_bytes = row_blocks * std::mem::size_of::<W>();
    let mut rng = Rng::new(0xBE7C);
    let x = activation_row(&mut rng, cols, act_format.block_elems());
    let mut acts: Vec<Vec<A>> = Vec::new();
    for s in 0..4 {
        let mut a = vec![A::zeroed(); cols / act_format.block_elems()];
        let xs: Vec<f32> = x.iter().map(|v| v * (1.0 + s as f32 * 0.1)).collect();
        (b.quantize_act)(&xs, &mut a);
        acts.push(a);
    }
    let a = &acts[0];
    let mut line = format!("{:<7}", b.format.name());
    for (label, target_bytes) in [("L2 256K", 256usize << 10), ("DRAM 96M", 96 << 20)] {
        let rows = (target_bytes / row_bytes).max(1);
        let mut w: Vec<W> = blocks_from_bytes(&random_bytes(&mut rng, rows * row_bytes));
        w.iter_mut().for_each(b.fix);
        let bytes = rows * row_bytes;
        let gbs = |secs: f64| bytes as f64 / secs / 1e9;
        let rows4 = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
        let mut scalar = || w.chunks_exact(row_blocks).map(|r| (b.scalar)(r, a)).sum::<f32>();
        // SAFETY (both): avx2_available() was checked by the caller.
        let mut avx2 = || w.chunks_exact(row_blocks).map(|r| unsafe { (b.avx2)(r, a) }).sum::<f32>();
        let mut x4 = || w.chunks_exact(row_blocks).map(|r| unsafe { (b.avx2_n4)(r, rows4) }[0]).sum::<f32>();
        let t = time_passes(&mut [&mut scalar, &mut avx2, &mut x4], bytes);
        let (scalar, avx2, x4) = (gbs(t[0]), gbs(t[1]), gbs(t[2]));
        line += &format!(" | {label}: scalar {scalar:5.2}  avx2 {avx2:5.2} GB/s ({:4.1}x)  x4 {x4:5.2}", avx2 / scalar);
    }
    println!("{line}");
}

/// Activation quantizer throughput (GB/s of f32 input), scalar vs AVX2, on an L2-resident row.
fn run_quantize<B: Pod + Zeroable>(
    name: &str,
    block: usize,
    scalar: fn(&[f32], &mut [B]),
    avx2: unsafe fn(&[f32], &mut [B]),
) {
    let n = 64 * 1024;
    let mut rng = Rng::new(0x9A7);
    let x = activation_row(&mut rng, n, block);
    let mut out = vec![B::zeroed(); n / block];
    let bytes = n * 4;
    let mut s = || {
        scalar(&x, &mut out);
        0.0f32
    };
    let mut out2 = vec![B::zeroed(); n / block];
    // SAFETY: avx2_available() was checked by the caller.
    let mut v = || {
        unsafe { avx2(&x, &mut out2) };
        0.0f32
    };
    let t = time_passes(&mut [&mut s, &mut v], bytes);
    let gbs = |secs: f64| bytes as f64 / secs / 1e9;
    println!("quantize {name:<5} scalar {:6.2}  avx2 {:6.2} GB/s of f32 ({:4.1}x)", gbs(t[0]), gbs(t[1]), t[0] / t[1]);
}

fn f16_one() -> [u8; 2] {
    quant::f32_to_f16(0.01)
}

use quant::{iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k};

#[test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
fn simd_bench_matvec_throughput() {
    if !avx2_available() {
        return;
    }
    run_quantize("Q8_0", 32, q8_0::quantize, q8_0::avx2::quantize);
    run_quantize("Q8_1", 32, q8_1::quantize, q8_1::avx2::quantize);
    run_quantize("Q8_K", 256, q8_k::quantize, q8_k::avx2::quantize);
    println!("single-thread matvec, 4096 columns, GB/s of weights");
    run(&Bench {
        format: BlockFormat::Q8_0,
        scalar: q8_0::vec_dot,
        avx2: q8_0::avx2::vec_dot,
        avx2_n4: q8_0::avx2::vec_dot_n::<4>,
        quantize_act: q8_0::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::Q4_0,
        scalar: q4_0::vec_dot,
        avx2: q4_0::avx2::vec_dot,
        avx2_n4: q4_0::avx2::vec_dot_n::<4>,
        quantize_act: q8_0::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::Q4_1,
        scalar: q4_1::vec_dot,
        avx2: q4_1::avx2::vec_dot,
        avx2_n4: q4_1::avx2::vec_dot_n::<4>,
        quantize_act: q8_1::quantize,
        fix: |b| {
            b.d = f16_one();
            b.m = f16_one();
        },
    });
    run(&Bench {
        format: BlockFormat::Q5_0,
        scalar: q5_0::vec_dot,
        avx2: q5_0::avx2::vec_dot,
        avx2_n4: q5_0::avx2::vec_dot_n::<4>,
        quantize_act: q8_0::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::Q5_1,
        scalar: q5_1::vec_dot,
        avx2: q5_1::avx2::vec_dot,
        avx2_n4: q5_1::avx2::vec_dot_n::<4>,
        quantize_act: q8_1::quantize,
        fix: |b| {
            b.d = f16_one();
            b.m = f16_one();
        },
    });
    run(&Bench {
        format: BlockFormat::IQ4_NL,
        scalar: iq4_nl::vec_dot,
        avx2: iq4_nl::avx2::vec_dot,
        avx2_n4: iq4_nl::avx2::vec_dot_n::<4>,
        quantize_act: q8_0::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::Q2_K,
        scalar: q2_k::vec_dot,
        avx2: q2_k::avx2::vec_dot,
        avx2_n4: q2_k::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| {
            b.d = f16_one();
            b.dmin = f16_one();
        },
    });
    run(&Bench {
        format: BlockFormat::Q3_K,
        scalar: q3_k::vec_dot,
        avx2: q3_k::avx2::vec_dot,
        avx2_n4: q3_k::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::Q4_K,
        scalar: q4_k::vec_dot,
        avx2: q4_k::avx2::vec_dot,
        avx2_n4: q4_k::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| {
            b.d = f16_one();
            b.dmin = f16_one();
        },
    });
    run(&Bench {
        format: BlockFormat::Q5_K,
        scalar: q5_k::vec_dot,
        avx2: q5_k::avx2::vec_dot,
        avx2_n4: q5_k::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| {
            b.d = f16_one();
            b.dmin = f16_one();
        },
    });
    run(&Bench {
        format: BlockFormat::Q6_K,
        scalar: q6_k::vec_dot,
        avx2: q6_k::avx2::vec_dot,
        avx2_n4: q6_k::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| b.d = f16_one(),
    });
    run(&Bench {
        format: BlockFormat::IQ4_XS,
        scalar: iq4_xs::vec_dot,
        avx2: iq4_xs::avx2::vec_dot,
        avx2_n4: iq4_xs::avx2::vec_dot_n::<4>,
        quantize_act: q8_k::quantize,
        fix: |b| b.d = f16_one(),
    });
}
