//! Times the attention kernel alone: a block of queries (or one decode query) of a GQA group
//! over an F16 key/value cache of a given length.
//!
//!   cargo run --release -p owl-kernels --example bench_attention -- [context] [queries] [heads] [head_dim]

use std::time::Instant;

/// Nanoseconds this thread has run on a CPU (Linux; the machine may be shared, so wall time
/// alone says little).
fn thread_cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

use half::f16;
use owl_kernels::ops::attention::{attend, scratch_floats, KeyWindow, KvRows, Queries, ScoreParams};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let ctx = args.first().copied().unwrap_or(4096);
    let nq = args.get(1).copied().unwrap_or(16);
    let nh = args.get(2).copied().unwrap_or(3);
    let d = args.get(3).copied().unwrap_or(64);
    let val = |i: usize| ((i.wrapping_mul(2654435761) % 1000) as f32 / 500.0 - 1.0) * 0.3;
    let keys: Vec<f16> = (0..ctx * d).map(|i| f16::from_f32(val(i))).collect();
    let values: Vec<f16> = (0..ctx * d).map(|i| f16::from_f32(val(i + 7))).collect();
    let q: Vec<f32> = (0..nq * nh * d).map(|i| val(i + 3)).collect();
    let positions: Vec<usize> = (ctx - nq..ctx).collect();
    let mut scratch = vec![0.0; scratch_floats(nh, d, d)];
    let mut out = vec![0.0; nq * nh * d];
    let queries = Queries { q: &q, stride: nh * d, positions: &positions, n_heads: nh };
    let seen = KeyWindow { slots: ctx, window: None };
    let params = ScoreParams { scale: 0.125, softcap: None };
    let reps = (200_000_000 / (ctx * nq * nh * d)).max(3);
    let (t, c) = (Instant::now(), thread_cpu_ns());
    for _ in 0..reps {
        attend(&queries, KvRows::F16(&keys), KvRows::F16(&values), d, d, seen, params, &mut scratch, &mut out);
    }
    let wall = t.elapsed().as_secs_f64() / reps as f64;
    let s = (thread_cpu_ns() - c) / 1e9 / reps as f64;
    let pairs = (nq * nh * ctx) as f64;
    println!(
        "context {ctx}, {nq} queries x {nh} heads x {d} dims: {:.2} ms/call on CPU ({:.2} wall), {:.2} ns per (query, head, key), {:.1} GFLOP/s",
        s * 1e3,
        wall * 1e3,
        s * 1e9 / pairs,
        pairs * d as f64 * 4.0 / s / 1e9
    );
}
