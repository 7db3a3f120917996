//! `owl convert` and `owl quantize` through the binary: JSON progress events, the file
//! type and mix they write, what a requantized demo model generates, and the errors.

use crate::support::{assert_one_line_error, owl, owl_json};

fn lines_json(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn convert_writes_a_llama_quantize_mix_with_json_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("qwen3_moe.q4_k_m.gguf");
    let dir = owl_test::fixture("models/qwen3_moe");
    let run = owl([
        "convert".as_ref(),
        dir.as_os_str(),
        out.as_os_str(),
        "--type".as_ref(),
        "q4_k_m".as_ref(),
        "--no-tokenizer".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = lines_json(&run.stdout);
    assert_eq!(events[0]["event"], "start");
    let n = events[0]["tensors"].as_u64().expect("tensors") as usize;
    assert_eq!(events.len(), n + 2, "start, one event per tensor, done");
    let last = &events[n + 1];
    assert_eq!(last["event"], "done");
    assert_eq!(last["architecture"], "qwen3moe");
    // 64-wide rows are not whole 256-blocks: Q4_K falls back to Q5_0, and the untied
    // output's Q6_K to Q8_0; norms and routers stay F32 (llama-quantize's choices).
    assert_eq!(last["types"], serde_json::json!({"F32": 11, "Q5_0": 13, "Q8_0": 3}));
    let report = owl_json(["inspect".as_ref(), out.as_os_str(), "--json".as_ref(), "--tensors".as_ref()]);
    assert_eq!(report["file_type"], "MOSTLY_Q4_K_M");
    let tensors = report["tensors"].as_array().expect("tensors");
    let type_of = |name: &str| tensors.iter().find(|t| t["name"] == name).map(|t| t["type"].clone());
    assert_eq!(type_of("blk.0.ffn_gate_inp.weight"), Some("F32".into()));
    assert_eq!(type_of("blk.1.ffn_down_exps.weight"), Some("Q8_0".into()));
    // llama-quantize's order: tensors outside the blocks first, then block by block.
    assert_eq!(tensors[0]["name"], "output.weight");
}

#[test]
fn quantize_requantizes_a_demo_model_only_when_asked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("smollm2.q8_0.gguf");
    let refused = owl(["quantize".as_ref(), "smollm2".as_ref(), out.as_os_str(), "q8_0".as_ref()]);
    let line = assert_one_line_error(&refused);
    assert!(line.contains("--allow-requantize") && line.contains("Q4_1"), "{line}");
    assert!(!out.exists(), "nothing is written on refusal");

    let run =
        owl(["quantize".as_ref(), "smollm2".as_ref(), out.as_os_str(), "q8_0".as_ref(), "--allow-requantize".as_ref()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report = owl_json(["inspect".as_ref(), out.as_os_str(), "--json".as_ref()]);
    assert_eq!(report["file_type"], "MOSTLY_Q8_0");
    // Q4_1 → Q8_0 keeps the Q4_1 values to within Q8_0's rounding: the same first greedy
    // tokens (later ones may part where the original's top two are close).
    let prompt = "The capital of France is";
    let gen = |model: &std::ffi::OsStr| {
        let out = owl_json([
            "generate".as_ref(),
            model,
            prompt.as_ref(),
            "-n".as_ref(),
            "8".as_ref(),
            "--temperature".as_ref(),
            "0".as_ref(),
            "--json".as_ref(),
        ]);
        out["text"].as_str().expect("text").to_string()
    };
    let (requantized, original) = (gen(out.as_os_str()), gen("smollm2".as_ref()));
    assert!(original.starts_with(" Paris."), "{original:?}");
    assert!(requantized.starts_with(" Paris."), "{requantized:?} (original {original:?})");
}

#[test]
fn bad_requests_are_one_line_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("x.gguf");
    let dir = owl_test::fixture("models/llama");
    let bad_type = owl(["convert".as_ref(), dir.as_os_str(), out.as_os_str(), "--type".as_ref(), "q4_k".as_ref()]);
    assert!(assert_one_line_error(&bad_type).contains("q4_k_m"), "{}", bad_type.stderr);
    let gguf = owl(["convert".as_ref(), "smollm2".as_ref(), out.as_os_str()]);
    assert!(assert_one_line_error(&gguf).contains("owl quantize"), "{}", gguf.stderr);
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let no_config = owl(["convert".as_ref(), empty.as_os_str(), out.as_os_str()]);
    assert!(assert_one_line_error(&no_config).contains("config.json"), "{}", no_config.stderr);
    assert!(!out.exists());
}

/// `owl imatrix`: one entry per decoder projection with llama-imatrix's sums and counts,
/// collected without changing the forward pass; `owl quantize --imatrix` then records it
/// and quantizes differently.
#[test]
fn imatrix_measures_every_projection_and_steers_quantize() {
    use owl_convert::imatrix::Imatrix;
    const TEXT: &str = "/usr/share/common-licenses/GPL-3";
    let tmp = tempfile::tempdir().expect("tempdir");
    let im = tmp.path().join("smollm2.imatrix.gguf");
    let window = ["-c", "128", "--chunks", "2"];
    let args = ["imatrix".as_ref(), "smollm2".as_ref(), TEXT.as_ref(), "-o".as_ref(), im.as_os_str()];
    let out = owl_json(args.into_iter().chain(window.iter().map(|s| s.as_ref())).chain(["--json".as_ref()]));
    assert_eq!(out["chunks"], 2, "{out}");
    assert_eq!(out["entries"], 30 * 7, "{out}");
    // The observer only reads: the windows' perplexity is plain perplexity's, bit for bit.
    let plain = owl_json(["perplexity", "smollm2", TEXT, "--ctx", "128", "--chunks", "2", "--json"]);
    assert_eq!(out["ppl"], plain["ppl"], "{out} vs {plain}");

    let m = Imatrix::read(&im).expect("owl reads what it wrote");
    assert_eq!((m.chunk_count, m.chunk_size), (2, 128));
    assert_eq!(m.datasets, ["GPL-3"]);
    for (name, e) in &m.entries {
        let width = if name.ends_with("ffn_down.weight") { 1536 } else { 576 };
        assert_eq!((e.sums.len(), e.counts.as_slice()), (width, &[256][..]), "{name}");
        assert!(e.sums.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        assert!(e.sums.iter().any(|v| *v > 0.0), "{name}");
    }
    // q, k and v read the same normalised input; gate and up too.
    let sums = |n: &str| &m.entries[&format!("blk.3.{n}.weight")].sums;
    assert_eq!(sums("attn_q"), sums("attn_k"));
    assert_eq!(sums("attn_q"), sums("attn_v"));
    assert_eq!(sums("ffn_gate"), sums("ffn_up"));
    assert_ne!(sums("attn_q"), sums("ffn_up"));

    let quantize = |out: &std::path::Path, imatrix: bool| {
        let mut a: Vec<&std::ffi::OsStr> = vec![
            "quantize".as_ref(),
            "smollm2".as_ref(),
            out.as_os_str(),
            "q4_k_m".as_ref(),
            "--allow-requantize".as_ref(),
        ];
        if imatrix {
            a.extend(["--imatrix".as_ref(), im.as_os_str()]);
        }
        let run = owl(a);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    };
    let (with, without) = (tmp.path().join("with.gguf"), tmp.path().join("without.gguf"));
    quantize(&with, true);
    quantize(&without, false);
    let file = owl_formats::gguf::GgufFile::open(&with).expect("a GGUF");
    assert_eq!(file.get_u64("quantize.imatrix.entries_count"), Some(210));
    assert_eq!(file.get_u64("quantize.imatrix.chunks_count"), Some(2));
    drop(file);
    let (a, b) = (std::fs::read(&with).expect("read"), std::fs::read(&without).expect("read"));
    assert_ne!(a.len(), 0);
    assert!(a != b, "the importance matrix changed no weight");
    let kl = |model: &std::path::Path| {
        let r = owl_json([
            "perplexity".as_ref(),
            model.as_os_str(),
            TEXT.as_ref(),
            "--ctx".as_ref(),
            "128".as_ref(),
            "--chunks".as_ref(),
            "4".as_ref(),
            "--kl-divergence".as_ref(),
            "smollm2".as_ref(),
            "--json".as_ref(),
        ]);
        r["kld_mean"].as_f64().expect("kld_mean")
    };
    let (kl_with, kl_without) = (kl(&with), kl(&without));
    eprintln!("KL vs the Q4_1 source over 4 windows: {kl_with:.5} with the imatrix, {kl_without:.5} without");
    // Measured: 0.078 with, 0.120 without (Q4_1 → Q4_K_M of a 135M model costs that much).
    assert!(kl_with > 0.0 && kl_without < 0.3, "{kl_with} {kl_without}");
    assert!(kl_with < kl_without, "the importance matrix did not help: {kl_with} vs {kl_without}");
}

/// Peak resident memory of `owl convert IN OUT --type f32 --no-tokenizer`, in bytes: run
/// from a fresh Python process whose only child it is (`ru_maxrss` of its children).
fn convert_peak_rss(input: &std::path::Path, out: &std::path::Path) -> u64 {
    let script = "import resource, subprocess, sys\n\
                  r = subprocess.run(sys.argv[1:], capture_output=True)\n\
                  sys.stderr.write(r.stderr.decode())\n\
                  print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let run = std::process::Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_owl"), "convert"])
        .args([input.as_os_str(), out.as_os_str()])
        .args(["--type", "f32", "--no-tokenizer", "--json"])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let mut fields = stdout.split_whitespace();
    assert_eq!(fields.next(), Some("0"), "owl convert failed: {}", String::from_utf8_lossy(&run.stderr));
    fields.next().and_then(|kib| kib.parse::<u64>().ok()).expect("ru_maxrss") * 1024
}

