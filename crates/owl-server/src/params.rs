//! Request bodies → the engine's [`GenerateParams`]: the sampling fields every route shares
//! (OpenAI's names; llama.cpp's `top_k`, `min_p`, `repeat_penalty` too), each validated
//! with a 400 naming it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use owl_engine::{ContextOverflow, EogSet, GenerateParams, GrammarSpec, SamplingParams};
use serde_json::Value;

use crate::error::ApiError;
use crate::fields::Fields;
use crate::{ServedModel, Shared};

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

impl FromRequest<Shared> for RequestBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &Shared) -> Result<Self, Infallible> {
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
pub fn generate_params(f: &Fields<'_>, model: &ServedModel) -> Result<GenerateParams, ApiError> {
    let tokenizer = &*model.tokenizer;
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
        lora: model.lora.clone(),
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

/// A grammar a request asks for, and the parameter that asked (errors name it).
pub struct GrammarRequest {
    pub spec: GrammarSpec,
    pub field: &'static str,
}

/// The structured-output parameters of the OpenAI routes, in every dialect clients send:
/// OpenAI's `response_format` (`text`, `json_object`, `json_schema` with `strict`),
/// llama.cpp's `json_schema` and `grammar` (GBNF, or Lark), vLLM's `guided_json`,
/// `guided_regex`, `guided_grammar` and `guided_choice`. At most one per request.
pub fn openai_grammar(f: &Fields<'_>) -> Result<Option<GrammarRequest>, ApiError> {
    let mut found: Vec<GrammarRequest> = Vec::new();
    if let Some(format) = f.object("response_format")? {
        let kind = match format.get("type") {
            Some(Value::String(kind)) => Some(kind.as_str()),
            Some(_) => return Err(ApiError::field("response_format.type", "must be a string")),
            None => None,
        };
        let spec = match kind {
            Some("text") => None,
            Some("json_object") => Some(match format.get("schema") {
                // llama.cpp: `{"type": "json_object", "schema": {...}}`.
                Some(schema) => schema_spec("response_format.schema", schema, false)?,
                None => GrammarSpec::JsonObject,
            }),
            Some("json_schema") => {
                let inner = match format.get("json_schema") {
                    Some(Value::Object(inner)) => inner,
                    Some(_) => return Err(ApiError::field("response_format.json_schema", "must be an object")),
                    None => {
                        return Err(ApiError::field("response_format.json_schema", "is required with type json_schema"))
                    }
                };
                let strict = match inner.get("strict") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(ApiError::field("response_format.json_schema.strict", "must be true or false"))
                    }
                };
                // OpenAI: the schema is optional; without one any JSON value is allowed.
                let schema = inner.get("schema").cloned().unwrap_or(Value::Bool(true));
                Some(schema_spec("response_format.json_schema.schema", &schema, strict)?)
            }
            Some(other) => {
                return Err(ApiError::field(
                    "response_format.type",
                    format!("'{other}' is not one of text, json_object, json_schema"),
                ))
            }
            None => return Err(ApiError::field("response_format.type", "is required")),
        };
        if let Some(spec) = spec {
            found.push(GrammarRequest { spec, field: "response_format" });
        }
    }
    for field in ["json_schema", "guided_json"] {
        if let Some(schema) = f.get(field) {
            // vLLM also takes the schema as a JSON string.
            let parsed;
            let schema = match schema {
                Value::String(text) => {
                    parsed = serde_json::from_str::<Value>(text)
                        .map_err(|e| ApiError::field(field, format!("not a JSON schema: {e}")))?;
                    &parsed
                }
                other => other,
            };
            found.push(GrammarRequest { spec: schema_spec(field, schema, false)?, field });
        }
    }
    for field in ["grammar", "guided_grammar"] {
        if let Some(text) = f.str(field)? {
            found.push(GrammarRequest { spec: grammar_text(field, text)?, field });
        }
    }
    if let Some(rx) = f.str("guided_regex")? {
        found.push(GrammarRequest { spec: GrammarSpec::Regex(rx.to_string()), field: "guided_regex" });
    }
    if let Some(choices) = f.get("guided_choice") {
        found.push(GrammarRequest { spec: choice_spec("guided_choice", choices)?, field: "guided_choice" });
    }
    one_grammar(found)
}

/// Ollama's `format`: `"json"` (any JSON object) or a JSON Schema; `""` is none.
pub fn ollama_grammar(f: &Fields<'_>) -> Result<Option<GrammarRequest>, ApiError> {
    let spec = match f.get("format") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) if s == "json" => GrammarSpec::JsonObject,
        Some(Value::String(s)) => {
            return Err(ApiError::field("format", format!("'{s}' is not \"json\" or a JSON schema object")))
        }
        Some(schema) => schema_spec("format", schema, false)?,
    };
    Ok(Some(GrammarRequest { spec, field: "format" }))
}

fn schema_spec(field: &str, schema: &Value, strict: bool) -> Result<GrammarSpec, ApiError> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::field(field, "a JSON schema is an object"));
    }
    Ok(GrammarSpec::JsonSchema { schema: schema.clone(), strict })
}

/// Grammar text: llama.cpp's GBNF (translated to Lark) or Lark itself.
fn grammar_text(field: &str, text: &str) -> Result<GrammarSpec, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::field(field, "the grammar is empty"));
    }
    if owl_engine::grammar::gbnf::looks_like_gbnf(text) {
        let lark = owl_engine::grammar::gbnf::to_lark(text)
            .map_err(|e| ApiError::field(field, format!("a GBNF grammar owl cannot translate: {e}")))?;
        return Ok(GrammarSpec::Lark(lark));
    }
    Ok(GrammarSpec::Lark(text.to_string()))
}

/// vLLM's `guided_choice`: the output is exactly one of the strings.
fn choice_spec(field: &str, choices: &Value) -> Result<GrammarSpec, ApiError> {
    let list = match choices {
        Value::Array(list) if !list.is_empty() => list,
        _ => return Err(ApiError::field(field, "must be a non-empty array of strings")),
    };
    let mut alternatives = Vec::with_capacity(list.len());
    for (i, choice) in list.iter().enumerate() {
        match choice {
            // A Lark string literal takes JSON's escapes.
            Value::String(s) if !s.is_empty() => alternatives.push(Value::String(s.clone()).to_string()),
            _ => return Err(ApiError::field(&format!("{field}[{i}]"), "must be a non-empty string")),
        }
    }
    Ok(GrammarSpec::Lark(format!("start: {}\n", alternatives.join(" | "))))
}

fn one_grammar(mut found: Vec<GrammarRequest>) -> Result<Option<GrammarRequest>, ApiError> {
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|g| g.field).collect();
        return Err(ApiError::field(
            found[1].field,
            format!("one kind of structured output per request, got {}", names.join(" and ")),
        ));
    }
    Ok(found.pop())
}
