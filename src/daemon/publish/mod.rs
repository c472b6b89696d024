//! MQTT: captions out, commands in, availability and Home Assistant discovery.
//!
//! One thread owns the connection (`link`) and is the only one that talks to the client, so it knows exactly
//! which captions the broker has acknowledged (`inflight`). While the broker is unreachable captions wait in a
//! bounded queue (`outbox`: the oldest dropped and counted), and those lost in flight with a connection are
//! queued again. Commands go from the connection thread straight to the camera they address.
//!
//! Topics (`topics`), under the configured base: `<base>/available` (`online`; `offline` as the last will;
//! `stopped` on a clean exit), `<base>/info` (retained: version, model, cameras, API address), `<base>/stats`
//! (every `stats_interval_s`, from `daemon::stats`), `<base>/<camera>/caption` (JSON, `record`),
//! `<base>/<camera>/text` (the caption cut to Home Assistant's 255 characters, retained),
//! `<base>/<camera>/event` (Home Assistant's event entity), `<base>/<camera>/picture` (the captioned picture, a
//! small JPEG, retained), `<base>/frigate/<camera>/caption` (Frigate's events), `<base>/<camera>/set`
//! (`capture`, `ON`, `OFF`) and `<base>/<camera>/state` (`ON`, `OFF`); Home Assistant's discovery messages
//! (`discovery`) under its prefix.

use std::sync::mpsc::Sender;
use std::sync::{Arc, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::QoS;

mod backoff;
mod discovery;
pub(crate) mod inbound;
mod inflight;
mod link;
mod outbox;
mod record;
pub(crate) mod topics;

pub use record::CaptionRecord;
pub use topics::{Topics, state_text};

use crate::daemon::config::Settings;
use discovery::Discovery;
use link::Link;
use outbox::{Message, Outbox, Shared};

const ONLINE: &str = "online";
const OFFLINE: &str = "offline";
const STOPPED: &str = "stopped";

/// What a `<base>/<camera>/set` message asks of its camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Capture,
    Pause,
    Resume,
}

/// Another topic the daemon subscribes to, and what takes its messages (Frigate's events); retained messages
/// are ignored (they are old news), and those over `max_bytes` dropped with a warning.
pub struct Listener {
    pub topic: String,
    pub max_bytes: usize,
    pub deliver: Deliver,
}

/// What takes a listener's messages.
pub type Deliver = Box<dyn FnMut(&[u8]) + Send>;

/// What the connection thread publishes and hears beside captions and commands.
struct Extras {
    /// `<base>/info`'s payload, retained on every new session.
    info: serde_json::Value,
    stats: StatsReport,
    /// The largest payload the daemon sends (a picture), for the client's packet limit.
    largest: usize,
    listeners: Vec<Listener>,
}

/// `<base>/stats`'s payload, given the captions waiting for the broker and the caption messages it has not
/// confirmed yet.
pub type StatsReport = Box<dyn Fn(usize, usize) -> serde_json::Value + Send>;

/// What became of a caption handed to the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the live connection.
    Published,
    /// The broker is unreachable: the caption waits, with `waiting` others, for the next connection.
    Queued { waiting: usize },
}

/// Per camera: how its captions are published.
#[derive(Debug, Clone)]
struct CameraChannel {
    name: String,
    qos: QoS,
    retain: bool,
}

pub struct Publisher {
    shared: Arc<Shared>,
    queue_limit: usize,
    topics: Topics,
    cameras: Vec<CameraChannel>,
    thread: JoinHandle<()>,
}

