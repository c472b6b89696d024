//! RTSP cameras (IP cameras, Frigate's and go2rtc's restreams), H.264 or Motion JPEG, through retina, on a
//! thread of its own that keeps the session playing. Between grabs it only depacketizes: it keeps the newest
//! keyframe and, unless `frame = "keyframe"`, the pictures after it; a grab decodes those (openh264) up to the
//! newest. The session is opened at the first grab and again at the grab after it failed, so the camera loop's
//! backoff spaces the reconnections.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use image::{ImageFormat, RgbImage};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use retina::client::{
    Credentials, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};

use super::feed::{self, Feed, Sink};
use super::http::megabytes;
use super::{Frame, FrameSource};
use crate::caption::preprocess;
use crate::daemon::config::{RtspFrame, RtspSettings, RtspTransport};

/// How often the reader looks up from a quiet stream to see whether it should stop.
const LOOK_UP: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    H264,
    Jpeg,
}

/// The newest keyframe and the pictures after it, as the stream sent them (Annex B access units with their
/// parameter sets on each keyframe, or whole JPEG pictures).
#[derive(Clone)]
struct Pictures {
    codec: Codec,
    units: Vec<Arc<Vec<u8>>>,
    bytes: usize,
    /// Nothing more is appended until the next keyframe: a picture was left out (the group reached the size
    /// limit, or a keyframe over it was skipped), and the pictures after it would decode against the wrong ones.
    closed: bool,
}

pub struct RtspSource {
    camera: String,
    config: RtspSettings,
    feed: Option<Feed<Pictures>>,
    /// Kept from grab to grab for its buffers; every grab starts it at a keyframe.
    decoder: Option<Decoder>,
}

impl RtspSource {
    pub fn new(camera: &str, config: &RtspSettings) -> RtspSource {
        RtspSource {
            camera: camera.to_string(),
            config: config.clone(),
            feed: None,
            decoder: None,
        }
    }

    /// The newest picture of `pictures`: the last access unit decoded, after those before it. A unit that does
    /// not decode ends the run at the picture before it.
    fn decode_h264(&mut self, pictures: &Pictures) -> Result<RgbImage> {
        let url = &self.config.url;
        let mut good = pictures.units.len();
        for attempt in 0..2 {
            let decoder = match &mut self.decoder {
                Some(decoder) => decoder,
                None => self
                    .decoder
                    .insert(Decoder::new().context("cannot start the H.264 decoder")?),
            };
            let mut broken = None;
            for (index, unit) in pictures.units[..good].iter().enumerate() {
                let last = index + 1 == good;
                match decoder.decode(unit) {
                    Ok(Some(picture)) if last => return Ok(rgb(&picture)),
                    Ok(_) => {}
                    Err(e) => {
                        broken = Some((index, e));
                        break;
                    }
                }
            }
            match broken {
                None => {
                    // A decoder that holds pictures back (reordering) gives them up now.
                    let held = decoder
                        .flush_remaining()
                        .context("cannot decode the H.264 stream")?;
                    return match held.last() {
                        Some(picture) => Ok(rgb(picture)),
                        None => bail!("{url}: no picture decoded from {good} H.264 access units"),
                    };
                }
                Some((0, e)) => bail!("{url}: the keyframe does not decode as H.264: {e}"),
                Some((index, e)) => {
                    log::debug!(camera = self.camera, attempt; "{url}: picture {index} after the keyframe does not decode ({e}); taking the one before");
                    self.decoder = None;
                    good = index;
                }
            }
        }
        Err(anyhow!("{url}: the H.264 pictures do not decode"))
    }
}

impl FrameSource for RtspSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let taken_at = SystemTime::now();
        let timeout = self.config.timeout;
        let url = &self.config.url;
        let waited_for = match self.config.frame {
            RtspFrame::Latest => "picture",
            RtspFrame::Keyframe => "keyframe",
        };
        // Not only a fresh picture: in `keyframe` mode the newest may be the one taken last time, and the
        // reader itself notices a stream gone silent.
        let pictures = feed::newest_of(
            &mut self.feed,
            timeout,
            false,
            || start(&self.camera, &self.config),
            || {
                format!(
                    "{url}: no {waited_for} within {} s of connecting (rtsp.timeout_s)",
                    timeout.as_secs_f64()
                )
            },
        )?;
        let image = match pictures.codec {
            Codec::Jpeg => preprocess::decode_rgb(
                &pictures.units[0],
                &self.config.url,
                Some(ImageFormat::Jpeg),
            )?,
            Codec::H264 => {
                let decoded = self.decode_h264(&pictures);
                if decoded.is_err() {
                    self.decoder = None;
                }
                decoded?
            }
        };
        let (width, height) = image.dimensions();
        preprocess::check_size(width, height, &self.config.url)?;
        Ok(Some(Frame {
            image,
            origin: self.config.url.clone(),
            taken_at,
        }))
    }
}

