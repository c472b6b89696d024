//! What Home Assistant gets from the daemon over a real Mosquitto: every discovery message validated by Home
//! Assistant's own MQTT schemas (the `homeassistant` package from PyPI, through `scripts/ha-python`), the
//! captioned picture for the image entity (a small JPEG, retained), the event entity's events, and the caption
//! sensor's text retained so that a restarted Home Assistant shows it.

mod mqtt;

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch};

#[test]
fn every_discovery_message_passes_home_assistants_schemas() {
    let dir = scratch("ha-schemas");
    let broker = Broker::start(&dir, "");
    let porch = repo("tests/data/images/chelsea.png");
    let yard = repo("tests/data/images/coffee.png");
    let text = config(broker.port, &[("porch", &porch), ("yard", &yard)], "", "")
        + "\n[home_assistant]\nnode_id = \"attic\"\nexpire_after_s = 600\n";
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let _daemon = Daemon::start(&dir.join("capdec.toml"));
    let sub = Subscriber::connect(broker.port, "test-ha-schemas", &["homeassistant/#"], false);

    // Per camera: caption, latency, capture, captioning, new caption, picture; for the device: model, version.
    let expected = 2 * 6 + 2;
    let mut configs = BTreeMap::new();
    while configs.len() < expected {
        let message = sub.next_on_any();
        configs.insert(message.topic, message.payload);
    }
    for topic in [
        "homeassistant/image/attic/porch_picture/config",
        "homeassistant/event/attic/yard_new_caption/config",
        "homeassistant/sensor/attic/porch_caption_latency/config",
        "homeassistant/sensor/attic/model/config",
        "homeassistant/sensor/attic/version/config",
    ] {
        assert!(
            configs.contains_key(topic),
            "no {topic}: {:?}",
            configs.keys()
        );
    }
    let sensor: serde_json::Value =
        serde_json::from_str(&configs["homeassistant/sensor/attic/porch_caption/config"]).unwrap();
    assert_eq!(sensor["expire_after"], 600);

    let messages: Vec<serde_json::Value> = configs
        .iter()
        .map(|(topic, payload)| serde_json::json!({"topic": topic, "payload": payload}))
        .collect();
    let file = dir.join("discovery.json");
    fs::write(&file, serde_json::to_string(&messages).unwrap()).unwrap();
    let out = Command::new(repo("scripts/ha-python"))
        .args(["-m", "capdec_toolkit.parity.ha_discovery"])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Home Assistant refuses: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        report["checked"].as_array().unwrap().len(),
        expected,
        "{report}"
    );
    let platforms: std::collections::BTreeSet<&str> = report["checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["platform"].as_str().unwrap())
        .collect();
    assert_eq!(
        platforms.into_iter().collect::<Vec<_>>(),
        ["button", "event", "image", "sensor", "switch"]
    );
}

#[test]
fn the_picture_the_event_and_the_text_reach_home_assistant() {
    let dir = scratch("ha-entities");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-ha-entities", &["test/capdec/#"], false);
    let picture = repo("tests/data/images/astronaut.png");
    let text = config(broker.port, &[("porch", &picture)], "", "")
        + "\n[home_assistant]\npicture_size = 320\npicture_max_kb = 20\n";
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let _daemon = Daemon::start(&dir.join("capdec.toml"));

    let record = sub.next_on("test/capdec/porch/caption").json();
    let event = sub.next_on("test/capdec/porch/event");
    assert!(
        !event.retain,
        "an event is not replayed to later subscribers"
    );
    let event = event.json();
    assert_eq!(event["event_type"], "caption");
    assert_eq!(event["caption"], record["caption"]);
    assert_eq!(event["trigger"], "interval");
    assert_eq!(event["score"], record["score"]);

    // A restarted Home Assistant subscribes anew and finds the text and the picture retained.
    let late = Subscriber::connect(
        broker.port,
        "test-ha-late",
        &["test/capdec/porch/text", "test/capdec/porch/picture"],
        false,
    );
    let retained = late.next_on("test/capdec/porch/text");
    assert!(retained.retain);
    assert_eq!(retained.payload, record["caption"].as_str().unwrap());
    let picture = late.next_on("test/capdec/porch/picture");
    assert!(picture.retain);
    let jpeg = picture.bytes;
    assert!(jpeg.len() <= 20_000, "{} bytes", jpeg.len());
    let shown = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("the picture is a JPEG")
        .to_rgb8();
    assert_eq!(shown.dimensions(), (320, 320), "astronaut.png is 512x512");
}
