//! What `--top-logprobs` and `--json` report per token: each generated token with its
//! text, raw bytes and log-probability, and its most likely alternatives, each with text
//! too. In text mode the same report is a compact table after the reply.

use std::io::{self, Write};

use serde::Serialize;

use owl_engine::TokenEvent;
use owl_tokenizer::Tokenizer;

/// One alternative of a step (`top[]` in `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct TopEntry {
    pub id: u32,
    /// The token's text on its own (U+FFFD where it is part of a character).
    pub text: String,
    /// Its raw bytes (OpenAI's logprobs `bytes`).
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated token (`tokens[]` in `owl generate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    pub id: u32,
    /// The text this token completed: empty while a character is still incomplete.
    pub text: String,
    /// The raw bytes the token adds to the output; the bytes of all tokens concatenate to
    /// the exact output, also where a token splits a character.
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The `--top-logprobs` most likely tokens, logprob descending (empty without it).
    pub top: Vec<TopEntry>,
}

impl TokenReport {
    pub fn new(event: &TokenEvent, tokenizer: &Tokenizer) -> TokenReport {
        TokenReport {
            id: event.id,
            text: event.text.clone(),
            bytes: event.bytes.clone(),
            logprob: event.logprob.unwrap_or(f32::NAN),
            top: event
                .top
                .iter()
                .map(|t| {
                    let bytes = tokenizer.token_bytes(t.id).unwrap_or_default();
                    TopEntry { id: t.id, text: String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob: t.logprob }
                })
                .collect(),
        }
    }
}

/// A token's bytes for a terminal: quoted, control characters and bytes that are not
/// (yet) UTF-8 escaped (`"\n"`, `"\xe2\x82"`).
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().escape_debug());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// The text-mode table: one row per generated token, its logprob, then the alternatives.
pub fn write_table(out: &mut impl Write, tokens: &[TokenReport], k: usize) -> io::Result<()> {
    let shown: Vec<String> = tokens.iter().map(|t| quoted(&t.bytes)).collect();
    let width = shown.iter().map(|s| s.chars().count()).max().unwrap_or(5).max(5);
    writeln!(out)?;
    writeln!(out, "{:>4}  {:<width$}  {:>8}  top {k}", "#", "token", "logprob")?;
    for (i, (t, text)) in tokens.iter().zip(&shown).enumerate() {
        let top =
            t.top.iter().map(|e| format!("{} {:.3}", quoted(&e.bytes), e.logprob)).collect::<Vec<_>>().join(" | ");
        writeln!(out, "{:>4}  {text:<width$}  {:>8.3}  {top}", i + 1, t.logprob)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_controls_and_partial_characters() {
        assert_eq!(quoted(b" Paris"), "\" Paris\"");
        assert_eq!(quoted(b"a\nb\t"), "\"a\\nb\\t\"");
        assert_eq!(quoted(&"€".as_bytes()[..2]), "\"\\xe2\\x82\"");
        assert_eq!(quoted("é\"".as_bytes()), "\"é\\\"\"");
    }

    #[test]
    fn table_rows() {
        let t = TokenReport {
            id: 1,
            text: "hi".into(),
            bytes: b"hi".to_vec(),
            logprob: -0.5,
            top: vec![TopEntry { id: 1, text: "hi".into(), bytes: b"hi".to_vec(), logprob: -0.5 }],
        };
        let mut out = Vec::new();
        write_table(&mut out, &[t], 1).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert!(lines[1].contains("token") && lines[1].ends_with("top 1"), "{text}");
        assert_eq!(lines[2], "   1  \"hi\"     -0.500  \"hi\" -0.500");
    }
}
