//! The three demo models opened with `GgufFile` and checked against values read
//! independently with gguf-py 0.19 (`gguf.GGUFReader`): header, hyperparameters, tokenizer
//! arrays, every tensor info (by fingerprint), per-type counts, parameter totals, and the
//! bytes of sample tensors (FNV-1a of their first and last 4096 bytes).

use std::collections::BTreeMap;
use std::time::Instant;

use owl_formats::gguf::{GgmlType, GgufFile, MetadataValue};

use crate::gguf_support::fnv1a;

/// (name, shape, type, offset, n_bytes, fnv of first 4096 bytes, fnv of last 4096 bytes)
type Sample = (&'static str, &'static [u64], GgmlType, u64, u64, u64, u64);

struct Expected {
    name: &'static str,
    architecture: &'static str,
    file_size: u64,
    data_offset: u64,
    kv_count: usize,
    block_count: u64,
    head_count: u64,
    head_count_kv: u64,
    embedding_length: u64,
    feed_forward_length: u64,
    context_length: u64,
    rope_freq_base: f32,
    vocab: usize,
    first_tokens: [&'static str; 3],
    last_token: &'static str,
    merges: Option<(usize, &'static str)>,
    has_scores: bool,
    license: Option<&'static str>,
    tensor_count: usize,
    type_counts: &'static [(GgmlType, usize)],
    parameters: u64,
    /// FNV-1a of "name|ne0,ne1|type id|offset|n_bytes\n" over all tensors in file order.
    infos_fingerprint: u64,
    samples: &'static [Sample],
}

const MODELS: [Expected; 3] = [
    Expected {
        name: "smollm2",
        architecture: "llama",
        file_size: 98_362_432,
        data_offset: 1_785_664,
        kv_count: 33,
        block_count: 30,
        head_count: 9,
        head_count_kv: 3,
        embedding_length: 576,
        feed_forward_length: 1536,
        context_length: 8192,
        rope_freq_base: 100_000.0,
        vocab: 49_152,
        first_tokens: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        last_token: "ectable",
        merges: Some((48_900, "Ġ t")),
        has_scores: false,
        license: Some("apache-2.0"),
        tensor_count: 272,
        type_counts: &[(GgmlType::F32, 61), (GgmlType::Q4_1, 210), (GgmlType::Q8_0, 1)],
        parameters: 134_515_008,
        infos_fingerprint: 0x5304_b10a_9861_a8c7,
        samples: &[
            (
                "token_embd.weight",
                &[576, 49152],
                GgmlType::Q8_0,
                0,
                30_081_024,
                0x28cb_3141_57b9_bc7c,
                0xc03f_3b1f_2a32_7196,
            ),
            (
                "output_norm.weight",
                &[576],
                GgmlType::F32,
                96_574_464,
                2304,
                0xea81_4bed_6299_e304,
                0xea81_4bed_6299_e304,
            ),
        ],
    },
    Expected {
        name: "gemma3",
        architecture: "gemma3",
        file_size: 253_113_024,
        data_offset: 6_525_120,
        kv_count: 33,
        block_count: 18,
        head_count: 4,
        head_count_kv: 1,
        embedding_length: 640,
        feed_forward_length: 2048,
        context_length: 32_768,
        rope_freq_base: 1_000_000.0,
        vocab: 262_144,
        first_tokens: ["<pad>", "<eos>", "<bos>"],
        last_token: "<unused6241>",
        merges: None,
        has_scores: true,
        license: Some("gemma"),
        tensor_count: 236,
        type_counts: &[
            (GgmlType::F32, 109),
            (GgmlType::Q5_0, 81),
            (GgmlType::Q8_0, 10),
            (GgmlType::Q4_K, 27),
            (GgmlType::Q6_K, 9),
        ],
        parameters: 268_098_176,
        infos_fingerprint: 0x898e_d245_26d4_3883,
        samples: &[
            ("output_norm.weight", &[640], GgmlType::F32, 0, 2560, 0x11c2_2e7a_cf60_d9d7, 0x11c2_2e7a_cf60_d9d7),
            (
                "blk.17.post_ffw_norm.weight",
                &[640],
                GgmlType::F32,
                246_585_344,
                2560,
                0xc544_fd45_fddf_f3e3,
                0xc544_fd45_fddf_f3e3,
            ),
        ],
    },
    Expected {
        name: "qwen2.5-coder",
        architecture: "qwen2",
        file_size: 491_400_064,
        data_offset: 5_947_776,
        kv_count: 26,
        block_count: 24,
        head_count: 14,
        head_count_kv: 2,
        embedding_length: 896,
        feed_forward_length: 4864,
        context_length: 32_768,
        rope_freq_base: 1_000_000.0,
        vocab: 151_936,
        first_tokens: ["!", "\"", "#"],
        last_token: "[PAD151935]",
        merges: Some((151_387, "Ġ Ġ")),
        has_scores: false,
        license: None,
        tensor_count: 291,
        type_counts: &[
            (GgmlType::F32, 121),
            (GgmlType::Q5_0, 133),
            (GgmlType::Q8_0, 13),
            (GgmlType::Q4_K, 12),
            (GgmlType::Q6_K, 12),
        ],
        parameters: 630_167_424,
        infos_fingerprint: 0x02a1_00e4_299a_f481,
        samples: &[
            (
                "output.weight",
                &[896, 151_936],
                GgmlType::Q8_0,
                0,
                144_643_072,
                0x6d40_b0a8_afb9_46e9,
                0x5954_195a_8ee4_a0f9,
            ),
            (
                "blk.19.attn_v.weight",
                &[896, 128],
                GgmlType::Q8_0,
                361_720_320,
                121_856,
                0x44b9_820b_97e1_e768,
                0x87da_8324_89f9_9cfa,
            ),
        ],
    },
];

fn check_model(e: &Expected) {
    let path = owl_test::demo_model(e.name);
    let t0 = Instant::now();
    let f = GgufFile::open(&path).unwrap_or_else(|err| panic!("{}: {err}", e.name));
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    eprintln!("{}: GgufFile::open took {open_ms:.1} ms ({} tokens)", e.name, e.vocab);
    // A gross regression guard only (shared 2-core machine); measured values are in the report.
    assert!(open_ms < 5000.0, "{}: open took {open_ms} ms", e.name);

    let arch = e.architecture;
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.file_size(), e.file_size);
    assert_eq!(f.bytes().len() as u64, e.file_size);
    assert_eq!(f.data_offset(), e.data_offset);
    assert_eq!(f.metadata().len(), e.kv_count);
    assert_eq!(f.architecture(), Some(arch));
    assert_eq!(f.get_u64(&format!("{arch}.block_count")), Some(e.block_count));
    assert_eq!(f.get_u64(&format!("{arch}.attention.head_count")), Some(e.head_count));
    assert_eq!(f.get_u64(&format!("{arch}.attention.head_count_kv")), Some(e.head_count_kv));
    assert_eq!(f.get_u64(&format!("{arch}.embedding_length")), Some(e.embedding_length));
    assert_eq!(f.get_u64(&format!("{arch}.feed_forward_length")), Some(e.feed_forward_length));
    assert_eq!(f.get_u64(&format!("{arch}.context_length")), Some(e.context_length));
    assert_eq!(f.get_f32(&format!("{arch}.rope.freq_base")), Some(e.rope_freq_base));
    assert!(matches!(f.get(&format!("{arch}.rope.freq_base")), Some(MetadataValue::F32(_))));
    assert_eq!(f.get_str("general.license"), e.license);
    assert_eq!(f.get_u64("general.quantization_version"), Some(2));

    let tokens = f.get_array("tokenizer.ggml.tokens").and_then(|a| a.as_strings()).expect("tokens");
    assert_eq!(tokens.len(), e.vocab);
    assert_eq!(&tokens[..3], &e.first_tokens);
    assert_eq!(tokens[e.vocab - 1], e.last_token);
    let types = f.get_array("tokenizer.ggml.token_type").and_then(|a| a.as_i32s()).expect("token_type");
    assert_eq!(types.len(), e.vocab);
    assert_eq!(f.get_array("tokenizer.ggml.scores").is_some(), e.has_scores);
    if e.has_scores {
        let scores = f.get_array("tokenizer.ggml.scores").and_then(|a| a.as_f32s()).expect("f32 scores");
        assert_eq!(scores.len(), e.vocab);
        assert_eq!(scores[0], -1000.0);
    }
    match e.merges {
        Some((n, first)) => {
            let merges = f.get_array("tokenizer.ggml.merges").and_then(|a| a.as_strings()).expect("merges");
            assert_eq!((merges.len(), merges[0].as_str()), (n, first));
        }
        None => assert!(f.get("tokenizer.ggml.merges").is_none()),
    }

    assert_eq!(f.tensors().len(), e.tensor_count);
    let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
    for t in f.tensors() {
        *counts.entry(t.ggml_type).or_default() += 1;
    }
    let expected_counts: BTreeMap<GgmlType, usize> = e.type_counts.iter().copied().collect();
    assert_eq!(counts, expected_counts, "{}: tensors per type", e.name);
    let params: u64 = f.tensors().iter().map(|t| t.n_elements).sum();
    assert_eq!(params, e.parameters);

    let listing: String = f
        .tensors()
        .iter()
        .map(|t| {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            format!("{}|{}|{}|{}|{}\n", t.name, shape.join(","), t.ggml_type.id(), t.offset, t.n_bytes)
        })
        .collect();
    assert_eq!(fnv1a(listing.as_bytes()), e.infos_fingerprint, "{}: tensor infos differ from gguf-py's", e.name);

    for &(name, shape, ty, offset, n_bytes, head, tail) in e.samples {
        let t = f.tensor(name).unwrap_or_else(|| panic!("{}: no tensor {name}", e.name));
        assert_eq!((t.shape.as_slice(), t.ggml_type, t.offset, t.n_bytes), (shape, ty, offset, n_bytes), "{name}");
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, n_bytes);
        let k = data.len().min(4096);
        assert_eq!(fnv1a(&data[..k]), head, "{name}: first bytes");
        assert_eq!(fnv1a(&data[data.len() - k..]), tail, "{name}: last bytes");
    }
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    assert!(f.tensor("no.such.tensor").is_none());
}

