//! Tokenizer metadata written by `owl convert`: small hand-made tokenizers (a byte-level
//! BPE `tokenizer.json`, a hand-encoded SentencePiece `tokenizer.model`, a Llama-2-style
//! `tokenizer.json`) next to fixture checkpoints, converted, read back with owl-formats and
//! loaded by owl-tokenizer.

use std::path::{Path, PathBuf};

use owl_convert::{convert, ConvertOptions, FileType};
use owl_formats::gguf::{GgufFile, MetadataValue};
use serde_json::{json, Value};

/// A copy of fixture model `variant` (config + weights) in a temp dir.
fn model_dir(variant: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = owl_test::fixture(&format!("models/{variant}"));
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), dir.path().join(name)).expect("copy fixture");
    }
    dir
}

fn write(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).expect("json")).expect("write");
}

fn run(dir: &Path, ft: FileType, no_tokenizer: bool) -> Result<GgufFile, String> {
    run_with_pre(dir, ft, no_tokenizer, None)
}

fn run_with_pre(dir: &Path, ft: FileType, no_tokenizer: bool, pre: Option<&str>) -> Result<GgufFile, String> {
    let out: PathBuf = dir.join(format!("out.{ft}.gguf"));
    let options = ConvertOptions { file_type: ft, no_tokenizer, tokenizer_pre: pre.map(String::from) };
    convert(dir, &out, &options, &|_| {}).map_err(|e| e.to_string())?;
    Ok(GgufFile::open(&out).expect("open converted"))
}

fn keys(g: &GgufFile) -> Vec<&str> {
    g.metadata().iter().map(|(k, _)| k.as_str()).collect()
}

fn tokenizer_keys(g: &GgufFile) -> Vec<&str> {
    keys(g).into_iter().filter(|k| k.starts_with("tokenizer.")).collect()
}

fn strings(g: &GgufFile, key: &str) -> Vec<String> {
    g.get_array(key).and_then(|a| a.as_strings()).unwrap_or_else(|| panic!("{key}")).to_vec()
}

fn types(g: &GgufFile) -> Vec<i32> {
    g.get_array("tokenizer.ggml.token_type").and_then(|a| a.as_i32s()).expect("token_type").to_vec()
}

fn id(g: &GgufFile, key: &str) -> Option<u64> {
    g.get(&format!("tokenizer.ggml.{key}")).map(|v| match v {
        MetadataValue::U32(x) => *x as u64,
        other => panic!("{key}: {other:?} is not u32"),
    })
}

/// GPT-2's byte to printable-character map.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("char")
            } else {
                n += 1;
                char::from_u32(255 + n).expect("char")
            }
        })
        .collect()
}

const BPE_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

