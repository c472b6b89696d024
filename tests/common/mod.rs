//! Shared by the integration tests: where the fixture is, scratch folders, running the binary.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture bundle, made by `capdec-toolkit fixture` (see docs/bundle-format.md).
pub fn fixture() -> PathBuf {
    let dir = repo().join("models/fixture-tiny");
    assert!(
        dir.join("bundle.toml").is_file(),
        "{} is missing: make it with the Python toolkit (`capdec-toolkit fixture`)",
        dir.display()
    );
    dir
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `capdec` with the fixture as its default bundle unless `--model` is given.
pub fn capdec(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_capdec"))
        .args(args)
        .env("CAPDEC_MODEL", fixture())
        .output()
        .expect("run capdec");
    let run = Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "capdec panicked: {}",
        run.stderr
    );
    run
}

/// Asserts a clean failure: the given exit code and one `error:` line mentioning every fragment.
pub fn assert_fails(run: &Run, code: i32, fragments: &[&str]) {
    assert_eq!(
        run.code,
        Some(code),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| {
            panic!("no `error:` line in stderr: {}", run.stderr);
        });
    for f in fragments {
        assert!(line.contains(f), "`{f}` not in: {line}");
    }
}

/// Asserts a usage error: exit status 2, standard error starting with an `error:` line, and every fragment
/// somewhere in what clap wrote (it names a missing argument on the lines after the first).
pub fn assert_usage_error(run: &Run, fragments: &[&str]) {
    assert_eq!(
        run.code,
        Some(2),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(run.stderr.starts_with("error: "), "stderr: {}", run.stderr);
    for f in fragments {
        assert!(run.stderr.contains(f), "`{f}` not in: {}", run.stderr);
    }
}

/// CRC-32 as PNG chunks use it (ISO-HDLC), for patching headers.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
