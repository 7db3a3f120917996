//! The hot path does not allocate: after a warm-up call has grown the pool's scratch
//! buffer, matmul (decode and prefill, every path) and `ThreadPool::run` allocate nothing on
//! any of the pool's threads.
//!
//! A counting global allocator wraps the system one for this test binary; it counts only on
//! threads that this test marked, so the other tests running in parallel do not interfere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::quant_common::Rng;
use owl_kernels::dispatch::{self, Isa};
use owl_kernels::ops::matmul::{matmul_with, Matrix};
use owl_kernels::quant::{self, BlockFormat};
use owl_kernels::ThreadPool;

struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn matmul_allocates_nothing_after_warm_up() {
    let pool = ThreadPool::new(2);
    // Mark the caller and the worker as tracked (the closure runs once on each).
    pool.run(&|_, _| TRACKED.with(|t| t.set(true)));
    let mut cases = Vec::new();
    for format in [BlockFormat::F16, BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::Q4_K] {
        let (rows, cols) = (256, 1024);
        let rb = format.row_bytes(cols).expect("row");
        let src = Rng::new(5).gaussian_row(rows * cols, 0.05);
        let mut data = vec![0u8; rows * rb];
        for r in 0..rows {
            quant::quantize_row(format, &src[r * cols..(r + 1) * cols], &mut data[r * rb..(r + 1) * rb]).expect("q");
        }
        cases.push((format, rows, cols, data));
    }
    let x = Rng::new(6).gaussian_row(64 * 1024, 1.0);
    let mut y = vec![0f32; 64 * 256];
    let tables: Vec<_> =
        Isa::ALL.into_iter().filter(|i| i.is_available()).map(|i| dispatch::table(i).expect("table")).collect();
    let mut run_all = || {
        for table in &tables {
            for (format, rows, cols, data) in &cases {
                let w = Matrix::new(*format, *rows, *cols, data);
                for n in [1, 3, 64] {
                    matmul_with(table, &pool, &w, &x[..n * cols], n, &mut y[..n * rows]).expect("matmul");
                }
            }
        }
        pool.run(&|_, _| {});
        pool.parallel_for(1000, 10, &|_, _| {});
    };
    run_all(); // warm-up: the scratch buffer grows to its largest size here
    ALLOCATIONS.store(0, Ordering::SeqCst);
    run_all();
    run_all();
    let n = ALLOCATIONS.load(Ordering::SeqCst);
    pool.run(&|_, _| TRACKED.with(|t| t.set(false)));
    assert_eq!(n, 0, "allocations on the hot path after warm-up");
}
