//! The daemon with the cameras people have, publishing to a real Mosquitto: an RTSP camera (GStreamer's RTSP
//! server) that goes away and comes back, and MJPEG streams and programs that go wrong in every way the sources
//! know, beside cameras that work. Each bad camera logs its reason and is retried with backoff; the others keep
//! publishing.

mod mjpeg;
mod mqtt;
mod rtsp;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch};

#[cfg(feature = "rtsp")]
#[test]
fn an_rtsp_camera_is_captioned_and_found_again_after_its_server_went_away() {
    let dir = scratch("rtsp-camera");
    let mut server = rtsp::Server::start(
        &rtsp::filming(&repo("examples/scene-two.png"), "tune=zerolatency"),
        Some(("viewer", "s3cret")),
    );
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(broker.port, "test-rtsp", &["test/capdec/+/caption"], false);
    let picture = repo("tests/data/images/chelsea.png");
    let mut text = config(
        broker.port,
        &[("porch", &picture)],
        "",
        "skip_if_similarity_above = 1.0",
    );
    fs::write(dir.join("garage-password"), "s3cret\n").unwrap();
    text.push_str(&format!(
        "\n[[camera]]\nname = \"garage\"\ninterval_s = 0.2\nmax_captions_per_minute = 1000\n\
         skip_if_similarity_above = 1.0\n[camera.rtsp]\nurl = \"{}\"\nusername = \"viewer\"\n\
         password = {{ file = \"garage-password\" }}\ntimeout_s = 2\n",
        server.url()
    ));
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    let caption = sub.next_on("test/capdec/garage/caption").json();
    assert_eq!(caption["source"], server.url());
    daemon.wait_for_log(&["camera=garage", "playing H.264"]);

    server.kill();
    let warning = daemon.wait_for_log(&["camera=garage", "cannot take a picture", "attempt=1"]);
    assert!(warning.contains(&server.url()), "{warning}");
    daemon.wait_for_log(&["camera=garage", "cannot take a picture", "attempt=2"]);
    // The other camera does not wait for this one.
    sub.drain();
    for _ in 0..5 {
        sub.next_on("test/capdec/porch/caption");
    }
    server.restart();
    daemon.wait_for_log(&["camera=garage", "camera works again"]);
    sub.drain();
    sub.next_on("test/capdec/garage/caption");
    assert!(
        !daemon.log().iter().any(|line| line.contains("s3cret")),
        "the password was logged"
    );
}

#[test]
fn broken_streams_and_programs_are_reported_and_retried_while_the_others_publish() {
    let dir = scratch("broken-sources");
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-broken",
        &["test/capdec/+/caption"],
        false,
    );
    let script = |name: &str, body: &str| {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let rocket = repo("tests/data/images/rocket.jpg");
    let still = script("still", &format!("cat {}", rocket.display()));
    let hangs = script("hangs", "sleep 300");
    let silent = script("silent", "exit 0");
    let failing = script("failing", "echo 'ERROR: no cameras available' >&2\nexit 1");

    let mut text = config(
        broker.port,
        &[("porch", &repo("tests/data/images/chelsea.png"))],
        "",
        "skip_if_similarity_above = 1.0",
    );
    let mut camera = |name: &str, table: &str, keys: &str| {
        text.push_str(&format!(
            "\n[[camera]]\nname = \"{name}\"\ninterval_s = 0.2\nmax_captions_per_minute = 1000\n\
             skip_if_similarity_above = 1.0\n[camera.{table}]\n{keys}\ntimeout_s = 1\n"
        ));
    };
    let stream = |writer| format!("url = \"{}\"", mjpeg::serve(mjpeg::MULTIPART, None, writer));
    camera("esp32", "mjpeg", &stream(mjpeg::good_camera));
    camera("noisy", "mjpeg", &stream(mjpeg::noisy));
    camera("stalling", "mjpeg", &stream(mjpeg::stalls));
    camera(
        "huge",
        "mjpeg",
        &format!("{}\nmax_picture_mb = 0.2", stream(mjpeg::only_big)),
    );
    camera("unbounded", "mjpeg", &stream(mjpeg::raw));
    let argv = |path: &Path| format!("argv = [\"{}\", \"-o\", \"-\"]", path.display());
    camera("picam", "command", &argv(&still));
    camera("hanging", "command", &argv(&hangs));
    camera("silent", "command", &argv(&silent));
    camera("failing", "command", &argv(&failing));
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));

    let reasons = [
        ("stalling", "nothing received for 1 s: the stream stalled"),
        (
            "huge",
            "skipped a frame of 0.4 MB, over the limit of 0.2 MB (max_picture_mb)",
        ),
        ("huge", "no frame within 1 s under the size limit: 2"),
        ("unbounded", "no part boundary `--frame`"),
        (
            "hanging",
            "no picture within 1 s (command.timeout_s): stopped it",
        ),
        ("silent", "printed nothing on its standard output"),
        (
            "failing",
            "exited with status 1; it said: ERROR: no cameras available",
        ),
    ];
    for (camera, reason) in reasons {
        daemon.wait_for_log(&[&format!("camera={camera}"), reason]);
    }
    daemon.wait_for_log(&["camera=noisy", "belonged to no frame and were passed over"]);
    // Retried with backoff: a second attempt, after a second. The stalling stream sends its one frame again
    // each time it is opened, and stalls again.
    daemon.wait_for_log(&["camera=stalling", "camera works again"]);
    daemon.wait_for_log(&["camera=stalling", "the stream stalled"]);
    for camera in ["huge", "unbounded", "hanging", "silent", "failing"] {
        daemon.wait_for_log(&[
            &format!("camera={camera}"),
            "cannot take a picture",
            "attempt=2",
            "retry_in_s=2",
        ]);
    }
    // Meanwhile, every working camera publishes, again and again.
    sub.drain();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    while ["porch", "esp32", "noisy", "picam"]
        .iter()
        .any(|name| seen.get(*name).copied().unwrap_or(0) < 3)
    {
        let caption = sub.next_on_any().json();
        let camera = caption["camera"].as_str().unwrap().to_string();
        // The stalling stream's one frame a connection is a picture too.
        assert!(
            ["porch", "esp32", "noisy", "picam", "stalling"].contains(&camera.as_str()),
            "a broken camera published: {caption}"
        );
        *seen.entry(camera).or_default() += 1;
    }
    assert!(
        daemon.log().iter().all(|line| !line.contains("panicked")),
        "a camera thread panicked"
    );
}
