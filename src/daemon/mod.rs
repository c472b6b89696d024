//! The daemon: cameras in, captions out. Each camera has a thread that takes its pictures on schedule or on
//! command and leaves the latest in its slot; one captioning thread takes whichever slot is filled, so a slow
//! caption never holds up a camera or MQTT, and a picture waiting for the captioner is replaced by a newer
//! one rather than queued. The CLIP embedding is compared with the last published one before the decoder runs,
//! so an unchanged scene costs an encoder pass, not a caption.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::captioner::Captioner;
use crate::config::Config;
use crate::publish::{self, CameraCommand, CaptionRecord, Command, Latency, Publisher};
use crate::search::SearchConfig;
use crate::sources::{self, Frame, FrameSource};

/// Longest wait between attempts on a failing source.
const MAX_SOURCE_BACKOFF: Duration = Duration::from_secs(60);
/// How long the MQTT connection gets, at exit, to deliver what is queued and say `stopped`.
const STOP_GRACE: Duration = Duration::from_secs(5);
const MINUTE: Duration = Duration::from_secs(60);

/// What the daemon needs besides its configuration: the loaded model and how to search with it.
pub struct Model {
    pub captioner: Captioner,
    pub search: SearchConfig,
    /// The bundle's name, for the records and Home Assistant's device card.
    pub name: String,
}

/// Why a picture was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Interval,
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Interval => "interval",
            Trigger::Manual => "manual",
        }
    }
}

/// What the dispatcher tells a camera thread.
enum Control {
    Capture,
    Pause,
    Resume,
}

/// What reaches the dispatcher: MQTT commands and the signal to stop.
enum Signal {
    Command(CameraCommand),
    Stop,
}

/// A picture waiting for the captioner.
struct Job {
    frame: Frame,
    trigger: Trigger,
    capture_ms: f64,
}

/// The latest picture of each camera, by camera index.
struct Slots {
    jobs: Vec<Option<Job>>,
    /// Where the captioner looks first, so that a busy camera cannot starve the others.
    next: usize,
    stopping: bool,
}

struct Board {
    slots: Mutex<Slots>,
    filled: Condvar,
}

impl Board {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // Every change to the slots is a single assignment, so a panicking holder leaves them consistent.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn put(&self, camera: usize, job: Option<Job>) {
        self.slots().jobs[camera] = job;
        self.filled.notify_all();
    }

    /// The next picture to caption, or `None` once stopping.
    fn take(&self) -> Option<(usize, Job)> {
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
}

/// Per camera, what the captioning thread needs.
struct CameraPlan {
    name: String,
    skip_if_similarity_above: f64,
    rate: RateLimit,
    last_published: Option<Vec<f32>>,
}

/// At most `max` events in any sliding minute.
struct RateLimit {
    max: usize,
    recent: VecDeque<Instant>,
}

impl RateLimit {
    fn new(max: u32) -> RateLimit {
        RateLimit {
            max: max as usize,
            recent: VecDeque::new(),
        }
    }

    fn allows(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        self.recent.len() < self.max
    }

    fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
    }
}

/// Cosine similarity of two L2-normalised embeddings, in f64 so that identical pictures give exactly 1.
fn similarity(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    dot.clamp(-1.0, 1.0)
}

