//! Adapters that do not fit, and files that are not adapters: clear errors, never a panic.

use std::path::Path;

use owl_convert::arch::Arch;
use owl_convert::tensor_names::Heads;
use owl_train::{AdapterError, AdapterFile, Lineage};

use crate::{load, lora_dir};

fn copy_adapter(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(lora_dir().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn another_base_is_refused_by_name_then_by_shape() {
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    // Gemma's fixture has one key/value head: k_proj is 16x64, not 32x64.
    let gemma = load(&owl_test::fixture("models/gemma"));
    let err = adapter.bind(&gemma, Lineage::Strict).unwrap_err();
    assert!(matches!(err, AdapterError::Lineage { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("../models/llama") && text.contains("--lora-any-base"), "{text}");
    let err = adapter.bind(&gemma, Lineage::ShapesOnly).unwrap_err();
    let AdapterError::Shapes { problems, .. } = &err else { panic!("{err}") };
    assert!(
        problems.iter().any(|p| p.contains("k_proj") && p.contains("32x64") && p.contains("16x64")),
        "{problems:?}"
    );
}

#[test]
fn a_gguf_adapter_names_its_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = AdapterFile::open(&lora_dir(), None).unwrap();
    let path = tmp.path().join("qwen.gguf");
    // The same tensors, labelled as a qwen2 adapter.
    adapter.to_gguf_naming(Arch::Qwen2, Heads { n_heads: 4, n_kv_heads: 2 }).unwrap().write_gguf(&path).unwrap();
    let qwen_labelled = AdapterFile::open(&path, None).unwrap();
    let llama = load(&crate::base_dir());
    let err = qwen_labelled.bind(&llama, Lineage::ShapesOnly).unwrap_err();
    assert!(err.to_string().contains("adapts a qwen2 model, the base is llama"), "{err}");
}

#[test]
fn unsupported_and_malformed_adapters_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |name: &str, edit: &dyn Fn(&Path), want: &str| {
        let dir = tmp.path().join(name);
        copy_adapter(&dir);
        edit(&dir);
        let err = AdapterFile::open(&dir, None).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
    };
    let set_config = |key: &'static str, value: serde_json::Value| {
        move |dir: &Path| {
            let path = dir.join("adapter_config.json");
            let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            c[key] = value.clone();
            std::fs::write(&path, c.to_string()).unwrap();
        }
    };
    check("dora", &set_config("use_dora", true.into()), "DoRA (use_dora) is not supported");
    check("prefix", &set_config("peft_type", "PREFIX_TUNING".into()), "peft_type \"PREFIX_TUNING\"");
    check("saved", &set_config("modules_to_save", serde_json::json!(["lm_head"])), "modules_to_save");
    check("alpha", &set_config("lora_alpha", "eight".into()), "lora_alpha is missing or not a number");
    check("regex", &set_config("alpha_pattern", serde_json::json!({"layers\\.0.*q_proj": 4})), "regular expression");
    check("not-json", &|d: &Path| std::fs::write(d.join("adapter_config.json"), "{").unwrap(), "not JSON");
    check(
        "truncated",
        &|d: &Path| {
            let p = d.join("adapter_model.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        },
        "adapter_model.safetensors",
    );
    check(
        "no-weights",
        &|d: &Path| std::fs::remove_file(d.join("adapter_model.safetensors")).unwrap(),
        "adapter_model.safetensors",
    );
    let err = AdapterFile::open(tmp.path(), None).unwrap_err().to_string();
    assert!(err.contains("no adapter_config.json here"), "{err}");
    let err = AdapterFile::open(&tmp.path().join("missing"), None).unwrap_err().to_string();
    assert!(err.contains("no such file or directory"), "{err}");
    // A model file is not an adapter.
    let model = crate::gguf_base(tmp.path());
    let err = AdapterFile::open(&model, None).unwrap_err().to_string();
    assert!(err.contains("a model, not an adapter"), "{err}");
}
