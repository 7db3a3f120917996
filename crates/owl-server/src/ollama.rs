//! Ollama's API (docs/api.md of ollama/ollama): `/api/chat`, `/api/generate` (NDJSON
//! streams, on by default), `/api/embed`, `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/version`. Errors are Ollama's `{"error": "..."}` with the status of the failure.
//!
//! `options` carries the sampling fields under Ollama's names (`num_predict`, `top_k`,
//! `top_p`, `min_p`, `temperature`, `seed`, `stop`, `repeat_penalty`, `repeat_last_n`,
//! `presence_penalty`, `frequency_penalty`, `num_ctx`). `keep_alive` is accepted and
//! validated; the served model stays loaded for the server's lifetime whatever it says.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use owl_engine::{GenerateParams, SeqRequest, StopReason};
use owl_tokenizer::ChatMessage;
use serde_json::{json, Value};

use crate::chat::ReplySplit;
use crate::engine::{StreamEvent, Submit};
use crate::error::ApiError;
use crate::fields::Fields;
use crate::params::{check_fits, generate_params, json_body, ollama_grammar, RequestBody};
use crate::tools::ReplyPiece;
use crate::{unix_now, Shared, SharedState};

/// An [`ApiError`] in Ollama's shape.
pub struct OllamaError(pub ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl From<owl_engine::EngineError> for OllamaError {
    fn from(e: owl_engine::EngineError) -> Self {
        OllamaError(e.into())
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({"error": self.0.message}))).into_response()
    }
}

type Result<T> = std::result::Result<T, OllamaError>;

/// Ollama names models `name:tag`; ours is `name` or `name:latest`.
fn tag(state: &SharedState) -> String {
    format!("{}:latest", state.model.name)
}

/// RFC 3339 in UTC from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    owl_tokenizer::format_unix_utc(secs as i64, "%Y-%m-%dT%H:%M:%SZ").unwrap_or_default()
}

/// `keep_alive`: a duration string (`5m`, `1h`, `30s`, `-1`) or a number of seconds.
fn check_keep_alive(f: &Fields<'_>) -> Result<()> {
    match f.get("keep_alive") {
        None | Some(Value::Number(_)) => Ok(()),
        Some(Value::String(s)) => {
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &s[digits.len()..];
            if digits.parse::<f64>().is_ok() && ["", "ms", "s", "m", "h"].contains(&unit) {
                Ok(())
            } else {
                Err(ApiError::field("keep_alive", format!("'{s}' is not a duration such as 5m, 30s or -1")).into())
            }
        }
        Some(v) => Err(ApiError::field("keep_alive", format!("must be a duration or a number, got {v}")).into()),
    }
}

/// `options` → the engine's parameters, each checked under its Ollama name.
fn params(state: &SharedState, f: &Fields<'_>) -> Result<GenerateParams> {
    let empty = json!({});
    let o = match f.object("options")? {
        Some(o) => o,
        None => Fields::new(&empty)?,
    };
    // Errors name the field as the client wrote it: `options.temperature`.
    let mut p = generate_params(&o, &state.model).map_err(|e| match &e.param {
        Some(name) => ApiError {
            message: e.message.replacen(name.as_str(), &format!("options.{name}"), 1),
            param: Some(format!("options.{name}")),
            ..e
        },
        None => e,
    })?;
    if let Some(n) = o.integer("num_predict", -2, i64::from(u32::MAX))? {
        p.max_tokens = (n >= 0).then_some(n as usize);
    }
    if let Some(n) = o.integer("repeat_last_n", -1, i64::from(u32::MAX))? {
        p.sampling.repeat_last_n = if n < 0 { state.model.engine.context_size() } else { n as usize };
    }
    if let Some(n) = o.integer("num_ctx", 1, i64::from(u32::MAX))? {
        let have = state.model.engine.context_size();
        if n as usize > have {
            return Err(ApiError::field(
                "options.num_ctx",
                format!("{n} is more than the {have} tokens each sequence has (start owl serve with a larger -c)"),
            )
            .into());
        }
    }
    Ok(p)
}

