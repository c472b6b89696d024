//! The daemon's settings once the file has been checked and resolved: plain values, defaults applied, secrets and
//! TLS files read, paths absolute (or relative to the working folder, as the file's own path was). What the
//! daemon runs on; nothing after `Settings::load` can find the configuration wrong.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use rumqttc::QoS;
use rustls_pki_types::CertificateDer;

#[derive(Debug)]
pub struct Settings {
    pub log_level: LevelFilter,
    pub model: ModelSettings,
    pub mqtt: MqttSettings,
    pub home_assistant: HomeAssistantSettings,
    /// The HTTP API, where the file has an `[api]` table.
    pub api: Option<ApiSettings>,
    /// Frigate's events captioned, where the file has a `[frigate]` table.
    pub frigate: Option<FrigateSettings>,
    pub cameras: Vec<CameraSettings>,
}

/// Frigate's tracked objects: which events are captioned, and how their snapshots are fetched.
#[derive(Debug, Clone)]
pub struct FrigateSettings {
    /// Frigate's API, without a trailing slash: `http://frigate:5000`.
    pub url: String,
    /// `<topic_prefix>/events`.
    pub events_topic: String,
    /// Frigate's camera names, labels and zones an event must have; each empty for any.
    pub cameras: Vec<String>,
    pub labels: Vec<String>,
    pub zones: Vec<String>,
    pub phase: FrigatePhase,
    /// The snapshot cropped to the object.
    pub crop: bool,
    /// The snapshot's height Frigate scales to, where given.
    pub snapshot_height: Option<u32>,
    /// The caption written back as the event's description.
    pub write_description: bool,
    /// Each request to Frigate.
    pub timeout: Duration,
    /// Events waiting for their caption; more are dropped and counted.
    pub queue_limit: usize,
}

/// When in an event's life its snapshot is captioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrigatePhase {
    /// As soon as the object is confirmed (and has entered a configured zone, where zones are given).
    New,
    /// When the event ends, with its best snapshot.
    End,
}

/// The HTTP API that Ollama's and OpenAI's clients call.
#[derive(Debug)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Where set, every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Requests taken at once (their bodies read, waiting for the captioner or being captioned); more are
    /// answered 503 at once.
    pub queue_limit: usize,
    /// A larger request body is answered 413 without being read.
    pub max_body_bytes: u64,
    /// For reading a request and for its caption: past it the answer is 408 or 504.
    pub timeout: Duration,
}

/// Where the file says nothing about a model, the command line's discovery rules apply.
#[derive(Debug, Default)]
pub struct ModelSettings {
    pub bundle: Option<PathBuf>,
    pub precision: Option<String>,
    pub beam_size: Option<usize>,
    pub max_tokens: Option<usize>,
    /// Threads for inference; without it, the cores the daemon may use.
    pub threads: Option<usize>,
}

#[derive(Debug)]
pub struct MqttSettings {
    pub host: String,
    /// 1883, or 8883 with TLS, unless the file says otherwise.
    pub port: u16,
    pub client_id: String,
    pub base_topic: String,
    pub keep_alive: Duration,
    /// Captions kept while the broker is unreachable; beyond it the oldest are dropped.
    pub queue_limit: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How often `<base>/stats` is published.
    pub stats_interval: Duration,
    pub credentials: Option<Credentials>,
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The files' contents, checked to be PEM holding what each should hold, and their paths for messages.
#[derive(Debug)]
pub struct TlsSettings {
    pub ca_file: PathBuf,
    pub ca: Vec<u8>,
    pub client_auth: Option<ClientAuth>,
}

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct ClientAuth {
    pub cert_file: PathBuf,
    pub chain: Vec<u8>,
    pub key: Secret,
}

/// What an HTTPS camera's certificate must chain to: the camera's own CA file, or the system's roots.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    /// For messages: `http.ca_file /path/ca.pem` or `the system's CA certificates`.
    pub origin: String,
    pub certificates: Vec<CertificateDer<'static>>,
}

#[derive(Debug)]
pub struct HomeAssistantSettings {
    pub discovery: bool,
    pub discovery_prefix: String,
    /// Groups the entities under one device: the file's `node_id`, else the MQTT base topic.
    pub node_id: String,
    pub device_name: String,
    /// The captioned picture on `<base>/<camera>/picture` (retained) and an image entity to show it.
    pub picture: Option<PictureSettings>,
    /// The caption sensor is unavailable when no caption came for this long; `None`: never.
    pub expire_after: Option<Duration>,
}

