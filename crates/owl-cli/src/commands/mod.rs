//! One module per subcommand; `run` dispatches on the parsed command line.

mod bench;
mod bom;
mod catalog;
mod constraint;
mod convert;
mod detokenize;
mod finetune;
mod generate;
mod imatrix;
mod inspect;
mod interrupt;
mod load;
mod perplexity;
pub mod pull_progress;
mod run;
mod sampling;
mod serve;
mod show;
mod store;
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
        Command::Pull(args) => store::pull(&args),
        Command::List(args) => store::list(&args),
        Command::Rm(args) => store::rm(&args),
        Command::Import(args) => store::import(&args),
        Command::Show(args) => show::run(&args),
        Command::Catalog(args) => catalog::run(&args),
        Command::Bom(args) => bom::run(&args),
        Command::Convert(args) => convert::convert(&args),
        Command::Quantize(args) => convert::quantize(&args),
        Command::Merge(args) => convert::merge(&args),
        Command::Finetune(args) => finetune::run(&args),
        Command::Imatrix(args) => imatrix::run(&args),
    }
}