/// Round trip of a real model: SmolLM2 (Q4_1) dequantized by gguf-py into a Hugging Face
/// directory (scripts/gguf_check/export_hf.py: names back through gguf.TensorNameMap, q/k
/// rows un-permuted), converted back to F32 by owl in memory near one tensor, computes the
/// original's float32-activation logits; and the largest fixture converts in as little.
#[test]
fn a_demo_model_round_trips_through_safetensors_in_bounded_memory() {
    use owl_models::{ActivationPrecision, Batch, KvDtype, LoadOptions, Model};
    const MIB: u64 = 1 << 20;
    let python = owl_test::setup_python("gguf_check/setup.sh", "gguf-py");
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = owl_test::demo_model("smollm2");
    let hf = tmp.path().join("smollm2-hf");
    let export = std::process::Command::new(&python)
        .arg(owl_test::workspace_root().join("scripts/gguf_check/export_hf.py"))
        .args([source.as_os_str(), hf.as_os_str()])
        .output()
        .expect("export_hf.py");
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let info: serde_json::Value = serde_json::from_slice(&export.stdout).expect("json");
    let largest = info["largest"].as_u64().expect("largest");
    assert_eq!(largest, 49152 * 576 * 4, "token_embd in F32");

    let back = tmp.path().join("smollm2-f32.gguf");
    let peak = convert_peak_rss(&hf, &back);
    eprintln!("owl convert of SmolLM2 in F32 (538 MB): peak RSS {} MiB", peak / MIB);
    assert!(peak < 2 * largest + 100 * MIB, "peak RSS {} MiB", peak / MIB);
    let _ = std::fs::remove_dir_all(&hf);

    let logits = |path: &std::path::Path| {
        let mut model = Model::load(path, &LoadOptions { threads: 2, max_batch_tokens: 16 }).expect("load");
        model.set_activation_precision(ActivationPrecision::F32);
        let mut kv = model.new_kv_cache(1, 32, KvDtype::F32).expect("kv");
        let tokens = [1u32, 504, 3458, 282, 4649, 314, 30, 2330, 1209, 28];
        let mut batch = Batch::new();
        batch.push_sequence(0, 0, &tokens, true);
        let mut out = vec![0.0; tokens.len() * model.vocab_size()];
        model.forward(&batch, &mut kv, &mut out).expect("forward");
        out
    };
    let (a, b) = (logits(&source), logits(&back));
    let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    eprintln!("round trip: max |Δlogit| {err:.2e} of max |logit| {scale:.1}");
    assert!(err <= 1e-4 * scale.max(1.0), "round trip moved the logits by {err} (measured 1.7e-5)");

    // The largest fixture checkpoint (Mixtral's): near one tensor too.
    let fixture = owl_test::fixture("models/mixtral");
    let peak = convert_peak_rss(&fixture, &tmp.path().join("mixtral.gguf"));
    let size = std::fs::metadata(fixture.join("model.safetensors")).expect("size").len();
    eprintln!("owl convert of the mixtral fixture ({} KiB): peak RSS {} MiB", size / 1024, peak / MIB);
    assert!(peak < size * 2 + 100 * MIB, "peak RSS {} MiB", peak / MIB);
}
