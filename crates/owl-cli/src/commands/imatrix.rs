//! `owl imatrix MODEL TEXT -o FILE`: an importance matrix over a calibration text, as
//! llama-imatrix computes it: the text in windows of `--ctx-size` tokens (BOS first where
//! the model adds one), every decoder projection's input columns squared and summed per
//! stored weight (per expert for stacked experts), written in llama.cpp's GGUF imatrix
//! format for `owl quantize --imatrix` or llama-quantize. The perplexity of the windows'
//! second halves is reported too, as llama-imatrix prints it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use owl_convert::imatrix::{Imatrix, ImatrixEntry};
use owl_engine::{perplexity, ImatrixCollector, PerplexityParams};

use crate::args::ImatrixArgs;
use crate::commands::load;
use crate::commands::perplexity::print_running_ppl;
use crate::printer;

const N_BATCH: usize = 512;

pub fn run(args: &ImatrixArgs) -> anyhow::Result<()> {
    let text = load::read_text(&args.text)?;
    let threads = load::threads_or_default(args.threads);
    let n_ctx = args.ctx;
    let mut loaded = load::load(&args.model, threads, N_BATCH.min(n_ctx), false)?;
    if loaded.path.is_dir() {
        bail!(
            "{}: an importance matrix names llama.cpp's GGUF tensors; convert the directory first (owl convert {} model.gguf --type f16)",
            loaded.name,
            loaded.path.display()
        );
    }
    let trained = loaded.model.config().context_length;
    if trained > 0 && n_ctx > trained {
        printer::warning(&format!("--ctx-size {n_ctx} is more than the {trained} tokens the model was trained for"));
    }
    let tokens = loaded.tokenizer.encode(&text, true, false)?;
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{}: {} tokens; an importance matrix with --ctx-size {n_ctx} needs at least {} (two windows)",
            args.text.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let bos = if loaded.tokenizer.adds_bos() { loaded.tokenizer.bos_id() } else { None };
    let collector = Arc::new(ImatrixCollector::new());
    loaded.model.set_activation_observer(Some(collector.clone()));
    let mut runner = load::runner(loaded.model, 1, n_ctx.max(3), owl_models::KvDtype::F16)?;
    let params = PerplexityParams { n_ctx, bos, n_batch: N_BATCH.min(n_ctx), max_chunks: args.chunks };
    let planned = (tokens.len() / n_ctx).min(args.chunks.unwrap_or(usize::MAX));
    printer::progress(&format!("{}: {} tokens, {planned} chunks of {n_ctx} tokens", args.text.display(), tokens.len()));
    let started = Instant::now();
    let cancel = AtomicBool::new(false);
    let result = perplexity(&mut runner, &tokens, &params, &cancel, print_running_ppl)?;
    let seconds = started.elapsed().as_secs_f64();

    let stats = collector.snapshot();
    if stats.is_empty() {
        bail!("{}: no decoder projection was observed (not a transformer GGUF?)", loaded.name);
    }
    let dataset = args.text.file_name().map_or_else(|| args.text.display().to_string(), |n| n.to_string_lossy().into());
    let mut imatrix = Imatrix {
        datasets: vec![dataset],
        chunk_count: u32::try_from(result.chunks).unwrap_or(u32::MAX),
        chunk_size: u32::try_from(n_ctx).unwrap_or(u32::MAX),
        ..Imatrix::default()
    };
    for (name, s) in stats {
        let entry = ImatrixEntry {
            sums: s.sums.iter().map(|&v| v as f32).collect(),
            counts: s.counts.iter().map(|&c| i64::try_from(c).unwrap_or(i64::MAX)).collect(),
        };
        imatrix.entries.insert(name, entry);
    }
    let entries = imatrix.entries.len();
    imatrix.write_gguf(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    printer::progress(&format!(
        "{} chunks ({} tokens) in {seconds:.1} s; {entries} weights",
        result.chunks,
        result.chunks * n_ctx
    ));
    if args.json {
        printer::json(&serde_json::json!({
            "output": args.out.display().to_string(),
            "entries": entries,
            "chunks": result.chunks,
            "tokens": result.chunks * n_ctx,
            "n_ctx": n_ctx,
            "ppl": result.ppl,
        }))?;
    } else {
        printer::lines([format!(
            "wrote {} ({entries} weights, {} chunks of {n_ctx} tokens); PPL = {:.4} +/- {:.5}",
            args.out.display(),
            result.chunks,
            result.ppl,
            result.ppl_stderr
        )])?;
    }
    Ok(())
}
