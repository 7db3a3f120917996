//! `owl finetune`: a LoRA adapter trained on JSON Lines data over the model's stored
//! weights (owl-train), with a progress bar or `--json` events, written in PEFT's layout.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use owl_tokenizer::{ChatMessage, Tokenizer};
use owl_train::data::{self, Encoder, Message};
use owl_train::train::finetune::{self, Event, FinetuneConfig};
use owl_train::train::Example;
use owl_train::{AdapterFile, Base};
use serde_json::json;

use crate::args::FinetuneArgs;
use crate::commands::load;
use crate::printer;

/// The model's tokenizer and chat template (rendered in the limited child process, as
/// `owl run` renders it).
struct ModelEncoder<'a> {
    tokenizer: &'a Tokenizer,
}

impl Encoder for ModelEncoder<'_> {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String> {
        self.tokenizer.encode(text, add_special, false).map_err(|e| e.to_string())
    }

    fn render(&self, messages: &[Message], generation_prompt: bool) -> Result<String, String> {
        let template =
            self.tokenizer.chat_template().ok_or("the model has no chat template for {\"messages\"} data")?;
        let messages: Vec<ChatMessage> = messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
        crate::template_sandbox::render(template, &messages, None, generation_prompt).map_err(|e| format!("{e:#}"))
    }

    fn encode_chat(&self, text: &str) -> Result<Vec<u32>, String> {
        let template = self.tokenizer.chat_template().ok_or("the model has no chat template")?;
        self.tokenizer.encode_rendered(template, text).map_err(|e| e.to_string())
    }

    fn eos(&self) -> Option<u32> {
        self.tokenizer.eos_id()
    }
}

pub fn run(args: &FinetuneArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout {} must be in [0, 1)", args.dropout);
    }
    if !(0.0..1.0).contains(&args.val_split) {
        bail!("--val-split {} must be in [0, 1)", args.val_split);
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        bail!("--lr {} must be a positive number", args.lr);
    }
    let threads = load::threads_or_default(args.threads);
    let mut loaded = load::load(&args.model, threads, 512, false)?;
    let enc = ModelEncoder { tokenizer: &loaded.tokenizer };
    let (good, bad) =
        data::read_jsonl(&args.data, &enc, args.ctx).with_context(|| format!("{}", args.data.display()))?;
    if let (true, Some(first)) = (args.strict, bad.first()) {
        bail!("{}: {first} (--strict stops at the first bad line)", args.data.display());
    }
    for b in &bad {
        printer::warning(&format!("{}: {b}; skipped", args.data.display()));
    }
    if good.is_empty() {
        bail!("{}: no line to train on", args.data.display());
    }
    let (train, val) = split(good.into_iter().map(|(_, e)| e).collect(), args.val_split, args.seed);
    let cfg = FinetuneConfig {
        rank: args.rank,
        alpha: args.alpha,
        dropout: args.dropout,
        targets: args.targets.clone(),
        lr: args.lr,
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        warmup_ratio: args.warmup_ratio,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        f32_activations: args.f32_activations,
    };
    let params = finetune::init_params(&loaded.model, &cfg)?;
    let mut progress = Progress::new(args.json);
    let data = finetune::Data { train: &train, val: &val };
    let trained = finetune::finetune(&mut loaded.model, params, data, &cfg, &args.out, args.resume, &mut |e| {
        progress.event(&e, &args.out)
    })?;
    progress.finish();

    let base = Base::of_model(&loaded.model).context("the model was not loaded from a file")?;
    let base_model = base.file.names.get(2).or(base.file.names.first()).cloned();
    let name = args.out.file_name().map_or_else(|| "adapter".to_string(), |n| n.to_string_lossy().into_owned());
    let adapter = AdapterFile::from_trained(&trained, &base, &name, base_model)?;
    adapter.write_peft(&args.out)?;
    if let Some(path) = &args.gguf {
        let arch = owl_convert::arch::Arch::from_gguf_name(&base.architecture)
            .or_else(|| owl_convert::arch::Arch::from_model_type(&base.architecture).ok())
            .with_context(|| format!("no GGUF architecture for {}", base.architecture))?;
        adapter.to_gguf_naming(arch, base.heads)?.write_gguf(path)?;
    }
    let _ = std::fs::remove_dir_all(finetune::checkpoint_dir(&args.out));
    if let (true, Some(done)) = (args.json, progress.done.take()) {
        progress.emit(done);
    }
    if !args.json {
        printer::note(&format!(
            "wrote {} ({} pairs, rank {}){}",
            args.out.display(),
            trained.pairs.len(),
            args.rank,
            args.gguf.as_ref().map_or(String::new(), |p| format!(" and {}", p.display()))
        ));
    }
    Ok(())
}

