//! `owl generate MODEL PROMPT [--json]`: raw completion, no chat template. The prompt is
//! encoded with the BOS the model adds by default; the continuation streams to stdout, or
//! `--json` prints one object (CLI.md):
//!
//! ```json
//! {"model":"...","prompt_ids":[...],"ids":[...],"text":"...",
//!  "tokens":[{"id":123,"text":"...","logprob":-0.12,"top":[{"id":123,"logprob":-0.12}]}],
//!  "timings":{"prompt_tokens":..,"prompt_ms":..,"gen_tokens":..,"gen_ms":..},
//!  "finish_reason":"stop|length|cancelled","seed":..}
//! ```

use std::io::{self, Write};
use std::ops::ControlFlow;

use anyhow::anyhow;
use serde::Serialize;

use owl_engine::{Event, Timings, TokenLogprob, TokenizerDecoder};

use crate::args::GenerateArgs;
use crate::commands::{interrupt, sampling};
use crate::printer;

/// One generated token in `--json` output (`top` is always present, empty without
/// `--top-logprobs`).
#[derive(Debug, Serialize)]
struct TokenOutput {
    id: u32,
    text: String,
    logprob: f32,
    top: Vec<TokenLogprob>,
}

#[derive(Debug, Serialize)]
struct GenerateOutput<'a> {
    model: &'a str,
    prompt_ids: &'a [u32],
    ids: &'a [u32],
    text: &'a str,
    tokens: Vec<TokenOutput>,
    timings: Timings,
    finish_reason: &'static str,
    seed: u64,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let prompt = args
        .prompt
        .to_str()
        .ok_or_else(|| anyhow!("PROMPT is not valid UTF-8"))?;
    let mut generator = sampling::open(&args.model, &args.generation)?;
    let params = sampling::generate_params(&args.generation, &generator.tokenizer, args.json)?;
    let prompt_ids = generator.tokenizer.encode(prompt, true, true)?;
    let mut decoder = TokenizerDecoder::new(&generator.tokenizer, false);

    interrupt::install();
    interrupt::begin_reply();
    let mut tokens = Vec::new();
    let mut out = io::stdout().lock();
    let mut write_error = None;
    let generation = generator.session.generate(
        &prompt_ids,
        &params,
        &mut decoder,
        &interrupt::CANCEL,
        |event| {
            match event {
                Event::Token(t) if args.json => tokens.push(TokenOutput {
                    id: t.id,
                    text: t.text.clone(),
                    logprob: t.logprob.unwrap_or(f32::NAN),
                    top: t.top.clone(),
                }),
                Event::Text(text) if !args.json => {
                    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                        write_error = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        },
    );
    let cancelled = interrupt::end_reply();
    let generation = generation?;
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
            seed: generation.seed,
        })?;
    } else {
        if !generation.text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    if args.generation.verbose {
        sampling::print_timings(&generation.timings);
    }
    if cancelled {
        std::process::exit(interrupt::EXIT_INTERRUPTED);
    }
    Ok(())
}
