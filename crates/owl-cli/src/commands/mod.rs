//! One module per subcommand; `run` dispatches on the parsed command line.

mod bench;
mod constraint;
mod detokenize;
mod generate;
mod inspect;
mod interrupt;
mod load;
mod perplexity;
mod run;
mod sampling;
mod serve;
mod tensor;
mod token_report;
mod tokenize;

use crate::args::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Tensor(args) => tensor::run(&args),
        Command::Tokenize(args) => tokenize::run(&args),
        Command::Detokenize(args) => detokenize::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Perplexity(args) => perplexity::run(&args),
        Command::Serve(args) => serve::run(&args),
    }
}
