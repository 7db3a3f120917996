//! OpenAI's API: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`.
//!
//! Wire format as in OpenAI's API reference: a non-streaming answer is one JSON object; a
//! streaming one is Server-Sent Events, one `chat.completion.chunk` per `data:` line, the
//! first carrying the role, the last the `finish_reason`, then (with
//! `stream_options.include_usage`) a chunk with `usage` and no choices, then `data: [DONE]`.
//! `n` > 1 runs n sequences at once; they share the prompt's cache.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use owl_engine::{GenerateParams, SeqRequest, TokenEvent};
use owl_tokenizer::{ChatMessage, Tokenizer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::chat::ReplySplit;
use crate::engine::{RequestGuard, StreamEvent, Submit};
use crate::error::ApiError;
use crate::fields::Fields;
use crate::metrics::TokenClock;
use crate::params::{check_fits, generate_params, json_body, openai_grammar, RequestBody, MAX_TOP_LOGPROBS};
use crate::tools::{openai_tools, ReplyParser, ReplyPiece};
use crate::{unix_now, Shared, SharedState};

/// Most choices one request may ask for.
const MAX_N: i64 = 8;

/// `system_fingerprint`: this build.
const FINGERPRINT: &str = concat!("owl-", env!("CARGO_PKG_VERSION"));

pub async fn models(State(registry): State<Shared>) -> Json<Value> {
    let data: Vec<Value> = registry.models.iter().map(model_object).collect();
    Json(json!({"object": "list", "data": data}))
}

/// One model; beyond OpenAI's fields, `owl` carries what `owl show --json` knows of it
/// (license, openness card) when the server was given it.
pub async fn model(State(registry): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let state = registry.select(Some(&id))?;
    let mut object = model_object(&state);
    if let Some(card) = &state.model.card {
        object["owl"] = card.clone();
    }
    Ok(Json(object))
}

fn model_object(state: &SharedState) -> Value {
    json!({"id": state.model.name, "object": "model", "created": state.model.created, "owned_by": "owl"})
}

/// A fresh id like OpenAI's (`chatcmpl-…`): unique within the process, unpredictable enough
/// across restarts.
fn completion_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{:016x}{n:04x}", t ^ n.rotate_left(32))
}

/// What one route asks of the engine, whatever its wire format.
struct Job {
    prompt: Vec<u32>,
    params: GenerateParams,
    n: usize,
    stream: bool,
    include_usage: bool,
    /// Started when the request arrived: time to first token and between tokens.
    clock: TokenClock,
    /// How a chat reply is split into reasoning, content and calls (`None`: all content).
    split: Option<ReplySplit>,
}

/// Reads `max_tokens` (or its newer name), `n`, `logprobs`/`top_logprobs`, `stream`.
fn common_fields(f: &Fields<'_>, params: &mut GenerateParams, chat: bool) -> Result<(usize, bool, bool), ApiError> {
    let limit = match f.integer("max_completion_tokens", 1, i64::from(u32::MAX))? {
        Some(n) => Some(n),
        None => f.integer("max_tokens", 1, i64::from(u32::MAX))?,
    };
    params.max_tokens = limit.map(|n| n as usize);
    let n = f.integer("n", 1, MAX_N)?.unwrap_or(1) as usize;
    if chat {
        let logprobs = f.bool("logprobs")?.unwrap_or(false);
        let top = f.integer("top_logprobs", 0, MAX_TOP_LOGPROBS)?.unwrap_or(0) as usize;
        if top > 0 && !logprobs {
            return Err(ApiError::field("top_logprobs", "needs logprobs: true"));
        }
        params.logprobs = logprobs;
        params.top_logprobs = top;
    } else if let Some(k) = f.integer("logprobs", 0, 5)? {
        // Legacy completions: `logprobs` is the number of alternatives (0 = the token only).
        params.logprobs = true;
        params.top_logprobs = k as usize;
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.object("stream_options")? {
        Some(o) => o.bool("include_usage")?.unwrap_or(false),
        None => false,
    };
    if include_usage && !stream {
        return Err(ApiError::field("stream_options", "only allowed with stream: true"));
    }
    Ok((n, stream, include_usage))
}

pub async fn chat_completions(State(registry): State<Shared>, body: RequestBody) -> Result<Response, ApiError> {
    let clock = TokenClock::start();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select(f.str("model")?)?;
    let messages = chat_messages(&f)?;
    let mut params = generate_params(&f, &state.model)?;
    let (n, stream, include_usage) = common_fields(&f, &mut params, true)?;
    let grammar = openai_grammar(&f)?;
    let tools = openai_tools(&f)?;
    let chat = crate::chat::render(&state, messages, &tools, "use /v1/completions with a plain prompt").await?;
    let field = if f.get("max_completion_tokens").is_some() { "max_completion_tokens" } else { "max_tokens" };
    check_fits(chat.ids.len(), params.max_tokens, state.model.engine.context_size(), field)?;
    match (grammar, chat.forced_call) {
        (Some(g), Some(_)) => {
            return Err(ApiError::field(
                g.field,
                "a forced tool call (tool_choice) and structured output cannot be combined",
            ))
        }
        (Some(g), None) => params.grammar = Some(state.compile_grammar(g.spec, g.field).await?),
        (None, Some(call)) => params.grammar = Some(state.compile_grammar(call, "tools").await?),
        (None, None) => {}
    }
    let job = Job { prompt: chat.ids, params, n, stream, include_usage, clock, split: chat.split };
    run(state, job, Dialect::Chat).await
}

/// `messages`: a non-empty array of `{role, content, ...}` with known roles.
fn chat_messages(f: &Fields<'_>) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match f.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(ApiError::field("messages", "must not be empty")),
        Some(_) => return Err(ApiError::field("messages", "must be an array of messages")),
        None => return Err(ApiError::field("messages", "is required")),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let name = format!("messages[{i}]");
            let message: ChatMessage =
                serde_json::from_value(m.clone()).map_err(|e| ApiError::field(&name, e.to_string()))?;
            match message.role.as_str() {
                "system" | "developer" | "user" | "assistant" | "tool" => Ok(message),
                other => Err(ApiError::field(
                    &format!("{name}.role"),
                    format!("'{other}' is not one of system, developer, user, assistant, tool"),
                )),
            }
        })
        .collect()
}

