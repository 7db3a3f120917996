//! `owl serve`: the model behind OpenAI's HTTP API, through owl-server.
//!
//! Loads the model with a KV cache of `--parallel` sequences, starts the engine thread
//! (continuous batching), and serves until SIGINT or SIGTERM: then it stops accepting
//! connections and lets the replies in flight finish for up to `--shutdown-grace` seconds;
//! then the engine ends the rest, each stream gets its final chunk, and the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use owl_engine::{Scheduler, SchedulerConfig};
use owl_server::{ChatRenderer, EngineHandle, ModelDetails, Registry, ServedModel, ServerOptions};
use owl_tokenizer::{ChatMessage, TemplateOrigin, Tokenizer};

use owl_engine::LoraSet;
use owl_train::{AdapterFile, Lineage};

use crate::args::ServeArgs;
use crate::commands::{load, sampling};
use crate::printer;

/// Tokens per forward call: prompt chunks and the decode steps of every sequence together.
const MAX_BATCH_TOKENS: usize = 512;

/// How long, after the grace period, the final chunks may take to reach the clients.
const FINAL_CHUNKS: Duration = Duration::from_secs(5);

/// The model's chat template, rendered in the limited child process as `owl run` does.
struct TemplateRenderer {
    tokenizer: Arc<Tokenizer>,
}

impl ChatRenderer for TemplateRenderer {
    fn render(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<Vec<u32>, String> {
        let template = self.tokenizer.chat_template().ok_or("the model has no chat template")?;
        let text = crate::template_sandbox::render(template, messages, tools, true).map_err(|e| format!("{e:#}"))?;
        self.tokenizer.encode_rendered(template, &text).map_err(|e| e.to_string())
    }

    fn template_source(&self) -> &str {
        self.tokenizer.chat_template().map_or("", |t| t.source())
    }
}

/// One model loaded, its engine thread started.
struct Loaded {
    model: ServedModel,
    n_ctx: usize,
    /// `--lora` adapters that fit the model: their names and sets.
    adapters: Vec<(String, Arc<LoraSet>)>,
}

/// A `--lora NAME=DIR[:SCALE]` adapter, read once for every base it may fit.
struct ServedAdapter {
    name: String,
    file: AdapterFile,
    scale: f32,
    /// Why each base it did not fit refused it.
    refusals: Vec<String>,
}

fn load_served(
    arg: &std::ffi::OsStr,
    name: Option<&str>,
    args: &ServeArgs,
    threads: usize,
    adapters: &mut [ServedAdapter],
) -> anyhow::Result<Loaded> {
    let loaded = load::load(arg, threads, MAX_BATCH_TOKENS, false)?;
    let n_ctx = sampling::context_size(&loaded.model, args.ctx_size, args.parallel, args.cache_type.dtype())?;
    let lineage = if args.lora_any_base { Lineage::ShapesOnly } else { Lineage::Strict };
    let mut fitted = Vec::new();
    for a in adapters.iter_mut() {
        match a.file.bind(&loaded.model, lineage) {
            Ok(bound) => fitted.push((a.name.clone(), Arc::new(LoraSet::new(vec![(Arc::new(bound), a.scale)])))),
            Err(e) => a.refusals.push(format!("{}: {e}", loaded.name)),
        }
    }
    let hidden_size = loaded.model.config().hidden_size;
    let details = model_details(&loaded);
    let mut runner = load::runner(loaded.model, args.parallel, n_ctx, args.cache_type.dtype())?;
    // A server's footprint is fixed from its first second: no creep as slots first reach
    // deep positions, and no out-of-memory in the middle of a request.
    runner.make_kv_cache_resident();
    let config = SchedulerConfig { max_batch_tokens: MAX_BATCH_TOKENS, max_queue: args.queue };
    let scheduler = Scheduler::new(runner, config)?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let renderer: Option<Arc<dyn ChatRenderer>> = match tokenizer.chat_template() {
        Some(t) if t.origin() == TemplateOrigin::Model => {
            Some(Arc::new(TemplateRenderer { tokenizer: tokenizer.clone() }))
        }
        _ => {
            printer::note(&format!(
                "{} has no chat template of its own (a base model): /v1/chat/completions answers 400; \
                 /v1/completions works",
                loaded.name
            ));
            None
        }
    };
    let engine = EngineHandle::start(scheduler, tokenizer.clone()).context("starting the engine thread")?;
    // What `owl show --json` says, for /v1/models/{id} and the chat page; the card reads
    // metadata only, and a model without one is still served.
    let card = crate::commands::show::card_for(arg).ok().and_then(|c| serde_json::to_value(c).ok());
    let mut aliases: Vec<String> = Vec::new();
    let mut alias = |a: &str| {
        if !a.is_empty() && !aliases.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            aliases.push(a.to_string());
        }
    };
    if let Some(card) = &card {
        for key in [&card["name"], &card["store"]["name"]] {
            if let Some(a) = key.as_str().filter(|a| !a.contains('/') || card["store"].is_object()) {
                alias(a);
            }
        }
    }
    alias(loaded.file_name.strip_suffix(".gguf").unwrap_or(&loaded.file_name));
    let model = ServedModel {
        name: name.map_or_else(|| loaded.name.clone(), str::to_string),
        aliases,
        tokenizer,
        renderer,
        engine,
        hidden_size,
        details,
        created: owl_server::unix_now(),
        card,
        lora: None,
    };
    Ok(Loaded { model, n_ctx, adapters: fitted })
}