fn rgb(picture: &openh264::decoder::DecodedYUV<'_>) -> RgbImage {
    let (width, height) = picture.dimensions();
    let mut pixels = vec![0u8; width * height * 3];
    picture.write_rgb8(&mut pixels);
    // The buffer has the size the dimensions give; `from_raw` cannot fail.
    RgbImage::from_raw(width as u32, height as u32, pixels).unwrap_or_default()
}

/// How long a session that ended gets to say TEARDOWN: without it a UDP session goes on streaming to a port
/// nobody reads until the camera times it out, and cameras with few sessions refuse the reconnection.
const TEARDOWN: Duration = Duration::from_secs(2);

fn start(camera: &str, config: &RtspSettings) -> Result<Feed<Pictures>> {
    let (camera, config) = (camera.to_string(), config.clone());
    Feed::start(format!("rtsp-{camera}"), move |sink| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the RTSP client's runtime")?;
        let group = Arc::new(SessionGroup::default());
        let played = runtime.block_on(play(&config, &camera, sink, &group));
        runtime.block_on(async {
            let _ = tokio::time::timeout(TEARDOWN, group.await_teardown()).await;
        });
        played
    })
    .context("cannot start the RTSP reader thread")
}

/// Describes, sets up and plays the camera's video stream, keeping its pictures until it fails or the feed is
/// dropped.
async fn play(
    config: &RtspSettings,
    camera: &str,
    sink: &Sink<Pictures>,
    group: &Arc<SessionGroup>,
) -> Result<()> {
    let url = &config.url;
    let timeout = config.timeout;
    let within = |what: &'static str| {
        move |_| {
            anyhow!(
                "{url}: no answer to {what} within {} s",
                timeout.as_secs_f64()
            )
        }
    };
    let parsed = url::Url::parse(url).with_context(|| format!("{url}: not a URL"))?;
    let options = SessionOptions::default()
        .creds(config.credentials.as_ref().map(|c| Credentials {
            username: c.username.clone(),
            password: c.password.expose().to_string(),
        }))
        .user_agent(format!("capdec-edge/{}", env!("CARGO_PKG_VERSION")))
        .session_group(Arc::clone(group));
    let mut session = tokio::time::timeout(timeout, Session::describe(parsed, options))
        .await
        .map_err(within("DESCRIBE"))?
        .map_err(|e| session_error(url, "DESCRIBE", &e))?;
    let (index, codec) = video_stream(&session, url)?;
    let transport = match config.transport {
        RtspTransport::Tcp => Transport::Tcp(Default::default()),
        RtspTransport::Udp => Transport::Udp(Default::default()),
    };
    let setup = SetupOptions::default()
        .transport(transport)
        .frame_format(FrameFormat::SIMPLE);
    tokio::time::timeout(timeout, session.setup(index, setup))
        .await
        .map_err(within("SETUP"))?
        .map_err(|e| session_error(url, "SETUP", &e))?;
    let playing = tokio::time::timeout(timeout, session.play(PlayOptions::default()))
        .await
        .map_err(within("PLAY"))?
        .map_err(|e| session_error(url, "PLAY", &e))?;
    let mut stream = playing
        .demuxed()
        .map_err(|e| session_error(url, "PLAY", &e))?;
    let name = match codec {
        Codec::H264 => "H.264",
        Codec::Jpeg => "Motion JPEG",
    };
    log::info!(camera, transport = config.transport.as_str(); "{url}: playing {name}");
    let mut quiet = Duration::ZERO;
    let mut skipped_keyframes = 0u64;
    while !sink.stopped() {
        let item = match tokio::time::timeout(LOOK_UP, stream.next()).await {
            Err(_) => {
                quiet += LOOK_UP;
                if quiet >= timeout {
                    bail!(
                        "{url}: no video for {} s (rtsp.timeout_s)",
                        timeout.as_secs_f64()
                    );
                }
                continue;
            }
            Ok(None) => bail!("{url}: the camera ended the session"),
            Ok(Some(Err(e))) => bail!("{url}: the session failed: {}", first_line(&e)),
            Ok(Some(Ok(item))) => item,
        };
        // Only video counts as a sign of life: a camera may go on sending audio and reports without it.
        if let CodecItem::VideoFrame(frame) = item
            && frame.stream_id() == index
        {
            quiet = Duration::ZERO;
            let keyframe = codec == Codec::Jpeg || frame.is_random_access_point();
            let data = frame.into_data();
            if keyframe && data.len() as u64 > config.max_picture_bytes {
                skipped_keyframes += 1;
                // Each keyframe of a misconfigured camera is too large: one line a session.
                if skipped_keyframes == 1 {
                    log::warn!(camera; "{url}: skipped a keyframe of {}, over the limit of {} (max_picture_mb)",
                        megabytes(data.len() as u64), megabytes(config.max_picture_bytes));
                }
                close(sink);
            } else {
                keep(sink, config, codec, keyframe, data);
            }
        }
    }
    Ok(())
}

