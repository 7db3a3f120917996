//! Importance-matrix statistics (llama-imatrix's `collect_imatrix`): for every decoder
//! weight, the sum over the calibration tokens of each input column's square, and how many
//! tokens each matrix saw. For a stacked expert tensor each expert keeps its own sums and
//! count, over the tokens routed to it, as llama-imatrix does for `MUL_MAT_ID`.
//!
//! Attach an [`ImatrixCollector`] to a model ([`owl_models::Model::set_activation_observer`])
//! and run text through it (e.g. [`crate::perplexity`], which is how `owl imatrix` drives it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use owl_models::weights::WeightOrigin;
use owl_models::ActivationObserver;

/// Statistics of one stored weight tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixStats {
    /// Σx² per input column: `of` blocks of the input width, one per matrix of the tensor.
    pub sums: Vec<f64>,
    /// Rows (tokens) seen per matrix.
    pub counts: Vec<u64>,
}

#[derive(Default)]
pub struct ImatrixCollector {
    stats: Mutex<BTreeMap<Arc<str>, ImatrixStats>>,
}

impl ImatrixCollector {
    pub fn new() -> Self {
        ImatrixCollector::default()
    }

    /// What was collected so far, by tensor name.
    pub fn snapshot(&self) -> BTreeMap<String, ImatrixStats> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
}

impl ActivationObserver for ImatrixCollector {
    fn observe(&self, origin: &WeightOrigin, x: &[f32], n: usize) {
        // llama-imatrix keeps `blk.*` weights only (the output head needs --process-output,
        // which owl does not observe; embeddings are lookups, not products).
        if n == 0 || !origin.tensor.starts_with("blk.") || origin.index >= origin.of {
            return;
        }
        let cols = x.len() / n;
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = stats
            .entry(origin.tensor.clone())
            .or_insert_with(|| ImatrixStats { sums: vec![0.0; cols * origin.of], counts: vec![0; origin.of] });
        if entry.sums.len() != cols * origin.of {
            // The same name with another width (never in a well-formed model): keep the first.
            return;
        }
        let sums = &mut entry.sums[origin.index * cols..(origin.index + 1) * cols];
        for row in x.chunks_exact(cols) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += f64::from(v) * f64::from(v);
            }
        }
        entry.counts[origin.index] += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(name: &str, index: usize, of: usize) -> WeightOrigin {
        WeightOrigin { tensor: name.into(), index, of }
    }

    #[test]
    fn sums_squares_per_column_and_counts_rows_per_matrix() {
        let c = ImatrixCollector::new();
        c.observe(&origin("blk.0.attn_q.weight", 0, 1), &[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], 2);
        c.observe(&origin("blk.0.attn_q.weight", 0, 1), &[2.0, 0.0, 1.0], 1);
        c.observe(&origin("blk.1.ffn_up_exps.weight", 2, 4), &[1.0, -3.0], 1);
        c.observe(&origin("output.weight", 0, 1), &[1.0, 1.0], 1);
        c.observe(&origin("token_embd.weight", 0, 1), &[1.0, 1.0], 1);
        let s = c.snapshot();
        assert_eq!(s.len(), 2, "{s:?}");
        let q = &s["blk.0.attn_q.weight"];
        assert_eq!(q.sums, vec![1.0 + 1.0 + 4.0, 4.0 + 0.25 + 0.0, 9.0 + 4.0 + 1.0]);
        assert_eq!(q.counts, vec![3]);
        let e = &s["blk.1.ffn_up_exps.weight"];
        assert_eq!(e.sums, vec![0.0, 0.0, 0.0, 0.0, 1.0, 9.0, 0.0, 0.0]);
        assert_eq!(e.counts, vec![0, 0, 1, 0]);
    }
}
