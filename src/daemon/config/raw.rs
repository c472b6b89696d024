//! The configuration file as written: serde's view of the TOML, every value that a check may refuse kept with
//! its span so that the error can name its line. Unknown keys are errors, so that a typo never silently falls
//! back to a default. Nothing here is checked or resolved; `resolve` does both.

use std::fmt;
use std::path::PathBuf;

use log::LevelFilter;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_log_level")]
    pub log_level: LevelFilter,
    #[serde(default)]
    pub model: RawModel,
    pub mqtt: RawMqtt,
    #[serde(default)]
    pub home_assistant: RawHomeAssistant,
    pub api: Option<RawApi>,
    pub frigate: Option<RawFrigate>,
    #[serde(default)]
    pub camera: Vec<Spanned<RawCamera>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub bundle: Option<PathBuf>,
    pub precision: Option<Spanned<String>>,
    pub beam_size: Option<Spanned<usize>>,
    pub max_tokens: Option<Spanned<usize>>,
    pub threads: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    pub host: Spanned<String>,
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
    #[serde(default = "default_queue_limit")]
    pub queue_limit: Spanned<usize>,
    #[serde(default = "default_reconnect_min_s")]
    pub reconnect_min_s: Spanned<f64>,
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: Spanned<f64>,
    #[serde(default = "default_stats_interval_s")]
    pub stats_interval_s: Spanned<f64>,
    pub username: Option<String>,
    pub password: Option<Spanned<SecretSource>>,
    pub tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub ca_file: Spanned<PathBuf>,
    pub client_cert: Option<Spanned<PathBuf>>,
    pub client_key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHomeAssistant {
    #[serde(default = "yes")]
    pub discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: Spanned<String>,
    pub node_id: Option<Spanned<String>>,
    #[serde(default = "default_device_name")]
    pub device_name: String,
    #[serde(default = "yes")]
    pub picture: bool,
    #[serde(default = "default_picture_size")]
    pub picture_size: Spanned<u32>,
    #[serde(default = "default_picture_max_kb")]
    pub picture_max_kb: Spanned<u32>,
    pub expire_after_s: Option<Spanned<u32>>,
}

impl Default for RawHomeAssistant {
    fn default() -> Self {
        RawHomeAssistant {
            discovery: true,
            discovery_prefix: default_discovery_prefix(),
            node_id: None,
            device_name: default_device_name(),
            picture: true,
            picture_size: default_picture_size(),
            picture_max_kb: default_picture_max_kb(),
            expire_after_s: None,
        }
    }
}

/// The HTTP API: on when the table is there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    #[serde(default = "default_api_address")]
    pub address: Spanned<String>,
    #[serde(default = "default_api_port")]
    pub port: u16,
    pub bearer_token: Option<Spanned<SecretSource>>,
    #[serde(default = "default_api_queue_limit")]
    pub queue_limit: Spanned<usize>,
    #[serde(default = "default_api_max_body_mb")]
    pub max_body_mb: Spanned<f64>,
    #[serde(default = "default_api_timeout_s")]
    pub timeout_s: Spanned<f64>,
}

