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
//! then the ids of the parts). The merge loop is `tokenizers`' own (`Word::merge_all`): the
//! best-ranked pair first, leftmost on ties, stale queue entries skipped. Building it is a
//! hash map of the pieces, so a tokenizer loads in a fraction of the time, and its ids equal
//! the merge-list BPE's (checked in the tests by exporting it as `tokenizer.json` with the
//! derived merges and loading that in `tokenizers`).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use tokenizers::models::bpe::BpeTrainer;
use tokenizers::models::TrainerWrapper;
use tokenizers::{Model, Token};

use crate::merges::derive_merges;
use crate::piece_map::PieceMap;

/// A SentencePiece-BPE model over pieces ranked by score (see the module docs).
pub(crate) struct SpmModel {
    pieces: Vec<String>,
    /// Piece text → id (last id of a repeated piece). Owns its keys via `pieces`' indices.
    ids: HashMap<Box<str>, u32, std::hash::BuildHasherDefault<crate::piece_map::FxHasher>>,
    /// Per id: the merged-token part of a pair's rank (smaller merges first).
    score_rank: Vec<u32>,
    /// Per id: where the piece first appears (ties between equally scored tokens).
    first_index: Vec<u32>,
    char_len: Vec<u32>,
    /// The rank scores the model was built with, for exporting the derived merges.
    rank_score: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    rank: PairRank,
    pos: usize,
    merged: u32,
}

impl Ord for Candidate {
    // BinaryHeap pops the greatest: the best rank, then the leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    /// Source bytes covered; 0 once merged into its left neighbour.
    len: usize,
}

impl SpmModel {
    /// `rank_score[id]`: higher merges first (the piece's score, or minus its position).
    pub(crate) fn new(pieces: Vec<String>, rank_score: Vec<f32>, unk: Option<u32>) -> SpmModel {
        let n = pieces.len();
        let mut ids: HashMap<Box<str>, u32, _> = HashMap::with_capacity_and_hasher(n, Default::default());
        let mut first_index: Vec<u32> = (0..n as u32).collect();
        let mut first_seen: PieceMap<'_> = PieceMap::default();
        let has_repeats = {
            for (i, p) in pieces.iter().enumerate() {
                ids.insert(p.as_str().into(), i as u32);
            }
            ids.len() != n
        };
        if has_repeats {
            for (i, p) in pieces.iter().enumerate() {
                let first = *first_seen.entry(p.as_str()).or_insert(i as u32);
                first_index[i] = first;
            }
            // a repeated piece is ranked at its first position, carrying its last id's score
            for (p, &id) in &ids {
                if let Some(&f) = first_seen.get(p.as_ref()) {
                    first_index[id as usize] = f;
                }
            }
        }
        drop(first_seen);
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
            *slot = ids.get(format!("<0x{b:02X}>").as_str()).copied();
        }
        SpmModel { pieces, ids, score_rank, first_index, char_len, rank_score, byte_ids, unk }
    }

    /// The merge of `left` and `right`, if their concatenation is a token.
    #[inline]
    fn pair(&self, left: u32, right: u32, buf: &mut String) -> Option<(PairRank, u32)> {
        buf.clear();
        buf.push_str(&self.pieces[left as usize]);
        buf.push_str(&self.pieces[right as usize]);
        let merged = *self.ids.get(buf.as_str())?;
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

    /// `tokenizers`' `BPE::merge_word` with byte fallback and fused unknowns, then the merges.
    fn symbols(&self, word: &str) -> tokenizers::Result<Vec<Symbol>> {
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
            if let Some(&id) = self.ids.get(s) {
                if let (Some(len), Some(unk)) = (unk_len.take(), self.unk) {
                    push(&mut symbols, unk, len);
                }
                push(&mut symbols, id, s.len());
                continue;
            }
            let bytes: Option<Vec<u32>> = s.bytes().map(|b| self.byte_ids[b as usize]).collect();
            if let Some(bytes) = bytes {
                for id in bytes {
                    push(&mut symbols, id, 1);
                }
                continue;
            }
            match self.unk {
                Some(_) => unk_len = Some(unk_len.unwrap_or(0) + s.len()),
                None => {
                    return Err(format!("no token, byte token or unknown token for {s:?}").into());
                }
            }
        }
        if let (Some(len), Some(unk)) = (unk_len, self.unk) {
            push(&mut symbols, unk, len);
        }
        Ok(symbols)
    }

    fn merge_all(&self, symbols: &mut [Symbol]) {
        let mut buf = String::new();
        let mut queue: BinaryHeap<Candidate> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.pair(w[0].id, w[1].id, &mut buf).map(|(rank, merged)| Candidate { rank, pos, merged })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let cur = symbols[top.pos];
            if cur.len == 0 || cur.next < 0 {
                continue;
            }
            let next_pos = cur.next as usize;
            let right = symbols[next_pos];
            // skip entries made stale by an earlier merge
            match self.pair(cur.id, right.id, &mut buf) {
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
                if let Some((rank, merged)) = self.pair(symbols[prev].id, cur.id, &mut buf) {
                    queue.push(Candidate { rank, pos: prev, merged });
                }
            }
            if cur.next >= 0 {
                let next = cur.next as usize;
                if let Some((rank, merged)) = self.pair(cur.id, symbols[next].id, &mut buf) {
                    queue.push(Candidate { rank, pos: top.pos, merged });
                }
            }
        }
    }

    /// The merge list this model implies, in rank order (for `tokenizer.json` export).
    pub(crate) fn derived_merges(&self) -> Vec<(String, String)> {
        let refs: Vec<&str> = self.pieces.iter().map(String::as_str).collect();
        let map: PieceMap<'_> = self.ids.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
        derive_merges(&refs, &map, &self.rank_score)
            .into_iter()
            .map(|m| (self.pieces[m.left as usize].clone(), self.pieces[m.right as usize].clone()))
            .collect()
    }
}

