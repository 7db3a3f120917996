//! The activation observer (`owl imatrix`'s window onto the forward pass): every projection
//! shows its input once per forward under its stored name, and that input is what the
//! architecture says it is — for a first projection of a layer, the RMS-normalised residual
//! computed here by hand from the fixture's weights.

use std::sync::{Arc, Mutex};

use owl_models::weights::WeightOrigin;
use owl_models::{ActivationObserver, Batch, KvDtype, Stage};

use crate::common::*;

type Seen = Vec<(WeightOrigin, usize, Vec<f32>)>;

#[derive(Default)]
struct Recorder(Mutex<Seen>);

impl ActivationObserver for Recorder {
    fn observe(&self, origin: &WeightOrigin, x: &[f32], n: usize) {
        self.0.lock().expect("lock").push((origin.clone(), n, x.to_vec()));
    }
}

fn run_observed(variant: &str) -> (Seen, Vec<Vec<f32>>, usize) {
    let r = reference(variant);
    let tokens = ids(&r["input_ids"]);
    let mut model = load_variant(variant, "config.json", 64);
    let recorder = Arc::new(Recorder::default());
    model.set_activation_observer(Some(recorder.clone()));
    let mut kv = new_cache(&model, 1, KvDtype::F32);
    let mut batch = Batch::new();
    batch.push_sequence(0, 0, &tokens, true);
    let mut logits = vec![0.0; tokens.len() * model.vocab_size()];
    let mut residuals = Vec::new();
    model
        .forward_inspect(&batch, &mut kv, &mut logits, &mut |stage, x| {
            if matches!(stage, Stage::Embedding | Stage::Layer(_)) {
                residuals.push(x.to_vec());
            }
        })
        .expect("forward");
    // Observing changes nothing.
    model.set_activation_observer(None);
    let mut fresh = new_cache(&model, 1, KvDtype::F32);
    let plain = prompt_logits(&mut model, &mut fresh, 0, &tokens);
    assert_eq!(plain, logits, "{variant}: the observer changed the logits");
    let seen = std::mem::take(&mut *recorder.0.lock().expect("lock"));
    (seen, residuals, tokens.len())
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    x.chunks_exact(w.len())
        .flat_map(|row| {
            let ms = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / row.len() as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            row.iter().zip(w).map(move |(v, g)| (f64::from(*v) * inv) as f32 * g).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_projection_shows_its_input_once_per_forward() {
    let (seen, residuals, n) = run_observed("llama");
    let weights = owl_test::load_safetensors_f32(&variant_dir("llama").join("model.safetensors"));
    let projections = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
        .into_iter()
        .chain(["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]);
    let mut expected: Vec<String> =
        (0..2).flat_map(|l| projections.clone().map(move |p| format!("model.layers.{l}.{p}.weight"))).collect();
    let mut names: Vec<String> = seen.iter().map(|(o, _, _)| o.tensor.to_string()).collect();
    expected.sort();
    names.sort();
    assert_eq!(names, expected, "the output head is not observed; every decoder projection once");
    let input = |name: &str| {
        let (o, rows, x) = seen.iter().find(|(o, _, _)| &*o.tensor == name).expect(name);
        assert_eq!((o.index, o.of, *rows), (0, 1, n), "{name}");
        x.clone()
    };
    for layer in 0..2 {
        let q = input(&format!("model.layers.{layer}.self_attn.q_proj.weight"));
        let norm = &weights[&format!("model.layers.{layer}.input_layernorm.weight")].data;
        let by_hand = rms_norm(&residuals[layer], norm, 1e-6);
        assert_eq!(q.len(), n * 64);
        let err = max_abs(&q, &by_hand);
        assert!(err < 1e-5, "layer {layer}: q_proj's input is off the normalised residual by {err}");
        for other in ["self_attn.k_proj", "self_attn.v_proj"] {
            assert_eq!(input(&format!("model.layers.{layer}.{other}.weight")), q, "{other}");
        }
        let gate = input(&format!("model.layers.{layer}.mlp.gate_proj.weight"));
        assert_eq!(input(&format!("model.layers.{layer}.mlp.up_proj.weight")), gate);
        assert_ne!(gate, q);
        assert_eq!(input(&format!("model.layers.{layer}.mlp.down_proj.weight")).len(), n * 128);
    }
}

/// Routed experts show only their tokens: per layer the experts' rows add up to
/// tokens × experts per token, and the router sees every token.
#[test]
fn routed_experts_show_the_tokens_routed_to_them() {
    let (seen, _, n) = run_observed("qwen3_moe");
    for layer in 0..2 {
        let prefix = format!("model.layers.{layer}.mlp.experts.");
        let rows: usize = seen
            .iter()
            .filter(|(o, _, _)| o.tensor.starts_with(&prefix) && o.tensor.ends_with("gate_proj.weight"))
            .map(|(_, rows, x)| {
                assert_eq!(x.len(), rows * 64);
                rows
            })
            .sum();
        assert_eq!(rows, n * 2, "layer {layer}: top-2 of 4 experts");
        let router = format!("model.layers.{layer}.mlp.gate.weight");
        let (_, r, _) = seen.iter().find(|(o, _, _)| *o.tensor == *router).expect("router");
        assert_eq!(*r, n);
    }
}
