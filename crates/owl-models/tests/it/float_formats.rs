//! F16 and BF16 checkpoints are computed in their stored format (no conversion at load):
//! a model stored as BF16 (or F16) gives the logits of the same values stored as F32.

use half::{bf16, f16};
use owl_models::{KvDtype, LoadOptions, Model};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::common::*;

/// Writes the llama fixture twice: rounded through `round` and stored as `dtype`, and the
/// same rounded values stored as F32.
fn write_pair(dir: &std::path::Path, dtype: Dtype, round: fn(f32) -> (f32, [u8; 2])) {
    let src = variant_dir("llama");
    let tensors = owl_test::load_safetensors_f32(&src.join("model.safetensors"));
    let mut half_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut f32_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &tensors {
        let (mut hb, mut fb) = (Vec::new(), Vec::new());
        for &x in &t.data {
            let (r, bits) = round(x);
            hb.extend_from_slice(&bits);
            fb.extend_from_slice(&r.to_le_bytes());
        }
        half_bytes.push((name.clone(), t.shape.clone(), hb));
        f32_bytes.push((name.clone(), t.shape.clone(), fb));
    }
    for (sub, list, dt) in [("half", &half_bytes, dtype), ("f32", &f32_bytes, Dtype::F32)] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(src.join("config.json"), d.join("config.json")).unwrap();
        let views: Vec<(String, TensorView<'_>)> =
            list.iter().map(|(n, s, b)| (n.clone(), TensorView::new(dt, s.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &d.join("model.safetensors")).unwrap();
    }
}

fn logits_of(dir: &std::path::Path) -> Vec<f32> {
    let mut model = Model::load_hf_dir(dir, &LoadOptions { threads: 2, max_batch_tokens: 32 }).unwrap();
    let prompt = ids(&reference("llama")["input_ids"]);
    let mut kv = model.new_kv_cache(1, 64, KvDtype::F32).unwrap();
    prompt_logits(&mut model, &mut kv, 0, &prompt)
}

#[test]
fn bf16_and_f16_weights_compute_like_their_f32_values() {
    type Rounding = fn(f32) -> (f32, [u8; 2]);
    let cases: [(&str, Dtype, Rounding); 2] = [
        ("BF16", Dtype::BF16, |x| {
            let h = bf16::from_f32(x);
            (h.to_f32(), h.to_bits().to_le_bytes())
        }),
        ("F16", Dtype::F16, |x| {
            let h = f16::from_f32(x);
            (h.to_f32(), h.to_bits().to_le_bytes())
        }),
    ];
    for (name, dtype, round) in cases {
        let tmp = tempfile::tempdir().unwrap();
        write_pair(tmp.path(), dtype, round);
        let stored = logits_of(&tmp.path().join("half"));
        let widened = logits_of(&tmp.path().join("f32"));
        let e = owl_test::assert_close(&format!("{name} weights vs their f32 values"), &stored, &widened, 1e-5);
        // And the rounding itself moved the logits (the test would notice a silent f32 path).
        let r = reference("llama");
        let moved = max_abs(&stored, &r["logits"].data);
        println!("{name}: vs same values in F32 {e:.1e}; vs original F32 weights {moved:.1e}");
        assert!(moved > 1e-4, "{name}: rounding should be visible");
    }
}

#[test]
fn model_is_send() {
    fn send<T: Send>() {}
    send::<Model>();
    send::<owl_models::KvCache>();
}
