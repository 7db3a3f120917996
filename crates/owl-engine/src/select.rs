//! The k largest values of an f32 slice, without sorting the slice: for the sampler's
//! top-k and the log-probability alternatives.
//!
//! Small k (the usual 1..64): one pass keeping a sorted k-entry buffer; a value costs one
//! comparison with the current k-th unless it beats it (then a binary search and a short
//! move). Large k: `select_nth_unstable` on a reused (value, id) buffer, then only the k
//! winners are sorted. Result order: value descending, ties by lower id. NaN is skipped.

use std::cmp::Ordering;

/// Up to this k the insertion buffer is used.
const INSERTION_MAX_K: usize = 64;

/// Reusable buffers (no allocation per call once warmed up).
#[derive(Debug, Default, Clone)]
pub(crate) struct TopK {
    best: Vec<(f32, u32)>,
    all: Vec<(f32, u32)>,
}

/// Descending value, then ascending id.
pub(crate) fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then(a.1.cmp(&b.1))
}

impl TopK {
    /// The `k` largest `(value, id)` of `values` (fewer if it has fewer non-NaN values).
    pub(crate) fn select(&mut self, values: &[f32], k: usize) -> &[(f32, u32)] {
        if k == 0 {
            return &[];
        }
        if k <= INSERTION_MAX_K {
            self.by_insertion(values, k)
        } else {
            self.by_partition(values, k)
        }
    }

    fn by_insertion(&mut self, values: &[f32], k: usize) -> &[(f32, u32)] {
        let best = &mut self.best;
        best.clear();
        best.reserve(k + 1);
        for (id, &v) in values.iter().enumerate() {
            if best.len() == k {
                // Ids arrive in ascending order, so an equal value loses the tie; NaN fails.
                match best.last() {
                    Some(&(worst, _)) if v > worst => {}
                    _ => continue,
                }
            } else if v.is_nan() {
                continue;
            }
            // After every entry whose value is >= v (earlier ids win ties).
            let at = best.partition_point(|&(b, _)| b >= v);
            best.insert(at, (v, id as u32));
            if best.len() > k {
                best.pop();
            }
        }
        best
    }

    pub(crate) fn by_partition(&mut self, values: &[f32], k: usize) -> &[(f32, u32)] {
        let all = &mut self.all;
        all.clear();
        all.extend(values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(id, &v)| (v, id as u32)));
        let k = k.min(all.len());
        if k == 0 {
            return &all[..0];
        }
        if k < all.len() {
            all.select_nth_unstable_by(k - 1, better);
        }
        let head = &mut all[..k];
        head.sort_unstable_by(better);
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256StarStar;

    fn naive(values: &[f32], k: usize) -> Vec<u32> {
        let mut v: Vec<(f32, u32)> =
            values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| (v, i as u32)).collect();
        v.sort_by(better);
        v.truncate(k);
        v.iter().map(|e| e.1).collect()
    }

    #[test]
    fn ties_go_to_the_lower_id_in_both_paths() {
        let values = [0.5f32, 2.0, 2.0, 1.0, 2.0, 1.0];
        let mut t = TopK::default();
        let ids: Vec<u32> = t.select(&values, 4).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![1, 2, 4, 3]);
        let ids: Vec<u32> = t.by_partition(&values, 4).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![1, 2, 4, 3]);
    }

    #[test]
    fn nan_is_skipped_and_neg_inf_comes_last() {
        let values = [f32::NAN, 0.0, f32::NEG_INFINITY, 0.0];
        let mut t = TopK::default();
        let ids: Vec<u32> = t.select(&values, 4).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        let ids: Vec<u32> = t.by_partition(&values, 4).iter().map(|e| e.1).collect();
        assert_eq!(ids, vec![1, 3, 2]);
    }

    #[test]
    fn both_paths_agree_with_a_full_sort() {
        let mut rng = Xoshiro256StarStar::seed_from_u64(3);
        let mut t = TopK::default();
        for &(n, k) in &[(1usize, 1usize), (10, 3), (1000, 20), (1000, 64), (1000, 65), (5000, 300), (50, 50), (50, 80)]
        {
            // Quantised values so that ties happen; ascending runs for the insertion worst case.
            let values: Vec<f32> = (0..n)
                .map(|i| if i % 3 == 0 { i as f32 * 1e-3 } else { (rng.below(200) as f32) * 0.05 - 5.0 })
                .collect();
            let want = naive(&values, k);
            let got: Vec<u32> = t.select(&values, k).iter().map(|e| e.1).collect();
            assert_eq!(got, want, "n={n} k={k}");
        }
    }
}
