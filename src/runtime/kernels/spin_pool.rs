//! Helper threads that split one computation with the calling thread and spin between computations instead of
//! sleeping. A graph run is a chain of short matrix products (tens of microseconds each in a decoder step); waking
//! a sleeping thread for each took 70 to 80 us on the benchmark machine (tract's rayon pool, BENCHMARKS.md, "What
//! changed"), more than most products take. A helper here spins for [`SPIN`] after its last share, so through
//! a graph run the handoff costs an atomic store, then parks, so that an idle daemon burns no CPU.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tract_onnx::tract_core::tract_linalg::multithread::{Executor, current_tract_executor};

/// How long a helper spins for the next share before it parks: longer than the gaps between a graph's products
/// (a beam search's step between two decoder runs included), short enough to be nothing once captioning stops.
const SPIN: Duration = Duration::from_millis(2);

/// A share of work: `run(first, last)` over a range of the caller's items.
type Share = (*const (dyn Fn(usize, usize) + Sync), usize, usize);

const IDLE: u8 = 0;
const POSTED: u8 = 1;
const DONE: u8 = 2;

/// One helper thread's mailbox.
struct Helper {
    state: AtomicU8,
    parked: AtomicBool,
    panicked: AtomicBool,
    /// Set when its pool is replaced by one for another thread count: the thread then ends.
    retired: AtomicBool,
    share: UnsafeCell<Option<Share>>,
    thread: Mutex<Option<Thread>>,
}

// SAFETY: `share` is written only by the poster while `state` is IDLE or DONE, and read only by the helper after it
// saw POSTED; the atomics order the two.
unsafe impl Sync for Helper {}
unsafe impl Send for Helper {}

impl Helper {
    fn work(&self) {
        let mut since = Instant::now();
        loop {
            let mut polls = 0u32;
            while self.state.load(Ordering::SeqCst) != POSTED {
                polls = polls.wrapping_add(1);
                if polls.is_multiple_of(64) && since.elapsed() > SPIN {
                    self.parked.store(true, Ordering::SeqCst);
                    if self.state.load(Ordering::SeqCst) != POSTED {
                        std::thread::park();
                    }
                    self.parked.store(false, Ordering::SeqCst);
                    if self.retired.load(Ordering::SeqCst) {
                        return;
                    }
                } else {
                    std::hint::spin_loop();
                }
            }
            // SAFETY: POSTED was stored after the share was written, and nothing writes it until DONE.
            if let Some((run, first, last)) = unsafe { (*self.share.get()).take() } {
                // SAFETY: the poster keeps the closure alive until it has seen DONE (`split`).
                let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*run)(first, last) }));
                self.panicked.store(outcome.is_err(), Ordering::SeqCst);
            }
            self.state.store(DONE, Ordering::SeqCst);
            since = Instant::now();
        }
    }
}

/// Helpers for one thread count.
struct SpinPool {
    helpers: Vec<Arc<Helper>>,
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        for helper in &self.helpers {
            helper.retired.store(true, Ordering::SeqCst);
            if let Some(thread) = &*helper.thread.lock().unwrap_or_else(|e| e.into_inner()) {
                thread.unpark();
            }
        }
    }
}

impl SpinPool {
    fn new(helpers: usize) -> std::io::Result<SpinPool> {
        let mut pool = SpinPool {
            helpers: Vec::new(),
        };
        for index in 0..helpers {
            let helper = Arc::new(Helper {
                state: AtomicU8::new(IDLE),
                parked: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                share: UnsafeCell::new(None),
                thread: Mutex::new(None),
            });
            let worker = Arc::clone(&helper);
            let handle = std::thread::Builder::new()
                .name(format!("capdec-spin-{index}"))
                .spawn(move || worker.work())?;
            *helper.thread.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(handle.thread().clone());
            pool.helpers.push(helper);
        }
        Ok(pool)
    }
}

/// The helpers, made on first use for the thread count asked (and remade when another is asked); one caller at a
/// time uses them, others wait.
static POOL: Mutex<Option<SpinPool>> = Mutex::new(None);

/// Computations of fewer multiply-adds stay on one thread: a few tens of microseconds of work, where handing a share
/// over and waiting for it would be a sizeable part.
pub const PARALLEL_MIN_MACS: usize = 1 << 20;

