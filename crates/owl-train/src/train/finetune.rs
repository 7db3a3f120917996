//! The fine-tuning loop: LoRA pairs on the chosen projections of a frozen base, batches of
//! similar lengths, gradient accumulation, AdamW under a warmup + cosine schedule,
//! gradient-norm clipping, a validation loss, and checkpoints a killed run resumes from.
//!
//! A step is `grad_accum` batches; its gradient is their mean. The batch order is a
//! function of the seed and the epoch, so a resumed run continues with the batch the killed
//! one would have taken next, and the checkpoint holds everything else (pairs, both AdamW
//! moments, the step).

use std::path::{Path, PathBuf};
use std::time::Instant;

use owl_formats::safetensors::SafetensorsModel;
use owl_models::skeleton::attention::QkvProj;
use owl_models::skeleton::linear::Linear;
use owl_models::skeleton::mlp::GateUp;
use owl_models::Model;
use serde_json::json;

use super::adamw::{AdamW, AdamWConfig};
use super::step::{loss_and_grads_with, mix, Example, Grads, LoraParams, StepOptions, TrainPair};
use crate::error::TrainError;

/// The projections LoRA can target, by the short names PEFT users give them.
pub const TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// What `owl finetune` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// Some of [`TARGETS`].
    pub targets: Vec<String>,
    pub lr: f32,
    pub epochs: usize,
    /// Stop after this many steps (before the epochs are done).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Share of the steps the learning rate warms up over.
    pub warmup_ratio: f32,
    pub weight_decay: f32,
    /// Clip the gradient's global L2 norm to this.
    pub max_grad_norm: f32,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// The frozen base's products in float32 ([`StepOptions::f32_activations`]).
    pub f32_activations: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: TARGETS.iter().map(|t| t.to_string()).collect(),
            lr: 2e-4,
            epochs: 1,
            max_steps: None,
            batch_size: 4,
            grad_accum: 1,
            warmup_ratio: 0.03,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 42,
            checkpoint_every: 50,
            f32_activations: false,
        }
    }
}

/// What the loop reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start { examples: usize, val_examples: usize, steps: usize, first_step: usize, pairs: usize, trainable: usize },
    Step { step: usize, steps: usize, loss: f32, lr: f32, grad_norm: f32, tokens_per_s: f64, eta_s: f64 },
    Eval { step: usize, val_loss: f32 },
    Checkpoint { step: usize },
    Done { steps: usize, train_loss: f32, val_loss: Option<f32> },
}

/// A stream of uniform numbers in [0, 1) from a seed (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        let z = mix(self.0);
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The base tensors of the targeted projections, in layer order.
fn targeted(model: &Model, targets: &[String]) -> Result<Vec<(String, usize, usize)>, TrainError> {
    for t in targets {
        if !TARGETS.contains(&t.as_str()) {
            return Err(TrainError::Data(format!("unknown target {t:?}: choose from {}", TARGETS.join(","))));
        }
    }
    let want = |name: &str| targets.iter().any(|t| t == name);
    let mut out = Vec::new();
    let mut add = |lin: &Linear| {
        if let Some(o) = lin.weight.origin().filter(|o| o.of == 1) {
            out.push((o.tensor.to_string(), lin.out_dim(), lin.in_dim()));
        }
    };
    for (i, block) in model.blocks().iter().enumerate() {
        let attn = block
            .mixer
            .as_attention()
            .ok_or_else(|| TrainError::Unsupported(format!("layer {i}'s attention (MLA)")))?;
        let mlp = block.ffn.as_gated_mlp().ok_or_else(|| TrainError::Unsupported(format!("layer {i}'s experts")))?;
        match attn.qkv() {
            QkvProj::Separate { q, k, v } => {
                for (name, lin) in [("q", q), ("k", k), ("v", v)] {
                    if want(name) {
                        add(lin);
                    }
                }
            }
            // One fused matrix: targeted when any of q, k, v is.
            QkvProj::Fused(w) if want("q") || want("k") || want("v") => add(w),
            QkvProj::Fused(_) => {}
        }
        if want("o") {
            add(attn.o());
        }
        match mlp.gate_up() {
            GateUp::Separate { gate, up } => {
                for (name, lin) in [("gate", gate), ("up", up)] {
                    if want(name) {
                        add(lin);
                    }
                }
            }
            GateUp::Fused(w) if want("gate") || want("up") => add(w),
            GateUp::Fused(_) => {}
        }
        if want("down") {
            add(mlp.down());
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data("no projection to train: --targets names none of this model's".into()));
    }
    Ok(out)
}