impl Model for SpmModel {
    type Trainer = TrainerWrapper;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        let mut symbols = self.symbols(sequence)?;
        self.merge_all(&mut symbols);
        let mut pos = 0;
        Ok(symbols
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| {
                let offsets = (pos, pos + s.len);
                pos += s.len;
                Token::new(s.id, self.pieces[s.id as usize].clone(), offsets)
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.pieces.get(id as usize).cloned()
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.ids.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.ids.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("owl's SentencePiece model is saved as part of tokenizer.json only".into())
    }

    fn get_trainer(&self) -> Self::Trainer {
        TrainerWrapper::BpeTrainer(BpeTrainer::default())
    }
}

/// Written as the equivalent `tokenizers` BPE model, derived merges included.
impl Serialize for SpmModel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let vocab: std::collections::BTreeMap<u32, &str> = self.ids.iter().map(|(k, v)| (*v, k.as_ref())).collect();
        struct OrderedVocab<'a>(std::collections::BTreeMap<u32, &'a str>);
        impl Serialize for OrderedVocab<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(id, p)| (*p, *id)))
            }
        }
        let mut m = serializer.serialize_struct("BPE", 10)?;
        m.serialize_field("type", "BPE")?;
        m.serialize_field("dropout", &None::<f32>)?;
        m.serialize_field("unk_token", &self.unk.map(|u| self.pieces[u as usize].as_str()))?;
        m.serialize_field("continuing_subword_prefix", &None::<String>)?;
        m.serialize_field("end_of_word_suffix", &None::<String>)?;
        m.serialize_field("fuse_unk", &true)?;
        m.serialize_field("byte_fallback", &true)?;
        m.serialize_field("ignore_merges", &false)?;
        m.serialize_field("vocab", &OrderedVocab(vocab))?;
        m.serialize_field("merges", &self.derived_merges())?;
        m.end()
    }
}
