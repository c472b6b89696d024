//! GStreamer's RTSP server (tests/rtsp/server.c, built here against Debian's libgstrtspserver-1.0-dev) serving
//! H.264 that GStreamer's x264enc encodes from a picture as the test runs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The server program, compiled once per test run.
fn program() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp/server.c");
        let output = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rtsp-test-server");
        let flags = Command::new("pkg-config")
            .args(["--cflags", "--libs", "gstreamer-rtsp-server-1.0"])
            .output()
            .expect("pkg-config (scripts/test-all installs it)");
        assert!(
            flags.status.success(),
            "pkg-config finds no gstreamer-rtsp-server-1.0 (Debian: libgstrtspserver-1.0-dev; scripts/test-all \
             installs it): {}",
            String::from_utf8_lossy(&flags.stderr)
        );
        let flags = String::from_utf8(flags.stdout).unwrap();
        let built = Command::new("cc")
            .arg(&source)
            .args(flags.split_whitespace())
            .arg("-o")
            .arg(&output)
            .status()
            .unwrap();
        assert!(built.success(), "cannot build {}", source.display());
        output
    })
}

/// The pipeline of a camera filming `picture` at ten pictures a second, a keyframe every tenth, with these
/// options of x264 (`tune=zerolatency`: no B-frames, as most IP cameras; `bframes=2`: with them).
pub fn filming(picture: &Path, x264_options: &str) -> String {
    format!(
        "( filesrc location={} ! decodebin ! imagefreeze is-live=true ! video/x-raw,framerate=10/1 ! \
         videoconvert ! video/x-raw,format=I420 ! x264enc {x264_options} speed-preset=ultrafast \
         quantizer=12 pass=quant key-int-max=10 ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
        picture.display()
    )
}

/// A camera filming a ball that moves, 320x240 at ten pictures a second, with a keyframe only every 30 s: two
/// pictures a moment apart differ, and so do the newest picture and the newest keyframe.
pub fn filming_motion() -> String {
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 ! \
     x264enc tune=zerolatency speed-preset=ultrafast key-int-max=300 ! rtph264pay name=pay0 pt=96 \
     config-interval=-1 )"
        .to_string()
}

pub struct Server {
    child: Child,
    pub port: u16,
    pipeline: String,
    credentials: Option<(String, String)>,
    udp_only: bool,
}

impl Server {
    pub fn start(pipeline: &str, credentials: Option<(&str, &str)>) -> Server {
        let credentials = credentials.map(|(u, p)| (u.into(), p.into()));
        Server::start_on(0, pipeline, credentials, false)
    }

    /// A server that refuses to stream over TCP.
    pub fn start_udp_only(pipeline: &str) -> Server {
        Server::start_on(0, pipeline, None, true)
    }

    fn start_on(
        port: u16,
        pipeline: &str,
        credentials: Option<(String, String)>,
        udp_only: bool,
    ) -> Server {
        let mut command = Command::new(program());
        command.arg(port.to_string()).arg(pipeline);
        if udp_only {
            command.env("RTSP_TEST_UDP_ONLY", "1");
        }
        if let Some((username, password)) = &credentials {
            command.args([username, password]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the RTSP server did not start: {line:?}"));
        Server {
            child,
            port,
            pipeline: pipeline.to_string(),
            credentials,
            udp_only,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/camera", self.port)
    }

    /// Gone at once, as a camera that loses power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Back on the same port.
    pub fn restart(&mut self) {
        self.kill();
        *self = Server::start_on(
            self.port,
            &self.pipeline.clone(),
            self.credentials.clone(),
            self.udp_only,
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