/// New pairs as PEFT starts them: `A` from kaiming-uniform with `a = √5` (uniform in
/// ±1/√in), `B` zero, so training starts from the base model exactly.
pub fn init_params(model: &Model, cfg: &FinetuneConfig) -> Result<LoraParams, TrainError> {
    if cfg.rank == 0 {
        return Err(TrainError::Data("--rank must be at least 1".into()));
    }
    let mut rng = Rng(cfg.seed ^ 0x4c6f_5261);
    let pairs = targeted(model, &cfg.targets)?
        .into_iter()
        .map(|(target, rows, cols)| {
            let bound = 1.0 / (cols as f64).sqrt();
            let a = (0..cfg.rank * cols).map(|_| ((rng.next() * 2.0 - 1.0) * bound) as f32).collect();
            TrainPair {
                target,
                rows,
                cols,
                rank: cfg.rank,
                scale: cfg.alpha / cfg.rank as f32,
                a,
                b: vec![0.0; rows * cfg.rank],
            }
        })
        .collect();
    Ok(LoraParams::new(pairs))
}

/// The batches of one epoch: examples grouped by length (`batch_size` of similar lengths,
/// so that a batch's sequences cost alike), the groups in a seeded random order.
fn epoch_batches(lengths: &[usize], batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect();
    let mut rng = Rng(seed ^ (epoch as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    for i in (1..batches.len()).rev() {
        let j = (rng.next() * (i + 1) as f64) as usize;
        batches.swap(i, j.min(i));
    }
    batches
}

/// The learning rate of step `step` (0-based) of `total`: linear warmup, then cosine to 0
/// (transformers' `get_cosine_schedule_with_warmup`).
pub fn lr_at(cfg: &FinetuneConfig, step: usize, total: usize) -> f32 {
    let warmup = (cfg.warmup_ratio * total as f32).ceil() as usize;
    if step < warmup {
        return cfg.lr * step as f32 / warmup as f32;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    (f64::from(cfg.lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
}

/// The step count the config and data give.
pub fn total_steps(cfg: &FinetuneConfig, n_train: usize) -> usize {
    let batches = n_train.div_ceil(cfg.batch_size.max(1));
    let per_epoch = batches.div_ceil(cfg.grad_accum.max(1)).max(1);
    let all = per_epoch * cfg.epochs.max(1);
    cfg.max_steps.map_or(all, |m| m.min(all))
}

/// Where checkpoints go in the output directory.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// The examples a run trains on, and those it holds out.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    pub train: &'a [Example],
    pub val: &'a [Example],
}

/// Trains `params` on `data.train` and returns them. With `resume`, a checkpoint in `out`
/// (written by an earlier run of the same config and data) continues where it stopped.
pub fn finetune(
    model: &mut Model,
    mut params: LoraParams,
    data: Data<'_>,
    cfg: &FinetuneConfig,
    out: &Path,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<LoraParams, TrainError> {
    let Data { train, val } = data;
    if train.is_empty() {
        return Err(TrainError::Data("no training example".into()));
    }
    let steps = total_steps(cfg, train.len());
    let adamw = AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() };
    let mut opt = AdamW::new(adamw, &params);
    let fingerprint = fingerprint(cfg, train);
    let mut first = 0;
    if resume {
        if let Some((step, p, o)) = load_checkpoint(&checkpoint_dir(out), &params, fingerprint)? {
            (first, params, opt) = (step, p, AdamW { config: adamw, ..o });
        }
    }
    let trainable = params.pairs.iter().map(|p| p.a.len() + p.b.len()).sum();
    on_event(Event::Start {
        examples: train.len(),
        val_examples: val.len(),
        steps,
        first_step: first,
        pairs: params.pairs.len(),
        trainable,
    });
    let lengths: Vec<usize> = train.iter().map(|e| e.tokens.len()).collect();
    let n_batches = lengths.len().div_ceil(cfg.batch_size.max(1));
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    let started = Instant::now();
    let (mut tokens_done, mut recent_loss) = (0usize, None::<f32>);
    for step in first..steps {
        let mut grads = params.zero_grads();
        let mut loss_sum = 0f32;
        for micro in 0..cfg.grad_accum.max(1) {
            let index = step * cfg.grad_accum.max(1) + micro;
            let (epoch, within) = (index / n_batches, index % n_batches);
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, epoch_batches(&lengths, cfg.batch_size, cfg.seed, epoch)));
            }
            let batch: Vec<Example> = epoch_cache
                .as_ref()
                .map(|(_, b)| b[within].iter().map(|&i| train[i].clone()).collect())
                .unwrap_or_default();
            tokens_done += batch.iter().map(|e| e.tokens.len()).sum::<usize>();
            let opts = StepOptions {
                dropout: cfg.dropout,
                seed: cfg.seed,
                step: index as u64,
                f32_activations: cfg.f32_activations,
                ..StepOptions::default()
            };
            let (loss, g) = loss_and_grads_with(model, &params, &batch, &opts)?;
            loss_sum += loss;
            add_scaled(&mut grads, &g, 1.0 / cfg.grad_accum.max(1) as f32);
        }
        let loss = loss_sum / cfg.grad_accum.max(1) as f32;
        let grad_norm = clip(&mut grads, cfg.max_grad_norm);
        let lr = lr_at(cfg, step, steps);
        opt.update(&mut params, &grads, lr);
        recent_loss = Some(recent_loss.map_or(loss, |r| 0.9 * r + 0.1 * loss));
        let elapsed = started.elapsed().as_secs_f64();
        let done = step + 1 - first;
        on_event(Event::Step {
            step: step + 1,
            steps,
            loss,
            lr,
            grad_norm,
            tokens_per_s: tokens_done as f64 / elapsed.max(1e-9),
            eta_s: elapsed / done as f64 * (steps - step - 1) as f64,
        });
        let last = step + 1 == steps;
        if cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0 && !last {
            if !val.is_empty() {
                on_event(Event::Eval { step: step + 1, val_loss: val_loss(model, &params, val, cfg)? });
            }
            save_checkpoint(&checkpoint_dir(out), step + 1, &params, &opt, fingerprint)?;
            on_event(Event::Checkpoint { step: step + 1 });
        }
    }
    let val_loss = if val.is_empty() { None } else { Some(val_loss(model, &params, val, cfg)?) };
    if let Some(v) = val_loss {
        on_event(Event::Eval { step: steps, val_loss: v });
    }
    on_event(Event::Done { steps, train_loss: recent_loss.unwrap_or(f32::NAN), val_loss });
    Ok(params)
}

fn add_scaled(acc: &mut Grads, g: &Grads, scale: f32) {
    for (a, b) in acc.a.iter_mut().chain(acc.b.iter_mut()).zip(g.a.iter().chain(g.b.iter())) {
        a.iter_mut().zip(b).for_each(|(x, &y)| *x += scale * y);
    }
}

/// Scales the gradient down to `max_norm` (global L2) when above; returns the norm before.
fn clip(g: &mut Grads, max_norm: f32) -> f32 {
    let norm = g.a.iter().chain(g.b.iter()).flatten().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / norm;
        g.a.iter_mut().chain(g.b.iter_mut()).flatten().for_each(|v| *v *= s);
    }
    norm
}

