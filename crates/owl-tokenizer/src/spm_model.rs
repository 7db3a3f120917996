//! SentencePiece BPE for vocabularies that ship without merges, without materialising the
//! merges.
//!
//! A GGUF `llama` vocabulary (Gemma, Llama 2, Mistral) has tokens and scores but no merge
//! list. The reference tokenizers (transformers' GGUF conversion) derive one — every cut of
//! every token into two tokens, ranked ([`crate::merges`]) — and run `tokenizers`' BPE on it.
//! For Gemma's 262k vocabulary that is half a million merges to build, store and hash as
//! strings. This model answers the same question at encode time instead, as llama.cpp's SPM
//! tokenizer does: two adjacent symbols may merge when their concatenation is a token, and
//! the pair's rank is the rank that merge would have had in the derived list (the merged
//! token's score, then the longer left part, then the longer right part, then token order,
//! then the ids of the parts). The merge loop is `tokenizers`' own ([`crate::bpe_word`]): the
//! best-ranked pair first, leftmost on ties, stale queue entries skipped. Building it is a
//! hash map of the pieces, so a tokenizer loads in a fraction of the time, and its ids equal
//! the merge-list BPE's (checked in the tests by exporting it as `tokenizer.json` with the
//! derived merges and loading that in `tokenizers`).

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Serialize, Serializer};
use tokenizers::models::TrainerWrapper;
use tokenizers::{Model, Token};

use crate::bpe_word::{self, BpeFlags, Fallback, WordCache};
use crate::merges::derive_merges;
use crate::piece_map::PieceMap;
use crate::piece_table::PieceTable;

/// A SentencePiece-BPE model over pieces ranked by score (see the module docs).
pub(crate) struct SpmModel {
    /// Piece text ↔ id (a repeated piece maps to its last id), shared with the tokenizer.
    pieces: Arc<PieceTable>,
    /// Per id: the merged-token part of a pair's rank (smaller merges first).
    score_rank: Vec<u32>,
    /// Per id: where the piece first appears (ties between equally scored tokens).
    first_index: Vec<u32>,
    char_len: Vec<u32>,
    /// The rank scores the model was built with, for exporting the derived merges.
    rank_score: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
    cache: WordCache,
}

/// The rank of the merge (left, right) -> merged; smaller merges first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PairRank {
    score_rank: u32,
    left_len: Reverse<u32>,
    right_len: Reverse<u32>,
    first_index: u32,
    left: u32,
    right: u32,
}

impl SpmModel {
    /// `rank_score[id]`: higher merges first (the piece's score, or minus its position).
    pub(crate) fn new(pieces: Arc<PieceTable>, rank_score: Vec<f32>, unk: Option<u32>) -> SpmModel {
        let n = pieces.len();
        let mut first_index: Vec<u32> = (0..n as u32).collect();
        if pieces.distinct() != n {
            let mut first_seen: PieceMap<'_> = PieceMap::default();
            for (i, p) in pieces.iter().enumerate() {
                let first = *first_seen.entry(p).or_insert(i as u32);
                first_index[i] = first;
            }
            // a repeated piece is ranked at its first position, carrying its last id's score
            for (p, id) in pieces.entries() {
                if let Some(&f) = first_seen.get(p) {
                    first_index[id as usize] = f;
                }
            }
        }
        // Dense ranks of the scores, best first, so pair ranks compare as integers.
        let mut order: Vec<u32> = (0..n as u32).collect();
        // total_cmp: a total order even for NaN (vocabularies from files are checked for
        // finite scores, but the sort must never depend on that).
        order.sort_by(|&a, &b| rank_score[b as usize].total_cmp(&rank_score[a as usize]));
        let mut score_rank = vec![0u32; n];
        let mut rank = 0u32;
        for (k, &id) in order.iter().enumerate() {
            if k > 0 && rank_score[order[k - 1] as usize] != rank_score[id as usize] {
                rank += 1;
            }
            score_rank[id as usize] = rank;
        }
        let char_len = pieces.iter().map(|p| p.chars().count() as u32).collect();
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = pieces.get(&format!("<0x{b:02X}>"));
        }
        SpmModel { pieces, score_rank, first_index, char_len, rank_score, byte_ids, unk, cache: WordCache::default() }
    }

    /// The merge of `left` and `right`, if their concatenation is a token.
    #[inline]
    fn pair(&self, left: u32, right: u32, buf: &mut String) -> Option<(PairRank, u32)> {
        buf.clear();
        buf.push_str(self.pieces.piece(left));
        buf.push_str(self.pieces.piece(right));
        let merged = self.pieces.get(buf)?;
        let rank = PairRank {
            score_rank: self.score_rank[merged as usize],
            left_len: Reverse(self.char_len[left as usize]),
            right_len: Reverse(self.char_len[right as usize]),
            first_index: self.first_index[merged as usize],
            left,
            right,
        };
        Some((rank, merged))
    }

    /// The merge list this model implies, in rank order (for `tokenizer.json` export).
    pub(crate) fn derived_merges(&self) -> Vec<(String, String)> {
        let refs: Vec<&str> = self.pieces.iter().collect();
        let map: PieceMap<'_> = self.pieces.entries().collect();
        derive_merges(&refs, &map, &self.rank_score)
            .into_iter()
            .map(|m| (self.pieces.piece(m.left).to_string(), self.pieces.piece(m.right).to_string()))
            .collect()
    }
}

impl Model for SpmModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        self.cache.tokens(sequence, &self.pieces, || {
            let fallback = Fallback { byte_ids: &self.byte_ids, unk: self.unk, error_without_unk: true };
            let mut symbols = bpe_word::symbols(sequence, &self.pieces, &fallback)?;
            let mut buf = String::new();
            bpe_word::merge_all(&mut symbols, |left, right| self.pair(left, right, &mut buf));
            Ok(symbols)
        })
    }

    bpe_word::piece_table_model_methods!();

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("owl's SentencePiece model is saved as part of tokenizer.json only".into())
    }
}

/// Written as the equivalent `tokenizers` BPE model, derived merges included.
impl Serialize for SpmModel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let flags = BpeFlags { fuse_unk: true, byte_fallback: true, ignore_merges: false };
        bpe_word::serialize_as_bpe(serializer, &self.pieces, self.unk, flags, &self.derived_merges())
    }
}
