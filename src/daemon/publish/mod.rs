//! MQTT: captions out, commands in, availability and Home Assistant discovery.
//!
//! One thread owns the connection and is the only one that talks to the client, so it knows exactly which
//! captions the broker has acknowledged. rumqttc forgets unacknowledged messages when a clean session
//! reconnects, so captions stay here until acknowledged: while the broker is unreachable they wait in a
//! bounded queue (the oldest dropped and counted), and those lost in flight with a connection are queued again.
//!
//! Topics, under the configured base: `<base>/available` (`online`; `offline` as the last will; `stopped` on a
//! clean exit), `<base>/<camera>/caption` (JSON), `<base>/<camera>/text` (the caption cut to Home Assistant's
//! 255 characters), `<base>/<camera>/set` (`capture`, `ON`, `OFF`) and `<base>/<camera>/state` (`ON`, `OFF`).

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, Incoming, LastWill, MqttOptions,
    Outgoing, QoS, RecvTimeoutError, StateError, TlsConfiguration, Transport,
};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;

/// Home Assistant keeps at most this many characters of an entity's state.
pub const STATE_LIMIT: usize = 255;
const ONLINE: &str = "online";
const OFFLINE: &str = "offline";
const STOPPED: &str = "stopped";
/// How often the connection thread looks at the outbox while connected.
const OUTBOX_POLL: Duration = Duration::from_millis(50);

/// What a `<base>/<camera>/set` message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Capture,
    Pause,
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraCommand {
    pub camera: String,
    pub command: Command,
}

/// The JSON published on `<base>/<camera>/caption`.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionRecord {
    pub camera: String,
    pub caption: String,
    /// Mean log-probability per token: closer to 0 is more confident.
    pub score: f64,
    pub model: String,
    pub precision: String,
    /// RFC 3339, UTC, when the frame was taken.
    pub timestamp: String,
    /// `interval` or `manual`.
    pub trigger: &'static str,
    /// Cosine similarity of this frame's embedding with the last published one; `null` for the first.
    pub similarity: Option<f64>,
    /// Where the frame came from: a file, a URL, a device.
    pub source: String,
    pub latency_ms: Latency,
}

/// Wall-clock milliseconds per stage of one caption.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub capture: f64,
    pub preprocess: f64,
    pub encode: f64,
    pub map: f64,
    pub decode: f64,
    pub total: f64,
}

/// The topic scheme, in one place so that discovery, publishing and command parsing agree.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
    discovery_prefix: String,
    node_id: String,
}

impl Topics {
    pub fn available(&self) -> String {
        format!("{}/available", self.base)
    }
    pub fn caption(&self, camera: &str) -> String {
        format!("{}/{camera}/caption", self.base)
    }
    pub fn text(&self, camera: &str) -> String {
        format!("{}/{camera}/text", self.base)
    }
    pub fn set(&self, camera: &str) -> String {
        format!("{}/{camera}/set", self.base)
    }
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{camera}/state", self.base)
    }
    pub fn discovery(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.discovery_prefix, self.node_id
        )
    }
    pub fn home_assistant_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    /// The camera a `<base>/<camera>/set` topic addresses.
    fn camera_of_set<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(&self.base)?
            .strip_prefix('/')?
            .strip_suffix("/set")
            .filter(|c| !c.contains('/'))
    }
}

/// Per camera: how its captions are published.
#[derive(Debug, Clone)]
pub struct CameraChannel {
    pub name: String,
    pub qos: QoS,
    pub retain: bool,
}