/// The loss of the validation examples (no dropout, no gradients) in the run's precision.
fn val_loss(model: &mut Model, params: &LoraParams, val: &[Example], cfg: &FinetuneConfig) -> Result<f32, TrainError> {
    let opts = StepOptions { backward: false, f32_activations: cfg.f32_activations, ..StepOptions::default() };
    Ok(loss_and_grads_with(model, params, val, &opts)?.0)
}

/// A hash of what decides a run's trajectory: a checkpoint of another config or data is
/// not resumed.
fn fingerprint(cfg: &FinetuneConfig, train: &[Example]) -> u64 {
    let text = format!("{cfg:?}");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |b: u64| h = (h ^ b).wrapping_mul(0x0100_0000_01b3);
    text.bytes().for_each(|b| eat(u64::from(b)));
    for e in train {
        e.tokens.iter().for_each(|&t| eat(u64::from(t)));
        e.weights.iter().for_each(|w| eat(u64::from(w.to_bits())));
    }
    h
}

const STATE: &str = "trainer_state.json";
const TENSORS: &str = "state.safetensors";

/// Writes pairs and AdamW state (`STATE` last, so a checkpoint is whole once it exists).
fn save_checkpoint(
    dir: &Path,
    step: usize,
    params: &LoraParams,
    opt: &AdamW,
    fingerprint: u64,
) -> Result<(), TrainError> {
    let io = |e: std::io::Error| TrainError::Data(format!("{}: cannot write the checkpoint: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let _ = std::fs::remove_file(dir.join(STATE));
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (i, p) in params.pairs.iter().enumerate() {
        for (kind, values, shape) in [
            ("a", &p.a, vec![p.rank, p.cols]),
            ("b", &p.b, vec![p.rows, p.rank]),
            ("m_a", &opt.m.a[i], vec![p.rank, p.cols]),
            ("v_a", &opt.v.a[i], vec![p.rank, p.cols]),
            ("m_b", &opt.m.b[i], vec![p.rows, p.rank]),
            ("v_b", &opt.v.b[i], vec![p.rows, p.rank]),
        ] {
            tensors.push((format!("{}.{kind}", p.target), shape, values.as_slice()));
        }
    }
    crate::adapter::write_safetensors(&dir.join(TENSORS), &tensors).map_err(|e| TrainError::Data(e.to_string()))?;
    let state = json!({"step": step, "adamw_step": opt.step, "fingerprint": format!("{fingerprint:016x}")});
    let text = serde_json::to_vec_pretty(&state).map_err(|e| TrainError::Data(e.to_string()))?;
    crate::adapter::write_atomic(&dir.join(STATE), &text).map_err(|e| TrainError::Data(e.to_string()))
}

/// The checkpoint in `dir`, if one exists for this run.
fn load_checkpoint(
    dir: &Path,
    like: &LoraParams,
    fingerprint: u64,
) -> Result<Option<(usize, LoraParams, AdamW)>, TrainError> {
    let Ok(text) = std::fs::read_to_string(dir.join(STATE)) else { return Ok(None) };
    let bad = |reason: String| TrainError::Data(format!("{}: {reason}", dir.display()));
    let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("{STATE}: {e}")))?;
    if state["fingerprint"].as_str() != Some(format!("{fingerprint:016x}").as_str()) {
        return Err(bad(
            "the checkpoint is of another configuration or dataset; remove it, or run without --resume".into()
        ));
    }
    let step = state["step"].as_u64().ok_or_else(|| bad(format!("{STATE} has no step")))? as usize;
    let st = SafetensorsModel::open(dir.join(TENSORS)).map_err(|e| bad(e.to_string()))?;
    let read = |name: String, len: usize| -> Result<Vec<f32>, TrainError> {
        let t = st.tensor(&name).ok_or_else(|| bad(format!("{name} is missing")))?;
        let v = crate::adapter::to_f32(t.dtype, t.data).ok_or_else(|| bad(format!("{name}: not float")))?;
        if v.len() != len {
            return Err(bad(format!("{name}: {} values, want {len}", v.len())));
        }
        Ok(v)
    };
    let mut params = like.clone();
    let mut opt = AdamW::new(AdamWConfig::default(), like);
    opt.step = state["adamw_step"].as_u64().unwrap_or(step as u64);
    for (i, p) in params.pairs.iter_mut().enumerate() {
        p.a = read(format!("{}.a", p.target), p.a.len())?;
        p.b = read(format!("{}.b", p.target), p.b.len())?;
        opt.m.a[i] = read(format!("{}.m_a", p.target), p.a.len())?;
        opt.v.a[i] = read(format!("{}.v_a", p.target), p.a.len())?;
        opt.m.b[i] = read(format!("{}.m_b", p.target), p.b.len())?;
        opt.v.b[i] = read(format!("{}.v_b", p.target), p.b.len())?;
    }
    Ok(Some((step, params, opt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_warms_up_then_decays_to_zero() {
        let cfg = FinetuneConfig { lr: 1.0, warmup_ratio: 0.1, ..FinetuneConfig::default() };
        assert_eq!(lr_at(&cfg, 0, 100), 0.0);
        assert!((lr_at(&cfg, 5, 100) - 0.5).abs() < 1e-6);
        assert!((lr_at(&cfg, 10, 100) - 1.0).abs() < 1e-6);
        assert!((lr_at(&cfg, 55, 100) - 0.5).abs() < 1e-6);
        assert!(lr_at(&cfg, 99, 100) < 0.001);
    }

    #[test]
    fn batches_cover_each_example_once_per_epoch_in_a_seeded_order() {
        let lengths = [5, 1, 9, 3, 7, 2, 8];
        let a = epoch_batches(&lengths, 2, 1, 0);
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(&lengths, 2, 1, 0));
        assert_ne!(a, epoch_batches(&lengths, 2, 1, 1));
        // Neighbours in length share a batch.
        assert!(a.iter().any(|b| b.contains(&1) && b.contains(&5)));
    }
}
