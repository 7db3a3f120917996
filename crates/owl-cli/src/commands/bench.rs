//! `owl bench MODEL [-p 64,512] [-n 128] [-d 0,...] [-r 5] [-t N,...] [--json]`: prompt-processing
//! (ppN) and generation (tgN) speed with owl_engine::bench_test (llama-bench's method), as a
//! markdown table like llama-bench's (rows printed as each test finishes) or a JSON array
//! `[{"test":"pp512","tokens_per_s":..,"stddev":..,"threads":..,"model":..,"size":..,
//! "params":..,"isa":..,...}]`. On a terminal, a progress line on stderr names the test
//! running.
//!
//! Threads are fixed when a model is loaded, so the model is loaded once per thread count.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::AtomicBool;

use anyhow::bail;
use serde::Serialize;

use owl_engine::{bench_test, BenchParams, BenchResult, BenchTest};

use crate::args::BenchArgs;
use crate::commands::load;
use crate::printer;

/// One `--json` row: the engine's result plus what was measured.
#[derive(Debug, Serialize)]
struct BenchRow {
    /// The model's file name (a directory's name for safetensors).
    model: String,
    /// Bytes of the weight file(s).
    size: u64,
    /// Parameters.
    params: u64,
    /// The kernel set the matmuls ran on (`avx2`, `neon`, `scalar`).
    isa: &'static str,
    #[serde(flatten)]
    result: BenchResult,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let longest = args.n_prompt.iter().chain(&args.n_gen).copied().max().unwrap_or(0);
    if longest == 0 {
        bail!("nothing to run: every -p and -n length is 0");
    }
    let threads: Vec<usize> = if args.threads.is_empty() {
        vec![load::physical_cores()]
    } else {
        args.threads.iter().map(|&n| load::clamp_threads(n)).collect()
    };
    let isa = owl_kernels::dispatch::active_isa()?;
    // The AVX-512 prefill tiles run inside the AVX2 set; say so where they are on.
    let isa = match isa {
        owl_kernels::dispatch::Isa::Avx2 if owl_kernels::ops::avx512_prefill_enabled() => "avx2+avx512vnni",
        other => other.name(),
    };
    let tests: Vec<BenchTest> = args
        .n_prompt
        .iter()
        .map(|&n| BenchTest::Prompt(n))
        .chain(args.n_gen.iter().map(|&n| BenchTest::Generation(n)))
        .filter(|t| !matches!(t, BenchTest::Prompt(0) | BenchTest::Generation(0)))
        .collect();
    let depths: Vec<usize> = if args.n_depth.is_empty() { vec![0] } else { args.n_depth.clone() };
    let deepest = depths.iter().copied().max().unwrap_or(0);
    let progress = io::stderr().is_terminal();
    let total = tests.len() * depths.len() * threads.len();

    let cancel = AtomicBool::new(false);
    let mut rows = Vec::new();
    let mut header_printed = false;
    for &n_threads in &threads {
        let loaded = load::load(&args.model, n_threads, args.n_batch, args.f32_activations)?;
        let bos = if loaded.tokenizer.adds_bos() { loaded.tokenizer.bos_id() } else { None };
        let name = loaded.file_name.clone();
        let (size, parameters) = (loaded.file_size, loaded.parameters);
        let mut runner = load::runner(loaded.model, 1, longest + deepest, args.cache_type.dtype())?;
        let params = BenchParams {
            n_prompt: args.n_prompt.clone(),
            n_gen: args.n_gen.clone(),
            repetitions: args.repetitions,
            n_batch: args.n_batch,
            bos,
            warmup: true,
            threads: n_threads,
            n_depth: depths.clone(),
        };
        for (&depth, &test) in depths.iter().flat_map(|d| tests.iter().map(move |t| (d, t))) {
            if progress {
                let done = rows.len();
                let _ = write!(
                    io::stderr(),
                    "\r\x1b[2K[{}/{total}] {} with {n_threads} thread{}: 1 warm-up + {} runs...",
                    done + 1,
                    test.name_at(depth),
                    if n_threads == 1 { "" } else { "s" },
                    args.repetitions
                );
            }
            let result = bench_test(&mut runner, test, depth, &params, &cancel);
            if progress {
                let _ = write!(io::stderr(), "\r\x1b[2K");
            }
            let result = result?;
            if !args.json {
                let mut lines = Vec::new();
                if !header_printed {
                    header_printed = true;
                    lines.push("| model | size | params | isa | threads | test | t/s |".to_string());
                    lines.push("| --- | ---: | ---: | --- | ---: | ---: | ---: |".to_string());
                }
                lines.push(table_row(&name, size, parameters, isa, &result));
                printer::lines(lines)?;
            }
            rows.push(BenchRow { model: name.clone(), size, params: parameters, isa, result });
        }
    }
    if args.json {
        printer::json(&rows)?;
    } else {
        io::stdout().flush()?;
    }
    Ok(())
}

fn table_row(name: &str, size: u64, parameters: u64, isa: &str, r: &BenchResult) -> String {
    format!(
        "| {name} | {} | {} | {isa} | {} | {} | {:.2} ± {:.2} |",
        printer::human_bytes(size),
        printer::human_count(parameters),
        r.threads,
        r.test,
        r.tokens_per_s,
        r.stddev
    )
}
