//! `GET /metrics` in Prometheus' text format, and one structured log line per request.
//!
//! Counters are atomics updated by a middleware (requests by route and status, duration)
//! and by the generation handlers (time to first token, time between tokens); the engine's
//! own numbers (queue depth, active sequences, tokens, prefix-cache hits) are read from its
//! gauges when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Shared;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything `/metrics` reports beyond the engine's gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status) → requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub request_duration: Histogram,
    pub time_to_first_token: Histogram,
    pub inter_token: Histogram,
}

impl Metrics {
    fn count(&self, route: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }
}

/// Times one generation's tokens for the histograms.
#[derive(Debug, Clone)]
pub struct TokenClock {
    started: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    pub fn start() -> Self {
        TokenClock::start_at(Instant::now())
    }

    /// A clock for a request that arrived at `started`.
    pub fn start_at(started: Instant) -> Self {
        TokenClock { started, last: None }
    }

    /// A token arrived.
    pub fn tick(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        match self.last {
            None => metrics.time_to_first_token.observe(now - self.started),
            Some(last) => metrics.inter_token.observe(now - last),
        }
        self.last = Some(now);
    }
}

/// Counts and logs every request: one JSON line on stderr with method, route, status and
/// milliseconds (never the body or the key).
pub async fn observe(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.count(&route, status);
    state.metrics.request_duration.observe(elapsed);
    let line = serde_json::json!({
        "ts": crate::unix_now(),
        "method": method.as_str(),
        "route": route,
        "status": status,
        "ms": (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
    });
    eprintln!("{line}");
    response
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    let mut out = String::new();
    let m = &state.metrics;
    let _ = writeln!(
        out,
        "# HELP owl_requests_total HTTP requests by route and status.\n# TYPE owl_requests_total counter"
    );
    if let Ok(map) = m.requests.lock() {
        for ((route, status), n) in map.iter() {
            let _ = writeln!(out, "owl_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
    }
    // Totals over every model served.
    let mut stats = owl_engine::SchedulerStats::default();
    let (mut failures, mut queued, mut active, mut slots) = (0u64, 0usize, 0usize, 0usize);
    for served in &state.models {
        let gauges = served.model.engine.gauges();
        let s = gauges.stats.lock().map(|s| *s).unwrap_or_default();
        stats.steps += s.steps;
        stats.admitted += s.admitted;
        stats.finished += s.finished;
        stats.prompt_tokens += s.prompt_tokens;
        stats.cached_prompt_tokens += s.cached_prompt_tokens;
        stats.generated_tokens += s.generated_tokens;
        failures += gauges.failures.load(Ordering::Relaxed);
        queued += gauges.queued.load(Ordering::Relaxed);
        active += gauges.active.load(Ordering::Relaxed);
        slots += served.model.engine.slots();
    }
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    counter(&mut out, "owl_prompt_tokens_total", "Prompt tokens of admitted requests.", stats.prompt_tokens);
    counter(
        &mut out,
        "owl_prompt_tokens_cached_total",
        "Prompt tokens served from the prefix cache instead of computed.",
        stats.cached_prompt_tokens,
    );
    counter(&mut out, "owl_generated_tokens_total", "Tokens generated.", stats.generated_tokens);
    counter(&mut out, "owl_sequences_finished_total", "Sequences that ended.", stats.finished);
    counter(&mut out, "owl_engine_steps_total", "Batched forward steps.", stats.steps);
    counter(&mut out, "owl_engine_failures_total", "Steps that failed.", failures);
    gauge(
        &mut out,
        "owl_prefix_cache_hit_ratio",
        "Share of prompt tokens reused from the cache.",
        stats.prefix_hit_rate(),
    );
    gauge(&mut out, "owl_queue_depth", "Requests waiting for a sequence slot.", queued as f64);
    gauge(&mut out, "owl_active_sequences", "Sequences being generated.", active as f64);
    gauge(&mut out, "owl_sequence_slots", "Sequences generated at once at most (--parallel).", slots as f64);
    m.request_duration.write(
        &mut out,
        "owl_request_duration_seconds",
        "Time to answer a request (to its last byte for streams' headers).",
    );
    m.time_to_first_token.write(
        &mut out,
        "owl_time_to_first_token_seconds",
        "From a request's arrival to its first generated token.",
    );
    m.inter_token.write(&mut out, "owl_inter_token_seconds", "Between consecutive generated tokens of one sequence.");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}
