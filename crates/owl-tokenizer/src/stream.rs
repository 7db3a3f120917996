//! [`StreamDecoder`]: text for tokens as they are generated, one token at a time.
//!
//! A token can end in the middle of a UTF-8 character (byte-level BPE splits emoji and CJK
//! characters across tokens; SentencePiece byte fallback emits single bytes). The decoder
//! keeps such an incomplete tail until the bytes that finish it arrive, so every string it
//! returns is whole UTF-8 and the concatenation of all of them (plus [`StreamDecoder::finish`])
//! equals [`crate::Tokenizer::decode`] of the same ids.

use std::sync::Arc;

use crate::decode::DecodeTable;
use crate::engine::Engine;
use crate::error::TokenizerError;

/// Incremental detokenizer; create with [`crate::Tokenizer::stream_decoder`].
pub struct StreamDecoder {
    inner: Inner,
    skip_special: bool,
}

enum Inner {
    /// Per-token bytes from the table.
    Table { table: Arc<DecodeTable>, pending: Vec<u8>, started: bool },
    /// Decoders owl has no table for: decode a sliding window with the engine and emit the
    /// growth once it no longer ends in U+FFFD (the algorithm of `tokenizers`' DecodeStream).
    Engine { engine: Arc<Engine>, ids: Vec<u32>, prefix_offset: usize, read_offset: usize, vocab_size: usize },
}

impl StreamDecoder {
    pub(crate) fn with_table(table: Arc<DecodeTable>, skip_special: bool) -> StreamDecoder {
        StreamDecoder { inner: Inner::Table { table, pending: Vec::new(), started: false }, skip_special }
    }

    pub(crate) fn with_engine(engine: Arc<Engine>, vocab_size: usize, skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            inner: Inner::Engine { engine, ids: Vec::new(), prefix_offset: 0, read_offset: 0, vocab_size },
            skip_special,
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let mut out = String::new();
        self.push_into(id, &mut out)?;
        Ok(out)
    }

    /// As [`StreamDecoder::push`], appending to `out` instead of allocating.
    pub fn push_into(&mut self, id: u32, out: &mut String) -> Result<(), TokenizerError> {
        self.push_inner(id, out, None)
    }

    /// As [`StreamDecoder::push_into`], also appending to `bytes` the raw bytes this token
    /// contributes to the stream (OpenAI's per-token `bytes`): unlike the text, they are
    /// there at once when the token splits a character, so their concatenation over a
    /// stream is its exact UTF-8. Decoders without a byte table report the text completed.
    pub fn push_with_bytes(
        &mut self,
        id: u32,
        out: &mut String,
        bytes_out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        self.push_inner(id, out, Some(bytes_out))
    }

