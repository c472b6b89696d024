//! What a broker and the people who can publish to it can throw at the daemon, against a real Mosquitto:
//! oversized and retained messages on its topics, odd commands, and the broker killed in the middle of a burst
//! of captions.

mod mqtt;

use std::collections::BTreeMap;
use std::fs;
use std::thread;
use std::time::Duration;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch, signal};

const AVAILABLE: &str = "test/capdec/available";

fn connects(daemon: &Daemon) -> usize {
    daemon
        .log()
        .iter()
        .filter(|line| line.contains("connected to the MQTT broker"))
        .count()
}

#[test]
fn oversized_and_retained_messages_never_cost_the_connection() {
    let dir = scratch("oversized");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-oversized", &["test/capdec/#"], false);
    // Waiting for the daemon before it starts, retained: it meets both on every connection.
    let big = vec![b'x'; 20 * 1024];
    sub.publish_bytes("homeassistant/status", &big, true);
    sub.publish_bytes("test/capdec/porch/set", &big, true);
    let picture = repo("tests/data/images/chelsea.png");
    // Every frame captioned (no scene gate): a steady stream to watch the connection by.
    let camera = "skip_if_similarity_above = 1.0";
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("porch", &picture)], "", camera),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    sub.wait_for(AVAILABLE, "online");
    for topic in ["homeassistant/status", "test/capdec/porch/set"] {
        daemon.wait_for_log(&["oversized message (20480 bytes", topic]);
    }

    // Larger than rumqttc's default limit by far, sent while connected.
    sub.publish_bytes("test/capdec/porch/set", &vec![b'y'; 300 * 1024], false);
    daemon.wait_for_log(&["oversized message (307200 bytes"]);
    // Commands are trimmed and any case.
    sub.publish("test/capdec/porch/set", " Capture\n");
    loop {
        if sub.next_on("test/capdec/porch/caption").json()["trigger"] == "manual" {
            break;
        }
    }
    // An unknown command is shown cut and escaped.
    let mut odd = b"\x1b[2J\0".to_vec();
    odd.extend(vec![b'z'; 500]);
    sub.publish_bytes("test/capdec/porch/set", &odd, false);
    let warning = daemon.wait_for_log(&["unknown command"]);
    assert!(
        warning.contains(r#"payload="\u{1b}[2J\u{0}zzz"#) && warning.contains("… (505 bytes)"),
        "{warning}"
    );
    assert!(warning.len() < 300, "a bounded line: {warning}");
    assert!(!warning.contains('\0') && !warning.contains('\x1b'));

    // A few more seconds of captions with the retained messages in place: still the first connection.
    let sequence = |m: &mqtt::Received| m.json()["sequence"].as_u64().unwrap();
    let now = sequence(&sub.next_on("test/capdec/porch/caption"));
    while sequence(&sub.next_on("test/capdec/porch/caption")) < now + 10 {}
    assert_eq!(connects(&daemon), 1, "no reconnect: {:#?}", daemon.log());
    let oversized = daemon
        .log()
        .iter()
        .filter(|line| line.contains("oversized message"))
        .count();
    assert_eq!(oversized, 3, "one warning per message");
}

#[test]
fn a_connection_that_ends_at_once_backs_off() {
    // Two daemons with one client id: the broker closes the older connection whenever the other connects,
    // a cause that repeats on every connection, as a retained message that breaks the client would.
    let dir = scratch("backoff");
    let broker = Broker::start(&dir, "");
    let picture = repo("tests/data/images/chelsea.png");
    let text = config(broker.port, &[("porch", &picture)], "", "")
        .replace("reconnect_max_s = 1", "reconnect_max_s = 30");
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut first = Daemon::start(&dir.join("capdec.toml"));
    first.wait_for_log(&["connected to the MQTT broker"]);
    let mut second = Daemon::start(&dir.join("capdec.toml"));
    second.wait_for_log(&["connected to the MQTT broker"]);
    for daemon in [&mut first, &mut second] {
        daemon.wait_for_log(&[
            "the connection ended soon after it was made",
            "same mqtt.client_id",
        ]);
    }
    thread::sleep(Duration::from_secs(5));
    // Waits of 0.2, 0.4, 0.8, 1.6 and 3.2 s fit in 5 s at most: five new connections each, where an
    // immediate reconnect makes hundreds.
    let total = connects(&first) + connects(&second);
    assert!(
        total <= 14,
        "{total} connections in about 5 s: {:#?}",
        first.log()
    );
    let waits: Vec<String> = first
        .log()
        .iter()
        .filter(|line| line.contains("ended soon after"))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("retry_in_s="))
                .map(str::to_string)
        })
        .collect();
    assert!(
        waits.len() >= 2 && waits[0] == "0.2" && waits[1] == "0.4",
        "doubling waits: {waits:?}"
    );
}

