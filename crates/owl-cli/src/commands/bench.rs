//! `owl bench MODEL [-p 64,512] [-n 128] [-r 5] [-t N,...] [--json]`: prompt-processing
//! (ppN) and generation (tgN) speed with owl_engine::run_bench (llama-bench's method), as a
//! markdown table like llama-bench's (rows printed as each test finishes) or a JSON array
//! `[{"test":"pp512","tokens_per_s":..,"stddev":..,"threads":..,...}]`.
//!
//! Threads are fixed when a model is loaded, so the model is loaded once per thread count.

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context};

use owl_engine::{run_bench, BenchParams, BenchResult, ModelRunner};
use owl_models::KvDtype;

use crate::args::BenchArgs;
use crate::commands::load;
use crate::printer;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if args.n_batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    let longest = args.n_prompt.iter().chain(&args.n_gen).copied().max().unwrap_or(0);
    if longest == 0 {
        bail!("nothing to run: every -p and -n length is 0");
    }
    let threads = if args.threads.is_empty() {
        vec![load::physical_cores()]
    } else {
        if args.threads.contains(&0) {
            bail!("--threads must be at least 1");
        }
        args.threads.clone()
    };

    let cancel = AtomicBool::new(false);
    let mut all = Vec::new();
    let mut header_printed = false;
    for &n_threads in &threads {
        let loaded = load::load(&args.model, n_threads, args.n_batch, args.f32_activations)?;
        let bos = if loaded.tokenizer.adds_bos() {
            loaded.tokenizer.bos_id()
        } else {
            None
        };
        let (name, size, parameters) = (loaded.name.clone(), loaded.file_size, loaded.parameters);
        let mut runner = ModelRunner::new(loaded.model, longest, KvDtype::F16)
            .with_context(|| format!("a KV cache of {longest} tokens"))?;
        let params = BenchParams {
            n_prompt: args.n_prompt.clone(),
            n_gen: args.n_gen.clone(),
            repetitions: args.repetitions,
            n_batch: args.n_batch,
            bos,
            warmup: true,
            threads: n_threads,
        };
        let mut write_error = None;
        let results = run_bench(&mut runner, &params, &cancel, |r| {
            if args.json || write_error.is_some() {
                return;
            }
            let mut lines = Vec::new();
            if !header_printed {
                header_printed = true;
                lines.push("| model | size | params | threads | test | t/s |".to_string());
                lines.push("| --- | ---: | ---: | ---: | ---: | ---: |".to_string());
            }
            lines.push(table_row(&name, size, parameters, r));
            if let Err(e) = printer::lines(lines) {
                write_error = Some(e);
            }
        })?;
        if let Some(e) = write_error {
            return Err(e.into());
        }
        all.extend(results);
    }
    if args.json {
        printer::json(&all)?;
    } else {
        io::stdout().flush()?;
    }
    Ok(())
}

fn table_row(name: &str, size: u64, parameters: u64, r: &BenchResult) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {:.2} ± {:.2} |",
        printer::human_bytes(size),
        printer::human_count(parameters),
        r.threads,
        r.test,
        r.tokens_per_s,
        r.stddev
    )
}
