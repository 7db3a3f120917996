//! Anthropic's Messages API: `POST /v1/messages`, streamed as Anthropic streams it
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta` with the stop reason and usage, `message_stop`),
//! errors as `{"type":"error","error":{"type","message"}}`; tools as `tool_use` /
//! `tool_result` blocks and `tool_choice` (`auto`, `any`, `tool`, `none`), reasoning as
//! `thinking` blocks. The key may come as
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

use crate::chat::ReplySplit;
use crate::engine::{Finished, StreamEvent, Submit};
use crate::error::ApiError;
use crate::fields::Fields;
use crate::metrics::TokenClock;
use crate::params::{check_fits, generate_params, json_body, RequestBody};
use crate::tools::{anthropic_tools, ReplyParser, ReplyPiece, ToolCall};
use crate::Shared;

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

/// Text of a `content`: a string, or text blocks.
fn text_of(name: &str, v: &Value) -> std::result::Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                out.push(block_text(&format!("{name}[{i}]"), b)?);
            }
            Ok(out.join("\n"))
        }
        _ => Err(ApiError::field(name, "must be a string or an array of content blocks")),
    }
}

fn block_text<'a>(name: &str, b: &'a Value) -> std::result::Result<&'a str, ApiError> {
    match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
        (Some("text"), Some(t)) => Ok(t),
        (Some("text"), None) => Err(ApiError::field(&format!("{name}.text"), "is required (a string)")),
        (Some(kind), _) => {
            Err(ApiError::field(&format!("{name}.type"), format!("'{kind}' blocks are not supported here")))
        }
        _ => Err(ApiError::field(&format!("{name}.type"), "is required")),
    }
}

/// One Anthropic message as chat turns. A user message's `tool_result` blocks become tool
/// turns (before its text, as Anthropic orders them); an assistant message's `tool_use`
/// blocks become its calls, and its `thinking` blocks are dropped (templates drop earlier
/// reasoning too).
fn turns_of(name: &str, role: &str, content: &Value, out: &mut Vec<ChatMessage>) -> std::result::Result<(), ApiError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(ChatMessage::new(role, s.clone()));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(ApiError::field(name, "must be a string or an array of content blocks")),
    };
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("{name}[{i}]");
        match (role, b.get("type").and_then(Value::as_str)) {
            (_, Some("text")) => text.push(block_text(&at, b)?),
            ("user", Some("tool_result")) => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::field(&format!("{at}.tool_use_id"), "is required (a string)"))?;
                let mut result = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(&format!("{at}.content"), c)?,
                };
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    result = format!("Error: {result}");
                }
                out.push(ChatMessage::tool(result, Some(id.to_string()), None));
            }
            ("assistant", Some("tool_use")) => {
                let field = |k: &str| {
                    b.get(k)
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::field(&format!("{at}.{k}"), "is required (a string)"))
                };
                let input = match b.get("input") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => return Err(ApiError::field(&format!("{at}.input"), "is required (an object)")),
                };
                calls.push(json!({"id": field("id")?, "type": "function",
                    "function": {"name": field("name")?, "arguments": input}}));
            }
            ("assistant", Some("thinking" | "redacted_thinking")) => {}
            (_, Some(kind)) => {
                return Err(ApiError::field(
                    &format!("{at}.type"),
                    format!("'{kind}' blocks are not supported in a {role} message"),
                ))
            }
            (_, None) => return Err(ApiError::field(&format!("{at}.type"), "is required")),
        }
    }
    if !text.is_empty() || !calls.is_empty() {
        let mut m = ChatMessage::new(role, text.join("\n"));
        if !calls.is_empty() {
            m.tool_calls = Some(Value::Array(calls));
        }
        out.push(m);
    }
    Ok(())
}

/// An Anthropic tool-use id for a call (`toolu_`, as Anthropic's are).
fn tool_use(call: &ToolCall) -> Value {
    let id = call.id.replacen("call_", "toolu_", 1);
    json!({"type": "tool_use", "id": id, "name": call.name, "input": call.arguments})
}

/// The stop reason (`tool_use` when the model called tools and stopped of itself).
fn stop_reason(f: &Finished, made_calls: bool) -> (&'static str, Value) {
    match &f.stop_reason {
        StopReason::Eog { .. } | StopReason::Grammar { .. } if made_calls => ("tool_use", Value::Null),
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

pub async fn messages(State(registry): State<Shared>, body: RequestBody) -> Result<Response> {
    let clock = TokenClock::start();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select_required(f.str("model")?)?;
    let max_tokens =
        f.integer("max_tokens", 1, i64::from(u32::MAX))?.ok_or_else(|| ApiError::field("max_tokens", "is required"))?;
    // Anthropic's temperature range is [0, 1].
    f.number("temperature", 0.0, 1.0)?;
    let mut params = generate_params(&f, &state.model)?;
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
        turns_of(&format!("{name}.content"), role, content, &mut messages)?;
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let tools = anthropic_tools(&f)?;
    let chat = crate::chat::render(&state, messages, &tools, "this route needs a chat model").await?;
    check_fits(chat.ids.len(), params.max_tokens, state.model.engine.context_size(), "max_tokens")?;
    if let Some(call) = chat.forced_call {
        params.grammar = Some(state.compile_grammar(call, "tool_choice").await?);
    }
    let prompt = chat.ids;
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
        let pieces = match &chat.split {
            Some(split) => split.pieces(&text),
            None => vec![ReplyPiece::Content(text)],
        };
        let made_calls = pieces.iter().any(|p| matches!(p, ReplyPiece::Call(_)));
        let mut content: Vec<Value> = Vec::new();
        for piece in pieces {
            let (kind, key, text) = match piece {
                ReplyPiece::Call(call) => {
                    content.push(tool_use(&call));
                    continue;
                }
                ReplyPiece::Content(t) => ("text", "text", t),
                ReplyPiece::Reasoning(t) => ("thinking", "thinking", t),
            };
            match content.last_mut() {
                Some(last) if last["type"] == kind => {
                    let joined = format!("{}{text}", last[key].as_str().unwrap_or_default());
                    last[key] = json!(joined);
                }
                _ if kind == "thinking" => content.push(json!({"type": "thinking", "thinking": text, "signature": ""})),
                _ => content.push(json!({"type": "text", "text": text})),
            }
        }
        if content.is_empty() {
            content.push(json!({"type": "text", "text": ""}));
        }
        let (reason, sequence) = stop_reason(&f, made_calls);
        return Ok(Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": f.outcome.ids.len(),
                "cache_read_input_tokens": f.outcome.timings.cached_tokens,
            },
        }))
        .into_response());
    }
    let head = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 0},
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let parser = chat.split.as_ref().map(ReplySplit::parser);
    let blocks = Blocks { open: None, next: 0 };
    let body = stream::unfold(Some((rx, guard, clock, parser, blocks)), move |s| {
        let state = state.clone();
        async move {
            let (mut rx, guard, mut clock, mut parser, mut blocks) = s?;
            loop {
                match rx.recv().await {
                    Some(StreamEvent::Token(_)) => clock.tick(&state.metrics),
                    Some(StreamEvent::Text(t)) => {
                        let pieces = match &mut parser {
                            Some(p) => {
                                let mut pieces = Vec::new();
                                p.push(&t, &mut pieces);
                                pieces
                            }
                            None => vec![ReplyPiece::Content(t)],
                        };
                        let mut out = Vec::new();
                        for piece in pieces {
                            blocks.piece(piece, &mut out);
                        }
                        if !out.is_empty() {
                            return Some((out, Some((rx, guard, clock, parser, blocks))));
                        }
                    }
                    Some(StreamEvent::Done(f)) => {
                        drop(guard);
                        let mut out = Vec::new();
                        if let Some(p) = &mut parser {
                            let mut pieces = Vec::new();
                            p.finish(&mut pieces);
                            for piece in pieces {
                                blocks.piece(piece, &mut out);
                            }
                        }
                        if blocks.next == 0 {
                            blocks.piece(ReplyPiece::Content(String::new()), &mut out);
                        }
                        blocks.close(&mut out);
                        let made_calls = parser.as_ref().is_some_and(ReplyParser::made_calls);
                        let (reason, sequence) = stop_reason(&f, made_calls);
                        out.push(event("message_delta", json!({"type": "message_delta",
                            "delta": {"stop_reason": reason, "stop_sequence": sequence},
                            "usage": {"output_tokens": f.outcome.ids.len(),
                                      "cache_read_input_tokens": f.outcome.timings.cached_tokens}})));
                        out.push(event("message_stop", json!({"type": "message_stop"})));
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

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// The content blocks of a streamed message: a block opens when a piece of another kind
/// arrives, text and thinking stream as deltas, and a tool call is one block whose input
/// arrives whole in one `input_json_delta`.
struct Blocks {
    /// The kind of the open block ("text" or "thinking").
    open: Option<&'static str>,
    /// The index the next block gets.
    next: usize,
}

impl Blocks {
    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if self.open.take().is_some() {
            out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": self.next - 1})));
        }
    }

    fn start(&mut self, block: Value, out: &mut Vec<SseEvent>) {
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.next += 1;
    }

    fn piece(&mut self, piece: ReplyPiece, out: &mut Vec<SseEvent>) {
        let (kind, delta) = match piece {
            ReplyPiece::Call(call) => {
                self.close(out);
                let mut block = tool_use(&call);
                let input = std::mem::replace(&mut block["input"], json!({}));
                let index = self.next;
                self.start(block, out);
                out.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                ));
                out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
                return;
            }
            ReplyPiece::Content(t) => ("text", json!({"type": "text_delta", "text": t})),
            ReplyPiece::Reasoning(t) => ("thinking", json!({"type": "thinking_delta", "thinking": t})),
        };
        if self.open != Some(kind) {
            self.close(out);
            let block = if kind == "text" {
                json!({"type": "text", "text": ""})
            } else {
                json!({"type": "thinking", "thinking": "", "signature": ""})
            };
            self.start(block, out);
            self.open = Some(kind);
        }
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        ));
    }
}
