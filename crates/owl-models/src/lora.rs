//! Low-rank adapters applied unmerged (LoRA, Hu et al. 2021, arXiv:2106.09685, eq. 3):
//!
//! ```text
//! y = W x + Σ_k  s_k · c_k · B_k (A_k x)       A_k: [r_k][in], B_k: [out][r_k]
//! ```
//!
//! with `c_k` the adapter's own scale (PEFT: `lora_alpha / r`, or `lora_alpha / √r` with
//! rsLoRA) and `s_k` the user's (`--lora DIR:SCALE`). The base weights are never touched, so
//! one loaded model serves sequences with different adapters, or none, in the same batch:
//! each sequence of a [`crate::Batch`] names its [`LoraSet`] and every projection adds the
//! deltas of the adapters its tokens asked for.
//!
//! This module holds adapters as the forward pass uses them, keyed by the stored name of
//! the base tensor they modify (in the base file's own naming). Reading PEFT and GGUF
//! adapter files, mapping their names and checking lineage live in owl-train.

use std::collections::HashMap;
use std::sync::Arc;

use owl_kernels::ThreadPool;

use owl_kernels::parallel::DisjointSlice;

/// The update of one base matrix: `ΔW = scale · B A`.
#[derive(Debug, Clone)]
pub struct LoraMatrix {
    rows: usize,
    cols: usize,
    rank: usize,
    /// `[rank][cols]`, row-major.
    a: Vec<f32>,
    /// `[rows][rank]`, row-major.
    b: Vec<f32>,
    scale: f32,
}

impl LoraMatrix {
    /// `a` is `[rank][cols]`, `b` is `[rows][rank]`; `scale` multiplies `B A`.
    pub fn new(rows: usize, cols: usize, rank: usize, a: Vec<f32>, b: Vec<f32>, scale: f32) -> Result<Self, String> {
        if rank == 0 || rows == 0 || cols == 0 {
            return Err(format!("an empty low-rank pair ({rows}x{cols}, rank {rank})"));
        }
        if Some(a.len()) != rank.checked_mul(cols) || Some(b.len()) != rows.checked_mul(rank) {
            return Err(format!(
                "A has {} values and B {} for {rows}x{cols} at rank {rank} (want {} and {})",
                a.len(),
                b.len(),
                rank.saturating_mul(cols),
                rows.saturating_mul(rank)
            ));
        }
        if !scale.is_finite() {
            return Err(format!("scale {scale} is not finite"));
        }
        Ok(LoraMatrix { rows, cols, rank, a, b, scale })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn a(&self) -> &[f32] {
        &self.a
    }

    pub fn b(&self) -> &[f32] {
        &self.b
    }

    pub fn bytes(&self) -> usize {
        (self.a.len() + self.b.len()) * 4
    }

    /// `ΔW = scale · B A` as a dense `[rows][cols]` matrix (merging).
    pub fn delta(&self) -> Vec<f32> {
        let mut d = vec![0f32; self.rows * self.cols];
        for (o, drow) in d.chunks_exact_mut(self.cols).enumerate() {
            for j in 0..self.rank {
                let bj = self.scale * self.b[o * self.rank + j];
                for (v, &a) in drow.iter_mut().zip(&self.a[j * self.cols..(j + 1) * self.cols]) {
                    *v += bj * a;
                }
            }
        }
        d
    }

    /// `y[t] += user_scale · scale · B (A x[t])` for one token: `x` has `cols` values, `y`
    /// `rows`; `u` is scratch of `rank` floats. A fixed order of operations per token, so
    /// the result does not depend on the batch.
    fn add_to(&self, x: &[f32], y: &mut [f32], u: &mut [f32], user_scale: f32) {
        let s = user_scale * self.scale;
        for (uj, arow) in u.iter_mut().zip(self.a.chunks_exact(self.cols)) {
            *uj = s * dot(arow, x);
        }
        for (yo, brow) in y.iter_mut().zip(self.b.chunks_exact(self.rank)) {
            *yo += dot(brow, u);
        }
    }
}

/// A dot product in eight lanes (the compiler vectorises it), summed in a fixed order.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// One adapter: its low-rank pairs by the stored name of the base tensor each modifies.
#[derive(Clone)]
pub struct LoraAdapter {
    name: String,
    matrices: HashMap<String, LoraMatrix>,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoraAdapter({:?}, {} matrices)", self.name, self.matrices.len())
    }
}