pub async fn completions(State(registry): State<Shared>, body: RequestBody) -> Result<Response, ApiError> {
    let clock = TokenClock::start();
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select(f.str("model")?)?;
    let tokenizer = state.model.tokenizer.clone();
    let prompt = completion_prompt(&f, &tokenizer)?;
    let mut params = generate_params(&f, &state.model)?;
    let (n, stream, include_usage) = common_fields(&f, &mut params, false)?;
    let grammar = openai_grammar(&f)?;
    let echo = f.bool("echo")?.unwrap_or(false);
    if echo && params.logprobs {
        return Err(ApiError::field("echo", "echo together with logprobs (prompt log-probabilities) is not supported"));
    }
    if let Some(suffix) = f.str("suffix")? {
        if !suffix.is_empty() {
            return Err(ApiError::field("suffix", "insertion (fill-in-the-middle) is not supported"));
        }
    }
    // OpenAI's legacy default is 16 tokens.
    params.max_tokens = params.max_tokens.or(Some(16));
    check_fits(prompt.len(), params.max_tokens, state.model.engine.context_size(), "max_tokens")?;
    if let Some(g) = grammar {
        params.grammar = Some(state.compile_grammar(g.spec, g.field).await?);
    }
    let echoed = if echo {
        tokenizer.decode(&prompt, false).map_err(|e| ApiError::field("prompt", e.to_string()))?
    } else {
        String::new()
    };
    let job = Job { prompt, params, n, stream, include_usage, clock, split: None };
    run(state, job, Dialect::Completion { echo: echoed }).await
}

/// `prompt`: a string, an array of one string, or an array of token ids.
fn completion_prompt(f: &Fields<'_>, tokenizer: &Tokenizer) -> Result<Vec<u32>, ApiError> {
    let encode = |text: &str| tokenizer.encode(text, true, false).map_err(|e| ApiError::field("prompt", e.to_string()));
    let ids = match f.get("prompt") {
        Some(Value::String(s)) => encode(s)?,
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
            encode(items[0].as_str().unwrap_or(""))?
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_number) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(id) if (id as usize) < tokenizer.vocab_size() => Ok(id as u32),
                _ => Err(ApiError::field(&format!("prompt[{i}]"), format!("{v} is not a token id of this model"))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::field("prompt", "one prompt per request: a string, [string] or [token ids]"))
        }
        Some(_) => return Err(ApiError::field("prompt", "must be a string or an array of token ids")),
        None => return Err(ApiError::field("prompt", "is required")),
    };
    if ids.is_empty() {
        return Err(ApiError::field("prompt", "encodes to no tokens"));
    }
    Ok(ids)
}

