//! Detokenization: every token id mapped once, at load, to the bytes it stands for.
//!
//! Decoding is then a lookup and a copy per token, and streaming is the same lookup plus
//! holding back an incomplete UTF-8 tail. The per-token rules mirror the `tokenizers`
//! decoders the models ship with:
//! - byte-level BPE (`ByteLevel`): each character of the piece is one byte through GPT-2's
//!   byte↔unicode table; a piece with a character outside the table (an added token such as
//!   `<｜end▁of▁sentence｜>`) is its own UTF-8 text;
//! - SentencePiece (`Replace("▁", " ")`, `ByteFallback`, `Fuse`, optionally `Strip(" ", 1, 0)`):
//!   `<0xNN>` pieces are the byte NN, `▁` is a space, and with a prefix space one leading
//!   space of the whole text is dropped.
//!
//! Invalid byte sequences become U+FFFD (as `String::from_utf8_lossy` does; `tokenizers`'
//! `ByteFallback` writes one U+FFFD per byte of a bad run instead — text only differs there).

use crate::error::TokenizerError;

/// How pieces turn into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PieceRule {
    ByteLevel,
    /// `replace` (from, to) applies to every piece; `byte_fallback` maps `<0xNN>` pieces.
    SentencePiece {
        replace: Option<(String, String)>,
        byte_fallback: bool,
    },
}

