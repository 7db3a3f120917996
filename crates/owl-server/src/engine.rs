//! The engine thread: one [`Scheduler`] stepping on its own OS thread, fed by the HTTP
//! handlers through a channel, streaming each request's events back on a channel of its own.
//!
//! The handlers never touch the model. A request is a [`Submit`]: prompt ids, parameters,
//! stop strings and an event sender. The thread waits for commands while idle, and between
//! steps takes whatever arrived. Each generated token goes through the request's own
//! [`TextStream`] (detokenizer and stop strings); when the receiving side is gone (the
//! client disconnected) the send fails and the sequence ends in that same step, freeing its
//! slot. A request still waiting in the queue is dropped as soon as its [`RequestGuard`] is.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use owl_engine::LoraSet;
use owl_engine::{
    BatchModel, EngineError, Event, Scheduler, SchedulerEvent, SchedulerStats, SeqId, SeqOutcome, SeqRequest,
    StopReason, TextStream, TokenEvent, TokenizerDecoder, Verdict,
};
use owl_tokenizer::Tokenizer;
use tokio::sync::{mpsc as tmpsc, oneshot};

/// What a request hears from the engine, in order: tokens and text pieces, then `Done`
/// (or `Failed`).
#[derive(Debug)]
pub enum StreamEvent {
    Token(TokenEvent),
    Text(String),
    Done(Box<Finished>),
    /// The request could not be completed: a failed step, a server shutting down.
    Failed(crate::error::ApiError),
}

/// The end of a sequence, with the text side's final word on the stop reason.
#[derive(Debug)]
pub struct Finished {
    pub outcome: SeqOutcome,
    pub stop_reason: StopReason,
}

/// Reads a request's events to its end: the visible text and how the sequence finished;
/// every token ticks `clock` (the non-streaming answers of every route).
pub async fn collect_text(
    events: &mut tmpsc::UnboundedReceiver<StreamEvent>,
    clock: &mut crate::metrics::TokenClock,
    metrics: &crate::metrics::Metrics,
) -> Result<(String, Box<Finished>), crate::error::ApiError> {
    use crate::error::ApiError;
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            StreamEvent::Token(_) => clock.tick(metrics),
            StreamEvent::Text(t) => text.push_str(&t),
            StreamEvent::Done(f) => return Ok((text, f)),
            StreamEvent::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the engine stopped before the reply was complete"))
}

/// A generation request for the engine thread.
pub struct Submit {
    pub request: SeqRequest,
    pub stops: Vec<String>,
    pub events: tmpsc::UnboundedSender<StreamEvent>,
}

enum Command {
    Submit(Box<Submit>, oneshot::Sender<Result<SeqId, EngineError>>),
    Cancel(SeqId),
    Embed(Vec<u32>, Option<Arc<LoraSet>>, oneshot::Sender<Result<Vec<f32>, EngineError>>),
    Shutdown,
}

/// Embedding requests waiting for a free slot.
type PendingEmbeds =
    std::collections::VecDeque<(Vec<u32>, Option<Arc<LoraSet>>, oneshot::Sender<Result<Vec<f32>, EngineError>>)>;

/// Live numbers of the engine for `/metrics` and `/api/ps`.
#[derive(Debug, Default)]
pub struct EngineGauges {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub stats: Mutex<SchedulerStats>,
    /// Steps that failed (every running request then failed with them).
    pub failures: AtomicU64,
}

/// The handlers' side of the engine thread; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    gauges: Arc<EngineGauges>,
    n_ctx: usize,
    slots: usize,
    vocab_size: usize,
}

impl EngineHandle {
    /// Starts the engine thread over `scheduler`, decoding with `tokenizer`.
    pub fn start<M>(scheduler: Scheduler<M>, tokenizer: Arc<Tokenizer>) -> std::io::Result<EngineHandle>
    where
        M: BatchModel + Send + 'static,
    {
        let (commands, inbox) = mpsc::channel();
        let gauges = Arc::new(EngineGauges::default());
        let n_ctx = scheduler.context_size();
        let slots = scheduler.n_slots();
        let vocab_size = scheduler.model().vocab_size();
        let thread_gauges = gauges.clone();
        std::thread::Builder::new()
            .name("owl-engine".into())
            .spawn(move || run(scheduler, &tokenizer, inbox, &thread_gauges))?;
        Ok(EngineHandle { commands, gauges, n_ctx, slots, vocab_size })
    }

    pub fn context_size(&self) -> usize {
        self.n_ctx
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The model's logits per position (a grammar's mask covers as many).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn gauges(&self) -> &EngineGauges {
        &self.gauges
    }

    /// The L2-normalised mean of the final hidden states of `tokens`, under the adapters of
    /// `lora` if any (run between steps in a free slot).
    pub async fn embed(&self, tokens: Vec<u32>, lora: Option<Arc<LoraSet>>) -> Result<Vec<f32>, EngineError> {
        let (reply, answer) = oneshot::channel();
        let gone = || EngineError::Model { position: 0, source: "the engine thread has stopped".into() };
        self.commands.send(Command::Embed(tokens, lora, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Ends every request (a server whose grace period is over): the running ones get their
    /// final event (`Done`, stopped as cancelled) within one step, the waiting ones and every
    /// later request are refused as [`EngineError::ShuttingDown`].
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// Queues a request; the guard cancels it when dropped (a handler that ends early, a
    /// client that went away).
    pub async fn submit(&self, submit: Submit) -> Result<RequestGuard, EngineError> {
        let (reply, answer) = oneshot::channel();
        let gone = || EngineError::Model { position: 0, source: "the engine thread has stopped".into() };
        self.commands.send(Command::Submit(Box::new(submit), reply)).map_err(|_| gone())?;
        let seq = answer.await.map_err(|_| gone())??;
        Ok(RequestGuard { seq, commands: self.commands.clone() })
    }
}

/// Cancels its request when dropped (a no-op for one that already finished).
pub struct RequestGuard {
    seq: SeqId,
    commands: mpsc::Sender<Command>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Cancel(self.seq));
    }
}

/// A running request's text side.
struct Stream<'t> {
    text: TextStream,
    decoder: TokenizerDecoder<'t>,
    events: tmpsc::UnboundedSender<StreamEvent>,
}

