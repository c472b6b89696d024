//! The daemon's configuration file (TOML): what to caption, where to publish, how often. Read in two phases,
//! as ripgrep reads its arguments: `raw` is the file as written (serde, spans kept for the error messages),
//! `resolve` checks it and turns it into `Settings`, plain values with the secrets and TLS files already read.
//!
//! Every problem is reported with the file, the line and the key, and unknown keys are errors, so that a typo
//! never silently falls back to a default. Secrets (passwords, tokens) come from the file itself, another file
//! or an environment variable, and are never printed: `Secret`'s `Debug` hides them.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::located::TomlFile;

mod raw;
mod resolve;
mod settings;

pub use settings::{
    ApiSettings, CameraSettings, ClientAuth, CommandSettings, Credentials, DeviceSelect,
    DeviceSettings, FrigatePhase, FrigateSettings, HomeAssistantSettings, HttpAuth, HttpSettings,
    ModelSettings, MqttSettings, PictureSettings, RtspFrame, RtspSettings, RtspTransport, Secret,
    Settings, SourceSettings, TlsSettings, TrustRoots,
};

impl Settings {
    /// Reads, parses and checks a configuration file, and resolves its secrets, TLS files and relative paths.
    pub fn load(path: &Path) -> Result<Settings> {
        let text =
            fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Settings::parse(&text, path)
    }