pub async fn chat(State(registry): State<Shared>, body: RequestBody) -> Result<Response> {
    let started = Instant::now();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select_required(f.str("model")?)?;
    check_keep_alive(&f)?;
    let grammar = ollama_grammar(&f)?;
    let messages: Vec<ChatMessage> = match f.get("messages") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, m)| {
                serde_json::from_value(m.clone()).map_err(|e| ApiError::field(&format!("messages[{i}]"), e.to_string()))
            })
            .collect::<std::result::Result<_, _>>()?,
        Some(_) => return Err(ApiError::field("messages", "must be an array").into()),
    };
    let stream = f.bool("stream")?.unwrap_or(true);
    if messages.is_empty() {
        // Ollama's way to load a model: an empty conversation answers at once.
        return Ok(Json(json!({
            "model": tag(&state), "created_at": rfc3339(unix_now()),
            "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true,
        }))
        .into_response());
    }
    let mut params = params(&state, &f)?;
    // Ollama's `tools` are OpenAI's; there is no tool_choice (the model decides).
    let tools = crate::tools::openai_tools(&f)?;
    let chat = crate::chat::render(&state, messages, &tools, "use /api/generate with raw").await?;
    check_fits(chat.ids.len(), params.max_tokens, state.model.engine.context_size(), "options.num_predict")?;
    if let Some(g) = grammar {
        params.grammar = Some(state.compile_grammar(g.spec, g.field).await?);
    }
    generate(state, chat.ids, params, stream, started, Shape::Chat, chat.split).await
}

pub async fn generate_route(State(registry): State<Shared>, body: RequestBody) -> Result<Response> {
    let started = Instant::now();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select_required(f.str("model")?)?;
    check_keep_alive(&f)?;
    let grammar = ollama_grammar(&f)?;
    let prompt_text = f.str("prompt")?.unwrap_or("");
    let stream = f.bool("stream")?.unwrap_or(true);
    if f.get("suffix").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::field("suffix", "insertion (fill-in-the-middle) is not supported").into());
    }
    if f.get("images").is_some() {
        return Err(ApiError::field("images", "this model takes text only").into());
    }
    if prompt_text.is_empty() {
        return Ok(Json(json!({
            "model": tag(&state), "created_at": rfc3339(unix_now()), "response": "", "done_reason": "load", "done": true,
        }))
        .into_response());
    }
    let mut params = params(&state, &f)?;
    let raw = f.bool("raw")?.unwrap_or(false);
    let prompt = if raw || state.model.renderer.is_none() {
        // Raw, or a base model without a template: the text as it is.
        state.model.tokenizer.encode(prompt_text, true, true).map_err(|e| ApiError::field("prompt", e.to_string()))?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = f.str("system")? {
            messages.push(ChatMessage::system(system));
        }
        messages.push(ChatMessage::user(prompt_text));
        render(&state, messages).await?
    };
    check_fits(prompt.len(), params.max_tokens, state.model.engine.context_size(), "options.num_predict")?;
    if let Some(g) = grammar {
        params.grammar = Some(state.compile_grammar(g.spec, g.field).await?);
    }
    generate(state, prompt, params, stream, started, Shape::Generate, None).await
}

async fn render(state: &SharedState, messages: Vec<ChatMessage>) -> Result<Vec<u32>> {
    let tools = crate::tools::ToolRequest::none();
    Ok(crate::chat::render(state, messages, &tools, "use /api/generate with raw").await?.ids)
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `/api/chat`.
    Chat,
    Generate,
}

/// One NDJSON line (or the whole answer): the text piece in the route's shape.
fn piece(state: &SharedState, shape: Shape, text: &str) -> Value {
    match shape {
        Shape::Chat => json!({"model": tag(state), "created_at": rfc3339(unix_now()),
                               "message": {"role": "assistant", "content": text}, "done": false}),
        Shape::Generate => {
            json!({"model": tag(state), "created_at": rfc3339(unix_now()), "response": text, "done": false})
        }
    }
}

