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

    /// Every quantizable tensor in TYPE's own element type: no mix, no larger types for the
    /// sensitive tensors.
    #[arg(long)]
    pub pure: bool,

    /// Print one JSON progress event a line on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}
