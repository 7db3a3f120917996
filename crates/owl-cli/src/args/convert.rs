//! The conversion commands: convert, quantize.

use std::path::PathBuf;

/// `owl convert HF_DIR OUT.gguf [--type TYPE] [--no-tokenizer] [--json]`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// A Hugging Face model directory: config.json, *.safetensors (one file or shards with
    /// model.safetensors.index.json), and tokenizer.json or tokenizer.model; or the store
    /// name of one.
    #[arg(value_name = "HF_DIR")]
    pub dir: PathBuf,

    /// The GGUF file to write (atomically: it appears complete or not at all).
    #[arg(value_name = "OUT.gguf")]
    pub out: PathBuf,

    /// Element type: f32, f16, bf16 and q8_0 as llama.cpp's converter writes them; q4_0,
    /// q4_1, q5_0, q5_1, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, iq4_nl with llama-quantize's
    /// per-tensor mix.
    #[arg(long = "type", value_name = "TYPE", default_value = "f16")]
    pub file_type: String,

    /// Write the weights without a vocabulary (for a directory that has no tokenizer).
    #[arg(long)]
    pub no_tokenizer: bool,

    /// The `tokenizer.ggml.pre` to write for a BPE tokenizer whose pre-tokenizer llama.cpp's
    /// converter does not recognise (it compares a hash of how the tokenizer splits a probe
    /// text against a table); without it such a tokenizer is an error naming the hash.
    #[arg(long, value_name = "NAME", conflicts_with = "no_tokenizer")]
    pub tokenizer_pre: Option<String>,

    /// Print one JSON progress event a line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// `owl quantize IN.gguf OUT.gguf TYPE [--allow-requantize] [--pure] [--json]`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The GGUF file to quantize (best F32, F16 or BF16), or its store name.
    #[arg(value_name = "IN.gguf")]
    pub input: PathBuf,

    /// The GGUF file to write (atomically).
    #[arg(value_name = "OUT.gguf")]
    pub out: PathBuf,

    /// q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, iq4_nl (per-tensor
    /// mixes as llama-quantize makes them), or f32, f16, bf16.
    #[arg(value_name = "TYPE")]
    pub file_type: String,

    /// Quantize tensors that are already quantized (both roundings' errors add up).
    #[arg(long)]
    pub allow_requantize: bool,

    /// An importance matrix (llama.cpp's imatrix format, GGUF or legacy .dat, as `owl
    /// imatrix` or llama-imatrix write it): rounding favours the input columns that carry
    /// the most activation energy, and Q4_0/Q5_0 files get llama-quantize's imatrix mix.
    #[arg(long, value_name = "FILE")]
    pub imatrix: Option<PathBuf>,

    /// Every quantizable tensor in TYPE's own element type: no mix, no larger types for the
    /// sensitive tensors.
    #[arg(long)]
    pub pure: bool,

    /// Print one JSON progress event a line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// `owl merge MODEL --lora DIR[:SCALE]... --out OUT.gguf [--type TYPE] [--json]`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The base model: a GGUF file, a Hugging Face directory, or a store name.
    #[arg(value_name = "MODEL")]
    pub model: std::ffi::OsString,

    /// The adapter to bake in: a PEFT directory or a llama.cpp GGUF adapter, its delta
    /// scaled by SCALE [default: 1]; repeatable (the deltas add up).
    #[arg(long = "lora", value_name = "DIR[:SCALE]", required = true)]
    pub lora: Vec<owl_train::AdapterSpec>,

    /// The GGUF file to write (atomically).
    #[arg(long = "out", short = 'o', value_name = "OUT.gguf")]
    pub out: PathBuf,

    /// Requantize to this llama-quantize mix (q8_0, q4_k_m, ..., or f32, f16, bf16)
    /// [default: every tensor keeps the base's type; a Hugging Face directory its float
    /// type].
    #[arg(long = "type", value_name = "TYPE")]
    pub file_type: Option<String>,

    /// Merge even though the adapter's base_model_name_or_path names another model
    /// (architecture and tensor shapes are still checked).
    #[arg(long)]
    pub lora_any_base: bool,

    /// Print one JSON progress event a line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// `owl imatrix MODEL TEXT [-o imatrix.gguf] [-c 512] [--chunks N] [--json]`.
#[derive(Debug, clap::Args)]
pub struct ImatrixArgs {
    /// The model whose activations are measured (best its F32/F16 source or a Q8_0), a GGUF
    /// file or a store name.
    #[arg(value_name = "MODEL")]
    pub model: std::ffi::OsString,

    /// A UTF-8 calibration text.
    #[arg(value_name = "TEXT")]
    pub text: PathBuf,

    /// The importance matrix to write, in llama.cpp's GGUF format (atomically).
    #[arg(short = 'o', long = "output", value_name = "FILE", default_value = "imatrix.gguf")]
    pub out: PathBuf,

    /// Window size in tokens; the text is run in windows of this many tokens, each from an
    /// empty cache with BOS first where the model adds one (llama-imatrix's scheme).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 512, value_parser = crate::args::values::window)]
    pub ctx: usize,

    /// Use at most N windows [default: all that fit in the text].
    #[arg(long, value_name = "N", value_parser = crate::args::values::positive)]
    pub chunks: Option<usize>,

    /// Compute threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N", value_parser = crate::args::values::positive)]
    pub threads: Option<usize>,

    /// Print `{"output":..,"entries":..,"chunks":..,"tokens":..,"ppl":..}` instead of a summary.
    #[arg(long)]
    pub json: bool,
}