/// Frigate's tracked-object events: on when the table is there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFrigate {
    pub url: Spanned<String>,
    #[serde(default = "default_frigate_topic_prefix")]
    pub topic_prefix: Spanned<String>,
    #[serde(default)]
    pub cameras: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default = "default_frigate_phase")]
    pub phase: Spanned<String>,
    #[serde(default = "yes")]
    pub crop: bool,
    pub snapshot_height: Option<Spanned<u32>>,
    #[serde(default)]
    pub write_description: bool,
    #[serde(default = "default_source_timeout_s")]
    pub timeout_s: Spanned<f64>,
    #[serde(default = "default_frigate_queue_limit")]
    pub queue_limit: Spanned<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCamera {
    pub name: Spanned<String>,
    #[serde(default = "default_interval_s")]
    pub interval_s: Spanned<f64>,
    #[serde(default = "default_skip_if_similarity_above")]
    pub skip_if_similarity_above: Spanned<f64>,
    #[serde(default = "default_max_captions_per_minute")]
    pub max_captions_per_minute: Spanned<u32>,
    pub qos: Option<Spanned<u8>>,
    pub retain: Option<bool>,
    pub file: Option<RawFileSource>,
    pub http: Option<RawHttpSource>,
    pub mjpeg: Option<RawHttpSource>,
    pub rtsp: Option<RawRtspSource>,
    pub command: Option<RawCommandSource>,
    pub device: Option<RawDeviceSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFileSource {
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpSource {
    pub url: Spanned<String>,
    #[serde(default = "default_source_timeout_s")]
    pub timeout_s: Spanned<f64>,
    pub username: Option<String>,
    pub password: Option<Spanned<SecretSource>>,
    pub bearer_token: Option<Spanned<SecretSource>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    #[serde(default = "default_max_picture_mb")]
    pub max_picture_mb: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRtspSource {
    pub url: Spanned<String>,
    pub username: Option<String>,
    pub password: Option<Spanned<SecretSource>>,
    #[serde(default = "default_rtsp_transport")]
    pub transport: Spanned<String>,
    #[serde(default = "default_source_timeout_s")]
    pub timeout_s: Spanned<f64>,
    #[serde(default = "default_rtsp_frame")]
    pub frame: Spanned<String>,
    #[serde(default = "default_max_picture_mb")]
    pub max_picture_mb: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommandSource {
    pub argv: Spanned<Vec<String>>,
    #[serde(default = "default_source_timeout_s")]
    pub timeout_s: Spanned<f64>,
    #[serde(default = "default_max_picture_mb")]
    pub max_picture_mb: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeviceSource {
    pub index: Option<u32>,
    pub name: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
}

/// Where a password or token is: written in the file, or `{ file = "..." }`, or `{ env = "VAR" }`.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum SecretSource {
    Value(String),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("<secret>"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Env(variable) => write!(f, "env {variable}"),
        }
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SecretSource, D::Error> {
        struct SecretVisitor;
        impl<'de> Visitor<'de> for SecretVisitor {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, `{ file = \"PATH\" }` or `{ env = \"VARIABLE\" }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Value(value.to_string()))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<SecretSource, M::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty table: expected `file = \"PATH\"` or `env = \"VARIABLE\"`",
                    ));
                };
                let value: String = map.next_value()?;
                let secret = match key.as_str() {
                    "file" => SecretSource::File(PathBuf::from(value)),
                    "env" => SecretSource::Env(value),
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

fn default_log_level() -> LevelFilter {
    LevelFilter::Info
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
fn default_stats_interval_s() -> Spanned<f64> {
    unspanned(60.0)
}
fn default_discovery_prefix() -> Spanned<String> {
    unspanned("homeassistant".into())
}
fn default_picture_size() -> Spanned<u32> {
    unspanned(640)
}
fn default_picture_max_kb() -> Spanned<u32> {
    unspanned(100)
}
fn default_device_name() -> String {
    "CapDec".into()
}
fn default_api_address() -> Spanned<String> {
    unspanned("127.0.0.1".into())
}
/// Ollama's own port, which its clients and integrations assume.
fn default_api_port() -> u16 {
    11434
}
fn default_api_queue_limit() -> Spanned<usize> {
    unspanned(4)
}
fn default_api_max_body_mb() -> Spanned<f64> {
    unspanned(20.0)
}
fn default_api_timeout_s() -> Spanned<f64> {
    unspanned(30.0)
}
fn default_frigate_topic_prefix() -> Spanned<String> {
    unspanned("frigate".into())
}
fn default_frigate_phase() -> Spanned<String> {
    unspanned("end".into())
}
fn default_frigate_queue_limit() -> Spanned<usize> {
    unspanned(8)
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
fn default_source_timeout_s() -> Spanned<f64> {
    unspanned(10.0)
}
fn default_max_picture_mb() -> Spanned<f64> {
    unspanned(32.0)
}
fn default_rtsp_transport() -> Spanned<String> {
    unspanned("tcp".into())
}
fn default_rtsp_frame() -> Spanned<String> {
    unspanned("latest".into())
}
fn yes() -> bool {
    true
}

/// A default has no place in the file; an empty span makes that visible to `TomlFile::at`.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}
