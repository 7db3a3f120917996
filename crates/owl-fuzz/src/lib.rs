//! The properties owl's fuzz targets check, one function per target, each taking the
//! fuzzer's bytes: it must return (a malformed input is an error, handled) and never panic,
//! abort or allocate from an unchecked number. The cargo-fuzz targets in `fuzz/` are
//! one-line calls of these; `tests/replay.rs` runs the checked-in corpus (`fuzz/corpus/`)
//! through them on stable Rust in the ordinary test suite.
//!
//! | target | input | property |
//! |---|---|---|
//! | [`gguf_read`] | a GGUF file | parse or error; on success views in bounds and write → read → write byte-identical |
//! | [`safetensors_header`] | a safetensors file | parse or error; on success every range inside the data and sized by its dtype |
//! | [`gguf_tokenizer`] | a GGUF file | a tokenizer or an error; on success encode/decode of a fixed text never panics |
//! | [`chat_template`] | a Jinja template | compile and render within the limits, or an error |
//! | [`tokenizer_text`] | text | the byte-level and SentencePiece toy tokenizers encode and decode it back exactly |
//! | [`server_request`] | `PATH\nBODY` | every POST route of the HTTP server answers, never 5xx, errors as JSON, streams ended |

mod server;

use std::sync::OnceLock;

use owl_formats::gguf::{GgufFile, GgufWriter};
use owl_formats::safetensors::parse_header;
use owl_tokenizer::{ChatMessage, ChatTemplate, GgufVocab, RenderLimits, TokenType, Tokenizer};
pub use server::{server_request, ROUTES};

/// GGUF reader on arbitrary bytes.
pub fn gguf_read(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(file.tensor(&t.name), Some(t));
    }
    for (key, value) in file.metadata() {
        // Same entry (identity, not PartialEq, which is false for NaN values).
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)), "{key}");
        let _ = value.to_string();
    }
    let mut out = Vec::new();
    GgufWriter::from_file(&file).write_to(&mut out).expect("a file that parsed must be writable");
    let again = GgufFile::from_bytes(out.clone()).expect("a written file must parse");
    assert_eq!(again.tensors().len(), file.tensors().len());
    for (a, b) in again.tensors().iter().zip(file.tensors()) {
        assert_eq!((&a.name, &a.shape, a.ggml_type), (&b.name, &b.shape, b.ggml_type));
        assert_eq!(again.tensor_data(a), file.tensor_data(b));
    }
    // Debug text, not PartialEq, so that NaN values compare equal.
    assert_eq!(format!("{:?}", again.metadata()), format!("{:?}", file.metadata()));
    // What owl writes, owl writes back byte for byte (NaN payloads included).
    let mut out2 = Vec::new();
    GgufWriter::from_file(&again).write_to(&mut out2).expect("rewrite");
    assert!(out2 == out, "write -> read -> write is not byte-identical");
}

/// safetensors header parser on arbitrary bytes.
pub fn safetensors_header(data: &[u8]) {
    let Ok(header) = parse_header(data) else {
        return;
    };
    assert!(header.data_start <= data.len());
    for t in &header.tensors {
        let [start, end] = t.data_offsets;
        assert!(start <= end && end <= header.data_len, "{}: {start}..{end} outside {}", t.name, header.data_len);
        assert_eq!(end - start, t.n_bytes(), "{}", t.name);
        let _ = &data[header.data_start + start..header.data_start + end];
    }
}

/// The tokenizer a GGUF file describes, on arbitrary bytes: a tokenizer or an error.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf(&file) else {
        return;
    };
    if let Ok(ids) = tok.encode("Hello, world! <s> 日本 🍕", true, true) {
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()), "{ids:?}");
        let _ = tok.decode(&ids, false);
        let mut stream = tok.stream_decoder(false);
        for &id in &ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
    }
    if let Some(t) = tok.chat_template() {
        let _ = t.render(&[ChatMessage::user("Hi")], None, true);
    }
}