/// The model `BASE+NAME`: the base's engine and tokenizer, its requests run with `lora`.
fn adapter_model(base: &ServedModel, name: &str, lora: Arc<LoraSet>) -> ServedModel {
    ServedModel {
        name: format!("{}+{name}", base.name),
        aliases: base.aliases.iter().map(|a| format!("{a}+{name}")).collect(),
        tokenizer: base.tokenizer.clone(),
        renderer: base.renderer.clone(),
        engine: base.engine.clone(),
        hidden_size: base.hidden_size,
        details: base.details.clone(),
        created: base.created,
        card: base.card.clone(),
        lora: Some(lora),
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let threads = load::threads_or_default(args.threads);
    let arguments: Vec<&std::ffi::OsString> = args.models.iter().chain(&args.more_models).collect();
    if arguments.is_empty() {
        anyhow::bail!("no model to serve: give one or more MODEL arguments (or --model MODEL)");
    }
    if args.name.is_some() && arguments.len() > 1 {
        anyhow::bail!("--name names a single model; with several, each is named by its MODEL argument");
    }
    let mut adapters = args
        .lora
        .iter()
        .map(|spec| {
            let name = spec.name.clone().ok_or_else(|| {
                anyhow!("--lora {}: owl serve names each adapter: --lora NAME=DIR[:SCALE]", spec.path.display())
            })?;
            let file = AdapterFile::open(&spec.path, Some(&name))?;
            Ok(ServedAdapter { name, file, scale: spec.scale, refusals: Vec::new() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut served = Vec::new();
    let mut with_adapters = Vec::new();
    let mut contexts = Vec::new();
    for arg in &arguments {
        let loaded = load_served(arg, args.name.as_deref(), args, threads, &mut adapters)?;
        contexts.push(format!("{} ({} sequences of {} tokens)", loaded.model.name, args.parallel, loaded.n_ctx));
        for (name, lora) in loaded.adapters {
            with_adapters.push(adapter_model(&loaded.model, &name, lora));
        }
        served.push(loaded.model);
    }
    for a in &adapters {
        if a.refusals.len() == arguments.len() {
            anyhow::bail!("--lora {}: fits no model served here: {}", a.name, a.refusals.join("; "));
        }
    }
    for m in &with_adapters {
        printer::note(&format!(
            "serving {} (LoRA {})",
            m.name,
            m.lora.as_ref().map_or(String::new(), |l| l.describe())
        ));
    }
    served.extend(with_adapters);
    let engines: Vec<EngineHandle> = served.iter().map(|m| m.engine.clone()).collect();
    let grace_period = Duration::from_secs_f64(args.shutdown_grace);
    let options = ServerOptions {
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        cors_origins: args.cors_origins.clone(),
        max_body_bytes: args.max_body_bytes,
        webui: !args.no_webui,
    };
    let open = options.api_key.is_none();
    let webui = options.webui;
    let registry = Registry::new(served, options).map_err(|e| anyhow!(e))?;
    let app = owl_server::router(registry);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", bracket_ipv6(&args.host), args.port)
            .parse()
            .map_err(|e| anyhow!("--host {} --port {}: {e}", args.host, args.port))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && open {
            printer::warning(&format!(
                "listening on {local} without --api-key: anyone who can reach it can use the model"
            ));
        }
        let page = if webui { format!("; chat page at http://{local}/") } else { String::new() };
        printer::progress(&format!(
            "owl serve: {} on http://{local} (OpenAI API under /v1{page})",
            contexts.join(", ")
        ));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            printer::progress("owl serve: shutting down; replies in flight may finish");
            let _ = stop_tx.send(());
        });
        let mut serving = tokio::spawn(async move { server.await });
        // After the signal: the grace period, then the end of whatever is still streaming.
        let grace = async {
            if stop_rx.await.is_ok() {
                tokio::time::sleep(grace_period).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut serving => return result.context("the HTTP server")?.context("the HTTP server"),
            () = grace => {}
        }
        printer::progress("owl serve: grace period over; ending the remaining replies");
        for engine in &engines {
            engine.shutdown();
        }
        // The engine ends every sequence within one step; the streams then send their
        // final chunks and close. A connection that does not drain is not waited for.
        match tokio::time::timeout(FINAL_CHUNKS, serving).await {
            Ok(result) => result.context("the HTTP server")?.context("the HTTP server"),
            Err(_) => anyhow::Ok(()),
        }
    })
}

/// What Ollama's `/api/tags` and `/api/show` report of the model.
fn model_details(loaded: &load::LoadedModel) -> ModelDetails {
    let gguf = loaded.path.is_file().then(|| owl_formats::gguf::GgufFile::open(&loaded.path).ok()).flatten();
    let quantization_level = gguf
        .as_ref()
        .and_then(|g| g.get_u64("general.file_type"))
        .and_then(owl_formats::gguf::file_type_name)
        .map(|n| n.trim_start_matches("MOSTLY_").trim_start_matches("ALL_").to_string())
        .unwrap_or_default();
    let p = loaded.parameters as f64;
    let parameter_size = if p >= 1e9 { format!("{:.1}B", p / 1e9) } else { format!("{:.0}M", p / 1e6) };
    ModelDetails {
        format: if gguf.is_some() { "gguf" } else { "safetensors" }.to_string(),
        family: loaded.model.config().architecture.clone(),
        parameter_size,
        parameters: loaded.parameters,
        quantization_level,
        size: loaded.file_size,
    }
}

/// `::1` → `[::1]` so that `HOST:PORT` parses.
fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