#[derive(Clone)]
enum Dialect {
    Chat,
    Completion { echo: String },
}

/// One choice's events, tagged with its index.
type Tagged = (usize, StreamEvent);

/// Submits the job's n sequences; their events arrive merged, tagged by choice.
async fn submit_all(
    state: &SharedState,
    job: &Job,
) -> Result<(mpsc::UnboundedReceiver<Tagged>, Vec<RequestGuard>), ApiError> {
    let (merged_tx, merged_rx) = mpsc::unbounded_channel();
    let mut guards = Vec::with_capacity(job.n);
    for index in 0..job.n {
        let mut params = job.params.clone();
        // n choices from one seed must differ: each gets the next seed.
        if let Some(seed) = params.sampling.seed.as_mut() {
            *seed = seed.wrapping_add(index as u64);
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let submit = Submit {
            request: SeqRequest { prompt: job.prompt.clone(), params },
            stops: job.params.stop.clone(),
            events: tx,
        };
        guards.push(state.model.engine.submit(submit).await?);
        let merged = merged_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if merged.send((index, event)).is_err() {
                    break;
                }
            }
        });
    }
    Ok((merged_rx, guards))
}

/// Per choice: the text, the logprob entries, and how it ended.
#[derive(Default)]
struct Choice {
    text: String,
    /// With a reply split: `<think>` sections, and the calls made.
    reasoning: String,
    calls: Vec<crate::tools::ToolCall>,
    logprobs: Vec<Value>,
    finish_reason: Option<&'static str>,
    completion_tokens: usize,
    prompt_tokens: usize,
    cached_tokens: usize,
}

async fn run(state: SharedState, job: Job, dialect: Dialect) -> Result<Response, ApiError> {
    let (mut events, guards) = submit_all(&state, &job).await?;
    let id = completion_id(if matches!(dialect, Dialect::Chat) { "chatcmpl" } else { "cmpl" });
    let created = unix_now();
    if job.stream {
        return Ok(stream_response(state, job, dialect, events, guards, id, created).into_response());
    }
    let tokenizer = state.model.tokenizer.clone();
    let mut choices: Vec<Choice> = (0..job.n).map(|_| Choice::default()).collect();
    let mut clocks: Vec<TokenClock> = (0..job.n).map(|_| job.clock.clone()).collect();
    let mut done = 0;
    while done < job.n {
        let Some((i, event)) = events.recv().await else {
            return Err(ApiError::internal("the engine stopped before the reply was complete"));
        };
        let c = &mut choices[i];
        match event {
            StreamEvent::Token(t) => {
                clocks[i].tick(&state.metrics);
                if job.params.logprobs {
                    c.logprobs.push(logprob_entry(&t, &tokenizer, &dialect));
                }
            }
            StreamEvent::Text(text) => c.text.push_str(&text),
            StreamEvent::Done(f) => {
                c.finish_reason = Some(f.stop_reason.finish_reason());
                c.completion_tokens = f.outcome.ids.len();
                c.prompt_tokens = f.outcome.prompt_ids.len();
                c.cached_tokens = f.outcome.timings.cached_tokens;
                done += 1;
            }
            StreamEvent::Failed(e) => return Err(e),
        }
    }
    drop(guards);
    if let Some(split) = job.split {
        for c in &mut choices {
            for piece in split.pieces(&std::mem::take(&mut c.text)) {
                match piece {
                    ReplyPiece::Content(t) => c.text.push_str(&t),
                    ReplyPiece::Reasoning(t) => c.reasoning.push_str(&t),
                    ReplyPiece::Call(call) => c.calls.push(call),
                }
            }
            if !c.calls.is_empty() && c.finish_reason == Some("stop") {
                c.finish_reason = Some("tool_calls");
            }
        }
    }
    let usage = usage(&choices);
    let body = match &dialect {
        Dialect::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": state.model.name,
            "system_fingerprint": FINGERPRINT,
            "choices": choices.iter().enumerate().map(|(i, c)| json!({
                "index": i,
                "message": chat_message(c),
                "logprobs": if job.params.logprobs { json!({"content": c.logprobs}) } else { Value::Null },
                "finish_reason": c.finish_reason,
            })).collect::<Vec<_>>(),
            "usage": usage,
        }),
        Dialect::Completion { echo } => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": state.model.name,
            "system_fingerprint": FINGERPRINT,
            "choices": choices.iter().enumerate().map(|(i, c)| json!({
                "index": i,
                "text": format!("{echo}{}", c.text),
                "logprobs": if job.params.logprobs { legacy_logprobs(&c.logprobs, echo.len()) } else { Value::Null },
                "finish_reason": c.finish_reason,
            })).collect::<Vec<_>>(),
            "usage": usage,
        }),
    };
    Ok(Json(body).into_response())
}

