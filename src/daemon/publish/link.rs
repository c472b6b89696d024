//! The connection thread: connects with backoff, announces the daemon on every new session (availability,
//! subscriptions, discovery, states), hands queued captions to the client, follows their acknowledgements, turns
//! `set` messages into camera commands, and on a lost connection queues again what was not confirmed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, Incoming, LastWill, MqttOptions,
    Outgoing, QoS, RecvTimeoutError, StateError, TlsConfiguration, Transport,
};

use super::backoff::Backoff;
use super::discovery::{self, Discovery};
use super::inbound::{self, Inbound};
use super::inflight::Inflight;
use super::outbox::{Message, Shared};
use super::topics::Topics;
use super::{CameraChannel, Command, Extras, Listener, OFFLINE, ONLINE, STOPPED, StatsReport};
use crate::daemon::config::MqttSettings;
use crate::daemon::tls;

/// How often the connection thread looks at the outbox while connected.
const OUTBOX_POLL: Duration = Duration::from_millis(50);

/// MQTT's own limit on a packet. The client reads whatever the broker sends, however large, and the daemon
/// drops what it has no use for (`inbound::PAYLOAD_LIMIT`): rumqttc cannot skip a packet over its limit, it
/// drops the connection, and a retained one would then drop every connection after it.
const MQTT_PACKET_LIMIT: usize = 268_435_455;

/// rumqttc's default for what the daemon sends, enough for a caption record and discovery; a captioned picture
/// (up to `home_assistant.picture_max_kb`) raises it.
const OUTGOING_PACKET_LIMIT: usize = 10 * 1024;
/// A packet's room beside its payload: the topic and the header.
const PACKET_OVERHEAD: usize = 1024;

/// The client's options: who we are, the last will, credentials and TLS, all read at start; `largest` is the
/// largest payload the daemon will send.
fn options(mqtt: &MqttSettings, topics: &Topics, largest: usize) -> MqttOptions {
    let mut options = MqttOptions::new(&mqtt.client_id, &mqtt.host, mqtt.port);
    options.set_keep_alive(mqtt.keep_alive);
    options.set_clean_session(true);
    options.set_max_packet_size(
        MQTT_PACKET_LIMIT,
        OUTGOING_PACKET_LIMIT.max(largest + PACKET_OVERHEAD),
    );
    options.set_last_will(LastWill::new(
        topics.available(),
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(credentials) = &mqtt.credentials {
        options.set_credentials(&credentials.username, credentials.password.expose());
    }
    if let Some(tls) = &mqtt.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca.clone(),
            alpn: None,
            client_auth: tls
                .client_auth
                .as_ref()
                .map(|auth| (auth.chain.clone(), auth.key.expose().as_bytes().to_vec())),
        }));
    }
    options
}

/// The connection thread's state.
pub(super) struct Link {
    client: Client,
    connection: Connection,
    shared: Arc<Shared>,
    topics: Topics,
    cameras: Vec<CameraChannel>,
    discovery: Option<Discovery>,
    broker: String,
    host: String,
    /// For TLS failures: what the broker's certificate is checked against, and the client's certificate.
    tls_files: Option<(String, Option<String>)>,
    queue_limit: usize,
    backoff: Backoff,
    inflight: Inflight,
    stopped_sent: bool,
    disconnect_sent: bool,
    /// `<base>/info`'s payload, retained on every new session.
    info: Vec<u8>,
    stats: StatsReport,
    stats_interval: Duration,
    stats_due: Instant,
    listeners: Vec<Listener>,
}

enum Step {
    Continue,
    Finished,
}

impl Link {
    pub fn new(
        mqtt: &MqttSettings,
        topics: Topics,
        cameras: Vec<CameraChannel>,
        discovery: Option<Discovery>,
        shared: Arc<Shared>,
        extras: Extras,
    ) -> Link {
        let Extras {
            info,
            stats,
            largest,
            listeners,
        } = extras;
        // Room for a full queue of captions (four messages each) plus discovery and states, so that handing over
        // never blocks.
        let capacity = mqtt.queue_limit * 4 + cameras.len() * 8 + 16;
        let (client, connection) = Client::new(options(mqtt, &topics, largest), capacity);
        Link {
            client,
            connection,
            shared,
            topics,
            cameras,
            discovery,
            broker: format!("{}:{}", mqtt.host, mqtt.port),
            host: mqtt.host.clone(),
            tls_files: mqtt.tls.as_ref().map(|tls| {
                (
                    format!("mqtt.tls.ca_file {}", tls.ca_file.display()),
                    tls.client_auth
                        .as_ref()
                        .map(|auth| format!("mqtt.tls.client_cert {}", auth.cert_file.display())),
                )
            }),
            queue_limit: mqtt.queue_limit,
            backoff: Backoff::new(mqtt.reconnect_min, mqtt.reconnect_max),
            inflight: Inflight::default(),
            stopped_sent: false,
            disconnect_sent: false,
            info: info.to_string().into_bytes(),
            stats,
            stats_interval: mqtt.stats_interval,
            stats_due: Instant::now() + mqtt.stats_interval,
            listeners,
        }
    }

