//! A piece→id map with a fast non-cryptographic hash: building a tokenizer looks up
//! millions of short substrings (every way to cut every token in two), where std's SipHash
//! dominated the Gemma build. Keys come from model files, not from untrusted network input
//! at a rate that would make hash flooding matter, and a slow map is only slower.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The multiply-rotate hash of rustc's FxHasher, 8 bytes at a time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    /// The state rotated, as rustc-hash 2 does: a hash map picks buckets by the low bits,
    /// and the low bits of a product depend only on the low bits of its input — an id-pair
    /// key `left << 32 | right` would land by `right` alone (Llama 3's 280k merges: a miss
    /// probed ~700 groups).
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

impl FxHasher {
    /// The unrotated state, whose top bits depend on every input bit: for tables that
    /// index by the top bits ([`crate::piece_table::PieceTable`]).
    #[inline]
    pub(crate) fn finish_top(&self) -> u64 {
        self.0
    }
}

/// Piece text → id; when a piece repeats, the last id wins (as a Python dict built from the
/// token list, which is what the reference tokenizers do).
pub(crate) type PieceMap<'a> = HashMap<&'a str, u32, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    /// Id-pair keys that share their low half (`right`) must not share a bucket: a map's
    /// bucket is the hash's low bits.
    #[test]
    fn pair_keys_spread_over_the_low_bits() {
        let build = BuildHasherDefault::<FxHasher>::default();
        let buckets: std::collections::HashSet<u64> =
            (0..4096u64).map(|left| build.hash_one((left << 32) | 115) & 0xffff).collect();
        assert!(buckets.len() > 3500, "{} of 4096 keys in distinct buckets", buckets.len());
    }
}
