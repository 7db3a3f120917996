//! Adapters owl writes, loaded by PEFT itself (`peft` with torch and transformers from PyPI,
//! in a cached venv made by scripts/peft_check/setup.sh; a failed install fails the test):
//! `PeftModel.from_pretrained` reads them and its logits equal owl's with the same adapter
//! on the float32 fixture base.

use std::path::{Path, PathBuf};
use std::process::Command;

use owl_train::adapter::RawPair;
use owl_train::AdapterFile;

use crate::{base_dir, load, logits, lora_dir, max_abs, prompt, set_of};

fn peft_python() -> PathBuf {
    owl_test::setup_python("peft_check/setup.sh", "torch, transformers and peft")
}

/// PEFT's logits for the prompt, `[positions × vocab]`.
fn peft_logits(python: &Path, base: &Path, adapter: &Path) -> Vec<f32> {
    let check = owl_test::workspace_root().join("scripts/peft_check/check.py");
    let ids = serde_json::to_string(&prompt()).unwrap();
    let out = Command::new(python)
        .arg(check)
        .arg(base)
        .arg(adapter)
        .arg(ids)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run check.py");
    assert!(
        out.status.success(),
        "peft could not load {}: {}",
        adapter.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check.py prints JSON");
    assert_eq!(v["peft_version"], "0.21.2");
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect()
}

/// The bound for the float32 base.
const TOL: f32 = 1e-3;

#[test]
fn peft_loads_what_owl_writes() {
    let python = peft_python();
    let tmp = tempfile::tempdir().unwrap();
    // The fixture's pairs, with one module given its own alpha and one its own (smaller)
    // rank, so that rank_pattern and alpha_pattern are written and read.
    let mut adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    let down = adapter.pairs.iter().position(|p| p.target == "model.layers.0.mlp.down_proj.weight").unwrap();
    adapter.pairs[down].scale = 0.75;
    let up = adapter.pairs.iter().position(|p| p.target == "model.layers.1.mlp.up_proj.weight").unwrap();
    let RawPair { rows, cols, .. } = adapter.pairs[up];
    let a: Vec<f32> = (0..2 * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 200.0).collect();
    let b: Vec<f32> = (0..rows * 2).map(|i| ((i * 53 % 97) as f32 - 48.0) / 150.0).collect();
    adapter.pairs[up] = RawPair { rank: 2, a, b, scale: 3.0, ..adapter.pairs[up].clone() };
    let dir = tmp.path().join("written");
    adapter.write_peft(&dir).unwrap();

    let written = AdapterFile::open(&dir, None).unwrap();
    let mut model = load(&base_dir());
    let set = set_of(&model, &written, 1.0);
    let ours = logits(&mut model, Some(set));
    let theirs = peft_logits(&python, &base_dir(), &dir);
    let err = max_abs(&ours, &theirs);
    assert!(err < TOL, "owl and peft differ by {err} on owl's adapter");
    // It is not the base: the adapter moves the logits far more than the tolerance.
    let base = logits(&mut model, None);
    assert!(max_abs(&base, &theirs) > 100.0 * TOL);
    // And the untouched fixture adapter through the same script gives the fixture's logits
    // (the script is PEFT's path, not a re-implementation).
    let fixture = peft_logits(&python, &base_dir(), &lora_dir());
    assert!(max_abs(&fixture, &crate::reference("logits_lora")) < 1e-4);
}
