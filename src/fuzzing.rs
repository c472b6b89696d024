//! What each fuzz target (fuzz/fuzz_targets/) feeds its bytes to: the parsers of everything the daemon and the
//! commands read from outside. Each returns nothing; the fuzzer looks for panics, hangs and runaway memory.

use std::path::Path;

use image::ImageFormat;

use crate::caption::preprocess::{self, Preprocessor};
use crate::daemon::config::{FrigatePhase, FrigateSettings, Settings};
use crate::daemon::frigate::event::{Filter, Verdict};
use crate::daemon::publish::inbound;
use crate::daemon::publish::topics::Topics;
use crate::daemon::sources::multipart::{self, Part, Parts};

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

/// A message on Frigate's events topic, twice through one filter (phase `new`, every camera, label and zone):
/// an event taken the first time is not taken again.
pub fn frigate_event(bytes: &[u8]) {
    let settings = FrigateSettings {
        url: "http://frigate:5000".into(),
        events_topic: "frigate/events".into(),
        cameras: Vec::new(),
        labels: Vec::new(),
        zones: Vec::new(),
        phase: FrigatePhase::New,
        crop: true,
        snapshot_height: None,
        write_description: false,
        timeout: std::time::Duration::from_secs(1),
        queue_limit: 1,
    };
    let mut filter = Filter::new(&settings);
    if let Verdict::Caption(_) = filter.consider(bytes) {
        assert_eq!(
            filter.consider(bytes),
            Verdict::Pass,
            "an event was taken twice"
        );
    }
}

/// An MJPEG camera's answer: the first line is its Content-Type, the rest the stream, read in pieces as short as
/// the first byte says (a network hands them over as it likes). The parts must be the same as from one read of
/// it all, and within the limit.
pub fn mjpeg_stream(bytes: &[u8]) {
    let Some((&piece, rest)) = bytes.split_first() else {
        return;
    };
    let (content_type, stream) = match memchr::memchr(b'\n', rest) {
        Some(at) => (String::from_utf8_lossy(&rest[..at]), &rest[at + 1..]),
        None => return,
    };
    let boundary = multipart::boundary(&content_type).unwrap_or_else(|| "frame".to_string());
    let limit = 1000;
    let parse = |piece: usize| {
        let mut parts = Parts::new(
            Pieces {
                bytes: stream,
                piece,
            },
            &boundary,
            limit,
        );
        let mut found = Vec::new();
        loop {
            match parts.next_part() {
                Ok(Some(part)) => found.push(part),
                Ok(None) => return (found, false),
                Err(_) => return (found, true),
            }
        }
    };
    let (pieces, failed) = parse(usize::from(piece).max(1));
    for part in &pieces {
        if let Part::Picture(picture) = part {
            assert!(picture.len() <= limit, "a part over the limit was kept");
        }
    }
    assert_eq!(
        (pieces, failed),
        parse(stream.len().max(1)),
        "read in pieces, the stream parses differently"
    );
}

/// A reader that hands its bytes over at most `piece` at a time.
struct Pieces<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let count = self.piece.min(out.len()).min(self.bytes.len());
        out[..count].copy_from_slice(&self.bytes[..count]);
        self.bytes = &self.bytes[count..];
        Ok(count)
    }
}