/// Runs until Ctrl-C or SIGTERM: then stops taking pictures, finishes the caption in flight, publishes
/// `stopped` and disconnects.
pub fn run(config: &Config, model: Model) -> Result<()> {
    let settings = publish::Settings::from_config(config, &model.name)?;
    let (signals, signal_rx) = mpsc::channel();
    let stop = signals.clone();
    ctrlc::set_handler(move || {
        // A second signal while stopping finds the receiver busy or gone; the first one is enough.
        let _ = stop.send(Signal::Stop);
    })
    .context("cannot install the Ctrl-C/SIGTERM handler")?;

    let (commands, command_rx) = mpsc::channel();
    let publisher = Publisher::start(settings, commands)?;
    let forward = signals.clone();
    thread::Builder::new()
        .name("commands".into())
        .spawn(move || {
            for command in command_rx {
                if forward.send(Signal::Command(command)).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the command thread")?;

    let board = Arc::new(Board {
        slots: Mutex::new(Slots {
            jobs: config.camera.iter().map(|_| None).collect(),
            next: 0,
            stopping: false,
        }),
        filled: Condvar::new(),
    });
    let mut controls: Vec<(String, Sender<Control>)> = Vec::new();
    let mut plans = Vec::new();
    for (index, camera) in config.camera.iter().enumerate() {
        let c = camera.get_ref();
        let name = c.name.get_ref().clone();
        let (control, control_rx) = mpsc::channel();
        let camera_config = c.clone();
        let interval = Duration::from_secs_f64(*c.interval_s.get_ref());
        let camera_board = Arc::clone(&board);
        let thread_name = name.clone();
        thread::Builder::new()
            .name(format!("camera-{name}"))
            .spawn(move || {
                let source = sources::open(&camera_config);
                capture_loop(
                    &thread_name,
                    index,
                    source,
                    interval,
                    &control_rx,
                    &camera_board,
                )
            })
            .with_context(|| format!("cannot start the thread of camera `{name}`"))?;
        controls.push((name.clone(), control));
        plans.push(CameraPlan {
            name,
            skip_if_similarity_above: *c.skip_if_similarity_above.get_ref(),
            rate: RateLimit::new(*c.max_captions_per_minute.get_ref()),
            last_published: None,
        });
        log::info!(camera = c.name.get_ref(), interval_s = interval.as_secs_f64(); "camera started");
    }

    let publisher = Arc::new(publisher);
    let worker_board = Arc::clone(&board);
    let worker_publisher = Arc::clone(&publisher);
    let worker = thread::Builder::new()
        .name("captioner".into())
        .spawn(move || caption_loop(&model, plans, &worker_board, &worker_publisher))
        .context("cannot start the captioning thread")?;

    for signal in signal_rx {
        let command = match signal {
            Signal::Stop => break,
            Signal::Command(command) => command,
        };
        let Some((_, control)) = controls.iter().find(|(name, _)| *name == command.camera) else {
            continue;
        };
        log::info!(camera = command.camera, command = format!("{:?}", command.command); "command received");
        let control_message = match command.command {
            Command::Capture => Control::Capture,
            Command::Pause => Control::Pause,
            Command::Resume => Control::Resume,
        };
        if control.send(control_message).is_err() {
            log::error!(camera = command.camera; "the camera thread has ended; command ignored");
            continue;
        }
        match command.command {
            Command::Pause => publisher.publish_state(&command.camera, false),
            Command::Resume => publisher.publish_state(&command.camera, true),
            Command::Capture => {}
        }
    }

    log::info!("stopping: finishing the caption in flight");
    // Dropping the control channels ends the camera threads at their next wake-up; one in the middle of a
    // slow fetch is not waited for.
    drop(controls);
    board.slots().stopping = true;
    board.filled.notify_all();
    if worker.join().is_err() {
        log::error!("the captioning thread panicked");
    }
    match Arc::try_unwrap(publisher) {
        Ok(publisher) => publisher.stop(STOP_GRACE),
        Err(_) => {
            log::error!("the MQTT publisher is still shared; exiting without a clean disconnect")
        }
    }
    log::info!("stopped");
    Ok(())
}

/// One camera: takes pictures on its interval and on command, and leaves the latest for the captioner.
fn capture_loop(
    name: &str,
    index: usize,
    mut source: Box<dyn FrameSource>,
    interval: Duration,
    controls: &Receiver<Control>,
    board: &Board,
) {
    let mut paused = false;
    let mut next_due = Instant::now();
    let mut failures: u32 = 0;
    loop {
        let trigger =
            match controls.recv_timeout(next_due.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => return,
                Ok(Control::Pause) => {
                    paused = true;
                    board.put(index, None);
                    log::info!(camera = name; "camera paused");
                    continue;
                }
                Ok(Control::Resume) => {
                    paused = false;
                    next_due = Instant::now();
                    log::info!(camera = name; "camera resumed");
                    continue;
                }
                Ok(Control::Capture) => Trigger::Manual,
                Err(RecvTimeoutError::Timeout) if paused => {
                    log::debug!(camera = name; "paused: no picture taken");
                    next_due = Instant::now() + interval;
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => Trigger::Interval,
            };
        let start = Instant::now();
        let grabbed = source.grab();
        let capture_ms = start.elapsed().as_secs_f64() * 1e3;
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
                let retry = Duration::from_secs(1 << failures.min(6).saturating_sub(1))
                    .min(MAX_SOURCE_BACKOFF);
                log::warn!(camera = name, attempt = failures, retry_in_s = retry.as_secs_f64();
                    "cannot take a picture: {error:#}");
                next_due = Instant::now() + retry;
            }
        }
    }
}

/// The captioning thread: encodes, compares with the last published picture, decodes and publishes.
fn caption_loop(model: &Model, mut plans: Vec<CameraPlan>, board: &Board, publisher: &Publisher) {
    while let Some((index, job)) = board.take() {
        let plan = &mut plans[index];
        match caption(model, plan, job) {
            Ok(Some(record)) => {
                log::info!(camera = record.camera, trigger = record.trigger, source = record.source,
                    caption = record.caption, score = format!("{:.3}", record.score),
                    similarity = record.similarity.map(|s| format!("{s:.4}")).unwrap_or_else(|| "none".into()),
                    total_ms = format!("{:.0}", record.latency_ms.total);
                    "caption published");
                publisher.publish_caption(&record);
            }
            Ok(None) => {}
            Err(error) => log::error!(camera = plan.name; "captioning failed: {error:#}"),
        }
    }
}

/// `None` when the picture is skipped: rate limit reached, or the scene has not changed.
fn caption(model: &Model, plan: &mut CameraPlan, job: Job) -> Result<Option<CaptionRecord>> {
    let now = Instant::now();
    if !plan.rate.allows(now) {
        log::info!(camera = plan.name, max_per_minute = plan.rate.max; "rate limit reached: picture skipped");
        return Ok(None);
    }
    let captioner = &model.captioner;
    let mut latency = Latency {
        capture: job.capture_ms,
        ..Latency::default()
    };
    let stage = |ms: &mut f64, start: Instant| *ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let pixels = captioner.preprocess(&job.frame.image);
    stage(&mut latency.preprocess, start);
    let start = Instant::now();
    let embedding = captioner.embed(pixels)?;
    stage(&mut latency.encode, start);

    let similar = plan
        .last_published
        .as_deref()
        .map(|last| similarity(last, &embedding));
    if let Some(value) = similar
        && job.trigger == Trigger::Interval
        && value > plan.skip_if_similarity_above
    {
        log::debug!(camera = plan.name, similarity = format!("{value:.4}"),
            threshold = plan.skip_if_similarity_above; "scene unchanged: decoder skipped");
        return Ok(None);
    }

    let start = Instant::now();
    let prefix = captioner.prefix(embedding.clone())?;
    stage(&mut latency.map, start);
    let start = Instant::now();
    let hypothesis = captioner.decode(&prefix, &model.search)?;
    stage(&mut latency.decode, start);
    latency.total =
        latency.capture + latency.preprocess + latency.encode + latency.map + latency.decode;

    plan.rate.record(now);
    plan.last_published = Some(embedding);
    Ok(Some(CaptionRecord {
        camera: plan.name.clone(),
        caption: captioner.text(&hypothesis.tokens),
        score: hypothesis.mean_log_prob(),
        model: model.name.clone(),
        precision: captioner.precision().to_string(),
        timestamp: humantime::format_rfc3339_millis(job.frame.taken_at).to_string(),
        trigger: job.trigger.as_str(),
        similarity: similar,
        source: job.frame.origin,
        latency_ms: latency,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_a_sliding_minute() {
        let start = Instant::now();
        let mut rate = RateLimit::new(2);
        for second in [0, 10] {
            let at = start + Duration::from_secs(second);
            assert!(rate.allows(at));
            rate.record(at);
        }
        assert!(!rate.allows(start + Duration::from_secs(59)));
        assert!(
            rate.allows(start + Duration::from_secs(60)),
            "the first event has left the window"
        );
    }

    #[test]
    fn similarity_of_normalised_embeddings() {
        let a = [0.6, 0.8, 0.0];
        assert_eq!(similarity(&a, &a), 1.0);
        assert_eq!(similarity(&a, &[0.0, 0.0, 1.0]), 0.0);
        assert!((similarity(&a, &[0.8, 0.6, 0.0]) - 0.96).abs() < 1e-6);
    }

    #[test]
    fn the_captioner_takes_cameras_in_turn() {
        let board = Board {
            slots: Mutex::new(Slots {
                jobs: (0..3).map(|_| None).collect(),
                next: 0,
                stopping: false,
            }),
            filled: Condvar::new(),
        };
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
        board.slots().stopping = true;
        assert!(board.take().is_none());
    }
}
