//! `owl perplexity MODEL FILE [--ctx 512] [--chunks N] [--json]`: perplexity over FILE with
//! llama-perplexity's scheme (owl_engine::perplexity): windows of `--ctx` tokens, each run
//! from an empty cache with BOS first where the model adds one, the second half scored.
//! The running value goes to stderr as llama-perplexity prints it (`[1]12.3456,[2]...`);
//! stdout gets the final estimate, or `{"ppl":..,"chunks":..,"tokens":..,...}` with `--json`.
//! `--save-logprobs PATH` also writes the scored positions' log-probabilities in
//! llama-perplexity's `--kl-divergence-base` format; `--kl-divergence BASE` compares with
//! a base model or such a file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{bail, Context};

use owl_engine::{
    kl_divergence, kl_divergence_saved, perplexity, perplexity_with_rows, BaseLogProbs, BaseLogProbsWriter,
    LanguageModel, PerplexityParams, PerplexityProgress,
};

use crate::args::PerplexityArgs;
use crate::commands::load;
use crate::commands::tensor::write_atomically;
use crate::printer;

/// Tokens per forward call (llama-perplexity's default `n_batch`, capped by the window).
const N_BATCH: usize = 512;

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    let text = load::read_text(&args.file)?;
    let threads = load::threads_or_default(args.threads);
    // Windows never need larger forward calls than themselves.
    let load_batch = if args.ctx == 0 { N_BATCH } else { N_BATCH.min(args.ctx) };
    let loaded = load::load(&args.model, threads, load_batch, args.f32_activations)?;
    let n_ctx = match args.ctx {
        0 => {
            let trained = loaded.model.config().context_length;
            if trained < 2 {
                bail!(
                    "--ctx-size 0 asks for the model's trained context, but the model does not state one; give a size"
                );
            }
            printer::note(&format!("--ctx-size 0: windows of the model's trained context, {trained} tokens"));
            trained
        }
        n => n,
    };
    let n_batch = N_BATCH.min(n_ctx);
    let trained = loaded.model.config().context_length;
    if trained > 0 && n_ctx > trained {
        printer::warning(&format!("--ctx-size {n_ctx} is more than the {trained} tokens the model was trained for"));
    }
    // llama-perplexity tokenizes with the model's special tokens added (BOS) and special
    // token text left as plain text.
    let tokens = loaded.tokenizer.encode(&text, true, false)?;
    let bos = if loaded.tokenizer.adds_bos() { loaded.tokenizer.bos_id() } else { None };
    let lora = load::lora_set(&loaded.model, &args.lora)?;
    let mut runner = load::runner(loaded.model, 1, n_ctx.max(3), args.cache_type.dtype())?;
    runner.set_lora(lora);
    let params = PerplexityParams { n_ctx, bos, n_batch, max_chunks: args.chunks };
    if let Some(base) = &args.kl_divergence {
        if is_saved_logprobs(Path::new(base)) {
            if args.base_f32_activations {
                bail!(
                    "--base-f32-activations applies to a base model; {} holds saved log-probabilities",
                    Path::new(base).display()
                );
            }
            return kl_saved_report(args, &mut runner, Path::new(base), &tokens, &params);
        }
        let base_loaded = load::load(base, threads, load_batch, args.base_f32_activations)
            .context("loading the --kl-divergence base")?;
        let base_tokens = base_loaded.tokenizer.encode(&text, true, false)?;
        if base_tokens != tokens {
            bail!(
                "the base model tokenizes {} differently from the model: KL divergence compares the same tokens, so both need the same tokenizer",
                args.file.display()
            );
        }
        let mut base_runner = load::runner(base_loaded.model, 1, n_ctx.max(3), args.cache_type.dtype())?;
        return kl_report(args, &mut runner, &mut base_runner, &tokens, &params);
    }
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{}: {} tokens; perplexity with --ctx-size {n_ctx} needs at least {} (two windows)",
            args.file.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let available = tokens.len() / n_ctx;
    let planned = available.min(args.chunks.unwrap_or(usize::MAX));
    printer::progress(&format!("{}: {} tokens, {planned} chunks of {n_ctx} tokens", args.file.display(), tokens.len()));
    let started = Instant::now();
    let cancel = AtomicBool::new(false);
    let result = match &args.save_logprobs {
        None => perplexity(&mut runner, &tokens, &params, &cancel, print_running_ppl)?,
        Some(path) => {
            let mut result = None;
            write_atomically(path, |file| {
                let out = BufWriter::with_capacity(1 << 20, file);
                let mut writer = BaseLogProbsWriter::new(out, n_ctx, runner.vocab_size(), &tokens[..planned * n_ctx])?;
                let on_row = |row: &[f32]| writer.push(row);
                result = Some(perplexity_with_rows(&mut runner, &tokens, &params, &cancel, print_running_ppl, on_row)?);
                writer.finish()?.into_inner().map_err(|e| e.into_error())?;
                Ok(())
            })?;
            printer::note(&format!("saved the log-probabilities of {planned} windows to {}", path.display()));
            result.context("the run ended without a result")?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    printer::progress(&format!(
        "{} tokens scored in {seconds:.2} s ({:.1} tokens/s evaluated)",
        result.tokens,
        (result.chunks * n_ctx) as f64 / seconds.max(1e-9)
    ));
    if args.json {
        printer::json(&result)?;
    } else {
        printer::lines([format!(
            "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks, {} tokens scored)",
            result.ppl, result.ppl_stderr, result.chunks, result.tokens
        )])?;
    }
    Ok(())
}

/// The running value on stderr after each window, as llama-perplexity prints it
/// (`[1]12.3456,[2]...`).
pub(super) fn print_running_ppl(p: PerplexityProgress) {
    let mut err = io::stderr().lock();
    let _ = write!(err, "[{}]{:.4},", p.chunk, p.ppl);
    if p.chunk == p.chunks {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

/// `--kl-divergence BASE`: both models over the same windows; llama-perplexity's report.
fn kl_report(
    args: &PerplexityArgs,
    model: &mut dyn LanguageModel,
    base: &mut dyn LanguageModel,
    tokens: &[u32],
    params: &PerplexityParams,
) -> anyhow::Result<()> {
    if tokens.len() < 2 * params.n_ctx {
        bail!(
            "{}: {} tokens; a KL divergence with --ctx-size {} needs at least {} (two windows)",
            args.file.display(),
            tokens.len(),
            params.n_ctx,
            2 * params.n_ctx
        );
    }
    let planned = (tokens.len() / params.n_ctx).min(args.chunks.unwrap_or(usize::MAX));
    printer::progress(&format!(
        "{}: {} tokens, {planned} chunks of {} tokens, model and base",
        args.file.display(),
        tokens.len(),
        params.n_ctx
    ));
    let cancel = AtomicBool::new(false);
    let result = kl_divergence(model, base, tokens, params, &cancel, print_running_ppl)?;
    if args.json {
        printer::json(&kl_json(&result))?;
    } else {
        printer::lines(result.report_lines())?;
    }
    Ok(())
}

/// Whether `path` is a file that starts as llama-perplexity's saved log-probabilities do
/// (otherwise `--kl-divergence` takes it for a model).
fn is_saved_logprobs(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    path.is_file() && File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"_logits_"
}

/// `--kl-divergence SAVED`: the model over the file's windows against the rows it holds.
fn kl_saved_report(
    args: &PerplexityArgs,
    model: &mut dyn LanguageModel,
    saved: &Path,
    tokens: &[u32],
    params: &PerplexityParams,
) -> anyhow::Result<()> {
    let file = File::open(saved).with_context(|| format!("cannot open {}", saved.display()))?;
    let len = file.metadata().with_context(|| format!("cannot read {}", saved.display()))?.len();
    let mut base = BaseLogProbs::new(BufReader::with_capacity(1 << 20, file), Some(len))
        .with_context(|| format!("reading {}", saved.display()))?;
    if tokens.get(..base.tokens.len()) != Some(&base.tokens[..]) {
        bail!(
            "{} does not tokenize to the {} tokens saved in {}: compare over the text the log-probabilities were saved from",
            args.file.display(),
            base.tokens.len(),
            saved.display()
        );
    }
    if base.n_ctx != params.n_ctx {
        bail!(
            "{} was saved with windows of {} tokens, and this run asks for {}: give --ctx-size {}",
            saved.display(),
            base.n_ctx,
            params.n_ctx,
            base.n_ctx
        );
    }
    let planned = base.n_chunk.min(args.chunks.unwrap_or(usize::MAX));
    printer::progress(&format!(
        "{}: {planned} chunks of {} tokens against the log-probabilities saved in {}",
        args.file.display(),
        base.n_ctx,
        saved.display()
    ));
    let cancel = AtomicBool::new(false);
    let result = kl_divergence_saved(model, &mut base, params, &cancel, print_running_ppl)
        .with_context(|| format!("comparing with {}", saved.display()))?;
    if args.json {
        printer::json(&kl_json(&result))?;
    } else {
        printer::lines(result.report_lines())?;
    }
    Ok(())
}

/// The perplexity object of the model under test with the CLI contract's KL summary added
/// (`kld_mean`, `kld_p99`, `top1_agreement`, `ppl_base`), and the whole llama-perplexity
/// report under `kl_divergence`.
fn kl_json(r: &owl_engine::KlDivergence) -> serde_json::Value {
    let p99 = r.kld_quantiles.percentiles.iter().find(|(p, _)| (*p - 99.0).abs() < 1e-9).map(|&(_, v)| v);
    serde_json::json!({
        "ppl": r.ppl.value,
        "ppl_stderr": r.ppl.stderr,
        "chunks": r.chunks,
        "tokens": r.tokens,
        "n_ctx": r.n_ctx,
        "ppl_base": r.ppl_base.value,
        "kld_mean": r.kld.value,
        "kld_p99": p99,
        "top1_agreement": r.same_top.value,
        "kl_divergence": r,
    })
}
