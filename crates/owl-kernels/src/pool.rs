//! A persistent thread pool for per-token work: `n_threads − 1` resident workers plus the
//! calling thread, woken for each [`ThreadPool::run`] and put back to sleep after it.
//!
//! Shape (ggml's `ggml_threadpool`, candle's `BarrierPool`): the caller publishes a job by
//! bumping an epoch counter; workers spin on that counter for a short while and then park.
//! The caller runs its own share (thread index 0), then waits for a pending-count to reach
//! zero, again spinning briefly before it sleeps on a condition variable. Nothing is
//! allocated and no lock is taken on the normal path; the only locks are in the slow paths
//! (a waiter that gave up spinning, a panic payload).
//!
//! Why a short spin: on a machine whose cores are shared (2 cores here, other processes
//! building beside us) a spinning worker steals the CPU another thread needs. The default
//! spin ([`DEFAULT_SPIN`]) covers the gap between the matmuls of one layer, not the gap
//! between tokens.
//!
//! Re-entrancy: a pool runs one job at a time. A `run` issued while the pool is already
//! running a job — from inside the job (a nested call, on any of its threads) or from
//! another thread at the same time — does not wait and does not deadlock: it runs its
//! closure inline on the calling thread as a pool of one, `f(0, 1)`. Results are the same;
//! only the parallelism is lost. Closures must therefore partition work by the
//! `n_threads` they are given, never by [`ThreadPool::n_threads`].
//!
//! Panics: a panic in the closure on any thread is caught, the other threads finish their
//! share, and the first payload is re-raised on the caller with `resume_unwind`. The pool
//! stays usable afterwards.

use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::ops::ActivationPrecision;

/// How long an idle worker (or a waiting caller) spins before it sleeps: long enough to
/// bridge the single-threaded work between two matmuls of a layer, short enough not to
/// burn a shared core between tokens.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The job as workers see it: a type- and lifetime-erased pointer to the caller's closure.
/// Valid from the epoch bump that publishes it until `pending` drops to zero; the caller
/// does not return from `run` before that, so the closure outlives every use.
type JobPtr = *const (dyn Fn(usize, usize) + Sync + 'static);

/// Keeps hot atomics on their own cache line so that a worker polling `epoch` does not
/// fight with workers decrementing `pending`.
#[repr(align(64))]
struct CacheLine<T>(T);

struct Shared {
    epoch: CacheLine<AtomicUsize>,
    pending: CacheLine<AtomicUsize>,
    /// Written by the caller while holding the pool (`busy`) and before the epoch bump;
    /// read by workers after they observe the bump.
    job: UnsafeCell<Option<JobPtr>>,
    n_threads: usize,
    shutdown: AtomicBool,
    /// One flag per worker: set while it is parked (or about to park), so that the caller
    /// knows whom to `unpark`.
    sleeping: Box<[CacheLine<AtomicBool>]>,
    /// The caller's slow-path wait: set while it waits on `done`.
    caller_sleeping: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
    panicked: AtomicBool,
    panic_payload: Mutex<Option<Box<dyn Any + Send>>>,
    spin: Duration,
}

// SAFETY: `job` is the only field that is not Sync by itself; it is written only by the
// thread that holds the pool (the `busy` flag) while no worker reads it (all workers have
// finished the previous epoch: `pending == 0`), and read by workers only between the epoch
// bump (Release/SeqCst) and their decrement of `pending`. The pointee is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Runs a closure on `n_threads` threads at once; thread 0 is the caller.
///
/// ```
/// use owl_kernels::ThreadPool;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let pool = ThreadPool::new(2);
/// let sum = AtomicUsize::new(0);
/// pool.parallel_for(1000, 64, &|_thread, range| {
///     sum.fetch_add(range.sum::<usize>(), Ordering::Relaxed);
/// });
/// assert_eq!(sum.into_inner(), 999 * 1000 / 2);
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job (or a [`Lease`]) uses the workers and the scratch buffer.
    busy: AtomicBool,
    /// Reusable scratch memory for kernels (quantized activations), guarded by `busy`.
    scratch: UnsafeCell<Vec<ScratchLine>>,
    /// How the matmuls run on this pool treat activations (its owner's numerics choice).
    activation_precision: ActivationPrecision,
}

