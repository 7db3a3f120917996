//! Arguments of `owl finetune`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::values;
use super::MODEL_HELP;

/// `owl finetune MODEL DATA.jsonl --out DIR [--rank 8] [--alpha 16] ...`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// Training data, one JSON object a line: {"messages": [...]} (a chat, through the
    /// model's chat template; only assistant turns are learned), {"prompt", "completion"}
    /// (the completion is learned), or {"text"} (all of it is learned).
    #[arg(value_name = "DATA.jsonl")]
    pub data: PathBuf,

    /// Where the adapter goes: adapter_config.json and adapter_model.safetensors (PEFT's
    /// layout), and checkpoint/ while training.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,

    /// LoRA rank.
    #[arg(long, value_name = "R", default_value_t = 8, value_parser = values::positive)]
    pub rank: usize,

    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, value_name = "A", default_value_t = 16.0)]
    pub alpha: f32,

    /// LoRA dropout on each adapted projection's input.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub dropout: f32,

    /// Peak learning rate (AdamW; linear warmup, then cosine decay to 0).
    #[arg(long, value_name = "LR", default_value_t = 2e-4)]
    pub lr: f32,

    /// Passes over the training data.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = values::positive)]
    pub epochs: usize,

    /// Stop after N optimizer steps (before the epochs are done).
    #[arg(long, value_name = "N", value_parser = values::positive)]
    pub max_steps: Option<usize>,

    /// Sequences per batch (grouped by length).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = values::positive)]
    pub batch_size: usize,

    /// Batches whose gradients make one optimizer step.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = values::positive)]
    pub grad_accum: usize,

    /// Share of the examples held out for the validation loss (0: none).
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub val_split: f32,

    /// The projections to adapt (comma-separated).
    #[arg(long, value_name = "q,k,v,o,gate,up,down", value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    pub targets: Vec<String>,

    /// Share of the steps the learning rate warms up over.
    #[arg(long, value_name = "F", default_value_t = 0.03)]
    pub warmup_ratio: f32,

    /// AdamW's decoupled weight decay.
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    pub weight_decay: f32,

    /// Clip the gradient's global norm to this (0: no clipping).
    #[arg(long, value_name = "N", default_value_t = 1.0)]
    pub max_grad_norm: f32,

    /// Longest sequence in tokens; a longer example is a bad line.
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 1024, value_parser = values::positive)]
    pub ctx: usize,

    /// Write a checkpoint (and the validation loss) every N steps.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub checkpoint_every: usize,

    /// Continue from the checkpoint in DIR (same data and settings).
    #[arg(long)]
    pub resume: bool,

    /// Stop at the first bad line instead of skipping it.
    #[arg(long)]
    pub strict: bool,

    /// Seed of the initial pairs, the batch order and dropout.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,

    /// Multiply the frozen base in float32 against dequantized weights. By default a
    /// quantized base multiplies as inference does: activations and, backward, the output
    /// gradients quantized to 8 bits (the input gradient through an 8-bit transpose of each
    /// weight, built once: ~1.06 bytes a parameter). Float bases are float32 either way.
    #[arg(long)]
    pub f32_activations: bool,

    /// Also write the adapter as a llama.cpp GGUF adapter.
    #[arg(long, value_name = "FILE.gguf")]
    pub gguf: Option<PathBuf>,

    /// Compute threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N", value_parser = values::positive)]
    pub threads: Option<usize>,

    /// Print one JSON event a line instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}
