//! The `rtsp` frame source against GStreamer's RTSP server on loopback, streaming H.264 that x264 encodes from a
//! picture while the test runs: the picture decoded is the picture filmed, in both frame modes, with B-frames,
//! over TCP and UDP, with and without a password, across a server that goes away and comes back; an H.265
//! camera is refused with what to do.

#![cfg(feature = "rtsp")]

mod rtsp;

use std::path::Path;
use std::time::{Duration, Instant};

use capdec_edge::daemon::config::{Settings, SourceSettings};
use capdec_edge::daemon::sources::{FrameSource, RtspSource};
use image::RgbImage;
use rtsp::{Server, filming};

const ZERO_LATENCY: &str = "tune=zerolatency";

fn picture_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scene-two.png"
    ))
}

fn source(url: &str, extra: &str) -> RtspSource {
    let text = format!(
        "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"cam\"\n[camera.rtsp]\nurl = \"{url}\"\n{extra}\n"
    );
    let config = Settings::parse(&text, Path::new("test.toml")).unwrap();
    match &config.cameras[0].source {
        SourceSettings::Rtsp(rtsp) => RtspSource::new("cam", rtsp),
        other => panic!("expected an rtsp source, got {other:?}"),
    }
}

fn grab(source: &mut RtspSource) -> RgbImage {
    match source.grab() {
        Ok(Some(frame)) => frame.image,
        Ok(None) => panic!("an RTSP camera always has a picture"),
        Err(e) => panic!("{e:#}"),
    }
}

fn grab_error(source: &mut RtspSource) -> String {
    match source.grab() {
        Ok(_) => panic!("the grab should fail"),
        Err(e) => format!("{e:#}"),
    }
}

/// Mean absolute difference per channel, 0-255.
fn difference(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn the_picture_decoded_is_the_picture_filmed_in_both_frame_modes() {
    let filmed = image::open(picture_path()).unwrap().to_rgb8();
    let other = image::open(picture_path().with_file_name("scene-three.png"))
        .unwrap()
        .to_rgb8();
    let server = Server::start(&filming(picture_path(), ZERO_LATENCY), None);
    for mode in ["latest", "keyframe"] {
        let mut source = source(&server.url(), &format!("frame = \"{mode}\""));
        // The session stays open: the second grab is a newer picture from the same connection.
        for _ in 0..2 {
            let decoded = grab(&mut source);
            // x264 at a fine quantizer, colours subsampled at sharp coloured edges, converted both ways: a few
            // levels off the filmed picture, and far from another scene of the same world.
            let off = difference(&decoded, &filmed);
            let off_other = difference(&decoded, &other);
            assert!(
                off < 6.0 && off * 3.0 < off_other,
                "{mode}: {off} levels off the filmed picture, {off_other} off another"
            );
        }
    }
}

#[test]
fn a_camera_with_a_password_wants_the_right_one() {
    let server = Server::start(
        &filming(picture_path(), ZERO_LATENCY),
        Some(("viewer", "s3cret")),
    );
    let mut right = source(
        &server.url(),
        "timeout_s = 5\nusername = \"viewer\"\npassword = \"s3cret\"",
    );
    grab(&mut right);
    for extra in ["username = \"viewer\"\npassword = \"wrong\"", ""] {
        let error = grab_error(&mut source(&server.url(), extra));
        assert!(
            error.contains(
                "the camera refused the credentials (check rtsp.username and rtsp.password)"
            ),
            "{extra:?}: {error}"
        );
        assert!(
            !error.contains("wrong"),
            "the password must not show: {error}"
        );
    }
}

#[test]
fn a_server_that_goes_away_is_reported_and_found_again_when_it_is_back() {
    let mut server = Server::start(&filming(picture_path(), ZERO_LATENCY), None);
    let url = server.url();
    let mut source = source(&url, "timeout_s = 2");
    grab(&mut source);
    server.kill();
    // Until the reader has seen the connection end, a grab still gets the newest picture it had.
    let started = Instant::now();
    let error = loop {
        match source.grab() {
            Err(e) => break format!("{e:#}"),
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(4),
                    "the server went away {:?} ago and the grabs still succeed",
                    started.elapsed()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(error.starts_with(&url), "{error}");
    // Down: the reconnection is refused, quickly, with the reason.
    let error = grab_error(&mut source);
    assert!(
        error.contains("DESCRIBE failed") && error.contains("refused"),
        "{error}"
    );
    server.restart();
    grab(&mut source);
}

#[test]
fn a_missing_stream_path_is_named() {
    let server = Server::start(&filming(picture_path(), ZERO_LATENCY), None);
    let url = format!("rtsp://127.0.0.1:{}/no-such-camera", server.port);
    let error = grab_error(&mut source(&url, ""));
    assert!(
        error.contains("the camera has no stream at this path"),
        "{error}"
    );
}

#[test]
fn a_stream_with_b_frames_decodes_too() {
    let filmed = image::open(picture_path()).unwrap().to_rgb8();
    let server = Server::start(&filming(picture_path(), "bframes=2 b-adapt=false"), None);
    let mut source = source(&server.url(), "timeout_s = 5");
    for _ in 0..3 {
        let off = difference(&grab(&mut source), &filmed);
        assert!(off < 6.0, "{off} levels off the filmed picture");
    }
}

#[test]
fn udp_transport_is_asked_for_when_configured() {
    let filmed = image::open(picture_path()).unwrap().to_rgb8();
    let server = Server::start_udp_only(&filming(picture_path(), ZERO_LATENCY));
    let mut udp = source(&server.url(), "timeout_s = 5\ntransport = \"udp\"");
    let off = difference(&grab(&mut udp), &filmed);
    assert!(off < 6.0, "{off} levels off the filmed picture");
    // The same server refuses TCP, the default: the key is what made the difference.
    let error = grab_error(&mut source(&server.url(), "timeout_s = 5"));
    assert!(error.contains("SETUP failed"), "{error}");
}

#[test]
fn latest_decodes_the_newest_picture_and_keyframe_the_newest_keyframe() {
    let server = Server::start(&rtsp::filming_motion(), None);
    let moment = Duration::from_millis(500);
    let mut latest = source(&server.url(), "timeout_s = 5");
    let first = grab(&mut latest);
    std::thread::sleep(moment);
    let later = grab(&mut latest);
    assert!(
        difference(&first, &later) > 0.1,
        "latest: the ball did not move between two grabs"
    );
    // One keyframe every 30 s: every grab within them is that keyframe.
    let mut keyframe = source(&server.url(), "timeout_s = 5\nframe = \"keyframe\"");
    let first = grab(&mut keyframe);
    std::thread::sleep(moment);
    assert_eq!(grab(&mut keyframe), first, "keyframe: another picture");
    assert!(
        difference(&grab(&mut latest), &first) > 0.1,
        "the newest picture is not the keyframe"
    );
}

#[test]
fn an_h265_camera_is_refused_with_what_to_do() {
    let pipeline = format!(
        "( filesrc location={} ! decodebin ! imagefreeze is-live=true ! video/x-raw,framerate=10/1 ! \
         videoconvert ! x265enc speed-preset=ultrafast tune=zerolatency ! rtph265pay name=pay0 pt=96 )",
        picture_path().display()
    );
    let server = Server::start(&pipeline, None);
    let error = grab_error(&mut source(&server.url(), "timeout_s = 5"));
    assert!(
        error.contains(
            "the camera sends H.265 (HEVC), which is not decoded here: switch the camera's stream"
        ),
        "{error}"
    );
}
