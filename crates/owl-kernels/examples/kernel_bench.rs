//! Kernel benchmark: the machine's read bandwidth, the thread pool's per-call overhead,
//! matvec GB/s per weight format and shape (as % of read bandwidth), and batched-matmul
//! GFLOP/s for prefill.
//!
//! ```text
//! cargo run --release -p owl-kernels --example kernel_bench [-- options]
//!   --quick             smaller buffers and time budgets (a smoke run)
//!   --formats Q4_0,Q8_0 only these weight formats (default: all)
//!   --threads 1,2       thread counts (default: 1 and 2)
//!   --no-matvec / --no-prefill / --no-bandwidth
//! ```
//!
//! Method. The machine may be shared with other processes, so every figure is timed in
//! short batches (~2 ms) and the best batch is reported, with the median beside it.
//! Read bandwidth: an AVX2 (or scalar) sum over a 1 GiB buffer in 64 MiB slices, each
//! thread its own contiguous half of a slice. Matvec "streamed": enough distinct copies of
//! the matrix to exceed 3× the 32 MiB LLC are used in turn, so every call reads its weights
//! from DRAM as a forward pass does; GB/s counts weight bytes only. "Hot": one copy, so
//! the weights stay in cache (the kernel's compute speed). Prefill: a 4096×4096 matmul of 64
//! or 512 tokens and the demo models' FFN shapes at 512 tokens, GFLOP/s =
//! 2·rows·cols·tokens / time. `OWL_KERNELS` selects the kernel set as in the library.

use std::hint::black_box;
use std::time::{Duration, Instant};

use owl_kernels::dispatch::{self, KernelTable};
use owl_kernels::ops::matmul::{matmul_with, Matrix};
use owl_kernels::quant::{self, interleave, BlockFormat};
use owl_kernels::ThreadPool;

/// Last-level cache of the target machine (AMD EPYC here: 32 MiB L3).
const LLC_BYTES: usize = 32 << 20;

struct Options {
    quick: bool,
    formats: Vec<BlockFormat>,
    threads: Vec<usize>,
    bandwidth: bool,
    matvec: bool,
    prefill: bool,
}

fn parse_options() -> Options {
    let mut o = Options {
        quick: false,
        formats: BlockFormat::ALL.to_vec(),
        threads: vec![1, 2],
        bandwidth: true,
        matvec: true,
        prefill: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-bandwidth" => o.bandwidth = false,
            "--no-matvec" => o.matvec = false,
            "--no-prefill" => o.prefill = false,
            "--formats" => {
                let list = args.next().unwrap_or_default();
                o.formats = list
                    .split(',')
                    .map(|n| {
                        BlockFormat::ALL
                            .into_iter()
                            .find(|f| f.name().eq_ignore_ascii_case(n.trim()))
                            .unwrap_or_else(|| die(&format!("unknown format {n}")))
                    })
                    .collect();
            }
            "--threads" => {
                let list = args.next().unwrap_or_default();
                o.threads = list
                    .split(',')
                    .map(|n| n.trim().parse().unwrap_or_else(|_| die(&format!("bad thread count {n}"))))
                    .collect();
            }
            "--bench" => {} // passed by `cargo bench`
            other => die(&format!("unknown option {other}")),
        }
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

fn main() {
    let o = parse_options();
    let table = dispatch::active().unwrap_or_else(|e| die(&e.to_string()));
    println!("# owl-kernels benchmark");
    println!(
        "kernels: {} (detected {}); cpu threads available: {}",
        table.isa(),
        dispatch::detected_isa(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    let pools: Vec<(usize, ThreadPool)> = o.threads.iter().map(|&n| (n, ThreadPool::new(n))).collect();

    pool_overhead(&pools);
    let bandwidth: Vec<(usize, f64)> =
        if o.bandwidth { read_bandwidth(&pools, if o.quick { 256 << 20 } else { 1 << 30 }) } else { Vec::new() };
    if o.matvec {
        matvec_table(table, &pools, &o, &bandwidth);
    }
    if o.prefill {
        prefill_table(table, &pools, &o);
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("\nload average at end: {}", load.trim());
    }
}

// --- thread pool --------------------------------------------------------------------------

fn pool_overhead(pools: &[(usize, ThreadPool)]) {
    println!("\n## ThreadPool::run overhead (empty closure)\n");
    println!("| threads | median µs/call | best µs/call |");
    println!("|---|---|---|");
    for (n, pool) in pools {
        let calls = 20_000;
        for _ in 0..2_000 {
            pool.run(&|_, _| {});
        }
        let mut per_call: Vec<f64> = (0..15)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..calls {
                    pool.run(&|i, _| {
                        black_box(i);
                    });
                }
                t.elapsed().as_secs_f64() / calls as f64 * 1e6
            })
            .collect();
        per_call.sort_by(f64::total_cmp);
        println!("| {n} | {:.2} | {:.2} |", per_call[per_call.len() / 2], per_call[0]);
    }
}

// --- read bandwidth -----------------------------------------------------------------------

/// Sum of a buffer's bytes as u64 lanes, the fastest plain read loop we have.
fn read_sum(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if dispatch::Isa::Avx2.is_available() {
        // SAFETY: AVX2 checked just above.
        return unsafe { read_sum_avx2(buf) };
    }
    buf.iter().fold(0u64, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_sum_avx2(buf: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let n = buf.len() / 16 * 16;
    let p = buf.as_ptr().cast::<__m256i>();
    // SAFETY: 4 loads of 32 bytes per 16 u64 = 128 bytes, all below `n`.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i < n / 4 {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_epi64(*a, _mm256_loadu_si256(p.add(i + k)));
            }
            i += 4;
        }
        let s = _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3]));
        let mut lanes = [0u64; 4];
        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s);
        let tail: u64 = buf[n..].iter().fold(0, |a, &b| a.wrapping_add(b));
        lanes.iter().fold(tail, |a, &b| a.wrapping_add(b))
    }
}