/// A chat choice's `message`: the content (`null` when the reply is only calls), the calls,
/// and the reasoning when there was any (`reasoning_content`, as DeepSeek's and vLLM's APIs
/// name it).
fn chat_message(c: &Choice) -> Value {
    let mut m = json!({"role": "assistant", "content": c.text});
    if !c.calls.is_empty() {
        m["tool_calls"] = c.calls.iter().map(crate::tools::ToolCall::openai).collect();
        if c.text.is_empty() {
            m["content"] = Value::Null;
        }
    }
    if !c.reasoning.is_empty() {
        m["reasoning_content"] = json!(c.reasoning);
    }
    m
}

/// A streamed chat choice's deltas for the pieces of its reply; `calls` counts the calls
/// of the choice so far (each call's `index`).
fn chat_deltas(pieces: Vec<ReplyPiece>, calls: &mut usize) -> Vec<Value> {
    pieces
        .into_iter()
        .map(|piece| match piece {
            ReplyPiece::Content(t) => json!({"content": t}),
            ReplyPiece::Reasoning(t) => json!({"reasoning_content": t}),
            ReplyPiece::Call(call) => {
                let mut entry = call.openai();
                entry["index"] = json!(*calls);
                *calls += 1;
                json!({"tool_calls": [entry]})
            }
        })
        .collect()
}

/// `usage`: the prompt counted once (the n choices share it), completions summed.
fn usage(choices: &[Choice]) -> Value {
    let prompt = choices.first().map_or(0, |c| c.prompt_tokens);
    let cached = choices.first().map_or(0, |c| c.cached_tokens);
    let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// One token's logprob entry: chat's `{token, logprob, bytes, top_logprobs}`; for the legacy
/// route the same object, reshaped at the end ([`legacy_logprobs`]).
fn logprob_entry(t: &TokenEvent, tokenizer: &Tokenizer, _dialect: &Dialect) -> Value {
    let top: Vec<Value> = t
        .top
        .iter()
        .map(|alt| {
            let bytes = tokenizer.token_bytes(alt.id).unwrap_or_default();
            json!({"token": String::from_utf8_lossy(&bytes), "logprob": alt.logprob, "bytes": bytes})
        })
        .collect();
    json!({
        "token": String::from_utf8_lossy(&t.bytes),
        "logprob": t.logprob,
        "bytes": t.bytes,
        "top_logprobs": top,
    })
}

/// The legacy completions shape: parallel arrays, and each alternative list as an object.
fn legacy_logprobs(entries: &[Value], text_start: usize) -> Value {
    let mut offset = text_start;
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for e in entries {
        let token = e["token"].as_str().unwrap_or_default();
        offsets.push(offset);
        offset += token.len();
        tokens.push(token.to_string());
        token_logprobs.push(e["logprob"].clone());
        let alts: serde_json::Map<String, Value> = e["top_logprobs"]
            .as_array()
            .map(|a| {
                a.iter().map(|x| (x["token"].as_str().unwrap_or_default().to_string(), x["logprob"].clone())).collect()
            })
            .unwrap_or_default();
        top.push(Value::Object(alts));
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets})
}