/// The bytes of every token, flattened.
#[derive(Debug)]
pub(crate) struct DecodeTable {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` is the byte range of token `id`.
    offsets: Vec<u32>,
    special: Vec<bool>,
    /// Drop one leading space of the decoded text (SentencePiece with a prefix space).
    pub(crate) strip_leading_space: bool,
}

impl DecodeTable {
    /// Builds the table from each id's piece (`None` for ids with no piece) and whether the
    /// id is special (hidden by `skip_special`).
    pub(crate) fn build(
        pieces: &[Option<&str>],
        special: Vec<bool>,
        rule: &PieceRule,
        strip_leading_space: bool,
    ) -> Result<DecodeTable, TokenizerError> {
        DecodeTable::build_with_raw(pieces, special, rule, strip_leading_space, &[])
    }

    /// As [`DecodeTable::build`], with `raw` `(id, bytes)` (in id order) for the tokens whose
    /// stored text is not UTF-8: their bytes are used as they are (SentencePiece's `▁` still
    /// becomes a space), not derived from the escaped text in `pieces`.
    pub(crate) fn build_with_raw(
        pieces: &[Option<&str>],
        special: Vec<bool>,
        rule: &PieceRule,
        strip_leading_space: bool,
        raw: &[(u32, Vec<u8>)],
    ) -> Result<DecodeTable, TokenizerError> {
        let mut bytes = Vec::with_capacity(pieces.iter().map(|p| p.map_or(0, str::len)).sum());
        let mut offsets = Vec::with_capacity(pieces.len() + 1);
        offsets.push(0u32);
        let unicode_to_byte = byte_level_decode_table();
        let mut raw = raw.iter().peekable();
        for (id, piece) in pieces.iter().enumerate() {
            if let Some((_, stored)) = raw.next_if(|(r, _)| *r as usize == id) {
                match rule {
                    PieceRule::SentencePiece { replace: Some((from, to)), .. } => {
                        replace_bytes(stored, from.as_bytes(), to.as_bytes(), &mut bytes)
                    }
                    _ => bytes.extend_from_slice(stored),
                }
            } else if let Some(piece) = piece {
                match rule {
                    PieceRule::ByteLevel => byte_level_bytes(piece, &unicode_to_byte, &mut bytes),
                    PieceRule::SentencePiece { replace, byte_fallback } => {
                        match byte_fallback.then(|| byte_token_value(piece)).flatten() {
                            Some(b) => bytes.push(b),
                            None => match replace {
                                Some((from, to)) => {
                                    bytes.extend_from_slice(piece.replace(from.as_str(), to).as_bytes())
                                }
                                None => bytes.extend_from_slice(piece.as_bytes()),
                            },
                        }
                    }
                }
            }
            let end = u32::try_from(bytes.len())
                .map_err(|_| TokenizerError::Engine("vocabulary text exceeds 4 GiB".into()))?;
            offsets.push(end);
        }
        Ok(DecodeTable { bytes, offsets, special, strip_leading_space })
    }

    pub(crate) fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The bytes of token `id`, or `None` when it is hidden (special and `skip_special`).
    #[inline]
    pub(crate) fn token_bytes(&self, id: u32, skip_special: bool) -> Result<Option<&[u8]>, TokenizerError> {
        let i = id as usize;
        if i >= self.len() {
            return Err(TokenizerError::IdOutOfRange { id, vocab_size: self.len() });
        }
        if skip_special && self.special[i] {
            return Ok(None);
        }
        Ok(Some(&self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]))
    }

    pub(crate) fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The whole text of `ids`.
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut out: Vec<u8> = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(b) = self.token_bytes(id, skip_special)? {
                out.extend_from_slice(b);
            }
        }
        let start = usize::from(self.strip_leading_space && out.first() == Some(&b' '));
        Ok(match String::from_utf8(out) {
            Ok(mut s) => {
                if start == 1 {
                    s.remove(0);
                }
                s
            }
            Err(e) => String::from_utf8_lossy(&e.into_bytes()[start..]).into_owned(),
        })
    }
}

/// Appends `text` with every `from` replaced by `to`, on bytes.
fn replace_bytes(text: &[u8], from: &[u8], to: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < text.len() {
        if !from.is_empty() && text[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// `<0x0A>` -> 0x0A, the pieces SentencePiece's byte fallback emits.
pub(crate) fn byte_token_value(piece: &str) -> Option<u8> {
    let b = piece.as_bytes();
    if b.len() == 6 && b.starts_with(b"<0x") && b[5] == b'>' {
        let hex = std::str::from_utf8(&b[3..5]).ok()?;
        u8::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68
/// bytes are shifted to U+0100.. in byte order.
pub(crate) fn byte_to_unicode_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let cp = if printable {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\0');
    }
    table
}

/// The inverse of [`byte_to_unicode_table`], indexed by code point (all are below U+0144).
fn byte_level_decode_table() -> [i16; 324] {
    let mut inv = [-1i16; 324];
    for (b, c) in byte_to_unicode_table().iter().enumerate() {
        inv[*c as usize] = b as i16;
    }
    inv
}

fn byte_level_bytes(piece: &str, inv: &[i16; 324], out: &mut Vec<u8>) {
    let start = out.len();
    for c in piece.chars() {
        match inv.get(c as usize) {
            Some(&b) if b >= 0 => out.push(b as u8),
            _ => {
                // Not a byte-level piece (an added token in plain text): its own bytes.
                out.truncate(start);
                out.extend_from_slice(piece.as_bytes());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table() {
        let t = byte_to_unicode_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xad], 'Ń');
        let mut all: Vec<char> = t.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn table_rules() {
        let pieces = [Some("Ġhello"), Some("<|im_end|>"), Some("ĠâĢĶ"), Some("<｜end▁of▁sentence｜>"), None];
        let special = vec![false, true, false, true, false];
        let t = DecodeTable::build(&pieces, special, &PieceRule::ByteLevel, false).unwrap();
        assert_eq!(t.decode(&[0, 1, 2, 3], false).unwrap(), " hello<|im_end|> —<｜end▁of▁sentence｜>");
        assert_eq!(t.decode(&[0, 1, 2, 3], true).unwrap(), " hello —");
        assert_eq!(t.token_bytes(4, false).unwrap(), Some(&b""[..]));
        assert!(matches!(t.decode(&[5], false), Err(TokenizerError::IdOutOfRange { id: 5, .. })));

        let pieces = [Some("▁Hello"), Some("<0xE2>"), Some("<0x80>"), Some("<0x94>"), Some("<s>")];
        let rule = PieceRule::SentencePiece { replace: Some(("▁".into(), " ".into())), byte_fallback: true };
        let t = DecodeTable::build(&pieces, vec![false, false, false, false, true], &rule, true).unwrap();
        assert_eq!(t.decode(&[0, 1, 2, 3], false).unwrap(), "Hello—");
        assert_eq!(t.decode(&[4, 0], false).unwrap(), "<s> Hello");
        assert_eq!(t.decode(&[4, 0], true).unwrap(), "Hello");
        assert_eq!(t.decode(&[0, 1, 2], false).unwrap(), "Hello\u{FFFD}");
    }
}