#[test]
fn smollm2_metadata_and_tensors() {
    check_model(&MODELS[0]);
}

#[test]
fn gemma3_metadata_and_tensors() {
    check_model(&MODELS[1]);
}

#[test]
fn qwen2_5_coder_metadata_and_tensors() {
    check_model(&MODELS[2]);
}

/// Opening maps the file and touches only the header: the mapping's resident set (pages
/// this process faulted in, from /proc/self/smaps) stays near `data_offset`, far below the
/// 491 MB file. Independent of the page cache, so it holds on a warm machine too.
#[cfg(target_os = "linux")]
#[test]
fn open_touches_only_the_header() {
    let f = GgufFile::open(owl_test::demo_model("qwen2.5-coder")).expect("open");
    let start = format!("{:x}-", f.bytes().as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
    assert!(lines.next().is_some(), "mapping at {start} not found");
    let rss_kb: u64 = lines
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Rss line");
    eprintln!(
        "qwen2.5-coder: resident after open {rss_kb} kB of a {} kB mapping (header {} kB)",
        f.file_size() / 1024,
        f.data_offset() / 1024
    );
    // Slack for the kernel's fault-around (it maps up to 64 kB of cached neighbours per fault).
    assert!(rss_kb * 1024 < f.data_offset() + (1 << 20), "open touched {rss_kb} kB");
}

/// `release_pages` drops a read tensor's pages from the mapping's resident set (weights
/// repacked at load time do not stay resident twice), and the bytes read the same after.
#[cfg(target_os = "linux")]
#[test]
fn release_pages_drops_resident_pages_and_keeps_the_bytes() {
    let f = GgufFile::open(owl_test::demo_model("qwen2.5-coder")).expect("open");
    let mapping_rss_kb = || -> u64 {
        let start = format!("{:x}-", f.bytes().as_ptr() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "mapping at {start} not found");
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("Rss line")
    };
    let info = f.tensors().iter().max_by_key(|t| f.tensor_data(t).len()).expect("tensors");
    let data = f.tensor_data(info);
    let before: u64 = data.iter().step_by(4096).map(|&b| b as u64).sum();
    let touched = mapping_rss_kb();
    f.release_pages(data);
    let released = mapping_rss_kb();
    let after: u64 = data.iter().step_by(4096).map(|&b| b as u64).sum();
    eprintln!("{}: {} kB; mapping resident {touched} kB → {released} kB after release", info.name, data.len() / 1024);
    assert_eq!(before, after, "the bytes read the same after the release");
    assert!(touched >= (data.len() / 1024) as u64, "reading the tensor made it resident");
    assert!(released + (data.len() / 1024) as u64 / 2 < touched, "release dropped the tensor's pages");
}
