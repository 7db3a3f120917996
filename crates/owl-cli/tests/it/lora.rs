//! `--lora` on `generate`, `run` and `perplexity`, with a random PEFT adapter on
//! smollm2's q and v projections (its numerics against peft are owl-train's fixture tests).

#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::Path;

use owl_train::adapter::{Naming, RawPair};
use owl_train::AdapterFile;
use serde_json::Value;

use crate::support::{assert_one_line_error, owl, owl_json};

const TEXT: &str = "/usr/share/common-licenses/GPL-3";
const PROMPT: &str = "The capital of France is";

/// A rank-8 adapter on every q_proj (576x576) and v_proj (192x576) of SmolLM2-135M, values
/// from a fixed LCG: large enough to change what the model says.
fn random_adapter(dir: &Path, base_model: &str) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    };
    let rank = 8;
    let mut pairs = Vec::new();
    for layer in 0..30 {
        for (proj, rows) in [("q_proj", 576), ("v_proj", 192)] {
            let a = (0..rank * 576).map(|_| next()).collect();
            let b = (0..rows * rank).map(|_| next()).collect();
            let target = format!("model.layers.{layer}.self_attn.{proj}.weight");
            pairs.push(RawPair { target, rows, cols: 576, rank, a, b, scale: 2.0 });
        }
    }
    let adapter = AdapterFile {
        path: dir.to_path_buf(),
        name: "random".into(),
        naming: Naming::Hf,
        pairs,
        base_architecture: None,
        base_model: Some(base_model.into()),
        alpha: 16.0,
    };
    adapter.write_peft(dir).unwrap();
}

fn ids(out: &Value) -> Vec<u64> {
    out["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn generate(lora: &[OsString]) -> Value {
    let mut args: Vec<OsString> =
        ["generate", "smollm2", PROMPT, "--temperature", "0", "-n", "8", "--json"].map(OsString::from).to_vec();
    args.extend(lora.iter().cloned());
    owl_json(args)
}

fn lora_arg(dir: &Path, suffix: &str) -> Vec<OsString> {
    let mut spec = dir.as_os_str().to_owned();
    spec.push(suffix);
    vec!["--lora".into(), spec]
}

#[test]
fn adapters_change_generation_and_scale_zero_is_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    random_adapter(&dir, "HuggingFaceTB/SmolLM2-135M-Instruct");

    let base = ids(&generate(&[]));
    assert_eq!(ids(&generate(&lora_arg(&dir, ":0"))), base, "scale 0 is the base model");
    let adapted = ids(&generate(&lora_arg(&dir, "")));
    assert_ne!(adapted, base, "the adapter changes the reply");
    // Two halves of the adapter are the adapter (up to float rounding: compare the text's
    // first tokens, which are far from ties for an adapter this strong).
    let mut halves = lora_arg(&dir, ":0.5");
    halves.extend(lora_arg(&dir, ":0.5"));
    assert_eq!(ids(&generate(&halves))[..2], adapted[..2]);

    // What was applied is said on stderr.
    let mut args: Vec<OsString> =
        ["run", "smollm2", "Say hi.", "-n", "4", "--temperature", "0"].map(Into::into).to_vec();
    args.extend(lora_arg(&dir, ":0.8"));
    let run = owl(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("LoRA adapter: 60 matrices, rank 8, scale 0.8"), "{}", run.stderr);
}

#[test]
fn adapters_for_another_base_are_refused_unless_vouched_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("qwen-adapter");
    random_adapter(&dir, "Qwen/Qwen2.5-Coder-0.5B-Instruct");
    let mut args: Vec<OsString> = ["generate", "smollm2", PROMPT, "-n", "2"].map(Into::into).to_vec();
    args.extend(lora_arg(&dir, ""));
    let err = assert_one_line_error(&owl(&args));
    assert!(err.contains("Qwen2.5-Coder-0.5B-Instruct") && err.contains("--lora-any-base"), "{err}");
    args.push("--lora-any-base".into());
    let run = owl(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // A directory that is no adapter.
    let err = assert_one_line_error(&owl(["generate", "smollm2", PROMPT, "--lora", tmp.path().to_str().unwrap()]));
    assert!(err.contains("adapter_config.json"), "{err}");
}

#[test]
fn perplexity_with_an_adapter() {
    assert!(Path::new(TEXT).exists(), "{TEXT} is needed (Debian's base-files)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    random_adapter(&dir, "HuggingFaceTB/SmolLM2-135M-Instruct");
    let ppl = |lora: &[OsString]| {
        let mut args: Vec<OsString> =
            ["perplexity", "smollm2", TEXT, "--ctx", "128", "--chunks", "2", "--json"].map(Into::into).to_vec();
        args.extend(lora.iter().cloned());
        owl_json(args)["ppl"].as_f64().unwrap()
    };
    let base = ppl(&[]);
    assert_eq!(ppl(&lora_arg(&dir, ":0")), base);
    // The adapter is applied to every window (a random one moves perplexity either way:
    // measured 26.4 against the base's 28.7).
    let adapted = ppl(&lora_arg(&dir, ""));
    assert!((adapted - base).abs() > 0.02 * base, "{adapted} vs {base}");
}