/// The threads a computation of `macs` multiply-adds is split over: tract's executor's (set by
/// `runtime::use_threads`), or one for a small one.
pub fn threads_for(macs: usize) -> usize {
    match current_tract_executor() {
        Executor::MultiThread(pool) if macs >= PARALLEL_MIN_MACS => pool.current_num_threads(),
        _ => 1,
    }
}

/// Runs `run` over `0..items` split in `threads` contiguous shares, the first on this thread and the others on
/// helpers, and returns once all are done. Runs everything here when `threads` is 1 or the helpers cannot be
/// started. `run` must not call `split` itself.
pub fn split(threads: usize, items: usize, run: &(dyn Fn(usize, usize) + Sync)) {
    let threads = threads.min(items).max(1);
    if threads == 1 {
        return run(0, items);
    }
    let share = |index: usize| (items * index / threads, items * (index + 1) / threads);
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if guard
        .as_ref()
        .is_none_or(|pool| pool.helpers.len() != threads - 1)
    {
        *guard = SpinPool::new(threads - 1).ok();
    }
    let Some(pool) = guard.as_ref() else {
        return run(0, items);
    };
    // SAFETY: only the lifetime is erased; this function does not return before every helper has stored DONE,
    // after its last use of `run`.
    let erased: &'static (dyn Fn(usize, usize) + Sync) = unsafe { std::mem::transmute(run) };
    for (index, helper) in pool.helpers.iter().enumerate() {
        let (first, last) = share(index + 1);
        // SAFETY: the helper is IDLE, so it does not read `share` until the POSTED below.
        unsafe { *helper.share.get() = Some((erased as *const _, first, last)) };
        helper.state.store(POSTED, Ordering::SeqCst);
        if helper.parked.load(Ordering::SeqCst)
            && let Some(thread) = &*helper.thread.lock().unwrap_or_else(|e| e.into_inner())
        {
            thread.unpark();
        }
    }
    let (first, last) = share(0);
    let own = catch_unwind(AssertUnwindSafe(|| run(first, last)));
    let mut panicked = false;
    for helper in &pool.helpers {
        while helper.state.load(Ordering::SeqCst) != DONE {
            std::hint::spin_loop();
        }
        panicked |= helper.panicked.load(Ordering::SeqCst);
        helper.state.store(IDLE, Ordering::SeqCst);
    }
    drop(guard);
    if let Err(panic) = own {
        std::panic::resume_unwind(panic);
    }
    assert!(!panicked, "a share of a split computation panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_item_is_run_once_whatever_the_thread_count() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for threads in [1, 2, 3, 2, 1] {
            for items in [0, 1, 2, 7, 1000] {
                let seen: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
                split(threads, items, &|first, last| {
                    for item in &seen[first..last] {
                        item.fetch_add(1, Ordering::SeqCst);
                    }
                });
                assert!(
                    seen.iter().all(|n| n.load(Ordering::SeqCst) == 1),
                    "threads={threads} items={items}"
                );
            }
        }
    }

    /// The pool is one per process: tests that replace it or watch it take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn helpers_parked() -> Vec<bool> {
        POOL.lock()
            .unwrap()
            .as_ref()
            .map(|pool| {
                pool.helpers
                    .iter()
                    .map(|h| h.parked.load(Ordering::SeqCst))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn idle_helpers_park_and_still_take_their_share() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let ran_on = Mutex::new(Vec::new());
        let record = |first: usize, _: usize| {
            ran_on
                .lock()
                .unwrap()
                .push((first, std::thread::current().id()));
        };
        split(2, 2, &record);
        // An idle daemon must not keep a core spinning: the helper parks once it has waited `SPIN`.
        let deadline = Instant::now() + Duration::from_secs(2);
        while helpers_parked() != [true] {
            assert!(
                Instant::now() < deadline,
                "the helper never parked: {:?}",
                helpers_parked()
            );
            std::thread::sleep(SPIN);
        }
        ran_on.lock().unwrap().clear();
        split(2, 2, &record);
        let mut ran = ran_on.lock().unwrap().clone();
        ran.sort_by_key(|(first, _)| *first);
        let caller = std::thread::current().id();
        assert_eq!(ran.len(), 2);
        assert_eq!(ran[0], (0, caller), "the caller runs the first share");
        assert!(
            ran[1].0 == 1 && ran[1].1 != caller,
            "the parked helper was woken for the second share: {ran:?}"
        );
    }
}
