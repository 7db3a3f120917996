//! Arguments of the commands that run a model: `run`, `generate`, `bench`, `perplexity`.
//! The sampling and runtime flags are one struct ([`GenerationArgs`]) flattened into both
//! `run` and `generate`, so the two accept exactly the same set.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::values::{self, Seed, TokenLimit};
use super::MODEL_HELP;

/// Sampling and runtime flags shared by `owl run` and `owl generate`. Defaults are
/// llama.cpp's (owl_engine::SamplingParams::default()).
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// Most tokens to generate; -1: until an end-of-generation token or a full context
    /// [default: -1].
    #[arg(short = 'n', long = "max-tokens", value_name = "N", allow_negative_numbers = true, value_parser = values::token_limit)]
    pub max_tokens: Option<TokenLimit>,

    /// Sampling temperature; 0 picks the most likely token every step (greedy).
    #[arg(long, value_name = "T", default_value_t = 0.8, allow_negative_numbers = true, value_parser = values::temperature)]
    pub temperature: f32,

    /// Keep only the K most likely tokens (0 = all).
    #[arg(long, value_name = "K", default_value_t = 40)]
    pub top_k: usize,

    /// Keep the smallest set of tokens whose probabilities add up to P (1 = all; 0 keeps
    /// only the most likely token).
    #[arg(long, value_name = "P", default_value_t = 0.95, allow_negative_numbers = true, value_parser = values::probability)]
    pub top_p: f32,

    /// Drop tokens less likely than P times the most likely one (0 = off).
    #[arg(long, value_name = "P", default_value_t = 0.05, allow_negative_numbers = true, value_parser = values::probability)]
    pub min_p: f32,

    /// Divide the logits of tokens seen in the last 64 by this (1 = off).
    #[arg(long, value_name = "X", default_value_t = 1.0, allow_negative_numbers = true, value_parser = values::repeat_penalty)]
    pub repeat_penalty: f32,

    /// Subtract this from the logits of tokens seen in the last 64 (0 = off).
    #[arg(long, value_name = "X", default_value_t = 0.0, allow_negative_numbers = true, value_parser = values::penalty)]
    pub presence_penalty: f32,

    /// Subtract this times the count of each token in the last 64 (0 = off).
    #[arg(long, value_name = "X", default_value_t = 0.0, allow_negative_numbers = true, value_parser = values::penalty)]
    pub frequency_penalty: f32,

    /// Seed of the sampler, for reproducible output; -1: a random seed [default: -1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = values::seed)]
    pub seed: Option<Seed>,

    /// Stop when the output produces TEXT (never part of the output; repeatable); `\n`,
    /// `\t`, `\r` and `\\` stand for a newline, a tab, a carriage return and a backslash.
    #[arg(long = "stop", value_name = "TEXT", value_parser = values::stop_text)]
    pub stop: Vec<String>,

    /// Report the K most likely tokens of every step: in `--json` as each token's `top`,
    /// else as a table after the text.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub top_logprobs: usize,

    /// Compute threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N", value_parser = values::positive)]
    pub threads: Option<usize>,

    /// Context size in tokens (prompt plus reply); 0: the model's trained context
    /// [default: the model's context length, at most 4096].
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx", value_name = "N")]
    pub ctx_size: Option<usize>,

    /// Drop the oldest prompt tokens (keeping BOS) when the prompt does not fit, instead of
    /// failing.
    #[arg(long)]
    pub truncate: bool,

    /// Keep activations in float32 against dequantized weights instead of quantizing them
    /// to 8 bits as llama.cpp does: results match a float32 reference implementation
    /// (transformers) to ~0.01 nats; slower, above all in generation.
    #[arg(long)]
    pub f32_activations: bool,

    /// The KV cache's element type: f16 (default), f32, or q8_0 (34 bytes per 32 values,
    /// 53 % of f16's memory; llama.cpp's -ctk/-ctv q8_0; head sizes must be multiples of 32).
    #[arg(long = "cache-type", value_enum, value_name = "TYPE", default_value = "f16")]
    pub cache_type: values::CacheType,

    /// Print prompt and generation speed on stderr at the end.
    #[arg(long)]
    pub verbose: bool,

    #[command(flatten)]
    pub lora: LoraArgs,
}

/// LoRA adapters applied to the model (unmerged: the base stays as loaded).
#[derive(Debug, Clone, Default, Args)]
pub struct LoraArgs {
    /// Apply a LoRA adapter: a PEFT directory (adapter_config.json +
    /// adapter_model.safetensors) or a llama.cpp GGUF adapter, its delta scaled by SCALE
    /// [default: 1]. Repeat to apply several at once.
    #[arg(long = "lora", value_name = "DIR[:SCALE]")]
    pub lora: Vec<owl_train::AdapterSpec>,

    /// Apply the adapters even though their base_model_name_or_path names another model
    /// (a converted or re-quantized copy of their base); architecture and tensor shapes
    /// are still checked.
    #[arg(long, requires = "lora")]
    pub lora_any_base: bool,
}

