//! owl-server: the HTTP APIs that existing clients speak, over the owl engine.
//!
//! - [`engine`]: the engine thread (a continuous-batching `Scheduler`) and its handle;
//! - [`openai`]: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`;
//! - [`anthropic`]: `/v1/messages` (Anthropic's Messages API);
//! - [`ollama`]: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/show`, ...;
//! - [`error`]: OpenAI's error object with the right status for every failure;
//! - [`metrics`]: `/metrics` (Prometheus) and one log line per request;
//! - [`webui`]: the chat page at `/` (static files built in, a strict CSP);
//! - this file: the router, the models served ([`Registry`]), API-key check, CORS, body
//!   limit, `/health`.
//!
//! The server translates; the engine decides. Handlers turn a request into prompt ids and
//! [`owl_engine::GenerateParams`], submit it to the engine thread and stream its events
//! back in their own wire format. Nothing is kept between requests but the engine's prefix
//! cache, which changes no answer, so replicas can stand behind any load balancer.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod anthropic;
pub mod chat;
pub mod engine;
pub mod error;
mod fields;
pub mod metrics;
pub mod ollama;
pub mod openai;
mod params;
pub mod tools;
mod webui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use owl_engine::{Constraint, GrammarCompiler, GrammarError, GrammarSpec};
use owl_tokenizer::{ChatMessage, Tokenizer};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use engine::EngineHandle;
pub use error::ApiError;

/// Turns a conversation into the prompt ids of the assistant's next turn (the model's chat
/// template, rendered with the same limits as `owl run`).
pub trait ChatRenderer: Send + Sync {
    /// `tools`: OpenAI's `tools` array for the template (`None`: no tools offered).
    fn render(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<Vec<u32>, String>;

    /// The template's source (the tool-call format and `<think>` support are read from it).
    fn template_source(&self) -> &str;
}

/// A model a server runs.
pub struct ServedModel {
    /// The name clients use (`model` field) and `/v1/models` lists.
    pub name: String,
    /// Other names a request may give for it (the store's `name:tag`, the file's stem).
    pub aliases: Vec<String>,
    pub tokenizer: Arc<Tokenizer>,
    /// `None`: a base model without a chat template; chat routes answer 400.
    pub renderer: Option<Arc<dyn ChatRenderer>>,
    pub engine: EngineHandle,
    /// Width of the embeddings (`/v1/embeddings`).
    pub hidden_size: usize,
    /// What `/api/tags` and `/api/show` report.
    pub details: ModelDetails,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    /// What `owl show --json` says about it (license, openness card), for `/v1/models/{id}`
    /// and the chat page's model panel.
    pub card: Option<serde_json::Value>,
    /// LoRA adapters its requests run with: a `BASE+ADAPTER` model shares the base's
    /// engine, so its sequences batch with the base's and with other adapters'.
    pub lora: Option<Arc<owl_engine::LoraSet>>,
}

/// Facts about the served model's file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDetails {
    /// `gguf` or `safetensors`.
    pub format: String,
    /// The architecture (`llama`, `gemma3`, `qwen2`, ...).
    pub family: String,
    /// Parameters, e.g. `135M`.
    pub parameter_size: String,
    pub parameters: u64,
    /// The file type as llama.cpp names it without `MOSTLY_` (`Q4_1`), when the file says.
    pub quantization_level: String,
    /// Bytes of the weight file(s).
    pub size: u64,
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Required on every route but `/health` (Bearer, or `x-api-key`).
    pub api_key: Option<String>,
    /// Origins allowed by CORS; empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Serve the chat page at `/` (off: `--no-webui`).
    pub webui: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { api_key: None, cors_origins: Vec::new(), max_body_bytes: 8 << 20, webui: true }
    }
}

/// What a handler sees of the model a request names.
pub struct AppState {
    pub model: ServedModel,
    pub options: ServerOptions,
    /// The server's metrics, shared by every model.
    pub metrics: Arc<metrics::Metrics>,
    /// The grammar compiler for the model's vocabulary, built by the first request that
    /// asks for structured output (a few hundred milliseconds for a large vocabulary, which
    /// a server that never sees one should not pay at start).
    grammar: tokio::sync::OnceCell<Result<Arc<GrammarCompiler>, GrammarError>>,
    /// How the model writes tool calls (read from its chat template).
    pub tool_format: tools::ToolFormat,
    /// The template knows `<think>` sections: replies are split into reasoning and content.
    pub think: bool,
}

impl AppState {
    pub fn new(model: ServedModel, options: ServerOptions, metrics: Arc<metrics::Metrics>) -> Self {
        let source = model.renderer.as_ref().map_or("", |r| r.template_source());
        let tool_format = tools::ToolFormat::detect(source);
        let think = source.contains("</think>");
        AppState { model, options, metrics, grammar: tokio::sync::OnceCell::new(), tool_format, think }
    }

