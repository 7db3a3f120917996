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
//! The template is `--template` (a Jinja file, or a built-in one by name), else the model's
//! own. A model without a template of its own looks like a base (pre-trained) model, which
//! continues text rather than answering a chat: owl says so, suggests `owl generate`, and
//! replies with a plain continuation of the conversation's text. The rendered text is
//! encoded with special tokens recognised, and with the model's BOS only when the template
//! did not already write it.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;

use anyhow::{anyhow, Context};

use owl_engine::{Event, GenerateParams, Generation, StopReason, TokenizerDecoder};
use owl_tokenizer::{ChatMessage, ChatTemplate, TemplateOrigin, Tokenizer};

use crate::args::RunArgs;
use crate::commands::interrupt;
use crate::commands::sampling::{self, Generator};
use crate::commands::token_report::{self, TokenReport};
use crate::printer;

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let prompt = match &args.prompt {
        Some(p) => Some(p.to_str().ok_or_else(|| anyhow!("PROMPT is not valid UTF-8"))?.to_string()),
        None if io::stdin().is_terminal() => None,
        None => {
            let mut text = String::new();
            io::stdin().read_to_string(&mut text).context("reading the prompt from stdin")?;
            if text.trim().is_empty() {
                anyhow::bail!("no PROMPT given and stdin is empty");
            }
            Some(text)
        }
    };
    let mut generator = sampling::open(&args.model, &args.generation)?;
    let params = sampling::generate_params(&args.generation, &generator, false)?;
    let prompting = prompting(args, &generator)?;
    interrupt::install();
    let mut history = Vec::new();
    if let Some(system) = &args.system {
        history.push(ChatMessage::system(system.as_str()));
    }
    match prompt {
        Some(prompt) => {
            history.push(ChatMessage::user(prompt));
            let (generation, cancelled) = reply(&mut generator, &prompting, &history, &params, false)
                .map_err(|e| sampling::explain_context_error(e, false))?;
            if args.generation.verbose {
                sampling::print_timings(&generation.timings);
            }
            if cancelled {
                std::process::exit(interrupt::EXIT_INTERRUPTED);
            }
            Ok(())
        }
        None => interactive(&mut generator, &prompting, history, &params, args.generation.verbose),
    }
}

/// How a conversation becomes prompt ids.
enum Prompting {
    /// Through a chat template: the one `--template` gave, else (`None`) the model's own.
    Chat(Option<Box<ChatTemplate>>),
    /// A model with no template of its own: the conversation's text, continued.
    Completion,
}

/// `--template`, else the model's template, else plain completion with a notice.
fn prompting(args: &RunArgs, generator: &Generator) -> anyhow::Result<Prompting> {
    let tokenizer = &generator.tokenizer;
    if let Some(choice) = &args.template {
        let path = std::path::Path::new(choice);
        let source = if path.exists() && !path.is_dir() {
            std::fs::read_to_string(path).with_context(|| format!("--template {}", path.display()))?
        } else {
            let name = choice.to_string_lossy();
            match owl_tokenizer::builtin_template(&name) {
                Some(source) => source.to_string(),
                None => anyhow::bail!(
                    "--template {name}: no such file, and not a built-in template (built-in: {})",
                    owl_tokenizer::BUILTIN_TEMPLATES.map(|(n, _)| n).join(", ")
                ),
            }
        };
        let template = tokenizer
            .template_from_source(&source)
            .with_context(|| format!("--template {}", choice.to_string_lossy()))?;
        return Ok(Prompting::Chat(Some(Box::new(template))));
    }
    match tokenizer.chat_template() {
        Some(t) if t.origin() == TemplateOrigin::Model => Ok(Prompting::Chat(None)),
        Some(_) => {
            printer::note(&format!(
                "{} has no chat template of its own: it looks like a base (pre-trained) model, which \
                 continues text rather than answering; 'owl generate' is made for that. Replying with a \
                 plain continuation of your text (--template FILE|NAME chats through a template anyway)",
                generator.name
            ));
            Ok(Prompting::Completion)
        }
        None => match tokenizer.chat_template_error() {
            Some(e) => {
                anyhow::bail!("the model's chat template cannot be used: {e}; --template FILE|NAME gives another")
            }
            None => Ok(Prompting::Completion),
        },
    }
}

/// The ids of a conversation for the assistant's next turn.
fn prompt_ids(tokenizer: &Tokenizer, prompting: &Prompting, messages: &[ChatMessage]) -> anyhow::Result<Vec<u32>> {
    let template = match prompting {
        Prompting::Chat(Some(t)) => t,
        Prompting::Chat(None) => tokenizer.chat_template().ok_or_else(|| anyhow!("the model has no chat template"))?,
        Prompting::Completion => return Ok(tokenizer.encode(&continuation_text(messages), true, true)?),
    };
    let text = crate::template_sandbox::render(template, messages, None, true)?;
    Ok(tokenizer.encode_rendered(template, &text)?)
}

/// A conversation as one text for a base model: each message's text in order, the model's
/// own continuations joined directly to what they continue, every other message on a new
/// line.
fn continuation_text(messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    for m in messages {
        if !text.is_empty() && m.role != "assistant" && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&m.content);
    }
    text
}

/// Generates the assistant's reply to `messages`, streaming its text to stdout and ending
/// with a newline (then the `--top-logprobs` table, if asked for). A reply cut off by a
/// full context gets a note on stderr saying what to do. Returns the generation and
/// whether Ctrl-C stopped it.
fn reply(
    generator: &mut Generator,
    prompting: &Prompting,
    messages: &[ChatMessage],
    params: &GenerateParams,
    interactive: bool,
) -> anyhow::Result<(Generation, bool)> {
    let ids = prompt_ids(&generator.tokenizer, prompting, messages)?;
    let mut decoder = TokenizerDecoder::new(&generator.tokenizer, true);
    let mut out = io::stdout().lock();
    let mut write_error = None;
    let mut tokens = Vec::new();
    interrupt::begin_reply();
    let generation = generator.session.generate(&ids, params, &mut decoder, &interrupt::CANCEL, |event| {
        match event {
            Event::Text(text) => {
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            Event::Token(t) if params.top_logprobs > 0 => tokens.push(TokenReport::new(t, &generator.tokenizer)),
            Event::Token(_) => {}
        }
        ControlFlow::Continue(())
    });
    let cancelled = interrupt::end_reply();
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let generation = generation?;
    if !generation.text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    if params.top_logprobs > 0 {
        token_report::write_table(&mut out, &tokens, params.top_logprobs)?;
    }
    out.flush()?;
    if generation.stop_reason == StopReason::ContextFull {
        let n_ctx = generator.session.context_size();
        let what = if interactive {
            "/clear to start over, or restart with a larger -c/--ctx-size or with --truncate (drops the oldest turns)"
        } else {
            "run again with a larger -c/--ctx-size"
        };
        printer::note(&format!("the reply was cut off: the context of {n_ctx} tokens is full; {what}"));
    }
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
    prompting: &Prompting,
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
        match reply(generator, prompting, &history, params, true).map_err(|e| sampling::explain_context_error(e, true))
        {
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
