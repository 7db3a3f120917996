//! Anthropic's Messages API: `POST /v1/messages`, streamed as Anthropic streams it
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta` with the stop reason and usage, `message_stop`),
//! errors as `{"type":"error","error":{"type","message"}}`. The key may come as
//! `x-api-key`, as Anthropic's clients send it.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use owl_engine::{SeqRequest, StopReason};
use owl_tokenizer::ChatMessage;
use serde_json::{json, Value};

use crate::engine::{Finished, StreamEvent, Submit};
use crate::error::ApiError;
use crate::fields::Fields;
use crate::metrics::TokenClock;
use crate::params::{check_fits, generate_params, json_body, RequestBody};
use crate::SharedState;

/// An [`ApiError`] in Anthropic's shape.
pub struct AnthropicError(pub ApiError);

impl<E: Into<ApiError>> From<E> for AnthropicError {
    fn from(e: E) -> Self {
        AnthropicError(e.into())
    }
}

impl AnthropicError {
    /// Anthropic's error `type` for the status.
    fn kind(&self) -> &'static str {
        match self.0.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            s if s >= 500 => "api_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = json!({"type": "error", "error": {"type": self.kind(), "message": self.0.message}});
        (self.0.status, Json(body)).into_response()
    }
}

type Result<T> = std::result::Result<T, AnthropicError>;

/// Text of a `content` (a string, or blocks of which only text is accepted here).
fn text_of(name: &str, v: &Value) -> std::result::Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push(t),
                    (Some(kind), _) => {
                        return Err(ApiError::field(
                            &format!("{name}[{i}].type"),
                            format!("'{kind}' blocks are not supported; text only"),
                        ))
                    }
                    _ => return Err(ApiError::field(&format!("{name}[{i}]"), "a block needs type and text")),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(ApiError::field(name, "must be a string or an array of content blocks")),
    }
}

fn stop_reason(f: &Finished) -> (&'static str, Value) {
    match &f.stop_reason {
        StopReason::Stop { text, .. } => ("stop_sequence", json!(text)),
        StopReason::MaxTokens | StopReason::ContextFull => ("max_tokens", Value::Null),
        // Only a server shutting down reports a cancelled reply (a client that cancels is
        // gone): the turn was interrupted and may be continued by sending it back.
        StopReason::Cancelled => ("pause_turn", Value::Null),
        StopReason::Eog { .. } | StopReason::Grammar { .. } => ("end_turn", Value::Null),
    }
}

fn message_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("msg_{t:016x}{n:04x}")
}

pub async fn messages(State(state): State<SharedState>, body: RequestBody) -> Result<Response> {
    let clock = TokenClock::start();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    match f.str("model")? {
        Some(m) if m.eq_ignore_ascii_case(&state.model.name) => {}
        Some(m) => {
            return Err(ApiError::not_found(format!(
                "model '{m}' is not served here; this server runs '{}'",
                state.model.name
            ))
            .into())
        }
        None => return Err(ApiError::field("model", "is required").into()),
    }
    let max_tokens =
        f.integer("max_tokens", 1, i64::from(u32::MAX))?.ok_or_else(|| ApiError::field("max_tokens", "is required"))?;
    // Anthropic's temperature range is [0, 1].
    f.number("temperature", 0.0, 1.0)?;
    let mut params = generate_params(&f, &state.model.tokenizer)?;
    params.max_tokens = Some(max_tokens as usize);
    params.stop = f.strings("stop_sequences", crate::params::MAX_STOPS)?;
    let mut messages = Vec::new();
    if let Some(system) = f.get("system") {
        messages.push(ChatMessage::system(text_of("system", system)?));
    }
    let list = match f.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(ApiError::field("messages", "must be a non-empty array").into()),
    };
    for (i, m) in list.iter().enumerate() {
        let name = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(ApiError::field(&format!("{name}.role"), format!("'{role}' is not user or assistant")).into());
        }
        let content = m.get("content").ok_or_else(|| ApiError::field(&format!("{name}.content"), "is required"))?;
        messages.push(ChatMessage::new(role, text_of(&format!("{name}.content"), content)?));
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let renderer =
        state.model.renderer.clone().ok_or_else(|| {
            ApiError::bad_request(format!("'{}' has no chat template (a base model)", state.model.name))
        })?;
    let prompt = tokio::task::spawn_blocking(move || renderer.render(&messages))
        .await
        .map_err(|e| ApiError::internal(format!("chat template: {e}")))?
        .map_err(|e| ApiError::field("messages", e))?;
    check_fits(prompt.len(), params.max_tokens, state.model.engine.context_size(), "max_tokens")?;
    let input_tokens = prompt.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stops = params.stop.clone();
    let guard = state.model.engine.submit(Submit { request: SeqRequest { prompt, params }, stops, events: tx }).await?;
    let id = message_id();
    let model = state.model.name.clone();
    let mut clock = clock;
    if !stream {
        let (text, f) = crate::engine::collect_text(&mut rx, &mut clock, &state.metrics).await?;
        drop(guard);
        let (reason, sequence) = stop_reason(&f);
        return Ok(Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": f.outcome.ids.len(),
                "cache_read_input_tokens": f.outcome.timings.cached_tokens,
            },
        }))
        .into_response());
    }
    let event = |name: &str, data: Value| SseEvent::default().event(name).data(data.to_string());
    let head = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 0},
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let body = stream::unfold(Some((rx, guard, clock)), move |s| {
        let state = state.clone();
        async move {
            let (mut rx, guard, mut clock) = s?;
            loop {
                match rx.recv().await {
                    Some(StreamEvent::Token(_)) => clock.tick(&state.metrics),
                    Some(StreamEvent::Text(t)) => {
                        let e = event("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": t}}));
                        return Some((vec![e], Some((rx, guard, clock))));
                    }
                    Some(StreamEvent::Done(f)) => {
                        drop(guard);
                        let (reason, sequence) = stop_reason(&f);
                        let out = vec![
                            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                            event("message_delta", json!({"type": "message_delta",
                                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                "usage": {"output_tokens": f.outcome.ids.len(),
                                          "cache_read_input_tokens": f.outcome.timings.cached_tokens}})),
                            event("message_stop", json!({"type": "message_stop"})),
                        ];
                        return Some((out, None));
                    }
                    Some(StreamEvent::Failed(e)) => {
                        let err = json!({"type": "error", "error": {"type": AnthropicError(e.clone()).kind(), "message": e.message}});
                        return Some((vec![event("error", err)], None));
                    }
                    None => {
                        let err = json!({"type": "error", "error": {"type": "api_error", "message": "the engine stopped"}});
                        return Some((vec![event("error", err)], None));
                    }
                }
            }
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok::<_, Infallible>)));
    Ok(Sse::new(stream::iter(head.into_iter().map(Ok)).chain(body)).into_response())
}
