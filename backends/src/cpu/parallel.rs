//! A small fork-join pool for the executor's kernels: `for_each(tasks, f)` runs
//! `f(0..tasks)` on the calling thread and the pool's workers.
//!
//! Why not rayon: a model runs hundreds of parallel loops of 10–100 µs each, separated
//! by short serial stretches. Rayon's idle workers fall asleep within microseconds and
//! take tens of microseconds to wake, so such loops ran almost entirely on the calling
//! thread (measured: two 20 µs tasks after a 20 µs pause took 40 µs on a two-thread rayon
//! pool, 20 µs here). These workers spin for a short while after each loop (as
//! onnxruntime's do) and only then sleep, so the next loop finds them awake.
//!
//! Loops never nest: a `for_each` issued while another is in flight (from a task, or
//! from a second thread sharing the pool) runs its tasks inline on its own thread.
//!
//! Kernels reach the pool through the free functions [`for_each`] and
//! [`for_each_chunk`], which use the pool [`ParallelPool::install`]ed on the calling
//! thread (the executor installs its own for the length of a run) and run serially
//! where none is.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker keeps polling for the next loop before it goes to sleep.
const SPIN_FOR: Duration = Duration::from_micros(300);

/// At most this many tasks per thread in [`ParallelPool::for_each_chunk`].
const CHUNK_TASKS_PER_THREAD: usize = 8;

/// A loop in flight: its tasks are claimed one index at a time.
struct Job {
    /// The task body, with its lifetime erased; only called for claimed indices below
    /// `tasks`, and the issuing thread waits for all of those to finish before the
    /// closure goes out of scope.
    body: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `body` points to a `Sync` closure that outlives every call made through it
// (see `Job::body`); the other fields are thread-safe.
unsafe impl Send for Job {}
// SAFETY: as above.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            // SAFETY: `i < tasks`, so the issuing thread is still waiting for this task
            // and the closure is alive (see `Job::body`).
            let body = unsafe { &*self.body };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(i))) {
                if let Ok(mut slot) = self.panic.lock() {
                    slot.get_or_insert(p);
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// State shared by the pool's handle and its workers.
struct Shared {
    /// Bumped for every published job (and at shutdown).
    epoch: AtomicU64,
    job: Mutex<Option<Arc<Job>>>,
    /// Workers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

/// A fixed set of worker threads plus the calling thread.
pub struct ParallelPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Set while a loop is in flight; a second loop meanwhile runs inline.
    busy: AtomicBool,
}

impl ParallelPool {
    /// A pool in which loops run on `threads` threads (the caller and `threads - 1`
    /// workers; at least 1). `on_start` runs first on each worker (e.g. to set
    /// floating-point flags).
    pub fn new(threads: usize, on_start: fn()) -> std::io::Result<ParallelPool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut pool = ParallelPool {
            shared: shared.clone(),
            workers: Vec::with_capacity(threads - 1),
            threads,
            busy: AtomicBool::new(false),
        };
        for i in 1..threads {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("cc-cpu-{i}"))
                .spawn(move || {
                    on_start();
                    worker(&shared);
                })?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Number of threads a loop runs on (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `body(i)` for every `i` in `0..tasks`, spread over the pool's threads, and
    /// returns when all are done. A panic in a task is re-raised here.
    pub fn for_each(&self, tasks: usize, body: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if tasks == 1
            || self.workers.is_empty()
            || self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            (0..tasks).for_each(body);
            return;
        }
        // SAFETY (lifetime erasure): this function does not return before every claimed
        // task (`i < tasks`) has finished, and `body` is never called for other indices.
        let erased: *const (dyn Fn(usize) + Sync + '_) = body;
        #[allow(clippy::missing_transmute_annotations)]
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(erased) };
        let job = Arc::new(Job {
            body: erased,
            tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        });
        if let Ok(mut slot) = self.shared.job.lock() {
            *slot = Some(job.clone());
        }
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _held = self.shared.sleep.lock();
            self.shared.wake.notify_all();
        }
        job.work();
        let mut spins = 0u32;
        while job.done.load(Ordering::Acquire) < tasks {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if let Ok(mut slot) = self.shared.job.lock() {
            *slot = None;
        }
        self.busy.store(false, Ordering::Release);
        let panicked = job.panic.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = panicked {
            resume_unwind(p);
        }
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be shorter) and runs
    /// `body(index, chunk)` on each, in parallel.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        body: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let chunks = len.div_ceil(chunk);
        if chunks == 0 {
            return;
        }
        // Runs of consecutive chunks per task, so that many tiny chunks do not each
        // cost a claim on the shared counter.
        let per_task = chunks.div_ceil(chunks.min(CHUNK_TASKS_PER_THREAD * self.threads));
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(chunks.div_ceil(per_task.max(1)), &|t| {
            for i in t * per_task..((t + 1) * per_task).min(chunks) {
                let start = i * chunk;
                let n = chunk.min(len - start);
                let p = base;
                // SAFETY: chunk `i` covers `start..start + n` of `data`, disjoint from
                // every other chunk, and `data` is borrowed mutably for the whole loop.
                let part = unsafe { std::slice::from_raw_parts_mut(p.0.add(start), n) };
                body(i, part);
            }
        });
    }
}

thread_local! {
    /// The pool installed on this thread, if any (see [`ParallelPool::install`]).
    static CURRENT: std::cell::Cell<*const ParallelPool> = const { std::cell::Cell::new(std::ptr::null()) };
}

impl ParallelPool {
    /// Runs `f` with this pool installed on the calling thread: the free functions
    /// [`for_each`] and [`for_each_chunk`] called meanwhile on this thread use it.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        let _installed = self.enter();
        f()
    }

    /// Installs this pool on the calling thread until the returned guard is dropped
    /// (see [`ParallelPool::install`]).
    pub fn enter(&self) -> Installed<'_> {
        Installed {
            previous: CURRENT.with(|c| c.replace(self)),
            _pool: std::marker::PhantomData,
        }
    }
}