    /// `spec` compiled for the served model, off the async workers. A grammar that does not
    /// compile is a 400 naming `field`, the request parameter it came from.
    pub async fn compile_grammar(&self, spec: GrammarSpec, field: &str) -> Result<Constraint, ApiError> {
        let compiler = self
            .grammar
            .get_or_init(|| async {
                let tokenizer = self.model.tokenizer.clone();
                let vocab = self.model.engine.vocab_size();
                tokio::task::spawn_blocking(move || GrammarCompiler::new(tokenizer, vocab).map(Arc::new))
                    .await
                    .unwrap_or_else(|e| Err(GrammarError::Setup(e.to_string())))
            })
            .await
            .clone()
            .map_err(|e| match e {
                GrammarError::NoEndOfGeneration => ApiError::field(field, e.to_string()),
                other => ApiError::internal(other.to_string()),
            })?;
        tokio::task::spawn_blocking(move || compiler.compile(&spec))
            .await
            .map_err(|e| ApiError::internal(format!("compiling the grammar: {e}")))?
            .map_err(|e| match e {
                GrammarError::Invalid { .. } | GrammarError::NoEndOfGeneration => ApiError::field(field, e.to_string()),
                other => ApiError::internal(other.to_string()),
            })
    }
}

pub type SharedState = Arc<AppState>;

/// Every model a server runs; a request picks one by its `model` field.
pub struct Registry {
    /// In the order given; the first answers requests that name no model.
    pub models: Vec<SharedState>,
    pub options: ServerOptions,
    pub metrics: Arc<metrics::Metrics>,
}

pub type Shared = Arc<Registry>;

impl Registry {
    /// At least one model; names (and aliases) must not collide.
    pub fn new(models: Vec<ServedModel>, options: ServerOptions) -> Result<Registry, String> {
        if models.is_empty() {
            return Err("a server needs at least one model".into());
        }
        let mut seen: Vec<String> = Vec::new();
        for m in &models {
            let name = m.name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(format!("two models are called '{}'; give each its own name", m.name));
            }
            seen.push(name);
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let models = models.into_iter().map(|m| Arc::new(AppState::new(m, options.clone(), metrics.clone()))).collect();
        Ok(Registry { models, options, metrics })
    }

    /// The model a request names: its name or an alias, in any letter case, with or without
    /// Ollama's `:latest`; `None` (no `model` field) is the first model.
    pub fn select(&self, requested: Option<&str>) -> Result<SharedState, ApiError> {
        let Some(wanted) = requested else { return Ok(self.models[0].clone()) };
        self.find(wanted).ok_or_else(|| ApiError {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..ApiError::not_found(format!("model '{wanted}' is not served here; this server runs {}", self.names()))
        })
    }

    /// As [`Registry::select`], for APIs where `model` is required (Ollama, Anthropic).
    pub fn select_required(&self, requested: Option<&str>) -> Result<SharedState, ApiError> {
        match requested {
            None => Err(ApiError::field("model", "is required")),
            some => self.select(some),
        }
    }

    pub fn find(&self, wanted: &str) -> Option<SharedState> {
        let matches = |name: &str| {
            name.eq_ignore_ascii_case(wanted)
                || wanted.strip_suffix(":latest").is_some_and(|w| name.eq_ignore_ascii_case(w))
                || name.strip_suffix(":latest").is_some_and(|n| n.eq_ignore_ascii_case(wanted))
        };
        self.models.iter().find(|s| matches(&s.model.name) || s.model.aliases.iter().any(|a| matches(a))).cloned()
    }

    /// `'a', 'b'` for messages.
    pub fn names(&self) -> String {
        self.models.iter().map(|s| format!("'{}'", s.model.name)).collect::<Vec<_>>().join(", ")
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The router with every route and layer.
pub fn router(registry: Registry) -> Router {
    let cors = cors_layer(&registry.options.cors_origins);
    let limit = registry.options.max_body_bytes;
    let webui = registry.options.webui;
    let state = Arc::new(registry);
    let api: Router<Shared> = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/metrics", get(metrics::metrics))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate_route))
        .route("/api/embed", post(ollama::embed))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    let mut router = Router::new().route("/health", get(health)).merge(api);
    if webui {
        router = router.merge(webui::routes());
    }
    let router = router
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::observe))
        .fallback(not_found)
        .layer(middleware::from_fn(close_if_body_unread))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let allow = if origins.iter().any(|o| o == "*") { AllowOrigin::any() } else { AllowOrigin::list(list) };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, "x-api-key".parse().expect("header name")]),
    )
}

async fn require_api_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.options.api_key {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let given = bearer.or(x_api_key).map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            params::discard_body(request.into_body(), state.options.max_body_bytes).await;
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed
/// key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A response given before its request body was read to the end leaves the rest of that
/// body on the connection, where hyper cannot parse the next request: it closes the
/// connection after the response. Without a word, a client that reuses the kept-alive
/// connection finds it gone ("Server disconnected without sending a response"), so such
/// responses say `Connection: close`. Early answers (401, 404) read and drop the body within
/// bounds first ([`params::discard_body`]), which keeps the connection; a 413 always closes.
async fn close_if_body_unread(request: Request, next: Next) -> Response {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let tracked = ended.clone();
    let request = request.map(|inner| axum::body::Body::new(TrackedBody { inner, ended: tracked }));
    let mut response = next.run(request).await;
    if !ended.load(Ordering::Acquire) || response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct TrackedBody {
    inner: axum::body::Body,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn health(State(state): State<Shared>) -> impl IntoResponse {
    let names: Vec<&str> = state.models.iter().map(|m| m.model.name.as_str()).collect();
    (StatusCode::OK, Json(json!({"status": "ok", "model": names[0], "models": names})))
}

async fn not_found(State(state): State<Shared>, request: Request) -> ApiError {
    let error = ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()));
    params::discard_body(request.into_body(), state.options.max_body_bytes).await;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
