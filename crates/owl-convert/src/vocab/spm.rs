//! `_set_vocab_sentencepiece` (`_create_vocab_sentencepiece`) and Phi3MiniModel's own
//! reading of `tokenizer.model`: pieces, scores and types from the SentencePiece protobuf,
//! then `added_tokens.json` and the added tokens of `tokenizer_config.json`
//! (and, for Phi-3, of `tokenizer.json`).

use std::path::Path;

use serde_json::Value;

use super::special::{SpecialVocab, DEFAULT_TYPES};
use super::{f32s, i32s, looks_special, read_json, strings, token_type, tokenizer_error, Hparams};
use crate::error::ConvertError;
use crate::metadata::Metadata;

/// One `SentencePiece` of a `ModelProto`.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    /// `SentencePiece.Type`: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
    pub kind: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field, wire type, payload): varints as their value, fixed as little-endian.
    fn field(&mut self) -> Result<(u64, Field<'_>), String> {
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = self.varint()? as usize;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(self.take(4)?),
            w => return Err(format!("unsupported wire type {w} (field {field})")),
        };
        Ok((field, value))
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Fixed32(&'a [u8]),
    Bytes(&'a [u8]),
}

/// The pieces of a serialized `sentencepiece.ModelProto` (field 1; the trainer and
/// normalizer specs are skipped).
pub fn parse_model(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut pieces = Vec::new();
    while r.pos < r.buf.len() {
        let (field, value) = r.field()?;
        let (1, Field::Bytes(msg)) = (field, value) else { continue };
        let mut p = Reader { buf: msg, pos: 0 };
        let mut piece = Piece { piece: String::new(), score: 0.0, kind: 1 };
        while p.pos < p.buf.len() {
            match p.field()? {
                (1, Field::Bytes(s)) => {
                    piece.piece = String::from_utf8(s.to_vec()).map_err(|_| "a piece is not UTF-8".to_string())?;
                }
                (2, Field::Fixed32(b)) => piece.score = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                (3, Field::Varint(t)) => piece.kind = t,
                _ => {}
            }
        }
        pieces.push(piece);
    }
    Ok(pieces)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// TextModel._create_vocab_sentencepiece.
    Standard,
    /// Phi3MiniModel.set_vocab.
    Phi3,
}

struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

fn piece_type(kind: u64) -> i32 {
    // IsUnknown, IsControl, IsUnused, IsByte; everything else (user-defined pieces too)
    // stays NORMAL, as in llama.cpp.
    match kind {
        2 => token_type::UNKNOWN,
        3 => token_type::CONTROL,
        5 => token_type::UNUSED,
        6 => token_type::BYTE,
        _ => token_type::NORMAL,
    }
}

fn build(dir: &Path, hp: &Hparams<'_>, flavour: Flavour) -> Result<Vocab, ConvertError> {
    let path = dir.join("tokenizer.model");
    if !path.is_file() {
        return Err(tokenizer_error(&path, "a SentencePiece vocabulary needs tokenizer.model (not found)"));
    }
    let bytes =
        std::fs::read(&path).map_err(|source| ConvertError::Io { action: "read", path: path.clone(), source })?;
    let pieces = parse_model(&bytes).map_err(|e| tokenizer_error(&path, format!("not a SentencePiece model: {e}")))?;
    let vocab_size = match flavour {
        Flavour::Standard => ["vocab_size_per_layer_input", "vocab_size"]
            .iter()
            .find_map(|k| hp.get(k))
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .map_or(pieces.len(), |n| n as usize),
        Flavour::Phi3 => hp.usize("vocab_size").unwrap_or(pieces.len()),
    };
    let out_of_range = |file: &str, id: usize| {
        tokenizer_error(&dir.join(file), format!("token id {id} is not below vocab_size {vocab_size}"))
    };
    let mut v = Vocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![token_type::UNUSED; vocab_size],
    };
    for (id, p) in pieces.iter().enumerate() {
        if id >= vocab_size {
            if flavour == Flavour::Phi3 {
                return Err(out_of_range("tokenizer.model", id));
            }
            break;
        }
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        v.types[id] = piece_type(p.kind);
    }
    if let Some(Value::Object(added)) = read_json(&dir.join("added_tokens.json"))? {
        for (text, id) in &added {
            let Some(id) = id.as_u64().map(|i| i as usize) else { continue };
            if id >= vocab_size {
                continue;
            }
            v.tokens[id] = text.clone();
            v.scores[id] = -1000.0;
            v.types[id] = token_type::USER_DEFINED;
        }
    }
    let config = read_json(&dir.join("tokenizer_config.json"))?;
    let decoder = config.as_ref().and_then(|c| c.get("added_tokens_decoder")).and_then(Value::as_object);
    for (id, data) in decoder.into_iter().flatten() {
        let Ok(id) = id.parse::<usize>() else { continue };
        let Some(text) = data.get("content").and_then(Value::as_str) else { continue };
        let special = data.get("special").and_then(Value::as_bool).unwrap_or(false);
        if id >= vocab_size {
            if flavour == Flavour::Phi3 {
                return Err(out_of_range("tokenizer_config.json", id));
            }
            continue;
        }
        match flavour {
            Flavour::Standard if special || looks_special(text) => {
                v.tokens[id] = text.to_string();
                v.types[id] = token_type::CONTROL;
            }
            Flavour::Standard => {
                v.tokens[id] = text.replace('\u{2581}', " ");
                v.types[id] = token_type::USER_DEFINED;
            }
            Flavour::Phi3 => {
                v.tokens[id] = text.to_string();
                v.types[id] = if special { token_type::CONTROL } else { token_type::USER_DEFINED };
            }
        }
        v.scores[id] = -1000.0;
    }
    if flavour == Flavour::Phi3 {
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let added = tokenizer.as_ref().and_then(|t| t.get("added_tokens")).and_then(Value::as_array);
        for data in added.into_iter().flatten() {
            let Some(id) = data.get("id").and_then(Value::as_u64).map(|i| i as usize) else { continue };
            let Some(text) = data.get("content").and_then(Value::as_str) else { continue };
            if id >= vocab_size {
                return Err(out_of_range("tokenizer.json", id));
            }
            let special = data.get("special").and_then(Value::as_bool).unwrap_or(false);
            v.tokens[id] = text.to_string();
            v.scores[id] = -1000.0;
            v.types[id] = if special { token_type::CONTROL } else { token_type::USER_DEFINED };
        }
    }
    Ok(v)
}

