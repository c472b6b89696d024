//! The daemon's configuration file (TOML): what to caption, where to publish, how often.
//!
//! Every problem is reported with the file, the line and the key, and unknown keys are errors, so that a typo
//! never silently falls back to a default. Secrets (passwords, tokens) are resolved here, from the file itself,
//! another file or an environment variable, and never printed: `Secret`'s `Debug` hides them.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

/// Where the file says nothing about a model, the command line's discovery rules apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_log_level")]
    pub log_level: Spanned<String>,
    #[serde(default)]
    pub model: ModelConfig,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub home_assistant: HomeAssistantConfig,
    #[serde(default)]
    pub camera: Vec<Spanned<CameraConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A bundle folder; relative paths are relative to the configuration file.
    pub bundle: Option<PathBuf>,
    pub precision: Option<Spanned<String>>,
    pub beam_size: Option<Spanned<usize>>,
    pub max_tokens: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: Spanned<String>,
    /// 1883, or 8883 with TLS.
    pub port: Option<u16>,
    #[serde(default = "default_client_id")]
    pub client_id: Spanned<String>,
    #[serde(default = "default_base_topic")]
    pub base_topic: Spanned<String>,
    #[serde(default = "default_qos")]
    pub qos: Spanned<u8>,
    #[serde(default)]
    pub retain: bool,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: Spanned<u64>,
    /// Captions kept while the broker is unreachable; beyond it the oldest are dropped.
    #[serde(default = "default_queue_limit")]
    pub queue_limit: Spanned<usize>,
    #[serde(default = "default_reconnect_min_s")]
    pub reconnect_min_s: Spanned<f64>,
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: Spanned<f64>,
    pub username: Option<String>,
    pub password: Option<Spanned<Secret>>,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    #[serde(default = "yes")]
    pub discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: Spanned<String>,
    /// Groups the entities under one device; defaults to the MQTT base topic.
    pub node_id: Option<Spanned<String>>,
    #[serde(default = "default_device_name")]
    pub device_name: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            discovery: true,
            discovery_prefix: default_discovery_prefix(),
            node_id: None,
            device_name: default_device_name(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub name: Spanned<String>,
    #[serde(default = "default_interval_s")]
    pub interval_s: Spanned<f64>,
    /// Cosine similarity with the last published embedding above which the decoder is skipped; 1 disables it.
    #[serde(default = "default_skip_if_similarity_above")]
    pub skip_if_similarity_above: Spanned<f64>,
    #[serde(default = "default_max_captions_per_minute")]
    pub max_captions_per_minute: Spanned<u32>,
    pub qos: Option<Spanned<u8>>,
    pub retain: Option<bool>,
    pub file: Option<FileSourceConfig>,
    pub http: Option<HttpSourceConfig>,
    pub device: Option<DeviceSourceConfig>,
}

/// A folder (its newest new picture is captioned) or one picture (re-read every time).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    pub url: Spanned<String>,
    #[serde(default = "default_http_timeout_s")]
    pub timeout_s: Spanned<f64>,
    pub username: Option<String>,
    pub password: Option<Spanned<Secret>>,
    pub bearer_token: Option<Spanned<Secret>>,
}

/// A V4L2/USB camera, by index (`/dev/videoN`) or by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSourceConfig {
    pub index: Option<u32>,
    pub name: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
}

/// Where a camera's frames come from, once validated.
#[derive(Debug)]
pub enum SourceConfig<'a> {
    File(&'a FileSourceConfig),
    Http(&'a HttpSourceConfig),
    Device(&'a DeviceSourceConfig),
}

impl CameraConfig {
    /// The one source the camera names; `Config::load` has checked there is exactly one.
    pub fn source(&self) -> SourceConfig<'_> {
        match (&self.file, &self.http, &self.device) {
            (Some(file), _, _) => SourceConfig::File(file),
            (_, Some(http), _) => SourceConfig::Http(http),
            (_, _, Some(device)) => SourceConfig::Device(device),
            (None, None, None) => unreachable!("Config::load rejects a camera without a source"),
        }
    }
}

/// A password or token: written in the file, or `{ file = "..." }`, or `{ env = "VAR" }`.
/// Parsing keeps where it comes from; `Config::load` reads it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    File(PathBuf),
    Env(String),
}