// SAFETY: `scratch` is only touched by the holder of `busy` (see `Lease`).
unsafe impl Sync for ThreadPool {}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1), the caller counted as one of them, with the
    /// default spin. If the operating system refuses to start a worker, the pool keeps the
    /// workers it got: [`ThreadPool::n_threads`] says how many threads it really has.
    pub fn new(n_threads: usize) -> Self {
        Self::with_spin(n_threads, DEFAULT_SPIN)
    }

    /// A pool whose idle threads spin for `spin` before they sleep (0: sleep at once).
    pub fn with_spin(n_threads: usize, spin: Duration) -> Self {
        let wanted = n_threads.max(1);
        // Workers are told the final thread count before any job is published, so spawn
        // first with a provisional shared state and shrink on failure.
        let mut n = wanted;
        loop {
            match Self::spawn(n, spin) {
                Ok(pool) => return pool,
                Err(got) => n = got.max(1),
            }
        }
    }

    /// Tries to start `n - 1` workers; on failure returns how many threads were possible.
    fn spawn(n: usize, spin: Duration) -> Result<Self, usize> {
        let sleeping = (1..n).map(|_| CacheLine(AtomicBool::new(false))).collect();
        let shared = Arc::new(Shared {
            epoch: CacheLine(AtomicUsize::new(0)),
            pending: CacheLine(AtomicUsize::new(0)),
            job: UnsafeCell::new(None),
            n_threads: n,
            shutdown: AtomicBool::new(false),
            sleeping,
            caller_sleeping: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panicked: AtomicBool::new(false),
            panic_payload: Mutex::new(None),
            spin,
        });
        let mut pool = ThreadPool {
            shared: Arc::clone(&shared),
            workers: Vec::with_capacity(n - 1),
            busy: AtomicBool::new(false),
            scratch: UnsafeCell::new(Vec::new()),
            activation_precision: ActivationPrecision::default(),
        };
        for index in 1..n {
            let s = Arc::clone(&shared);
            let spawned =
                thread::Builder::new().name(format!("owl-worker-{index}")).spawn(move || worker_loop(&s, index));
            match spawned {
                Ok(handle) => pool.workers.push(handle),
                // Dropping `pool` shuts the started workers down and joins them.
                Err(_) => return Err(index),
            }
        }
        Ok(pool)
    }

    /// How [`matmul`](crate::ops::matmul) on this pool treats the activations of quantized
    /// weights. A pool is the execution context of one owner (a model), so the choice is
    /// made once, where the pool is built, and holds for every matmul of that owner.
    pub fn set_activation_precision(&mut self, precision: ActivationPrecision) {
        self.activation_precision = precision;
    }

    /// See [`set_activation_precision`](Self::set_activation_precision).
    pub fn activation_precision(&self) -> ActivationPrecision {
        self.activation_precision
    }

    /// Threads that take part in a [`run`](Self::run), the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Calls `f(thread_index, n_threads)` once on each thread and returns when all are
    /// done. Thread index 0 is the calling thread. A nested or concurrent call runs `f(0, 1)`
    /// inline (see the module documentation); a panic on any thread is re-raised here after
    /// all threads have finished.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        self.lease().run(f)
    }

    /// Parallel for over `0..n_items` in chunks of `chunk` items, claimed by the threads
    /// from a shared atomic counter (so a thread slowed down by another process takes fewer
    /// chunks). `f(thread_index, range)`; the thread index lets `f` use per-thread state.
    /// A job of one chunk, or a pool of one thread, runs inline without waking anyone.
    pub fn parallel_for(&self, n_items: usize, chunk: usize, f: &(dyn Fn(usize, Range<usize>) + Sync)) {
        self.lease().parallel_for(n_items, chunk, f)
    }

    /// Exclusive use of the workers and the scratch buffer until the lease is dropped; if
    /// the pool is busy (nested or concurrent use) the lease is a pool of one thread with a
    /// scratch buffer of its own.
    pub(crate) fn lease(&self) -> Lease<'_> {
        let owned = self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        Lease { pool: self, owned, _single_thread: std::marker::PhantomData }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.0.fetch_add(1, Ordering::SeqCst);
        for handle in &self.workers {
            handle.thread().unpark();
        }
        for handle in self.workers.drain(..) {
            // A worker never unwinds (jobs run under catch_unwind), so join cannot fail in
            // a way we could act on.
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.shared.n_threads)
            .field("spin", &self.shared.spin)
            .finish()
    }
}