/// Appends nothing more to the group the sink holds until the next keyframe.
fn close(sink: &Sink<Pictures>) {
    sink.update(|newest| {
        if let Some(pictures) = newest {
            pictures.closed = true;
        }
        false
    });
}

/// Adds a picture (within the size limit) to what the sink holds: a keyframe starts anew, a picture after it
/// is appended (in `latest` mode, while the group stays within the size limit).
fn keep(sink: &Sink<Pictures>, config: &RtspSettings, codec: Codec, keyframe: bool, data: Vec<u8>) {
    let limit = config.max_picture_bytes;
    let size = data.len();
    sink.update(|newest| match newest {
        _ if keyframe => {
            *newest = Some(Pictures {
                codec,
                units: vec![Arc::new(data)],
                bytes: size,
                closed: false,
            });
            true
        }
        Some(pictures) if config.frame == RtspFrame::Latest && !pictures.closed => {
            if (pictures.bytes + size) as u64 > limit {
                pictures.closed = true;
                return false;
            }
            pictures.units.push(Arc::new(data));
            pictures.bytes += size;
            true
        }
        // Before the first keyframe nothing decodes; a closed group keeps what it has.
        _ => false,
    });
}

/// The first video stream in a codec decoded here.
fn video_stream<S: retina::client::State>(
    session: &Session<S>,
    url: &str,
) -> Result<(usize, Codec)> {
    let streams = session.streams();
    let found = streams.iter().enumerate().find_map(|(index, stream)| {
        match (stream.media(), stream.encoding_name()) {
            ("video", "h264") => Some((index, Codec::H264)),
            ("video" | "image", "jpeg") => Some((index, Codec::Jpeg)),
            _ => None,
        }
    });
    if let Some(found) = found {
        return Ok(found);
    }
    let offered: Vec<String> = streams
        .iter()
        .map(|s| format!("{} {}", s.media(), s.encoding_name()))
        .collect();
    if offered.iter().any(|o| o.ends_with("h265")) {
        bail!(
            "{url}: the camera sends H.265 (HEVC), which is not decoded here: switch the camera's stream (or its \
             sub-stream) to H.264, or use a [camera.command] with ffmpeg (docs/daemon.md)"
        );
    }
    bail!(
        "{url}: no H.264 or Motion JPEG video stream; the camera offers {}",
        if offered.is_empty() {
            "no streams".to_string()
        } else {
            offered.join(", ")
        }
    )
}

/// Retina's error, with a hint for the failures people meet.
fn session_error(url: &str, step: &str, error: &retina::Error) -> anyhow::Error {
    let text = first_line(error);
    match error.status_code() {
        Some(401 | 403) => anyhow!(
            "{url}: {step}: the camera refused the credentials (check rtsp.username and rtsp.password): {text}"
        ),
        Some(404) => anyhow!("{url}: {step}: the camera has no stream at this path: {text}"),
        _ => anyhow!("{url}: {step} failed: {text}"),
    }
}

/// Retina's errors go on with connection details on further lines; the log line keeps the first.
fn first_line(error: &retina::Error) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
