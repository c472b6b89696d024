//! Frame sources: where a camera's pictures come from. A source hands out a fresh picture when asked, never a
//! backlog: a folder gives its newest new file, an HTTP camera a snapshot taken now, a USB camera the frame
//! after the ones its driver had buffered.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use base64::Engine;
use image::RgbImage;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::caption::preprocess;
use crate::daemon::config::{HttpAuth, HttpSettings, SourceSettings};
use crate::daemon::tls;

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
pub(crate) fn open(source: &SourceSettings) -> Box<dyn FrameSource> {
    match source {
        SourceSettings::File(path) => Box::new(FileSource::new(path)),
        SourceSettings::Http(http) => Box::new(HttpSource::new(http)),
        #[cfg(target_os = "linux")]
        SourceSettings::Device(device) => Box::new(device::DeviceSource::new(device)),
    }
}

/// A folder whose new pictures are captioned as they appear, or a single picture re-read every time.
pub(crate) struct FileSource {
    path: PathBuf,
    /// Folder entries already taken or passed over.
    seen: HashSet<OsString>,
}

impl FileSource {
    pub fn new(path: &Path) -> FileSource {
        FileSource {
            path: path.to_path_buf(),
            seen: HashSet::new(),
        }
    }

    /// The newest file not seen before; older unseen ones are passed over, since a caption of an old picture
    /// is stale news. Dot-files are skipped: writers create a dot-file and rename it when it is complete.
    fn newest_new_file(&mut self) -> Result<Option<PathBuf>> {
        let entries = fs::read_dir(&self.path)
            .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
        let mut newest: Option<(SystemTime, OsString)> = None;
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry
                .with_context(|| format!("{}: cannot list the folder", self.path.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            present.insert(name.clone());
            if self.seen.contains(&name) {
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
        // Forget what was removed: a folder that is emptied as it is filled would otherwise grow this forever.
        self.seen.retain(|name| present.contains(name));
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

/// A JPEG snapshot URL: an ESP32-CAM, an IP camera, Frigate's `latest.jpg`; over HTTPS, verified against the
/// camera's CA file or the system's roots.
pub struct HttpSource {
    url: String,
    timeout: Duration,
    authorization: Option<String>,
    /// What the certificate of an https camera is checked against, for messages.
    roots: Option<String>,
    agent: ureq::Agent,
}

impl HttpSource {
    pub fn new(config: &HttpSettings) -> HttpSource {
        let timeout = config.timeout;
        let mut agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false);
        if let Some(roots) = &config.roots {
            let certificates: Vec<Certificate<'static>> = roots
                .certificates
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            agent = agent.tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::Rustls)
                    .root_certs(RootCerts::from(certificates))
                    // rumqttc's, already in the binary; ureq's default would add ring.
                    .unversioned_rustls_crypto_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .build(),
            );
        }
        let agent = agent.build().into();
        let authorization = config.auth.as_ref().map(|auth| match auth {
            HttpAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                format!("Basic {encoded}")
            }
            HttpAuth::Bearer(token) => format!("Bearer {}", token.expose()),
        });
        HttpSource {
            url: config.url.clone(),
            timeout,
            authorization,
            roots: config.roots.as_ref().map(|roots| roots.origin.clone()),
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
        let tls_cause = match &error {
            ureq::Error::Rustls(cause) => Some(cause),
            ureq::Error::Io(io) => tls::rustls_cause(io),
            _ => None,
        };
        if let Some(roots) = &self.roots
            && let Some(cause) = tls_cause
        {
            let host = url
                .parse::<ureq::http::Uri>()
                .ok()
                .and_then(|uri| uri.host().map(str::to_string))
                .unwrap_or_default();
            let peer = tls::Peer {
                what: "the camera",
                host: &host,
                host_key: "http.url",
                roots,
                client_cert: None,
                client_hint: "camera sources do not send one",
            };
            return anyhow::anyhow!("{url}: {}", tls::explain(cause, &peer));
        }
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

#[cfg(target_os = "linux")]
mod v4l2;

#[cfg(target_os = "linux")]
mod device {
    //! USB/V4L2 cameras. The stream stays open between pictures; a failure closes it, and the next grab (after
    //! the daemon's backoff) opens it again, which is what brings back an unplugged camera.

    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use anyhow::{Context, Result, bail};
    use image::{ImageFormat, RgbImage};

    use super::v4l2::{Device, Filled, FourCc, Negotiated, Stream};
    use super::{Frame, FrameSource};
    use crate::caption::preprocess;
    use crate::daemon::config::{DeviceSelect, DeviceSettings};

    /// How long a streaming camera may take to deliver a frame before the grab fails (and the stream is
    /// reopened): a stalled USB camera must not hold its thread forever.
    const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

    /// Buffers the driver fills in turn; the ones filled before a grab are skipped.
    const BUFFERS: u32 = 3;

    /// The formats taken, best first: compressed frames are small and go through the same JPEG checks as files.
    const FORMATS: [FourCc; 3] = [FourCc::MJPG, FourCc::JPEG, FourCc::YUYV];

    pub struct DeviceSource {
        config: DeviceSettings,
        label: String,
        stream: Option<(Stream, Negotiated)>,
    }

    impl DeviceSource {
        pub fn new(config: &DeviceSettings) -> DeviceSource {
            let label = match &config.select {
                DeviceSelect::Index(index) => format!("/dev/video{index}"),
                DeviceSelect::Name(name) => format!("camera `{name}`"),
            };
            DeviceSource {
                config: config.clone(),
                label,
                stream: None,
            }
        }

        /// `/dev/videoN` by index, or the capture device whose name (V4L2's card name, as
        /// `v4l2-ctl --list-devices` shows it) is the configured one.
        fn find(&self) -> Result<Device> {
            let wanted = match &self.config.select {
                DeviceSelect::Index(index) => {
                    let path = PathBuf::from(format!("/dev/video{index}"));
                    return Device::open(&path)
                        .with_context(|| format!("{}: cannot open the camera", self.label));
                }
                DeviceSelect::Name(name) => name,
            };
            let devices = Device::all()
                .with_context(|| format!("{}: cannot list /dev for cameras", self.label))?;
            let mut seen = Vec::new();
            for (path, device) in devices {
                match device {
                    Ok(device) if device.name == *wanted => return Ok(device),
                    Ok(device) => seen.push(format!("{} `{}`", path.display(), device.name)),
                    Err(_) => {}
                }
            }
            if seen.is_empty() {
                bail!(
                    "{}: cannot open the camera: no V4L2 capture device is connected",
                    self.label
                );
            }
            bail!(
                "{}: cannot open the camera: no capture device has that name (connected: {})",
                self.label,
                seen.join(", ")
            )
        }

        fn open(&self) -> Result<(Stream, Negotiated)> {
            let device = self.find()?;
            let offered = device
                .formats()
                .with_context(|| format!("{}: cannot list the camera's formats", self.label))?;
            let Some(&wanted) = FORMATS.iter().find(|f| offered.contains(f)) else {
                bail!(
                    "{}: the camera offers none of the formats read here (MJPG, JPEG, YUYV); it has {}",
                    self.label,
                    names(&offered)
                );
            };
            // Without a requested size the driver clamps "as large as possible" to its largest.
            let (width, height) = self.config.size.unwrap_or((u32::MAX, u32::MAX));
            let format = device
                .set_format(wanted, width, height)
                .with_context(|| format!("{}: cannot set the capture format", self.label))?;
            if !FORMATS.contains(&format.pixel_format) {
                bail!(
                    "{}: asked for {}, the driver chose {}, which is not read here",
                    self.label,
                    wanted.name(),
                    format.pixel_format.name()
                );
            }
            if let Some(fps) = self.config.fps {
                // A request: a driver without frame-rate control refuses, and the camera keeps its own rate.
                if let Err(e) = device.set_frame_rate(fps) {
                    log::debug!("{}: frame rate {fps} not set: {e}", self.label);
                }
            }
            let name = device.name.clone();
            let stream = device
                .stream(BUFFERS)
                .with_context(|| format!("{}: cannot start streaming", self.label))?;
            log::info!(
                "{}: streaming {}x{} {} from `{name}`",
                self.label,
                format.width,
                format.height,
                format.pixel_format.name()
            );
            Ok((stream, format))
        }

        fn capture(&mut self) -> Result<Frame> {
            let (stream, format) = match &mut self.stream {
                Some(open) => open,
                None => self.stream.insert(self.open()?),
            };
            let format = *format;
            let label = &self.label;
            let taken_at = SystemTime::now();
            let image = stream
                .newest(FRAME_TIMEOUT, |filled| match filled {
                    Filled::Frame(data) => decode(data, &format, label),
                    Filled::Corrupted => bail!("{label}: the driver marked the frame as corrupted"),
                })
                .with_context(|| format!("{label}: cannot read a frame"))??;
            Ok(Frame {
                image,
                origin: self.label.clone(),
                taken_at,
            })
        }
    }

    fn decode(data: &[u8], format: &Negotiated, label: &str) -> Result<RgbImage> {
        if format.pixel_format == FourCc::YUYV {
            preprocess::yuyv_to_rgb(
                data,
                format.width,
                format.height,
                format.bytes_per_line,
                label,
            )
        } else {
            preprocess::decode_rgb(data, label, Some(ImageFormat::Jpeg))
        }
    }

    fn names(formats: &[FourCc]) -> String {
        if formats.is_empty() {
            return "no capture formats".to_string();
        }
        formats
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    impl FrameSource for DeviceSource {
        fn grab(&mut self) -> Result<Option<Frame>> {
            let frame = self.capture();
            if frame.is_err() {
                // Closed now, reopened on the next grab: an unplugged camera comes back with a new stream.
                self.stream = None;
            }
            frame.map(Some)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn config(select: DeviceSelect) -> DeviceSettings {
            DeviceSettings {
                select,
                size: None,
                fps: None,
            }
        }

        #[test]
        fn a_missing_camera_is_an_error_that_names_it() {
            let mut source = DeviceSource::new(&config(DeviceSelect::Index(97)));
            let error = source
                .grab()
                .err()
                .expect("no /dev/video97 on a test machine");
            assert!(
                format!("{error:#}").contains("/dev/video97: cannot open the camera"),
                "{error:#}"
            );
            assert!(source.stream.is_none());
        }

        #[test]
        fn a_camera_by_a_name_no_device_has_is_an_error_that_names_it() {
            let mut source =
                DeviceSource::new(&config(DeviceSelect::Name("No Such Camera 97".into())));
            let error = format!("{:#}", source.grab().err().expect("no such camera"));
            assert!(
                error.starts_with("camera `No Such Camera 97`: cannot open the camera: no "),
                "{error}"
            );
        }

        #[test]
        fn formats_are_listed_by_their_four_character_codes() {
            assert_eq!(names(&[FourCc::MJPG, FourCc::YUYV]), "MJPG, YUYV");
            assert_eq!(names(&[]), "no capture formats");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_camera_forgets_pictures_that_were_removed() {
        let dir = std::env::temp_dir().join(format!("capdec-folder-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let picture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket.jpg");
        let mut source = FileSource::new(&dir);
        for name in ["a.jpg", "b.jpg", "c.jpg"] {
            fs::copy(&picture, dir.join(name)).unwrap();
            let frame = source.grab().unwrap().expect("the new picture");
            assert!(frame.origin.ends_with(name), "{}", frame.origin);
            fs::remove_file(dir.join(name)).unwrap();
        }
        assert!(source.grab().unwrap().is_none());
        assert!(source.seen.is_empty(), "{:?}", source.seen);
        fs::remove_dir_all(&dir).unwrap();
    }
}