/// While alive, a pool is installed on this thread; dropping it puts back the pool
/// installed before (see [`ParallelPool::enter`]).
pub struct Installed<'a> {
    previous: *const ParallelPool,
    _pool: std::marker::PhantomData<&'a ParallelPool>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Runs `body(i)` for `i` in `0..tasks` on the pool installed on this thread, or
/// serially on this thread where none is.
pub fn for_each(tasks: usize, body: &(dyn Fn(usize) + Sync)) {
    let current = CURRENT.with(|c| c.get());
    // SAFETY: a non-null pointer was set by `install`, whose borrow of the pool lasts
    // until it restores the previous value.
    match unsafe { current.as_ref() } {
        Some(pool) => pool.for_each(tasks, body),
        None => (0..tasks).for_each(body),
    }
}

/// [`ParallelPool::for_each_chunk`] on the pool installed on this thread, or serially.
pub fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk: usize,
    body: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let current = CURRENT.with(|c| c.get());
    // SAFETY: as in `for_each`.
    match unsafe { current.as_ref() } {
        Some(pool) => pool.for_each_chunk(data, chunk, body),
        None => data
            .chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| body(i, c)),
    }
}

/// Chunk `i` of `xs` cut into chunks of `size` (the last may be shorter; empty past
/// the end): the input that pairs with chunk `i` of an output cut the same way.
pub fn chunk_of<T>(xs: &[T], i: usize, size: usize) -> &[T] {
    let start = i.saturating_mul(size).min(xs.len());
    &xs[start..start.saturating_add(size).min(xs.len())]
}

/// Number of threads loops run on here: the installed pool's, or 1.
pub fn threads() -> usize {
    let current = CURRENT.with(|c| c.get());
    // SAFETY: as in `for_each`.
    unsafe { current.as_ref() }.map_or(1, |p| p.threads())
}

/// A raw pointer that may cross threads (for disjoint chunk access).
struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand out disjoint sub-slices of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Drop for ParallelPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _held = self.shared.sleep.lock();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A worker: waits for a new epoch (spinning for [`SPIN_FOR`], then asleep), helps with
/// the job published for it, repeats until shutdown.
fn worker(shared: &Shared) {
    // The epoch the pool was created with, not the current one: a worker that starts
    // late must still notice the loops (or the shutdown) published before it ran.
    let mut seen = 0;
    loop {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let now = shared.epoch.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            if idle_since.elapsed() < SPIN_FOR {
                continue;
            }
            // Sleep until the epoch moves.
            let Ok(mut held) = shared.sleep.lock() else {
                return;
            };
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            while shared.epoch.load(Ordering::SeqCst) == seen
                && !shared.shutdown.load(Ordering::SeqCst)
            {
                match shared.wake.wait(held) {
                    Ok(h) => held = h,
                    Err(_) => return,
                }
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(held);
            if shared.shutdown.load(Ordering::SeqCst) {
                return;
            }
            idle_since = Instant::now();
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let job = shared.job.lock().ok().and_then(|j| j.clone());
        if let Some(job) = job {
            job.work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = ParallelPool::new(3, || {}).unwrap();
        for tasks in [0, 1, 2, 7, 1000] {
            let mut empty: Vec<u8> = Vec::new();
            pool.for_each_chunk(&mut empty, 4, &|_, _| panic!("no chunks"));
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.for_each(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let pool = ParallelPool::new(2, || {}).unwrap();
        let mut v = vec![0usize; 1001];
        pool.for_each_chunk(&mut v, 100, &|i, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = i * 100 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }

    #[test]
    fn nested_and_concurrent_loops_run_inline() {
        let pool = Arc::new(ParallelPool::new(2, || {}).unwrap());
        let total = AtomicUsize::new(0);
        pool.for_each(4, &|_| {
            pool.for_each(5, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let n = AtomicUsize::new(0);
                    for _ in 0..200 {
                        pool.for_each(8, &|_| {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    n.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1600);
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_survives() {
        let pool = ParallelPool::new(2, || {}).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(10, &|i| {
                if i == 3 {
                    panic!("task 3");
                }
            })
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.for_each(10, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn installed_pool_serves_the_free_functions() {
        let pool = ParallelPool::new(2, || {}).unwrap();
        assert_eq!(threads(), 1);
        let mut v = vec![0u32; 100];
        pool.install(|| {
            assert_eq!(threads(), 2);
            for_each_chunk(&mut v, 7, &|i, c| c.fill(i as u32));
        });
        assert_eq!(threads(), 1);
        assert!(v.iter().enumerate().all(|(j, &x)| x as usize == j / 7));
        let n = AtomicUsize::new(0);
        for_each(5, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn sleeping_workers_wake_for_the_next_loop() {
        let pool = ParallelPool::new(2, || {}).unwrap();
        std::thread::sleep(SPIN_FOR * 4);
        let seen = Mutex::new(std::collections::HashSet::new());
        pool.for_each(64, &|_| {
            std::thread::sleep(Duration::from_micros(200));
            seen.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}