/// Everything the publisher needs, read from the configuration (and the files it names) up front.
pub struct Settings {
    options: MqttOptions,
    broker: String,
    topics: Topics,
    cameras: Vec<CameraChannel>,
    discovery: Option<Discovery>,
    queue_limit: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

struct Discovery {
    device_name: String,
    model: String,
}

impl Settings {
    /// `model` names the captioning model in Home Assistant's device card.
    pub fn from_config(config: &Config, model: &str) -> Result<Settings> {
        let mqtt = &config.mqtt;
        let host = mqtt.host.get_ref().clone();
        let port = config.port();
        let topics = Topics {
            base: mqtt.base_topic.get_ref().clone(),
            discovery_prefix: config.home_assistant.discovery_prefix.get_ref().clone(),
            node_id: config.node_id().to_string(),
        };
        let mut options = MqttOptions::new(mqtt.client_id.get_ref(), &host, port);
        options.set_keep_alive(Duration::from_secs(*mqtt.keep_alive_s.get_ref()));
        options.set_clean_session(true);
        options.set_last_will(LastWill::new(
            topics.available(),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(username) = &mqtt.username {
            let password = mqtt
                .password
                .as_ref()
                .map(|p| p.get_ref().expose())
                .unwrap_or_default();
            options.set_credentials(username, password);
        }
        if let Some(tls) = &mqtt.tls {
            let read = |path: &std::path::Path, what: &str| {
                fs::read(path)
                    .with_context(|| format!("mqtt.tls: cannot read the {what} {}", path.display()))
            };
            let ca = read(&tls.ca_file, "CA file")?;
            let client_auth = match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => {
                    Some((read(cert, "client certificate")?, read(key, "client key")?))
                }
                _ => None,
            };
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        let cameras = config
            .camera
            .iter()
            .map(|camera| {
                let c = camera.get_ref();
                CameraChannel {
                    name: c.name.get_ref().clone(),
                    qos: qos(*c.qos.as_ref().unwrap_or(&mqtt.qos).get_ref()),
                    retain: c.retain.unwrap_or(mqtt.retain),
                }
            })
            .collect();
        let ha = &config.home_assistant;
        Ok(Settings {
            options,
            broker: format!("{host}:{port}"),
            topics,
            cameras,
            discovery: ha.discovery.then(|| Discovery {
                device_name: ha.device_name.clone(),
                model: model.to_string(),
            }),
            queue_limit: *mqtt.queue_limit.get_ref(),
            reconnect_min: Duration::from_secs_f64(*mqtt.reconnect_min_s.get_ref()),
            reconnect_max: Duration::from_secs_f64(*mqtt.reconnect_max_s.get_ref()),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The caption cut to Home Assistant's state limit, on a character boundary.
pub fn state_text(caption: &str) -> String {
    caption.chars().take(STATE_LIMIT).collect()
}

/// The retained discovery messages: per camera a caption sensor, a capture button and a captioning switch.
fn discovery_messages(
    topics: &Topics,
    cameras: &[CameraChannel],
    discovery: &Discovery,
) -> Vec<(String, String)> {
    let node = &topics.node_id;
    let device = json!({
        "identifiers": [format!("capdec_{node}")],
        "name": discovery.device_name,
        "manufacturer": "capdec-edge",
        "model": format!("CapDec captioner ({})", discovery.model),
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({"name": "capdec-edge", "sw_version": env!("CARGO_PKG_VERSION")});
    // `stopped` means unavailable too; Home Assistant would ignore a payload that is neither.
    let availability = json!([{
        "topic": topics.available(),
        "value_template": format!("{{{{ '{ONLINE}' if value == '{ONLINE}' else '{OFFLINE}' }}}}"),
    }]);
    let mut messages = Vec::new();
    for camera in cameras {
        let name = &camera.name;
        let sensor = json!({
            "name": format!("{name} caption"),
            "unique_id": format!("{node}_{name}_caption"),
            "state_topic": topics.text(name),
            "json_attributes_topic": topics.caption(name),
            "icon": "mdi:image-text",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        let button = json!({
            "name": format!("{name} capture"),
            "unique_id": format!("{node}_{name}_capture"),
            "command_topic": topics.set(name),
            "payload_press": "capture",
            "icon": "mdi:camera",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        let switch = json!({
            "name": format!("{name} captioning"),
            "unique_id": format!("{node}_{name}_captioning"),
            "command_topic": topics.set(name),
            "state_topic": topics.state(name),
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_on": "ON",
            "state_off": "OFF",
            "icon": "mdi:cctv",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        for (component, object, config) in [
            ("sensor", "caption", sensor),
            ("button", "capture", button),
            ("switch", "captioning", switch),
        ] {
            messages.push((
                topics.discovery(component, &format!("{name}_{object}")),
                config.to_string(),
            ));
        }
    }
    messages
}

/// One MQTT message of a caption; `caption` groups the messages of one caption for the queue bound.
#[derive(Debug, Clone)]
struct Message {
    caption: u64,
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// What the daemon hands over and the connection thread takes.
#[derive(Default)]
struct Outbox {
    /// Captions not yet handed to the client, oldest first, each as its messages.
    queue: VecDeque<Vec<Message>>,
    /// Whether each camera is capturing; published on every connection and on change.
    states: BTreeMap<String, bool>,
    states_changed: bool,
    next_caption: u64,
    dropped: u64,
    stopping: bool,
    /// The connection thread has ended.
    finished: bool,
}

impl Outbox {
    fn push_back(&mut self, messages: Vec<Message>, limit: usize) {
        self.queue.push_back(messages);
        self.enforce(limit);
    }

    fn enforce(&mut self, limit: usize) {
        while self.queue.len() > limit {
            self.queue.pop_front();
            self.dropped += 1;
            log::warn!(dropped_total = self.dropped, queue_limit = limit;
                "caption queue full while the broker is unreachable: dropped the oldest caption");
        }
    }
}

struct Shared {
    outbox: Mutex<Outbox>,
    wake: Condvar,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic elsewhere while holding the lock leaves the queue consistent (every change is one push or pop).
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Publisher {
    shared: Arc<Shared>,
    queue_limit: usize,
    topics: Topics,
    cameras: Vec<CameraChannel>,
    thread: JoinHandle<()>,
}

impl Publisher {
    /// Starts connecting in the background; commands from `<base>/<camera>/set` go to `commands`.
    pub fn start(settings: Settings, commands: Sender<CameraCommand>) -> Result<Publisher> {
        let outbox = Outbox {
            states: settings
                .cameras
                .iter()
                .map(|c| (c.name.clone(), true))
                .collect(),
            ..Outbox::default()
        };
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
        });
        let topics = settings.topics.clone();
        let cameras = settings.cameras.clone();
        let queue_limit = settings.queue_limit;
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                Link::new(settings, Arc::clone(&thread_shared), commands).run();
                thread_shared.outbox().finished = true;
                thread_shared.wake.notify_all();
            })
            .context("cannot start the MQTT thread")?;
        Ok(Publisher {
            shared,
            queue_limit,
            topics,
            cameras,
            thread,
        })
    }

    pub fn publish_caption(&self, record: &CaptionRecord) {
        let Some(camera) = self.cameras.iter().find(|c| c.name == record.camera) else {
            log::error!(camera = record.camera; "no such camera in the configuration: caption not published");
            return;
        };
        let mut outbox = self.shared.outbox();
        let caption = outbox.next_caption;
        outbox.next_caption += 1;
        let message = |topic: String, payload: Vec<u8>| Message {
            caption,
            topic,
            payload,
            qos: camera.qos,
            retain: camera.retain,
        };
        let json = serde_json::to_vec(record).expect("a caption record always serialises");
        let messages = vec![
            message(self.topics.caption(&camera.name), json),
            message(
                self.topics.text(&camera.name),
                state_text(&record.caption).into_bytes(),
            ),
        ];
        outbox.push_back(messages, self.queue_limit);
        self.shared.wake.notify_all();
    }

    /// Reports whether a camera is capturing (`ON`) or paused (`OFF`) on its `state` topic.
    pub fn publish_state(&self, camera: &str, capturing: bool) {
        let mut outbox = self.shared.outbox();
        outbox.states.insert(camera.to_string(), capturing);
        outbox.states_changed = true;
        self.shared.wake.notify_all();
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

/// The connection thread's state.
struct Link {
    client: Client,
    connection: Connection,
    shared: Arc<Shared>,
    commands: Sender<CameraCommand>,
    topics: Topics,
    cameras: Vec<CameraChannel>,
    discovery: Option<Discovery>,
    broker: String,
    queue_limit: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
    /// Messages handed to the client and not yet written, in order; `Some` for captions that need an ack.
    unwritten: VecDeque<Option<Message>>,
    /// Written captions awaiting their ack, by packet id, with the order they were written in.
    unacked: BTreeMap<u16, (u64, Message)>,
    written: u64,
    stopped_sent: bool,
    disconnect_sent: bool,
}

enum Step {
    Continue,
    Finished,
}

impl Link {
    fn new(settings: Settings, shared: Arc<Shared>, commands: Sender<CameraCommand>) -> Link {
        // Room for a full queue of captions plus discovery and states, so that handing over never blocks.
        let capacity = settings.queue_limit * 2 + settings.cameras.len() * 5 + 16;
        let (client, connection) = Client::new(settings.options, capacity);
        Link {
            client,
            connection,
            shared,
            commands,
            topics: settings.topics,
            cameras: settings.cameras,
            discovery: settings.discovery,
            broker: settings.broker,
            queue_limit: settings.queue_limit,
            reconnect_min: settings.reconnect_min,
            reconnect_max: settings.reconnect_max,
            unwritten: VecDeque::new(),
            unacked: BTreeMap::new(),
            written: 0,
            stopped_sent: false,
            disconnect_sent: false,
        }
    }

    fn run(mut self) {
        let mut delay = self.reconnect_min;
        let mut failures = 0u32;
        loop {
            if self.shared.outbox().stopping {
                let pending = self.shared.outbox().queue.len();
                if pending > 0 {
                    log::warn!(captions = pending; "stopping while the broker is unreachable: captions not delivered");
                }
                return;
            }
            // Blocks until connected or failed; the connect has its own timeout.
            match self.connection.recv() {
                Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                    log::info!(broker = self.broker; "connected to the MQTT broker");
                    delay = self.reconnect_min;
                    failures = 0;
                    if let Step::Finished = self.connected() {
                        return;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    failures += 1;
                    log::warn!(broker = self.broker, attempt = failures, retry_in_s = delay.as_secs_f64();
                        "{}", describe(&error));
                    self.wait(delay);
                    delay = (delay * 2).min(self.reconnect_max);
                }
                Err(_) => return,
            }
        }
    }

    /// Serves one connection until it is lost (`Continue`) or closed on request (`Finished`).
    fn connected(&mut self) -> Step {
        self.announce();
        loop {
            self.pump();
            match self.connection.recv_timeout(OUTBOX_POLL) {
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Step::Finished,
                Ok(Ok(event)) => {
                    if let Step::Finished = self.handle(event) {
                        return Step::Finished;
                    }
                }
                Ok(Err(error)) => {
                    if self.disconnect_sent {
                        return Step::Finished;
                    }
                    log::warn!(broker = self.broker; "lost the MQTT connection: {}", describe(&error));
                    self.requeue_unconfirmed();
                    return Step::Continue;
                }
            }
        }
    }

    /// What a new session needs: availability, subscriptions, discovery, every camera's state.
    fn announce(&mut self) {
        self.send(
            &self.topics.available(),
            QoS::AtLeastOnce,
            true,
            ONLINE.as_bytes().to_vec(),
            None,
        );
        let mut subscriptions: Vec<String> = self
            .cameras
            .iter()
            .map(|c| self.topics.set(&c.name))
            .collect();
        if self.discovery.is_some() {
            subscriptions.push(self.topics.home_assistant_status());
        }
        for topic in subscriptions {
            if let Err(e) = self.client.try_subscribe(&topic, QoS::AtLeastOnce) {
                log::error!(topic = topic; "cannot subscribe: {e}");
            }
        }
        self.announce_discovery();
        self.shared.outbox().states_changed = true;
    }

    fn announce_discovery(&mut self) {
        let Some(discovery) = &self.discovery else {
            return;
        };
        for (topic, payload) in discovery_messages(&self.topics, &self.cameras, discovery) {
            self.send(&topic, QoS::AtLeastOnce, true, payload.into_bytes(), None);
        }
    }

    /// Hands queued captions, changed states and, when stopping, the farewell to the client.
    fn pump(&mut self) {
        let (captions, states, stopping) = {
            let mut outbox = self.shared.outbox();
            let states = if std::mem::take(&mut outbox.states_changed) {
                outbox.states.clone()
            } else {
                BTreeMap::new()
            };
            (
                outbox.queue.drain(..).collect::<Vec<_>>(),
                states,
                outbox.stopping,
            )
        };
        for (camera, capturing) in states {
            let payload = if capturing { "ON" } else { "OFF" };
            self.send(
                &self.topics.state(&camera),
                QoS::AtLeastOnce,
                true,
                payload.into(),
                None,
            );
        }
        for message in captions.into_iter().flatten() {
            let (topic, qos, retain, payload) = (
                message.topic.clone(),
                message.qos,
                message.retain,
                message.payload.clone(),
            );
            self.send(&topic, qos, retain, payload, Some(message));
        }
        if stopping && !self.stopped_sent {
            self.send(
                &self.topics.available(),
                QoS::AtLeastOnce,
                true,
                STOPPED.into(),
                None,
            );
            self.stopped_sent = true;
        }
        let all_confirmed = self.unwritten.is_empty() && self.unacked.is_empty();
        if self.stopped_sent && all_confirmed && !self.disconnect_sent {
            match self.client.try_disconnect() {
                Ok(()) => self.disconnect_sent = true,
                Err(e) => log::error!("cannot disconnect from the MQTT broker: {e}"),
            }
        }
    }

    /// Publishes one message; `caption` is kept until the broker confirms it.
    fn send(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        caption: Option<Message>,
    ) {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => self
                .unwritten
                .push_back(caption.filter(|m| m.qos != QoS::AtMostOnce)),
            Err(e) => {
                log::error!(topic = topic; "MQTT client queue full, message not sent: {e}");
                if let Some(message) = caption {
                    self.shared.outbox().queue.push_front(vec![message]);
                }
            }
        }
    }

    fn handle(&mut self, event: Event) -> Step {
        match event {
            Event::Outgoing(Outgoing::Publish(packet_id)) => {
                if let Some(Some(message)) = self.unwritten.pop_front() {
                    self.written += 1;
                    self.unacked.insert(packet_id, (self.written, message));
                }
            }
            // QoS 2 is the broker's once it has received the message (PUBREC); the rest is between it and us.
            Event::Incoming(Incoming::PubAck(ack)) => {
                self.unacked.remove(&ack.pkid);
            }
            Event::Incoming(Incoming::PubRec(rec)) => {
                self.unacked.remove(&rec.pkid);
            }
            Event::Incoming(Incoming::Publish(publish)) => {
                self.on_message(&publish.topic, &publish.payload, publish.retain)
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                log::info!(broker = self.broker; "disconnected from the MQTT broker");
                return Step::Finished;
            }
            _ => {}
        }
        Step::Continue
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool) {
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        if topic == self.topics.home_assistant_status() {
            if text == ONLINE {
                log::info!("Home Assistant is online: publishing discovery again");
                self.announce_discovery();
            }
            return;
        }
        let Some(camera) = self.topics.camera_of_set(topic) else {
            return;
        };
        // A retained command would replay on every connection.
        if retained {
            log::warn!(topic = topic; "ignoring a retained command; publish commands without retain");
            return;
        }
        let command = match text {
            "capture" | "CAPTURE" => Command::Capture,
            "ON" | "on" => Command::Resume,
            "OFF" | "off" => Command::Pause,
            _ => {
                log::warn!(topic = topic, payload = text; "unknown command: expected capture, ON or OFF");
                return;
            }
        };
        if !self.cameras.iter().any(|c| c.name == camera) {
            log::warn!(topic = topic; "command for an unknown camera");
            return;
        }
        // The daemon may already be shutting down; then the command has no one left to serve it.
        let _ = self.commands.send(CameraCommand {
            camera: camera.to_string(),
            command,
        });
    }

    /// A lost connection loses what it had not confirmed: queue it again, in the order it was sent.
    fn requeue_unconfirmed(&mut self) {
        let mut unacked: Vec<(u64, Message)> =
            std::mem::take(&mut self.unacked).into_values().collect();
        unacked.sort_by_key(|(order, _)| *order);
        let unconfirmed = unacked
            .into_iter()
            .map(|(_, m)| m)
            .chain(self.unwritten.drain(..).flatten());
        let mut groups: Vec<Vec<Message>> = Vec::new();
        for message in unconfirmed {
            match groups.last_mut() {
                Some(group) if group[0].caption == message.caption => group.push(message),
                _ => groups.push(vec![message]),
            }
        }
        if groups.is_empty() {
            return;
        }
        log::info!(captions = groups.len(); "captions unconfirmed when the connection was lost: queued again");
        let mut outbox = self.shared.outbox();
        for group in groups.into_iter().rev() {
            outbox.queue.push_front(group);
        }
        outbox.enforce(self.queue_limit);
    }

    /// Sleeps before the next connection attempt, waking early to stop.
    fn wait(&self, delay: Duration) {
        let deadline = Instant::now() + delay;
        let mut outbox = self.shared.outbox();
        while !outbox.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            outbox = self
                .shared
                .wake
                .wait_timeout(outbox, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One line that says what went wrong and what to check.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "the broker refused the login: bad user name or password (check mqtt.username and mqtt.password)".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "the broker refused the connection: not authorised (check mqtt.username, mqtt.password and the broker's ACL)".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            "the broker refused the client id (check mqtt.client_id)".into()
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?}"),
        ConnectionError::Io(e) => format!("cannot reach the MQTT broker: {e}"),
        ConnectionError::MqttState(StateError::ConnectionAborted) => "the broker closed the connection".into(),
        ConnectionError::NetworkTimeout => "the MQTT broker did not answer in time".into(),
        ConnectionError::Tls(e) => format!("TLS with the MQTT broker failed: {e} (check mqtt.tls)"),
        other => format!("MQTT connection error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics {
            base: "home/capdec".into(),
            discovery_prefix: "homeassistant".into(),
            node_id: "attic".into(),
        }
    }

    #[test]
    fn set_topics_name_their_camera() {
        let t = topics();
        assert_eq!(t.camera_of_set("home/capdec/porch/set"), Some("porch"));
        assert_eq!(t.camera_of_set("home/capdec/porch/state"), None);
        assert_eq!(t.camera_of_set("home/capdec/a/b/set"), None);
        assert_eq!(t.camera_of_set("home/capdecx/porch/set"), None);
    }

    #[test]
    fn state_text_is_cut_on_characters() {
        let long = "é".repeat(300);
        let cut = state_text(&long);
        assert_eq!(cut.chars().count(), STATE_LIMIT);
        assert!(long.starts_with(&cut));
        assert_eq!(state_text("a dog."), "a dog.");
    }

    #[test]
    fn outbox_drops_the_oldest_beyond_its_limit() {
        let mut outbox = Outbox::default();
        for caption in 0..5 {
            let message = Message {
                caption,
                topic: "t".into(),
                payload: vec![],
                qos: QoS::AtLeastOnce,
                retain: false,
            };
            outbox.push_back(vec![message], 3);
        }
        let kept: Vec<u64> = outbox.queue.iter().map(|group| group[0].caption).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(outbox.dropped, 2);
    }
}
