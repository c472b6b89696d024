//! The `command` frame source running real programs: one that prints a JPEG as rpicam-still does, one that hangs
//! (and leaves a child of its own), one that prints nothing, one that fails, one that prints too much.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capdec_edge::daemon::config::{Settings, SourceSettings};
use capdec_edge::daemon::sources::{CommandSource, FrameSource};

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("command-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn source(argv: &[&str], extra: &str) -> CommandSource {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "[mqtt]\nhost = \"h\"\n[[camera]]\nname = \"cam\"\n[camera.command]\nargv = [{}]\n{extra}\n",
        argv.join(", ")
    );
    let config = Settings::parse(&text, Path::new("test.toml")).unwrap();
    match &config.cameras[0].source {
        SourceSettings::Command(command) => CommandSource::new("cam", command),
        other => panic!("expected a command source, got {other:?}"),
    }
}

fn grab_error(source: &mut CommandSource) -> String {
    match source.grab() {
        Ok(_) => panic!("the grab should fail"),
        Err(e) => format!("{e:#}"),
    }
}

fn rocket() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket.jpg")
}

#[test]
fn a_program_that_prints_a_picture_is_captured_each_time() {
    let dir = scratch("prints");
    let program = script(
        &dir,
        "still",
        &format!(
            "echo 'still: capturing with arguments' \"$@\" >&2\ncat {}",
            rocket().display()
        ),
    );
    let mut camera = source(&[program.to_str().unwrap(), "-o", "-"], "");
    let expected = image::open(rocket()).unwrap().to_rgb8();
    for _ in 0..3 {
        let frame = camera.grab().unwrap().expect("a picture");
        assert_eq!(frame.image, expected);
        assert_eq!(frame.origin, format!("command {}", program.display()));
    }
}

/// Waits until the process whose id `pid_file` holds is gone (or a zombie, until init reaps it).
fn assert_ends(pid_file: &Path) {
    let pid = fs::read_to_string(pid_file).unwrap();
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = status.rsplit(')').next().unwrap_or("").trim_start();
        if status.is_empty() || state.starts_with('Z') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the program's child {pid} still runs: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn what_a_program_leaves_running_is_stopped_after_its_picture() {
    let dir = scratch("leaves");
    let child_pid = dir.join("child.pid");
    let program = script(
        &dir,
        "leaves",
        &format!(
            "sleep 300 &\necho $! > {}\ncat {}",
            child_pid.display(),
            rocket().display()
        ),
    );
    let mut camera = source(&[program.to_str().unwrap()], "");
    camera.grab().unwrap().expect("a picture");
    assert_ends(&child_pid);
}

#[test]
fn a_program_that_hangs_is_stopped_with_what_it_started() {
    let dir = scratch("hangs");
    let child_pid = dir.join("child.pid");
    let program = script(
        &dir,
        "hangs",
        &format!(
            "echo 'waiting for the camera' >&2\nsleep 300 &\necho $! > {}\nwait",
            child_pid.display()
        ),
    );
    let mut camera = source(&[program.to_str().unwrap()], "timeout_s = 1");
    let started = Instant::now();
    let error = grab_error(&mut camera);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error.contains(
            "no picture within 1 s (command.timeout_s): stopped it; it said: waiting for the camera"
        ),
        "{error}"
    );
    // Killed with its group: gone, or at most a zombie until init reaps it.
    assert_ends(&child_pid);
}

#[test]
fn a_program_that_prints_nothing_fails_or_prints_too_much_is_an_error_that_says_so() {
    let dir = scratch("bad");
    let silent = script(&dir, "silent", "exit 0");
    let error = grab_error(&mut source(&[silent.to_str().unwrap()], ""));
    assert!(
        error.ends_with("silent`: printed nothing on its standard output"),
        "{error}"
    );
    let failing = script(
        &dir,
        "failing",
        "echo 'ERROR: *** no cameras available ***' >&2\nexit 1",
    );
    let error = grab_error(&mut source(&[failing.to_str().unwrap()], ""));
    assert!(
        error.ends_with(
            "failing`: exited with status 1; it said: ERROR: *** no cameras available ***"
        ),
        "{error}"
    );
    let chatty = script(&dir, "chatty", "head -c 3000000 /dev/zero");
    let error = grab_error(&mut source(
        &[chatty.to_str().unwrap()],
        "max_picture_mb = 1",
    ));
    assert!(
        error.ends_with("chatty`: printed more than 1 MB (max_picture_mb): stopped it"),
        "{error}"
    );
    let garbage = script(&dir, "garbage", "echo 'not a picture'");
    let error = grab_error(&mut source(&[garbage.to_str().unwrap()], ""));
    assert!(
        error
            .ends_with("garbage`: not a recognised image format (expected JPEG, PNG, WebP or BMP)"),
        "{error}"
    );
}
