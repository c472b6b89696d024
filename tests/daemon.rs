//! `capdec run` against a real Mosquitto: captions, scene gating, commands, availability, discovery, broker
//! restarts and login failures; and `capdec check-config`.

mod mqtt;

use std::fs;
use std::path::Path;
use std::process::Command;

use mqtt::{Broker, Daemon, Subscriber, config, free_port, repo, scratch, signal};

const AVAILABLE: &str = "test/capdec/available";

fn image(name: &str) -> std::path::PathBuf {
    repo("tests/data/images").join(name)
}

/// Puts a picture into a watched folder as writers should: complete, then renamed into place.
fn drop_picture(folder: &Path, source: &str, name: &str) {
    let hidden = folder.join(format!(".{name}"));
    fs::copy(image(source), &hidden).unwrap();
    fs::rename(&hidden, folder.join(name)).unwrap();
}

#[test]
fn file_camera_publishes_captions_and_stops_cleanly() {
    let dir = scratch("captions");
    let folder = dir.join("inbox");
    fs::create_dir(&folder).unwrap();
    drop_picture(&folder, "chelsea.png", "first.png");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-captions", &["test/capdec/#"], false);
    // The fixture's random weights see every picture as much alike; caption them all.
    let camera = "skip_if_similarity_above = 1.0";
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("porch", &folder)], "", camera),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));

    sub.wait_for(AVAILABLE, "online");
    assert_eq!(sub.next_on("test/capdec/porch/state").payload, "ON");
    let first = sub.next_on("test/capdec/porch/caption");
    let record = first.json();
    let caption = record["caption"].as_str().expect("caption is a string");
    assert!(!caption.is_empty());
    assert_eq!(record["camera"], "porch");
    assert_eq!(record["model"], "fixture-tiny");
    assert_eq!(record["precision"], "fp32");
    assert_eq!(record["trigger"], "interval");
    assert!(
        record["similarity"].is_null(),
        "the first caption has nothing to compare with"
    );
    assert!(
        record["source"]
            .as_str()
            .unwrap()
            .ends_with("inbox/first.png"),
        "{record}"
    );
    assert!(
        record["score"].as_f64().unwrap() <= 0.0,
        "a mean log-probability: {record}"
    );
    humantime::parse_rfc3339(record["timestamp"].as_str().unwrap()).expect("an RFC 3339 timestamp");
    for stage in ["capture", "preprocess", "encode", "map", "decode", "total"] {
        assert!(
            record["latency_ms"][stage].as_f64().unwrap() >= 0.0,
            "{stage}: {record}"
        );
    }
    assert!(!first.retain, "captions are not retained unless configured");
    assert_eq!(sub.next_on("test/capdec/porch/text").payload, caption);

    // A new picture in the folder is captioned; the one already captioned is not again.
    drop_picture(&folder, "coffee.png", "second.png");
    let second = sub.next_on("test/capdec/porch/caption").json();
    assert!(
        second["source"]
            .as_str()
            .unwrap()
            .ends_with("inbox/second.png"),
        "{second}"
    );
    assert!(second["similarity"].as_f64().is_some());

    signal(daemon.pid(), "TERM");
    sub.wait_for(AVAILABLE, "stopped");
    assert!(daemon.wait_exit().success(), "SIGTERM is a clean exit");
    daemon.wait_for_log(&["msg=stopped"]);
    drop(broker);
}

#[test]
fn unchanged_scene_is_skipped_and_a_change_is_published() {
    let dir = scratch("scene");
    let picture = dir.join("snapshot.png");
    fs::copy(image("chelsea.png"), &picture).unwrap();
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-scene", &["test/capdec/+/caption"], false);
    let camera = "skip_if_similarity_above = 0.999";
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("yard", &picture)], "", camera),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));

    let first = sub.next_on("test/capdec/yard/caption").json();
    assert!(first["similarity"].is_null());
    // The same picture again and again: the decoder is skipped, nothing is published.
    for _ in 0..3 {
        let line = daemon.wait_for_log(&["scene unchanged: decoder skipped", "camera=yard"]);
        assert!(line.contains("similarity=1.0000"), "{line}");
    }
    assert_eq!(
        daemon
            .log()
            .iter()
            .filter(|l| l.contains("caption published"))
            .count(),
        1
    );
    assert!(
        sub.drain().is_empty(),
        "an unchanged scene published a caption"
    );

    let replacement = dir.join(".snapshot.png");
    fs::copy(image("coffee.png"), &replacement).unwrap();
    fs::rename(&replacement, &picture).unwrap();
    let changed = sub.next_on("test/capdec/yard/caption").json();
    let similarity = changed["similarity"]
        .as_f64()
        .expect("compared with the first caption");
    assert!(similarity <= 0.999, "{changed}");
    assert_ne!(changed["caption"], first["caption"]);
}