/// The final object: done, the reason, counts and durations in nanoseconds.
fn last(state: &SharedState, shape: Shape, text: &str, f: &crate::engine::Finished, started: Instant) -> Value {
    let mut v = piece(state, shape, text);
    let t = &f.outcome.timings;
    v["done"] = json!(true);
    v["done_reason"] = json!(match f.stop_reason {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        // Only a server shutting down reports a cancelled reply: Ollama's reason when the
        // model leaves memory mid-reply.
        StopReason::Cancelled => "unload",
        StopReason::Eog { .. } | StopReason::Stop { .. } | StopReason::Grammar { .. } => "stop",
    });
    v["total_duration"] = json!(started.elapsed().as_nanos() as u64);
    v["load_duration"] = json!(0);
    v["prompt_eval_count"] = json!(f.outcome.prompt_ids.len());
    v["prompt_eval_duration"] = json!((t.prompt_ms * 1e6) as u64);
    v["eval_count"] = json!(f.outcome.ids.len());
    v["eval_duration"] = json!((t.gen_ms * 1e6) as u64);
    v
}

async fn generate(
    state: SharedState,
    prompt: Vec<u32>,
    params: GenerateParams,
    stream: bool,
    started: Instant,
    shape: Shape,
    // With a split, the reply's thinking and tool calls are their own fields.
    split: Option<ReplySplit>,
) -> Result<Response> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stops = params.stop.clone();
    let guard = state.model.engine.submit(Submit { request: SeqRequest { prompt, params }, stops, events: tx }).await?;
    let mut clock = crate::metrics::TokenClock::start_at(started);
    if !stream {
        let (text, f) = crate::engine::collect_text(&mut rx, &mut clock, &state.metrics).await?;
        drop(guard);
        let Some(split) = split else {
            return Ok(Json(last(&state, shape, &text, &f, started)).into_response());
        };
        let mut answer = last(&state, shape, "", &f, started);
        answer["message"] = reply_message(split.pieces(&text));
        return Ok(Json(answer).into_response());
    }
    let parser = split.map(|s| s.parser());
    let lines = stream::unfold(Some((rx, guard, clock, parser)), move |s| {
        let state = state.clone();
        async move {
            let (mut rx, guard, mut clock, mut parser) = s?;
            loop {
                let line = match rx.recv().await {
                    Some(StreamEvent::Token(_)) => {
                        clock.tick(&state.metrics);
                        continue;
                    }
                    Some(StreamEvent::Text(t)) => {
                        if let Some(p) = parser.as_mut() {
                            let mut pieces = Vec::new();
                            p.push(&t, &mut pieces);
                            if pieces.is_empty() {
                                continue;
                            }
                            let bytes = split_lines(&state, shape, pieces);
                            return Some((Ok(Bytes::from(bytes)), Some((rx, guard, clock, parser))));
                        }
                        piece(&state, shape, &t)
                    }
                    Some(StreamEvent::Done(f)) => {
                        let mut bytes = Vec::new();
                        if let Some(mut parser) = parser.take() {
                            let mut pieces = Vec::new();
                            parser.finish(&mut pieces);
                            bytes = split_lines(&state, shape, pieces);
                        }
                        bytes.extend_from_slice(last(&state, shape, "", &f, started).to_string().as_bytes());
                        bytes.push(b'\n');
                        drop(guard);
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), None));
                    }
                    Some(StreamEvent::Failed(e)) => json!({"error": e.message}),
                    None => json!({"error": "the engine stopped"}),
                };
                let mut bytes = line.to_string().into_bytes();
                bytes.push(b'\n');
                let failed = line.get("error").is_some();
                return Some((Ok(Bytes::from(bytes)), if failed { None } else { Some((rx, guard, clock, parser)) }));
            }
        }
    });
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// A chat message from reply pieces: `content`, `thinking` (Ollama's name for reasoning)
/// and `tool_calls` (`[{"function": {"name", "arguments": {...}}}]`, the arguments an object).
fn reply_message(pieces: Vec<ReplyPiece>) -> Value {
    let (mut content, mut thinking, mut calls) = (String::new(), String::new(), Vec::new());
    for p in pieces {
        match p {
            ReplyPiece::Content(t) => content.push_str(&t),
            ReplyPiece::Reasoning(t) => thinking.push_str(&t),
            ReplyPiece::Call(c) => calls.push(json!({"function": {"name": c.name, "arguments": c.arguments}})),
        }
    }
    let mut m = json!({"role": "assistant", "content": content});
    if !thinking.is_empty() {
        m["thinking"] = json!(thinking);
    }
    if !calls.is_empty() {
        m["tool_calls"] = json!(calls);
    }
    m
}