/// `owl run MODEL [PROMPT]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// The user message. Without it: an interactive chat when stdin is a terminal, else
    /// all of stdin is the message.
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<OsString>,

    /// A system message put before the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// The chat template to use instead of the model's: a Jinja file, or a built-in one by
    /// name (chatml, gemma). Also makes a model without a template of its own chat.
    #[arg(long, value_name = "FILE|NAME")]
    pub template: Option<std::ffi::OsString>,

    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// `owl generate MODEL PROMPT [--json]`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// The text to continue (special-token text such as `<|im_start|>` is recognised);
    /// `-`, or none with stdin not a terminal: read it from stdin.
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<OsString>,

    /// Print one JSON object: model, prompt_ids, ids, text, tokens (id, text, logprob,
    /// top), timings.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub constraint: ConstraintArgs,

    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// A grammar the output must follow (at most one).
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// Output JSON valid against the JSON Schema in FILE (`-`: stdin). A keyword that
    /// cannot be enforced (`uniqueItems`, `not`, an unknown `format`) is an error.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,

    /// Output matching the regular expression R as a whole (Rust regex syntax).
    #[arg(long, value_name = "R")]
    pub regex: Option<String>,

    /// Output in the language of the grammar in FILE: Lark (llguidance's dialect, top
    /// rule `start`), or llama.cpp GBNF (`root ::= ...`), translated to Lark.
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
}

/// `owl bench MODEL [-p 64,512] [-n 128] [-r 5] [-t N,...] [--json]`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// Prompt-processing tests: prompt lengths, comma-separated (0 = none).
    #[arg(short = 'p', long = "n-prompt", value_name = "N,...", value_delimiter = ',', default_value = "64,512")]
    pub n_prompt: Vec<usize>,

    /// Generation tests: token counts, comma-separated (0 = none).
    #[arg(short = 'n', long = "n-gen", value_name = "N,...", value_delimiter = ',', default_value = "128")]
    pub n_gen: Vec<usize>,

    /// Timed repetitions of each test (after one untimed warm-up).
    #[arg(short = 'r', long = "repetitions", value_name = "N", default_value_t = 5, value_parser = values::positive)]
    pub repetitions: usize,

    /// Thread counts, comma-separated; every test runs with each [default: the number of
    /// physical cores].
    #[arg(short = 't', long = "threads", value_name = "N,...", value_delimiter = ',', value_parser = values::positive)]
    pub threads: Vec<usize>,

    /// Prompt tokens per forward call.
    #[arg(short = 'b', long = "batch-size", value_name = "N", default_value_t = 512, value_parser = values::positive)]
    pub n_batch: usize,

    /// Depths, comma-separated: tokens already in the context when each test starts
    /// (processed first, untimed), like llama-bench's -d; a test at depth D is named
    /// `ppN @ dD` / `tgN @ dD`.
    #[arg(short = 'd', long = "n-depth", value_name = "N,...", value_delimiter = ',', default_value = "0")]
    pub n_depth: Vec<usize>,

    /// Keep activations in float32 against dequantized weights instead of quantizing them
    /// to 8 bits as llama.cpp does: results match a float32 reference implementation
    /// (transformers) to ~0.01 nats; slower, above all in generation.
    #[arg(long)]
    pub f32_activations: bool,

    /// The KV cache's element type: f16 (default), f32, or q8_0 (34 bytes per 32 values,
    /// 53 % of f16's memory; llama.cpp's -ctk/-ctv q8_0; head sizes must be multiples of 32).
    #[arg(long = "cache-type", value_enum, value_name = "TYPE", default_value = "f16")]
    pub cache_type: values::CacheType,

    /// Print a JSON array of results instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `owl perplexity MODEL FILE [-c 512] [--chunks N] [--json]`.
#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[arg(value_name = "MODEL", help = MODEL_HELP)]
    pub model: OsString,

    /// A UTF-8 text file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Window size in tokens (the context of each window); the second half of each window
    /// is scored.
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx", value_name = "N", default_value_t = 512, value_parser = values::window)]
    pub ctx: usize,

    /// Score at most N windows [default: all that fit in the file].
    #[arg(long, value_name = "N", value_parser = values::positive)]
    pub chunks: Option<usize>,

    /// Compute threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N", value_parser = values::positive)]
    pub threads: Option<usize>,

    /// Keep activations in float32 against dequantized weights instead of quantizing them
    /// to 8 bits as llama.cpp does: results match a float32 reference implementation
    /// (transformers) to ~0.01 nats; slower, above all in generation.
    #[arg(long)]
    pub f32_activations: bool,

    /// The KV cache's element type: f16 (default), f32, or q8_0 (34 bytes per 32 values,
    /// 53 % of f16's memory; llama.cpp's -ctk/-ctv q8_0; head sizes must be multiples of 32).
    #[arg(long = "cache-type", value_enum, value_name = "TYPE", default_value = "f16")]
    pub cache_type: values::CacheType,

    #[command(flatten)]
    pub lora: LoraArgs,

    /// What a quantization costs: compare MODEL with BASE (its higher-precision source, same
    /// vocabulary) over the same windows, and report llama-perplexity's KL-divergence
    /// statistics: both perplexities, KL(base ‖ MODEL) per token, Δp of the actual next
    /// token, and how often both pick the same top token. BASE is a model, or a file of its
    /// log-probabilities saved by --save-logprobs (or llama-perplexity --kl-divergence-base):
    /// then the windows are the file's and FILE must tokenize to the tokens it holds.
    #[arg(long = "kl-divergence", value_name = "BASE")]
    pub kl_divergence: Option<OsString>,

    /// Run BASE with float32 activations (a float32 reference's numerics).
    #[arg(long, requires = "kl_divergence")]
    pub base_f32_activations: bool,

    /// Save MODEL's log-probabilities at every scored position to PATH, in
    /// llama-perplexity's --kl-divergence-base format (about 2 bytes per vocabulary entry
    /// per scored token), for later runs of --kl-divergence PATH with other models or tools.
    #[arg(long = "save-logprobs", value_name = "PATH", conflicts_with = "kl_divergence")]
    pub save_logprobs: Option<PathBuf>,

    /// Print `{"ppl":..,"chunks":..,"tokens":..}` (and details) instead of a summary line.
    #[arg(long)]
    pub json: bool,
}
