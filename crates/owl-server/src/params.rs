//! Request bodies → the engine's [`GenerateParams`]: the sampling fields every route shares
//! (OpenAI's names; llama.cpp's `top_k`, `min_p`, `repeat_penalty` too), each validated
//! with a 400 naming it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use owl_engine::{ContextOverflow, EogSet, GenerateParams, SamplingParams};
use owl_tokenizer::Tokenizer;
use serde_json::Value;

use crate::error::ApiError;
use crate::fields::Fields;
use crate::SharedState;

/// Most stop strings a request may give (OpenAI allows 4; llama.cpp more).
pub const MAX_STOPS: usize = 16;

/// Most `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// How much of an over-limit body is read and thrown away, and for how long, before the 413.
/// A client still sending when the server closes gets a TCP reset, which on Linux discards
/// the 413 it has not read yet; reading the rest first (nginx's "lingering close") lets the
/// answer arrive. Beyond these bounds the connection is closed at once.
const DRAIN_BYTES: usize = 32 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body read up to `--max-body-bytes`; over it, a 413 (the rest of the body read
/// and discarded within bounds, see [`DRAIN_BYTES`]). Never rejects by itself, so that
/// each route answers the failure in its own dialect.
pub struct RequestBody(pub Result<Bytes, ApiError>);

impl FromRequest<SharedState> for RequestBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        Ok(RequestBody(read_body(request, state.options.max_body_bytes).await))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body is larger than this server accepts ({limit} bytes; see --max-body-bytes)"),
        param: None,
        code: None,
    }
}

async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit.saturating_add(DRAIN_BYTES)) as u64) {
        return Err(too_large(limit));
    }
    let mut chunks = request.into_body().into_data_stream();
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            let seen = body.len() + chunk.len();
            drop(body);
            discard_stream(&mut chunks, limit.saturating_add(DRAIN_BYTES).saturating_sub(seen)).await;
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Reads and drops the rest of a request body that will not be used (an early 401 or 404),
/// at most `budget` bytes and for at most [`DRAIN_TIME`], so that the answer is not lost to a
/// reset and the connection can carry the next request. True if the body ended in bounds.
pub(crate) async fn discard_body(body: axum::body::Body, budget: usize) -> bool {
    discard_stream(&mut body.into_data_stream(), budget).await
}

async fn discard_stream(chunks: &mut axum::body::BodyDataStream, budget: usize) -> bool {
    let mut seen = 0usize;
    let drain = async {
        while let Some(chunk) = chunks.next().await {
            let Ok(chunk) = chunk else { return false };
            seen = seen.saturating_add(chunk.len());
            if seen > budget {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, drain).await.unwrap_or(false)
}

/// The body as JSON; a body over the limit is 413, anything unparsable 400.
pub fn json_body(body: RequestBody) -> Result<Value, ApiError> {
    let bytes = body.0?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// Sampling, penalties, seed, logit bias, stops and logprobs of a request. `max_tokens` is
/// left to the route (its name differs); the prompt length is checked against it there.
pub fn generate_params(f: &Fields<'_>, tokenizer: &Tokenizer) -> Result<GenerateParams, ApiError> {
    let mut s = SamplingParams::default();
    if let Some(t) = f.number("temperature", 0.0, 2.0)? {
        s.temperature = t as f32;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        s.top_p = p as f32;
    }
    if let Some(k) = f.integer("top_k", 0, i64::from(u32::MAX))? {
        s.top_k = k as usize;
    }
    if let Some(p) = f.number("min_p", 0.0, 1.0)? {
        s.min_p = p as f32;
    }
    if let Some(p) = f.number("repeat_penalty", f64::MIN_POSITIVE, 1e6)? {
        s.repeat_penalty = p as f32;
    }
    if let Some(p) = f.number("presence_penalty", -2.0, 2.0)? {
        s.presence_penalty = p as f32;
    }
    if let Some(p) = f.number("frequency_penalty", -2.0, 2.0)? {
        s.frequency_penalty = p as f32;
    }
    // Seeds arrive as any integer JSON can hold; negative ones (llama.cpp's -1) mean random.
    match f.get("seed") {
        None => {}
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(seed), _) => s.seed = Some(seed),
            (None, Some(n)) if n < 0 => s.seed = None,
            _ => return Err(ApiError::field("seed", format!("must be an integer, got {v}"))),
        },
    }
    if let Some(bias) = f.object("logit_bias")? {
        for (key, value) in bias.entries() {
            let name = format!("logit_bias.{key}");
            let id: u32 = key.parse().map_err(|_| ApiError::field(&name, "keys must be token ids"))?;
            if id as usize >= tokenizer.vocab_size() {
                return Err(ApiError::field(
                    &name,
                    format!("no such token in a vocabulary of {}", tokenizer.vocab_size()),
                ));
            }
            let b = crate::fields::number_in(&name, Some(value), -100.0, 100.0)?.unwrap_or(0.0);
            // OpenAI: -100 bans the token, 100 forces it.
            let b = if b <= -100.0 { f32::NEG_INFINITY } else { b as f32 };
            s.logit_bias.push((id, b));
        }
    }
    // llama.cpp's `ignore_eos`: no end-of-generation token may be sampled, so the reply
    // runs to `max_tokens` (or a stop string); load generators rely on it.
    if f.bool("ignore_eos")? == Some(true) {
        s.logit_bias.extend(tokenizer.eog_ids().iter().map(|&id| (id, f32::NEG_INFINITY)));
    }
    s.validate(tokenizer.vocab_size())?;
    let stop = f.strings("stop", MAX_STOPS)?;
    Ok(GenerateParams {
        sampling: s,
        max_tokens: None,
        stop,
        eog: EogSet::new(tokenizer.eog_ids().iter().copied()),
        logprobs: false,
        top_logprobs: 0,
        overflow: ContextOverflow::Error,
        grammar: None,
    })
}

/// `max_tokens` against the context: a request that cannot fit is a 400 naming both
/// numbers (never a silent cut); without a limit the reply may fill the context.
pub fn check_fits(prompt_tokens: usize, max_tokens: Option<usize>, n_ctx: usize, field: &str) -> Result<(), ApiError> {
    if prompt_tokens > n_ctx {
        return Err(ApiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: format!(
                "the prompt has {prompt_tokens} tokens but the context holds {n_ctx}: shorten it, or start the \
                 server with a larger --ctx-size"
            ),
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        });
    }
    if let Some(m) = max_tokens {
        if prompt_tokens + m > n_ctx {
            return Err(ApiError {
                status: axum::http::StatusCode::BAD_REQUEST,
                message: format!(
                    "{field}: {m} new tokens after a prompt of {prompt_tokens} exceed the context of {n_ctx} tokens \
                     (at most {} fit)",
                    n_ctx - prompt_tokens
                ),
                param: Some(field.into()),
                code: Some("context_length_exceeded"),
            });
        }
    }
    Ok(())
}
