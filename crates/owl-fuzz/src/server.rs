//! The `server_request` target: arbitrary request bodies against every POST route of
//! owl-server's router, served by the real engine thread and scheduler over a toy model
//! (deterministic logits, a 64-token context), so that whatever a body asks for runs to the
//! end in microseconds.
//!
//! Input: `PATH\nBODY` where PATH is one of [`ROUTES`], or any bytes (the first byte picks
//! the route, all of it is the body). Property: an answer always comes, never a 5xx; every
//! error is a JSON object naming the problem; a streamed answer ends the way its dialect
//! ends a stream.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use owl_engine::{BatchModel, LoraSet, ModelError, Scheduler, SchedulerConfig};
use owl_models::Batch;
use owl_server::{ChatRenderer, EngineHandle, ModelDetails, Registry, ServedModel, ServerOptions};
use owl_tokenizer::{ChatMessage, Tokenizer};
use tower::ServiceExt;

/// The POST routes, in the order the first byte of a raw input picks them.
pub const ROUTES: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/show",
];

/// Largest body the fuzzed server accepts (413 beyond), as `--max-body-bytes`.
const MAX_BODY: usize = 64 << 10;

/// Positions per slot: small, so that any `max_tokens` the server allows ends quickly.
const CONTEXT: usize = 64;

/// A model whose next-token scores depend only on the last token and its position: enough
/// for the scheduler, the samplers, stop strings and the detokenizer to run for real.
struct ToyModel {
    vocab: usize,
    slots: Vec<Vec<u32>>,
}

impl ToyModel {
    fn logits_after(&self, token: u32, position: usize, out: &mut [f32]) {
        for (v, l) in out.iter_mut().enumerate() {
            let h = (token as usize).wrapping_mul(31) ^ position.wrapping_mul(7) ^ v.wrapping_mul(13);
            *l = (h % 97) as f32 / 8.0;
        }
    }
}

impl BatchModel for ToyModel {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn context_size(&self) -> usize {
        CONTEXT
    }

    fn n_slots(&self) -> usize {
        self.slots.len()
    }

    fn max_batch_tokens(&self) -> usize {
        32
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.slots[slot].len()
    }

    fn truncate(&mut self, slot: usize, n: usize) -> usize {
        self.slots[slot].truncate(n);
        self.slots[slot].len()
    }

    fn copy_prefix(&mut self, src: usize, dst: usize, len: usize) -> bool {
        let prefix = self.slots[src][..len.min(self.slots[src].len())].to_vec();
        self.slots[dst] = prefix;
        true
    }

    fn hidden_size(&self) -> usize {
        8
    }

    fn embed(
        &mut self,
        slot: usize,
        tokens: &[u32],
        _lora: Option<&Arc<LoraSet>>,
        mean: &mut [f32],
    ) -> Result<(), ModelError> {
        self.slots[slot].clear();
        for (i, m) in mean.iter_mut().enumerate() {
            *m = tokens.iter().map(|&t| ((t as usize + i) % 5) as f32).sum::<f32>() / tokens.len().max(1) as f32;
        }
        Ok(())
    }

    fn forward(&mut self, batch: &Batch, logits: &mut [f32]) -> Result<(), ModelError> {
        let mut row = 0;
        for t in 0..batch.len() {
            let (slot, token, position) = (batch.seqs()[t], batch.tokens()[t], batch.positions()[t]);
            if position != self.slots[slot].len() || position >= CONTEXT {
                return Err(format!("slot {slot}: position {position} after {}", self.slots[slot].len()).into());
            }
            self.slots[slot].push(token);
            if batch.wants_logits()[t] {
                let out = &mut logits[row * self.vocab..(row + 1) * self.vocab];
                self.logits_after(token, position, out);
                row += 1;
            }
        }
        Ok(())
    }
}

/// `role: content` lines and an assistant cue, through the tokenizer.
struct PlainRenderer(Arc<Tokenizer>);

impl ChatRenderer for PlainRenderer {
    fn render(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<Vec<u32>, String> {
        let mut text = String::new();
        if let Some(tools) = tools {
            text.push_str(&format!("tools: {tools}\n"));
        }
        for m in messages {
            text.push_str(&format!("{}: {}\n", m.role, m.content));
        }
        text.push_str("assistant:");
        self.0.encode(&text, false, false).map_err(|e| e.to_string())
    }

    fn template_source(&self) -> &str {
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let [_, byte_level] = crate::toy_vocabularies();
        let tokenizer = Arc::new(Tokenizer::from_gguf_vocab(&byte_level).expect("the toy vocabulary builds"));
        let model = ToyModel { vocab: tokenizer.vocab_size(), slots: vec![Vec::new(); 2] };
        let scheduler = Scheduler::new(model, SchedulerConfig { max_batch_tokens: 32, max_queue: 4 })
            .expect("the toy scheduler starts");
        let engine = EngineHandle::start(scheduler, tokenizer.clone()).expect("the engine thread starts");
        let model = ServedModel {
            name: "toy".into(),
            aliases: Vec::new(),
            tokenizer: tokenizer.clone(),
            renderer: Some(Arc::new(PlainRenderer(tokenizer))),
            engine,
            hidden_size: 8,
            details: ModelDetails::default(),
            created: 0,
            card: None,
            lora: None,
        };
        let options = ServerOptions { max_body_bytes: MAX_BODY, ..ServerOptions::default() };
        let registry = Registry::new(vec![model], options).expect("one model");
        let router = owl_server::router(registry);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Harness { runtime, router }
    })
}

/// Splits an input into a route and a body.
fn route_and_body(data: &[u8]) -> (&'static str, &[u8]) {
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        if let Some(route) = ROUTES.iter().find(|r| r.as_bytes() == &data[..nl]) {
            return (route, &data[nl + 1..]);
        }
    }
    (ROUTES[data.first().map_or(0, |&b| b as usize % ROUTES.len())], data)
}

/// One request body on one route (see the module docs).
pub fn server_request(data: &[u8]) {
    let (route, body) = route_and_body(data);
    let h = harness();
    let request = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request");
    let (status, bytes) = h.runtime.block_on(async {
        let response = h.router.clone().oneshot(request).await.expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("the whole answer");
        (status, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(!status.is_server_error(), "{route}: {status}: {text}");
    if status != StatusCode::OK {
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{route}: {status}: {e}: {text}"));
        assert!(v.get("error").is_some(), "{route}: {status} without an error: {text}");
        return;
    }
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    if text.starts_with("data: ") || text.starts_with("event: ") {
        // Server-sent events: OpenAI's end with [DONE], Anthropic's with message_stop.
        assert!(last == "data: [DONE]" || last.contains("message_stop"), "{route}: a stream ends with {last:?}");
        assert!(!text.contains("\"error\""), "{route}: a stream failed: {text}");
    } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        assert!(v.get("error").is_none(), "{route}: 200 with an error: {text}");
    } else {
        // NDJSON (Ollama's streams): every line an object, the last one done.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{route}: {e}: {line}"));
            assert!(v.get("error").is_none(), "{route}: {line}");
        }
        let v: serde_json::Value = serde_json::from_str(last).expect("checked above");
        assert_eq!(v["done"], serde_json::json!(true), "{route}: an NDJSON stream ends with {last}");
    }
}