    pub fn run(mut self) {
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
                    failures = 0;
                    let since = Instant::now();
                    if let Step::Finished = self.connected() {
                        return;
                    }
                    let lasted = since.elapsed();
                    if let Some(wait) = self.backoff.lost(lasted) {
                        log::warn!(broker = self.broker, lasted_s = lasted.as_secs_f64(), retry_in_s = wait.as_secs_f64();
                            "the connection ended soon after it was made: waiting before the next attempt \
                             (is another client using the same mqtt.client_id?)");
                        self.wait(wait);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    failures += 1;
                    let wait = self.backoff.failed();
                    log::warn!(broker = self.broker, attempt = failures, retry_in_s = wait.as_secs_f64();
                        "{}", self.describe(&error));
                    self.wait(wait);
                }
                Err(_) => return,
            }
        }
    }

    /// Serves one connection until it is lost (`Continue`) or closed on request (`Finished`).
    fn connected(&mut self) -> Step {
        self.shared.outbox().connected = true;
        let step = self.serve();
        self.shared.outbox().connected = false;
        step
    }

    fn serve(&mut self) -> Step {
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
                    log::warn!(broker = self.broker; "lost the MQTT connection: {}", self.describe(&error));
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
        self.send(
            &self.topics.info(),
            QoS::AtLeastOnce,
            true,
            self.info.clone(),
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
        subscriptions.extend(self.listeners.iter().map(|l| l.topic.clone()));
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
        let names: Vec<String> = self.cameras.iter().map(|c| c.name.clone()).collect();
        for (topic, payload) in discovery::messages(&self.topics, &names, discovery) {
            self.send(&topic, QoS::AtLeastOnce, true, payload.into_bytes(), None);
        }
    }

    /// Hands queued captions, changed states, the stats when due and, when stopping, the farewell to the client.
    fn pump(&mut self) {
        if Instant::now() >= self.stats_due {
            self.stats_due = Instant::now() + self.stats_interval;
            let waiting = self.shared.outbox().queue.len();
            let payload = (self.stats)(waiting, self.inflight.unconfirmed());
            self.send(
                &self.topics.stats(),
                QoS::AtMostOnce,
                false,
                payload.to_string().into_bytes(),
                None,
            );
        }
        let (captions, states, stopping) = {
            let mut outbox = self.shared.outbox();
            let backlog = std::mem::take(&mut outbox.queued_offline);
            if backlog > 0 {
                log::info!(captions = backlog; "captions queued while the broker was unreachable: published");
            }
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
        if self.stopped_sent && self.inflight.all_confirmed() && !self.disconnect_sent {
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
            Ok(()) => self.inflight.handed(caption),
            Err(e) => {
                log::error!(topic = topic; "MQTT client queue full, message not sent: {e}");
                if let Some(message) = caption {
                    self.shared.outbox().queue.push_front(vec![message]);
                }
            }
        }
    }

    fn handle(&mut self, event: Event) -> Step {
        self.inflight.observe(&event);
        match event {
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
        if let Some(listener) = self.listeners.iter_mut().find(|l| l.topic == topic) {
            if retained {
                log::debug!(topic = topic; "ignoring a retained message: it is old news");
            } else if payload.len() > listener.max_bytes {
                log::warn!(topic = topic, bytes = payload.len(), limit = listener.max_bytes;
                    "ignoring an oversized message");
            } else {
                (listener.deliver)(payload);
            }
            return;
        }
        let (camera, command) = match inbound::interpret(&self.topics, topic, payload, retained) {
            Inbound::HomeAssistantOnline => {
                log::info!("Home Assistant is online: publishing discovery again");
                self.announce_discovery();
                return;
            }
            Inbound::Command { camera, command } => (camera, command),
            Inbound::Refused { reason, payload } => {
                match payload {
                    Some(payload) => log::warn!(topic = topic, payload = payload; "{reason}"),
                    None => log::warn!(topic = topic; "{reason}"),
                }
                return;
            }
            Inbound::Ignored => return,
        };
        if !self.cameras.iter().any(|c| c.name == camera) {
            log::warn!(topic = topic; "command for an unknown camera");
            return;
        }
        let mut outbox = self.shared.outbox();
        let Some(channel) = outbox.commands.get(camera) else {
            log::info!(camera = camera; "stopping: command ignored");
            return;
        };
        log::info!(camera = camera, command = format!("{command:?}"); "command received");
        if channel.send(command).is_err() {
            log::error!(camera = camera; "the camera thread has ended; command ignored");
            return;
        }
        let capturing = match command {
            Command::Pause => false,
            Command::Resume => true,
            Command::Capture => return,
        };
        outbox.set_state(camera, capturing);
    }

    /// A lost connection loses what it had not confirmed: queue it again, in the order it was sent.
    fn requeue_unconfirmed(&mut self) {
        let unconfirmed = self.inflight.take_unconfirmed();
        if unconfirmed.is_empty() {
            return;
        }
        log::info!(captions = unconfirmed.len(); "captions unconfirmed when the connection was lost: queued again");
        self.shared.outbox().requeue(unconfirmed, self.queue_limit);
    }

    /// What went wrong, with TLS failures explained against the files they concern.
    fn describe(&self, error: &ConnectionError) -> String {
        if let Some((roots, client_cert)) = &self.tls_files
            && let Some(cause) = tls::rustls_cause(error)
        {
            let peer = tls::Peer {
                what: "the MQTT broker",
                host: &self.host,
                host_key: "mqtt.host",
                roots,
                client_cert: client_cert.as_deref(),
                client_hint: "set mqtt.tls.client_cert and mqtt.tls.client_key",
            };
            return tls::explain(cause, &peer);
        }
        connection_failure(error)
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
fn connection_failure(error: &ConnectionError) -> String {
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
