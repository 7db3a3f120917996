//! `owl inspect` on the demo GGUF models and on fixture model directories. Expected GGUF
//! values were read independently with gguf-py 0.19 (`gguf.GGUFReader`: fields, tensor
//! n_elements / n_bytes / tensor_type) and are hard-coded here.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::{json, Value};

use crate::support::{owl, owl_env, owl_json};

/// The keys every report carries, in order (the documented `--json` shape).
const KEYS: [&str; 26] = [
    "format",
    "path",
    "files",
    "file_size",
    "architecture",
    "architectures",
    "name",
    "parameters",
    "tensor_count",
    "types",
    "file_type",
    "dtype",
    "context_length",
    "block_count",
    "head_count",
    "head_count_kv",
    "kv_cache_bytes_per_token",
    "embedding_length",
    "feed_forward_length",
    "vocab_size",
    "rope_freq_base",
    "license",
    "tokenizer",
    "chat_template",
    "gguf_version",
    "tensors",
];

fn assert_keys(report: &Value, with_tensors: bool) {
    let keys: Vec<&str> = report.as_object().expect("object").keys().map(String::as_str).collect();
    let want: Vec<&str> = KEYS.iter().copied().filter(|k| with_tensors || *k != "tensors").collect();
    assert_eq!(keys, want);
}

fn types(v: &[(&str, u64, u64)]) -> Value {
    Value::Array(v.iter().map(|(t, n, b)| json!({"type": t, "tensors": n, "bytes": b})).collect())
}

