//! BPE over a merge list, for GGUF vocabularies that carry one (`gpt2` byte-level BPE:
//! Qwen, SmolLM2, Llama 3; `llama` files with merges).
//!
//! The same tokens as `tokenizers`' `BPE` built from that vocabulary and merge list, which
//! is what the reference tokenizers run ([`crate::bpe_word`] follows its merge loop), built
//! over the tokenizer's [`PieceTable`] with the merges as an id-pair map: `tokenizers`
//! keeps the vocabulary as two string maps and parses every merge into two new strings,
//! 140 ms and ~30 MB for Qwen2.5's 151,665 tokens and 151,387 merges, the largest part of
//! loading its tokenizer (docs/PERFORMANCE.md). Written to `tokenizer.json` as that
//! `tokenizers` model.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Serialize, Serializer};
use tokenizers::models::TrainerWrapper;
use tokenizers::{Model, Token};

use crate::bpe_word::{self, BpeFlags, Fallback, WordCache};
use crate::error::TokenizerError;
use crate::piece_map::FxHasher;
use crate::piece_table::PieceTable;

/// `(left id) << 32 | (right id)` → (rank, merged id).
type MergeMap = HashMap<u64, (u32, u32), BuildHasherDefault<FxHasher>>;

/// What the merges are applied with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BpeOptions {
    /// A character without a piece becomes its `<0xHH>` byte pieces.
    pub byte_fallback: bool,
    /// A word that is a piece is that piece, merges not consulted (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// The unknown piece; runs of unknown characters fuse into one (the only way this
    /// model applies it, so the SentencePiece files that have one are built with
    /// `fuse_unk`; byte-level ones have none).
    pub unk: Option<u32>,
    /// Written as `fuse_unk` in tokenizer.json.
    pub fuse_unk: bool,
}

pub(crate) struct BpeModel {
    pieces: Arc<PieceTable>,
    merges: MergeMap,
    byte_ids: [Option<u32>; 256],
    options: BpeOptions,
    cache: WordCache,
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl BpeModel {
    /// `merges`: `"left right"` in rank order, split at the first space after the first
    /// character (llama.cpp's rule, so a merge may start with a space). A later merge of the
    /// same pair replaces an earlier one, as in `tokenizers`.
    pub(crate) fn new(
        pieces: Arc<PieceTable>,
        merges: &[String],
        options: BpeOptions,
    ) -> Result<BpeModel, TokenizerError> {
        let mut map = MergeMap::with_capacity_and_hasher(merges.len(), Default::default());
        let mut merged = String::new();
        for (index, m) in merges.iter().enumerate() {
            let bad = |problem: String| TokenizerError::BadMerge { index, merge: m.clone(), problem };
            let skip = m.chars().next().map_or(0, char::len_utf8);
            let space = m[skip..].find(' ').ok_or_else(|| bad("no space between the two parts".into()))?;
            let (left, right) = (&m[..skip + space], &m[skip + space + 1..]);
            let id = |part: &str| pieces.get(part).ok_or_else(|| bad(format!("{part:?} is not in the vocabulary")));
            let (l, r) = (id(left)?, id(right)?);
            merged.clear();
            merged.push_str(left);
            merged.push_str(right);
            let new = id(&merged)?;
            let rank = u32::try_from(index).map_err(|_| bad("more merges than ranks".into()))?;
            map.insert(pair_key(l, r), (rank, new));
        }
        let mut byte_ids = [None; 256];
        if options.byte_fallback {
            for (b, slot) in byte_ids.iter_mut().enumerate() {
                *slot = pieces.get(&format!("<0x{b:02X}>"));
            }
        }
        Ok(BpeModel { pieces, merges: map, byte_ids, options, cache: WordCache::default() })
    }

    /// The merges in rank order, each pair once (as `tokenizers` writes them).
    fn ranked_merges(&self) -> Vec<(&str, &str)> {
        let mut ranked: Vec<(u32, u64)> = self.merges.iter().map(|(&k, &(rank, _))| (rank, k)).collect();
        ranked.sort_unstable();
        ranked.into_iter().map(|(_, k)| (self.pieces.piece((k >> 32) as u32), self.pieces.piece(k as u32))).collect()
    }
}

impl Model for BpeModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        if self.options.ignore_merges {
            if let Some(id) = self.pieces.get(sequence) {
                return Ok(vec![Token::new(id, sequence.to_string(), (0, sequence.len()))]);
            }
        }
        self.cache.tokens(sequence, &self.pieces, || {
            let fallback = Fallback { byte_ids: &self.byte_ids, unk: self.options.unk, error_without_unk: false };
            let mut symbols = bpe_word::symbols(sequence, &self.pieces, &fallback)?;
            bpe_word::merge_all(&mut symbols, |left, right| self.merges.get(&pair_key(left, right)).copied());
            Ok(symbols)
        })
    }

    bpe_word::piece_table_model_methods!();

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("owl's BPE model is saved as part of tokenizer.json only".into())
    }
}

/// Written as the `tokenizers` BPE model it stands for.
impl Serialize for BpeModel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let BpeOptions { byte_fallback, ignore_merges, unk, fuse_unk } = self.options;
        let flags = BpeFlags { fuse_unk, byte_fallback, ignore_merges };
        bpe_word::serialize_as_bpe(serializer, &self.pieces, unk, flags, &self.ranked_merges())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pieces: &[&str], merges: &[&str]) -> Result<BpeModel, TokenizerError> {
        let table = Arc::new(PieceTable::new(pieces).unwrap());
        let merges: Vec<String> = merges.iter().map(|m| m.to_string()).collect();
        BpeModel::new(table, &merges, BpeOptions::default())
    }

    fn ids(m: &BpeModel, word: &str) -> Vec<u32> {
        m.tokenize(word).unwrap().iter().map(|t| t.id).collect()
    }

    #[test]
    fn merge_lines_split_at_the_first_space_after_the_first_character() {
        let m = model(&["Ġ", "t", "Ġt", " ", "x", " x", "a", "b", "ab"], &["Ġ t", "  x", "a b"]).unwrap();
        assert_eq!(ids(&m, "Ġt"), [2]);
        assert_eq!(ids(&m, " x"), [5]);
        assert_eq!(ids(&m, "ab"), [8]);
        assert_eq!(m.ranked_merges(), [("Ġ", "t"), (" ", "x"), ("a", "b")]);
        assert!(matches!(model(&["a"], &["ab"]), Err(TokenizerError::BadMerge { index: 0, .. })));
        let err = model(&["a", "b"], &["a b"]).err().unwrap();
        assert!(
            matches!(err, TokenizerError::BadMerge { index: 0, .. }) && err.to_string().contains("\"ab\""),
            "{err}"
        );
    }

    #[test]
    fn lower_ranks_merge_first_and_leftmost_on_ties() {
        let pieces = ["a", "b", "c", "ab", "bc", "abc", "aa"];
        // "bc" outranks "ab": "abc" = a + bc, then no merge (a, bc) is listed.
        let m = model(&pieces, &["b c", "a b", "ab c"]).unwrap();
        assert_eq!(ids(&m, "abc"), [0, 4]);
        let m = model(&pieces, &["a b", "b c", "ab c"]).unwrap();
        assert_eq!(ids(&m, "abc"), [5]);
        // "aaa": the leftmost pair merges first.
        let m = model(&pieces, &["a a"]).unwrap();
        assert_eq!(ids(&m, "aaa"), [6, 0]);
        // A character without a piece is dropped, as `tokenizers` does without an unknown
        // token, and its neighbours meet.
        assert_eq!(ids(&m, "aza"), [6]);
    }
}
