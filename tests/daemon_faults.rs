//! Faults that must not stop the daemon, against a real Mosquitto: a camera that hangs, pictures broken while
//! they are read, the model's folder taken away while it runs.

mod mqtt;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::thread;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch};

#[test]
fn a_hanging_camera_never_delays_another() {
    let dir = scratch("hanging-camera");
    // Accepts connections and never answers them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/snapshot.jpg", listener.local_addr().unwrap());
    thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request);
            held.push(stream);
        }
    });
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-hanging",
        &["test/capdec/+/caption"],
        false,
    );
    let picture = repo("tests/data/images/chelsea.png");
    let mut text = config(
        broker.port,
        &[("porch", &picture)],
        "",
        "skip_if_similarity_above = 1.0",
    );
    text.push_str(&format!(
        "\n[[camera]]\nname = \"gate\"\ninterval_s = 0.2\n[camera.http]\nurl = \"{url}\"\ntimeout_s = 20\n"
    ));
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    // Ten captions of the good camera while the other waits for its answer.
    for _ in 0..10 {
        assert_eq!(
            sub.next_on("test/capdec/porch/caption").json()["camera"],
            "porch"
        );
    }
    assert!(
        !daemon
            .log()
            .iter()
            .any(|line| line.contains("camera=gate") && line.contains("cannot take a picture")),
        "the hanging camera gave up before ten captions of the other: the test proves nothing"
    );
    daemon.wait_for_log(&["camera=gate", "no complete answer within 20 s"]);
    sub.next_on("test/capdec/porch/caption");
}

#[test]
fn a_picture_truncated_while_it_is_read_is_reported_and_the_camera_goes_on() {
    let dir = scratch("truncated-picture");
    let picture = dir.join("snapshot.png");
    let good = fs::read(repo("tests/data/images/chelsea.png")).unwrap();
    fs::write(&picture, &good).unwrap();
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-truncated",
        &["test/capdec/porch/caption"],
        false,
    );
    fs::write(
        dir.join("capdec.toml"),
        config(
            broker.port,
            &[("porch", &picture)],
            "",
            "skip_if_similarity_above = 1.0",
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.join("capdec.toml"));
    sub.next_on("test/capdec/porch/caption");
    // Rewritten in place, as a camera's upload without a rename does: the reader can meet half a file.
    fs::write(&picture, &good[..good.len() / 3]).unwrap();
    let warning = daemon.wait_for_log(&["cannot take a picture", "camera=porch"]);
    assert!(warning.contains("snapshot.png"), "{warning}");
    fs::write(&picture, &good).unwrap();
    daemon.forget_log();
    daemon.wait_for_log(&["caption published", "camera=porch"]);
}

#[test]
fn the_model_folder_taken_away_leaves_the_running_model_serving() {
    let dir = scratch("bundle-gone");
    let bundle = dir.join("bundle");
    fs::create_dir(&bundle).unwrap();
    for entry in fs::read_dir(repo("models/fixture-tiny")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
    }
    let broker = Broker::start(&dir, "");
    let sub = Subscriber::connect(
        broker.port,
        "test-bundle-gone",
        &["test/capdec/porch/caption"],
        false,
    );
    let picture = repo("tests/data/images/chelsea.png");
    let text = config(
        broker.port,
        &[("porch", &picture)],
        "",
        "skip_if_similarity_above = 1.0",
    )
    .replace(
        &repo("models/fixture-tiny").display().to_string(),
        &bundle.display().to_string(),
    );
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let _daemon = Daemon::start(&dir.join("capdec.toml"));
    let before = sub.next_on("test/capdec/porch/caption").json();

    fs::rename(&bundle, dir.join("bundle-moved")).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_capdec"))
        .arg("check-config")
        .arg(dir.join("capdec.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success(),
        "check-config passed without the bundle"
    );
    assert!(stderr.contains(&bundle.display().to_string()), "{stderr}");
    for _ in 0..3 {
        let after = sub.next_on("test/capdec/porch/caption").json();
        assert_eq!(
            after["caption"], before["caption"],
            "the same model, still loaded"
        );
    }
}
