//! Work sharing for the kernels: a raw output pointer the threads write disjoint parts of, and
//! a shared counter of pieces taken by a pool of threads that stay awake between products.
//!
//! Decoding runs ~150 small products per token (each 0.05-1 ms), with serial work between them.
//! Rayon's idle workers go to sleep within microseconds, and waking one (on a VM, a halted
//! virtual CPU) costs a good part of a product. So the decoding products run on their own helper
//! threads that poll for a while after each product ([`SPIN`]), as llama.cpp's threads poll
//! between ops, and sleep only when no product has come for that long. Measured on a 2-core
//! Zen 4 VM, Q4_K_M TinyLlama decoding: 32.2-34.2 tok/s through rayon, 37.3-37.6 with the
//! helpers (3 interleaved runs each).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// A raw pointer shared by the tasks that write disjoint parts of what it points to.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub(crate) *mut T);
// SAFETY: each task writes only its own output columns (each caller says which).
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the `Send` wrapper, not its field).
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }
}

/// Runs `work(piece, scratch)` for every piece in `0..pieces` on up to `threads` threads, each
/// thread taking the next piece from a shared counter (with its own `scratch`): a thread that
/// got less of the memory bandwidth, or started late, takes fewer pieces. Decoding products
/// split this way instead of one contiguous half per thread, which left one thread waiting on
/// the other for 9% of each pass on average (measured on LLaMA-2-7B). The threads are the
/// calling thread and the [`HotPool`]'s helpers, or rayon's pool when another product holds the
/// helpers (products called from several threads at once).
pub(crate) fn share_pieces<S: Default + Send>(pieces: usize, threads: usize, work: impl Fn(usize, &mut S) + Sync) {
    let next = AtomicUsize::new(0);
    let take = |scratch: &mut S| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= pieces {
                break;
            }
            work(i, scratch);
        }
    };
    let threads = threads.min(pieces);
    if threads <= 1 {
        return take(&mut S::default());
    }
    let pool = HotPool::get();
    // A panic in an earlier product poisons the lock but leaves the pool consistent (`run`
    // waits for the helpers before it unwinds).
    if pool.helpers() + 1 >= threads {
        let turn = match pool.state.turn.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(_turn) = turn {
            // Every helper runs `take`; those beyond `threads` find the pieces gone.
            return pool.run(&|| take(&mut S::default()));
        }
    }
    (0..threads).into_par_iter().for_each_init(S::default, |scratch, _| take(scratch));
}

thread_local! {
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the kernels that would spread over threads kept on this one (the caller
/// already shares out the work at a coarser grain). Numbers do not change: the parallel and
/// serial paths compute each part the same.
pub(crate) fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&ONE_THREAD, f)
}