/// Holds out `share` of the examples (at least one when there are 10 or more) in a seeded
/// order.
fn split(mut all: Vec<Example>, share: f32, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n_val = if share > 0.0 && all.len() >= 10 { ((all.len() as f32 * share).round() as usize).max(1) } else { 0 };
    let mut state = seed ^ 0x5eed;
    for i in (1..all.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        all.swap(i, (state >> 33) as usize % (i + 1));
    }
    let val = all.split_off(all.len() - n_val);
    (all, val)
}

/// A progress bar with loss, tokens/s and ETA, or `--json` events.
struct Progress {
    json: bool,
    bar: Option<ProgressBar>,
    /// The `done` event, sent once the adapter is written.
    done: Option<serde_json::Value>,
}

impl Progress {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} steps ETA {eta} {wide_msg}") {
                bar.set_style(style);
            }
            bar
        });
        Progress { json, bar, done: None }
    }

    fn emit(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn event(&mut self, e: &Event, out: &std::path::Path) {
        match *e {
            Event::Start { examples, val_examples, steps, first_step, pairs, trainable } => {
                if self.json {
                    self.emit(json!({"event": "start", "examples": examples, "val_examples": val_examples,
                        "steps": steps, "first_step": first_step, "pairs": pairs, "trainable_parameters": trainable}));
                } else {
                    if let Some(bar) = &self.bar {
                        bar.set_length(steps as u64);
                        bar.set_position(first_step as u64);
                    }
                    let resumed =
                        if first_step > 0 { format!(", resuming at step {first_step}") } else { String::new() };
                    printer::note(&format!(
                        "training {pairs} LoRA pairs ({trainable} parameters) on {examples} examples \
                         ({val_examples} held out), {steps} steps{resumed}"
                    ));
                }
            }
            Event::Step { step, steps, loss, lr, grad_norm, tokens_per_s, eta_s } => {
                if self.json {
                    self.emit(json!({"event": "step", "step": step, "loss": loss, "lr": lr,
                        "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "eta_s": eta_s}));
                } else if let Some(bar) = &self.bar {
                    bar.set_position(step as u64);
                    bar.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s"));
                } else if step == steps || step % 10 == 0 {
                    printer::progress(&format!(
                        "step {step}/{steps}: loss {loss:.4}, lr {lr:.2e}, {tokens_per_s:.0} tokens/s, ETA {eta_s:.0} s"
                    ));
                }
            }
            Event::Eval { step, val_loss } => {
                if self.json {
                    self.emit(json!({"event": "eval", "step": step, "val_loss": val_loss}));
                } else {
                    printer::progress(&format!("step {step}: validation loss {val_loss:.4}"));
                }
            }
            Event::Checkpoint { step } => {
                if self.json {
                    self.emit(json!({"event": "checkpoint", "step": step}));
                }
            }
            Event::Done { steps, train_loss, val_loss } => {
                self.done = Some(json!({"event": "done", "steps": steps, "train_loss": train_loss,
                    "val_loss": val_loss, "out": out}));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