impl Secret {
    pub fn expose(&self) -> &str {
        match self {
            Secret::Value(value) => value,
            Secret::File(_) | Secret::Env(_) => unreachable!("Config::load resolves every secret"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, `{ file = \"PATH\" }` or `{ env = \"VARIABLE\" }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret::Value(value.to_string()))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Secret, M::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty table: expected `file = \"PATH\"` or `env = \"VARIABLE\"`",
                    ));
                };
                let value: String = map.next_value()?;
                let secret = match key.as_str() {
                    "file" => Secret::File(PathBuf::from(value)),
                    "env" => Secret::Env(value),
                    _ => return Err(de::Error::unknown_field(&key, &["file", "env"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "`{extra}` given as well as `{key}`: a secret comes from one place"
                    )));
                }
                Ok(secret)
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

fn default_log_level() -> Spanned<String> {
    unspanned("info".into())
}
fn default_client_id() -> Spanned<String> {
    unspanned("capdec".into())
}
fn default_base_topic() -> Spanned<String> {
    unspanned("capdec".into())
}
fn default_qos() -> Spanned<u8> {
    unspanned(1)
}
fn default_keep_alive_s() -> Spanned<u64> {
    unspanned(30)
}
fn default_queue_limit() -> Spanned<usize> {
    unspanned(100)
}
fn default_reconnect_min_s() -> Spanned<f64> {
    unspanned(1.0)
}
fn default_reconnect_max_s() -> Spanned<f64> {
    unspanned(60.0)
}
fn default_discovery_prefix() -> Spanned<String> {
    unspanned("homeassistant".into())
}
fn default_device_name() -> String {
    "CapDec".into()
}
fn default_interval_s() -> Spanned<f64> {
    unspanned(60.0)
}
fn default_skip_if_similarity_above() -> Spanned<f64> {
    unspanned(0.95)
}
fn default_max_captions_per_minute() -> Spanned<u32> {
    unspanned(6)
}
fn default_http_timeout_s() -> Spanned<f64> {
    unspanned(10.0)
}
fn yes() -> bool {
    true
}

/// A default has no place in the file; an empty span makes that visible to `Located::at`.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl Config {
    /// Reads, parses and checks a configuration file, and resolves its secrets and relative paths.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Config::parse(&text, path)
    }

    /// `path` names the file in messages and anchors its relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let file = Located { path, text };
        let mut config: Config =
            toml::from_str(text).map_err(|e| file.error(e.span(), e.message().trim()))?;
        config.check(&file)?;
        let base = path.parent().unwrap_or(Path::new(""));
        config.resolve(&file, base)?;
        Ok(config)
    }

    pub fn port(&self) -> u16 {
        self.mqtt
            .port
            .unwrap_or(if self.mqtt.tls.is_some() { 8883 } else { 1883 })
    }

    pub fn node_id(&self) -> &str {
        self.home_assistant
            .node_id
            .as_ref()
            .unwrap_or(&self.mqtt.base_topic)
            .get_ref()
    }

    fn check(&self, file: &Located) -> Result<()> {
        let level = &self.log_level;
        if !LOG_LEVELS.contains(&level.get_ref().as_str()) {
            bail!(file.at(
                level,
                &format!(
                    "log_level `{}` is not one of {}",
                    level.get_ref(),
                    LOG_LEVELS.join(", ")
                )
            ));
        }
        if let Some(precision) = &self.model.precision {
            non_empty(file, precision, "model.precision")?;
        }
        for (value, key) in [
            (&self.model.beam_size, "model.beam_size"),
            (&self.model.max_tokens, "model.max_tokens"),
        ] {
            if let Some(value) = value.as_ref().filter(|v| *v.get_ref() == 0) {
                bail!(file.at(value, &format!("{key} must be at least 1")));
            }
        }

        let mqtt = &self.mqtt;
        non_empty(file, &mqtt.host, "mqtt.host")?;
        non_empty(file, &mqtt.client_id, "mqtt.client_id")?;
        topic_level(file, &mqtt.base_topic, "mqtt.base_topic", true)?;
        qos(file, &mqtt.qos, "mqtt.qos")?;
        if *mqtt.keep_alive_s.get_ref() < 5 {
            bail!(file.at(
                &mqtt.keep_alive_s,
                "mqtt.keep_alive_s must be at least 5 seconds"
            ));
        }
        if *mqtt.queue_limit.get_ref() == 0 {
            bail!(file.at(&mqtt.queue_limit, "mqtt.queue_limit must be at least 1"));
        }
        positive_seconds(file, &mqtt.reconnect_min_s, "mqtt.reconnect_min_s")?;
        positive_seconds(file, &mqtt.reconnect_max_s, "mqtt.reconnect_max_s")?;
        if mqtt.reconnect_max_s.get_ref() < mqtt.reconnect_min_s.get_ref() {
            bail!(file.at(
                &mqtt.reconnect_max_s,
                "mqtt.reconnect_max_s is less than mqtt.reconnect_min_s"
            ));
        }
        if let (None, Some(password)) = (&mqtt.username, &mqtt.password) {
            bail!(file.at(password, "mqtt.password is set but mqtt.username is not"));
        }
        if let Some(tls) = &mqtt.tls
            && tls.client_cert.is_some() != tls.client_key.is_some()
        {
            bail!(file.anywhere(
                "mqtt.tls: client_cert and client_key go together: give both or neither"
            ));
        }

        let ha = &self.home_assistant;
        topic_level(
            file,
            &ha.discovery_prefix,
            "home_assistant.discovery_prefix",
            true,
        )?;
        if let Some(node_id) = &ha.node_id {
            topic_level(file, node_id, "home_assistant.node_id", false)?;
        }

        if self.camera.is_empty() {
            bail!(
                file.anywhere(
                    "no camera: add at least one [[camera]] table with a name and a source"
                )
            );
        }
        let mut names: HashMap<&str, &Spanned<String>> = HashMap::new();
        for camera in &self.camera {
            let name = &camera.get_ref().name;
            topic_level(file, name, "camera.name", false)?;
            if let Some(first) = names.insert(name.get_ref(), name) {
                bail!(file.at(
                    name,
                    &format!(
                        "camera name `{}` is already used on line {}",
                        name.get_ref(),
                        file.line(first.span())
                    )
                ));
            }
            self.check_camera(file, camera)?;
        }
        Ok(())
    }

    fn check_camera(&self, file: &Located, camera: &Spanned<CameraConfig>) -> Result<()> {
        let c = camera.get_ref();
        let label = format!("camera `{}`", c.name.get_ref());
        positive_seconds(file, &c.interval_s, &format!("{label}: interval_s"))?;
        let threshold = &c.skip_if_similarity_above;
        if !(0.0..=1.0).contains(threshold.get_ref()) {
            bail!(file.at(
                threshold,
                &format!("{label}: skip_if_similarity_above must be between 0 and 1")
            ));
        }
        if *c.max_captions_per_minute.get_ref() == 0 {
            bail!(file.at(
                &c.max_captions_per_minute,
                &format!("{label}: max_captions_per_minute must be at least 1")
            ));
        }
        if let Some(level) = &c.qos {
            qos(file, level, &format!("{label}: qos"))?;
        }
        let sources = [c.file.is_some(), c.http.is_some(), c.device.is_some()];
        match sources.iter().filter(|&&given| given).count() {
            1 => {}
            0 => bail!(file.at(
                camera,
                &format!("{label} has no source: add one of [camera.file], [camera.http], [camera.device]")
            )),
            _ => bail!(file.at(
                camera,
                &format!("{label} has several sources: keep one of [camera.file], [camera.http], [camera.device]")
            )),
        }
        if let Some(http) = &c.http {
            check_url(file, &http.url, &label)?;
            positive_seconds(file, &http.timeout_s, &format!("{label}: http.timeout_s"))?;
            if let (None, Some(password)) = (&http.username, &http.password) {
                bail!(file.at(
                    password,
                    &format!("{label}: http.password is set but http.username is not")
                ));
            }
            if let (Some(_), Some(token)) = (&http.username, &http.bearer_token) {
                bail!(file.at(
                    token,
                    &format!("{label}: http.bearer_token and http.username exclude each other")
                ));
            }
        }
        if let Some(device) = &c.device {
            if device.index.is_some() == device.name.is_some() {
                bail!(file.at(
                    camera,
                    &format!("{label}: [camera.device] needs exactly one of `index` and `name`")
                ));
            }
            if device.width.is_some() != device.height.is_some() {
                bail!(file.at(
                    camera,
                    &format!("{label}: [camera.device] width and height go together")
                ));
            }
            if !cfg!(target_os = "linux") {
                bail!(file.at(
                    camera,
                    &format!("{label}: [camera.device] cameras are read through V4L2, which only Linux has")
                ));
            }
        }
        Ok(())
    }

    /// Reads secrets and makes relative paths relative to the configuration file.
    fn resolve(&mut self, file: &Located, base: &Path) -> Result<()> {
        if let Some(bundle) = &mut self.model.bundle {
            *bundle = base.join(&*bundle);
        }
        if let Some(password) = &mut self.mqtt.password {
            resolve_secret(file, password, base, "mqtt.password")?;
        }
        if let Some(tls) = &mut self.mqtt.tls {
            tls.ca_file = base.join(&tls.ca_file);
            tls.client_cert = tls.client_cert.as_ref().map(|p| base.join(p));
            tls.client_key = tls.client_key.as_ref().map(|p| base.join(p));
        }
        for camera in &mut self.camera {
            let c = camera.get_mut();
            let label = format!("camera `{}`", c.name.get_ref());
            if let Some(source) = &mut c.file {
                source.path = base.join(&source.path);
            }
            if let Some(http) = &mut c.http {
                if let Some(password) = &mut http.password {
                    resolve_secret(file, password, base, &format!("{label}: http.password"))?;
                }
                if let Some(token) = &mut http.bearer_token {
                    resolve_secret(file, token, base, &format!("{label}: http.bearer_token"))?;
                }
            }
        }
        Ok(())
    }
}