    /// `path` names the file in messages and anchors its relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Settings> {
        let file = TomlFile { path, text };
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| file.parse_error(&e, ""))?;
        let base = path.parent().unwrap_or(Path::new(""));
        resolve::settings(raw, &file, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[mqtt]
host = "localhost"

[[camera]]
name = "porch"
[camera.file]
path = "pictures"
"#;

    fn parse(text: &str) -> Result<Settings> {
        Settings::parse(text, Path::new("/etc/capdec/capdec.toml"))
    }

    fn error(text: &str) -> String {
        format!(
            "{:#}",
            parse(text).expect_err("the configuration should be refused")
        )
    }

    #[test]
    fn minimal_file_takes_defaults_and_anchors_paths() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.mqtt.port, 1883);
        assert_eq!(config.mqtt.base_topic, "capdec");
        assert_eq!(config.home_assistant.node_id, "capdec");
        assert_eq!(config.log_level, log::LevelFilter::Info);
        match &config.cameras[0].source {
            SourceSettings::File(path) => assert_eq!(path, Path::new("/etc/capdec/pictures")),
            other => panic!("expected a file source, got {other:?}"),
        }
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/capdec.toml");
        let text = fs::read_to_string(&path).unwrap();
        // The example reads the password from the environment, as a service would; tests/daemon.rs runs
        // `check-config` on it with the variable set. Here the variable is left alone (tests share it).
        let text = text.replace("{ env = \"CAPDEC_MQTT_PASSWORD\" }", "\"example\"");
        let config = Settings::parse(&text, &path).unwrap();
        let kinds: Vec<String> = config
            .cameras
            .iter()
            .map(|c| {
                c.source
                    .describe()
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, ["device", "rtsp", "mjpeg", "http", "file"]);
        // The command camera needs its program, which a test machine lacks: shown commented out.
        assert!(text.contains("\n# [camera.command]\n# argv = [\"rpicam-still\""));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let text = MINIMAL.replace(
            "name = \"porch\"",
            "name = \"porch\"\ninterval_s = \"often\"",
        );
        let message = error(&text);
        assert!(
            message.contains("capdec.toml:7: in [[camera]] key `interval_s`"),
            "{message}"
        );
        assert!(
            message.contains("invalid type: string \"often\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = MINIMAL.replace("path = \"pictures\"", "path = \"pictures\"\nwatch = true");
        let message = error(&text);
        assert!(
            message.contains("capdec.toml:9: in [camera.file] key `watch`"),
            "{message}"
        );
        assert!(message.contains("unknown field `watch`"), "{message}");
    }

    #[test]
    fn missing_camera_is_refused() {
        let message = error("[mqtt]\nhost = \"localhost\"\n");
        assert!(
            message.contains("no camera, no [api] and no [frigate]: add at least one [[camera]]"),
            "{message}"
        );
    }

    #[test]
    fn the_api_takes_defaults_on_loopback_and_may_stand_alone() {
        let config = parse("[mqtt]\nhost = \"localhost\"\n[api]\n").unwrap();
        assert!(config.cameras.is_empty());
        let api = config.api.expect("an [api] table turns the API on");
        assert_eq!(api.listen.to_string(), "127.0.0.1:11434");
        assert_eq!(api.queue_limit, 4);
        assert_eq!(api.max_body_bytes, 20_000_000);
        assert_eq!(api.timeout, std::time::Duration::from_secs(30));
        assert!(api.bearer_token.is_none());
        assert!(
            parse(MINIMAL).unwrap().api.is_none(),
            "off without the table"
        );
        let everywhere = "[api]\naddress = \"::\"\nport = 8080\nbearer_token = \"t\"\n";
        let api = parse(&format!("{MINIMAL}{everywhere}"))
            .unwrap()
            .api
            .unwrap();
        assert_eq!(api.listen.to_string(), "[::]:8080");
        assert_eq!(api.bearer_token.unwrap().expose(), "t");
    }

    #[test]
    fn bad_api_keys_are_refused_with_their_line() {
        for (keys, expected) in [
            (
                "address = \"pi.local\"",
                "api.address `pi.local` is not an IP address",
            ),
            ("queue_limit = 0", "api.queue_limit must be from 1 to 1024"),
            (
                "queue_limit = 2000",
                "api.queue_limit must be from 1 to 1024",
            ),
            (
                "max_body_mb = 0",
                "api.max_body_mb must be from 0.001 to 1000",
            ),
            ("timeout_s = 0", "api.timeout_s must be a number of seconds"),
            ("bearer_token = \"  \"", "api.bearer_token is empty"),
            (
                "bearer_token = { env = \"CAPDEC_NO_SUCH_TOKEN\" }",
                "environment variable `CAPDEC_NO_SUCH_TOKEN`",
            ),
            ("port = 70000", "port"),
            ("listen = \"0.0.0.0\"", "unknown field `listen`"),
        ] {
            let message = error(&format!("{MINIMAL}[api]\n{keys}\n"));
            assert!(
                message.contains("capdec.toml:10: in [api]") && message.contains(expected),
                "{keys}: {message}"
            );
        }
    }

    #[test]
    fn frigate_takes_defaults_and_may_stand_alone() {
        let text =
            "[mqtt]\nhost = \"localhost\"\n[frigate]\nurl = \"http://frigate.local:5000/\"\n";
        let config = parse(text).unwrap();
        assert!(config.cameras.is_empty());
        let frigate = config.frigate.expect("a [frigate] table turns it on");
        assert_eq!(frigate.url, "http://frigate.local:5000");
        assert_eq!(frigate.events_topic, "frigate/events");
        assert_eq!(frigate.phase, FrigatePhase::End);
        assert!(frigate.crop && !frigate.write_description);
        assert!(
            frigate.cameras.is_empty() && frigate.labels.is_empty() && frigate.zones.is_empty()
        );
        assert_eq!(frigate.queue_limit, 8);
        let text = format!(
            "{MINIMAL}[frigate]\nurl = \"http://f:5000\"\ntopic_prefix = \"nvr/frigate\"\nphase = \"new\"\n\
             labels = [\"person\"]\nsnapshot_height = 480\nwrite_description = true\n"
        );
        let frigate = parse(&text).unwrap().frigate.unwrap();
        assert_eq!(frigate.events_topic, "nvr/frigate/events");
        assert_eq!(frigate.phase, FrigatePhase::New);
        assert_eq!(frigate.snapshot_height, Some(480));
        assert!(frigate.write_description);
    }

    #[test]
    fn bad_frigate_keys_are_refused_with_their_line() {
        for (keys, expected) in [
            (
                "url = \"https://f:8971\"",
                "frigate.url `https://f:8971` must start with http://",
            ),
            (
                "url = \"http://f:5000\"\nphase = \"start\"",
                "frigate.phase must be \"new\" or \"end\"",
            ),
            (
                "url = \"http://f:5000\"\ntopic_prefix = \"a/#\"",
                "frigate.topic_prefix `a/#`",
            ),
            (
                "url = \"http://f:5000\"\nqueue_limit = 0",
                "frigate.queue_limit must be from 1 to 1024",
            ),
            (
                "url = \"http://u:p@f:5000\"",
                "frigate.url holds credentials",
            ),
            (
                "url = \"http://f:5000\"\nsnapshot_height = 5",
                "frigate.snapshot_height must be from 16",
            ),
            (
                "url = \"http://f:5000\"\ncamera = [\"a\"]",
                "unknown field `camera`",
            ),
        ] {
            let message = error(&format!("{MINIMAL}[frigate]\n{keys}\n"));
            assert!(
                message.contains("capdec.toml:1") && message.contains(expected),
                "{keys}: {message}"
            );
        }
    }

    #[test]
    fn inference_threads_are_the_cores_unless_the_file_says() {
        assert_eq!(parse(MINIMAL).unwrap().model.threads, None);
        let text = format!("[model]\nthreads = 3\n{MINIMAL}");
        assert_eq!(parse(&text).unwrap().model.threads, Some(3));
        let message = error(&format!("[model]\nthreads = 0\n{MINIMAL}"));
        assert!(
            message.contains("capdec.toml:2: in [model]")
                && message.contains("model.threads must be at least 1"),
            "{message}"
        );
    }

    #[test]
    fn home_assistant_pictures_and_expiry() {
        let ha = parse(MINIMAL).unwrap().home_assistant;
        let picture = ha.picture.expect("pictures are on by default");
        assert_eq!((picture.size, picture.max_bytes), (640, 100_000));
        assert!(ha.expire_after.is_none());
        let text = format!("{MINIMAL}[home_assistant]\npicture = false\nexpire_after_s = 90\n");
        let ha = parse(&text).unwrap().home_assistant;
        assert!(ha.picture.is_none());
        assert_eq!(ha.expire_after, Some(std::time::Duration::from_secs(90)));
        for (keys, expected) in [
            (
                "picture_size = 16",
                "home_assistant.picture_size must be from 32 to 4096",
            ),
            (
                "picture_max_kb = 1",
                "home_assistant.picture_max_kb must be from 4 to 8192",
            ),
            (
                "expire_after_s = 0",
                "home_assistant.expire_after_s must be at least 1",
            ),
        ] {
            let message = error(&format!("{MINIMAL}[home_assistant]\n{keys}\n"));
            assert!(
                message.contains("capdec.toml:10: in [home_assistant]")
                    && message.contains(expected),
                "{keys}: {message}"
            );
        }
    }

    #[test]
    fn missing_mqtt_table_is_refused() {
        let message = error("[[camera]]\nname = \"porch\"\n[camera.file]\npath = \".\"\n");
        assert!(message.contains("missing field `mqtt`"), "{message}");
    }

    #[test]
    fn duplicate_camera_name_points_at_both() {
        let text =
            format!("{MINIMAL}\n[[camera]]\nname = \"porch\"\n[camera.file]\npath = \"other\"\n");
        let message = error(&text);
        assert!(
            message.contains("capdec.toml:11: in [[camera]] key `name`"),
            "{message}"
        );
        assert!(
            message.contains("camera name `porch` is already used on line 6"),
            "{message}"
        );
    }

    #[test]
    fn camera_without_source_is_refused() {
        let message = error("[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"porch\"\n");
        assert!(
            message.contains("camera `porch` has no source"),
            "{message}"
        );
        assert!(
            message.contains("capdec.toml:3: in [[camera]]:"),
            "{message}"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_their_line() {
        for (url, problem) in [
            ("ftp://cam/snap.jpg", "must start with http:// or https://"),
            ("http://", "is not a URL"),
            ("not a url", "is not a URL"),
            (
                "https://user:pw@cam/snap.jpg",
                "`https://***@cam/snap.jpg` holds credentials",
            ),
        ] {
            let text = format!(
                "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"gate\"\n[camera.http]\nurl = \"{url}\"\n"
            );
            let message = error(&text);
            assert!(
                message.contains("capdec.toml:6: in [camera.http] key `url`"),
                "{url}: {message}"
            );
            assert!(message.contains(problem), "{url}: {message}");
        }
    }

    /// The error for one camera whose source table is `table` with `keys`; the key named must be on line 6.
    fn source_error(table: &str, keys: &str) -> String {
        error(&format!(
            "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"gate\"\n[camera.{table}]\n{keys}\n"
        ))
    }

    #[test]
    fn bad_rtsp_keys_are_refused_with_their_line() {
        for (keys, problem) in [
            (
                "url = \"http://cam/stream\"",
                "rtsp.url `http://cam/stream` must start with rtsp://",
            ),
            (
                "url = \"rtsp://admin:pw@cam/stream\"",
                "rtsp.url `rtsp://***@cam/stream` holds credentials, which would show in logs: use rtsp.username and rtsp.password",
            ),
            (
                "url = \"rtsp:///stream\"",
                "rtsp.url `rtsp:///stream` is not a URL",
            ),
            (
                "transport = \"quic\"\nurl = \"rtsp://cam/s\"",
                "rtsp.transport must be \"tcp\" or \"udp\", not \"quic\"",
            ),
            (
                "frame = \"all\"\nurl = \"rtsp://cam/s\"",
                "rtsp.frame must be \"latest\" or \"keyframe\", not \"all\"",
            ),
            (
                "password = \"pw\"\nurl = \"rtsp://cam/s\"",
                "rtsp.password is set but rtsp.username is not",
            ),
            (
                "max_picture_mb = 0\nurl = \"rtsp://cam/s\"",
                "rtsp.max_picture_mb must be from 0.001 to 1000 (MB), not 0",
            ),
        ] {
            let message = source_error("rtsp", keys);
            assert!(
                message.contains("capdec.toml:6: in [camera.rtsp] key `"),
                "{keys}: {message}"
            );
            assert!(message.contains(problem), "{keys}: {message}");
        }
    }

    #[test]
    fn a_command_needs_a_program_that_is_there() {
        for (argv, problem) in [
            (
                "[]",
                "command.argv is empty: give the program and its arguments",
            ),
            (
                "[\"rpicam-still-not-here\", \"-o\", \"-\"]",
                "program `rpicam-still-not-here` is not on PATH",
            ),
            (
                "[\"/no/such/program\"]",
                "/no/such/program is not an executable file",
            ),
            (
                "[\"NOT_EXECUTABLE\"]",
                "NOT_EXECUTABLE is not an executable file",
            ),
        ] {
            let plain = std::env::temp_dir().join(format!("capdec-plain-{}", std::process::id()));
            fs::write(&plain, "#!/bin/sh\n").unwrap();
            let plain = plain.display().to_string();
            let (argv, problem) = (
                argv.replace("NOT_EXECUTABLE", &plain),
                problem.replace("NOT_EXECUTABLE", &plain),
            );
            let message = source_error("command", &format!("argv = {argv}"));
            assert!(
                message.contains("capdec.toml:6: in [camera.command] key `argv`"),
                "{argv}: {message}"
            );
            assert!(message.contains(&problem), "{argv}: {message}");
        }
        assert_eq!(
            resolve::install_hint("rpicam-still"),
            " (Raspberry Pi OS: `sudo apt install rpicam-apps`)"
        );
        let config = parse("[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"c\"\n[camera.command]\nargv = [\"sh\", \"-c\", \"x\"]\n")
            .unwrap();
        match &config.cameras[0].source {
            SourceSettings::Command(command) => {
                assert!(command.argv[0].ends_with("/sh"), "{:?}", command.argv);
                assert_eq!(command.argv[1..], ["-c", "x"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_sources_are_named() {
        let message = error(
            "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"gate\"\n[camera.rtsp]\nurl = \"rtsp://cam/s\"\n\
             [camera.mjpeg]\nurl = \"http://cam/stream\"\n",
        );
        assert!(
            message.contains(
                "camera `gate` has several sources ([camera.mjpeg], [camera.rtsp]): keep one"
            ),
            "{message}"
        );
    }

    #[test]
    fn camera_names_must_suit_topics() {
        let message = error(&MINIMAL.replace("\"porch\"", "\"front/door\""));
        assert!(
            message.contains("camera.name `front/door` must be non-empty"),
            "{message}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for (line, expected) in [
            ("qos = 3", "mqtt.qos must be 0, 1 or 2"),
            ("keep_alive_s = 1", "at least 5 seconds"),
            ("port = 70000", "invalid value"),
        ] {
            let text = MINIMAL.replace(
                "host = \"localhost\"",
                &format!("host = \"localhost\"\n{line}"),
            );
            let message = error(&text);
            assert!(
                message.contains("capdec.toml:4: in [mqtt]"),
                "{line}: {message}"
            );
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn durations_a_clock_cannot_hold_or_a_thread_would_spin_on_are_refused() {
        for value in ["1e19", "1e-12", "0", "-5", "nan"] {
            let text = MINIMAL.replace(
                "name = \"porch\"",
                &format!("name = \"porch\"\ninterval_s = {value}"),
            );
            let message = error(&text);
            assert!(
                message.contains("capdec.toml:7: in [[camera]] key `interval_s`"),
                "{value}: {message}"
            );
            assert!(
                message.contains("from 0.001 to 1000000000"),
                "{value}: {message}"
            );
        }
        let text = MINIMAL.replace("name = \"porch\"", "name = \"porch\"\ninterval_s = 0.5");
        assert_eq!(
            parse(&text).unwrap().cameras[0].interval,
            std::time::Duration::from_millis(500)
        );
    }

    #[test]
    fn secrets_come_from_files_and_never_show() {
        let dir = std::env::temp_dir().join(format!("capdec-config-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("password"), "hunter2\n").unwrap();
        let text = MINIMAL.replace(
            "host = \"localhost\"",
            "host = \"localhost\"\nusername = \"cam\"\npassword = { file = \"password\" }",
        );
        let config = Settings::parse(&text, &dir.join("capdec.toml")).unwrap();
        let credentials = config.mqtt.credentials.as_ref().unwrap();
        assert_eq!(credentials.password.expose(), "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_secret_sources_name_the_key() {
        let text = MINIMAL.replace(
            "host = \"localhost\"",
            "host = \"localhost\"\nusername = \"cam\"\npassword = { env = \"CAPDEC_TEST_UNSET_VARIABLE\" }",
        );
        let message = error(&text);
        assert!(
            message.contains("capdec.toml:5: in [mqtt] key `password`"),
            "{message}"
        );
        assert!(
            message.contains("environment variable `CAPDEC_TEST_UNSET_VARIABLE` is not set"),
            "{message}"
        );
        let text = text.replace("env = \"CAPDEC_TEST_UNSET_VARIABLE\"", "vault = \"x\"");
        assert!(error(&text).contains("unknown field `vault`, expected `file` or `env`"));
    }

    #[test]
    fn log_levels_are_log_filters_in_any_case() {
        let config = parse(&format!("log_level = \"DEBUG\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.log_level, log::LevelFilter::Debug);
        let message = error(&format!("log_level = \"loud\"\n{MINIMAL}"));
        assert!(
            message.contains("capdec.toml:1: key `log_level`"),
            "{message}"
        );
        assert!(message.contains("unknown variant `loud`"), "{message}");
    }

    /// A PEM file's sections are checked for their labels and base64, not for a valid certificate inside: that
    /// is the TLS handshake's business.
    const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";

    fn with_tls(dir: &Path, tls: &str) -> Result<Settings> {
        let text = MINIMAL.replace(
            "host = \"localhost\"\n",
            &format!("host = \"localhost\"\n[mqtt.tls]\n{tls}\n"),
        );
        Settings::parse(&text, &dir.join("capdec.toml"))
    }

    #[test]
    fn tls_files_are_read_and_parsed_at_load() {
        let dir = std::env::temp_dir().join(format!("capdec-config-tls-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("ca.pem"), PEM_CERTIFICATE).unwrap();
        fs::write(dir.join("client.pem"), PEM_CERTIFICATE).unwrap();
        fs::write(dir.join("client.key"), PEM_KEY).unwrap();
        fs::write(dir.join("ca.der"), [0x30, 0x82, 0x01, 0x0a]).unwrap();

        let config = with_tls(&dir, "ca_file = \"ca.pem\"").unwrap();
        let tls = config.mqtt.tls.as_ref().unwrap();
        assert_eq!(tls.ca, PEM_CERTIFICATE.as_bytes());
        assert_eq!(config.mqtt.port, 8883, "TLS's port by default");
        let both =
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client.key\"";
        let config = with_tls(&dir, both).unwrap();
        let auth = config.mqtt.tls.unwrap().client_auth.unwrap();
        assert_eq!(
            (auth.chain.as_slice(), auth.key.expose()),
            (PEM_CERTIFICATE.as_bytes(), PEM_KEY)
        );
        assert_eq!(auth.cert_file, dir.join("client.pem"));

        for (tls, expected) in [
            (
                "ca_file = \"missing.pem\"",
                "capdec.toml:5: in [mqtt.tls] key `ca_file`: mqtt.tls.ca_file: cannot read",
            ),
            (
                "ca_file = \"ca.der\"",
                "capdec.toml:5: in [mqtt.tls] key `ca_file`: mqtt.tls.ca_file: ca.der is not PEM holding a CA certificate",
            ),
            (
                "ca_file = \"client.key\"",
                "capdec.toml:5: in [mqtt.tls] key `ca_file`: mqtt.tls.ca_file: client.key is not PEM holding a CA certificate",
            ),
            (
                "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"ca.pem\"",
                "capdec.toml:7: in [mqtt.tls] key `client_key`: mqtt.tls.client_key: ca.pem is not PEM holding a private key",
            ),
            (
                "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"",
                "mqtt.tls: client_cert and client_key go together",
            ),
        ] {
            let message = format!("{:#}", with_tls(&dir, tls).expect_err(tls));
            assert!(message.contains(expected), "{tls}: {message}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
