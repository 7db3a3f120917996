//! BPE merges recovered from a SentencePiece vocabulary that ships none.
//!
//! SentencePiece BPE merges the adjacent pair whose union is the best-scored token. The
//! same result comes from a merge list: every way to cut a token into two tokens is a
//! merge, ranked by the token's score (best first). This is transformers'
//! `generate_merges` (tokenization_utils_base.py), reproduced exactly because its order is
//! what the reference tokenizers use: candidates of one token in (left id, right id) order,
//! then a stable sort by (score, left length, right length), all descending, lengths in
//! characters. Gemma ranks by file position instead of score (its scores do not follow the
//! merge order), which is the same sort with score = -position.

use std::collections::HashSet;

use crate::piece_map::PieceMap;

/// One merge: the two token ids and the merged token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DerivedMerge {
    pub left: u32,
    pub right: u32,
}

/// Derives merges for `tokens` (index = id), ranked by `rank_score[id]` (higher first).
/// `vocab` maps a piece to its id (the last id when a piece repeats, as a Python dict).
pub(crate) fn derive_merges(tokens: &[&str], vocab: &PieceMap<'_>, rank_score: &[f32]) -> Vec<DerivedMerge> {
    struct Candidate {
        left: u32,
        right: u32,
        score: f32,
        left_chars: u32,
        right_chars: u32,
    }
    let mut candidates: Vec<Candidate> = Vec::with_capacity(tokens.len() * 2);
    let mut local: Vec<Candidate> = Vec::new();
    // Python iterates a dict built from the token list: each distinct piece once, at its
    // first position, carrying the value of its last occurrence. Vocabularies rarely repeat
    // a piece, so the set of seen pieces is only kept when they do.
    let mut seen: Option<HashSet<&str>> = (vocab.len() != tokens.len()).then(HashSet::new);
    for &piece in tokens {
        if let Some(seen) = seen.as_mut() {
            if !seen.insert(piece) {
                continue;
            }
        }
        let Some(&id) = vocab.get(piece) else { continue };
        let score = rank_score[id as usize];
        let total_chars = piece.chars().count() as u32;
        local.clear();
        for (n, (cut, _)) in piece.char_indices().skip(1).enumerate() {
            let left_chars = n as u32 + 1;
            let (l, r) = piece.split_at(cut);
            let Some(&li) = vocab.get(l) else { continue };
            if let Some(&ri) = vocab.get(r) {
                local.push(Candidate { left: li, right: ri, score, left_chars, right_chars: total_chars - left_chars });
            }
        }
        local.sort_by_key(|c| (c.left, c.right));
        candidates.append(&mut local);
    }
    // Stable sort, descending on the whole key: equal keys keep their order.
    candidates.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates.into_iter().map(|c| DerivedMerge { left: c.left, right: c.right }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_generate_merges() {
        // Python: generate_merges(vocab, {t: s}) for this toy vocabulary gives
        // [('a','b'), ('ab','c'), ('a','bc'), ('b','c')] (checked by hand from the rule).
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -3.0, -2.0];
        let vocab: crate::piece_map::PieceMap<'_> = tokens.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
        let merges = derive_merges(&tokens, &vocab, &scores);
        let named: Vec<(&str, &str)> =
            merges.iter().map(|m| (tokens[m.left as usize], tokens[m.right as usize])).collect();
        assert_eq!(named, vec![("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]);
    }
}
