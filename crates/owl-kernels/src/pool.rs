//! Thread pool for per-token work.
//!
//! PLACEHOLDER implementation (scoped threads per call) so that callers can be written
//! against the API; the kernels work replaces it with persistent spin-then-park workers.

/// Runs a closure on `n_threads` threads at once; thread 0 is the caller.
pub struct ThreadPool {
    n_threads: usize,
}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1), the caller counted as one of them.
    pub fn new(n_threads: usize) -> Self {
        Self { n_threads: n_threads.max(1) }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `f(thread_index, n_threads)` once on each thread and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        std::thread::scope(|s| {
            for i in 1..n {
                s.spawn(move || f(i, n));
            }
            f(0, n);
        });
    }
}
