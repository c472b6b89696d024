//! The camera threads: each takes its pictures on its interval and on command, and leaves only the latest in its
//! slot on the board, so that a picture waiting for the captioner is replaced by a newer one rather than queued.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::caption::captioner::timed;
use crate::daemon::publish::Command;
use crate::daemon::sources::{Frame, FrameSource};

/// Longest wait between attempts on a failing source.
const MAX_SOURCE_BACKOFF: Duration = Duration::from_secs(60);

/// Why a picture was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Interval,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Manual => "manual",
        }
    }
}

/// A picture waiting for the captioner.
pub(super) struct Job {
    pub frame: Frame,
    pub trigger: Trigger,
    pub capture_ms: f64,
}

/// The latest picture of each camera, by camera index.
struct Slots {
    jobs: Vec<Option<Job>>,
    /// Where the captioner looks first, so that a busy camera cannot starve the others.
    next: usize,
    stopping: bool,
}

pub(super) struct Board {
    slots: Mutex<Slots>,
    filled: Condvar,
}

impl Board {
    pub fn new(cameras: usize) -> Board {
        Board {
            slots: Mutex::new(Slots {
                jobs: (0..cameras).map(|_| None).collect(),
                next: 0,
                stopping: false,
            }),
            filled: Condvar::new(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Every change to the slots is a single assignment, so a panicking holder leaves them consistent.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leaves `job` in the camera's slot in place of the one waiting there. A newer picture replaces a waiting
    /// manual capture as well, but stays a manual capture: someone asked for a caption, and gets one.
    fn put(&self, camera: usize, job: Option<Job>) {
        let mut slots = self.slots();
        let slot = &mut slots.jobs[camera];
        let asked = slot
            .as_ref()
            .is_some_and(|waiting| waiting.trigger == Trigger::Manual);
        *slot = job.map(|mut job| {
            if asked {
                job.trigger = Trigger::Manual;
            }
            job
        });
        self.filled.notify_all();
    }

    /// The next picture to caption, or `None` once stopping.
    pub fn take(&self) -> Option<(usize, Job)> {
        let mut slots = self.slots();
        loop {
            if slots.stopping {
                return None;
            }
            let count = slots.jobs.len();
            let start = slots.next;
            for camera in (start..count).chain(0..start) {
                if let Some(job) = slots.jobs[camera].take() {
                    slots.next = (camera + 1) % count;
                    return Some((camera, job));
                }
            }
            slots = self
                .filled
                .wait(slots)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Ends `take` for good.
    pub fn stop(&self) {
        self.slots().stopping = true;
        self.filled.notify_all();
    }
}

/// One camera: takes pictures on its interval and on command, and leaves the latest for the captioner. Ends when
/// its command channel closes.
pub(super) fn capture_loop(
    name: &str,
    index: usize,
    mut source: Box<dyn FrameSource>,
    interval: Duration,
    commands: &Receiver<Command>,
    board: &Board,
) {
    let mut paused = false;
    let mut next_due = Instant::now();
    let mut failures: u32 = 0;
    loop {
        let trigger =
            match commands.recv_timeout(next_due.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => return,
                Ok(Command::Pause) => {
                    paused = true;
                    board.put(index, None);
                    log::info!(camera = name; "camera paused");
                    continue;
                }
                Ok(Command::Resume) => {
                    paused = false;
                    next_due = Instant::now();
                    log::info!(camera = name; "camera resumed");
                    continue;
                }
                Ok(Command::Capture) => Trigger::Manual,
                Err(RecvTimeoutError::Timeout) if paused => {
                    log::debug!(camera = name; "paused: no picture taken");
                    next_due = Instant::now() + interval;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => Trigger::Interval,
            };
        let start = Instant::now();
        let mut capture_ms = 0.0;
        let grabbed = timed(&mut capture_ms, || source.grab());
        match grabbed {
            Ok(frame) => {
                if failures > 0 {
                    log::info!(camera = name; "camera works again");
                }
                failures = 0;
                if trigger == Trigger::Interval {
                    next_due = start + interval;
                }
                match frame {
                    Some(frame) => board.put(
                        index,
                        Some(Job {
                            frame,
                            trigger,
                            capture_ms,
                        }),
                    ),
                    None if trigger == Trigger::Manual => {
                        log::info!(camera = name; "capture requested, but the folder has no new picture")
                    }
                    None => {}
                }
            }
            Err(error) => {
                failures += 1;
                let retry = Duration::from_secs(1 << failures.min(7).saturating_sub(1))
                    .min(MAX_SOURCE_BACKOFF);
                log::warn!(camera = name, attempt = failures, retry_in_s = retry.as_secs_f64();
                    "cannot take a picture: {error:#}");
                next_due = Instant::now() + retry;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captioner_takes_cameras_in_turn() {
        let board = Board::new(3);
        let job = || Job {
            frame: Frame {
                image: image::RgbImage::new(1, 1),
                origin: String::new(),
                taken_at: std::time::SystemTime::now(),
            },
            trigger: Trigger::Interval,
            capture_ms: 0.0,
        };
        board.put(0, Some(job()));
        board.put(2, Some(job()));
        assert_eq!(board.take().map(|(camera, _)| camera), Some(0));
        board.put(0, Some(job()));
        assert_eq!(
            board.take().map(|(camera, _)| camera),
            Some(2),
            "camera 0 went last time"
        );
        assert_eq!(board.take().map(|(camera, _)| camera), Some(0));
        let asked = Job {
            trigger: Trigger::Manual,
            ..job()
        };
        board.put(1, Some(asked));
        board.put(1, Some(job()));
        let (_, taken) = board.take().unwrap();
        assert_eq!(taken.trigger, Trigger::Manual, "a manual capture was lost");
        board.stop();
        assert!(board.take().is_none());
    }
}