fn resolve_secret(
    file: &Located,
    secret: &mut Spanned<Secret>,
    base: &Path,
    key: &str,
) -> Result<()> {
    let value = match secret.get_ref() {
        Secret::Value(_) => return Ok(()),
        Secret::File(path) => {
            let path = base.join(path);
            let text = fs::read_to_string(&path).map_err(|e| {
                file.at(
                    secret,
                    &format!("{key}: cannot read {}: {e}", path.display()),
                )
            })?;
            // Files written with `echo` end in a newline that is no part of the password.
            text.trim_end_matches(['\r', '\n']).to_string()
        }
        Secret::Env(variable) => std::env::var(variable).map_err(|_| {
            file.at(
                secret,
                &format!("{key}: environment variable `{variable}` is not set"),
            )
        })?,
    };
    *secret.get_mut() = Secret::Value(value);
    Ok(())
}

fn non_empty(file: &Located, value: &Spanned<String>, key: &str) -> Result<()> {
    if value.get_ref().trim().is_empty() {
        bail!(file.at(value, &format!("{key} is empty")));
    }
    Ok(())
}

/// Names used in MQTT topics and Home Assistant ids: no wildcards, no separators a topic would split on.
fn topic_level(
    file: &Located,
    value: &Spanned<String>,
    key: &str,
    slashes_allowed: bool,
) -> Result<()> {
    let text = value.get_ref();
    let fine = |c: char| {
        c.is_ascii_alphanumeric() || c == '_' || c == '-' || (slashes_allowed && c == '/')
    };
    if text.is_empty() || !text.chars().all(fine) || text.starts_with('/') || text.ends_with('/') {
        let allowed = if slashes_allowed {
            "letters, digits, `_`, `-` and inner `/`"
        } else {
            "letters, digits, `_` and `-`"
        };
        bail!(file.at(
            value,
            &format!("{key} `{text}` must be non-empty and use only {allowed}")
        ));
    }
    Ok(())
}

