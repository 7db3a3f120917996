//! A base model's log-probabilities saved once, compared with other runs later: the file
//! llama-perplexity writes with `--kl-divergence-base FILE` and reads back with
//! `--kl-divergence` (tools/perplexity/perplexity.cpp, `perplexity()` and `kl_divergence()`
//! at llama.cpp 0c1e570). Files either tool writes are read by both.
//!
//! Layout, little-endian:
//!
//! ```text
//! "_logits_"                       8 bytes
//! n_ctx, n_vocab, n_chunk          i32 each
//! tokens                           n_chunk · n_ctx i32, the text's tokens (before each
//!                                  window's first is replaced by BOS)
//! rows                             per window, one per scored position
//!                                  (n_ctx − 1 − n_ctx/2 of them), nv = 2·⌈n_vocab/2⌉ + 4
//!                                  u16 each: f32 scale, f32 min_log_prob, then n_vocab
//!                                  codes (padded to an even count)
//! ```
//!
//! A row keeps the log-probabilities within 16 nats of the top one:
//! `log p_i ≈ scale · code_i + min_log_prob`, with `min_log_prob` the log-probability of
//! `max(min logit, max logit − 16)` and `scale = (max − that) / 65535` (a step of at most
//! 2.4e-4 nats); lower ones get code 0.

use std::io::{Read, Write};

use crate::error::EngineError;

const MAGIC: &[u8; 8] = b"_logits_";

/// Bytes before the tokens: the magic and three i32.
const HEADER: u64 = 8 + 3 * 4;

/// The largest vocabulary and window a file may declare (a bound on what a header can make
/// the reader allocate; real vocabularies are under 2^18).
const MAX_VOCAB: usize = 1 << 24;
const MAX_CTX: usize = 1 << 24;

/// u16 slots of one row: two f32 (four slots) and the codes, padded to an even count.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Scored positions per window, as perplexity counts them.
pub fn scored_per_window(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// Encodes one logits row (llama's `log_softmax(n_vocab, logits, uint16_t *, tok)`, in the
/// same f32/f64 steps so that both tools write the same codes).
pub fn encode_row(logits: &[f32], out: &mut [u16]) {
    debug_assert_eq!(out.len(), row_len(logits.len()));
    let (mut max, mut min) = (logits[0], logits[0]);
    for &x in &logits[1..] {
        max = max.max(x);
        min = min.min(x);
    }
    let min = min.max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&x| f64::from((x - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, codes) = out.split_at_mut(4);
    for (pair, value) in head.chunks_exact_mut(2).zip([scale, min_log_prob]) {
        let bytes = value.to_le_bytes();
        pair[0] = u16::from_le_bytes([bytes[0], bytes[1]]);
        pair[1] = u16::from_le_bytes([bytes[2], bytes[3]]);
    }
    codes.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (c, &x) in codes.iter_mut().zip(logits) {
            if x > min {
                // ggml's nearest_int: round half to even (exact below 2^22).
                *c = (inv * (x - min)).round_ties_even().min(65535.0) as u16;
            }
        }
    }
}

/// One decoded row: `log p_i = scale · codes[i] + min_log_prob`.
#[derive(Debug, Clone, Copy)]
pub struct SavedRow<'a> {
    pub scale: f32,
    pub min_log_prob: f32,
    pub codes: &'a [u16],
}

impl<'a> SavedRow<'a> {
    pub fn new(row: &'a [u16], n_vocab: usize) -> Self {
        let f = |i: usize| {
            let (a, b) = (row[i].to_le_bytes(), row[i + 1].to_le_bytes());
            f32::from_le_bytes([a[0], a[1], b[0], b[1]])
        };
        SavedRow { scale: f(0), min_log_prob: f(2), codes: &row[4..4 + n_vocab] }
    }

    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * f32::from(self.codes[i]) + self.min_log_prob
    }
}

fn io_error(what: &str, e: std::io::Error) -> EngineError {
    EngineError::BaseFile(format!("{what}: {e}"))
}

/// Writes a file: the header at creation, then the rows in order. The caller writes into a
/// temporary file and renames it once [`BaseLogProbsWriter::finish`] succeeds.
pub struct BaseLogProbsWriter<W: Write> {
    out: W,
    n_vocab: usize,
    rows_left: usize,
    codes: Vec<u16>,
    bytes: Vec<u8>,
}

