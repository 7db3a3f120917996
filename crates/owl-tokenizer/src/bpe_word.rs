//! One pre-tokenized word through BPE: its characters as symbols, then merges, best-ranked
//! pair first — `tokenizers`' `BPE::merge_word` and `Word::merge_all` (0.23), which the
//! reference tokenizers run, over a rank the caller supplies: a merge list's position
//! ([`crate::bpe_model`]) or the rank SentencePiece's implied merges would have
//! ([`crate::spm_model`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::RwLock;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use tokenizers::Token;

use crate::piece_map::FxHasher;
use crate::piece_table::PieceTable;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Symbol {
    pub id: u32,
    prev: isize,
    next: isize,
    /// Source bytes covered; 0 once merged into its left neighbour.
    len: usize,
}

/// How a character that is not a piece becomes symbols.
pub(crate) struct Fallback<'a> {
    /// `<0xHH>` piece ids, for byte fallback (all `None`: no byte fallback).
    pub byte_ids: &'a [Option<u32>; 256],
    /// The unknown piece: a run of characters with neither a piece nor byte pieces becomes
    /// one of it (`fuse_unk`).
    pub unk: Option<u32>,
    /// Without an unknown piece: an error (`true`), or the character is dropped, as
    /// `tokenizers`' BPE does (`false`).
    pub error_without_unk: bool,
}

/// The characters of `word` as symbols: each its piece, else its bytes' pieces, else fused
/// into an unknown symbol.
pub(crate) fn symbols(word: &str, pieces: &PieceTable, fallback: &Fallback<'_>) -> tokenizers::Result<Vec<Symbol>> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    let mut unk_len: Option<usize> = None;
    let push = |symbols: &mut Vec<Symbol>, id: u32, len: usize| {
        let n = symbols.len() as isize;
        if let Some(last) = symbols.last_mut() {
            last.next = n;
        }
        symbols.push(Symbol { id, prev: n - 1, next: -1, len });
    };
    for (i, c) in word.char_indices() {
        let s = &word[i..i + c.len_utf8()];
        if let Some(id) = pieces.get(s) {
            if let (Some(len), Some(unk)) = (unk_len.take(), fallback.unk) {
                push(&mut symbols, unk, len);
            }
            push(&mut symbols, id, s.len());
            continue;
        }
        let mut bytes = [0u32; 4];
        if s.bytes().zip(&mut bytes).all(|(b, id)| fallback.byte_ids[b as usize].map(|i| *id = i).is_some()) {
            for &id in &bytes[..s.len()] {
                push(&mut symbols, id, 1);
            }
            continue;
        }
        match fallback.unk {
            Some(_) => unk_len = Some(unk_len.unwrap_or(0) + s.len()),
            None if fallback.error_without_unk => {
                return Err(format!("no token, byte token or unknown token for {s:?}").into());
            }
            None => {}
        }
    }
    if let (Some(len), Some(unk)) = (unk_len, fallback.unk) {
        push(&mut symbols, unk, len);
    }
    Ok(symbols)
}

/// A queued merge; ordered (and equal) by rank and position only, as `tokenizers`' `Merge`.
#[derive(Debug, Clone, Copy)]
struct Candidate<R> {
    rank: R,
    pos: usize,
    merged: u32,
}

impl<R: Ord> PartialEq for Candidate<R> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<R: Ord> Eq for Candidate<R> {}

impl<R: Ord> Ord for Candidate<R> {
    // BinaryHeap pops the greatest: the best (smallest) rank, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.pos.cmp(&self.pos))
    }
}

impl<R: Ord> PartialOrd for Candidate<R> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Applies merges until none is left: `pair(left, right)` is the rank (smaller first) and
/// result of merging two adjacent symbols, `None` when they do not merge.
pub(crate) fn merge_all<R: Ord + Copy>(symbols: &mut [Symbol], mut pair: impl FnMut(u32, u32) -> Option<(R, u32)>) {
    let mut queue: BinaryHeap<Candidate<R>> = symbols
        .windows(2)
        .enumerate()
        .filter_map(|(pos, w)| pair(w[0].id, w[1].id).map(|(rank, merged)| Candidate { rank, pos, merged }))
        .collect();
    while let Some(top) = queue.pop() {
        let cur = symbols[top.pos];
        if cur.len == 0 || cur.next < 0 {
            continue;
        }
        let next_pos = cur.next as usize;
        let right = symbols[next_pos];
        // skip entries made stale by an earlier merge
        match pair(cur.id, right.id) {
            Some((_, merged)) if merged == top.merged => {}
            _ => continue,
        }
        symbols[top.pos].id = top.merged;
        symbols[top.pos].len += right.len;
        symbols[top.pos].next = right.next;
        symbols[next_pos].len = 0;
        if right.next >= 0 {
            symbols[right.next as usize].prev = top.pos as isize;
        }
        let cur = symbols[top.pos];
        if cur.prev >= 0 {
            let prev = cur.prev as usize;
            if let Some((rank, merged)) = pair(symbols[prev].id, cur.id) {
                queue.push(Candidate { rank, pos: prev, merged });
            }
        }
        if cur.next >= 0 {
            let next = cur.next as usize;
            if let Some((rank, merged)) = pair(cur.id, symbols[next].id) {
                queue.push(Candidate { rank, pos: top.pos, merged });
            }
        }
    }
}