impl LoraAdapter {
    pub fn new(name: impl Into<String>, matrices: HashMap<String, LoraMatrix>) -> Self {
        LoraAdapter { name: name.into(), matrices }
    }

    /// What the user calls it (its directory or file name, unless told otherwise).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, tensor: &str) -> Option<&LoraMatrix> {
        self.matrices.get(tensor)
    }

    /// The pairs by base tensor name, in no particular order.
    pub fn matrices(&self) -> impl Iterator<Item = (&str, &LoraMatrix)> {
        self.matrices.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.matrices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matrices.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.matrices.values().map(LoraMatrix::bytes).sum()
    }
}

/// Adapters applied together to a sequence, each with the user's scale.
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    entries: Vec<(Arc<LoraAdapter>, f32)>,
}

impl LoraSet {
    pub fn new(entries: Vec<(Arc<LoraAdapter>, f32)>) -> Self {
        LoraSet { entries }
    }

    pub fn entries(&self) -> &[(Arc<LoraAdapter>, f32)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// "name:scale+name:scale", for logs and model names.
    pub fn describe(&self) -> String {
        self.entries.iter().map(|(a, s)| format!("{}:{s}", a.name())).collect::<Vec<_>>().join("+")
    }
}

/// Two sets are the same when they hold the same loaded adapters with the same scales: a
/// KV cache computed under one is valid for the other (prefix reuse asks this).
impl PartialEq for LoraSet {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((a, s), (b, t))| Arc::ptr_eq(a, b) && s.to_bits() == t.to_bits())
    }
}

/// The tokens of one forward call that share a [`LoraSet`].
#[derive(Debug, Clone)]
pub struct LoraGroup {
    pub set: Arc<LoraSet>,
    /// Rows of the activations (batch order) that use `set`.
    pub rows: Vec<usize>,
}

/// Which rows of a forward call's activations use which adapters.
#[derive(Debug, Clone, Default)]
pub struct LoraBatch {
    groups: Vec<LoraGroup>,
}

impl LoraBatch {
    /// Groups rows by set: `set_of(row)` for `n` rows. `None` when no row uses an adapter.
    pub fn group(n: usize, set_of: impl Fn(usize) -> Option<Arc<LoraSet>>) -> Option<LoraBatch> {
        let mut groups: Vec<LoraGroup> = Vec::new();
        for row in 0..n {
            let Some(set) = set_of(row).filter(|s| !s.is_empty()) else { continue };
            match groups.iter_mut().find(|g| Arc::ptr_eq(&g.set, &set) || *g.set == *set) {
                Some(g) => g.rows.push(row),
                None => groups.push(LoraGroup { set, rows: vec![row] }),
            }
        }
        (!groups.is_empty()).then_some(LoraBatch { groups })
    }

    pub fn groups(&self) -> &[LoraGroup] {
        &self.groups
    }

    /// Whether some row's adapters modify the base tensor `tensor`.
    pub fn touches(&self, tensor: &str) -> bool {
        self.groups.iter().any(|g| g.set.entries().iter().any(|(a, _)| a.get(tensor).is_some()))
    }

    /// The same grouping for a subset of the rows: `map(row)` is the row's index in the
    /// subset, or `None` when it is left out (the output head sees only the rows that want
    /// logits).
    pub fn restrict(&self, map: impl Fn(usize) -> Option<usize>) -> Option<LoraBatch> {
        let groups: Vec<LoraGroup> = self
            .groups
            .iter()
            .filter_map(|g| {
                let rows: Vec<usize> = g.rows.iter().filter_map(|&r| map(r)).collect();
                (!rows.is_empty()).then(|| LoraGroup { set: Arc::clone(&g.set), rows })
            })
            .collect();
        (!groups.is_empty()).then_some(LoraBatch { groups })
    }

