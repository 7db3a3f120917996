//! What `owl run` and `owl generate` share: the flags turned into the engine's
//! [`GenerateParams`], a [`Session`] over the loaded model, and the `--verbose` timings.

use std::ffi::OsStr;
use std::sync::Arc;

use anyhow::bail;

use owl_engine::{
    ContextOverflow, EngineError, EogSet, GenerateParams, ModelRunner, SamplingParams, Session, SessionConfig, Timings,
};
use owl_models::LoraSet;
use owl_tokenizer::Tokenizer;

use crate::args::values::TokenLimit;
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
    pub tokenizer: Arc<Tokenizer>,
    pub name: String,
    /// The `--lora` adapters every reply runs with.
    pub lora: Option<Arc<LoraSet>>,
}

/// Loads MODEL and opens a session with the context size the flags ask for.
pub fn open(model: &OsStr, args: &GenerationArgs) -> anyhow::Result<Generator> {
    let threads = load::threads_or_default(args.threads);
    let loaded = load::load(model, threads, N_BATCH, args.f32_activations)?;
    let n_ctx = context_size(&loaded.model, args.ctx_size, 1, args.cache_type.dtype())?;
    if let Some(TokenLimit(Some(n))) = args.max_tokens {
        if n > n_ctx {
            printer::note(&format!(
                "--max-tokens {n} is more than the context of {n_ctx} tokens: the reply ends when the context is full"
            ));
        }
    }
    let lora = load::lora_set(&loaded.model, &args.lora)?;
    let runner = load::runner(loaded.model, 1, n_ctx, args.cache_type.dtype())?;
    let session = Session::new(runner, SessionConfig { n_batch: N_BATCH })?;
    Ok(Generator { session, tokenizer: Arc::new(loaded.tokenizer), name: loaded.name, lora })
}

/// The context of each of `sequences` sequences that `-c` asks for: 0 is the model's trained
/// context, none is that capped at [`DEFAULT_CTX_CAP`]; either capped by what fits in memory
/// (with a note saying so).
pub fn context_size(
    model: &owl_models::Model,
    requested: Option<usize>,
    sequences: usize,
    dtype: owl_models::KvDtype,
) -> anyhow::Result<usize> {
    let trained = model.config().context_length;
    let fits = load::context_that_fits(model, dtype).map(|n| n / sequences.max(1));
    let n_ctx = match requested {
        Some(0) if trained == 0 => {
            bail!("--ctx-size 0 asks for the model's trained context, but the model does not state one; give a size")
        }
        Some(0) => match fits {
            Some(fits) if fits < trained => {
                printer::note(&format!(
                    "--ctx-size 0: the model's trained context is {trained} tokens, but {fits} fit in the memory available; using {fits}"
                ));
                fits.max(1)
            }
            _ => {
                printer::note(&format!("--ctx-size 0: using the model's trained context of {trained} tokens"));
                trained
            }
        },
        Some(n) => {
            if trained > 0 && n > trained {
                printer::warning(&format!(
                    "--ctx-size {n} is more than the {trained} tokens the model was trained for; {}",
                    beyond_training(model)
                ));
            }
            n
        }
        None => {
            let default = if trained == 0 { DEFAULT_CTX_CAP } else { trained.min(DEFAULT_CTX_CAP) };
            match fits {
                Some(fits) if fits < default => {
                    printer::note(&format!(
                        "a context of {fits} tokens (not {default}): that is what fits in the memory available"
                    ));
                    fits.max(1)
                }
                _ => default,
            }
        }
    };
    Ok(n_ctx)
}

/// The engine's request from the flags, for `generator`'s model. `logprobs`: compute each
/// token's log-probability (`owl generate --json` always does).
pub fn generate_params(args: &GenerationArgs, generator: &Generator, logprobs: bool) -> anyhow::Result<GenerateParams> {
    let tokenizer = &generator.tokenizer;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed.and_then(|s| s.0),
        ..SamplingParams::default()
    };
    sampling.validate(tokenizer.vocab_size())?;
    let overflow = if args.truncate {
        ContextOverflow::TruncateLeft { keep_first: usize::from(tokenizer.adds_bos()) }
    } else {
        ContextOverflow::Error
    };
    Ok(GenerateParams {
        sampling,
        max_tokens: args.max_tokens.and_then(|n| n.0),
        stop: args.stop.clone(),
        eog: EogSet::new(tokenizer.eog_ids().iter().copied()),
        logprobs: logprobs || args.top_logprobs > 0,
        top_logprobs: args.top_logprobs,
        overflow,
        grammar: None,
        lora: generator.lora.clone(),
    })
}

/// What happens to positions past the trained context: the rope scaling in force.
fn beyond_training(model: &owl_models::Model) -> String {
    match model.config().rope_scaling_description() {
        Some(scaling) => format!("rope scaling in force: {scaling}"),
        None => "no rope scaling is configured, so output past that may degrade".to_string(),
    }
}

/// The engine's error for a prompt that does not fit, said in terms of the flags that
/// fix it; any other error as it is.
pub fn explain_context_error(err: anyhow::Error, in_chat: bool) -> anyhow::Error {
    match err.downcast_ref::<EngineError>() {
        Some(EngineError::PromptTooLong { prompt_tokens, n_ctx }) => {
            let what = if in_chat { "the conversation" } else { "the prompt" };
            let chat_fix = if in_chat { "/clear to start over, or restart with " } else { "" };
            anyhow::anyhow!(
                "{what} has {prompt_tokens} tokens but the context holds {n_ctx}: {chat_fix}a larger -c/--ctx-size, or --truncate to drop the oldest tokens"
            )
        }
        _ => err,
    }
}

/// `--verbose`: the speeds on stderr, one line each (llama.cpp's "prompt eval time" and
/// "eval time" lines).
pub fn print_timings(t: &Timings) {
    let cached =
        if t.cached_tokens > 0 { format!(" ({} reused from the cache)", t.cached_tokens) } else { String::new() };
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
