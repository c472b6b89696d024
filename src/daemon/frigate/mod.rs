//! Frigate's events captioned (`[frigate]`): the MQTT thread hands every message on Frigate's events topic to
//! `event::Filter`, which keeps, once per event, those of the configured cameras, labels, zones and phase; they
//! wait in a bounded queue (more are dropped and counted) for this module's thread, which fetches the event's
//! snapshot from Frigate's HTTP API, has it captioned in its turn on the board, publishes
//! `<base>/frigate/<camera>/caption` and, where configured, writes the caption back as the event's description.
//! Frigate down or slow costs a logged failure per event, never the daemon.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::sync::oneshot;

pub(crate) mod event;

use super::board::{Board, Prepared, Request};
use super::publish::{Listener, Publisher};
use super::stats::Stats;
use crate::caption::captioner::timed;
use crate::caption::preprocess::{self, Preprocessor};
use crate::daemon::config::FrigateSettings;
use event::{Event, Filter, Verdict};

/// Frigate's events carry the tracked object's path and attributes: a few kilobytes, far from this.
const EVENT_LIMIT: usize = 256 * 1024;
/// A snapshot larger than this is refused.
const SNAPSHOT_LIMIT: u64 = 32_000_000;
/// Attempts to fetch a snapshot, a second apart: at an event's start Frigate may not have one yet.
const ATTEMPTS: u32 = 3;

/// What Frigate's events need from the rest of the daemon.
pub(super) struct Frigate {
    settings: FrigateSettings,
    events: Receiver<Event>,
}