fn qos(file: &Located, value: &Spanned<u8>, key: &str) -> Result<()> {
    if *value.get_ref() > 2 {
        bail!(file.at(
            value,
            &format!("{key} must be 0, 1 or 2, not {}", value.get_ref())
        ));
    }
    Ok(())
}

fn positive_seconds(file: &Located, value: &Spanned<f64>, key: &str) -> Result<()> {
    let seconds = *value.get_ref();
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!(file.at(
            value,
            &format!("{key} must be a positive number of seconds, not {seconds}")
        ));
    }
    Ok(())
}

fn check_url(file: &Located, url: &Spanned<String>, label: &str) -> Result<()> {
    let text = url.get_ref();
    let problem = match text.parse::<ureq::http::Uri>() {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            _ if uri.authority().is_some_and(|a| a.as_str().contains('@')) => Some(
                "holds credentials, which would show in logs: use http.username and http.password"
                    .to_string(),
            ),
            (Some("http"), Some(host)) if !host.is_empty() => None,
            (Some("https"), _) => {
                Some("uses https, which this build does not support: use http".to_string())
            }
            (Some("http"), _) => Some("has no host".to_string()),
            _ => Some("must start with http://".to_string()),
        },
    };
    match problem {
        Some(problem) => bail!(file.at(url, &format!("{label}: http.url `{text}` {problem}"))),
        None => Ok(()),
    }
}

