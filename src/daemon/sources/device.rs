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
        let mut source = DeviceSource::new(&config(DeviceSelect::Name("No Such Camera 97".into())));
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
