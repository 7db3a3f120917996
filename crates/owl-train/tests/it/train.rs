//! A LoRA training step against ../shared/fixtures/lora (transformers + peft, float32):
//! the loss and every LoRA gradient of one step on its batch, and the adapter after 1 and
//! after 5 AdamW steps (lr 1e-3, same batch each step).

use std::collections::HashMap;

use owl_test::FixtureTensor;
use owl_train::train::{loss_and_grads, loss_and_grads_with, AdamW, AdamWConfig, Example, LoraParams, StepOptions};
use owl_train::{AdapterFile, Lineage};

use crate::{base_dir, load, lora_dir};

fn fixture(name: &str) -> HashMap<String, FixtureTensor> {
    owl_test::load_safetensors_f32(&lora_dir().join(name))
}

/// The two sequences of the fixture's batch.
fn batch() -> Vec<Example> {
    let t = &fixture("train_batch.safetensors")["train_input_ids"];
    let ids: Vec<u32> = t.ints.as_ref().expect("ids").iter().map(|&i| i as u32).collect();
    ids.chunks(16).map(|c| Example::all(c.to_vec())).collect()
}

/// `base_model.model.X.lora_A.weight` → (`X.weight`, A?).
fn target_of(name: &str) -> (String, bool) {
    let body = name.strip_prefix("base_model.model.").expect("PEFT name");
    match body.strip_suffix(".lora_A.weight") {
        Some(m) => (format!("{m}.weight"), true),
        None => (format!("{}.weight", body.strip_suffix(".lora_B.weight").expect("lora_B")), false),
    }
}

/// Largest error of `ours` against the fixture tensors, relative to `atol + rtol·|want|`.
fn worst(
    params: &LoraParams,
    values: &dyn Fn(usize, bool) -> Vec<f32>,
    want: &HashMap<String, FixtureTensor>,
    atol: f32,
    rtol: f32,
) -> (f32, String) {
    let mut worst = (0f32, String::new());
    for (name, t) in want {
        let (target, is_a) = target_of(name);
        let i = params.get(&target).unwrap_or_else(|| panic!("no pair for {target}"));
        let ours = values(i, is_a);
        assert_eq!(ours.len(), t.data.len(), "{name}");
        for (o, w) in ours.iter().zip(&t.data) {
            let ratio = (o - w).abs() / (atol + rtol * w.abs());
            if ratio > worst.0 {
                worst = (ratio, format!("{name}: owl {o}, reference {w}"));
            }
        }
    }
    worst
}

fn params() -> (owl_models::Model, LoraParams) {
    let model = load(&base_dir());
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap().bind(&model, Lineage::Strict).unwrap();
    let params = LoraParams::from_adapter(&adapter);
    (model, params)
}

#[test]
fn loss_and_every_lora_gradient_of_one_step() {
    let (mut model, params) = params();
    assert_eq!(params.pairs.len(), 14);
    let losses = &fixture("train_batch.safetensors")["losses"].data;
    let (loss, grads) = loss_and_grads(&mut model, &params, &batch()).unwrap();
    assert!((loss - losses[0]).abs() < 1e-5 * losses[0], "loss {loss} vs {}", losses[0]);
    let want = fixture("train_grads_step1.safetensors");
    assert_eq!(want.len(), 28);
    let grad = |i: usize, a: bool| if a { grads.a[i].clone() } else { grads.b[i].clone() };
    // Gradients span 4.6e-6 .. 0.27; float32 in another order of operations.
    let (ratio, at) = worst(&params, &grad, &want, 1e-6, 1e-3);
    assert!(ratio <= 1.0, "gradient off by {ratio}x the tolerance at {at}");
    // Checkpointed (no tape kept: every layer runs again for its gradient): the same bits.
    let opts = StepOptions { tape_budget: 0, ..StepOptions::default() };
    let (loss2, grads2) = loss_and_grads_with(&mut model, &params, &batch(), &opts).unwrap();
    assert_eq!((loss2, &grads2), (loss, &grads), "checkpointing changed the gradients");
}

