//! The daemon's HTTP API (`[api]`) against the real clients of its callers and against raw HTTP: the `ollama`
//! and `openai` packages from PyPI (through `scripts/toolkit api-clients`) get the very caption `capdec caption`
//! gives the same picture, whole and streamed; bad requests get their status codes; a file camera keeps
//! publishing over MQTT all the while.

mod mqtt;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;

use base64::Engine;
use mqtt::{Broker, Daemon, Subscriber, config, free_port, repo, scratch};

const PICTURE: &str = "tests/data/images/chelsea.png";
const TOKEN: &str = "s3cret-token";

/// A daemon with a file camera `porch` captioning all the time and the API on a free port.
fn start(dir: &Path, api: &str) -> (Broker, Subscriber, Daemon, u16) {
    let folder = dir.join("porch.png");
    std::fs::copy(repo("tests/data/images/coffee.png"), &folder).unwrap();
    let broker = Broker::start(dir, "");
    let sub = Subscriber::connect(broker.port, "test-api", &["test/capdec/#"], false);
    let port = free_port();
    let mut text = config(
        broker.port,
        &[("porch", &folder)],
        "stats_interval_s = 0.5",
        "skip_if_similarity_above = 1.0",
    );
    text.push_str(&format!("\n[api]\nport = {port}\n{api}\n"));
    std::fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    daemon.wait_for_log(&["API listening", &format!("127.0.0.1:{port}")]);
    (broker, sub, daemon, port)
}

