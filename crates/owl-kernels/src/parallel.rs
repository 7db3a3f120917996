//! Splitting element-wise work over the pool: the size from which it pays ([`PARALLEL_FLOATS`]),
//! and one output buffer shared by the threads of a job that write disjoint parts.

use std::marker::PhantomData;
use std::ops::Range;

/// Below this many floats an element-wise op over a batch (norms, residual adds, rotation,
/// GLU) runs on the calling thread (a decode step's rows): at ~1 ns a float on one core (the
/// GLU product, AVX2), waking the pool would cost more than the work.
pub const PARALLEL_FLOATS: usize = 1 << 16;

/// A mutable f32 slice that pool threads may write through, each to ranges no other thread
/// touches during the job.
pub struct DisjointSlice<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: access goes through `range`, whose contract (disjoint ranges per thread for the
// duration of the job) rules out data races; the exclusive borrow is held for 'a.
unsafe impl Send for DisjointSlice<'_> {}
unsafe impl Sync for DisjointSlice<'_> {}

impl<'a> DisjointSlice<'a> {
    pub fn new(slice: &'a mut [f32]) -> Self {
        DisjointSlice { ptr: slice.as_mut_ptr(), len: slice.len(), _borrow: PhantomData }
    }

    /// The elements `r`.
    ///
    /// # Safety
    /// No other live reference (from any thread) may overlap `r` while the result lives.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn range(&self, r: Range<usize>) -> &mut [f32] {
        assert!(r.start <= r.end && r.end <= self.len, "range {r:?} outside a slice of {}", self.len);
        // SAFETY: in bounds (checked above); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }
}