#[test]
fn set_commands_pause_resume_and_trigger() {
    let dir = scratch("commands");
    let picture = dir.join("snapshot.png");
    fs::copy(image("rocket.jpg"), &picture).unwrap();
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-commands", &["test/capdec/gate/#"], false);
    // Every frame is captioned (no scene gate), so that a pause is visible as silence.
    let camera = "skip_if_similarity_above = 1.0";
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("gate", &picture)], "", camera),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    sub.next_on("test/capdec/gate/caption");

    sub.publish("test/capdec/gate/set", "OFF");
    sub.wait_for("test/capdec/gate/state", "OFF");
    let paused = daemon.wait_for_log(&["camera paused", "camera=gate"]);
    let paused_at = log_time(&paused);
    for _ in 0..3 {
        daemon.wait_for_log(&["paused: no picture taken", "camera=gate"]);
    }
    for message in sub.drain().iter().filter(|m| m.topic.ends_with("/caption")) {
        let record = message.json();
        assert!(
            record["timestamp"].as_str().unwrap() <= paused_at.as_str(),
            "taken while paused: {record}"
        );
    }

    // A manual capture works while paused, and is published even though the scene is the same.
    sub.publish("test/capdec/gate/set", "capture");
    let manual = sub.next_on("test/capdec/gate/caption").json();
    assert_eq!(manual["trigger"], "manual");

    sub.publish("test/capdec/gate/set", "ON");
    sub.wait_for("test/capdec/gate/state", "ON");
    let resumed_at = log_time(&daemon.wait_for_log(&["camera resumed", "camera=gate"]));
    loop {
        let record = sub.next_on("test/capdec/gate/caption").json();
        if record["trigger"] == "interval"
            && record["timestamp"].as_str().unwrap() >= resumed_at.as_str()
        {
            break;
        }
    }

    sub.publish("test/capdec/gate/set", "dance");
    daemon.wait_for_log(&[
        "unknown command: expected capture, ON or OFF",
        "payload=dance",
    ]);
}

/// The `time=` field of a log line, in the captions' timestamp format.
fn log_time(line: &str) -> String {
    let field = line
        .split(' ')
        .find_map(|f| f.strip_prefix("time="))
        .expect("a time field");
    field.to_string()
}

#[test]
fn last_will_says_offline_when_killed() {
    let dir = scratch("will");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-will", &[AVAILABLE], false);
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("porch", &image("chelsea.png"))], "", ""),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    sub.wait_for(AVAILABLE, "online");
    signal(daemon.pid(), "KILL");
    daemon.wait_exit();
    // The very next availability message is the broker's last will: a killed daemon says nothing itself.
    let will = sub.next_on(AVAILABLE);
    assert_eq!(
        will.payload, "offline",
        "the next availability after the kill"
    );
    // Retained: whoever subscribes later learns the daemon is gone.
    let late = Subscriber::connect(broker.port, "test-will-late", &[AVAILABLE], false);
    let retained = late.next_on(AVAILABLE);
    assert_eq!(
        (retained.payload.as_str(), retained.retain),
        ("offline", true)
    );
}

