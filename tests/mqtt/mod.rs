//! What the daemon's integration tests share: a real Mosquitto on a free loopback port, an MQTT subscriber
//! (rumqttc), and the `capdec run` process with its log lines.
//!
//! Waits are bounded so that a broken daemon fails the test instead of hanging it; the bounds are generous and
//! nothing asserts on durations.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

/// Upper bound on any wait: far beyond what a healthy run needs.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A scratch folder under the target dir, fresh for each test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("daemon-{name}"));
    // Left over from an earlier run, or absent: either way it is recreated empty.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A loopback port nobody listens on and no other test of this process was given. The tests run in parallel
/// and some leave their port unbound on purpose for a while (a broker stopped, a broker not started yet); the
/// OS could hand that port to another test, whose broker would then take the first test's connections.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// A broker on a free loopback port; `extra` is appended to its configuration (e.g. a password file).
    /// Persistence is on, so that a restart keeps the subscriber's session, as a real deployment does.
    pub fn start(dir: &Path, extra: &str) -> Broker {
        Broker::configure(dir, free_port(), extra)
    }

    /// An anonymous broker on a given port.
    pub fn start_on(dir: &Path, port: u16) -> Broker {
        Broker::configure(dir, port, "")
    }

    fn configure(dir: &Path, port: u16, extra: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nlog_dest file {}\n{}\n",
                dir.display(),
                dir.join("mosquitto.log").display(),
                if extra.is_empty() { "allow_anonymous true" } else { extra }
            ),
        )
        .unwrap();
        let mut broker = Broker {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (Debian package `mosquitto`)");
        self.child = Some(child);
        let port = self.port;
        wait_until("mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops the broker as its service manager would (SIGTERM, so that it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            child.wait().unwrap();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is read or acknowledged.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "STOP");
        }
    }

    /// Kills the broker outright (SIGKILL): no goodbye to its clients, nothing saved but what it had saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The test is over (or failed): the broker only has to go.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `TERM`, `KILL` or `STOP` to a child process (by a system call: a minimal system may have no `kill` program).
pub fn signal(pid: u32, name: &str) {
    let number = match name {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "STOP" => libc::SIGSTOP,
        _ => panic!("no signal SIG{name} in the tests"),
    };
    let pid = libc::pid_t::try_from(pid).expect("a process id");
    // SAFETY: kill(2) takes plain integers.
    let sent = unsafe { libc::kill(pid, number) };
    assert_eq!(
        sent,
        0,
        "kill -{name} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    /// The payload as sent, for those that are not text (a picture).
    pub bytes: Vec<u8>,
    pub retain: bool,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// A test client that subscribes to `topics` and collects what arrives.
pub struct Subscriber {
    messages: Receiver<Received>,
    pub client: Client,
}

impl Subscriber {
    /// `persistent`: a session the broker keeps (clean session off), so QoS 1 messages published while this
    /// client is away are kept for it.
    pub fn connect(port: u16, id: &str, topics: &[&str], persistent: bool) -> Subscriber {
        Subscriber::connect_as(port, id, topics, persistent, None)
    }

    /// `connect`, logged in with `(username, password)`.
    pub fn connect_as(
        port: u16,
        id: &str,
        topics: &[&str],
        persistent: bool,
        login: Option<(&str, &str)>,
    ) -> Subscriber {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((username, password)) = login {
            options.set_credentials(username, password);
        }
        options.set_clean_session(!persistent);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 100);
        let (tx, messages) = mpsc::channel();
        let (connected_tx, connected) = mpsc::channel();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let subscriber = client.clone();
        thread::spawn(move || {
            loop {
                match connection.recv() {
                    Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                        for topic in &topics {
                            subscriber.subscribe(topic, QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(Ok(Event::Incoming(Incoming::SubAck(_)))) => {
                        let _ = connected_tx.send(());
                    }
                    Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                        let received = Received {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            bytes: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(received).is_err() {
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    // The broker is away (a restart test): try again shortly.
                    Ok(Err(_)) => thread::sleep(Duration::from_millis(100)),
                    Err(_) => return,
                }
            }
        });
        connected
            .recv_timeout(PATIENCE)
            .expect("the test subscriber could not subscribe");
        Subscriber { messages, client }
    }

    /// The next message on `topic`, skipping others.
    pub fn next_on(&self, topic: &str) -> Received {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) if message.topic == topic => return message,
                Ok(_) => {}
                Err(_) => panic!("nothing arrived on {topic}"),
            }
        }
    }

    /// The next message, on any topic.
    pub fn next_on_any(&self) -> Received {
        self.messages
            .recv_timeout(PATIENCE)
            .expect("no message arrived")
    }

    /// The next message on `topic` whose payload is `payload`.
    pub fn wait_for(&self, topic: &str, payload: &str) -> Received {
        loop {
            let message = self.next_on(topic);
            if message.payload == payload {
                return message;
            }
        }
    }

    /// Everything received so far, without waiting.
    pub fn drain(&self) -> Vec<Received> {
        self.messages.try_iter().collect()
    }

    pub fn publish(&self, topic: &str, payload: &str) {
        self.publish_bytes(topic, payload.as_bytes(), false);
    }

    pub fn publish_bytes(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .unwrap();
    }
}

/// `capdec run --config FILE` with its log lines collected.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Lines already returned by `wait_for_log`, by index.
    matched: HashSet<usize>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capdec"))
            .args(["run", "--config"])
            .arg(config)
            .env("CAPDEC_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("daemon: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            lines,
            matched: HashSet::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first log line, not returned before, that contains every one of `needles`: asking twice for the
    /// same words waits for a second such line.
    pub fn wait_for_log(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                let found = (0..lines.len()).find(|i| {
                    !self.matched.contains(i) && needles.iter().all(|n| lines[*i].contains(n))
                });
                if let Some(index) = found {
                    self.matched.insert(index);
                    return lines[index].clone();
                }
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// From now on `wait_for_log` looks only at lines logged after this call.
    pub fn forget_log(&mut self) {
        let logged = self.lines.lock().unwrap().len();
        self.matched.extend(0..logged);
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Already gone in most tests; a failed test must not leave it running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon configuration for the tiny fixture bundle with one `file` camera per `(name, path)`.
/// `mqtt_extra` and `camera_extra` are appended to the [mqtt] table and to every [[camera]] table.
pub fn config(
    port: u16,
    cameras: &[(&str, &Path)],
    mqtt_extra: &str,
    camera_extra: &str,
) -> String {
    let mut text = format!(
        "log_level = \"debug\"\n\n[model]\nbundle = \"{}\"\nprecision = \"fp32\"\nbeam_size = 1\n\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"capdec-test\"\nbase_topic = \"test/capdec\"\n\
         reconnect_min_s = 0.2\nreconnect_max_s = 1\n{mqtt_extra}\n",
        repo("models/fixture-tiny").display()
    );
    for (name, path) in cameras {
        text.push_str(&format!(
            "\n[[camera]]\nname = \"{name}\"\ninterval_s = 0.2\nmax_captions_per_minute = 1000\n{camera_extra}\n\
             [camera.file]\npath = \"{}\"\n",
            path.display()
        ));
    }
    text
}

/// The caption `config`'s model settings (the fixture, fp32, greedy) give `picture`, from `capdec caption`.
pub fn expected_caption(picture: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_capdec"))
        .args(["caption", "--precision", "fp32", "--beam", "1", "--model"])
        .arg(repo("models/fixture-tiny"))
        .arg(picture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}