impl Publisher {
    /// Starts connecting in the background. `commands` holds each camera's command channel, in the order of
    /// `settings.cameras`; `model` names the captioning model in Home Assistant's device card; `info` is
    /// `<base>/info`'s payload, `stats` gives `<base>/stats`'s, and `listeners` take the messages of other
    /// topics (Frigate's events).
    pub fn start(
        settings: &Settings,
        model: &str,
        info: serde_json::Value,
        commands: Vec<Sender<Command>>,
        stats: StatsReport,
        listeners: Vec<Listener>,
    ) -> Result<Publisher> {
        let cameras: Vec<CameraChannel> = settings
            .cameras
            .iter()
            .map(|camera| CameraChannel {
                name: camera.name.clone(),
                qos: camera.qos,
                retain: camera.retain,
            })
            .collect();
        let outbox = Outbox {
            states: cameras.iter().map(|c| (c.name.clone(), true)).collect(),
            commands: cameras
                .iter()
                .map(|c| c.name.clone())
                .zip(commands)
                .collect(),
            ..Outbox::default()
        };
        let shared = Arc::new(Shared::new(outbox));
        let topics = Topics::new(settings);
        let ha = &settings.home_assistant;
        let discovery = ha.discovery.then(|| Discovery {
            device_name: ha.device_name.clone(),
            model: model.to_string(),
            picture: ha.picture.is_some(),
            expire_after: ha.expire_after,
        });
        let link = Link::new(
            &settings.mqtt,
            topics.clone(),
            cameras.clone(),
            discovery,
            Arc::clone(&shared),
            Extras {
                info,
                stats,
                largest: ha.picture.map_or(0, |picture| picture.max_bytes),
                listeners,
            },
        );
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                link.run();
                thread_shared.outbox().finished = true;
                thread_shared.wake.notify_all();
            })
            .context("cannot start the MQTT thread")?;
        Ok(Publisher {
            shared,
            queue_limit: settings.mqtt.queue_limit,
            topics,
            cameras,
            thread,
        })
    }

    /// Hands a caption, and the picture it describes, to the connection thread; `None` for a camera the
    /// configuration does not have.
    pub fn publish_caption(
        &self,
        record: &CaptionRecord,
        picture: Option<Vec<u8>>,
    ) -> Option<Delivery> {
        let Some(camera) = self.cameras.iter().find(|c| c.name == record.camera) else {
            log::error!(camera = record.camera; "no such camera in the configuration: caption not published");
            return None;
        };
        let mut outbox = self.shared.outbox();
        let caption = outbox.next_caption;
        outbox.next_caption += 1;
        let message = |topic: String, payload: Vec<u8>, retain: bool| Message {
            caption,
            topic,
            payload,
            qos: camera.qos,
            retain,
        };
        let name = &camera.name;
        // The text and the picture are the camera's state, retained so that Home Assistant shows them after a
        // restart; the event is a moment, not replayed to whoever subscribes later.
        let mut messages = vec![
            message(self.topics.caption(name), record.to_json(), camera.retain),
            message(
                self.topics.text(name),
                state_text(&record.caption).into_bytes(),
                true,
            ),
            message(self.topics.event(name), record.event_json(), false),
        ];
        if let Some(picture) = picture {
            // Only the newest picture matters: one waiting for the broker is replaced, not queued behind.
            let topic = self.topics.picture(name);
            for waiting in outbox.queue.iter_mut() {
                waiting.retain(|m| m.topic != topic);
            }
            messages.push(message(topic, picture, true));
        }
        Some(self.hand_over(outbox, messages))
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Hands one message (QoS 1, not retained) to the connection thread, queued with the captions while the
    /// broker is unreachable.
    pub fn publish_record(&self, topic: String, payload: Vec<u8>) -> Delivery {
        let mut outbox = self.shared.outbox();
        let caption = outbox.next_caption;
        outbox.next_caption += 1;
        let message = Message {
            caption,
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
        };
        self.hand_over(outbox, vec![message])
    }

    /// Queues one caption's messages and wakes the connection thread.
    fn hand_over(&self, mut outbox: MutexGuard<'_, Outbox>, messages: Vec<Message>) -> Delivery {
        outbox.push_back(messages, self.queue_limit);
        let delivery = if outbox.connected {
            Delivery::Published
        } else {
            outbox.queued_offline += 1;
            Delivery::Queued {
                waiting: outbox.queue.len() - 1,
            }
        };
        self.shared.wake.notify_all();
        delivery
    }

    /// Stops passing commands on: the camera threads end once their channel is closed.
    pub fn close_commands(&self) {
        self.shared.outbox().commands.clear();
    }

    /// Sends what is queued, publishes `stopped` and disconnects; gives up after `within`.
    pub fn stop(self, within: Duration) {
        let mut outbox = self.shared.outbox();
        outbox.stopping = true;
        self.shared.wake.notify_all();
        let (outbox, _) = self
            .shared
            .wake
            .wait_timeout_while(outbox, within, |outbox| !outbox.finished)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if outbox.finished {
            drop(outbox);
            // The thread has finished its work, so joining cannot block; a panic there was already reported.
            let _ = self.thread.join();
        } else {
            log::warn!(seconds = within.as_secs_f64();
                "the MQTT connection did not close in time; exiting without a clean disconnect");
        }
    }
}
