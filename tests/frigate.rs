//! `[frigate]`: the daemon subscribed to Frigate's events on a real Mosquitto, fetching snapshots from and writing
//! descriptions to an HTTP server on loopback that answers as Frigate's API does. Frigate itself is not run: the
//! events are published here in Frigate's shapes (its tracked object's `to_dict()`, as `frigate/events` carries
//! it), and the server plays Frigate's `/api/events/<id>/snapshot.jpg` and `/api/events/<id>/description`.

mod mqtt;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch};

/// How the fake Frigate answers for one event.
#[derive(Clone)]
enum Answer {
    Snapshot(&'static str),
    Status(u16),
    Slow(Duration),
}

/// A request Frigate received: method, path with query, body.
type Received = (String, String, String);

struct FakeFrigate {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeFrigate {
    fn start(answers: HashMap<&'static str, Answer>) -> FakeFrigate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let answers = Arc::new(answers);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, answers) = (Arc::clone(&log), Arc::clone(&answers));
                thread::spawn(move || serve(stream, &log, &answers));
            }
        });
        FakeFrigate { port, received }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    log: &Mutex<Vec<Received>>,
    answers: &HashMap<&'static str, Answer>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut words = line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    log.lock().unwrap().push((
        method.clone(),
        target.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let id = target.split('/').nth(3).unwrap_or("");
    let reply = |status: u16, content_type: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut stream = &stream;
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    if method == "POST" && target.ends_with("/description") {
        return reply(200, "application/json", br#"{"success": true}"#);
    }
    match answers.get(id) {
        Some(Answer::Snapshot(picture)) => {
            let bytes = fs::read(repo("tests/data/images").join(picture)).unwrap();
            reply(200, "image/jpeg", &bytes);
        }
        Some(Answer::Status(status)) => {
            reply(*status, "application/json", br#"{"message": "boom"}"#)
        }
        Some(Answer::Slow(delay)) => {
            thread::sleep(*delay);
            reply(200, "image/jpeg", b"late");
        }
        None => reply(
            404,
            "application/json",
            br#"{"message": "Event not found"}"#,
        ),
    }
    let _ = stream.flush();
}

/// An event as Frigate publishes it on `frigate/events`: the tracked object's `to_dict()` before and after.
fn event(kind: &str, id: &str, camera: &str, label: &str, zones: &[&str]) -> String {
    let object = serde_json::json!({
        "id": id, "camera": camera, "frame_time": 1733500000.5, "snapshot": null, "label": label,
        "sub_label": null, "top_score": 0.84, "false_positive": false, "start_time": 1733500000.1,
        "end_time": if kind == "end" { serde_json::json!(1733500009.9) } else { serde_json::Value::Null },
        "score": 0.8, "box": [10, 20, 110, 220], "area": 20000, "ratio": 0.5, "region": [0, 0, 320, 320],
        "active": true, "stationary": false, "motionless_count": 0, "position_changes": 1,
        "current_zones": zones, "entered_zones": zones, "has_clip": true, "has_snapshot": true,
        "attributes": {}, "current_attributes": [], "pending_loitering": false, "max_severity": "alert",
    });
    serde_json::json!({"type": kind, "before": object, "after": object}).to_string()
}

const CAPTIONS: &str = "test/capdec/frigate/+/caption";

fn start(dir: &Path, frigate: &FakeFrigate, table: &str) -> (Broker, Subscriber, Daemon) {
    let broker = Broker::start(dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-frigate",
        &[CAPTIONS, "test/capdec/stats"],
        false,
    );
    let mut text = config(broker.port, &[], "stats_interval_s = 0.3", "");
    text.push_str(&format!(
        "\n[frigate]\nurl = \"{}\"\n{table}\n",
        frigate.url()
    ));
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    daemon.wait_for_log(&["captioning Frigate's events"]);
    daemon.wait_for_log(&["connected to the MQTT broker"]);
    // The daemon subscribes right after it connects; a message published before would be missed.
    thread::sleep(Duration::from_millis(300));
    (broker, sub, daemon)
}

#[test]
fn events_of_the_chosen_cameras_and_labels_are_captioned_once_and_described() {
    let dir = scratch("frigate-events");
    let frigate = FakeFrigate::start(HashMap::from([
        ("1733500000.1-aaa", Answer::Snapshot("chelsea.png")),
        ("1733500000.2-dog", Answer::Snapshot("coffee.png")),
        ("1733500000.3-gdn", Answer::Snapshot("coffee.png")),
    ]));
    let table = "cameras = [\"driveway\"]\nlabels = [\"person\"]\nphase = \"end\"\nwrite_description = true";
    let (_broker, sub, _daemon) = start(&dir, &frigate, table);
    let id = "1733500000.1-aaa";
    for message in [
        event("new", id, "driveway", "person", &[]),
        event("update", id, "driveway", "person", &["yard"]),
        event("new", "1733500000.2-dog", "driveway", "dog", &[]),
        event("end", "1733500000.2-dog", "driveway", "dog", &[]),
        event("end", "1733500000.3-gdn", "garden", "person", &[]),
        event("end", id, "driveway", "person", &["yard"]),
        event("end", id, "driveway", "person", &["yard"]),
    ] {
        sub.publish("frigate/events", &message);
    }
    let caption = sub.next_on("test/capdec/frigate/driveway/caption");
    assert!(!caption.retain);
    let record = caption.json();
    assert_eq!(record["event_id"], id);
    assert_eq!(record["camera"], "driveway");
    assert_eq!(record["label"], "person");
    assert_eq!(record["score"], 0.84);
    assert_eq!(record["zones"], serde_json::json!(["yard"]));
    assert_eq!(record["type"], "end");
    let said = mqtt::expected_caption(&repo("tests/data/images/chelsea.png"));
    assert_eq!(record["caption"], said.as_str());
    assert!(
        record["latency_ms"]["capture"].as_f64().unwrap() > 0.0,
        "{record}"
    );

    // One snapshot, cropped, then the description; nothing for the dog, the garden or the repeated end.
    let stats = loop {
        let stats = sub.next_on("test/capdec/stats").json();
        if stats["frigate"]["captioned"] == 1 && frigate.received().len() >= 2 {
            break stats;
        }
    };
    assert_eq!(stats["frigate"]["events"], 1, "{stats}");
    let received = frigate.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        (received[0].0.as_str(), received[0].1.as_str()),
        (
            "GET",
            "/api/events/1733500000.1-aaa/snapshot.jpg?bbox=0&timestamp=0&crop=1"
        )
    );
    assert_eq!(
        (received[1].0.as_str(), received[1].1.as_str()),
        ("POST", "/api/events/1733500000.1-aaa/description")
    );
    let body: serde_json::Value = serde_json::from_str(&received[1].2).unwrap();
    assert_eq!(body, serde_json::json!({"description": said}));
    assert!(
        sub.drain().iter().all(|m| m.topic == "test/capdec/stats"),
        "one caption only"
    );
}

#[test]
fn frigate_failing_or_slow_costs_the_event_and_the_next_one_is_captioned() {
    let dir = scratch("frigate-down");
    let frigate = FakeFrigate::start(HashMap::from([
        ("e-500", Answer::Status(500)),
        ("e-slow", Answer::Slow(Duration::from_secs(2))),
        ("e-good", Answer::Snapshot("astronaut.png")),
    ]));
    let (_broker, sub, mut daemon) = start(
        &dir,
        &frigate,
        "phase = \"new\"\nzones = [\"porch\"]\ntimeout_s = 0.5\nqueue_limit = 4",
    );
    sub.publish(
        "frigate/events",
        &event("new", "e-missing", "porch_cam", "person", &["porch"]),
    );
    sub.publish(
        "frigate/events",
        &event("new", "e-500", "porch_cam", "person", &["porch"]),
    );
    sub.publish(
        "frigate/events",
        &event("update", "e-slow", "porch_cam", "car", &["porch"]),
    );
    sub.publish(
        "frigate/events",
        &event("new", "e-good", "porch_cam", "person", &[]),
    );
    sub.publish(
        "frigate/events",
        &event("update", "e-good", "porch_cam", "person", &["porch"]),
    );
    sub.publish("frigate/events", &sub_label_garbage());

    daemon.wait_for_log(&[
        "cannot caption the Frigate event",
        "e-missing",
        "HTTP 404",
        "3 attempts",
    ]);
    daemon.wait_for_log(&["cannot caption the Frigate event", "e-500", "HTTP 500"]);
    daemon.wait_for_log(&[
        "cannot caption the Frigate event",
        "e-slow",
        "frigate.timeout_s",
    ]);
    daemon.wait_for_log(&[
        "ignoring a message on Frigate's events topic",
        "not a Frigate event",
    ]);
    let record = sub.next_on("test/capdec/frigate/porch_cam/caption").json();
    assert_eq!(record["event_id"], "e-good");
    assert_eq!(
        record["type"], "update",
        "phase new: the first message in the zone"
    );
    assert_eq!(
        record["caption"],
        mqtt::expected_caption(&repo("tests/data/images/astronaut.png"))
    );
    let stats = loop {
        let stats = sub.next_on("test/capdec/stats").json();
        if stats["frigate"]["captioned"] == 1 {
            break stats;
        }
    };
    assert_eq!(stats["frigate"]["failed"], 3, "{stats}");
    assert_eq!(stats["frigate"]["events"], 4, "{stats}");
    assert!(
        frigate
            .received()
            .iter()
            .all(|(method, _, _)| method == "GET"),
        "no description without write_description"
    );
}

fn sub_label_garbage() -> String {
    "{\"type\": \"end\", \"after\": {\"id\": 7}}".into()
}