impl<W: Write> BaseLogProbsWriter<W> {
    /// `tokens` holds exactly `n_chunk · n_ctx` tokens.
    pub fn new(mut out: W, n_ctx: usize, n_vocab: usize, tokens: &[u32]) -> Result<Self, EngineError> {
        if n_ctx < 3 || n_vocab == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(n_ctx) {
            return Err(EngineError::BaseFile(format!(
                "cannot save {} tokens in windows of {n_ctx} over a vocabulary of {n_vocab}",
                tokens.len()
            )));
        }
        let n_chunk = tokens.len() / n_ctx;
        let as_i32 = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| EngineError::BaseFile(format!("{what} {v} does not fit the format's i32")))
        };
        let mut header = Vec::with_capacity(HEADER as usize + 4 * tokens.len());
        header.extend_from_slice(MAGIC);
        for (v, what) in [(n_ctx, "n_ctx"), (n_vocab, "n_vocab"), (n_chunk, "n_chunk")] {
            header.extend_from_slice(&as_i32(v, what)?.to_le_bytes());
        }
        for &t in tokens {
            header.extend_from_slice(&as_i32(t as usize, "token")?.to_le_bytes());
        }
        out.write_all(&header).map_err(|e| io_error("writing the header", e))?;
        Ok(BaseLogProbsWriter {
            out,
            n_vocab,
            rows_left: n_chunk * scored_per_window(n_ctx),
            codes: vec![0; row_len(n_vocab)],
            bytes: Vec::with_capacity(2 * row_len(n_vocab)),
        })
    }

    /// Appends the row of the next scored position.
    pub fn push(&mut self, logits: &[f32]) -> Result<(), EngineError> {
        if logits.len() != self.n_vocab {
            return Err(EngineError::LogitsLength { got: logits.len(), expected: self.n_vocab });
        }
        if self.rows_left == 0 {
            return Err(EngineError::BaseFile("more rows than the header's windows score".into()));
        }
        encode_row(logits, &mut self.codes);
        self.bytes.clear();
        self.bytes.extend(self.codes.iter().flat_map(|c| c.to_le_bytes()));
        self.out.write_all(&self.bytes).map_err(|e| io_error("writing a row", e))?;
        self.rows_left -= 1;
        Ok(())
    }

    /// Checks that every row was written and flushes.
    pub fn finish(mut self) -> Result<W, EngineError> {
        if self.rows_left != 0 {
            return Err(EngineError::BaseFile(format!("{} rows were never written", self.rows_left)));
        }
        self.out.flush().map_err(|e| io_error("flushing", e))?;
        Ok(self.out)
    }
}

/// A file opened for reading: the header and tokens up front, rows streamed in order.
pub struct BaseLogProbs<R: Read> {
    input: R,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
    bytes: Vec<u8>,
}