/// Read bandwidth over a `bytes` buffer, passed through in 64 MiB slices (2× the LLC, so
/// each slice comes from DRAM) — best and median slice rate over several full passes.
fn read_bandwidth(pools: &[(usize, ThreadPool)], bytes: usize) -> Vec<(usize, f64)> {
    const SLICE: usize = 64 << 20;
    println!("\n## Read bandwidth ({} MiB buffer in 64 MiB slices, 4 passes)\n", bytes >> 20);
    println!("1 thread: on-CPU time per slice; 2+ threads: wall time of the slices during which every");
    println!("thread ran (process CPU time ≥ 90% of threads × wall); * = no such slice, best slice shown.\n");
    let buf: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    println!("| threads | GB/s (best slice) | GB/s (median slice, wall) |");
    println!("|---|---|---|");
    let mut out = Vec::new();
    for (n, pool) in pools {
        let n = *n;
        let words = SLICE / 8;
        let (mut rates, mut clean) = (Vec::new(), Vec::new());
        for _pass in 0..4 {
            for slice in buf.chunks(words) {
                let per_thread = slice.len().div_ceil(n);
                let (t, c0, p0) = (Instant::now(), thread_cpu_ns(), cpu_ns(false));
                pool.run(&|i, nt| {
                    // `nt` is 1 if the pool could not be entered; cover everything then.
                    let (start, len) = if nt == n { (i * per_thread, per_thread) } else { (0, slice.len()) };
                    let end = (start + len).min(slice.len());
                    black_box(read_sum(&slice[start.min(end)..end]));
                });
                let wall = t.elapsed().as_secs_f64();
                let gb = slice.len() as f64 * 8.0 / 1e9;
                rates.push(gb / wall);
                match (n, c0, thread_cpu_ns(), p0, cpu_ns(false)) {
                    (1, Some(c0), Some(c1), _, _) => clean.push(gb / ((c1 - c0) as f64 * 1e-9).max(1e-9)),
                    (_, _, _, Some(p0), Some(p1)) if (p1 - p0) as f64 * 1e-9 >= 0.9 * n as f64 * wall => {
                        clean.push(gb / wall)
                    }
                    _ => {}
                }
            }
        }
        rates.sort_by(f64::total_cmp);
        clean.sort_by(f64::total_cmp);
        let (best, mark) = match clean.last() {
            Some(&b) => (b, ""),
            None => (rates[rates.len() - 1], "*"),
        };
        println!("| {n} | {best:.1}{mark} | {:.1} |", rates[rates.len() / 2]);
        out.push((n, best));
    }
    out
}

