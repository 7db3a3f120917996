//! `owl run MODEL [PROMPT]`: chat through the model's chat template.
//!
//! - With PROMPT (or with stdin not a terminal, whose whole text is then the message): one
//!   reply, streamed to stdout as it is generated, then a newline.
//! - Without PROMPT on a terminal: an interactive session. `>>> ` asks for a message;
//!   `"""` starts and ends a multi-line one; `/clear` forgets the conversation, `/bye` or
//!   Ctrl-D leaves; Ctrl-C stops a reply (and leaves at the prompt). Every turn renders the
//!   whole conversation through the template; the session reuses the KV cache of the
//!   common prefix, so only the new turn is run through the model.
//!
//! The template is the model's own, else owl's built-in one for the family, else ChatML
//! (owl_tokenizer::chat). The rendered text is encoded with special tokens recognised, and
//! with the model's BOS only when the template did not already write it.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{anyhow, Context};

use owl_engine::{Event, GenerateParams, Generation, TokenizerDecoder};
use owl_tokenizer::{ChatMessage, Tokenizer};

use crate::args::RunArgs;
use crate::commands::interrupt;
use crate::commands::sampling::{self, Generator};
use crate::printer;

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let prompt = match &args.prompt {
        Some(p) => Some(
            p.to_str()
                .ok_or_else(|| anyhow!("PROMPT is not valid UTF-8"))?
                .to_string(),
        ),
        None if io::stdin().is_terminal() => None,
        None => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            if text.trim().is_empty() {
                anyhow::bail!("no PROMPT given and stdin is empty");
            }
            Some(text)
        }
    };
    let mut generator = sampling::open(&args.model, &args.generation)?;
    let params = sampling::generate_params(&args.generation, &generator.tokenizer, false)?;
    interrupt::install();
    let mut history = Vec::new();
    if let Some(system) = &args.system {
        history.push(ChatMessage::system(system.as_str()));
    }
    match prompt {
        Some(prompt) => {
            history.push(ChatMessage::user(prompt));
            let (generation, cancelled) = reply(&mut generator, &history, &params)?;
            if args.generation.verbose {
                sampling::print_timings(&generation.timings);
            }
            if cancelled {
                std::process::exit(interrupt::EXIT_INTERRUPTED);
            }
            Ok(())
        }
        None => interactive(&mut generator, history, &params, args.generation.verbose),
    }
}

/// The ids of a conversation rendered for the assistant's next turn.
fn chat_prompt(tokenizer: &Tokenizer, messages: &[ChatMessage]) -> anyhow::Result<Vec<u32>> {
    let template = tokenizer.chat_template().ok_or_else(|| match tokenizer.chat_template_error() {
        Some(e) => anyhow!("the model's chat template cannot be used: {e}"),
        None => anyhow!("the model has no chat template"),
    })?;
    let text = template.render(messages, None, true)?;
    let bos = template.bos_token();
    let template_wrote_bos = !bos.is_empty() && text.starts_with(bos);
    Ok(tokenizer.encode(&text, !template_wrote_bos, true)?)
}