fn run<M: BatchModel>(
    mut scheduler: Scheduler<M>,
    tokenizer: &Tokenizer,
    inbox: mpsc::Receiver<Command>,
    gauges: &EngineGauges,
) {
    let mut streams: HashMap<SeqId, Stream<'_>> = HashMap::new();
    let mut embeds = PendingEmbeds::new();
    let mut closing = false;
    loop {
        // Idle: block for the next command; busy: take what arrived and step.
        if !scheduler.has_work() && embeds.is_empty() {
            match inbox.recv() {
                Ok(command) => handle(command, &mut scheduler, tokenizer, &mut streams, &mut embeds, &mut closing),
                Err(_) => return,
            }
        }
        while let Ok(command) = inbox.try_recv() {
            handle(command, &mut scheduler, tokenizer, &mut streams, &mut embeds, &mut closing);
        }
        // Embeddings take free slots between steps, oldest first.
        while let Some((tokens, lora, reply)) = embeds.pop_front() {
            match scheduler.embed(&tokens, lora.as_ref()) {
                Ok(Some(v)) => {
                    let _ = reply.send(Ok(v));
                }
                Ok(None) => {
                    embeds.push_front((tokens, lora, reply));
                    break;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        let result = scheduler.step(|event| match event {
            SchedulerEvent::Token { seq, token } => {
                let Some(s) = streams.get_mut(&seq) else { return Verdict::Stop(StopReason::Cancelled) };
                let events = &s.events;
                s.text.push(&mut s.decoder, &token, &mut |event| send(events, event))
            }
            SchedulerEvent::Finished { seq, outcome } => {
                if let Some(mut s) = streams.remove(&seq) {
                    let events = &s.events;
                    let stop_reason =
                        s.text.finish(&mut s.decoder, outcome.stop_reason.clone(), &mut |event| send(events, event));
                    let done = Finished { outcome: outcome.clone(), stop_reason };
                    let _ = s.events.send(StreamEvent::Done(Box::new(done)));
                }
                Verdict::Continue
            }
        });
        if let Err(e) = result {
            gauges.failures.fetch_add(1, Ordering::Relaxed);
            let failed = crate::error::ApiError::internal(format!("generation failed: {e}"));
            for (_, s) in streams.drain() {
                let _ = s.events.send(StreamEvent::Failed(failed.clone()));
            }
        }
        gauges.queued.store(scheduler.queued(), Ordering::Relaxed);
        gauges.active.store(scheduler.active(), Ordering::Relaxed);
        if let Ok(mut stats) = gauges.stats.lock() {
            *stats = scheduler.stats();
        }
    }
}

/// Sends a text-side event; a closed channel (the client went away) ends the sequence.
fn send(events: &tmpsc::UnboundedSender<StreamEvent>, event: Event<'_>) -> ControlFlow<()> {
    let message = match event {
        Event::Token(t) => StreamEvent::Token(t.clone()),
        Event::Text(text) => StreamEvent::Text(text.to_string()),
    };
    match events.send(message) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    }
}

fn handle<'t, M: BatchModel>(
    command: Command,
    scheduler: &mut Scheduler<M>,
    tokenizer: &'t Tokenizer,
    streams: &mut HashMap<SeqId, Stream<'t>>,
    embeds: &mut PendingEmbeds,
    closing: &mut bool,
) {
    match command {
        Command::Submit(_, reply) if *closing => {
            let _ = reply.send(Err(EngineError::ShuttingDown));
        }
        Command::Submit(submit, reply) => {
            let Submit { request, stops, events } = *submit;
            let fitted = owl_engine::session::fit_prompt(&request.prompt, scheduler.context_size(), &request.params);
            let result = scheduler.submit(request);
            if let (Ok(seq), Ok(prompt)) = (&result, fitted) {
                let mut stream =
                    Stream { text: TextStream::new(), decoder: TokenizerDecoder::new(tokenizer, false), events };
                stream.text.start(&mut stream.decoder, &prompt, &stops);
                streams.insert(*seq, stream);
            }
            let _ = reply.send(result);
        }
        Command::Cancel(seq) => {
            // A running sequence ends at the next step (its stream is gone: no report);
            // a waiting one leaves the queue now.
            streams.remove(&seq);
            scheduler.cancel(seq);
        }
        Command::Embed(_, _, reply) if *closing => {
            let _ = reply.send(Err(EngineError::ShuttingDown));
        }
        Command::Embed(tokens, lora, reply) => embeds.push_back((tokens, lora, reply)),
        Command::Shutdown => {
            *closing = true;
            let refused = crate::error::ApiError::from(EngineError::ShuttingDown);
            for seq in scheduler.cancel_all() {
                if let Some(s) = streams.remove(&seq) {
                    let _ = s.events.send(StreamEvent::Failed(refused.clone()));
                }
            }
            for (_, _, reply) in embeds.drain(..) {
                let _ = reply.send(Err(EngineError::ShuttingDown));
            }
        }
    }
}
