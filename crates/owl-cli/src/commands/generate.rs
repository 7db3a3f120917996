//! `owl generate MODEL PROMPT [--json]`: raw completion, no chat template. The prompt is
//! encoded with the BOS the model adds by default; the continuation streams to stdout, or
//! `--json` prints one object (CLI.md):
//!
//! ```json
//! {"model":"...","prompt_ids":[...],"ids":[...],"text":"...",
//!  "tokens":[{"id":123,"text":"...","bytes":[..],"logprob":-0.12,
//!              "top":[{"id":123,"text":"...","bytes":[..],"logprob":-0.12}]}],
//!  "timings":{"prompt_tokens":..,"prompt_ms":..,"gen_tokens":..,"gen_ms":..},
//!  "finish_reason":"stop|length|cancelled","seed":"..."}
//! ```
//!
//! `seed` is a string: a u64 does not fit a JSON number exactly (2^53). Without `--json`,
//! `--top-logprobs K` prints a table of the tokens after the text.

use std::io::{self, IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use owl_engine::{Event, LanguageModel, StopReason, Timings, TokenizerDecoder};

use crate::args::GenerateArgs;
use crate::commands::token_report::{self, TokenReport};
use crate::commands::{constraint, interrupt, sampling};
use crate::printer;

#[derive(Debug, Serialize)]
struct GenerateOutput<'a> {
    model: &'a str,
    prompt_ids: &'a [u32],
    ids: &'a [u32],
    text: &'a str,
    tokens: Vec<TokenReport>,
    timings: Timings,
    finish_reason: &'static str,
    seed: String,
}

/// PROMPT as given; `-`, or no PROMPT with stdin not a terminal: all of stdin.
fn read_prompt(arg: Option<&std::ffi::OsStr>) -> anyhow::Result<String> {
    match arg {
        Some(p) if p != "-" => Ok(p.to_str().ok_or_else(|| anyhow!("PROMPT is not valid UTF-8"))?.to_string()),
        None if io::stdin().is_terminal() => {
            bail!("no PROMPT given: pass it as an argument, or '-' (or a pipe) to read it from stdin")
        }
        _ => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text).context("reading the prompt from stdin")?;
            if text.is_empty() {
                bail!("the prompt read from stdin is empty");
            }
            Ok(text)
        }
    }
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let prompt = read_prompt(args.prompt.as_deref())?;
    let mut generator = sampling::open(&args.model, &args.generation)?;
    let mut params = sampling::generate_params(&args.generation, &generator, args.json)?;
    if let Some(spec) = constraint::spec(&args.constraint)? {
        let vocab = generator.session.model().vocab_size();
        params.grammar = Some(constraint::compile(&spec, &generator.tokenizer, vocab)?);
    }
    let prompt_ids = generator.tokenizer.encode(&prompt, true, true)?;
    let report_tokens = args.json || args.generation.top_logprobs > 0;
    let mut decoder = TokenizerDecoder::new(&generator.tokenizer, false);

    interrupt::install();
    interrupt::begin_reply();
    let mut tokens = Vec::new();
    let mut out = io::stdout().lock();
    let mut write_error = None;
    let generation = generator.session.generate(&prompt_ids, &params, &mut decoder, &interrupt::CANCEL, |event| {
        match event {
            Event::Token(t) if report_tokens => tokens.push(TokenReport::new(t, &generator.tokenizer)),
            Event::Text(text) if !args.json => {
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    let cancelled = interrupt::end_reply();
    let generation = generation.map_err(|e| sampling::explain_context_error(e.into(), false))?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if args.json {
        drop(out);
        printer::json(&GenerateOutput {
            model: &generator.name,
            prompt_ids: &generation.prompt_ids,
            ids: &generation.ids,
            text: &generation.text,
            tokens,
            timings: generation.timings,
            finish_reason: generation.stop_reason.finish_reason(),
            seed: generation.seed.to_string(),
        })?;
    } else {
        if !generation.text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        if args.generation.top_logprobs > 0 {
            token_report::write_table(&mut out, &tokens, args.generation.top_logprobs)?;
        }
        out.flush()?;
    }
    if generation.stop_reason == StopReason::ContextFull {
        printer::note(&format!(
            "the output was cut off: the context of {} tokens is full; a larger -c/--ctx-size gives it more room",
            generator.session.context_size()
        ));
    }
    if args.generation.verbose {
        sampling::print_timings(&generation.timings);
    }
    if cancelled {
        std::process::exit(interrupt::EXIT_INTERRUPTED);
    }
    Ok(())
}
