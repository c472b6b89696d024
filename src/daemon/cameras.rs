//! The camera threads: each takes its pictures on its interval and on command, and leaves only the latest in its
//! slot on the board (`board`), so that a picture waiting for the captioner is replaced by a newer one rather
//! than queued.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::board::{Board, Job, Trigger};
use super::stats::Stats;
use crate::caption::captioner::timed;
use crate::daemon::publish::Command;
use crate::daemon::sources::FrameSource;

/// Longest wait between attempts on a failing source.
const MAX_SOURCE_BACKOFF: Duration = Duration::from_secs(60);

/// Where a camera leaves its pictures and counts its failures.
pub(super) struct Place<'a> {
    /// The camera's index in the configuration: its slot on the board and its line in the stats.
    pub index: usize,
    pub board: &'a Board,
    pub stats: &'a Stats,
}

/// One camera: takes pictures on its interval and on command, and leaves the latest for the captioner. Ends when
/// its command channel closes.
pub(super) fn capture_loop(
    name: &str,
    mut source: Box<dyn FrameSource>,
    interval: Duration,
    commands: &Receiver<Command>,
    place: &Place,
) {
    let (index, board) = (place.index, place.board);
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
                place.stats.capture_failed(index);
                let retry = Duration::from_secs(1 << failures.min(7).saturating_sub(1))
                    .min(MAX_SOURCE_BACKOFF);
                log::warn!(camera = name, attempt = failures, retry_in_s = retry.as_secs_f64();
                    "cannot take a picture: {error:#}");
                next_due = Instant::now() + retry;
            }
        }
    }
}
