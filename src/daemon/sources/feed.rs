//! A camera stream read on a thread of its own that keeps only the newest of what arrives. A stream must be
//! read as fast as it comes, or it backs up into stale pictures in the socket's buffers, while a caption wants a
//! picture once an interval: the reader keeps the newest, and a grab takes a copy of it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    /// Set when the feed is dropped: the reader stops at its next read, which its timeouts bound.
    stop: AtomicBool,
}

struct State<T> {
    newest: Option<T>,
    /// Counts updates of `newest`, so that a grab can tell a new picture from the one it took before.
    generation: u64,
    /// Why the reader stopped; it does not restart by itself.
    ended: Option<anyhow::Error>,
}

/// The reader's side.
pub(super) struct Sink<T>(Arc<Shared<T>>);

impl<T> Sink<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.0.state)
    }

    /// Changes the newest picture in place (a video stream appends to its group of pictures); `change` says
    /// whether it changed anything.
    pub fn update(&self, change: impl FnOnce(&mut Option<T>) -> bool) {
        let mut state = self.state();
        if change(&mut state.newest) {
            state.generation += 1;
            self.0.changed.notify_all();
        }
    }

    pub fn stopped(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }
}

/// The camera thread's side: the reader thread and what it keeps.
pub(super) struct Feed<T> {
    shared: Arc<Shared<T>>,
    /// The generation taken last.
    taken: u64,
}

impl<T: Clone + Send + 'static> Feed<T> {
    /// Starts `read`, which runs until the stream fails or `Sink::stopped` says to stop.
    pub fn start(
        thread_name: String,
        read: impl FnOnce(&Sink<T>) -> Result<()> + Send + 'static,
    ) -> Result<Feed<T>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                newest: None,
                generation: 0,
                ended: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let sink = Sink(Arc::clone(&shared));
        thread::Builder::new().name(thread_name).spawn(move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| read(&sink)));
            let mut state = sink.state();
            state.ended = Some(match outcome {
                Ok(Ok(())) => anyhow!("the stream ended"),
                Ok(Err(e)) => e,
                Err(panicked) => {
                    let why = panicked
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panicked.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    anyhow!("the stream's reader failed unexpectedly: {why}")
                }
            });
            sink.0.changed.notify_all();
        })?;
        Ok(Feed { shared, taken: 0 })
    }

    /// A copy of the newest picture, waiting up to `timeout` for one: for one that arrived since the last call
    /// if `fresh`, else only for the first. An error says why the reader stopped (the feed is then done and
    /// must be replaced), or that nothing came in time.
    pub fn newest(&mut self, timeout: Duration, fresh: bool) -> Result<T, Ended> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        loop {
            let unseen = state.generation > self.taken;
            if let Some(newest) = &state.newest
                && (unseen || (!fresh && state.ended.is_none()))
            {
                self.taken = state.generation;
                return Ok(newest.clone());
            }
            if let Some(error) = state.ended.take() {
                return Err(Ended::Failed(error));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Ended::Stalled);
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The newest picture of the feed in `slot` (as `Feed::newest` says), which is started when empty and emptied when
/// it fails or stalls, so that the next grab (after the camera loop's backoff) starts it again. `stalled` says
/// what did not come in time.
pub(super) fn newest_of<T: Clone + Send + 'static>(
    slot: &mut Option<Feed<T>>,
    timeout: Duration,
    fresh: bool,
    start: impl FnOnce() -> Result<Feed<T>>,
    stalled: impl FnOnce() -> String,
) -> Result<T> {
    let feed = match slot {
        Some(feed) => feed,
        None => slot.insert(start()?),
    };
    let outcome = feed.newest(timeout, fresh);
    if outcome.is_err() {
        *slot = None;
    }
    outcome.map_err(|ended| match ended {
        Ended::Failed(error) => error,
        Ended::Stalled => anyhow!("{}", stalled()),
    })
}

/// Why `Feed::newest` has no picture.
#[derive(Debug)]
pub(super) enum Ended {
    /// The reader stopped with this error.
    Failed(anyhow::Error),
    /// The reader runs, but nothing new arrived in time.
    Stalled,
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under the lock is a single assignment or a push, so a panicking holder leaves it usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grab_takes_each_picture_once_and_sees_the_reader_fail() {
        let (go, gone) = std::sync::mpsc::channel::<u32>();
        let mut feed = Feed::start("test-feed".into(), move |sink: &Sink<u32>| {
            while let Ok(value) = gone.recv() {
                if value == 0 {
                    anyhow::bail!("the camera hung up");
                }
                sink.update(|newest| {
                    *newest = Some(value);
                    true
                });
            }
            Ok(())
        })
        .unwrap();
        let short = Duration::from_millis(50);
        assert!(matches!(feed.newest(short, false), Err(Ended::Stalled)));
        go.send(1).unwrap();
        go.send(2).unwrap();
        let patient = Duration::from_secs(10);
        let first = feed.newest(patient, true).unwrap();
        assert!(first == 1 || first == 2, "{first}");
        if first == 1 {
            assert_eq!(feed.newest(patient, true).unwrap(), 2);
        }
        assert!(
            matches!(feed.newest(short, true), Err(Ended::Stalled)),
            "taken already"
        );
        assert_eq!(
            feed.newest(short, false).unwrap(),
            2,
            "not fresh: the same again"
        );
        go.send(3).unwrap();
        go.send(0).unwrap();
        // The picture that came before the failure is taken first, then the failure reported.
        let last = feed.newest(patient, true).unwrap();
        assert_eq!(last, 3);
        match feed.newest(patient, true) {
            Err(Ended::Failed(e)) => assert_eq!(e.to_string(), "the camera hung up"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reader_that_panics_is_a_failure_that_says_so() {
        let mut feed = Feed::start("test-panic".into(), |_: &Sink<u32>| -> Result<()> {
            panic!("bad frame")
        })
        .unwrap();
        match feed.newest(Duration::from_secs(10), true) {
            Err(Ended::Failed(e)) => assert_eq!(
                e.to_string(),
                "the stream's reader failed unexpectedly: bad frame"
            ),
            other => panic!("{other:?}"),
        }
    }
}