/// The captioned picture, downscaled to fit an MQTT message.
#[derive(Debug, Clone, Copy)]
pub struct PictureSettings {
    /// Its longer side, at most, in pixels.
    pub size: u32,
    /// Its JPEG's bytes, at most: the quality is lowered, then the size, until it fits.
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct CameraSettings {
    pub name: String,
    pub interval: Duration,
    /// Cosine similarity with the last published embedding above which the decoder is skipped; 1 disables it.
    pub skip_if_similarity_above: f64,
    pub max_captions_per_minute: u32,
    /// The camera's own, else the `[mqtt]` table's.
    pub qos: QoS,
    pub retain: bool,
    pub source: SourceSettings,
}

/// Where a camera's pictures come from.
#[derive(Debug, Clone)]
pub enum SourceSettings {
    /// A folder (its newest new picture is captioned) or one picture (re-read every time).
    File(PathBuf),
    /// A snapshot URL.
    Http(HttpSettings),
    /// A `multipart/x-mixed-replace` stream URL.
    Mjpeg(HttpSettings),
    /// Only with the `rtsp` feature: without it the file is refused.
    #[cfg(feature = "rtsp")]
    Rtsp(RtspSettings),
    Command(CommandSettings),
    /// Only Linux has V4L2: elsewhere the file is refused.
    #[cfg(target_os = "linux")]
    Device(DeviceSettings),
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: String,
    pub timeout: Duration,
    pub auth: Option<HttpAuth>,
    /// For https URLs.
    pub roots: Option<TrustRoots>,
    /// A snapshot or stream frame larger than this is refused.
    pub max_picture_bytes: u64,
}

#[cfg_attr(not(feature = "rtsp"), allow(dead_code))]
#[derive(Debug, Clone)]
pub struct RtspSettings {
    /// Without credentials: those are in `credentials`, so that the URL can be logged.
    pub url: String,
    pub credentials: Option<Credentials>,
    pub transport: RtspTransport,
    /// For each request's answer, for the first picture, and the longest quiet the stream may have.
    pub timeout: Duration,
    pub frame: RtspFrame,
    /// A keyframe larger than this is skipped; the pictures kept after one stay within it.
    pub max_picture_bytes: u64,
}

#[cfg_attr(not(feature = "rtsp"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    Tcp,
    Udp,
}

#[cfg_attr(not(feature = "rtsp"), allow(dead_code))]
impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

/// Which picture a grab decodes.
#[cfg_attr(not(feature = "rtsp"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspFrame {
    /// The newest: the last keyframe and every picture after it are decoded.
    Latest,
    /// The last keyframe only: the least work, a picture up to a keyframe interval old.
    Keyframe,
}

/// A program that prints a picture on its standard output.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// The program (found on PATH when the configuration was read) and its arguments.
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub max_picture_bytes: u64,
}

#[derive(Debug, Clone)]
pub enum HttpAuth {
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// A V4L2/USB camera; the size and rate are requests, the camera picks the closest it has.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub select: DeviceSelect,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
}

#[derive(Debug, Clone)]
pub enum DeviceSelect {
    /// `/dev/videoN`.
    Index(u32),
    /// V4L2's card name, as `v4l2-ctl --list-devices` shows it.
    Name(String),
}

/// A password, token or key, read from wherever the file said; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(super) fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl SourceSettings {
    /// One line for `check-config`'s summary.
    pub fn describe(&self) -> String {
        match self {
            SourceSettings::File(path) => format!("file {}", path.display()),
            SourceSettings::Http(http) => format!("http {}", http.url),
            SourceSettings::Mjpeg(http) => format!("mjpeg {}", http.url),
            #[cfg(feature = "rtsp")]
            SourceSettings::Rtsp(rtsp) => format!(
                "rtsp {} ({}, {} frame)",
                rtsp.url,
                rtsp.transport.as_str(),
                match rtsp.frame {
                    RtspFrame::Latest => "latest",
                    RtspFrame::Keyframe => "keyframe",
                }
            ),
            // Only the program: its arguments may hold a camera's password (an ffmpeg input URL).
            // Only the program: its arguments may hold a camera's password (an ffmpeg input URL).
            SourceSettings::Command(command) => format!(
                "command {}",
                command.argv.first().map_or("", String::as_str)
            ),
            #[cfg(target_os = "linux")]
            SourceSettings::Device(device) => format!("device {}", device.select.describe()),
        }
    }
}

impl DeviceSelect {
    pub fn describe(&self) -> String {
        match self {
            DeviceSelect::Index(index) => format!("/dev/video{index}"),
            DeviceSelect::Name(name) => format!("`{name}`"),
        }
    }
}