pub fn write(m: &mut Metadata, dir: &Path, hp: &Hparams<'_>, flavour: Flavour) -> Result<(), ConvertError> {
    let v = build(dir, hp, flavour)?;
    let n = v.tokens.len();
    m.string("tokenizer.ggml.model", "llama");
    m.string("tokenizer.ggml.pre", "default");
    strings(m, "tokenizer.ggml.tokens", v.tokens);
    f32s(m, "tokenizer.ggml.scores", v.scores);
    i32s(m, "tokenizer.ggml.token_type", v.types);
    SpecialVocab::load(dir, false, &DEFAULT_TYPES, Some(n))?.write(m);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    /// A `ModelProto` of these pieces (type 1 written explicitly only when asked), with a
    /// trainer spec (field 2) in front, as real files have.
    pub fn encode_model(pieces: &[(&str, f32, u64)]) -> Vec<u8> {
        let mut out = vec![0x12, 0x02, 0x08, 0x01];
        for &(text, score, kind) in pieces {
            let mut p = Vec::new();
            p.push(0x0a);
            varint(text.len() as u64, &mut p);
            p.extend_from_slice(text.as_bytes());
            p.push(0x15);
            p.extend_from_slice(&score.to_le_bytes());
            if kind != 1 {
                p.push(0x18);
                varint(kind, &mut p);
            }
            out.push(0x0a);
            varint(p.len() as u64, &mut out);
            out.extend_from_slice(&p);
        }
        out
    }

    #[test]
    fn parses_pieces() {
        let pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("<0x41>", 0.0, 6), ("▁hello", -1.5, 1), ("x", -2.0, 4)];
        let got = parse_model(&encode_model(&pieces)).expect("test");
        assert_eq!(got.len(), 5);
        assert_eq!(got[3], Piece { piece: "▁hello".into(), score: -1.5, kind: 1 });
        assert_eq!(got.iter().map(|p| piece_type(p.kind)).collect::<Vec<_>>(), vec![2, 3, 6, 1, 1]);
        assert!(parse_model(&[0x0a, 0x05, 0x0a]).is_err());
    }
}
