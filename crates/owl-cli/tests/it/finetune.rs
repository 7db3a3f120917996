//! `owl finetune` on smollm2 with a dataset written here: chats whose answers follow a fixed
//! format a program can check (`<<NAME>> The name is an animal.`). Training loss falls by
//! at least half; on animals it never saw, the adapted model answers in the format and the
//! base model does not; the adapter loads in PEFT (torch, in the venv of
//! scripts/peft_check) and gives owl's logits on the float32 base; a killed run resumes from
//! its checkpoint to the same adapter; bad lines are reported by number.

#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::{assert_one_line_error, owl};

const ANIMALS: &str = "cat dog horse cow goat pig rabbit mouse tiger bear wolf fox deer moose elk bison camel \
    alpaca zebra elephant rhino hippo monkey gorilla chimp lemur koala kangaroo wombat platypus otter badger \
    skunk squirrel hedgehog mole bat owl eagle hawk falcon parrot crow raven robin pigeon duck goose swan heron \
    stork flamingo penguin ostrich emu turkey chicken peacock shark whale dolphin seal walrus octopus squid crab \
    lobster shrimp snail frog toad newt turtle tortoise lizard iguana snake cobra python viper crocodile salmon \
    trout tuna cod carp eel bee wasp ant moth butterfly spider scorpion";
/// Never in the training data.
const HELD_OUT: [&str; 5] = ["raccoon", "giraffe", "beetle", "sparrow", "lion"];
const QUESTIONS: [&str; 3] = ["Tell me about the {}.", "What is a {}?", "Describe the {}."];

fn answer(animal: &str) -> String {
    format!("<<{}>> The {animal} is an animal.", animal.to_uppercase())
}

/// The format, checked on a reply.
fn follows_format(reply: &str) -> bool {
    let Some(rest) = reply.trim_start().strip_prefix("<<") else { return false };
    let Some((name, tail)) = rest.split_once(">>") else { return false };
    !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase()) && tail.trim_start().starts_with("The ")
}

fn write_data(path: &Path, animals: &[&str]) {
    let lines: Vec<String> = animals
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let q = QUESTIONS[i % QUESTIONS.len()].replace("{}", a);
            json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer(a)}]})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// The events of a finished `owl finetune --json` run.
fn finetune(data: &Path, out: &Path, extra: &[&str]) -> Vec<Value> {
    let mut a =
        vec![OsString::from("finetune"), "smollm2".into(), data.into(), "--out".into(), out.into(), "--json".into()];
    a.extend(args(extra));
    let run = owl(&a);
    assert_eq!(run.code, Some(0), "owl finetune failed: {}", run.stderr);
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn reply(prompt: &str, lora: Option<&Path>) -> String {
    let mut a = args(&["run", "smollm2", prompt, "--temperature", "0", "-n", "12"]);
    if let Some(l) = lora {
        a.extend([OsString::from("--lora"), l.into()]);
    }
    let run = owl(&a);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout
}

/// smollm2 dequantized into a float32 Hugging Face directory (gguf-py, scripts/gguf_check).
fn float_base(dir: &Path) -> PathBuf {
    let python = owl_test::setup_python("gguf_check/setup.sh", "gguf-py");
    let hf = dir.join("smollm2-f32");
    let export = Command::new(&python)
        .arg(owl_test::workspace_root().join("scripts/gguf_check/export_hf.py"))
        .arg(owl_test::demo_model("smollm2"))
        .arg(&hf)
        .output()
        .expect("export_hf.py");
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    hf
}

#[test]
fn smollm2_learns_a_format_and_peft_loads_the_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let animals: Vec<&str> = ANIMALS.split_whitespace().collect();
    let data = tmp.path().join("animals.jsonl");
    write_data(&data, &animals);
    let out = tmp.path().join("adapter");
    let gguf = tmp.path().join("adapter.gguf");
    let events = finetune(&data, &out, &["--lr", "1e-3", "--gguf", gguf.to_str().unwrap()]);

    let steps: Vec<f64> = events.iter().filter(|e| e["event"] == "step").map(|e| e["loss"].as_f64().unwrap()).collect();
    assert!(steps.len() >= 10, "{} steps", steps.len());
    let first = steps[..3].iter().sum::<f64>() / 3.0;
    let last = steps[steps.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last <= first / 2.0, "training loss fell from {first:.3} to {last:.3}: less than half");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done", "{done}");
    assert!(done["val_loss"].as_f64().unwrap() < first / 2.0, "{done}");
    assert!(out.join("adapter_config.json").is_file() && out.join("adapter_model.safetensors").is_file());
    assert!(!out.join("checkpoint").exists(), "the checkpoint is removed once the adapter is written");

    // Held-out animals: the adapter answers in the format, the base never does.
    for animal in HELD_OUT {
        let prompt = QUESTIONS[0].replace("{}", animal);
        let adapted = reply(&prompt, Some(&out));
        assert!(follows_format(&adapted), "{animal}: adapted model said {adapted:?}");
        let base = reply(&prompt, None);
        assert!(!follows_format(&base), "{animal}: the base model already said {base:?}");
        // The GGUF adapter is the same adapter.
        assert_eq!(reply(&prompt, Some(&gguf)), adapted, "{animal}: the GGUF adapter answers otherwise");
    }

    // PEFT loads it, and on the float32 base gives owl's logits.
    let hf = float_base(tmp.path());
    let ids: Vec<u32> = vec![1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 30, 2, 198, 1, 4093, 198];
    let ours = {
        use owl_models::{Batch, KvDtype, LoadOptions, LoraSet, Model};
        let mut model = Model::load(&hf, &LoadOptions { threads: 2, max_batch_tokens: 32 }).unwrap();
        model.set_activation_precision(owl_models::ActivationPrecision::F32);
        let adapter = owl_train::AdapterFile::open(&out, None).unwrap();
        let bound = adapter.bind(&model, owl_train::Lineage::ShapesOnly).unwrap();
        let mut kv = model.new_kv_cache(1, 32, KvDtype::F32).unwrap();
        let mut batch = Batch::new();
        batch.push_sequence(0, 0, &ids, true);
        batch.set_lora(0, Arc::new(LoraSet::new(vec![(Arc::new(bound), 1.0)])));
        let mut logits = vec![0.0; ids.len() * model.vocab_size()];
        model.forward(&batch, &mut kv, &mut logits).unwrap();
        logits
    };
    let check = owl_test::workspace_root().join("scripts/peft_check/check.py");
    let run = Command::new(owl_test::setup_python("peft_check/setup.sh", "torch, transformers and peft"))
        .arg(check)
        .arg(&hf)
        .arg(&out)
        .arg(serde_json::to_string(&ids).unwrap())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("check.py");
    assert!(run.status.success(), "peft: {}", String::from_utf8_lossy(&run.stderr));
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    let theirs: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect();
    let err = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 1e-3, "owl and peft differ by {err} on the trained adapter");
}