/// Runs `f` with this thread's `flag` set, restoring its earlier value afterwards (also when
/// `f` unwinds).
pub(crate) fn with_flag<R>(flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Reset(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _reset = Reset(flag, flag.with(|c| c.replace(true)));
    f()
}

/// Whether [`on_this_thread`] holds this thread's kernels to it.
pub(crate) fn on_one_thread() -> bool {
    ONE_THREAD.with(|c| c.get())
}

/// Output rows per piece of work for rows of `row_bytes` weight bytes: about 512 KiB of
/// weights (a multiple of 16 rows). Smaller pieces, interleaved between the threads, read memory
/// slower: a 207 MB Q4_K product on 2 threads measured 14 GB/s with 16-row (18 KiB) pieces,
/// 25 GB/s with 64 rows and 30 GB/s with 512 (one thread: 17-18 GB/s at any size).
pub(crate) fn rows_per_piece(row_bytes: usize) -> usize {
    ((512 << 10) / row_bytes.max(1)).next_multiple_of(16).max(16)
}

/// Rows per piece for `rows` rows of `row_bytes` bytes on `threads` threads: pieces of about
/// 512 KiB (as [`rows_per_piece`]), as many as a multiple of the threads, so that each thread
/// gets the same share when all run at the same speed (five pieces on two threads left one
/// waiting a fifth of the product).
pub(crate) fn balanced_rows_per_piece(rows: usize, row_bytes: usize, threads: usize) -> usize {
    let pieces = (rows * row_bytes).div_ceil(512 << 10).next_multiple_of(threads.max(1));
    rows.div_ceil(pieces).max(1)
}

/// How long a helper keeps polling for the next product before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// Helper threads (rayon's thread count less one, for the caller) that run one job at a time
/// beside the calling thread.
struct HotPool {
    state: &'static State,
    helpers: Vec<(Thread, &'static AtomicBool)>,
}

/// What the caller and the helpers share.
struct State {
    /// One caller at a time; others use rayon.
    turn: Mutex<()>,
    /// Bumped for every job; helpers wait for it to change.
    epoch: AtomicU64,
    /// The current job (a `&dyn Fn()` on the caller's stack), run by every helper once per epoch.
    job: AtomicPtr<()>,
    /// Helpers still running the current job, and whether one of them panicked.
    running: AtomicUsize,
    panicked: AtomicBool,
}

type Job<'a> = &'a (dyn Fn() + Sync);

impl HotPool {
    fn get() -> &'static HotPool {
        static POOL: OnceLock<HotPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let state: &'static State = Box::leak(Box::new(State {
                turn: Mutex::new(()),
                epoch: AtomicU64::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                running: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
            }));
            let mut helpers = Vec::new();
            for index in 0..rayon::current_num_threads().saturating_sub(1) {
                let asleep: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
                let spawned = std::thread::Builder::new()
                    .name(format!("biomedgpt-decode-{index}"))
                    .stack_size(8 << 20) // as the CLI gives rayon's workers, which run the same pieces
                    .spawn(move || helper(state, asleep));
                match spawned {
                    Ok(handle) => helpers.push((handle.thread().clone(), asleep)),
                    Err(_) => break, // fewer helpers: the caller and rayon do the rest
                }
            }
            HotPool { state, helpers }
        })
    }

    fn helpers(&self) -> usize {
        self.helpers.len()
    }

    /// Runs `job` on the calling thread and on every helper, returning when all are done (and
    /// panicking if a helper's part panicked). The caller holds `state.turn`. All helpers take
    /// part in every job, so none can be between jobs when the next epoch begins: each runs
    /// exactly once per epoch.
    fn run(&self, job: Job) {
        let state = self.state;
        // The helpers use `job` only between the epoch bump below and their decrement of
        // `running`, and this function returns only after `running` is 0.
        let raw: *const Job = &job;
        state.job.store(raw as *mut (), Ordering::Relaxed);
        state.running.store(self.helpers.len(), Ordering::Relaxed);
        state.epoch.fetch_add(1, Ordering::SeqCst);
        for (thread, asleep) in &self.helpers {
            if asleep.load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        // The helpers must be done with `job` before this frame unwinds.
        let ours = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        while state.running.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if let Err(panic) = ours {
            std::panic::resume_unwind(panic);
        }
        assert!(!state.panicked.swap(false, Ordering::Relaxed), "a decoding helper thread panicked");
    }
}

/// A helper's loop: wait for a new epoch (polling for [`SPIN`], then parked), run its job,
/// report done.
fn helper(state: &'static State, asleep: &'static AtomicBool) {
    // The epoch the pool started with (not a fresh load: the first job may be posted before
    // this thread runs).
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut polls = 0u32;
        let epoch = loop {
            let epoch = state.epoch.load(Ordering::Acquire);
            if epoch != seen {
                break epoch;
            }
            polls = polls.wrapping_add(1);
            if polls % 1024 == 0 && start.elapsed() > SPIN {
                asleep.store(true, Ordering::SeqCst);
                if state.epoch.load(Ordering::SeqCst) == seen {
                    std::thread::park();
                }
                asleep.store(false, Ordering::SeqCst);
            } else {
                std::hint::spin_loop();
            }
        };
        seen = epoch;
        // SAFETY: the caller stored a live `&Job` before bumping the epoch, and waits for this
        // helper's decrement of `running` before the job goes out of scope.
        let job: Job = unsafe { *(state.job.load(Ordering::Relaxed) as *const Job) };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            state.panicked.store(true, Ordering::Relaxed);
        }
        state.running.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece is taken exactly once, back to back (helpers polling), after pauses longer
    /// than [`SPIN`] (helpers parked and woken), and from several threads at once (one holds
    /// the helpers, the others go through rayon).
    #[test]
    fn every_piece_is_taken_once() {
        let check = |pieces: usize| {
            let taken: Vec<AtomicUsize> = (0..pieces).map(|_| AtomicUsize::new(0)).collect();
            share_pieces(pieces, 2, |i, _: &mut ()| {
                taken[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(taken.iter().all(|t| t.load(Ordering::Relaxed) == 1), "{pieces} pieces");
        };
        for round in 0..2000 {
            check(1 + round % 37);
            if round % 500 == 0 {
                std::thread::sleep(SPIN * 2);
            }
        }
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..300).for_each(|r| check(5 + r % 11)));
            }
        });
    }

    /// A panic in a piece reaches the caller (whichever thread ran it), and later products run.
    #[test]
    fn a_panicking_piece_panics_the_caller() {
        for bad in [0, 63] {
            let result = std::panic::catch_unwind(|| {
                share_pieces(64, 2, |i, _: &mut ()| {
                    assert!(i != bad, "piece {i}");
                })
            });
            assert!(result.is_err(), "piece {bad} panicked");
        }
        let sum = AtomicUsize::new(0);
        share_pieces(10, 2, |i, _: &mut ()| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
