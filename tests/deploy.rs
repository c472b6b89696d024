//! The systemd unit in deploy/: valid for systemd (`systemd-analyze verify`) and locked down
//! (`systemd-analyze security --offline`), checked on a copy whose paths point at this build's binary.

use std::fs;
use std::path::Path;
use std::process::Command;

fn unit_here() -> std::path::PathBuf {
    let unit =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/capdec.service"))
            .unwrap();
    assert!(
        unit.contains("/usr/local/bin/capdec"),
        "the unit's binary path moved"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-unit");
    fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("capdec.service");
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/capdec", env!("CARGO_BIN_EXE_capdec")),
    )
    .unwrap();
    copy
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_unit_is_valid() {
    let (ok, text) = systemd_analyze(&["verify"], &unit_here());
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
}

#[test]
fn the_unit_is_locked_down() {
    let (_, text) = systemd_analyze(&["security", "--offline=true", "--no-pager"], &unit_here());
    let score: f64 = text
        .lines()
        .find_map(|line| line.split("exposure level for capdec.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security: exposure {score} (0 is best, 10 worst)");
    assert!(score <= 2.0, "exposure {score}: {text}");
}
