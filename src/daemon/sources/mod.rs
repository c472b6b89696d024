//! Frame sources: where a camera's pictures come from. A source hands out a fresh picture when asked, never a
//! backlog: a folder gives its newest new file, an HTTP camera a snapshot taken now, a stream (MJPEG, RTSP, a
//! USB camera) its newest frame, a command the picture it prints now.

use std::time::SystemTime;

use anyhow::Result;
use image::RgbImage;

use crate::daemon::config::SourceSettings;

mod command;
#[cfg(target_os = "linux")]
mod device;
mod feed;
mod folder;
mod http;
mod mjpeg;
pub(crate) mod multipart;
#[cfg(feature = "rtsp")]
mod rtsp;
#[cfg(target_os = "linux")]
mod v4l2;

pub use command::CommandSource;
pub use folder::FileSource;
pub use http::HttpSource;
pub use mjpeg::MjpegSource;
#[cfg(feature = "rtsp")]
pub use rtsp::RtspSource;

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

/// The source a camera's configuration describes; `camera` names it in what its reader threads log.
pub(crate) fn open(camera: &str, source: &SourceSettings) -> Box<dyn FrameSource> {
    match source {
        SourceSettings::File(path) => Box::new(FileSource::new(path)),
        SourceSettings::Http(http) => Box::new(HttpSource::new(http)),
        SourceSettings::Mjpeg(http) => Box::new(MjpegSource::new(camera, http)),
        #[cfg(feature = "rtsp")]
        SourceSettings::Rtsp(rtsp) => Box::new(RtspSource::new(camera, rtsp)),
        SourceSettings::Command(command) => Box::new(CommandSource::new(camera, command)),
        #[cfg(target_os = "linux")]
        SourceSettings::Device(device) => Box::new(device::DeviceSource::new(device)),
    }
}