/// Generates the assistant's reply to `messages`, streaming its text to stdout and ending
/// with a newline. Returns the generation and whether Ctrl-C stopped it.
fn reply(
    generator: &mut Generator,
    messages: &[ChatMessage],
    params: &GenerateParams,
) -> anyhow::Result<(Generation, bool)> {
    let ids = chat_prompt(&generator.tokenizer, messages)?;
    let mut decoder = TokenizerDecoder::new(&generator.tokenizer, true);
    let mut out = io::stdout().lock();
    let mut write_error = None;
    interrupt::begin_reply();
    let generation = generator.session.generate(
        &ids,
        params,
        &mut decoder,
        &interrupt::CANCEL,
        |event| {
            if let Event::Text(text) = event {
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    );
    let cancelled = interrupt::end_reply();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let generation = generation?;
    if !generation.text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok((generation, cancelled))
}

const HELP: &str = "\
Available commands:
  /clear   forget the conversation so far
  /bye     leave (also Ctrl-D)
  /?       this help
Use \"\"\" to begin and end a multi-line message. Ctrl-C stops a reply.";

/// The interactive session on a terminal.
fn interactive(
    generator: &mut Generator,
    mut history: Vec<ChatMessage>,
    params: &GenerateParams,
    verbose: bool,
) -> anyhow::Result<()> {
    let kept = history.len(); // the system message, if any, survives /clear
    let mut input = io::stdin().lock();
    loop {
        let Some(message) = read_message(&mut input, &mut io::stdout())? else {
            // Ctrl-D: end the prompt line.
            printer::lines([String::new()])?;
            return Ok(());
        };
        let command = message.trim();
        match command {
            "" => continue,
            "/bye" | "/exit" => return Ok(()),
            "/clear" => {
                history.truncate(kept);
                generator.session.clear_cache();
                printer::lines(["Cleared the conversation.".to_string()])?;
                continue;
            }
            "/?" | "/help" => {
                printer::lines([HELP.to_string()])?;
                continue;
            }
            _ if command.starts_with('/') && !command.contains(char::is_whitespace) => {
                printer::lines([format!("Unknown command '{command}'. Type /? for help.")])?;
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(message));
        match reply(generator, &history, params) {
            Ok((generation, _cancelled)) => {
                // A reply stopped by Ctrl-C stays in the conversation as far as it got.
                history.push(ChatMessage::assistant(generation.text));
                if verbose {
                    sampling::print_timings(&generation.timings);
                }
            }
            Err(err) if printer::is_broken_pipe(&err) => return Err(err),
            Err(err) => {
                // The conversation goes on without the failed turn.
                history.pop();
                printer::progress(&format!("error: {}", printer::error_line(&err)));
            }
        }
    }
}

/// Reads one message after a `>>> ` prompt: a line, or the lines between `"""` and `"""`.
/// `None` at the end of input.
fn read_message(input: &mut impl BufRead, out: &mut impl Write) -> anyhow::Result<Option<String>> {
    prompt(out, ">>> ")?;
    let Some(line) = read_line(input)? else {
        return Ok(None);
    };
    let Some(rest) = line.trim_start().strip_prefix("\"\"\"") else {
        return Ok(Some(line));
    };
    if let Some(done) = rest.trim_end().strip_suffix("\"\"\"") {
        return Ok(Some(done.to_string()));
    }
    let mut lines = vec![rest.to_string()];
    loop {
        prompt(out, "... ")?;
        let Some(line) = read_line(input)? else {
            return Ok(None);
        };
        if let Some(last) = line.trim_end().strip_suffix("\"\"\"") {
            // The closing quotes on a line of their own end the block without adding a line.
            if !last.trim().is_empty() {
                lines.push(last.to_string());
            }
            break;
        }
        lines.push(line);
    }
    // The text right after the opening quotes is usually empty: drop that first line then.
    if lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines.remove(0);
    }
    Ok(Some(lines.join("\n")))
}

fn prompt(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// One line without its line ending; `None` at the end of input.
fn read_line(input: &mut impl BufRead) -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    if input.read_line(&mut line).context("reading stdin")? == 0 {
        return Ok(None);
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(Some(line))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::read_message;

    fn messages(input: &str) -> Vec<String> {
        let mut input = input.as_bytes();
        let mut prompts = Vec::new();
        std::iter::from_fn(|| read_message(&mut input, &mut prompts).unwrap()).collect()
    }

    #[test]
    fn lines_and_triple_quoted_blocks() {
        assert_eq!(messages("hi\nthere\n"), ["hi", "there"]);
        assert_eq!(messages("\"\"\"\na\nb\n\"\"\"\nnext\n"), ["a\nb", "next"]);
        assert_eq!(messages("\"\"\"one line\"\"\"\n"), ["one line"]);
        assert_eq!(messages("\"\"\"first\nsecond\"\"\"\n"), ["first\nsecond"]);
        // An unterminated block at the end of input is no message.
        assert!(messages("\"\"\"\nunfinished\n").is_empty());
    }
}
