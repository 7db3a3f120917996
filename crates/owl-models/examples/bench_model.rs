//! Measures a model: load time, memory report, prefill and decode speed, and optionally a
//! run to the full trained context length (prefill in chunks, then decode at the end).
//!
//!   cargo run -p owl-models --example bench_model -- MODEL.gguf [--threads N]
//!       [--prompt N] [--decode N] [--full-context] [--ctx N]
//!
//! Token ids are synthetic (a fixed pseudo-random sequence): this measures speed and memory,
//! not text quality.

use std::path::PathBuf;
use std::time::Instant;

use owl_models::{Batch, KvDtype, LoadOptions, Model};

fn arg(args: &[String], name: &str) -> Option<usize> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// CPU seconds used by the whole process so far (all threads; Linux `/proc/self/stat`
/// utime + stime in clock ticks of 10 ms). On a shared machine wall time alone misleads.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name (state first); utime and stime are the
    // 12th and 13th of those (fields 14 and 15 of the line).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = PathBuf::from(args.get(1).ok_or("usage: bench_model MODEL [options]")?);
    let threads =
        arg(&args, "--threads").unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let n_prompt = arg(&args, "--prompt").unwrap_or(128);
    let n_decode = arg(&args, "--decode").unwrap_or(32);
    let chunk = 512;
    let full = args.iter().any(|a| a == "--full-context");

    let t = Instant::now();
    let mut model = Model::load(&path, &LoadOptions { threads, max_batch_tokens: chunk })?;
    let cfg = model.config().clone();
    println!(
        "{}: family {}, {} layers, hidden {}, vocab {}, trained context {}; loaded in {:.2}s, {threads} threads",
        path.display(),
        cfg.family,
        cfg.n_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        cfg.context_length,
        t.elapsed().as_secs_f64()
    );
    let n_ctx = if full { cfg.context_length } else { arg(&args, "--ctx").unwrap_or(n_prompt + n_decode) };
    let n_prompt = if full { n_ctx - n_decode } else { n_prompt };
    let mem = model.memory_report(KvDtype::F16);
    println!(
        "memory: weights {:.1} MiB, KV (f16) {:.1} KiB/token + {:.1} MiB/sequence of window rings, scratch {:.1} MiB",
        mem.weight_bytes as f64 / 1048576.0,
        mem.kv_bytes_per_token as f64 / 1024.0,
        mem.kv_window_bytes_per_seq as f64 / 1048576.0,
        mem.scratch_bytes as f64 / 1048576.0
    );
    let mut kv = model.new_kv_cache(1, n_ctx, KvDtype::F16)?;
    let vocab = model.vocab_size() as u32;
    let mut state = 12345u64;
    let mut next_token = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as u32) % vocab.min(30000)
    };
    let tokens: Vec<u32> = (0..n_prompt).map(|_| next_token()).collect();

    let mut batch = Batch::with_capacity(chunk);
    let mut logits = vec![0.0f32; model.vocab_size()];
    let (t, c) = (Instant::now(), cpu_s());
    for (i, piece) in tokens.chunks(chunk).enumerate() {
        batch.clear();
        batch.push_sequence(0, i * chunk, piece, false);
        model.forward(&batch, &mut kv, &mut logits)?;
        if full && i % 4 == 3 {
            println!("  prefilled {} positions, {:.1}s", (i + 1) * chunk, t.elapsed().as_secs_f64());
        }
    }
    let prefill = t.elapsed().as_secs_f64();
    println!(
        "prefill {n_prompt} tokens: {prefill:.2}s wall ({:.1} tok/s), {:.2} CPU-s",
        n_prompt as f64 / prefill,
        cpu_s() - c
    );

    let (t, c) = (Instant::now(), cpu_s());
    let mut tok = logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    for i in 0..n_decode {
        batch.clear();
        batch.push(tok, 0, n_prompt + i, true);
        model.forward(&batch, &mut kv, &mut logits)?;
        assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits at position {}", n_prompt + i);
        tok = logits.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    }
    let decode = t.elapsed().as_secs_f64();
    println!(
        "decode {n_decode} tokens at positions {n_prompt}..{}: {decode:.2}s wall ({:.1} tok/s), {:.2} CPU-s; peak RSS {:.0} MiB",
        n_prompt + n_decode,
        n_decode as f64 / decode,
        cpu_s() - c,
        rss_mib()
    );
    Ok(())
}
