//! Frame sources: where a camera's pictures come from. A source hands out a fresh picture when asked, never a
//! backlog: a folder gives its newest new file, an HTTP camera a snapshot taken now, a USB camera the frame
//! after the ones its driver had buffered.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use base64::Engine;
use image::RgbImage;

use crate::config::{CameraConfig, FileSourceConfig, HttpSourceConfig, SourceConfig};
use crate::preprocess;

/// Largest snapshot accepted over HTTP; a camera's JPEG is far smaller, a misconfigured URL may not be.
const MAX_SNAPSHOT_BYTES: u64 = 32 << 20;

pub struct Frame {
    pub image: RgbImage,
    /// Where the picture came from, for the caption's record and the logs.
    pub origin: String,
    pub taken_at: SystemTime,
}

/// Sources live on their camera's thread (a USB camera handle cannot move between threads), so they are
/// opened there, from the camera's configuration.
pub trait FrameSource {
    /// A picture taken now, or `None` when there is nothing new to look at (a folder without new files).
    fn grab(&mut self) -> Result<Option<Frame>>;
}

/// The source a camera's configuration describes.
pub fn open(camera: &CameraConfig) -> Box<dyn FrameSource> {
    match camera.source() {
        SourceConfig::File(file) => Box::new(FileSource::new(file)),
        SourceConfig::Http(http) => Box::new(HttpSource::new(http)),
        #[cfg(feature = "camera")]
        SourceConfig::Device(device) => Box::new(device::DeviceSource::new(device)),
        #[cfg(not(feature = "camera"))]
        SourceConfig::Device(_) => {
            unreachable!("Config::load refuses [camera.device] without the camera feature")
        }
    }
}

/// A folder whose new pictures are captioned as they appear, or a single picture re-read every time.
pub struct FileSource {
    path: PathBuf,
    /// Folder entries already taken or passed over.
    seen: HashSet<OsString>,
}

impl FileSource {
    pub fn new(config: &FileSourceConfig) -> FileSource {
        FileSource {
            path: config.path.clone(),
            seen: HashSet::new(),
        }
    }

    /// The newest file not seen before; older unseen ones are passed over, since a caption of an old picture
    /// is stale news. Dot-files are skipped: writers create a dot-file and rename it when it is complete.
    fn newest_new_file(&mut self) -> Result<Option<PathBuf>> {
        let entries = fs::read_dir(&self.path)
            .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
        let mut newest: Option<(SystemTime, OsString)> = None;
        for entry in entries {
            let entry = entry
                .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || self.seen.contains(&name) {
                continue;
            }
            // An entry that vanished or is not a file is not a picture; it may become one later.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            self.seen.insert(name.clone());
            if newest
                .as_ref()
                .is_none_or(|best| (modified, &name) > (best.0, &best.1))
            {
                newest = Some((modified, name));
            }
        }
        Ok(newest.map(|(_, name)| self.path.join(name)))
    }
}

impl FrameSource for FileSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let path = if self.path.is_dir() {
            match self.newest_new_file()? {
                Some(path) => path,
                None => return Ok(None),
            }
        } else {
            self.path.clone()
        };
        let taken_at = SystemTime::now();
        let image = preprocess::load_rgb(&path)?;
        Ok(Some(Frame {
            image,
            origin: path.display().to_string(),
            taken_at,
        }))
    }
}

/// A JPEG snapshot URL: an ESP32-CAM, an IP camera, Frigate's `latest.jpg`.
pub struct HttpSource {
    url: String,
    timeout: Duration,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl HttpSource {
    pub fn new(config: &HttpSourceConfig) -> HttpSource {
        let timeout = Duration::from_secs_f64(*config.timeout_s.get_ref());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let authorization = match (&config.username, &config.password, &config.bearer_token) {
            (Some(user), password, _) => {
                let password = password
                    .as_ref()
                    .map(|p| p.get_ref().expose())
                    .unwrap_or_default();
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {encoded}"))
            }
            (None, _, Some(token)) => Some(format!("Bearer {}", token.get_ref().expose())),
            (None, _, None) => None,
        };
        HttpSource {
            url: config.url.get_ref().clone(),
            timeout,
            authorization,
            agent,
        }
    }

    fn fetch(&self) -> Result<Vec<u8>> {
        let url = &self.url;
        let mut request = self.agent.get(url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.call().map_err(|e| self.describe(e))?;
        let status = response.status();
        if status == 401 || status == 403 {
            bail!(
                "{url}: HTTP {status}: the camera refused the credentials (check http.username/password/bearer_token)"
            );
        }
        if !status.is_success() {
            bail!("{url}: HTTP {status}, expected 200 with a JPEG snapshot");
        }
        response
            .body_mut()
            .with_config()
            .limit(MAX_SNAPSHOT_BYTES)
            .read_to_vec()
            .map_err(|e| self.describe(e))
    }

    fn describe(&self, error: ureq::Error) -> anyhow::Error {
        let url = &self.url;
        match error {
            ureq::Error::Timeout(_) => anyhow::anyhow!(
                "{url}: no complete answer within {} s",
                self.timeout.as_secs_f64()
            ),
            ureq::Error::BodyExceedsLimit(limit) => {
                anyhow::anyhow!("{url}: the snapshot is larger than {} MiB", limit >> 20)
            }
            ureq::Error::HostNotFound => anyhow::anyhow!("{url}: host not found"),
            ureq::Error::Io(e) => anyhow::anyhow!("{url}: {e}"),
            other => anyhow::anyhow!("{url}: {other}"),
        }
    }
}

impl FrameSource for HttpSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let taken_at = SystemTime::now();
        let bytes = self.fetch()?;
        let image = preprocess::decode_rgb(&bytes, &self.url, None)?;
        Ok(Some(Frame {
            image,
            origin: self.url.clone(),
            taken_at,
        }))
    }
}