/// A run killed after its first checkpoint resumes from it with `--resume` and ends with
/// the adapter an uninterrupted run writes, byte for byte.
#[test]
fn a_killed_run_resumes_to_the_same_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let animals: Vec<&str> = ANIMALS.split_whitespace().take(24).collect();
    let data = tmp.path().join("animals.jsonl");
    write_data(&data, &animals);
    let common = ["--max-steps", "4", "--checkpoint-every", "2", "--val-split", "0", "--lr", "1e-3"];
    let straight = tmp.path().join("straight");
    finetune(&data, &straight, &common);

    let resumed = tmp.path().join("resumed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_owl"))
        .args(["finetune", "smollm2"])
        .arg(&data)
        .arg("--out")
        .arg(&resumed)
        .arg("--json")
        .args(common)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "checkpoint" {
            assert_eq!(e["step"], 2);
            child.kill().unwrap();
            break;
        }
    }
    let _ = child.wait();
    assert!(!resumed.join("adapter_model.safetensors").exists(), "killed before the end");
    let events = finetune(&data, &resumed, &[&common[..], &["--resume"]].concat());
    assert_eq!(events[0]["event"], "start");
    assert_eq!(events[0]["first_step"], 2, "{}", events[0]);
    assert_eq!(events.iter().filter(|e| e["event"] == "step").count(), 2);
    let bytes = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&resumed), "the resumed run's adapter differs from the uninterrupted one");
}

#[test]
fn bad_lines_are_reported_by_number() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mixed.jsonl");
    let good = json!({"prompt": "The cat says", "completion": " meow."}).to_string();
    let long = json!({"text": "word ".repeat(400)}).to_string();
    std::fs::write(&data, format!("{good}\nnot json\n{{\"prompt\": \"no completion\"}}\n{long}\n{good}\n")).unwrap();
    let out = tmp.path().join("out");
    let base = args(&["finetune", "smollm2", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "-c", "64"]);
    let err = assert_one_line_error(&owl([&base[..], &args(&["--strict"])].concat()));
    assert!(err.contains("line 2") && err.contains("not JSON"), "{err}");
    let run = owl([&base[..], &args(&["--max-steps", "1", "--val-split", "0"])].concat());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for want in
        ["line 2: not JSON", "line 3: \"prompt\" without \"completion\"", "line 4:", "more than the context of 64"]
    {
        assert!(run.stderr.contains(want), "missing {want:?} in:\n{}", run.stderr);
    }
    assert!(out.join("adapter_model.safetensors").is_file());
}