/// The file being read, to turn byte spans into `FILE:LINE` messages that quote the line.
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Located<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        self.text.as_bytes()[..span.start.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&self, value: &Spanned<T>, message: &str) -> anyhow::Error {
        let span = value.span();
        self.error((span != (0..0)).then_some(span), message)
    }

    fn anywhere(&self, message: &str) -> anyhow::Error {
        self.error(None, message)
    }

    /// `FILE:LINE: [TABLE] KEY: MESSAGE (line text)`; the table and key come from the text around the span,
    /// since toml's messages name neither.
    fn error(&self, span: Option<Range<usize>>, message: &str) -> anyhow::Error {
        let path = self.path.display();
        let Some(span) = span else {
            return anyhow::anyhow!("{path}: {message}");
        };
        let line = self.line(span);
        let lines: Vec<&str> = self.text.lines().collect();
        let quoted = lines.get(line - 1).map(|l| l.trim()).unwrap_or_default();
        let table = lines[..line.min(lines.len())]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| l.starts_with('['))
            .map(|header| format!(" in {}", header.split('#').next().unwrap_or(header).trim()))
            .unwrap_or_default();
        let key = quoted
            .split_once('=')
            .filter(|(key, _)| !key.starts_with('['))
            .map(|(key, _)| format!(" key `{}`", key.trim()))
            .unwrap_or_default();
        anyhow::anyhow!("{path}:{line}:{table}{key}: {message} (line {line}: `{quoted}`)")
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

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/capdec/capdec.toml"))
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
        assert_eq!(config.port(), 1883);
        assert_eq!(config.mqtt.base_topic.get_ref(), "capdec");
        assert_eq!(config.node_id(), "capdec");
        let camera = config.camera[0].get_ref();
        match camera.source() {
            SourceConfig::File(file) => assert_eq!(file.path, Path::new("/etc/capdec/pictures")),
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
        let config = Config::parse(&text, &path).unwrap();
        assert_eq!(
            config.camera.len(),
            3,
            "the example shows every kind of source"
        );
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
            message.contains("no camera: add at least one [[camera]]"),
            "{message}"
        );
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
            ("ftp://cam/snap.jpg", "must start with http://"),
            ("http://", "is not a URL"),
            ("not a url", "is not a URL"),
            ("https://cam/snap.jpg", "uses https"),
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
    fn secrets_come_from_files_and_never_show() {
        let dir = std::env::temp_dir().join(format!("capdec-config-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("password"), "hunter2\n").unwrap();
        let text = MINIMAL.replace(
            "host = \"localhost\"",
            "host = \"localhost\"\nusername = \"cam\"\npassword = { file = \"password\" }",
        );
        let config = Config::parse(&text, &dir.join("capdec.toml")).unwrap();
        let password = config.mqtt.password.as_ref().unwrap().get_ref();
        assert_eq!(password.expose(), "hunter2");
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
}
