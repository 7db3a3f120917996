//! Training speed, for bench/train (a measurement, not a check: `--ignored`). LoRA of rank
//! `OWL_BENCH_RANK` (default 8, alpha 2·rank) on every projection of `OWL_BENCH_MODEL` (a
//! GGUF or Hugging Face directory; default the smollm2 demo model), AdamW steps on random
//! token batches of `OWL_BENCH_BATCH` × `OWL_BENCH_SEQ` (4 × 64), `OWL_BENCH_STEPS` steps
//! (5); prints one JSON line: tokens/s after the first step, and peak RSS.

use std::time::Instant;

use owl_models::{LoadOptions, Model};
use owl_train::train::finetune::{init_params, FinetuneConfig};
use owl_train::train::{loss_and_grads, AdamW, AdamWConfig, Example};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore]
fn training_step_speed() {
    let path = std::env::var_os("OWL_BENCH_MODEL").map_or_else(|| owl_test::demo_model("smollm2"), Into::into);
    let threads = env("OWL_BENCH_THREADS", 2);
    let (batch, seq, rank, steps) =
        (env("OWL_BENCH_BATCH", 4), env("OWL_BENCH_SEQ", 64), env("OWL_BENCH_RANK", 8), env("OWL_BENCH_STEPS", 5));
    let mut model = Model::load(&path, &LoadOptions { threads, max_batch_tokens: 512 }).unwrap();
    let cfg = FinetuneConfig { rank, alpha: 2.0 * rank as f32, ..FinetuneConfig::default() };
    let mut params = init_params(&model, &cfg).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &params);
    let vocab = model.vocab_size() as u64;
    let mut state = 1u64;
    let mut times = Vec::new();
    for _ in 0..steps {
        let examples: Vec<Example> = (0..batch)
            .map(|_| {
                Example::all(
                    (0..seq)
                        .map(|_| {
                            state =
                                state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                            (100 + (state >> 33) % (vocab - 200)) as u32
                        })
                        .collect(),
                )
            })
            .collect();
        let t = Instant::now();
        let (_, grads) = loss_and_grads(&mut model, &params, &examples).unwrap();
        opt.update(&mut params, &grads, 1e-4);
        times.push(t.elapsed().as_secs_f64());
    }
    let measured = if times.len() > 1 { &times[1..] } else { &times[..] };
    let tokens_per_s = (batch * seq * measured.len()) as f64 / measured.iter().sum::<f64>();
    // SAFETY: getrusage writes the struct it is given.
    let peak = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage.ru_maxrss as u64 * 1024
    };
    println!("{}", serde_json::json!({"side": "owl", "tokens_per_s": tokens_per_s, "peak_rss": peak}));
}
