//! How fast a training step runs on smollm2 (a measurement, not a check: `--ignored`).

use std::time::Instant;

use owl_models::{LoadOptions, Model};
use owl_train::train::{loss_and_grads, Example, LoraParams, TrainPair};

#[test]
#[ignore]
fn training_step_speed_on_smollm2() {
    let path = owl_test::demo_model("smollm2");
    let mut model = Model::load(&path, &LoadOptions { threads: 2, max_batch_tokens: 512 }).unwrap();
    let file = model.file().unwrap().clone();
    let mut pairs = Vec::new();
    for (name, &[rows, cols]) in &file.matrices {
        if name.starts_with("blk.") && !name.contains("norm") {
            pairs.push(TrainPair {
                target: name.clone(),
                rows,
                cols,
                rank: 8,
                scale: 2.0,
                a: vec![0.01; 8 * cols],
                b: vec![0.0; rows * 8],
            });
        }
    }
    let params = LoraParams::new(pairs);
    let batch: Vec<Example> =
        (0..4).map(|s| Example::all((0..64).map(|i| (i * 37 + s * 11) % 40000 + 100).collect())).collect();
    for _ in 0..2 {
        let t = Instant::now();
        let (loss, _) = loss_and_grads(&mut model, &params, &batch).unwrap();
        let s = t.elapsed().as_secs_f64();
        eprintln!("loss {loss:.3}: {} tokens in {s:.2} s = {:.1} tokens/s", 4 * 64, 256.0 / s);
    }
}
