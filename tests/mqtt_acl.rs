//! Least privilege: the daemon under the example ACL (deploy/mosquitto-acl.conf) on a real Mosquitto with
//! passwords; everything it does is allowed, and a write outside the ACL with its login is refused.

mod mqtt;

use std::fs;
use std::path::Path;
use std::process::Command;

use mqtt::{Broker, Daemon, Subscriber, config, repo, scratch};

fn add_user(passwords: &Path, user: &str, password: &str) {
    let mut command = Command::new("mosquitto_passwd");
    if !passwords.exists() {
        command.arg("-c");
    }
    let status = command
        .arg("-b")
        .arg(passwords)
        .args([user, password])
        .status();
    assert!(
        status.unwrap().success(),
        "mosquitto_passwd (Debian package `mosquitto`) failed"
    );
}

/// A Mosquitto with passwords and `daemon_acl` for the user `capdec`, a watcher that reads everything, and the
/// daemon (base topic `capdec`) logged in as `capdec`.
fn under_acl(name: &str, daemon_acl: &str) -> (Broker, Subscriber, Daemon) {
    let dir = scratch(name);
    let passwords = dir.join("passwords");
    add_user(&passwords, "capdec", "daemon-pass");
    add_user(&passwords, "watcher", "watcher-pass");
    let acl = dir.join("acl");
    // A user for the test itself: Home Assistant's place, reading everything and sending commands.
    fs::write(
        &acl,
        format!("{daemon_acl}\nuser watcher\ntopic readwrite #\n"),
    )
    .unwrap();
    let broker = Broker::start(
        &dir,
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}",
            passwords.display(),
            acl.display()
        ),
    );
    let watcher = Subscriber::connect_as(
        broker.port,
        &format!("test-{name}"),
        &["capdec/#", "homeassistant/#"],
        false,
        Some(("watcher", "watcher-pass")),
    );
    let picture = repo("tests/data/images/chelsea.png");
    let text = config(
        broker.port,
        &[("porch", &picture)],
        "username = \"capdec\"\npassword = \"daemon-pass\"",
        "skip_if_similarity_above = 1.0",
    )
    .replace("base_topic = \"test/capdec\"", "base_topic = \"capdec\"");
    fs::write(dir.join("capdec.toml"), text).unwrap();
    let daemon = Daemon::start(&dir.join("capdec.toml"));
    (broker, watcher, daemon)
}

fn example_acl() -> String {
    fs::read_to_string(repo("deploy/mosquitto-acl.conf")).unwrap()
}

#[test]
fn the_example_acl_allows_the_daemon_and_nothing_more() {
    let (broker, watcher, mut daemon) = under_acl("acl", &example_acl());

    // Everything the daemon publishes gets through, and it hears commands and Home Assistant.
    watcher.wait_for("capdec/available", "online");
    watcher.next_on("homeassistant/sensor/capdec/porch_caption/config");
    watcher.wait_for("capdec/porch/state", "ON");
    watcher.next_on("capdec/porch/caption");
    watcher.next_on("capdec/porch/text");
    watcher.publish("capdec/porch/set", "capture");
    loop {
        if watcher.next_on("capdec/porch/caption").json()["trigger"] == "manual" {
            break;
        }
    }
    watcher.publish("homeassistant/status", "online");
    daemon.wait_for_log(&["Home Assistant is online"]);

    // The daemon's login may not command cameras nor write elsewhere; a write it may make marks the end.
    let intruder = Subscriber::connect_as(
        broker.port,
        "test-intruder",
        &["capdec/+/set"],
        false,
        Some(("capdec", "daemon-pass")),
    );
    intruder.publish("capdec/porch/set", "OFF");
    intruder.publish("elsewhere/secret", "leak");
    intruder.publish("capdec/marker/text", "end");
    loop {
        let message = watcher.next_on_any();
        assert!(
            message.topic != "elsewhere/secret" && message.payload != "OFF",
            "the ACL let through {message:?}"
        );
        if message.topic == "capdec/marker/text" {
            break;
        }
    }
    assert!(
        !daemon
            .log()
            .iter()
            .any(|line| line.contains("command received") && line.contains("Pause")),
        "the daemon obeyed a command the ACL forbids"
    );
}

#[test]
fn publishes_the_broker_refuses_do_not_stop_the_daemon() {
    // Captions forbidden: MQTT 3.1.1 has no way to say so, the broker drops them; the rest goes on.
    let acl = example_acl().replace("topic write capdec/+/caption\n", "");
    let (_broker, watcher, mut daemon) = under_acl("acl-refused", &acl);
    for _ in 0..5 {
        watcher.next_on("capdec/porch/text");
    }
    daemon.wait_for_log(&["caption published"]);
    assert!(
        !watcher
            .drain()
            .iter()
            .any(|m| m.topic == "capdec/porch/caption"),
        "the ACL let a caption through"
    );
    watcher.publish("capdec/porch/set", "OFF");
    watcher.wait_for("capdec/porch/state", "OFF");
}