#[test]
fn adamw_steps_give_the_reference_adapter() {
    let (mut model, mut params) = params();
    let losses = &fixture("train_batch.safetensors")["losses"].data;
    let mut opt = AdamW::new(AdamWConfig::default(), &params);
    let batch = batch();
    for (step, &want_loss) in losses[..5].iter().enumerate() {
        let (loss, grads) = loss_and_grads(&mut model, &params, &batch).unwrap();
        assert!((loss - want_loss).abs() < 1e-4 * want_loss, "step {}: loss {loss} vs {want_loss}", step + 1);
        opt.update(&mut params, &grads, 1e-3);
        if step == 0 {
            let want = fixture("train_params_after_1_step.safetensors");
            let value = |i: usize, a: bool| if a { params.pairs[i].a.clone() } else { params.pairs[i].b.clone() };
            // Each element moved by almost exactly ±lr: a wrong sign is off by 2e-3.
            let (ratio, at) = worst(&params, &value, &want, 1e-6, 1e-5);
            assert!(ratio <= 1.0, "after 1 step: off by {ratio}x the tolerance at {at}");
        }
    }
    let want = fixture("train_params_after_5_steps.safetensors");
    let value = |i: usize, a: bool| if a { params.pairs[i].a.clone() } else { params.pairs[i].b.clone() };
    let (ratio, at) = worst(&params, &value, &want, 1e-5, 1e-4);
    assert!(ratio <= 1.0, "after 5 steps: off by {ratio}x the tolerance at {at}");
    let (loss, _) = loss_and_grads(&mut model, &params, &batch).unwrap();
    assert!((loss - losses[5]).abs() < 1e-4 * losses[5], "after 5 steps: loss {loss} vs {}", losses[5]);
}

/// Finite differences of the loss through the whole model agree with the backward pass on
/// the largest gradients of A and B, without and with LoRA dropout (its masks are drawn by
/// hashing, so the forward, the backward and both nudged losses see the same one; the loss
/// is float32: a step of 1e-2 keeps its rounding far below the change).
#[test]
fn finite_differences_through_the_model() {
    let (mut model, params) = params();
    let batch = batch();
    for opts in [StepOptions::default(), StepOptions { dropout: 0.3, seed: 7, step: 3, ..StepOptions::default() }] {
        let (_, grads) = loss_and_grads_with(&mut model, &params, &batch, &opts).unwrap();
        for is_a in [true, false] {
            // The pair and element with the largest gradient of this kind.
            let (mut best, mut at) = (0f32, (0, 0));
            for (i, g) in (if is_a { &grads.a } else { &grads.b }).iter().enumerate() {
                for (j, &v) in g.iter().enumerate() {
                    if v.abs() > best {
                        (best, at) = (v.abs(), (i, j));
                    }
                }
            }
            let h = 1e-2f32;
            let mut loss_with = |delta: f32| {
                let mut p = params.clone();
                let values = if is_a { &mut p.pairs[at.0].a } else { &mut p.pairs[at.0].b };
                values[at.1] += delta;
                f64::from(loss_and_grads_with(&mut model, &p, &batch, &opts).unwrap().0)
            };
            let fd = (loss_with(h) - loss_with(-h)) / f64::from(2.0 * h);
            let g = f64::from(if is_a { grads.a[at.0][at.1] } else { grads.b[at.0][at.1] });
            let which = if is_a { "A" } else { "B" };
            assert!((fd - g).abs() < 0.02 * g.abs(), "{which} {at:?} ({opts:?}): finite difference {fd}, backward {g}");
        }
    }
    // Dropout changes the loss (a mask was applied) and is the same for the same step.
    let opts = StepOptions { dropout: 0.3, seed: 7, step: 3, ..StepOptions::default() };
    let with = loss_and_grads_with(&mut model, &params, &batch, &opts).unwrap().0;
    assert_eq!(with, loss_and_grads_with(&mut model, &params, &batch, &opts).unwrap().0);
    assert_ne!(with, loss_and_grads(&mut model, &params, &batch).unwrap().0);
}

