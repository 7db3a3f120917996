//! What `owl run` and `owl generate` share: the flags turned into the engine's
//! [`GenerateParams`], a [`Session`] over the loaded model, and the `--verbose` timings.

use std::ffi::OsStr;

use anyhow::{bail, Context};

use owl_engine::{
    ContextOverflow, EogSet, GenerateParams, ModelRunner, SamplingParams, Session, SessionConfig,
    Timings,
};
use owl_models::KvDtype;
use owl_tokenizer::Tokenizer;

use crate::args::GenerationArgs;
use crate::commands::load;
use crate::printer;

/// The default context when `-c` is not given: the model's, capped (a 128k-token cache
/// costs gigabytes that a chat rarely needs).
pub const DEFAULT_CTX_CAP: usize = 4096;

/// Tokens per forward call during prefill.
const N_BATCH: usize = 512;

/// A loaded model in a generation session, with its tokenizer.
pub struct Generator {
    pub session: Session<ModelRunner>,
    pub tokenizer: Tokenizer,
    pub name: String,
}

/// Loads MODEL and opens a session with the context size the flags ask for.
pub fn open(model: &OsStr, args: &GenerationArgs) -> anyhow::Result<Generator> {
    let threads = load::threads_or_default(args.threads)?;
    let loaded = load::load(model, threads, N_BATCH, args.f32_activations)?;
    let trained = loaded.model.config().context_length;
    let n_ctx = match args.ctx_size {
        Some(0) => bail!("--ctx-size must be at least 1"),
        Some(n) => {
            if trained > 0 && n > trained {
                printer::warning(&format!(
                    "--ctx-size {n} is more than the {trained} tokens the model was trained for; output past that may degrade"
                ));
            }
            n
        }
        None if trained == 0 => DEFAULT_CTX_CAP,
        None => trained.min(DEFAULT_CTX_CAP),
    };
    let runner = ModelRunner::new(loaded.model, n_ctx, KvDtype::F16)
        .with_context(|| format!("a KV cache of {n_ctx} tokens"))?;
    let session = Session::new(runner, SessionConfig { n_batch: N_BATCH })?;
    Ok(Generator {
        session,
        tokenizer: loaded.tokenizer,
        name: loaded.name,
    })
}

/// The engine's request from the flags. `logprobs`: compute each token's log-probability
/// (`owl generate --json` always does).
pub fn generate_params(
    args: &GenerationArgs,
    tokenizer: &Tokenizer,
    logprobs: bool,
) -> anyhow::Result<GenerateParams> {
    if args.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    if args.stop.iter().any(String::is_empty) {
        bail!("--stop needs a non-empty TEXT");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed,
        ..SamplingParams::default()
    };
    sampling.validate(tokenizer.vocab_size())?;
    let overflow = if args.truncate {
        ContextOverflow::TruncateLeft {
            keep_first: usize::from(tokenizer.adds_bos()),
        }
    } else {
        ContextOverflow::Error
    };
    Ok(GenerateParams {
        sampling,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        eog: EogSet::new(tokenizer.eog_ids().iter().copied()),
        logprobs: logprobs || args.top_logprobs > 0,
        top_logprobs: args.top_logprobs,
        overflow,
    })
}

/// `--verbose`: the speeds on stderr, one line each (llama.cpp's "prompt eval time" and
/// "eval time" lines).
pub fn print_timings(t: &Timings) {
    let cached = if t.cached_tokens > 0 {
        format!(" ({} reused from the cache)", t.cached_tokens)
    } else {
        String::new()
    };
    printer::progress(&format!(
        "prompt:     {:>5} tokens in {:>9.2} ms, {:>8.2} tokens/s{cached}",
        t.prompt_tokens,
        t.prompt_ms,
        t.prompt_tokens_per_s()
    ));
    printer::progress(&format!(
        "generation: {:>5} tokens in {:>9.2} ms, {:>8.2} tokens/s",
        t.gen_tokens,
        t.gen_ms,
        t.gen_tokens_per_s()
    ));
}
