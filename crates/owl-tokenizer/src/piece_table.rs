//! [`PieceTable`]: a vocabulary's pieces stored once — one text buffer, an end offset per
//! id, and an open-addressing index from text to id.
//!
//! Held as `Vec<String>` plus a `HashMap<Box<str>, u32>`, Gemma 3's 262,144 pieces were two
//! heap blocks each, kept twice (the tokenizer's piece list and the SentencePiece model):
//! ~60 MB of a 350 MB decode run's peak RSS and ~150 ms of its load (docs/PERFORMANCE.md).
//! Here they are three arrays (~6 MB), built in one pass and shared behind an `Arc`.

use crate::error::TokenizerError;
use crate::piece_map::FxHasher;
use std::hash::Hasher;

/// The pieces of ids `0..len()`; a piece that repeats maps back to its last id (as a
/// Python dict built from the token list, which is what the reference tokenizers do).
pub(crate) struct PieceTable {
    text: String,
    /// `ends[id]`: where piece `id` ends in `text`; it starts where `id - 1` ends.
    ends: Vec<u32>,
    /// `id + 1` per occupied slot, 0 for empty; a power of two at most half full.
    slots: Vec<u32>,
    /// `64 - log2(slots.len())`: a hash's top bits pick its first slot.
    shift: u32,
    distinct: usize,
}

impl PieceTable {
    pub(crate) fn new<S: AsRef<str>>(pieces: impl IntoIterator<Item = S>) -> Result<PieceTable, TokenizerError> {
        let mut text = String::new();
        let mut ends = Vec::new();
        for p in pieces {
            text.push_str(p.as_ref());
            let end = u32::try_from(text.len())
                .map_err(|_| TokenizerError::Engine("vocabulary text exceeds 4 GiB".into()))?;
            ends.push(end);
        }
        let n = ends.len();
        if n >= u32::MAX as usize / 2 {
            return Err(TokenizerError::Engine(format!("{n} tokens: more than a vocabulary can have")));
        }
        let capacity = (2 * n).max(16).next_power_of_two();
        let mut table =
            PieceTable { text, ends, slots: vec![0; capacity], shift: 64 - capacity.trailing_zeros(), distinct: 0 };
        for id in 0..n as u32 {
            let slot = table.find(table.piece(id));
            if table.slots[slot] == 0 {
                table.distinct += 1;
            }
            table.slots[slot] = id + 1;
        }
        Ok(table)
    }

    /// The slot holding `piece`, or the empty slot where it would go.
    #[inline]
    fn find(&self, piece: &str) -> usize {
        let mut h = FxHasher::default();
        h.write(piece.as_bytes());
        let mask = self.slots.len() - 1;
        let mut slot = (h.finish_top() >> self.shift) as usize;
        loop {
            match self.slots[slot] {
                0 => return slot,
                id if self.piece(id - 1) == piece => return slot,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The (last) id of `piece`.
    #[inline]
    pub(crate) fn get(&self, piece: &str) -> Option<u32> {
        self.slots[self.find(piece)].checked_sub(1)
    }

    /// The piece of `id`. Panics when `id >= len()`, as slice indexing does.
    #[inline]
    pub(crate) fn piece(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] as usize };
        &self.text[start..self.ends[id] as usize]
    }

    pub(crate) fn get_piece(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| self.piece(id))
    }

    /// Number of ids.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Number of different pieces.
    pub(crate) fn distinct(&self) -> usize {
        self.distinct
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len() as u32).map(|id| self.piece(id))
    }

    /// `(piece, id)` for every different piece, the id its last occurrence's.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.slots.iter().filter_map(|&s| s.checked_sub(1)).map(|id| (self.piece(id), id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_match_a_hash_map_built_from_the_same_list() {
        let mut pieces: Vec<String> = (0..5000).map(|i| format!("p{}", i * 7919 % 10007)).collect();
        pieces.extend(["", "▁the", "<0x0A>", "p14", "▁the", ""].map(String::from));
        let table = PieceTable::new(&pieces).unwrap();
        let map: std::collections::HashMap<&str, u32> =
            pieces.iter().enumerate().map(|(i, p)| (p.as_str(), i as u32)).collect();
        assert_eq!(table.len(), pieces.len());
        assert_eq!(table.distinct(), map.len());
        for (id, p) in pieces.iter().enumerate() {
            assert_eq!(table.piece(id as u32), p);
            assert_eq!(table.get(p), map.get(p.as_str()).copied(), "{p:?}");
        }
        assert_eq!(table.get("▁the"), Some(5004));
        assert_eq!(table.get(""), Some(5005));
        assert_eq!(table.get("absent"), None);
        assert_eq!(table.get_piece(pieces.len() as u32), None);
        let mut entries: Vec<(&str, u32)> = table.entries().collect();
        entries.sort_unstable_by_key(|e| e.1);
        let mut expected: Vec<(&str, u32)> = map.into_iter().collect();
        expected.sort_unstable_by_key(|e| e.1);
        assert_eq!(entries, expected);
    }

    #[test]
    fn an_empty_vocabulary_has_no_pieces() {
        let table = PieceTable::new(Vec::<String>::new()).unwrap();
        assert_eq!((table.len(), table.distinct(), table.get("a")), (0, 0, None));
    }
}