    fn push_inner(&mut self, id: u32, out: &mut String, bytes_out: Option<&mut Vec<u8>>) -> Result<(), TokenizerError> {
        let skip_special = self.skip_special;
        match &mut self.inner {
            Inner::Table { table, pending, started } => {
                let Some(bytes) = table.token_bytes(id, skip_special)? else { return Ok(()) };
                let mut bytes = bytes;
                if !*started && !bytes.is_empty() {
                    *started = true;
                    if table.strip_leading_space && pending.is_empty() && bytes[0] == b' ' {
                        bytes = &bytes[1..];
                    }
                }
                pending.extend_from_slice(bytes);
                if let Some(b) = bytes_out {
                    b.extend_from_slice(bytes);
                }
                drain_complete_utf8(pending, out);
                Ok(())
            }
            Inner::Engine { engine, ids, prefix_offset, read_offset, vocab_size } => {
                if id as usize >= *vocab_size {
                    return Err(TokenizerError::IdOutOfRange { id, vocab_size: *vocab_size });
                }
                ids.push(id);
                let prefix = engine.hf_decode(&ids[*prefix_offset..*read_offset], skip_special)?;
                let full = engine.hf_decode(&ids[*prefix_offset..], skip_special)?;
                if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
                    out.push_str(&full[prefix.len()..]);
                    if let Some(b) = bytes_out {
                        b.extend_from_slice(&full.as_bytes()[prefix.len()..]);
                    }
                    *prefix_offset = *read_offset;
                    *read_offset = ids.len();
                }
                Ok(())
            }
        }
    }

    /// Ends the stream: whatever bytes are still held back, as text (an incomplete
    /// character at the very end becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let skip_special = self.skip_special;
        match &mut self.inner {
            Inner::Table { pending, started, .. } => {
                let s = String::from_utf8_lossy(pending).into_owned();
                pending.clear();
                *started = false;
                s
            }
            Inner::Engine { engine, ids, prefix_offset, read_offset, .. } => {
                let prefix = engine.hf_decode(&ids[*prefix_offset..*read_offset], skip_special).unwrap_or_default();
                let full = engine.hf_decode(&ids[*prefix_offset..], skip_special).unwrap_or_default();
                let rest = if full.len() > prefix.len() && full.is_char_boundary(prefix.len()) {
                    full[prefix.len()..].to_string()
                } else {
                    String::new()
                };
                ids.clear();
                *prefix_offset = 0;
                *read_offset = 0;
                rest
            }
        }
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> usize {
        match &self.inner {
            Inner::Table { pending, .. } => pending.len(),
            Inner::Engine { ids, read_offset, .. } => ids.len() - *read_offset,
        }
    }
}

/// Moves the longest complete-UTF-8 prefix of `pending` into `out`; invalid bytes become
/// U+FFFD, an incomplete sequence at the end stays in `pending`.
fn drain_complete_utf8(pending: &mut Vec<u8>, out: &mut String) {
    let mut pos = 0;
    loop {
        match std::str::from_utf8(&pending[pos..]) {
            Ok(s) => {
                out.push_str(s);
                pos = pending.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // valid_up_to bytes are UTF-8 by the error's contract
                out.push_str(std::str::from_utf8(&pending[pos..pos + valid]).unwrap_or_default());
                pos += valid;
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        pos += bad;
                    }
                    None => break,
                }
            }
        }
    }
    pending.drain(..pos);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PieceRule;

    #[test]
    fn holds_back_partial_characters() {
        // "é" split as bytes C3 A9 across byte-fallback tokens, then an invalid byte.
        let pieces = [Some("<0xC3>"), Some("<0xA9>"), Some("▁x"), Some("<0xFF>"), Some("<0xF0>")];
        let rule = PieceRule::SentencePiece { replace: Some(("▁".into(), " ".into())), byte_fallback: true };
        let table = Arc::new(DecodeTable::build(&pieces, vec![false; 5], &rule, true).unwrap());
        let mut s = StreamDecoder::with_table(table.clone(), false);
        assert_eq!(s.push(0).unwrap(), "");
        assert_eq!(s.pending_bytes(), 1);
        assert_eq!(s.push(1).unwrap(), "é");
        assert_eq!(s.push(2).unwrap(), " x");
        assert_eq!(s.push(3).unwrap(), "\u{FFFD}");
        assert_eq!(s.push(4).unwrap(), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        // The bytes of a split character come with each token, not when the text is whole.
        let mut s = StreamDecoder::with_table(table.clone(), false);
        let (mut text, mut bytes) = (String::new(), Vec::new());
        s.push_with_bytes(0, &mut text, &mut bytes).unwrap();
        assert_eq!((text.as_str(), bytes.as_slice()), ("", &[0xC3u8][..]));
        s.push_with_bytes(1, &mut text, &mut bytes).unwrap();
        assert_eq!((text.as_str(), bytes.as_slice()), ("é", "é".as_bytes()));
        // the prefix space is dropped only at the very start
        let mut s = StreamDecoder::with_table(table, false);
        assert_eq!(s.push(2).unwrap(), "x");
        assert_eq!(s.push(2).unwrap(), " x");
    }
}
