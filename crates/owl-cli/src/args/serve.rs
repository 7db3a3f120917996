//! Arguments of `owl serve`.

use std::ffi::OsString;

use clap::Args;

use super::values;

/// `owl serve MODEL... [--model MODEL]... [--host H] [--port P] [--parallel N] ...`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// One or more models, each loaded at start and named in requests by its MODEL argument
    /// (or its store name, or its file's stem); the first answers requests that name none.
    /// Each is one of: a .gguf file, a Hugging Face model directory, or a store name such
    /// as smollm2 (pulled on first use when the catalog knows it).
    #[arg(value_name = "MODEL")]
    pub models: Vec<OsString>,

    /// Another model to serve (repeatable; the same as a further MODEL argument).
    #[arg(long = "model", value_name = "MODEL")]
    pub more_models: Vec<OsString>,

    /// Address to listen on; anything but a loopback address exposes the model to the
    /// network (set --api-key then).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, value_name = "PORT", default_value_t = 11435)]
    pub port: u16,

    /// Require this key on every route but /health, as `Authorization: Bearer KEY` or
    /// `x-api-key: KEY`.
    #[arg(long, value_name = "KEY", env = "OWL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Sequences generated at once (each holds a KV cache of --ctx-size tokens).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = values::positive)]
    pub parallel: usize,

    /// Requests that may wait for a free sequence; beyond it the answer is 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,

    /// Context of each sequence in tokens; 0: the model's trained context [default: the
    /// model's context length, at most 4096, within the memory available].
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx", value_name = "N")]
    pub ctx_size: Option<usize>,

    /// The KV cache's element type: f16 (default), f32, or q8_0 (34 bytes per 32 values,
    /// 53 % of f16's memory; llama.cpp's -ctk/-ctv q8_0; head sizes must be multiples of 32).
    #[arg(long = "cache-type", value_enum, value_name = "TYPE", default_value = "f16")]
    pub cache_type: values::CacheType,

    /// Compute threads [default: the number of physical cores].
    #[arg(short = 't', long, value_name = "N", value_parser = values::positive)]
    pub threads: Option<usize>,

    /// Allow browsers on this origin to call the API (CORS; repeatable; `*` for any).
    /// Without it no CORS headers are sent.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Largest request body in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, value_parser = values::positive)]
    pub max_body_bytes: usize,

    /// Seconds that replies in flight may go on after SIGTERM or Ctrl-C; then each open
    /// stream gets its final chunk (finish_reason "cancelled") and the server exits.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = values::grace_seconds)]
    pub shutdown_grace: f64,

    /// The name clients give as `model` [default: the MODEL argument]; only with one model.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Do not serve the chat page at `/`.
    #[arg(long)]
    pub no_webui: bool,

    /// Serve a LoRA adapter as the model `BASE+NAME` (repeatable): DIR is a PEFT directory
    /// or a llama.cpp GGUF adapter, its delta scaled by SCALE [default: 1]. Requests for
    /// it run on the base's sequences, batched with the base's own and other adapters'.
    #[arg(long = "lora", value_name = "NAME=DIR[:SCALE]")]
    pub lora: Vec<owl_train::AdapterSpec>,

    /// Serve the adapters even though their base_model_name_or_path names another model
    /// (architecture and tensor shapes are still checked).
    #[arg(long, requires = "lora")]
    pub lora_any_base: bool,
}