/// A byte-level BPE: the 256 byte symbols at ids 0..=255, six merges at 256..=261, added
/// tokens at 262..=265 (ids 266..=511, up to config.json's vocab_size, are gaps), pair-list
/// merges.
fn write_bpe(dir: &Path) {
    let mut vocab = serde_json::Map::new();
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or")];
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), json!(256 + i));
    }
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": special})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(262, "<|endoftext|>", true), added(263, "<|im_start|>", true),
                         added(264, "<|im_end|>", true), added(265, "<think>", false)],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()}
    });
    write(dir, "tokenizer.json", &tokenizer);
    write(
        dir,
        "tokenizer_config.json",
        &json!({"add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                "chat_template": BPE_TEMPLATE, "tokenizer_class": "Qwen2Tokenizer"}),
    );
}

/// `tokenizer_config.json` without a `tokenizer.json` or `tokenizer.model`, or with
/// `--no-tokenizer`: no tokenizer keys, as before.
#[test]
fn no_tokenizer_files_or_flag_write_no_tokenizer_keys() {
    let dir = model_dir("llama");
    write(dir.path(), "tokenizer_config.json", &json!({"add_prefix_space": true}));
    let g = run(dir.path(), FileType::F32, false).expect("convert");
    assert_eq!(tokenizer_keys(&g), Vec::<&str>::new());
    write_bpe(dir.path());
    let g = run(dir.path(), FileType::F32, true).expect("convert with no_tokenizer");
    assert_eq!(tokenizer_keys(&g), Vec::<&str>::new());
}

/// The BPE path: an unknown pre-tokenizer hash stops the conversion naming the hash; with
/// the override, every key is llama.cpp's, in its order, and owl's tokenizer built from
/// the GGUF encodes as the `tokenizers` crate does from tokenizer.json.
#[test]
fn bpe_tokenizer_json_becomes_a_gpt2_vocabulary() {
    let dir = model_dir("qwen2");
    write_bpe(dir.path());

    let err = run(dir.path(), FileType::F32, false).expect_err("unknown pre-tokenizer");
    assert!(err.contains("not recognized") && err.contains("chkhsh "), "{err}");
    let hash = err.split("chkhsh ").nth(1).expect("hash").split(' ').next().expect("hash");
    assert_eq!(hash.len(), 64, "{err}");
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{err}");

    assert!(err.contains("--tokenizer-pre"), "{err}");
    let g = run_with_pre(dir.path(), FileType::F32, false, Some("gpt-2"));
    let g_mixed = run_with_pre(dir.path(), FileType::Q4_K_M, false, Some("gpt-2"));
    let (g, g_mixed) = (g.expect("convert F32"), g_mixed.expect("convert Q4_K_M"));

    let all = keys(&g);
    let qv = all.iter().position(|k| *k == "general.quantization_version").expect("quantization_version");
    assert_eq!(
        all[qv + 1..].to_vec(),
        vec![
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.chat_template",
        ]
    );
    // llama-quantize's order: its two keys move after the tokenizer.
    let mixed = keys(&g_mixed);
    assert_eq!(mixed[mixed.len() - 2..].to_vec(), vec!["general.quantization_version", "general.file_type"]);
    assert_eq!(tokenizer_keys(&g_mixed), tokenizer_keys(&g));

    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("gpt-2"));
    let tokens = strings(&g, "tokenizer.ggml.tokens");
    assert_eq!(tokens.len(), 512, "padded to config.json's vocab_size");
    assert_eq!((tokens[0].as_str(), tokens[33].as_str()), ("Ā", "!"));
    assert_eq!(tokens[256], "he");
    assert_eq!(tokens[261], "Ġwor");
    assert_eq!(tokens[262..266].to_vec(), vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]);
    assert_eq!(tokens[266], "[PAD266]");
    assert_eq!(tokens[511], "[PAD511]");
    let t = types(&g);
    assert_eq!(t.len(), 512);
    assert!(t[..262].iter().all(|&x| x == 1), "normal");
    assert_eq!(t[262..266].to_vec(), vec![3, 3, 3, 4], "control, user-defined");
    assert!(t[266..].iter().all(|&x| x == 5), "unused gaps");
    assert_eq!(strings(&g, "tokenizer.ggml.merges"), vec!["h e", "l l", "he ll", "Ġ w", "o r", "Ġw or"]);
    // eos and pad from tokenizer_config.json by content; bos from config.json.
    assert_eq!(id(&g, "eos_token_id"), Some(264));
    assert_eq!(id(&g, "padding_token_id"), Some(262));
    assert_eq!(id(&g, "bos_token_id"), Some(1));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    assert_eq!(g.get_bool("tokenizer.ggml.add_eos_token"), Some(false));
    assert_eq!(g.get_str("tokenizer.chat_template"), Some(BPE_TEMPLATE));

    let ours = owl_tokenizer::Tokenizer::from_gguf(&g).expect("owl tokenizer from the GGUF");
    let hf = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).expect("tokenizers");
    for text in [
        "hello world",
        "Hello, world! hello  world\n\nworld's 123 4567",
        "héllo wörld 🦙 ünïcödé",
        "<|im_start|>user\nhello<|im_end|>\n<think>world",
        "  leading and trailing spaces  ",
    ] {
        let want = hf.encode(text, false).expect("encode").get_ids().to_vec();
        let got = ours.encode(text, false, true).expect("owl encode");
        assert_eq!(got, want, "{text:?}");
        assert_eq!(ours.decode(&got, false).expect("decode"), text, "{text:?}");
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A SentencePiece `ModelProto`: a normalizer spec (field 3) and the pieces (field 1:
/// piece = 1, score = 2, type = 3).
fn spm_model(pieces: &[(String, f32, u64)]) -> Vec<u8> {
    let mut out = vec![0x1a, 0x04, 0x0a, 0x02, b'n', b'm'];
    for (text, score, kind) in pieces {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.push(0x18);
        varint(*kind, &mut p);
        out.push(0x0a);
        varint(p.len() as u64, &mut out);
        out.extend_from_slice(&p);
    }
    out
}

/// <unk> <s> </s>, 256 byte pieces, then ▁hello ▁world ▁ h e l o w r d (normal), a
/// user-defined piece and an unused one: 272 pieces.
fn spm_pieces() -> Vec<(String, f32, u64)> {
    let mut p = vec![("<unk>".to_string(), 0.0, 2), ("<s>".to_string(), 0.0, 3), ("</s>".to_string(), 0.0, 3)];
    p.extend((0..256).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    for (i, t) in ["▁hello", "▁world", "▁", "h", "e", "l", "o", "w", "r", "d"].iter().enumerate() {
        p.push((t.to_string(), -1.0 - i as f32, 1));
    }
    p.push(("<user>".to_string(), 0.0, 4));
    p.push(("<gone>".to_string(), 0.0, 5));
    p
}

const SPM_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";

fn write_spm(dir: &Path) {
    std::fs::write(dir.join("tokenizer.model"), spm_model(&spm_pieces())).expect("write tokenizer.model");
    write(dir, "added_tokens.json", &json!({"<extra>": 300}));
    write(
        dir,
        "tokenizer_config.json",
        &json!({"add_bos_token": true, "add_eos_token": false, "add_prefix_space": true,
                "bos_token": "<s>", "eos_token": "</s>", "chat_template": SPM_TEMPLATE,
                "added_tokens_decoder": {
                    "301": {"content": "<|im_end|>", "special": false},
                    "302": {"content": "▁x▁y", "special": false},
                    "303": {"content": "<start_of_turn>", "special": true}}}),
    );
}

fn check_spm_vocab(g: &GgufFile) {
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("default"));
    let tokens = strings(g, "tokenizer.ggml.tokens");
    assert_eq!(tokens.len(), 512);
    assert_eq!(tokens[..3].to_vec(), vec!["<unk>", "<s>", "</s>"]);
    assert_eq!(tokens[3 + 0x41], "<0x41>");
    assert_eq!(tokens[259], "▁hello");
    assert_eq!(tokens[300..304].to_vec(), vec!["<extra>", "<|im_end|>", " x y", "<start_of_turn>"]);
    assert_eq!(tokens[400], "[PAD400]");
    let t = types(g);
    assert_eq!(t[..4].to_vec(), vec![2, 3, 3, 6]);
    assert_eq!(t[259], 1);
    assert_eq!(t[269], 1, "user-defined pieces stay normal, as in llama.cpp");
    assert_eq!(t[270], 5);
    assert_eq!(t[300..304].to_vec(), vec![4, 3, 4, 3]);
    assert_eq!(t[400], 5);
    let scores = g.get_array("tokenizer.ggml.scores").and_then(|a| a.as_f32s()).expect("scores").to_vec();
    assert_eq!(scores.len(), 512);
    assert_eq!(scores[259..262].to_vec(), vec![-1.0, -2.0, -3.0]);
    assert_eq!(scores[300..304].to_vec(), vec![-1000.0; 4]);
    assert_eq!(scores[400], -10000.0);
    // No tokenizer.json: special ids come from config.json.
    assert_eq!(id(g, "bos_token_id"), Some(1));
    assert_eq!(id(g, "eos_token_id"), Some(2));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
    assert_eq!(g.get_bool("tokenizer.ggml.add_eos_token"), Some(false));
    assert_eq!(g.get_str("tokenizer.chat_template"), Some(SPM_TEMPLATE));
}

#[test]
fn sentencepiece_model_becomes_a_llama_vocabulary() {
    let dir = model_dir("llama");
    write_spm(dir.path());
    let g = run(dir.path(), FileType::F32, false).expect("convert");
    assert_eq!(
        tokenizer_keys(&g),
        vec![
            "tokenizer.ggml.add_space_prefix",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.chat_template",
        ]
    );
    assert_eq!(g.get_bool("tokenizer.ggml.add_space_prefix"), Some(true));
    check_spm_vocab(&g);
    let ours = owl_tokenizer::Tokenizer::from_gguf(&g).expect("owl tokenizer from the GGUF");
    // llama.cpp's SPM merges only into pieces the vocabulary has: without ▁h, ▁he, ... the
    // text stays in single characters (▁ 261, h 262, e 263, l 264, o 265, w 266, r 267, d 268).
    let want = vec![1, 261, 262, 263, 264, 264, 265, 261, 266, 265, 267, 264, 268];
    assert_eq!(ours.encode("hello world", true, true).expect("encode"), want);
    // Byte fallback for a character the pieces lack: "é" is C3 A9.
    assert_eq!(ours.encode("hé", false, true).expect("encode"), vec![261, 262, 3 + 0xC3, 3 + 0xA9]);
}

/// Gemma: the same SentencePiece path, then CodeGemma's eot id and add_space_prefix false.
#[test]
fn gemma_adds_eot_and_no_space_prefix() {
    let dir = model_dir("gemma");
    write_spm(dir.path());
    let g = run(dir.path(), FileType::F32, false).expect("convert");
    assert_eq!(
        tokenizer_keys(&g),
        vec![
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.chat_template",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.add_space_prefix",
        ]
    );
    check_spm_vocab(&g);
    assert_eq!(id(&g, "eot_token_id"), Some(107));
    assert_eq!(g.get_bool("tokenizer.ggml.add_space_prefix"), Some(false));
}

/// Llama without tokenizer.model but with a SentencePiece-converted tokenizer.json:
/// LlamaHfVocab (scores -1000, byte pieces, transformers' specials as control tokens).
#[test]
fn llama_hf_tokenizer_json_becomes_a_llama_vocabulary() {
    let dir = model_dir("llama");
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..256 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for (i, t) in ["▁", "h", "e", "l", "o", "▁h", "▁he"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(259 + i));
    }
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": special})
    };
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true),
                         added(266, "<extra>", false)],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": ["▁ h", "▁h e"]}
    });
    write(dir.path(), "tokenizer.json", &tokenizer);
    write(
        dir.path(),
        "tokenizer_config.json",
        &json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true,
                "add_eos_token": false}),
    );
    let g = run(dir.path(), FileType::F32, false).expect("convert");
    assert_eq!(
        tokenizer_keys(&g),
        vec![
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_sep_token",
            "tokenizer.ggml.add_eos_token",
        ]
    );
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("llama"));
    let tokens = strings(&g, "tokenizer.ggml.tokens");
    assert_eq!(tokens.len(), 267, "base vocabulary plus the added token, not padded");
    assert_eq!(tokens[266], "<extra>");
    let t = types(&g);
    assert_eq!(t[..4].to_vec(), vec![3, 3, 3, 6]);
    assert_eq!(t[259], 1);
    assert_eq!(t[266], 4);
    let scores = g.get_array("tokenizer.ggml.scores").and_then(|a| a.as_f32s()).expect("scores");
    assert!(scores.iter().all(|&s| s == -1000.0));
    assert_eq!(
        (id(&g, "bos_token_id"), id(&g, "eos_token_id"), id(&g, "unknown_token_id")),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
    assert_eq!(g.get_bool("tokenizer.ggml.add_sep_token"), Some(false));
    assert_eq!(g.get_bool("tokenizer.ggml.add_eos_token"), Some(false));
}