#[test]
fn discovery_payloads_suit_home_assistant() {
    let dir = scratch("discovery");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-discovery",
        &["homeassistant/#", "test/capdec/#"],
        false,
    );
    // Long captions, to see the 255-character cut.
    let text = config(broker.port, &[("porch", &image("astronaut.png"))], "", "")
        .replace("beam_size = 1", "beam_size = 1\nmax_tokens = 120")
        + "\n[home_assistant]\nnode_id = \"attic\"\ndevice_name = \"Attic captioner\"\n";
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let _daemon = Daemon::start(&dir.join("capdec.toml"));

    let sensor = sub.next_on("homeassistant/sensor/attic/porch_caption/config");
    let button = sub.next_on("homeassistant/button/attic/porch_capture/config");
    let switch = sub.next_on("homeassistant/switch/attic/porch_captioning/config");
    let mut unique_ids = Vec::new();
    for entity in [&sensor, &button, &switch] {
        let config = entity.json();
        for key in ["name", "unique_id", "availability", "device", "origin"] {
            assert!(
                !config[key].is_null(),
                "{}: no `{key}`: {config}",
                entity.topic
            );
        }
        assert_eq!(config["device"]["identifiers"][0], "capdec_attic");
        assert_eq!(config["device"]["name"], "Attic captioner");
        assert_eq!(config["availability"][0]["topic"], AVAILABLE);
        unique_ids.push(config["unique_id"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::BTreeSet<&String> = unique_ids.iter().collect();
    assert_eq!(distinct.len(), 3, "unique ids must differ: {unique_ids:?}");
    // Retained, so that Home Assistant finds the entities whenever it subscribes.
    let late = Subscriber::connect(
        broker.port,
        "test-discovery-late",
        &["homeassistant/#"],
        false,
    );
    for entity in [&sensor, &button, &switch] {
        let again = late.next_on(&entity.topic);
        assert!(
            again.retain && again.payload == entity.payload,
            "{} is not retained",
            entity.topic
        );
    }
    let sensor = sensor.json();
    assert_eq!(sensor["json_attributes_topic"], "test/capdec/porch/caption");
    let button = button.json();
    assert_eq!(
        (&button["command_topic"], &button["payload_press"]),
        (&"test/capdec/porch/set".into(), &"capture".into())
    );
    let switch = switch.json();
    assert_eq!(switch["command_topic"], "test/capdec/porch/set");
    assert_eq!(switch["state_topic"], "test/capdec/porch/state");
    assert_eq!(
        (&switch["payload_on"], &switch["payload_off"]),
        (&"ON".into(), &"OFF".into())
    );

    // The sensor's state is the caption cut to 255 characters; the full caption is in the attributes.
    let caption = sub.next_on("test/capdec/porch/caption").json()["caption"]
        .as_str()
        .unwrap()
        .to_string();
    let state = sub.next_on(sensor["state_topic"].as_str().unwrap()).payload;
    assert!(
        caption.chars().count() > 255,
        "the test needs a long caption, got {} characters",
        caption.len()
    );
    assert_eq!(state.chars().count(), 255);
    assert!(caption.starts_with(&state));

    // Home Assistant restarted: discovery again.
    sub.publish("homeassistant/status", "online");
    sub.next_on("homeassistant/sensor/attic/porch_caption/config");
}

#[test]
fn captions_survive_a_broker_restart_up_to_the_queue_bound() {
    let dir = scratch("restart");
    let folder = dir.join("inbox");
    fs::create_dir(&folder).unwrap();
    drop_picture(&folder, "chelsea.png", "0.png");
    let mut broker = Broker::start(&dir, "");
    let topic = "test/capdec/porch/caption";
    let sub = Subscriber::connect(broker.port, "test-restart", &[topic], true);
    let text = config(
        broker.port,
        &[("porch", &folder)],
        "queue_limit = 3",
        "skip_if_similarity_above = 1.0",
    );
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    assert!(
        sub.next_on(topic).json()["source"]
            .as_str()
            .unwrap()
            .ends_with("0.png")
    );

    broker.stop();
    daemon.wait_for_log(&["lost the MQTT connection"]);
    // Four captions while the broker is away; the queue keeps three.
    for (index, picture) in ["coffee.png", "astronaut.png", "rocket.jpg", "camera.png"]
        .iter()
        .enumerate()
    {
        let name = format!("{}.png", index + 1);
        drop_picture(&folder, picture, &name);
        daemon.wait_for_log(&["caption queued", &name]);
    }
    daemon.wait_for_log(&["dropped the oldest caption", "dropped_total=1"]);
    broker.restart();

    let sources: Vec<String> = (0..3)
        .map(|_| {
            sub.next_on(topic).json()["source"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        sources,
        ["2.png", "3.png", "4.png"],
        "the oldest was dropped, the rest arrive in order"
    );
}

#[test]
fn bad_password_is_reported_and_retried() {
    let dir = scratch("password");
    let passwords = dir.join("passwords");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwords)
        .args(["capdec", "right"])
        .status();
    assert!(
        status.unwrap().success(),
        "mosquitto_passwd (Debian package `mosquitto`) failed"
    );
    let broker = Broker::start(
        &dir,
        &format!(
            "allow_anonymous false\npassword_file {}",
            passwords.display()
        ),
    );
    let mqtt = "username = \"capdec\"\npassword = \"wrong-password-123\"";
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &[("porch", &image("chelsea.png"))], mqtt, ""),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    let first = daemon.wait_for_log(&["the broker refused", "attempt=1"]);
    assert!(first.contains("check mqtt.username"), "{first}");
    assert!(
        first.contains(&format!("broker=127.0.0.1:{}", broker.port)),
        "{first}"
    );
    daemon.wait_for_log(&["the broker refused", "attempt=2"]);
    assert!(
        daemon
            .log()
            .iter()
            .all(|line| !line.contains("wrong-password-123")),
        "the password reached the log"
    );
}

#[test]
fn unreachable_broker_is_reported_retried_and_joined_when_it_appears() {
    let dir = scratch("unreachable");
    let port = free_port();
    fs::write(
        dir.join("capdec.toml"),
        config(port, &[("porch", &image("chelsea.png"))], "", ""),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    let first = daemon.wait_for_log(&["cannot reach the MQTT broker", "attempt=1"]);
    assert!(
        first.contains(&format!("broker=127.0.0.1:{port}")),
        "{first}"
    );
    daemon.wait_for_log(&["cannot reach the MQTT broker", "attempt=2"]);
    // A caption taken while unreachable waits in the queue.
    daemon.wait_for_log(&["caption queued: the MQTT broker is unreachable"]);

    let broker = Broker::start_on(&dir, port);
    daemon.wait_for_log(&["connected to the MQTT broker"]);
    let sub = Subscriber::connect(
        broker.port,
        "test-unreachable",
        &["test/capdec/porch/state"],
        false,
    );
    assert_eq!(sub.next_on("test/capdec/porch/state").payload, "ON");
}

#[test]
fn check_config_accepts_the_example_and_names_the_line_of_a_mistake() {
    let capdec = env!("CARGO_BIN_EXE_capdec");
    let output = Command::new(capdec)
        .args(["check-config"])
        .arg(repo("config/capdec.toml"))
        .env("CAPDEC_MQTT_PASSWORD", "example")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("camera porch: device /dev/video0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("camera driveway: http http://192.168.1.40/capture"),
        "{stdout}"
    );

    let dir = scratch("check-config");
    let bad = dir.join("bad.toml");
    let text = config(1883, &[("porch", &dir)], "", "")
        .replace("interval_s = 0.2", "interval_s = \"soon\"");
    let line = text
        .lines()
        .position(|l| l.starts_with("interval_s"))
        .unwrap()
        + 1;
    fs::write(&bad, text).unwrap();
    let output = Command::new(capdec)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "bad.toml:{line}: in [[camera]] key `interval_s`: invalid type"
        )),
        "{stderr}"
    );
}