// --- matvec -------------------------------------------------------------------------------

/// Weight rows of `format`: 64 distinct quantized gaussian rows repeated (the kernels'
/// speed does not depend on the values, and quantizing 100 M elements would take minutes).
fn weights(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let row_bytes = format.row_bytes(cols).expect("benchmark shapes fit every format");
    let distinct = rows.min(64);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut src = vec![0f32; cols];
    let mut seed_rows = vec![0u8; distinct * row_bytes];
    for r in 0..distinct {
        for v in src.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        }
        quant::quantize_row(format, &src, &mut seed_rows[r * row_bytes..(r + 1) * row_bytes]).expect("quantize");
    }
    let mut data = Vec::with_capacity(rows * row_bytes);
    for r in 0..rows {
        let s = r % distinct;
        data.extend_from_slice(&seed_rows[s * row_bytes..(s + 1) * row_bytes]);
    }
    data
}

struct Shape {
    name: &'static str,
    rows: usize,
    cols: usize,
}

const SHAPES: [Shape; 8] = [
    Shape { name: "4096x4096", rows: 4096, cols: 4096 },
    Shape { name: "smollm2 ffn_down 576x1536", rows: 576, cols: 1536 },
    Shape { name: "smollm2 ffn_up 1536x576", rows: 1536, cols: 576 },
    Shape { name: "smollm2 attn 576x576", rows: 576, cols: 576 },
    Shape { name: "smollm2 output 49152x576", rows: 49152, cols: 576 },
    Shape { name: "qwen2.5 ffn_down 896x4864", rows: 896, cols: 4864 },
    Shape { name: "qwen2.5 ffn_up 4864x896", rows: 4864, cols: 896 },
    Shape { name: "qwen2.5 output 151936x896", rows: 151936, cols: 896 },
];

/// Seconds per call: the best and the median batch by wall time, and the best batch by the
/// calling thread's on-CPU time (what a single-threaded call costs when it is not preempted).
#[derive(Clone, Copy)]
struct Timing {
    best: f64,
    median: f64,
    /// Best batch by the calling thread's on-CPU time.
    cpu_best: Option<f64>,
    /// Best wall time among batches during which the process ran on all its threads
    /// (process CPU time ≥ 90% of threads × wall time), if any.
    uncontended_best: Option<f64>,
}