/// Words already merged, as `tokenizers`' BPE keeps them (up to 10,000 words shorter than
/// 256 bytes, then no more are added): most words of a text repeat, and a hit skips the
/// merge loop. Without it English encoded at half `tokenizers`' rate on Qwen2.5's
/// vocabulary; with it at the same (docs/PERFORMANCE.md).
#[derive(Default)]
pub(crate) struct WordCache {
    words: RwLock<HashMap<Box<str>, MergedWord, BuildHasherDefault<FxHasher>>>,
}

/// `(id, bytes covered)` per token of a merged word.
type MergedWord = Box<[(u32, u32)]>;

const CACHE_WORDS: usize = 10_000;
const CACHE_WORD_BYTES: usize = 256;

impl WordCache {
    /// The tokens of `word`: cached, or from `merge` (and then cached while there is room).
    pub(crate) fn tokens(
        &self,
        word: &str,
        pieces: &PieceTable,
        merge: impl FnOnce() -> tokenizers::Result<Vec<Symbol>>,
    ) -> tokenizers::Result<Vec<Token>> {
        let to_tokens = |merged: &[(u32, u32)]| {
            let mut pos = 0;
            merged
                .iter()
                .map(|&(id, len)| {
                    let offsets = (pos, pos + len as usize);
                    pos += len as usize;
                    Token::new(id, pieces.piece(id).to_string(), offsets)
                })
                .collect()
        };
        let cacheable = word.len() < CACHE_WORD_BYTES;
        if cacheable {
            if let Some(hit) = self.words.read().ok().and_then(|w| w.get(word).map(|m| to_tokens(m))) {
                return Ok(hit);
            }
        }
        let merged: MergedWord = merge()?.iter().filter(|s| s.len > 0).map(|s| (s.id, s.len as u32)).collect();
        let tokens = to_tokens(&merged);
        if cacheable {
            if let Ok(mut words) = self.words.write() {
                if words.len() < CACHE_WORDS {
                    words.insert(word.into(), merged);
                }
            }
        }
        Ok(tokens)
    }
}

/// The switches of a `tokenizers` BPE model's tokenizer.json entry.
pub(crate) struct BpeFlags {
    pub fuse_unk: bool,
    pub byte_fallback: bool,
    pub ignore_merges: bool,
}

/// A model written as the `tokenizers` BPE it stands for: its vocabulary in id order and
/// its merges in rank order.
pub(crate) fn serialize_as_bpe<S: Serializer, M: Serialize>(
    serializer: S,
    pieces: &PieceTable,
    unk: Option<u32>,
    flags: BpeFlags,
    merges: &M,
) -> Result<S::Ok, S::Error> {
    let vocab: BTreeMap<u32, &str> = pieces.entries().map(|(k, v)| (v, k)).collect();
    struct OrderedVocab<'a>(BTreeMap<u32, &'a str>);
    impl Serialize for OrderedVocab<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(id, p)| (*p, *id)))
        }
    }
    let mut m = serializer.serialize_struct("BPE", 10)?;
    m.serialize_field("type", "BPE")?;
    m.serialize_field("dropout", &None::<f32>)?;
    m.serialize_field("unk_token", &unk.map(|u| pieces.piece(u)))?;
    m.serialize_field("continuing_subword_prefix", &None::<String>)?;
    m.serialize_field("end_of_word_suffix", &None::<String>)?;
    m.serialize_field("fuse_unk", &flags.fuse_unk)?;
    m.serialize_field("byte_fallback", &flags.byte_fallback)?;
    m.serialize_field("ignore_merges", &flags.ignore_merges)?;
    m.serialize_field("vocab", &OrderedVocab(vocab))?;
    m.serialize_field("merges", merges)?;
    m.end()
}

/// The `tokenizers::Model` methods of a model whose vocabulary is its `pieces:
/// Arc<PieceTable>` and that trains, if asked, as a BPE.
macro_rules! piece_table_model_methods {
    () => {
        fn token_to_id(&self, token: &str) -> Option<u32> {
            self.pieces.get(token)
        }

        fn id_to_token(&self, id: u32) -> Option<String> {
            self.pieces.get_piece(id).map(str::to_string)
        }

        fn get_vocab(&self) -> std::collections::HashMap<String, u32> {
            self.pieces.entries().map(|(k, v)| (k.to_string(), v)).collect()
        }

        fn get_vocab_size(&self) -> usize {
            self.pieces.distinct()
        }

        fn get_trainer(&self) -> Self::Trainer {
            tokenizers::models::TrainerWrapper::BpeTrainer(tokenizers::models::bpe::BpeTrainer::default())
        }
    };
}
pub(crate) use piece_table_model_methods;