impl<R: Read> BaseLogProbs<R> {
    /// Reads and checks the header. `file_len`, when known, must be exactly what the header
    /// declares (a truncated or padded file is refused before anything runs).
    pub fn new(mut input: R, file_len: Option<u64>) -> Result<Self, EngineError> {
        let bad = |why: String| EngineError::BaseFile(why);
        let mut head = [0u8; HEADER as usize];
        input.read_exact(&mut head).map_err(|e| io_error("reading the header", e))?;
        if &head[..8] != MAGIC {
            return Err(bad("not a saved log-probabilities file (no \"_logits_\" magic)".into()));
        }
        let field =
            |i: usize| i32::from_le_bytes([head[8 + 4 * i], head[9 + 4 * i], head[10 + 4 * i], head[11 + 4 * i]]);
        let (n_ctx, n_vocab, n_chunk) = (field(0), field(1), field(2));
        let in_range = |v: i32, lo: i32, hi: usize| v >= lo && (v as usize) <= hi;
        if !in_range(n_ctx, 3, MAX_CTX) || !in_range(n_vocab, 1, MAX_VOCAB) || !in_range(n_chunk, 1, i32::MAX as usize)
        {
            return Err(bad(format!("implausible header: n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}")));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let n_tokens = n_chunk.checked_mul(n_ctx);
        let expected = n_tokens.and_then(|t| {
            let rows = (n_chunk as u64).checked_mul(scored_per_window(n_ctx) as u64)?;
            HEADER.checked_add(4 * t as u64)?.checked_add(rows.checked_mul(2 * row_len(n_vocab) as u64)?)
        });
        let (Some(n_tokens), Some(expected)) = (n_tokens, expected) else {
            return Err(bad(format!("header declares an impossible size: {n_chunk} windows of {n_ctx}")));
        };
        if let Some(len) = file_len {
            if len != expected {
                return Err(bad(format!(
                    "{len} bytes where its header ({n_chunk} windows of {n_ctx} tokens, vocabulary {n_vocab}) needs {expected}"
                )));
            }
        }
        // The size check bounds this allocation by the file's own length.
        let mut raw = vec![0u8; 4 * n_tokens];
        input.read_exact(&mut raw).map_err(|e| io_error("reading the tokens", e))?;
        let mut tokens = Vec::with_capacity(n_tokens);
        for (i, b) in raw.chunks_exact(4).enumerate() {
            let t = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if t < 0 || t as usize >= n_vocab {
                return Err(bad(format!("token {t} at {i} is outside the vocabulary of {n_vocab}")));
            }
            tokens.push(t as u32);
        }
        Ok(BaseLogProbs { input, n_ctx, n_vocab, n_chunk, tokens, bytes: Vec::new() })
    }

    /// Reads the next `out.len() / row_len(n_vocab)` rows.
    pub fn read_rows(&mut self, out: &mut [u16]) -> Result<(), EngineError> {
        self.bytes.resize(2 * out.len(), 0);
        self.input.read_exact(&mut self.bytes).map_err(|e| io_error("reading rows", e))?;
        for (c, b) in out.iter_mut().zip(self.bytes.chunks_exact(2)) {
            *c = u16::from_le_bytes([b[0], b[1]]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn log_softmax(x: &[f32]) -> Vec<f64> {
        let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let z: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        x.iter().map(|&v| v as f64 - max - z.ln()).collect()
    }

    #[test]
    fn a_row_keeps_the_top_16_nats_to_a_step() {
        let logits: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1000) as f32 * 0.03 - 12.0).collect();
        let mut row = vec![0u16; row_len(logits.len())];
        encode_row(&logits, &mut row);
        let saved = SavedRow::new(&row, logits.len());
        let want = log_softmax(&logits);
        let top = want.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        assert!(saved.scale > 0.0 && saved.scale <= 16.0 / 65535.0 + 1e-9);
        for (i, &w) in want.iter().enumerate() {
            let got = f64::from(saved.log_prob(i));
            if w >= top - 16.0 {
                assert!((got - w).abs() < 1.5e-4, "{i}: {got} vs {w}");
            } else {
                assert_eq!(saved.codes[i], 0, "{i}: below the 16-nat floor");
            }
        }
        // The maximum maps to the top code.
        let argmax = want.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(saved.codes[argmax], 65535);
        // A flat row has scale 0 and every code 0.
        let flat = vec![1.5f32; 3];
        let mut row = vec![7u16; row_len(3)];
        encode_row(&flat, &mut row);
        let s = SavedRow::new(&row, 3);
        assert_eq!((s.scale, s.codes), (0.0, &[0u16, 0, 0][..]));
        assert!((f64::from(s.min_log_prob) + 3f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn a_written_file_reads_back_and_a_damaged_one_is_refused() {
        let (n_ctx, n_vocab) = (6, 5);
        let tokens: Vec<u32> = (0..12).map(|i| i % 5).collect();
        let mut w = BaseLogProbsWriter::new(Vec::new(), n_ctx, n_vocab, &tokens).unwrap();
        let rows: Vec<Vec<f32>> =
            (0..2 * scored_per_window(n_ctx)).map(|r| (0..5).map(|i| (r * i) as f32 * 0.1).collect()).collect();
        for r in &rows {
            w.push(r).unwrap();
        }
        assert!(w.push(&rows[0]).is_err(), "one row too many");
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, HEADER + 4 * 12 + 4 * 2 * row_len(5) as u64);

        let mut f = BaseLogProbs::new(&bytes[..], Some(bytes.len() as u64)).unwrap();
        assert_eq!((f.n_ctx, f.n_vocab, f.n_chunk, &f.tokens), (6, 5, 2, &tokens));
        let mut got = vec![0u16; row_len(5) * rows.len()];
        f.read_rows(&mut got).unwrap();
        for (r, chunk) in rows.iter().zip(got.chunks_exact(row_len(5))) {
            let mut want = vec![0u16; row_len(5)];
            encode_row(r, &mut want);
            assert_eq!(chunk, &want[..]);
        }

        let err = |b: &[u8], len: Option<u64>| BaseLogProbs::new(b, len).err().unwrap().to_string();
        assert!(err(&bytes, Some(bytes.len() as u64 - 1)).contains("needs"));
        assert!(err(b"_logitz_............", None).contains("magic"));
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&(i32::MAX).to_le_bytes());
        assert!(err(&huge, None).contains("implausible"));
        let mut bad_token = bytes.clone();
        bad_token[HEADER as usize..HEADER as usize + 4].copy_from_slice(&9i32.to_le_bytes());
        assert!(err(&bad_token, Some(bytes.len() as u64)).contains("outside the vocabulary"));
        assert!(BaseLogProbsWriter::new(Vec::new(), 6, 5, &tokens[..7]).is_err(), "not whole windows");

        let short = BaseLogProbsWriter::new(Vec::new(), n_ctx, n_vocab, &tokens).unwrap();
        assert!(short.finish().is_err(), "rows missing");
    }
}