/// `StepOptions::f32_activations` on a quantized (Q8_0) base: the step computes as the
/// float32 model of the dequantized weights does (that model written out as an F32 GGUF
/// by a merge at scale 0), while the default multiplies in 8 bits — close to it, but not
/// equal — and leaves the model's own precision as it was.
#[test]
fn f32_activations_on_a_quantized_base_compute_as_its_float32_weights() {
    use owl_convert::{convert, ConvertOptions, FileType};
    use owl_kernels::ops::ActivationPrecision;
    use owl_train::{merge, AdapterSpec, MergeOptions};

    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("llama.q8_0.gguf");
    let options = ConvertOptions { file_type: FileType::Q8_0, no_tokenizer: true, tokenizer_pre: None };
    convert(&base_dir(), &q8, &options, &|_| {}).unwrap();
    let dequantized = tmp.path().join("llama.q8_0-as-f32.gguf");
    let spec = AdapterSpec { path: lora_dir(), name: None, scale: 0.0 };
    let options = MergeOptions { file_type: Some(FileType::F32), ..MergeOptions::default() };
    merge(&q8, &[spec], &dequantized, &options, &|_| {}).unwrap();

    let grads_on = |path: &std::path::Path, f32_activations: bool| {
        let mut model = load(path);
        let adapter = AdapterFile::open(&lora_dir(), None).unwrap().bind(&model, Lineage::Strict).unwrap();
        let params = LoraParams::from_adapter(&adapter);
        // The step's own precision holds for the step only: start from the other one.
        let before = if f32_activations { ActivationPrecision::Quantized } else { ActivationPrecision::F32 };
        model.set_activation_precision(before);
        let opts = StepOptions { f32_activations, ..StepOptions::default() };
        let (loss, grads) = loss_and_grads_with(&mut model, &params, &batch(), &opts).unwrap();
        assert_eq!(model.activation_precision(), before, "the step left the model's precision changed");
        let mut all = vec![loss];
        for (a, b) in grads.a.iter().zip(&grads.b) {
            all.extend_from_slice(a);
            all.extend_from_slice(b);
        }
        all
    };
    // Largest difference relative to the largest magnitude (gradients reach ~0.3).
    let rel = |x: &[f32], y: &[f32]| {
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        crate::max_abs(x, y) / scale
    };
    let float = grads_on(&dequantized, false);
    assert_eq!(grads_on(&dequantized, true), float, "a float32 base multiplies in f32 either way");
    let f32_products = grads_on(&q8, true);
    let int8_products = grads_on(&q8, false);
    let (err_f32, err_int8) = (rel(&f32_products, &float), rel(&int8_products, &float));
    println!("Q8_0 base vs its float32 weights: f32 products {err_f32:.2e}, 8-bit products {err_int8:.2e}");
    // Dequantized rows against f32 activations run the float weights' sums (measured: the
    // same bits); 1e-6 leaves room for a kernel that orders them differently.
    assert!(err_f32 <= 1e-6, "f32 products differ from the float32 weights' by {err_f32:e}");
    // 8-bit activations and output gradients: measured 1.9e-3 — a real difference (the flag
    // reached the products), within the percent of 8-bit numerics.
    assert!(err_int8 > 1e-4 && err_int8 < 2e-2, "8-bit products differ by {err_int8:e}");
}

/// Frozen weights kept unpacked in lane panels (`StepOptions::panel_budget`) give the bits
/// of unpacking them on every call, on a quantized (Q8_0) base, and the default budget does
/// keep them (where the kernels have panels).
#[test]
fn panels_kept_or_not_give_the_same_step() {
    use owl_convert::{convert, ConvertOptions, FileType};

    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("llama.q8_0.gguf");
    let options = ConvertOptions { file_type: FileType::Q8_0, no_tokenizer: true, tokenizer_pre: None };
    convert(&base_dir(), &q8, &options, &|_| {}).unwrap();
    let mut model = load(&q8);
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap().bind(&model, Lineage::Strict).unwrap();
    let params = LoraParams::from_adapter(&adapter);
    let none = StepOptions { panel_budget: 0, ..StepOptions::default() };
    let unpacked = loss_and_grads_with(&mut model, &params, &batch(), &none).unwrap();
    let head_t = model.head().transposed_q8_0().expect("a Q8_0 head has a transpose");
    assert!(head_t.prepacked_panels().is_none(), "a zero budget kept panels");
    let kept = loss_and_grads_with(&mut model, &params, &batch(), &StepOptions::default()).unwrap();
    let head_t = model.head().transposed_q8_0().expect("a Q8_0 head has a transpose");
    if head_t.panel_bytes().is_some() {
        assert!(head_t.prepacked_panels().is_some(), "the default budget kept no panels");
    } else {
        println!("the active kernels have no lane panels: both steps unpacked nothing");
    }
    assert_eq!(kept, unpacked, "kept panels changed the step");
}