/// Unit of the scratch buffer: 64-byte aligned so that any block struct (the widest,
/// `BlockQ8K`, needs 4) can be cast from it and rows start on cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct ScratchLine([u8; 64]);

/// Scratch memory taken out of a pool for one kernel call (see [`Lease::take_scratch`]).
pub(crate) struct Scratch(Vec<ScratchLine>);

impl Scratch {
    /// The first `bytes` bytes, 64-byte aligned, growing the buffer if needed (the only
    /// allocation, until it has reached the largest size asked for). Contents are left
    /// from earlier calls.
    pub(crate) fn bytes_mut(&mut self, bytes: usize) -> &mut [u8] {
        let lines = bytes.div_ceil(64);
        if self.0.len() < lines {
            self.0.resize(lines, ScratchLine([0; 64]));
        }
        // SAFETY: the buffer holds `lines * 64 >= bytes` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), bytes) }
    }
}

/// The pool held for one kernel call: its workers (or, when the pool was busy, just the
/// calling thread) and its reusable scratch memory. Not `Send`/`Sync`: the scratch cell
/// is touched only by the thread holding the lease.
pub(crate) struct Lease<'p> {
    pool: &'p ThreadPool,
    owned: bool,
    _single_thread: std::marker::PhantomData<*const ()>,
}

impl Lease<'_> {
    /// Threads a [`run`](Self::run) will use.
    pub(crate) fn n_threads(&self) -> usize {
        if self.owned {
            self.pool.shared.n_threads
        } else {
            1
        }
    }

    /// The pool's scratch buffer (a new, empty one if the pool was busy). Give it back with
    /// [`put_scratch`](Self::put_scratch) so that the next call reuses it.
    pub(crate) fn take_scratch(&self) -> Scratch {
        if self.owned {
            // SAFETY: we hold `busy` and the lease is not shared with other threads.
            Scratch(std::mem::take(unsafe { &mut *self.pool.scratch.get() }))
        } else {
            Scratch(Vec::new())
        }
    }

    pub(crate) fn put_scratch(&self, scratch: Scratch) {
        if self.owned {
            // SAFETY: as in `take_scratch`.
            unsafe { *self.pool.scratch.get() = scratch.0 };
        }
    }

    pub(crate) fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if !self.owned || self.pool.shared.n_threads == 1 {
            f(0, 1);
            return;
        }
        run_on_workers(self.pool, f);
    }

    pub(crate) fn parallel_for(&self, n_items: usize, chunk: usize, f: &(dyn Fn(usize, Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        if n_items == 0 {
            return;
        }
        if n_items <= chunk || self.n_threads() == 1 {
            f(0, 0..n_items);
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(&|thread, _| loop {
            let start = next.fetch_add(chunk, Ordering::Relaxed);
            if start >= n_items {
                break;
            }
            f(thread, start..(start + chunk).min(n_items));
        });
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.owned {
            self.pool.busy.store(false, Ordering::Release);
        }
    }
}

/// Publishes `f` to the workers, runs thread 0's share, waits for the rest, and re-raises
/// the first panic. The caller holds the pool.
fn run_on_workers(pool: &ThreadPool, f: &(dyn Fn(usize, usize) + Sync)) {
    let shared = &*pool.shared;
    let n = shared.n_threads;
    // SAFETY (lifetime erasure): the pointer is dereferenced only by workers between the
    // epoch bump below and their decrement of `pending`; this function does not return (or
    // unwind) before `pending` is zero, so `f` is alive for every use.
    let job: JobPtr =
        unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static (dyn Fn(usize, usize) + Sync)>(f) };
    // SAFETY: we hold the pool and the previous job has completed (pending == 0), so no
    // worker reads `job` now.
    unsafe { *shared.job.get() = Some(job) };
    shared.pending.0.store(n - 1, Ordering::Relaxed);
    shared.epoch.0.fetch_add(1, Ordering::SeqCst);
    for (slot, handle) in shared.sleeping.iter().zip(&pool.workers) {
        if slot.0.load(Ordering::SeqCst) {
            handle.thread().unpark();
        }
    }

    let caller_result = panic::catch_unwind(AssertUnwindSafe(|| f(0, n)));
    wait_for_workers(shared);

    if let Err(payload) = caller_result {
        take_worker_panic(shared);
        panic::resume_unwind(payload);
    }
    if let Some(payload) = take_worker_panic(shared) {
        panic::resume_unwind(payload);
    }
}

fn take_worker_panic(shared: &Shared) -> Option<Box<dyn Any + Send>> {
    if !shared.panicked.swap(false, Ordering::Acquire) {
        return None;
    }
    shared.panic_payload.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn wait_for_workers(shared: &Shared) {
    let start = Instant::now();
    let mut spins = 0u32;
    while shared.pending.0.load(Ordering::Acquire) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            if start.elapsed() < shared.spin {
                // Give the core to a worker that the OS has not scheduled yet (more
                // threads than free cores): it is what we are waiting for.
                thread::yield_now();
                continue;
            }
            let mut guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.caller_sleeping.store(true, Ordering::SeqCst);
            while shared.pending.0.load(Ordering::SeqCst) != 0 {
                guard = shared.done.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            shared.caller_sleeping.store(false, Ordering::Relaxed);
            return;
        }
        std::hint::spin_loop();
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let sleeping = &shared.sleeping[index - 1].0;
    let mut seen = 0usize;
    loop {
        seen = wait_for_epoch(shared, sleeping, seen);
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the epoch bump we observed (SeqCst) happened after the caller stored the
        // job; it stays valid until we decrement `pending` below.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job {
            // SAFETY: see `JobPtr`.
            let f = unsafe { &*job };
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(index, shared.n_threads))) {
                let mut slot = shared.panic_payload.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(payload);
                }
                shared.panicked.store(true, Ordering::Release);
            }
        }
        // Anything touched after this decrement must outlive the job: only `shared` does.
        if shared.pending.0.fetch_sub(1, Ordering::SeqCst) == 1 && shared.caller_sleeping.load(Ordering::SeqCst) {
            // Taking the lock orders this notify after the caller's `wait` started; a stale
            // notify reaching a later waiter is harmless (it re-checks `pending`).
            let _guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_one();
        }
    }
}

