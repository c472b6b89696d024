//! The `mjpeg` frame source against multipart/x-mixed-replace streams served on loopback: a good camera (with
//! and without each part's Content-Length, with basic authentication), one that stalls, one that sends garbage
//! between its parts, one whose frames are over the size limit, and streams that are not multipart at all.

mod mjpeg;

use std::path::Path;

use capdec_edge::daemon::config::{Settings, SourceSettings};
use capdec_edge::daemon::sources::{FrameSource, MjpegSource};
use mjpeg::{MULTIPART, big_and_small, good_camera, jpeg, noisy, only_big, raw, serve, stalls};

fn source(url: &str, extra: &str) -> MjpegSource {
    let text = format!(
        "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"cam\"\n[camera.mjpeg]\nurl = \"{url}\"\ntimeout_s = 1\n{extra}\n"
    );
    let config = Settings::parse(&text, Path::new("test.toml")).unwrap();
    match &config.cameras[0].source {
        SourceSettings::Mjpeg(http) => MjpegSource::new("cam", http),
        other => panic!("expected an mjpeg source, got {other:?}"),
    }
}

fn grab_error(source: &mut MjpegSource) -> String {
    match source.grab() {
        Ok(_) => panic!("the grab should fail"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn frames_of_a_stream_are_taken_from_one_connection_with_basic_auth() {
    // base64("user:pass")
    let url = serve(MULTIPART, Some("Basic dXNlcjpwYXNz"), good_camera);
    let mut camera = source(&url, "username = \"user\"\npassword = \"pass\"");
    let expected = image::load_from_memory(&jpeg()).unwrap().to_rgb8();
    for _ in 0..5 {
        let frame = camera.grab().unwrap().expect("a frame");
        assert_eq!(frame.image, expected);
        assert_eq!(frame.origin, url);
    }
    let error = grab_error(&mut source(
        &url,
        "username = \"user\"\npassword = \"nope\"",
    ));
    assert!(error.contains("HTTP 401 Unauthorized: the camera refused the credentials (check mjpeg.username/password/bearer_token)"), "{error}");
}

#[test]
fn a_stream_that_stalls_is_an_error_and_is_opened_again() {
    let url = serve(MULTIPART, None, stalls);
    let mut camera = source(&url, "");
    camera.grab().unwrap().expect("the one frame");
    let error = grab_error(&mut camera);
    assert!(error.starts_with(&url), "{error}");
    assert!(error.contains("the stream stalled"), "{error}");
    // A new connection sends its one frame again.
    camera
        .grab()
        .unwrap()
        .expect("the frame of the next connection");
}

#[test]
fn garbage_between_parts_is_passed_over() {
    let url = serve(MULTIPART, None, noisy);
    let mut camera = source(&url, "");
    for _ in 0..3 {
        camera.grab().unwrap().expect("a frame");
    }
}

#[test]
fn frames_over_the_size_limit_are_skipped() {
    let mut camera = source(
        &serve(MULTIPART, None, big_and_small),
        "max_picture_mb = 0.2",
    );
    for _ in 0..3 {
        let frame = camera.grab().unwrap().expect("a frame");
        // The small one, rocket.jpg; the big ones (chelsea.png, 240 kB) are 451x300.
        assert_eq!(frame.image.dimensions(), (640, 427));
    }
    let error = grab_error(&mut source(
        &serve(MULTIPART, None, only_big),
        "max_picture_mb = 0.2",
    ));
    assert!(
        error.contains("no frame within 1 s under the size limit: ")
            && error.contains(" over 0.2 MB (max_picture_mb) were skipped"),
        "{error}"
    );
}

#[test]
fn a_stream_without_part_boundaries_is_an_error() {
    let url = serve(MULTIPART, None, raw);
    let error = grab_error(&mut source(&url, "max_picture_mb = 0.1"));
    assert!(
        error.contains("no part boundary `--frame` in ") && error.contains("is not the multipart"),
        "{error}"
    );
    let url = serve("image/jpeg", None, raw);
    let error = grab_error(&mut source(&url, ""));
    assert!(
        error.contains(
            "the answer is `image/jpeg`, not a multipart/x-mixed-replace stream with a boundary (for a \
             snapshot URL use [camera.http])"
        ),
        "{error}"
    );
}