/// Starts listening: the listener goes to the MQTT thread, `Frigate::run` on a thread of its own once the
/// publisher exists.
pub(super) fn listen(settings: &FrigateSettings, stats: Arc<Stats>) -> (Listener, Frigate) {
    let (queue, events): (SyncSender<Event>, Receiver<Event>) =
        mpsc::sync_channel(settings.queue_limit);
    let mut filter = Filter::new(settings);
    let limit = settings.queue_limit;
    let deliver = move |payload: &[u8]| match filter.consider(payload) {
        Verdict::Caption(event) => {
            let id = event.id.clone();
            match queue.try_send(event) {
                Ok(()) => stats.frigate_queued(),
                Err(TrySendError::Full(_)) => {
                    stats.frigate_dropped();
                    log::warn!(event = id, queue_limit = limit;
                        "Frigate event dropped: frigate.queue_limit events are waiting for their caption");
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        Verdict::Pass => {}
        Verdict::Invalid(why) => log::warn!("ignoring a message on Frigate's events topic: {why}"),
    };
    let listener = Listener {
        topic: settings.events_topic.clone(),
        max_bytes: EVENT_LIMIT,
        deliver: Box::new(deliver),
    };
    let frigate = Frigate {
        settings: settings.clone(),
        events,
    };
    (listener, frigate)
}

impl Frigate {
    /// Captions the queued events until the board stops or the MQTT thread ends. Holds the publisher weakly, so
    /// that the daemon's stop never waits for a slow Frigate.
    pub fn start(
        self,
        board: Arc<Board>,
        preprocessor: Preprocessor,
        publisher: Weak<Publisher>,
        stats: Arc<Stats>,
    ) -> Result<()> {
        let client = Client::new(&self.settings);
        thread::Builder::new()
            .name("frigate".into())
            .spawn(move || {
                while let Ok(event) = self.events.recv() {
                    let start = Instant::now();
                    match caption(&client, &board, &preprocessor, &event) {
                        Ok(Some((record, caption))) => {
                            stats.frigate_captioned(start.elapsed().as_secs_f64() * 1e3);
                            // Held only to hand the record over: the daemon's stop must not wait for the
                            // description's request below.
                            let Some(publisher) = publisher.upgrade() else { return };
                            publisher.publish_record(
                                publisher.topics().frigate_caption(&event.camera),
                                record.to_string().into_bytes(),
                            );
                            drop(publisher);
                            log::info!(event = event.id, camera = event.camera, label = event.label, caption;
                                "Frigate event captioned");
                            if self.settings.write_description
                                && let Err(error) = client.describe(&event.id, &caption)
                            {
                                log::warn!(event = event.id; "cannot write the description to Frigate: {error:#}");
                            }
                        }
                        Ok(None) => return,
                        Err(error) => {
                            stats.frigate_failed();
                            log::warn!(event = event.id, camera = event.camera;
                                "cannot caption the Frigate event: {error:#}");
                        }
                    }
                }
            })
            .context("cannot start the Frigate thread")?;
        Ok(())
    }
}

/// The event's record and caption; `None` once the daemon stops.
fn caption(
    client: &Client,
    board: &Board,
    preprocessor: &Preprocessor,
    event: &Event,
) -> Result<Option<(serde_json::Value, String)>> {
    let mut fetch_ms = 0.0;
    let url = client.snapshot_url(&event.id);
    let bytes = timed(&mut fetch_ms, || client.snapshot(&url))?;
    let image = preprocess::decode_rgb(&bytes, &url, None)?;
    let mut preprocess_ms = 0.0;
    let pixels = timed(&mut preprocess_ms, || preprocessor.tensor(&image));
    drop(image);
    let (reply, answer) = oneshot::channel();
    let request = Request {
        pictures: vec![Prepared {
            pixels,
            preprocess_ms,
        }],
        reply,
        place: None,
    };
    if board.submit(request).is_err() {
        return Ok(None);
    }
    let Ok(captions) = answer.blocking_recv() else {
        return Ok(None);
    };
    let Some(mut caption) = captions?.pop() else {
        bail!("the captioner gave no caption");
    };
    caption.timings.capture = fetch_ms;
    let record = serde_json::json!({
        "event_id": event.id,
        "camera": event.camera,
        "label": event.label,
        "sub_label": event.sub_label,
        "score": event.score,
        "zones": event.zones,
        "type": event.kind,
        "caption": caption.text,
        "caption_score": caption.mean_log_prob,
        "snapshot": url,
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "latency_ms": caption.timings,
    });
    Ok(Some((record, caption.text)))
}

/// Frigate's HTTP API: an event's snapshot, its description.
struct Client {
    url: String,
    crop: bool,
    height: Option<u32>,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Client {
    fn new(settings: &FrigateSettings) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            .build()
            .into();
        Client {
            url: settings.url.clone(),
            crop: settings.crop,
            height: settings.snapshot_height,
            timeout: settings.timeout,
            agent,
        }
    }

    fn snapshot_url(&self, id: &str) -> String {
        let mut url = format!(
            "{}/api/events/{id}/snapshot.jpg?bbox=0&timestamp=0&crop={}",
            self.url,
            u8::from(self.crop)
        );
        if let Some(height) = self.height {
            url.push_str(&format!("&height={height}"));
        }
        url
    }

    /// The snapshot's bytes, after up to `ATTEMPTS` tries: Frigate may be restarting, or not have the
    /// snapshot yet at an event's start.
    fn snapshot(&self, url: &str) -> Result<Vec<u8>> {
        let mut attempt = 1;
        loop {
            match self.fetch(url) {
                Ok(bytes) => return Ok(bytes),
                Err(error) if attempt >= ATTEMPTS => {
                    return Err(error.context(format!("{attempt} attempts")));
                }
                Err(error) => {
                    log::debug!(attempt; "Frigate snapshot not fetched, trying again: {error:#}");
                    attempt += 1;
                    thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        let mut response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| self.failed(url, e))?;
        let status = response.status();
        if status == 404 {
            bail!("{url}: HTTP 404: Frigate has no snapshot of this event (yet)");
        }
        if !status.is_success() {
            bail!("{url}: HTTP {status}, expected 200 with the event's snapshot");
        }
        response
            .body_mut()
            .with_config()
            .limit(SNAPSHOT_LIMIT)
            .read_to_vec()
            .map_err(|e| self.failed(url, e))
    }

    /// Writes `caption` as the event's description (Frigate's `POST /api/events/<id>/description`).
    fn describe(&self, id: &str, caption: &str) -> Result<()> {
        let url = format!("{}/api/events/{id}/description", self.url);
        let body = serde_json::json!({"description": caption}).to_string();
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| self.failed(&url, e))?;
        let status = response.status();
        if !status.is_success() {
            bail!("{url}: HTTP {status}");
        }
        Ok(())
    }

    fn failed(&self, url: &str, error: ureq::Error) -> anyhow::Error {
        match error {
            ureq::Error::Timeout(_) => {
                anyhow::anyhow!(
                    "{url}: no answer within {} s (frigate.timeout_s)",
                    self.timeout.as_secs_f64()
                )
            }
            ureq::Error::BodyExceedsLimit(limit) => {
                anyhow::anyhow!("{url}: the snapshot is larger than {limit} bytes")
            }
            other => anyhow::anyhow!("{url}: {other}"),
        }
    }
}