#[cfg(feature = "camera")]
mod device {
    //! USB/V4L2 cameras through nokhwa. The stream stays open between pictures; a failure closes it, and the
    //! next grab (after the daemon's backoff) opens it again, which is what brings back an unplugged camera.

    use std::time::SystemTime;

    use anyhow::{Context, Result};
    use image::ImageFormat;
    use nokhwa::Camera;
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
    };

    use super::{Frame, FrameSource};
    use crate::config::DeviceSourceConfig;
    use crate::preprocess;

    /// Frames a V4L2 driver keeps queued; they are older than the moment of asking, so they are skipped.
    const DRIVER_BUFFERS: usize = 4;

    pub struct DeviceSource {
        index: CameraIndex,
        requested: RequestedFormatType,
        label: String,
        camera: Option<Camera>,
    }

    impl DeviceSource {
        pub fn new(config: &DeviceSourceConfig) -> DeviceSource {
            let (index, label) = match (&config.index, &config.name) {
                (Some(index), _) => (CameraIndex::Index(*index), format!("/dev/video{index}")),
                (None, name) => {
                    let name = name.clone().unwrap_or_default();
                    (
                        CameraIndex::String(name.clone()),
                        format!("camera `{name}`"),
                    )
                }
            };
            let resolution = config
                .width
                .zip(config.height)
                .map(|(w, h)| Resolution::new(w, h));
            let requested = match (resolution, config.fps) {
                (Some(resolution), fps) => RequestedFormatType::Closest(CameraFormat::new(
                    resolution,
                    FrameFormat::MJPEG,
                    fps.unwrap_or(5),
                )),
                (None, Some(fps)) => RequestedFormatType::HighestFrameRate(fps),
                (None, None) => RequestedFormatType::AbsoluteHighestResolution,
            };
            DeviceSource {
                index,
                requested,
                label,
                camera: None,
            }
        }

        fn open(&self) -> Result<Camera> {
            let format = RequestedFormat::new::<RgbFormat>(self.requested);
            let mut camera = Camera::new(self.index.clone(), format)
                .with_context(|| format!("{}: cannot open the camera", self.label))?;
            camera
                .open_stream()
                .with_context(|| format!("{}: cannot start streaming", self.label))?;
            Ok(camera)
        }

        fn capture(&mut self) -> Result<Frame> {
            let camera = match &mut self.camera {
                Some(camera) => camera,
                None => self.camera.insert(self.open()?),
            };
            for _ in 0..DRIVER_BUFFERS {
                camera
                    .frame_raw()
                    .with_context(|| format!("{}: cannot read a frame", self.label))?;
            }
            let taken_at = SystemTime::now();
            let buffer = camera
                .frame()
                .with_context(|| format!("{}: cannot read a frame", self.label))?;
            // MJPEG goes through the same JPEG checks as files; nokhwa converts the raw formats.
            let image = if buffer.source_frame_format() == FrameFormat::MJPEG {
                preprocess::decode_rgb(buffer.buffer(), &self.label, Some(ImageFormat::Jpeg))?
            } else {
                buffer
                    .decode_image::<RgbFormat>()
                    .with_context(|| format!("{}: cannot convert the frame to RGB", self.label))?
            };
            Ok(Frame {
                image,
                origin: self.label.clone(),
                taken_at,
            })
        }
    }

    impl FrameSource for DeviceSource {
        fn grab(&mut self) -> Result<Option<Frame>> {
            let frame = self.capture();
            if frame.is_err() {
                // Closed now, reopened on the next grab: an unplugged camera comes back with a new stream.
                self.camera = None;
            }
            frame.map(Some)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_missing_camera_is_an_error_that_names_it() {
            let config = DeviceSourceConfig {
                index: Some(97),
                name: None,
                width: None,
                height: None,
                fps: None,
            };
            let mut source = DeviceSource::new(&config);
            let error = source
                .grab()
                .err()
                .expect("no /dev/video97 on a test machine");
            assert!(
                format!("{error:#}").contains("/dev/video97: cannot open the camera"),
                "{error:#}"
            );
            assert!(source.camera.is_none());
        }
    }
}
