//! What each fuzz target (fuzz/fuzz_targets/) feeds its bytes to: the parsers of everything the daemon and the
//! commands read from outside. Each returns nothing; the fuzzer looks for panics, hangs and runaway memory.

use std::path::Path;

use image::ImageFormat;

use crate::caption::preprocess::{self, Preprocessor};
use crate::daemon::config::Settings;
use crate::daemon::publish::inbound;
use crate::daemon::publish::topics::Topics;

/// An image file or camera frame of any format, through the encoder's preprocessing, as `capdec caption`,
/// file, HTTP and MJPEG cameras take it.
pub fn image(bytes: &[u8]) {
    if let Ok(image) = preprocess::decode_rgb(bytes, "fuzz", None) {
        let preprocessor = Preprocessor {
            size: 16,
            mean: [0.48, 0.46, 0.41],
            std: [0.27, 0.26, 0.28],
        };
        preprocessor.tensor(&image);
    }
}

/// A V4L2 frame as a USB camera hands it over: JPEG (MJPG), or YUYV of the size in the first bytes.
pub fn camera_frame(bytes: &[u8]) {
    let Some((&[mode, width, height, padding], data)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = preprocess::decode_rgb(data, "fuzz", Some(ImageFormat::Jpeg));
    } else {
        let (width, height) = (u32::from(width), u32::from(height));
        let _ =
            preprocess::yuyv_to_rgb(data, width, height, width * 2 + u32::from(padding), "fuzz");
    }
}

pub fn bundle_manifest(text: &str) {
    let _ = crate::bundle::parse_manifest(text, Path::new("manifest.toml"));
}

/// The daemon's configuration; relative paths point into a folder that does not exist.
pub fn daemon_config(text: &str) {
    let _ = Settings::parse(text, Path::new("/nonexistent/capdec.toml"));
}

pub fn eval_references(text: &str) {
    let _ = crate::eval::parse_references(text, Path::new("references.json"));
}

/// An MQTT message on any topic; the first byte chooses the topic kind and the retain flag.
pub fn mqtt_message(bytes: &[u8]) {
    let Some((&choice, payload)) = bytes.split_first() else {
        return;
    };
    let topics = Topics::for_test("capdec", "homeassistant", "capdec");
    let topic = match choice % 4 {
        0 => "homeassistant/status".to_string(),
        1 => "capdec/porch/set".to_string(),
        2 => String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned(),
        _ => "capdec/porch/state".to_string(),
    };
    let _ = inbound::interpret(&topics, &topic, payload, choice & 4 != 0);
    let _ = inbound::shown(payload);
}