/// Limits small enough for a fuzzer's per-input time budget.
const FUZZ_LIMITS: RenderLimits = RenderLimits { max_output_bytes: 1 << 20, fuel: 200_000, max_recursion: 200 };

/// A chat template from arbitrary bytes (UTF-8 text), rendered over a small conversation
/// with tools: an output within the limit, or an error.
pub fn chat_template(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>").and_then(|t| t.with_limits(FUZZ_LIMITS)) else {
        return;
    };
    let messages = [
        ChatMessage::system("Be brief."),
        ChatMessage::user("What is 2+2?"),
        ChatMessage::assistant("4"),
        ChatMessage::user("And 3+3?"),
    ];
    let tools = serde_json::json!([{"type": "function", "function": {"name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]);
    if let Ok(text) = template.render(&messages, Some(&tools), true) {
        assert!(text.len() <= FUZZ_LIMITS.max_output_bytes, "{} bytes", text.len());
    }
}

/// Arbitrary text through the two toy tokenizers: encoding then decoding gives it back.
pub fn tokenizer_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for tok in toy_tokenizers() {
        let ids = tok.encode(text, false, false).expect("any text encodes");
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let back = tok.decode(&ids, false).expect("own ids decode");
        assert_eq!(back, text, "{ids:?}");
    }
}

/// A SentencePiece vocabulary with byte fallback and a byte-level BPE vocabulary of all
/// 256 byte symbols: both can spell any text, so decoding must return it exactly.
fn toy_tokenizers() -> &'static [Tokenizer; 2] {
    static TOKENIZERS: OnceLock<[Tokenizer; 2]> = OnceLock::new();
    TOKENIZERS
        .get_or_init(|| toy_vocabularies().map(|v| Tokenizer::from_gguf_vocab(&v).expect("the toy vocabularies build")))
}

/// The vocabularies of [`toy_tokenizers`]: SentencePiece, then byte-level BPE.
fn toy_vocabularies() -> [GgufVocab; 2] {
    {
        let mut spm_tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut spm_types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
        for b in 0..=255u8 {
            spm_tokens.push(format!("<0x{b:02X}>"));
            spm_types.push(TokenType::Byte);
        }
        for p in ["▁", "a", "b", "▁a", "ab", "▁ab", "▁the", "e", "▁t", "h", "he"] {
            spm_tokens.push(p.into());
            spm_types.push(TokenType::Normal);
        }
        let n = spm_tokens.len();
        let spm = GgufVocab {
            architecture: "llama".into(),
            model: "llama".into(),
            scores: Some((0..n).map(|i| -(i as f32)).collect()),
            token_types: Some(spm_types),
            tokens: spm_tokens,
            bos_id: Some(1),
            eos_id: Some(2),
            unk_id: Some(0),
            add_space_prefix: Some(false),
            ..GgufVocab::default()
        };
        // GPT-2's byte symbols: printable Latin-1 stand for themselves, the rest shift up.
        let mut symbols = Vec::new();
        let mut shifted = 0u32;
        for b in 0..=255u32 {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable {
                char::from_u32(b)
            } else {
                shifted += 1;
                char::from_u32(255 + shifted)
            };
            symbols.push(c.expect("a valid char").to_string());
        }
        let mut bpe_tokens = symbols.clone();
        bpe_tokens.extend(["Ġt", "he", "Ġthe"].map(String::from));
        bpe_tokens.push("<|endoftext|>".into());
        let bpe = GgufVocab {
            architecture: "gpt2".into(),
            model: "gpt2".into(),
            pre: Some("gpt2".into()),
            merges: Some(["Ġ t", "h e", "Ġt he"].map(String::from).to_vec()),
            eos_id: Some(bpe_tokens.len() as u32 - 1),
            tokens: bpe_tokens,
            ..GgufVocab::default()
        };
        [spm, bpe]
    }
}