/// Nanoseconds on a CPU of the calling thread (`thread = true`) or of the whole process,
/// from `clock_gettime` (exact to the nanosecond on Linux), if available.
#[cfg(target_os = "linux")]
fn cpu_ns(thread: bool) -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    let clock = if thread { CLOCK_THREAD_CPUTIME_ID } else { CLOCK_PROCESS_CPUTIME_ID };
    // SAFETY: libc's clock_gettime with a valid out pointer (std links libc on Linux).
    let rc = unsafe { clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.sec as u64 * 1_000_000_000 + ts.nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn cpu_ns(_thread: bool) -> Option<u64> {
    None
}

fn thread_cpu_ns() -> Option<u64> {
    cpu_ns(true)
}

/// Runs `f` in short batches (~2 ms, at least one call) until `budget` is spent and at least
/// 5 batches (3 for calls over 0.25 s) ran. Short batches and the best one: on a machine shared with other processes
/// some batches run without being preempted, and their time is the kernel's; the median
/// shows how much the neighbours cost.
fn time_calls(budget: Duration, threads: usize, mut f: impl FnMut()) -> Timing {
    f(); // warm-up (grows scratch, faults pages in)
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let per_batch = ((2e-3 / one) as usize).max(1);
    // Calls of a quarter second or more (scalar kernels at 512 tokens): 3 samples suffice.
    let min_samples = if one > 0.25 { 3 } else { 5 };
    let mut samples = Vec::new();
    let mut cpu_best = f64::MAX;
    let mut uncontended_best = f64::MAX;
    let start = Instant::now();
    while samples.len() < min_samples || (start.elapsed() < budget && samples.len() < 10_000) {
        let (t, c0, p0) = (Instant::now(), thread_cpu_ns(), cpu_ns(false));
        for _ in 0..per_batch {
            f();
        }
        let wall = t.elapsed().as_secs_f64();
        samples.push(wall / per_batch as f64);
        if let (Some(c0), Some(c1)) = (c0, thread_cpu_ns()) {
            cpu_best = cpu_best.min((c1 - c0) as f64 * 1e-9 / per_batch as f64);
        }
        if let (Some(p0), Some(p1)) = (p0, cpu_ns(false)) {
            if (p1 - p0) as f64 * 1e-9 >= 0.9 * threads as f64 * wall {
                uncontended_best = uncontended_best.min(wall / per_batch as f64);
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    let cpu_best = (cpu_best < f64::MAX).then_some(cpu_best.max(1e-9));
    let uncontended_best = (uncontended_best < f64::MAX).then_some(uncontended_best);
    Timing { best: samples[0], median: samples[samples.len() / 2], cpu_best, uncontended_best }
}

/// The figure for a table cell and whether it is contended: one thread by on-CPU time (the
/// calling thread does all the work); several by the best batch in which all threads ran,
/// or — marked — the best batch at all when every batch lost CPU time to other processes.
fn headline_secs(t: &Timing, threads: usize) -> (f64, &'static str) {
    match (threads, t.cpu_best, t.uncontended_best) {
        (1, Some(cpu), _) => (cpu, ""),
        (_, _, Some(wall)) => (wall, ""),
        _ => (t.best, "*"),
    }
}

fn matvec_table(table: &KernelTable, pools: &[(usize, ThreadPool)], o: &Options, bandwidth: &[(usize, f64)]) {
    println!("\n## Matvec (1 token)\n");
    println!("GB/s of weight bytes: 1 thread by on-CPU time of the best batch, 2+ threads by wall time of");
    println!("the best batch during which every thread ran (* = none did; best batch shown); median");
    println!("wall-time batch in brackets. Streamed: distinct copies of the");
    println!("matrix (> 3x LLC in all) used in turn, so every call reads its weights from DRAM; %BW:");
    println!("best streamed rate / best read bandwidth at the same thread count. Hot: one copy, cache-resident.\n");
    let mut header = format!("| shape | format | dot | MiB | hot {} thr |", pools[0].0);
    for (n, _) in pools {
        header += &format!(" streamed {n} thr | %BW | µs/call {n} thr |");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(5 + 3 * pools.len()));
    let budget = Duration::from_millis(if o.quick { 60 } else { 300 });
    let shapes: &[Shape] = if o.quick { &SHAPES[..4] } else { &SHAPES };
    for shape in shapes {
        for (&format, interleaved) in o.formats.iter().flat_map(|f| [(f, false), (f, true)]) {
            if interleaved && !interleave::can_interleave(format, shape.rows, shape.cols) {
                continue;
            }
            let Some(row_bytes) = format.row_bytes(shape.cols) else { continue };
            let Some(k) = table.get(format) else { continue };
            let bytes = row_bytes * shape.rows;
            let mut base = weights(format, shape.rows, shape.cols, 1);
            if interleaved {
                let mut packed = vec![0u8; base.len()];
                interleave::interleave_matrix(format, shape.rows, shape.cols, &base, &mut packed).expect("interleave");
                base = packed;
            }
            fn matrix<'a>(format: BlockFormat, shape: &Shape, interleaved: bool, data: &'a [u8]) -> Matrix<'a> {
                if interleaved {
                    Matrix::interleaved(format, shape.rows, shape.cols, data)
                } else {
                    Matrix::new(format, shape.rows, shape.cols, data)
                }
            }
            let x: Vec<f32> = (0..shape.cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
            let mut y = vec![0f32; shape.rows];
            let mut line = format!(
                "| {} | {} | {}{} | {:.2} |",
                shape.name,
                format.name(),
                k.dot_isa(),
                if interleaved { " 8-row interleaved" } else { "" },
                bytes as f64 / (1 << 20) as f64
            );
            if bytes <= LLC_BYTES / 2 {
                let w = matrix(format, shape, interleaved, &base);
                let (n0, pool0) = &pools[0];
                let t = time_calls(budget, *n0, || matmul_with(table, pool0, &w, &x, 1, &mut y).expect("matvec"));
                let (secs, mark) = headline_secs(&t, *n0);
                line += &format!(" {:.1}{mark} |", bytes as f64 / secs / 1e9);
            } else {
                line += " — |";
            }
            // Distinct copies so that consecutive calls never find the weights in cache.
            let copies = (3 * LLC_BYTES).div_ceil(bytes).clamp(1, 4096);
            let copies: Vec<Vec<u8>> = (0..copies).map(|_| base.clone()).collect();
            drop(base);
            for (n, pool) in pools {
                let mut next = 0usize;
                let t = time_calls(budget, *n, || {
                    let data = &copies[next % copies.len()];
                    next += 1;
                    let w = matrix(format, shape, interleaved, data);
                    matmul_with(table, pool, &w, &x, 1, &mut y).expect("matvec");
                });
                let (secs, mark) = headline_secs(&t, *n);
                let (best, median) = (bytes as f64 / secs / 1e9, bytes as f64 / t.median / 1e9);
                let pct = bandwidth
                    .iter()
                    .find(|(t, _)| t == n)
                    .map_or("—".to_string(), |(_, bw)| format!("{:.0}%", 100.0 * best / bw));
                line += &format!(" {best:.1}{mark} ({median:.1}) | {pct} | {:.0} |", secs * 1e6);
            }
            println!("{line}");
        }
    }
}

// --- prefill ------------------------------------------------------------------------------

/// Prefill shapes: the 4096×4096 reference at 64 and 512 tokens, then the demo models'
/// small matrices at 512 tokens (few blocks per row, so per-tile fixed costs show).
const PREFILL_SHAPES: [(&str, usize, usize, &[usize]); 5] = [
    ("4096x4096", 4096, 4096, &[64, 512]),
    ("gemma3 ffn_down 640x2048", 640, 2048, &[512]),
    ("gemma3 ffn_up 2048x640", 2048, 640, &[512]),
    ("qwen2.5 ffn_down 896x4864", 896, 4864, &[512]),
    ("qwen2.5 ffn_up 4864x896", 4864, 896, &[512]),
];

fn prefill_table(table: &KernelTable, pools: &[(usize, ThreadPool)], o: &Options) {
    println!("\n## Batched matmul (prefill)\n");
    println!("GFLOP/s = 2·rows·cols·tokens / time, activation quantization included; timed as the matvec");
    println!("table (1 thread on-CPU, 2+ threads uncontended wall time, * = contended); median in brackets.\n");
    let mut header = "| shape | tokens | format | dot |".to_string();
    for (n, _) in pools {
        header += &format!(" {n} thr |");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(4 + pools.len()));
    let budget = Duration::from_millis(if o.quick { 150 } else { 1000 });
    let shapes = if o.quick { &PREFILL_SHAPES[..1] } else { &PREFILL_SHAPES[..] };
    for &(name, rows, cols, token_counts) in shapes {
        let (rows, token_counts) = if o.quick { (1024, &[64][..]) } else { (rows, token_counts) };
        for &format in &o.formats {
            let Some(k) = table.get(format) else { continue };
            if format.row_bytes(cols).is_none() {
                continue;
            }
            let data = weights(format, rows, cols, 2);
            let w = Matrix::new(format, rows, cols, &data);
            for &tokens in token_counts {
                let mut line = format!("| {name} | {tokens} | {} | {} |", format.name(), k.dot_isa());
                let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
                let mut y = vec![0f32; tokens * rows];
                for (n, pool) in pools {
                    let t = time_calls(budget, *n, || {
                        matmul_with(table, pool, &w, &x, tokens, &mut y).expect("matmul");
                    });
                    let (secs, mark) = headline_secs(&t, *n);
                    let flops = 2.0 * (rows * cols * tokens) as f64 / 1e9;
                    line += &format!(" {:.1}{mark} ({:.1}) |", flops / secs, flops / t.median);
                }
                println!("{line}");
            }
        }
    }
}
