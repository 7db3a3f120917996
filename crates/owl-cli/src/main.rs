//! `owl`: the command-line program. Argument parsing (`args`), one module per command
//! (`commands`), output (`printer`), and MODEL resolution (`model_ref`, through owl-store).
//!
//! Exit status: 0 on success (a closed stdout pipe counts as success), 1 with a one-line
//! `error: ...` on stderr when a command fails, 2 for a bad command line, 101 if owl itself
//! has a bug (a panic, reported on one line without a backtrace).

mod args;
mod commands;
mod model_ref;
mod printer;
mod template_sandbox;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        printer::progress(&format!("error: internal error (a bug in owl): {message}{at}"));
    }));

    // The chat template renderer, started by owl itself in a limited child process.
    if std::env::args_os().nth(1).is_some_and(|a| a == template_sandbox::SUBCOMMAND) {
        return template_sandbox::serve();
    }

    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return command_line_error(err),
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if printer::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            printer::progress(&format!("error: {}", printer::error_line(&err)));
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print as clap formats them; a bad command line becomes one line:
/// clap's message plus the usage of the command at fault.
fn command_line_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // A closed pipe while printing help is not worth reporting.
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        printer::progress("error: a command is required (usage: owl <COMMAND>; see 'owl --help')");
        return ExitCode::from(2);
    }
    let rendered = err.render().to_string();
    // The message is the first paragraph (clap continues it on indented lines); tips follow.
    let message = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message).to_string();
    // clap's "did you mean" hints ("tip: a similar argument exists: '--top-k'").
    let tips: Vec<&str> = rendered.lines().map(str::trim).filter(|l| l.starts_with("tip: ")).collect();
    let usage = rendered.lines().find_map(|l| l.trim().strip_prefix("Usage: ")).map(str::to_string);
    let mut line = format!("error: {message}");
    for tip in tips {
        line.push_str("; ");
        line.push_str(tip);
    }
    if let Some(usage) = usage {
        line.push_str(&format!(" (usage: {usage})"));
    }
    printer::progress(&line);
    ExitCode::from(2)
}