#[test]
fn captions_in_flight_when_the_broker_is_killed_are_sent_again() {
    let dir = scratch("inflight");
    // Persistence that survives a SIGKILL: the database saved after every change.
    let mut broker = Broker::start(
        &dir,
        "allow_anonymous true\nautosave_on_changes true\nautosave_interval 1",
    );
    let topic = "test/capdec/porch/caption";
    let sub = Subscriber::connect(broker.port, "test-inflight", &[topic, AVAILABLE], true);
    let picture = repo("tests/data/images/chelsea.png");
    // A burst: a caption as fast as the fixture model makes them, every one published.
    let text = config(
        broker.port,
        &[("porch", &picture)],
        "queue_limit = 100000",
        "skip_if_similarity_above = 1.0",
    )
    .replace("interval_s = 0.2", "interval_s = 0.005")
    .replace(
        "max_captions_per_minute = 1000",
        "max_captions_per_minute = 100000",
    );
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));

    let mut received: BTreeMap<u64, usize> = BTreeMap::new();
    let take = |received: &mut BTreeMap<u64, usize>, message: mqtt::Received| {
        if message.topic == topic {
            *received
                .entry(message.json()["sequence"].as_u64().unwrap())
                .or_default() += 1;
        }
    };
    while received.len() < 50 {
        take(&mut received, sub.next_on(topic));
    }
    // Frozen first, so that the captions of the next moments are written to the socket and never
    // acknowledged: the kill then takes them with it, as a hung broker restarted by its supervisor would.
    broker.freeze();
    daemon.forget_log();
    for _ in 0..10 {
        daemon.wait_for_log(&["caption published"]);
    }
    broker.kill();
    daemon.wait_for_log(&["lost the MQTT connection"]);
    for _ in 0..20 {
        daemon.wait_for_log(&["caption queued"]);
    }
    broker.restart();
    daemon.wait_for_log(&["captions queued while the broker was unreachable: published"]);
    for _ in 0..20 {
        daemon.wait_for_log(&["caption published"]);
    }
    signal(daemon.pid(), "TERM");
    assert!(daemon.wait_exit().success());
    // The daemon's last message comes after all its captions: everything it sent has arrived by then.
    loop {
        let message = sub.next_on_any();
        if message.topic == AVAILABLE && message.payload == "stopped" {
            break;
        }
        take(&mut received, message);
    }

    let made: u64 = daemon
        .log()
        .iter()
        .filter(|line| line.contains("caption published") || line.contains("caption queued"))
        .count()
        .try_into()
        .unwrap();
    let missing: Vec<u64> = (1..=made).filter(|s| !received.contains_key(s)).collect();
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    let requeued = daemon
        .log()
        .iter()
        .find(|line| line.contains("unconfirmed when the connection was lost"))
        .cloned()
        .expect("captions were in flight when the broker died");
    eprintln!(
        "in-flight test: {made} captions made, {} received, {duplicates} duplicates; {requeued}",
        received.len()
    );
    assert!(missing.is_empty(), "lost captions {missing:?} of {made}");
    assert_eq!(
        received.keys().last(),
        Some(&made),
        "nothing beyond what was made"
    );
}
