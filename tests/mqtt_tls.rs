//! The daemon over TLS to a real Mosquitto with a TLS listener, certificates made at test time: server
//! verification, client-certificate authentication, and each way it can be refused, named with its file.

mod certs;
mod mqtt;

use std::fs;
use std::path::Path;

use certs::{Authority, Issued, Validity};
use mqtt::{Broker, Daemon, Subscriber, config, free_port, repo, scratch};

/// A broker with a plain listener (for the test's subscriber) and a TLS one that wants a client certificate
/// signed by `client_ca`; returns it with the TLS port.
fn tls_broker(dir: &Path, server: &Issued, client_ca: &Path) -> (Broker, u16) {
    let tls_port = free_port();
    let extra = format!(
        "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\n",
        client_ca.display(),
        server.cert.display(),
        server.key.display()
    );
    (Broker::start(dir, &extra), tls_port)
}

fn tls_table(ca_file: &Path, client: Option<&Issued>) -> String {
    let mut table = format!("[mqtt.tls]\nca_file = \"{}\"\n", ca_file.display());
    if let Some(client) = client {
        table.push_str(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            client.cert.display(),
            client.key.display()
        ));
    }
    table
}

fn start_daemon(dir: &Path, tls_port: u16, tls: &str) -> Daemon {
    let picture = repo("tests/data/images/chelsea.png");
    fs::write(
        dir.join("capdec.toml"),
        config(tls_port, &[("porch", &picture)], tls, ""),
    )
    .unwrap();
    Daemon::start(&dir.join("capdec.toml"))
}

#[test]
fn captions_go_over_tls_with_a_client_certificate() {
    let dir = scratch("tls-good");
    let ca = Authority::new(&dir, "site");
    let server = ca.server(
        &dir,
        "broker",
        &["127.0.0.1", "localhost"],
        Validity::Current,
    );
    let client = ca.client(&dir, "capdec", Validity::Current);
    let (broker, tls_port) = tls_broker(&dir, &server, &ca.ca_file);
    let sub = Subscriber::connect(broker.port, "test-tls", &["test/capdec/#"], false);
    let mut daemon = start_daemon(&dir, tls_port, &tls_table(&ca.ca_file, Some(&client)));
    sub.wait_for("test/capdec/available", "online");
    let record = sub.next_on("test/capdec/porch/caption").json();
    assert_eq!(record["camera"], "porch");
    daemon.wait_for_log(&[
        "connected to the MQTT broker",
        &format!("127.0.0.1:{tls_port}"),
    ]);
    assert!(
        !daemon.log().iter().any(|line| line.contains("TLS")),
        "{:#?}",
        daemon.log()
    );
}

/// The daemon's warning when the broker (serving `server`) and the daemon (trusting `trusted`, presenting
/// `client`) cannot agree.
fn refusal(
    name: &str,
    server: impl FnOnce(&Path, &Authority) -> Issued,
    wrong_ca: bool,
    client: Option<Validity>,
) -> (String, String) {
    let dir = scratch(name);
    let ca = Authority::new(&dir, "site");
    let server = server(&dir, &ca);
    let trusted = if wrong_ca {
        Authority::new(&dir, "other").ca_file
    } else {
        ca.ca_file.clone()
    };
    let client = client.map(|validity| ca.client(&dir, "capdec", validity));
    let (_broker, tls_port) = tls_broker(&dir, &server, &ca.ca_file);
    let mut daemon = start_daemon(&dir, tls_port, &tls_table(&trusted, client.as_ref()));
    let line = daemon.wait_for_log(&["level=warn", "TLS"]);
    (line, dir.display().to_string())
}

fn valid_server(dir: &Path, ca: &Authority) -> Issued {
    ca.server(dir, "broker", &["127.0.0.1"], Validity::Current)
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused() {
    let (line, dir) = refusal("tls-wrong-ca", valid_server, true, Some(Validity::Current));
    assert!(
        line.contains(&format!(
            "the MQTT broker's certificate is not signed by any CA in mqtt.tls.ca_file {dir}/other-ca.pem"
        )),
        "{line}"
    );
}

#[test]
fn an_expired_broker_certificate_is_refused() {
    let expired =
        |dir: &Path, ca: &Authority| ca.server(dir, "broker", &["127.0.0.1"], Validity::Expired);
    let (line, dir) = refusal("tls-expired", expired, false, Some(Validity::Current));
    assert!(
        line.contains("the MQTT broker's certificate expired at 2021-01-01T00:00:00Z")
            && line.contains(&format!(
                "checked against mqtt.tls.ca_file {dir}/site-ca.pem"
            )),
        "{line}"
    );
}

#[test]
fn a_broker_certificate_for_another_host_is_refused() {
    let elsewhere = |dir: &Path, ca: &Authority| {
        ca.server(dir, "broker", &["broker.example"], Validity::Current)
    };
    let (line, _) = refusal("tls-wrong-host", elsewhere, false, Some(Validity::Current));
    assert!(
        line.contains("is not valid for the host name `127.0.0.1` (mqtt.host)")
            && line.contains("it is for broker.example ("),
        "{line}"
    );
}

#[test]
fn an_expired_client_certificate_is_refused_by_the_broker() {
    let (line, dir) = refusal(
        "tls-client-expired",
        valid_server,
        false,
        Some(Validity::Expired),
    );
    assert!(
        line.contains(&format!(
            "the MQTT broker refused the client certificate mqtt.tls.client_cert {dir}/capdec.pem: it has expired"
        )),
        "{line}"
    );
}

#[test]
fn a_broker_that_wants_a_client_certificate_says_so() {
    let (line, _) = refusal("tls-no-client", valid_server, false, None);
    assert!(
        line.contains(
            "the MQTT broker requires a client certificate: set mqtt.tls.client_cert and mqtt.tls.client_key"
        ),
        "{line}"
    );
}