    /// Adds the deltas of the base tensor `tensor` (`rows` outputs, `cols` inputs) to `y`
    /// (`[n][rows]`) for the rows of `x` (`[n][cols]`) whose adapters modify it.
    pub fn apply(&self, pool: &ThreadPool, tensor: &str, x: &[f32], cols: usize, y: &mut [f32], rows: usize) {
        for g in &self.groups {
            for (adapter, user_scale) in g.set.entries() {
                let Some(m) = adapter.get(tensor) else { continue };
                if m.rows != rows || m.cols != cols || *user_scale == 0.0 {
                    // Shapes were checked against the base when the adapter was bound.
                    continue;
                }
                add_rows(pool, m, *user_scale, &g.rows, x, y);
            }
        }
    }
}

fn add_rows(pool: &ThreadPool, m: &LoraMatrix, user_scale: f32, rows: &[usize], x: &[f32], y: &mut [f32]) {
    let (cols, out) = (m.cols, m.rows);
    let y = DisjointSlice::new(y);
    // About 256k multiply-adds a chunk, so a decode step of one token stays on one thread.
    let per_row = m.rank * (cols + out);
    let chunk = (262_144 / per_row.max(1)).max(1);
    pool.parallel_for(rows.len(), chunk, &|_, range| {
        let mut u = vec![0f32; m.rank];
        for &r in &rows[range] {
            // SAFETY: row `r` is written by this thread only (rows are distinct within a
            // group and each index is claimed once).
            let yr = unsafe { y.range(r * out..(r + 1) * out) };
            m.add_to(&x[r * cols..(r + 1) * cols], yr, &mut u, user_scale);
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair(rows: usize, cols: usize, rank: usize, scale: f32) -> LoraMatrix {
        let a = (0..rank * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
        let b = (0..rows * rank).map(|i| ((i * 5 % 11) as f32 - 5.0) / 10.0).collect();
        LoraMatrix::new(rows, cols, rank, a, b, scale).unwrap()
    }

    #[test]
    fn unmerged_delta_equals_the_dense_product() {
        let m = pair(5, 19, 3, 2.0);
        let d = m.delta();
        let x: Vec<f32> = (0..19 * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let adapter = Arc::new(LoraAdapter::new("t", HashMap::from([("w".to_string(), m)])));
        let set = Arc::new(LoraSet::new(vec![(adapter, 0.5)]));
        // Row 1 uses the adapter, row 0 does not.
        let batch = LoraBatch::group(2, |r| (r == 1).then(|| Arc::clone(&set))).unwrap();
        let mut y = vec![1f32; 10];
        batch.apply(&ThreadPool::new(2), "w", &x, 19, &mut y, 5);
        assert!(y[..5].iter().all(|&v| v == 1.0));
        for o in 0..5 {
            let want = 1.0 + 0.5 * (0..19).map(|c| d[o * 19 + c] * x[19 + c]).sum::<f32>();
            assert!((y[5 + o] - want).abs() < 1e-5, "{o}: {} vs {want}", y[5 + o]);
        }
        // Other tensors and shapes are left alone.
        let mut z = vec![0f32; 10];
        batch.apply(&ThreadPool::new(1), "v", &x, 19, &mut z, 5);
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn sets_compare_by_adapter_and_scale() {
        let a = Arc::new(LoraAdapter::new("a", HashMap::new()));
        let b = Arc::new(LoraAdapter::new("a", HashMap::new()));
        assert_eq!(LoraSet::new(vec![(Arc::clone(&a), 1.0)]), LoraSet::new(vec![(Arc::clone(&a), 1.0)]));
        assert_ne!(LoraSet::new(vec![(Arc::clone(&a), 1.0)]), LoraSet::new(vec![(a, 0.5)]));
        assert_ne!(LoraSet::new(vec![(b, 1.0)]), LoraSet::default());
    }

    #[test]
    fn malformed_pairs_are_refused() {
        assert!(LoraMatrix::new(2, 3, 1, vec![0.0; 3], vec![0.0; 3], 1.0).is_err());
        assert!(LoraMatrix::new(2, 3, 0, vec![], vec![], 1.0).is_err());
        assert!(LoraMatrix::new(2, 3, 1, vec![0.0; 3], vec![0.0; 2], f32::NAN).is_err());
    }
}