/// The facts gguf-py reports for one demo model.
struct Expected {
    model: &'static str,
    file_size: u64,
    architecture: &'static str,
    name: &'static str,
    license: Option<&'static str>,
    file_type: &'static str,
    parameters: u64,
    tensor_count: u64,
    types: Vec<(&'static str, u64, u64)>,
    /// context, layers, heads, kv heads, embedding, feed-forward, vocab
    dims: [u64; 7],
    rope_freq_base: f64,
    tokenizer: (&'static str, &'static str),
    chat_template: bool,
    first_tensor: (&'static str, &'static str, &'static [u64]),
}

fn check_demo(e: &Expected) {
    let path = owl_test::demo_model(e.model);
    let r = owl_json([OsStr::new("inspect"), path.as_os_str(), OsStr::new("--json"), OsStr::new("--tensors")]);
    assert_keys(&r, true);
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["path"], path.display().to_string());
    assert_eq!(r["file_size"], e.file_size, "{}", e.model);
    assert_eq!(r["architecture"], e.architecture);
    assert_eq!(r["architectures"], json!([]));
    assert_eq!(r["name"], e.name);
    assert_eq!(r["license"], json!(e.license));
    assert_eq!(r["file_type"], e.file_type);
    assert_eq!(r["parameters"], e.parameters, "{}", e.model);
    assert_eq!(r["tensor_count"], e.tensor_count);
    assert_eq!(r["types"], types(&e.types), "{}", e.model);
    let dims = [
        "context_length",
        "block_count",
        "head_count",
        "head_count_kv",
        "embedding_length",
        "feed_forward_length",
        "vocab_size",
    ];
    for (key, want) in dims.iter().zip(e.dims) {
        assert_eq!(r[*key], want, "{}: {key}", e.model);
    }
    assert_eq!(r["rope_freq_base"], e.rope_freq_base);
    assert_eq!(r["tokenizer"], json!({"model": e.tokenizer.0, "pre": e.tokenizer.1, "source": "gguf"}));
    assert_eq!(r["chat_template"], e.chat_template);
    assert_eq!(r["gguf_version"], 3);
    let tensors = r["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len() as u64, e.tensor_count);
    let (name, ty, shape) = e.first_tensor;
    assert_eq!(tensors[0], json!({"name": name, "type": ty, "shape": shape}));
    // The type mix adds up to the tensor list.
    let counted: u64 = r["types"].as_array().expect("types").iter().map(|t| t["tensors"].as_u64().expect("n")).sum();
    assert_eq!(counted, e.tensor_count);
}

#[test]
fn smollm2_gguf() {
    check_demo(&Expected {
        model: "smollm2",
        file_size: 98_362_432,
        architecture: "llama",
        name: "Smollm2 135M 8k Lc100K Mix1 Ep2",
        license: Some("apache-2.0"),
        file_type: "MOSTLY_Q4_1",
        parameters: 134_515_008,
        tensor_count: 272,
        types: vec![("Q4_1", 210, 66_355_200), ("Q8_0", 1, 30_081_024), ("F32", 61, 140_544)],
        dims: [8192, 30, 9, 3, 576, 1536, 49152],
        rope_freq_base: 100_000.0,
        tokenizer: ("gpt2", "smollm"),
        chat_template: true,
        first_tensor: ("token_embd.weight", "Q8_0", &[576, 49152]),
    });
}

#[test]
fn gemma3_gguf() {
    check_demo(&Expected {
        model: "gemma3",
        file_size: 253_113_024,
        architecture: "gemma3",
        name: "Gemma 3 270m",
        license: Some("gemma"),
        file_type: "MOSTLY_Q4_K_M",
        parameters: 268_098_176,
        tensor_count: 236,
        types: vec![
            ("Q8_0", 10, 179_824_640),
            ("Q5_0", 81, 43_591_680),
            ("Q4_K", 27, 13_271_040),
            ("Q6_K", 9, 9_676_800),
            ("F32", 109, 223_744),
        ],
        // No gemma3.vocab_size key: the vocabulary size is the token list's length.
        dims: [32768, 18, 4, 1, 640, 2048, 262_144],
        rope_freq_base: 1_000_000.0,
        tokenizer: ("llama", "default"),
        chat_template: false,
        first_tensor: ("output_norm.weight", "F32", &[640]),
    });
}

#[test]
fn qwen25_coder_gguf() {
    check_demo(&Expected {
        model: "qwen2.5-coder",
        file_size: 491_400_064,
        architecture: "qwen2",
        name: "Qwen2.5 Coder 0.5B Instruct AWQ",
        license: None,
        file_type: "MOSTLY_Q4_K_M",
        parameters: 630_167_424,
        tensor_count: 291,
        types: vec![
            ("Q5_0", 133, 266_742_784),
            ("Q8_0", 13, 146_105_344),
            ("Q6_K", 12, 42_900_480),
            ("Q4_K", 12, 29_417_472),
            ("F32", 121, 286_208),
        ],
        dims: [32768, 24, 14, 2, 896, 4864, 151_936],
        rope_freq_base: 1_000_000.0,
        tokenizer: ("gpt2", "qwen2"),
        chat_template: true,
        first_tensor: ("output.weight", "Q8_0", &[896, 151_936]),
    });
}

#[test]
fn store_names_resolve_through_the_cache() {
    let path = owl_test::demo_model("smollm2");
    let cache = path.parent().expect("cache dir");
    for name in ["smollm2", "smollm2:135m"] {
        let run = owl_env(["inspect", name, "--json"], &[("OWL_MODEL_CACHE", cache.as_os_str())]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let r: Value = serde_json::from_str(&run.stdout).expect("json");
        assert_eq!(r["path"], path.display().to_string());
        assert_eq!(r["parameters"], 134_515_008u64);
    }
}

#[test]
fn human_output_of_a_gguf() {
    let path = owl_test::demo_model("smollm2");
    let run = owl([OsStr::new("inspect"), path.as_os_str()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for line in [
        "format               GGUF v3",
        "architecture         llama",
        "parameters           134.52 M (134515008)",
        "types                Q4_1       210 tensors  66.36 MB",
        "                     Q8_0         1 tensor   30.08 MB",
        "layers               30",
        "kv cache / token     23.04 kB (f16; 94.37 MB at 4096 tokens)",
        "rope base            100000",
        "license              apache-2.0",
        "tokenizer            gpt2 (pre: smollm; from gguf)",
        "chat template        yes",
    ] {
        assert!(run.stdout.lines().any(|l| l == line), "missing line {line:?} in:\n{}", run.stdout);
    }
    let run = owl([OsStr::new("inspect"), path.as_os_str(), OsStr::new("--tensors")]);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["token_embd.weight", "Q8_0", "[576,", "49152]"]),
        "{}",
        run.stdout
    );
}

#[test]
fn fixture_llama_directory() {
    let dir = owl_test::fixture("models/llama");
    let r = owl_json([OsStr::new("inspect"), dir.as_os_str(), OsStr::new("--json"), OsStr::new("--tensors")]);
    assert_keys(&r, true);
    assert_eq!(r["format"], "safetensors");
    assert_eq!(r["architecture"], "llama");
    assert_eq!(r["architectures"], json!(["LlamaForCausalLM"]));
    assert_eq!(r["name"], "llama");
    // Parameter count from the fixtures README.
    assert_eq!(r["parameters"], 139_584);
    assert_eq!(r["tensor_count"], 21);
    assert_eq!(r["types"], types(&[("F32", 21, 139_584 * 4)]));
    assert_eq!(r["file_size"], std::fs::metadata(dir.join("model.safetensors")).expect("meta").len());
    assert_eq!(r["dtype"], "float32");
    assert_eq!(r["file_type"], Value::Null);
    for (key, want) in [
        ("context_length", 128),
        ("block_count", 2),
        ("head_count", 4),
        ("head_count_kv", 2),
        ("embedding_length", 64),
        ("feed_forward_length", 128),
        ("vocab_size", 512),
    ] {
        assert_eq!(r[key], want, "{key}");
    }
    assert_eq!(r["rope_freq_base"], 10_000.0);
    // The fixture has no tokenizer, template or model card.
    assert_eq!(r["tokenizer"], Value::Null);
    assert_eq!(r["chat_template"], false);
    assert_eq!(r["license"], Value::Null);
    assert_eq!(r["gguf_version"], Value::Null);
    let files: Vec<&str> = r["files"].as_array().expect("files").iter().map(|f| f.as_str().expect("str")).collect();
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with("model.safetensors") && files[1].ends_with("config.json"), "{files:?}");
    let tensors = r["tensors"].as_array().expect("tensors");
    let embed = tensors.iter().find(|t| t["name"] == "model.embed_tokens.weight").expect("embedding");
    assert_eq!(embed, &json!({"name": "model.embed_tokens.weight", "type": "F32", "shape": [512, 64]}));
}

/// Every fixture variant inspects, with the README's parameter counts and the config's layers.
#[test]
fn every_fixture_variant_inspects() {
    let params = [
        ("llama", 139_584),
        ("llama3_rope", 139_584),
        ("llama_tied", 143_808),
        ("mistral", 139_584),
        ("mixtral", 287_552),
        ("gemma", 102_720),
        ("gemma2", 144_192),
        ("gemma3", 144_288),
        ("gemma3_rope_scaling", 144_288),
        ("qwen2", 139_840),
        ("qwen3", 139_648),
        ("qwen3_moe", 189_312),
        ("phi3", 139_584),
        ("phi3_partial_rotary", 139_584),
        ("phi3_longrope", 139_584),
        ("phi3_longrope_long", 139_584),
        ("deepseek_v3", 200_328),
        ("deepseek_v3_yarn_groups", 200_328),
        ("deepseek_v2", 215_584),
    ];
    for (variant, n) in params {
        let dir = owl_test::fixture(&format!("models/{variant}"));
        let r = owl_json([OsStr::new("inspect"), dir.as_os_str(), OsStr::new("--json")]);
        assert_keys(&r, false);
        assert_eq!(r["parameters"], n, "{variant}");
        let config = owl_test::fixture_json(&format!("models/{variant}/config.json"));
        assert_eq!(r["block_count"], config["num_hidden_layers"], "{variant}");
        assert_eq!(r["architecture"], config["model_type"], "{variant}");
    }
}

/// A Hugging Face directory with tokenizer files, a chat template and a model card.
#[test]
fn hf_directory_with_tokenizer_and_card() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let fixture = owl_test::fixture("models/qwen2");
    std::fs::copy(fixture.join("config.legacy.json"), dir.join("config.json")).expect("config");
    std::fs::copy(fixture.join("model.safetensors"), dir.join("model.safetensors")).expect("weights");
    let tokenizer = json!({
        "version": "1.0",
        "model": {"type": "BPE", "vocab": {}, "merges": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"}, {"type": "ByteLevel"}]}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("tokenizer");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"chat_template": "{{ messages }}"}"#).expect("config");
    std::fs::write(
        dir.join("README.md"),
        "---\nlibrary_name: transformers\nlicense: \"apache-2.0\"\n---\n# Model\nlicense: other\n",
    )
    .expect("readme");
    let r = owl_json([OsStr::new("inspect"), dir.as_os_str(), OsStr::new("--json")]);
    assert_eq!(r["architecture"], "qwen2");
    assert_eq!(r["parameters"], 139_840);
    assert_eq!(r["rope_freq_base"], 1_000_000.0);
    assert_eq!(r["tokenizer"], json!({"model": "BPE", "pre": "Split+ByteLevel", "source": "tokenizer.json"}));
    assert_eq!(r["chat_template"], true);
    assert_eq!(r["license"], "apache-2.0");
    let files: Vec<String> = r["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| Path::new(f.as_str().expect("str")).file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]);

    // A config owl cannot normalise still inspects, with a warning and the raw fields.
    let mut config = owl_test::fixture_json("models/qwen2/config.legacy.json");
    config["model_type"] = json!("mamba2_future");
    config["hidden_act"] = json!("mish");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let run = owl([OsStr::new("inspect"), dir.as_os_str(), OsStr::new("--json")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.starts_with("warning: ") && run.stderr.contains("`hidden_act`: unsupported value \"mish\""),
        "{}",
        run.stderr
    );
    let r: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(r["architecture"], "mamba2_future");
    assert_eq!(r["block_count"], 2);
    assert_eq!(r["rope_freq_base"], 1_000_000.0);
}

/// The KV cache figure: layers × KV heads × (key + value) × 2 bytes, from the GGUF metadata
/// of the demo models; for MLA (DeepSeek fixtures) the latent and the rope key per layer
/// (3 × (32 + 8) × 2), as owl caches them, not the decompressed 3 × 4 × (24 + 16) × 2.
#[test]
fn kv_cache_bytes_per_token() {
    for (model, want) in [("smollm2", 30 * 3 * 128 * 2), ("gemma3", 18 * 512 * 2), ("qwen2.5-coder", 24 * 2 * 128 * 2)]
    {
        let path = owl_test::demo_model(model);
        let r = owl_json([OsStr::new("inspect"), path.as_os_str(), OsStr::new("--json")]);
        assert_eq!(r["kv_cache_bytes_per_token"], want, "{model}");
    }
    for variant in ["deepseek_v3", "deepseek_v2"] {
        let dir = owl_test::fixture(&format!("models/{variant}"));
        let r = owl_json([OsStr::new("inspect"), dir.as_os_str(), OsStr::new("--json")]);
        assert_eq!(r["kv_cache_bytes_per_token"], 3 * (32 + 8) * 2, "{variant}");
    }
}
