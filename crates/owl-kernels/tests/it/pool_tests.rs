//! ThreadPool: every thread index runs once per call, chunked loops cover every item once,
//! panics reach the caller, nested and concurrent use degrade to inline execution.

use owl_kernels::ThreadPool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Each call must run every thread index exactly once and return only after all of them.
fn check_many_runs(pool: &ThreadPool, calls: usize) {
    let n = pool.n_threads();
    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    for call in 0..calls {
        pool.run(&|i, nt| {
            assert_eq!(nt, n);
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        // `run` returned: every thread's increment of this call is visible.
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.load(Ordering::Relaxed), call + 1, "thread {i} after call {call}");
        }
    }
}

#[test]
fn pool_runs_every_index_once_per_call() {
    for n in [1, 2, 3] {
        let pool = ThreadPool::new(n);
        assert_eq!(pool.n_threads(), n);
        check_many_runs(&pool, 20_000);
    }
}

#[test]
fn pool_without_spin_parks_and_wakes() {
    // Zero spin: every call goes through park/unpark and the caller's condvar wait.
    let pool = ThreadPool::with_spin(2, Duration::ZERO);
    check_many_runs(&pool, 5_000);
    // Idle long enough for workers to be parked for sure, then call again.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2));
        check_many_runs(&pool, 3);
    }
}

#[test]
fn pool_zero_threads_means_one() {
    let pool = ThreadPool::new(0);
    assert_eq!(pool.n_threads(), 1);
    check_many_runs(&pool, 10);
}

#[test]
fn pool_parallel_for_covers_each_item_once() {
    let pool = ThreadPool::new(2);
    for (n_items, chunk) in [(0, 4), (1, 4), (4, 4), (5, 4), (1000, 1), (1000, 7), (1000, 0), (12345, 64)] {
        let seen: Vec<AtomicUsize> = (0..n_items).map(|_| AtomicUsize::new(0)).collect();
        let threads_used = AtomicUsize::new(0);
        pool.parallel_for(n_items, chunk, &|t, range| {
            assert!(t < pool.n_threads());
            assert!(range.len() <= chunk.max(1));
            threads_used.fetch_or(1 << t, Ordering::Relaxed);
            for i in range {
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "{n_items} items, chunk {chunk}");
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string payload>".into()
    }
}

#[test]
fn pool_forwards_worker_and_caller_panics() {
    let pool = ThreadPool::new(3);
    for bad in 0..3 {
        let finished = AtomicUsize::new(0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == bad {
                    panic!("boom on thread {i}");
                }
                std::thread::sleep(Duration::from_millis(5));
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = result.expect_err("the panic must reach the caller");
        assert_eq!(panic_message(&*payload), format!("boom on thread {bad}"));
        // The other threads ran to completion before the panic was re-raised.
        assert_eq!(finished.load(Ordering::Relaxed), 2);
        // The pool is still usable.
        check_many_runs(&pool, 100);
    }
    // Every thread panics: one payload arrives, nothing hangs.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(&|_, _| panic!("all"))));
    assert_eq!(panic_message(&*result.expect_err("panic")), "all");
    check_many_runs(&pool, 100);
}

#[test]
fn pool_nested_run_is_inline_single_thread() {
    let pool = ThreadPool::new(2);
    let inner_calls = AtomicUsize::new(0);
    let inner_shapes = AtomicUsize::new(0);
    pool.run(&|_, _| {
        pool.run(&|i, n| {
            inner_calls.fetch_add(1, Ordering::Relaxed);
            inner_shapes.fetch_add(i * 10 + n, Ordering::Relaxed);
        });
        let sum = AtomicUsize::new(0);
        pool.parallel_for(100, 10, &|_, r| {
            sum.fetch_add(r.sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 4950);
    });
    // Each of the two outer threads ran the inner closure once, as (0, 1).
    assert_eq!(inner_calls.into_inner(), 2);
    assert_eq!(inner_shapes.into_inner(), 2);
    check_many_runs(&pool, 10);
}

#[test]
fn pool_concurrent_callers_all_complete() {
    let pool = Arc::new(ThreadPool::new(2));
    let total = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let pool = Arc::clone(&pool);
            let total = Arc::clone(&total);
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let sum = AtomicUsize::new(0);
                    pool.parallel_for(64, 8, &|_, r| {
                        sum.fetch_add(r.len(), Ordering::Relaxed);
                    });
                    assert_eq!(sum.into_inner(), 64);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("caller thread");
    }
    assert_eq!(total.load(Ordering::Relaxed), 6000);
}

#[test]
fn pool_drop_joins_workers() {
    // Workers hold a clone of the captured Arc only while running a job; after drop the
    // pool's threads are gone and creating many pools does not leak threads or hang.
    for _ in 0..200 {
        let pool = ThreadPool::new(2);
        pool.run(&|_, _| {});
        drop(pool);
    }
    let pool = ThreadPool::with_spin(2, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(5)); // workers parked
    drop(pool);
}
