//! MJPEG streams over HTTP (`multipart/x-mixed-replace`): one connection kept open and read on a thread of its
//! own; each grab decodes the newest complete frame. The connection is opened at the first grab and again at the
//! grab after it failed, so the camera loop's backoff spaces the reconnections.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use image::ImageFormat;

use super::feed::{self, Feed, Sink};
use super::http::{Fetched, HttpClient, megabytes};
use super::multipart::{self, Part, Parts};
use super::{Frame, FrameSource};
use crate::caption::preprocess;
use crate::daemon::config::HttpSettings;

pub struct MjpegSource {
    camera: String,
    config: HttpSettings,
    feed: Option<Feed<Arc<Vec<u8>>>>,
    /// Frames over the size limit that the current connection skipped, to tell why none came.
    oversized: Arc<AtomicU64>,
}

impl MjpegSource {
    pub fn new(camera: &str, config: &HttpSettings) -> MjpegSource {
        MjpegSource {
            camera: camera.to_string(),
            config: config.clone(),
            feed: None,
            oversized: Arc::default(),
        }
    }
}

fn start(
    camera: &str,
    config: &HttpSettings,
    oversized: &Arc<AtomicU64>,
) -> Result<Feed<Arc<Vec<u8>>>> {
    let client = HttpClient::new(config, Fetched::Stream);
    let camera = camera.to_string();
    oversized.store(0, Ordering::Relaxed);
    let oversized = Arc::clone(oversized);
    Feed::start(format!("mjpeg-{camera}"), move |sink| {
        read_stream(&client, &camera, sink, &oversized)
    })
    .context("cannot start the stream's reader thread")
}

impl FrameSource for MjpegSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let timeout = self.config.timeout;
        let url = &self.config.url;
        let taken_at = SystemTime::now();
        // A fresh frame: a stream that sends nothing new has stalled, even while its connection lasts.
        let jpeg = feed::newest_of(
            &mut self.feed,
            timeout,
            true,
            || start(&self.camera, &self.config, &self.oversized),
            || match self.oversized.load(Ordering::Relaxed) {
                0 => format!(
                    "{url}: no complete frame within {} s: the stream stalled",
                    timeout.as_secs_f64()
                ),
                skipped => format!(
                    "{url}: no frame within {} s under the size limit: {skipped} over {} (max_picture_mb) \
                     were skipped",
                    timeout.as_secs_f64(),
                    megabytes(self.config.max_picture_bytes)
                ),
            },
        )?;
        let image = preprocess::decode_rgb(&jpeg, url, Some(ImageFormat::Jpeg))?;
        Ok(Some(Frame {
            image,
            origin: url.clone(),
            taken_at,
        }))
    }
}

/// Reads the stream until it fails or the feed is dropped, keeping the newest frame.
fn read_stream(
    client: &HttpClient,
    camera: &str,
    sink: &Sink<Arc<Vec<u8>>>,
    oversized: &AtomicU64,
) -> Result<()> {
    let url = &client.url;
    let response = client.get("an MJPEG stream")?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(boundary) = multipart::boundary(&content_type) else {
        bail!(
            "{url}: the answer is `{content_type}`, not a multipart/x-mixed-replace stream with a boundary \
             (for a snapshot URL use [camera.http])"
        );
    };
    let limit = usize::try_from(client.max_picture_bytes).unwrap_or(usize::MAX);
    let reader = UntilStopped {
        reader: response.into_body().into_reader(),
        sink,
    };
    let mut parts = Parts::new(reader, &boundary, limit);
    log::info!(camera; "{url}: reading the MJPEG stream");
    let mut garbage_reported = false;
    while !sink.stopped() {
        let part = parts.next_part().map_err(|e| stream_error(e, client))?;
        match part {
            None => bail!("{url}: the stream ended"),
            Some(Part::Picture(jpeg)) => sink.update(|newest| {
                *newest = Some(Arc::new(jpeg));
                true
            }),
            Some(Part::Oversized { bytes }) => {
                // Every frame of a misconfigured camera may be too large: one line a connection, then a count.
                if oversized.fetch_add(1, Ordering::Relaxed) == 0 {
                    let size = bytes.map_or("a frame".to_string(), |b| {
                        format!("a frame of {}", megabytes(b))
                    });
                    log::warn!(camera;
                        "{url}: skipped {size}, over the limit of {} (max_picture_mb)",
                        megabytes(client.max_picture_bytes));
                }
            }
        }
        if parts.garbage > 0 && !garbage_reported {
            garbage_reported = true;
            log::warn!(camera;
                "{url}: {} bytes between frames belonged to no frame and were passed over", parts.garbage);
        }
    }
    Ok(())
}

/// The stream's reader, which fails once the feed is dropped: a part being read past (one over the limit) must
/// not keep the connection and its thread after the camera gave up on them.
struct UntilStopped<'a, R> {
    reader: R,
    sink: &'a Sink<Arc<Vec<u8>>>,
}

impl<R: io::Read> io::Read for UntilStopped<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.sink.stopped() {
            return Err(io::Error::other("the camera stopped reading the stream"));
        }
        self.reader.read(out)
    }
}

/// A read that timed out is a stalled stream; other failures say what they are.
fn stream_error(error: anyhow::Error, client: &HttpClient) -> anyhow::Error {
    let url = &client.url;
    let timed_out = |io: &io::Error| {
        io.kind() == io::ErrorKind::TimedOut
            || io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ureq::Error>())
                .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
    };
    match error.downcast_ref::<io::Error>() {
        Some(io) if timed_out(io) => anyhow::anyhow!(
            "{url}: nothing received for {} s: the stream stalled",
            client.timeout.as_secs_f64()
        ),
        Some(io) => anyhow::anyhow!("{url}: the stream broke: {io}"),
        None => anyhow::anyhow!("{url}: {error:#}"),
    }
}