/// Spins on the epoch for the configured time, then parks until it changes. Returns the
/// new epoch.
fn wait_for_epoch(shared: &Shared, sleeping: &AtomicBool, seen: usize) -> usize {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = shared.epoch.0.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            if start.elapsed() >= shared.spin {
                break;
            }
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    loop {
        sleeping.store(true, Ordering::SeqCst);
        let e = shared.epoch.0.load(Ordering::SeqCst);
        if e != seen {
            sleeping.store(false, Ordering::Relaxed);
            return e;
        }
        // Either the caller's SeqCst load of `sleeping` (after its epoch bump) sees `true`
        // and unparks us, or our load above saw the new epoch. A spurious wake-up loops.
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_thread_pool_runs_inline() {
        let pool = ThreadPool::new(1);
        let caller = thread::current().id();
        pool.run(&|i, n| {
            assert_eq!((i, n), (0, 1));
            assert_eq!(thread::current().id(), caller);
        });
    }

    #[test]
    fn lease_scratch_is_reused_and_aligned() {
        let pool = ThreadPool::new(2);
        let p1 = {
            let lease = pool.lease();
            let mut scratch = lease.take_scratch();
            let s = scratch.bytes_mut(1000);
            assert_eq!(s.as_ptr() as usize % 64, 0);
            s[999] = 7;
            let p = s.as_ptr() as usize;
            lease.put_scratch(scratch);
            p
        };
        let lease = pool.lease();
        let mut scratch = lease.take_scratch();
        let s = scratch.bytes_mut(500);
        assert_eq!(s.as_ptr() as usize, p1, "second lease reuses the buffer");
        lease.put_scratch(scratch);
    }

    #[test]
    fn nested_lease_is_inline_with_own_scratch() {
        let pool = ThreadPool::new(2);
        let outer = pool.lease();
        let inner = pool.lease();
        assert_eq!(outer.n_threads(), 2);
        assert_eq!(inner.n_threads(), 1);
        assert_eq!(inner.take_scratch().bytes_mut(10).len(), 10);
    }
}