#[test]
fn info_is_retained_and_stats_count_what_each_camera_did() {
    let dir = scratch("stats");
    let folder = dir.join("inbox");
    fs::create_dir(&folder).unwrap();
    drop_picture(&folder, "chelsea.png", "first.png");
    let broker = Broker::start(&dir, "");
    let missing = dir.join("missing.png");
    let cameras = [("porch", folder.as_path()), ("gone", missing.as_path())];
    fs::write(
        dir.join("capdec.toml"),
        config(broker.port, &cameras, "stats_interval_s = 0.3", ""),
    )
    .unwrap();
    let _daemon = Daemon::start(&dir.join("capdec.toml"));
    let sub = Subscriber::connect(broker.port, "test-stats", &["test/capdec/#"], false);

    sub.next_on("test/capdec/info");
    let late = Subscriber::connect(broker.port, "test-stats-info", &["test/capdec/info"], false);
    let info = late.next_on("test/capdec/info");
    assert!(
        info.retain,
        "info is retained, as zigbee2mqtt's bridge/info"
    );
    let info = info.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["model"]["name"], "fixture-tiny");
    assert_eq!(info["model"]["precision"], "fp32");
    assert_eq!(info["cameras"], serde_json::json!(["porch", "gone"]));
    assert!(info["api"].is_null(), "no [api] table: {info}");
    humantime::parse_rfc3339(info["started_at"].as_str().unwrap()).unwrap();

    sub.next_on("test/capdec/porch/caption");
    // The folder has no new picture: the camera takes none until one comes; the missing file fails each time.
    let stats = loop {
        let stats = sub.next_on("test/capdec/stats");
        assert!(!stats.retain);
        let stats = stats.json();
        if stats["cameras"]["gone"]["capture_failures"]
            .as_u64()
            .unwrap()
            >= 2
        {
            break stats;
        }
    };
    let porch = &stats["cameras"]["porch"];
    assert_eq!(porch["captions"], 1, "{stats}");
    assert_eq!(porch["latency_ms"]["count"], 1, "{stats}");
    assert!(
        porch["latency_ms"]["last_ms"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    assert_eq!(stats["cameras"]["gone"]["captions"], 0, "{stats}");
    assert_eq!(stats["api"]["answered"], 0);
    assert_eq!(stats["queues"]["captioner_waiting"], 0, "{stats}");
    assert_eq!(stats["queues"]["mqtt_waiting"], 0, "{stats}");
    assert!(stats["memory"]["rss_mb"].as_f64().unwrap() > 1.0, "{stats}");
    assert!(stats["uptime_s"].is_u64());
}