/// NDJSON lines for streamed reply pieces: one per piece.
fn split_lines(state: &SharedState, shape: Shape, pieces: Vec<ReplyPiece>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for p in pieces {
        let mut line = piece(state, shape, "");
        line["message"] = reply_message(vec![p]);
        bytes.extend_from_slice(line.to_string().as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

pub async fn embed(State(registry): State<Shared>, body: RequestBody) -> Result<Response> {
    let started = Instant::now();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select_required(f.str("model")?)?;
    check_keep_alive(&f)?;
    let texts: Vec<String> = match f.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::field(&format!("input[{i}]"), "must be a string"))
            })
            .collect::<std::result::Result<_, _>>()?,
        Some(_) => return Err(ApiError::field("input", "must be a string or an array of strings").into()),
        None => return Err(ApiError::field("input", "is required").into()),
    };
    if texts.is_empty() || texts.len() > 256 {
        return Err(ApiError::field("input", "1 to 256 inputs").into());
    }
    let truncate = f.bool("truncate")?.unwrap_or(true);
    let n_ctx = state.model.engine.context_size();
    let mut embeddings = Vec::with_capacity(texts.len());
    let mut count = 0;
    for (i, text) in texts.iter().enumerate() {
        let name = format!("input[{i}]");
        let mut ids =
            state.model.tokenizer.encode(text, true, false).map_err(|e| ApiError::field(&name, e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::field(&name, "encodes to no tokens").into());
        }
        if ids.len() > n_ctx {
            if !truncate {
                return Err(
                    ApiError::field(&name, format!("{} tokens exceed the context of {n_ctx}", ids.len())).into()
                );
            }
            // Ollama's default: cut to the context.
            ids.truncate(n_ctx);
        }
        count += ids.len();
        embeddings.push(state.model.engine.embed(ids, state.model.lora.clone()).await?);
    }
    Ok(Json(json!({
        "model": tag(&state),
        "embeddings": embeddings,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": count,
    }))
    .into_response())
}

fn details(state: &SharedState) -> Value {
    let d = &state.model.details;
    json!({
        "parent_model": "",
        "format": d.format,
        "family": d.family,
        "families": [d.family],
        "parameter_size": d.parameter_size,
        "quantization_level": d.quantization_level,
    })
}

pub async fn tags(State(registry): State<Shared>) -> Json<Value> {
    let models: Vec<Value> = registry
        .models
        .iter()
        .map(|state| {
            json!({
                "name": tag(state),
                "model": tag(state),
                "modified_at": rfc3339(state.model.created),
                "size": state.model.details.size,
                "details": details(state),
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

pub async fn ps(State(registry): State<Shared>) -> Json<Value> {
    // Loaded for the server's lifetime: no expiry to report but the far future.
    let models: Vec<Value> = registry
        .models
        .iter()
        .map(|state| {
            json!({
                "name": tag(state),
                "model": tag(state),
                "size": state.model.details.size,
                "details": details(state),
                "expires_at": "2318-01-01T00:00:00Z",
                "size_vram": 0,
                "context_length": state.model.engine.context_size(),
            })
        })
        .collect();
    Json(json!({ "models": models }))
}

pub async fn show(State(registry): State<Shared>, body: RequestBody) -> Result<Response> {
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let model = f.str("model")?.or(f.str("name")?);
    let state = registry.select_required(model)?;
    let template = state.model.tokenizer.chat_template().map(|t| t.source().to_string()).unwrap_or_default();
    let capabilities = ["completion", "embedding"];
    Ok(Json(json!({
        "modelfile": format!("FROM {}\n", state.model.name),
        "parameters": "",
        "template": template,
        "details": details(&state),
        "model_info": {
            "general.architecture": state.model.details.family,
            "general.parameter_count": state.model.details.parameters,
            "general.context_length": state.model.engine.context_size(),
            "general.embedding_length": state.model.hidden_size,
        },
        "capabilities": capabilities,
        "modified_at": rfc3339(state.model.created),
    }))
    .into_response())
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_418_441), "2026-12-04T21:07:21Z");
    }
}
