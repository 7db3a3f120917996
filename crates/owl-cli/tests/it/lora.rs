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

/// `owl serve --lora NAME=DIR`: the adapter is the model `smollm2+NAME` on every route,
/// its requests on the base's sequences; the same greedy reply as `owl generate --lora`,
/// alone or beside a base request.
#[test]
fn serve_selects_adapters_per_request() {
    use crate::serve::{Server, KEY};
    use crate::webui::{get, post};
    use serde_json::json;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    random_adapter(&dir, "HuggingFaceTB/SmolLM2-135M-Instruct");
    let cli = generate(&lora_arg(&dir, ""))["text"].as_str().unwrap().to_string();
    let base_cli = generate(&[])["text"].as_str().unwrap().to_string();

    let spec = format!("rnd={}", dir.display());
    let server = Server::start(&["--lora", &spec, "--parallel", "2"]);
    let (status, models) = get(&format!("{}/v1/models", server.url), Some(KEY));
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["smollm2", "smollm2+rnd"]);

    let url = format!("{}/v1/completions", server.url);
    let completion = |model: &str| {
        let body = json!({"model": model, "prompt": PROMPT, "max_tokens": 8, "temperature": 0});
        let (status, answer) = post(&url, &body);
        assert_eq!(status, 200, "{model}: {answer}");
        assert_eq!(answer["model"], model);
        answer["choices"][0]["text"].as_str().unwrap().to_string()
    };
    assert_eq!(completion("smollm2+rnd"), cli, "the server's adapter reply is the CLI's");
    assert_eq!(completion("smollm2"), base_cli);
    // Both at once: one batch, each reply as it was alone.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| completion("smollm2"));
        let b = s.spawn(|| completion("smollm2+rnd"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a, b), (base_cli.clone(), cli.clone()));

    // Ollama's route and the embeddings take the adapter too.
    let body = json!({"model": "smollm2+rnd", "prompt": PROMPT, "raw": true, "stream": false,
                      "options": {"temperature": 0, "num_predict": 8}});
    let (status, answer) = post(&format!("{}/api/generate", server.url), &body);
    assert_eq!((status, answer["response"].as_str()), (200, Some(cli.as_str())), "{answer}");
    let embed = |model: &str| {
        let (status, answer) =
            post(&format!("{}/v1/embeddings", server.url), &json!({"model": model, "input": PROMPT}));
        assert_eq!(status, 200, "{answer}");
        answer["data"][0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<_>>()
    };
    let (plain, adapted) = (embed("smollm2"), embed("smollm2+rnd"));
    let cos: f64 = plain.iter().zip(&adapted).map(|(x, y)| x * y).sum();
    assert!(cos < 0.999, "the adapter changes the embedding (cosine {cos})");
    let (status, _) = post(&url, &json!({"model": "smollm2+other", "prompt": "Hi"}));
    assert_eq!(status, 404);
    server.stop();

    // serve names each adapter, and one that fits no model is refused at start.
    let err = assert_one_line_error(&owl(["serve", "smollm2", "--lora", dir.to_str().unwrap()]));
    assert!(err.contains("NAME=DIR"), "{err}");
    let qwen = tmp.path().join("qwen");
    random_adapter(&qwen, "Qwen/Qwen2.5-Coder-0.5B-Instruct");
    let err =
        assert_one_line_error(&owl(["serve", "smollm2", "--port", "0", "--lora", &format!("q={}", qwen.display())]));
    assert!(err.contains("fits no model served here") && err.contains("--lora-any-base"), "{err}");
}

/// `owl merge`: the adapter baked into smollm2's weights. Without `--type` the file keeps
/// the base's types (Q4_1) and metadata; with `--type q8_0` it behaves like the adapter
/// applied unmerged, up to Q8_0's rounding. (Merging into Q4_1 rounds W + ΔW to 4 bits a
/// second time: that moved perplexity by up to 15 % in either direction with random
/// adapters, which is why the comparison runs on Q8_0.)
#[test]
fn merge_bakes_the_adapter_in() {
    assert!(Path::new(TEXT).exists(), "{TEXT} is needed (Debian's base-files)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adapter");
    random_adapter(&dir, "HuggingFaceTB/SmolLM2-135M-Instruct");
    let merge = |out: &Path, extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["merge".into(), "smollm2".into(), "--lora".into(), dir.clone().into()];
        args.extend(["-o".into(), out.as_os_str().to_owned()]);
        args.extend(extra.iter().map(OsString::from));
        let run = owl(&args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run.stderr
    };
    let kept = tmp.path().join("merged-q4_1.gguf");
    let note = merge(&kept, &[]);
    assert!(note.contains("60 of 272 tensors rewritten"), "{note}");
    let tensor_type = |file: &Path, name: &str| {
        let inspect = owl_json([OsString::from("inspect"), file.into(), "--json".into(), "--tensors".into()]);
        let t = inspect["tensors"].as_array().unwrap().iter().find(|t| t["name"] == name).cloned().unwrap();
        t["type"].as_str().unwrap().to_string()
    };
    assert_eq!(tensor_type(&kept, "blk.3.attn_q.weight"), "Q4_1");
    let q8 = tmp.path().join("merged-q8_0.gguf");
    merge(&q8, &["--type", "q8_0"]);
    assert_eq!(tensor_type(&q8, "blk.3.attn_q.weight"), "Q8_0");

    let ppl = |model: &[OsString]| {
        let mut args: Vec<OsString> = vec!["perplexity".into()];
        args.extend(model.iter().cloned());
        args.extend([TEXT, "--ctx", "128", "--chunks", "4", "--json"].map(OsString::from));
        owl_json(args)["ppl"].as_f64().unwrap()
    };
    let merged = ppl(&[q8.clone().into()]);
    let mut unmerged_args = vec![OsString::from("smollm2")];
    unmerged_args.extend(lora_arg(&dir, ""));
    let unmerged = ppl(&unmerged_args);
    assert!((merged / unmerged - 1.0).abs() < 0.02, "merged {merged}, unmerged {unmerged}");
    let mut args: Vec<OsString> =
        ["generate", PROMPT, "--temperature", "0", "-n", "8", "--json"].map(Into::into).to_vec();
    args.insert(1, q8.into());
    assert_eq!(ids(&owl_json(args))[..3], ids(&generate(&lora_arg(&dir, "")))[..3]);
}
