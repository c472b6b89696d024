//! What waits for the one captioner: each camera's latest picture in its slot (a newer one replaces it, so a
//! picture is never stale) and the HTTP API's requests in order. The captioner takes them in turn, the requests
//! as one more slot after the cameras, so that neither busy cameras nor a stream of requests starve the other.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::caption::captioner::Caption;
use crate::daemon::sources::Frame;

/// Why a camera's picture was taken.
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

/// A camera's picture waiting for the captioner.
pub(super) struct Job {
    pub frame: Frame,
    pub trigger: Trigger,
    pub capture_ms: f64,
}

/// Pictures sent to the HTTP API or fetched for a Frigate event, captioned together and answered on `reply`.
/// They come preprocessed (the encoder's input, a fraction of a decoded picture's memory), so that what waits
/// here is small whatever was sent.
pub(crate) struct Request {
    pub pictures: Vec<Prepared>,
    /// One caption per picture, in their order; dropped unanswered when the daemon stops.
    pub reply: oneshot::Sender<anyhow::Result<Vec<Caption>>>,
    /// The API's place, held until the captioner is done with the request: a client that gave up does not
    /// free it while its pictures still wait here.
    pub place: Option<OwnedSemaphorePermit>,
}

/// A picture as the encoder takes it, and the time its preprocessing took.
pub(crate) struct Prepared {
    pub pixels: Vec<f32>,
    pub preprocess_ms: f64,
}

/// What the captioner is given next.
pub(super) enum Work {
    /// A camera's picture, by camera index.
    Camera(usize, Job),
    Request(Request),
}

struct Queue {
    jobs: Vec<Option<Job>>,
    requests: VecDeque<Request>,
    /// Where the captioner looks first: a camera index, or `jobs.len()` for the requests.
    next: usize,
    stopping: bool,
}

pub(super) struct Board {
    queue: Mutex<Queue>,
    filled: Condvar,
}

impl Board {
    pub fn new(cameras: usize) -> Board {
        Board {
            queue: Mutex::new(Queue {
                jobs: (0..cameras).map(|_| None).collect(),
                requests: VecDeque::new(),
                next: 0,
                stopping: false,
            }),
            filled: Condvar::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every change to the queue is a single assignment or push, so a panicking holder leaves it consistent.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leaves `job` in the camera's slot in place of the one waiting there. A newer picture replaces a waiting
    /// manual capture as well, but stays a manual capture: someone asked for a caption, and gets one.
    pub fn put(&self, camera: usize, job: Option<Job>) {
        let mut queue = self.queue();
        let slot = &mut queue.jobs[camera];
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

    /// Queues a request behind the others (the API bounds how many it lets in); gives it back once stopping.
    pub fn submit(&self, request: Request) -> Result<(), Request> {
        let mut queue = self.queue();
        if queue.stopping {
            return Err(request);
        }
        queue.requests.push_back(request);
        self.filled.notify_all();
        Ok(())
    }

    /// Requests waiting for the captioner, not counting the one it may be captioning.
    pub fn waiting_requests(&self) -> usize {
        self.queue().requests.len()
    }

    /// The next work for the captioner, or `None` once stopping.
    pub fn take(&self) -> Option<Work> {
        let mut queue = self.queue();
        loop {
            if queue.stopping {
                return None;
            }
            let positions = queue.jobs.len() + 1;
            let start = queue.next;
            for position in (start..positions).chain(0..start) {
                let work = match queue.jobs.get_mut(position) {
                    Some(slot) => slot.take().map(|job| Work::Camera(position, job)),
                    None => queue.requests.pop_front().map(Work::Request),
                };
                if let Some(work) = work {
                    queue.next = (position + 1) % positions;
                    return Some(work);
                }
            }
            queue = self
                .filled
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Ends `take` for good; the requests still waiting are dropped, which answers their clients.
    pub fn stop(&self) {
        let mut queue = self.queue();
        queue.stopping = true;
        queue.requests.clear();
        self.filled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(trigger: Trigger) -> Job {
        Job {
            frame: Frame {
                image: image::RgbImage::new(1, 1),
                origin: String::new(),
                taken_at: std::time::SystemTime::now(),
            },
            trigger,
            capture_ms: 0.0,
        }
    }

    fn request() -> (Request, oneshot::Receiver<anyhow::Result<Vec<Caption>>>) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            pictures: Vec::new(),
            reply,
            place: None,
        };
        (request, answer)
    }

    /// What `take` gave: a camera index, or `None` for a request.
    fn taken(board: &Board) -> Option<usize> {
        match board.take().expect("work is waiting") {
            Work::Camera(index, _) => Some(index),
            Work::Request(_) => None,
        }
    }

    #[test]
    fn the_captioner_takes_cameras_in_turn() {
        let board = Board::new(3);
        board.put(0, Some(job(Trigger::Interval)));
        board.put(2, Some(job(Trigger::Interval)));
        assert_eq!(taken(&board), Some(0));
        board.put(0, Some(job(Trigger::Interval)));
        assert_eq!(taken(&board), Some(2), "camera 0 went last time");
        assert_eq!(taken(&board), Some(0));
        board.put(1, Some(job(Trigger::Manual)));
        board.put(1, Some(job(Trigger::Interval)));
        let Some(Work::Camera(1, kept)) = board.take() else {
            panic!("camera 1's picture was lost")
        };
        assert_eq!(kept.trigger, Trigger::Manual, "a manual capture was lost");
        board.stop();
        assert!(board.take().is_none());
    }

    #[test]
    fn requests_and_cameras_take_turns() {
        let board = Board::new(2);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (request, answer) = request();
            assert!(board.submit(request).is_ok());
            answers.push(answer);
        }
        board.put(0, Some(job(Trigger::Interval)));
        board.put(1, Some(job(Trigger::Interval)));
        assert_eq!(board.waiting_requests(), 3);
        assert_eq!(taken(&board), Some(0));
        assert_eq!(taken(&board), Some(1));
        assert_eq!(taken(&board), None, "the requests' turn");
        board.put(0, Some(job(Trigger::Interval)));
        assert_eq!(taken(&board), Some(0), "a camera between two requests");
        assert_eq!(taken(&board), None);
        assert_eq!(taken(&board), None, "nothing else waits");
        assert_eq!(board.waiting_requests(), 0);
    }

    #[test]
    fn stopping_answers_the_waiting_requests() {
        let board = Board::new(0);
        let (request, mut answer) = request();
        assert!(board.submit(request).is_ok());
        board.stop();
        assert!(
            matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "the client hears that no caption will come"
        );
        let (late, _) = self::request();
        assert!(board.submit(late).is_err(), "a stopped board takes nothing");
        assert!(board.take().is_none());
    }
}