/// The camera publishes `count` more captions.
fn camera_keeps_publishing(sub: &Subscriber, count: usize) {
    sub.drain();
    for _ in 0..count {
        let record = sub.next_on("test/capdec/porch/caption").json();
        assert_eq!(record["camera"], "porch");
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` as written and reads the answer until the server closes.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Answer {
    stream.write_all(request).unwrap();
    read_answer(stream)
}

fn read_answer(stream: &mut TcpStream) -> Answer {
    stream.set_read_timeout(Some(mqtt::PATIENCE)).unwrap();
    // A server that refuses before reading everything may reset the connection after its answer: what
    // arrived before the reset is the answer.
    let mut bytes = Vec::new();
    let mut buffer = [0; 8192];
    while let Ok(read @ 1..) = stream.read(&mut buffer) {
        bytes.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// One request on its own connection, closed after the answer.
fn call(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    exchange(&mut stream, request.as_bytes())
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn generate_body(picture: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(picture);
    serde_json::json!({"model": "capdec", "prompt": "What is it?", "images": [encoded], "stream": false})
        .to_string()
}

#[test]
fn ollama_and_openai_clients_get_the_caption() {
    let dir = scratch("api-clients");
    let (_broker, sub, _daemon, port) = start(&dir, &format!("bearer_token = \"{TOKEN}\""));
    let caption = mqtt::expected_caption(&repo(PICTURE));
    let out = Command::new(repo("scripts/toolkit"))
        .args(["api-clients", "--url", &format!("http://127.0.0.1:{port}")])
        .args([
            "--image",
            &repo(PICTURE).display().to_string(),
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the clients failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ollama = &said["ollama"];
    let openai = &said["openai"];
    for (client, call) in [
        (ollama, "generate"),
        (ollama, "generate_stream"),
        (ollama, "chat"),
        (ollama, "chat_stream"),
        (openai, "chat"),
        (openai, "chat_stream"),
    ] {
        assert_eq!(client[call], caption.as_str(), "{call}: {said}");
    }
    assert_eq!(ollama["models"], serde_json::json!(["capdec:latest"]));
    assert!(
        ollama["capabilities"]
            .as_array()
            .unwrap()
            .contains(&"vision".into())
    );
    assert_eq!(ollama["pull"], "success");
    assert_eq!(ollama["not_a_picture"]["status"], 400, "{said}");
    assert!(
        ollama["not_a_picture"]["error"]
            .as_str()
            .unwrap()
            .contains("images[0]: not a recognised image format"),
        "{said}"
    );
    assert_eq!(ollama["no_picture"]["status"], 400, "{said}");
    assert_eq!(openai["finish_reason"], "stop");
    assert!(openai["completion_tokens"].as_u64().unwrap() >= 1, "{said}");
    assert_eq!(openai["models"], serde_json::json!(["capdec"]));
    assert_eq!(openai["not_a_picture"]["status"], 400, "{said}");
    assert_eq!(openai["wrong_token"]["status"], 401, "{said}");
    camera_keeps_publishing(&sub, 2);
}

#[test]
fn bad_requests_get_their_status_and_the_cameras_go_on() {
    let dir = scratch("api-bad");
    let api =
        format!("bearer_token = \"{TOKEN}\"\nmax_body_mb = 0.5\nqueue_limit = 1\ntimeout_s = 3");
    let (_broker, sub, mut daemon, port) = start(&dir, &api);
    let picture = std::fs::read(repo(PICTURE)).unwrap();
    let auth = bearer();

    let root = call(port, "GET", "/", "", "");
    assert_eq!(
        (root.status, root.body.as_str()),
        (200, "capdec is running")
    );
    let missing = call(port, "GET", "/api/tags", "", "");
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert!(
        missing.head.contains("www-authenticate: Bearer"),
        "{}",
        missing.head
    );
    assert_eq!(
        call(
            port,
            "GET",
            "/api/tags",
            "Authorization: Bearer nope\r\n",
            ""
        )
        .status,
        401
    );
    let tags = call(port, "GET", "/api/tags", &auth, "").json();
    assert_eq!(tags["models"][0]["details"]["quantization_level"], "fp32");
    let version = call(port, "GET", "/api/version", &auth, "").json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(call(port, "GET", "/api/nothing", &auth, "").status, 404);
    assert_eq!(call(port, "GET", "/api/generate", &auth, "").status, 405);
    let models = call(port, "GET", "/v1/models", &auth, "").json();
    assert_eq!(models["data"][0]["id"], "capdec");

    let good = call(
        port,
        "POST",
        "/api/generate",
        &auth,
        &generate_body(&picture),
    );
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(
        good.json()["response"],
        mqtt::expected_caption(&repo(PICTURE))
    );

    let not_json = call(port, "POST", "/api/generate", &auth, "{\"model\": ");
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["error"]
            .as_str()
            .unwrap()
            .contains("not what was expected")
    );
    let mut cut = picture.clone();
    cut.truncate(picture.len() / 2);
    let truncated = call(port, "POST", "/api/generate", &auth, &generate_body(&cut));
    assert_eq!(truncated.status, 400, "{}", truncated.body);
    assert!(
        truncated.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("images[0]"),
        "{}",
        truncated.body
    );
    let remote = serde_json::json!({"model": "capdec", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://192.0.2.1/cat.jpg"}}]}]});
    let refused = call(
        port,
        "POST",
        "/v1/chat/completions",
        &auth,
        &remote.to_string(),
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only data: URLs"),
        "{}",
        refused.body
    );

    // Over max_body_mb: refused from the declared length, before the body is read...
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head =
        format!("POST /api/generate HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 600000\r\n\r\n");
    let large = exchange(&mut stream, head.as_bytes());
    assert_eq!(large.status, 413, "{}", large.body);
    assert!(
        large.json()["error"]
            .as_str()
            .unwrap()
            .contains("api.max_body_mb")
    );
    // ... and, without a declared length, once it has grown past the limit.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 100_000, "a".repeat(100_000));
    for _ in 0..6 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    assert_eq!(read_answer(&mut stream).status, 413);

    // A client that sends half its body holds the only place (queue_limit = 1): the next request is told to
    // come back, and the slow one is answered 408 after timeout_s.
    daemon.forget_log();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000\r\n\r\n{{\"model\""
    );
    slow.write_all(head.as_bytes()).unwrap();
    daemon.wait_for_log(&["request taken, reading its body"]);
    let busy = call(
        port,
        "POST",
        "/api/generate",
        &auth,
        &generate_body(&picture),
    );
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(
        busy.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        busy.head
    );
    let timed_out = read_answer(&mut slow);
    assert_eq!(timed_out.status, 408, "{}", timed_out.body);
    let again = call(
        port,
        "POST",
        "/api/generate",
        &auth,
        &generate_body(&picture),
    );
    assert_eq!(again.status, 200, "the place is free again: {}", again.body);

    camera_keeps_publishing(&sub, 2);
}

#[test]
fn concurrent_clients_each_get_their_caption() {
    let dir = scratch("api-concurrent");
    let (broker, sub, _daemon, port) = start(&dir, "queue_limit = 8");
    let pictures = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"];
    let callers: Vec<_> = pictures
        .iter()
        .map(|name| {
            let path = repo("tests/data/images").join(name);
            thread::spawn(move || {
                let picture = std::fs::read(&path).unwrap();
                let chat = serde_json::json!({"model": "any-name", "stream": true, "messages": [
                    {"role": "user", "content": "what is this?", "images": [
                        base64::engine::general_purpose::STANDARD.encode(&picture)]}]});
                let answer = call(port, "POST", "/api/chat", "", &chat.to_string());
                assert_eq!(answer.status, 200, "{}", answer.body);
                assert!(
                    answer.head.contains("application/x-ndjson"),
                    "{}",
                    answer.head
                );
                (path, answer.body)
            })
        })
        .collect();
    for caller in callers {
        let (path, body) = caller.join().unwrap();
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{body}");
        assert_eq!(lines[0]["model"], "any-name");
        assert_eq!(lines[0]["done"], false);
        assert_eq!(
            lines[0]["message"]["content"],
            mqtt::expected_caption(&path),
            "{}",
            path.display()
        );
        assert_eq!(lines[1]["done"], true);
        assert_eq!(lines[1]["done_reason"], "stop");
        assert!(lines[1]["eval_count"].as_u64().unwrap() >= 1);
    }
    camera_keeps_publishing(&sub, 1);

    // `<base>/info` says where the API is; `<base>/stats` counts its answers beside the camera's captions.
    let late = Subscriber::connect(broker.port, "test-api-info", &["test/capdec/info"], false);
    let info = late.next_on("test/capdec/info");
    assert!(info.retain);
    assert_eq!(info.json()["api"], format!("http://127.0.0.1:{port}"));
    loop {
        let stats = sub.next_on("test/capdec/stats").json();
        if stats["api"]["answered"] == 4 {
            assert!(
                stats["cameras"]["porch"]["captions"].as_u64().unwrap() >= 1,
                "{stats}"
            );
            assert!(
                stats["api"]["latency_ms"]["max_ms"].as_f64().unwrap() > 0.0,
                "{stats}"
            );
            break;
        }
    }
}

#[test]
fn a_caption_later_than_timeout_s_is_a_gateway_timeout() {
    let dir = scratch("api-timeout");
    let (_broker, sub, _daemon, port) = start(&dir, "timeout_s = 0.25");
    // Decoding 81 megapixels takes longer than the request may: its caption cannot come in time.
    let mut png = Vec::new();
    image::RgbImage::from_pixel(9000, 9000, image::Rgb([90, 160, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let late = call(port, "POST", "/api/generate", "", &generate_body(&png));
    assert_eq!(late.status, 504, "{}", late.body);
    assert!(
        late.json()["error"]
            .as_str()
            .unwrap()
            .contains("no caption within 0.25 s"),
        "{}",
        late.body
    );
    loop {
        let stats = sub.next_on("test/capdec/stats").json();
        if stats["api"]["timed_out"] == 1 {
            assert_eq!(stats["api"]["answered"], 0, "{stats}");
            break;
        }
    }
    camera_keeps_publishing(&sub, 1);
}
