//! Teacher-forced comparison with a `real_models` reference (transformers' float32 pass
//! over a demo GGUF's dequantized weights): the model is fed the prompt and the reference's
//! greedy continuation in one batch, and every step's log-probabilities of the reference's
//! top 5 are compared with the reference's. Prints, per prompt, the worst |Δ log-prob|, the
//! first step where owl's argmax differs, and each step's reference / owl top1−top2 margin.
//!
//!   cargo run --release -p owl-models --example reference_logprobs -- MODEL.gguf \
//!       ../shared/fixtures/real_models/<model>/reference.json [--f32-activations] [--f32-kv]

use std::error::Error;
use std::path::PathBuf;

use owl_models::{ActivationPrecision, Batch, KvDtype, LoadOptions, Model};
use serde_json::Value;

fn ids(v: &Value) -> Result<Vec<u32>, Box<dyn Error>> {
    v.as_array()
        .ok_or("expected an id list")?
        .iter()
        .map(|x| x.as_u64().map(|i| i as u32).ok_or_else(|| "expected an id".into()))
        .collect()
}

fn floats(v: &Value) -> Result<Vec<f64>, Box<dyn Error>> {
    v.as_array()
        .ok_or("expected a list")?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| "expected a number".into()))
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model_path), Some(reference)) = (args.get(1), args.get(2)) else {
        return Err("usage: reference_logprobs MODEL.gguf reference.json [--f32-activations] [--f32-kv]".into());
    };
    let kv = if args.iter().any(|a| a == "--f32-kv") { KvDtype::F32 } else { KvDtype::F16 };
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(reference)?)?;
    let mut model = Model::load(&PathBuf::from(model_path), &LoadOptions { threads: 2, max_batch_tokens: 64 })?;
    if args.iter().any(|a| a == "--f32-activations") {
        model.set_activation_precision(ActivationPrecision::F32);
    }
    let vocab = model.vocab_size();
    for p in reference["prompts"].as_array().ok_or("no prompts")? {
        let prompt = ids(&p["input_ids"])?;
        let greedy = ids(&p["greedy"]["ids"])?;
        let steps = p["greedy"]["steps"].as_array().ok_or("no steps")?;
        let mut tokens = prompt.clone();
        tokens.extend_from_slice(&greedy[..greedy.len() - 1]);
        let mut batch = Batch::default();
        for (i, &t) in tokens.iter().enumerate() {
            batch.push(t, 0, i, i + 1 >= prompt.len());
        }
        let mut cache = model.new_kv_cache(1, tokens.len().next_power_of_two(), kv)?;
        let mut logits = vec![0f32; greedy.len() * vocab];
        model.forward(&batch, &mut cache, &mut logits)?;
        let (mut worst, mut first_flip, mut line) = (0f64, None, String::new());
        for (s, (step, l)) in steps.iter().zip(logits.chunks_exact(vocab)).enumerate() {
            let max = l.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let top = ids(&step["top5_ids"])?;
            for (&id, lp) in top.iter().zip(floats(&step["top5_logprobs"])?) {
                worst = worst.max((l[id as usize] as f64 - lse - lp).abs());
            }
            let argmax = l.iter().enumerate().fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a }).0;
            if argmax as u32 != greedy[s] && first_flip.is_none() {
                first_flip = Some(s);
            }
            let margin = step["top1_minus_top2_logit"].as_f64().ok_or("no margin")?;
            let ours = (l[top[0] as usize] - l[top[1] as usize]) as f64;
            line += &format!(" {s}:{margin:.2}/{ours:.2}{}", if argmax as u32 != greedy[s] { "X" } else { "" });
        }
        println!(
            "{}: worst |dlogprob| over the reference top 5: {worst:.3}; first argmax flip: {}\n {line}",
            p["key"].as_str().unwrap_or("?"),
            first_flip.map_or("none".to_string(), |s| format!("step {s}"))
        );
    }
    Ok(())
}