/// The SSE answer. The guards live in the stream: a client that disconnects drops the
/// stream, the guards cancel the sequences, and their slots are free within one step.
fn stream_response(
    state: SharedState,
    job: Job,
    dialect: Dialect,
    events: mpsc::UnboundedReceiver<Tagged>,
    guards: Vec<RequestGuard>,
    id: String,
    created: u64,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let tokenizer = state.model.tokenizer.clone();
    let model = state.model.name.clone();
    let chat = matches!(dialect, Dialect::Chat);
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let head = {
        let base =
            json!({"id": id, "object": object, "created": created, "model": model, "system_fingerprint": FINGERPRINT});
        Arc::new(base)
    };
    let chunk = {
        let head = head.clone();
        move |choices: Value| {
            let mut v = (*head).clone();
            v["choices"] = choices;
            SseEvent::default().data(v.to_string())
        }
    };
    let mut first: Vec<SseEvent> = Vec::new();
    for i in 0..job.n {
        match &dialect {
            Dialect::Chat => first.push(chunk(json!([{
                "index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null
            }]))),
            Dialect::Completion { echo } if !echo.is_empty() => first.push(chunk(json!([{
                "index": i, "text": echo, "logprobs": null, "finish_reason": null
            }]))),
            Dialect::Completion { .. } => {}
        }
    }
    let state_machine = StreamState {
        parsers: (0..job.n).map(|_| job.split.as_ref().map(ReplySplit::parser)).collect(),
        call_counts: vec![0; job.n],
        events,
        guards,
        choices: (0..job.n).map(|_| Choice::default()).collect(),
        pending_logprobs: vec![Vec::new(); job.n],
        clocks: (0..job.n).map(|_| job.clock.clone()).collect(),
        state: state.clone(),
        done: 0,
        finished: false,
    };
    let logprobs = job.params.logprobs;
    let include_usage = job.include_usage;
    let body = stream::unfold(state_machine, move |mut s| {
        let tokenizer = tokenizer.clone();
        let chunk = chunk.clone();
        let head = head.clone();
        let dialect = dialect.clone();
        async move {
            if s.finished {
                return None;
            }
            loop {
                let Some((i, event)) = s.events.recv().await else {
                    s.finished = true;
                    let error = json!({"error": {"message": "the engine stopped", "type": "server_error"}});
                    return Some((vec![SseEvent::default().data(error.to_string())], s));
                };
                match event {
                    StreamEvent::Token(t) => {
                        s.clocks[i].tick(&s.state.metrics);
                        if logprobs {
                            s.pending_logprobs[i].push(logprob_entry(&t, &tokenizer, &dialect));
                        }
                    }
                    StreamEvent::Text(text) => {
                        if let Some(parser) = s.parsers[i].as_mut() {
                            let mut pieces = Vec::new();
                            parser.push(&text, &mut pieces);
                            if pieces.is_empty() {
                                continue;
                            }
                            let out = s.split_chunks(i, pieces, logprobs, &chunk);
                            return Some((out, s));
                        }
                        let lp = std::mem::take(&mut s.pending_logprobs[i]);
                        let lp = if logprobs { json!({"content": lp}) } else { Value::Null };
                        let c = match dialect {
                            Dialect::Chat => {
                                json!([{"index": i, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}])
                            }
                            Dialect::Completion { .. } => {
                                json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": null}])
                            }
                        };
                        return Some((vec![chunk(c)], s));
                    }
                    StreamEvent::Done(f) => {
                        let c = &mut s.choices[i];
                        c.completion_tokens = f.outcome.ids.len();
                        c.prompt_tokens = f.outcome.prompt_ids.len();
                        c.cached_tokens = f.outcome.timings.cached_tokens;
                        let mut out = Vec::new();
                        let mut reason = f.stop_reason.finish_reason();
                        if let Some(mut parser) = s.parsers[i].take() {
                            let mut pieces = Vec::new();
                            parser.finish(&mut pieces);
                            out = s.split_chunks(i, pieces, logprobs, &chunk);
                            if parser.made_calls() && reason == "stop" {
                                reason = "tool_calls";
                            }
                        }
                        let lp = std::mem::take(&mut s.pending_logprobs[i]);
                        let lp = if logprobs { json!({"content": lp}) } else { Value::Null };
                        let last = match dialect {
                            Dialect::Chat => {
                                json!([{"index": i, "delta": {}, "logprobs": lp, "finish_reason": reason}])
                            }
                            Dialect::Completion { .. } => {
                                json!([{"index": i, "text": "", "logprobs": lp, "finish_reason": reason}])
                            }
                        };
                        out.push(chunk(last));
                        s.done += 1;
                        if s.done == s.choices.len() {
                            if include_usage {
                                let mut body = (*head).clone();
                                body["choices"] = json!([]);
                                body["usage"] = usage(&s.choices);
                                out.push(SseEvent::default().data(body.to_string()));
                            }
                            out.push(SseEvent::default().data("[DONE]"));
                            s.finished = true;
                            s.guards.clear();
                        }
                        return Some((out, s));
                    }
                    StreamEvent::Failed(e) => {
                        s.finished = true;
                        let error = json!({"error": {"message": e.message, "type": e.kind(), "code": e.code}});
                        return Some((vec![SseEvent::default().data(error.to_string())], s));
                    }
                }
            }
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    let body = stream::iter(first.into_iter().map(Ok)).chain(body);
    Sse::new(body)
}

struct StreamState {
    /// Per choice, the splitter of a chat reply into reasoning, content and calls.
    parsers: Vec<Option<ReplyParser>>,
    call_counts: Vec<usize>,
    events: mpsc::UnboundedReceiver<Tagged>,
    guards: Vec<RequestGuard>,
    choices: Vec<Choice>,
    pending_logprobs: Vec<Vec<Value>>,
    clocks: Vec<TokenClock>,
    state: SharedState,
    done: usize,
    finished: bool,
}

impl StreamState {
    /// One chunk per piece of choice `i`'s reply; the logprobs gathered so far go with the
    /// first.
    fn split_chunks(
        &mut self,
        i: usize,
        pieces: Vec<ReplyPiece>,
        logprobs: bool,
        chunk: &impl Fn(Value) -> SseEvent,
    ) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for delta in chat_deltas(pieces, &mut self.call_counts[i]) {
            let lp = if logprobs && out.is_empty() {
                json!({"content": std::mem::take(&mut self.pending_logprobs[i])})
            } else {
                Value::Null
            };
            out.push(chunk(json!([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": null}])));
        }
        out
    }
}

/// Most inputs one embeddings request may carry.
const MAX_EMBED_INPUTS: usize = 256;

/// `POST /v1/embeddings`: per input, the mean of the model's final hidden states (after its
/// final norm) over the input's tokens, L2-normalised. `input`: a string, an array of
/// strings, an array of token ids, or an array of such arrays; `encoding_format` `float`
/// (default) or `base64` (little-endian f32, as OpenAI's client asks for by default).
pub async fn embeddings(State(registry): State<Shared>, body: RequestBody) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let f = Fields::new(&body)?;
    let state = registry.select(f.str("model")?)?;
    let base64 = match f.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::field("encoding_format", format!("'{other}' is not float or base64"))),
    };
    let tokenizer = state.model.tokenizer.clone();
    let inputs = embedding_inputs(&f, &tokenizer)?;
    if let Some(d) = f.integer("dimensions", 1, i64::from(u32::MAX))? {
        let width = state.model.hidden_size;
        if d as usize != width {
            return Err(ApiError::field(
                "dimensions",
                format!("this model's embeddings have {width} dimensions, not {d}"),
            ));
        }
    }
    let n_ctx = state.model.engine.context_size();
    let mut data = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for (i, tokens) in inputs.into_iter().enumerate() {
        if tokens.len() > n_ctx {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::field(
                    &format!("input[{i}]"),
                    format!("{} tokens exceed the context of {n_ctx}", tokens.len()),
                )
            });
        }
        total += tokens.len();
        let v = state.model.engine.embed(tokens, state.model.lora.clone()).await?;
        let embedding = if base64 { Value::String(base64_f32(&v)) } else { json!(v) };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": state.model.name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }))
    .into_response())
}

fn embedding_inputs(f: &Fields<'_>, tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |name: &str, text: &str| -> Result<Vec<u32>, ApiError> {
        let ids = tokenizer.encode(text, true, false).map_err(|e| ApiError::field(name, e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::field(name, "encodes to no tokens"));
        }
        Ok(ids)
    };
    let ids_of = |name: &str, items: &[Value]| -> Result<Vec<u32>, ApiError> {
        if items.is_empty() {
            return Err(ApiError::field(name, "must not be empty"));
        }
        items
            .iter()
            .map(|v| match v.as_u64() {
                Some(id) if (id as usize) < tokenizer.vocab_size() => Ok(id as u32),
                _ => Err(ApiError::field(name, format!("{v} is not a token id of this model"))),
            })
            .collect()
    };
    let inputs = match f.get("input") {
        None => return Err(ApiError::field("input", "is required")),
        Some(Value::String(s)) => vec![encode("input", s)?],
        Some(Value::Array(items)) if items.is_empty() => return Err(ApiError::field("input", "must not be empty")),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => vec![ids_of("input", items)?],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let name = format!("input[{i}]");
                match item {
                    Value::String(s) => encode(&name, s),
                    Value::Array(ids) => ids_of(&name, ids),
                    _ => Err(ApiError::field(&name, "must be a string or an array of token ids")),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::field("input", "must be a string or an array")),
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::field("input", format!("at most {MAX_EMBED_INPUTS} inputs, got {}", inputs.len())));
    }
    Ok(inputs)
}

/// Standard base64 (RFC 4648, with padding) of the little-endian bytes of `v`.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // 1.0f32 = 00 00 80 3f; 0.5 = 00 00 00 3f.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 0.5]), "AACAPwAAAD8=");
        assert_eq!(base64_f32(&[]), "");
    }
}
