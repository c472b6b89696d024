//! The `capdec` binary against good, odd and hostile image inputs: every failure is one clear line naming the
//! file, a non-zero exit and no panic; odd but valid images caption.

mod common;

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use common::{assert_fails, capdec};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 5) as u8, (y * 3) as u8, ((x + y) * 2) as u8])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode test image");
    out.into_inner()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write test file");
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Inserts an EXIF APP1 segment holding only an orientation tag right after the JPEG's start-of-image marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec(); // big-endian TIFF header, first IFD at offset 8
    tiff.extend([0, 1]); // one entry
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]); // value padding, no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(tiff);
    let len = (payload.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(len.to_be_bytes());
    out.extend(payload);
    out.extend(&jpeg[2..]);
    out
}

#[test]
fn empty_file_is_refused() {
    let dir = common::scratch("empty_file");
    let path = write(&dir, "empty.jpg", b"");
    assert_fails(
        &capdec(&["caption", s(&path)]),
        1,
        &["empty.jpg", "file is empty"],
    );
}

#[test]
fn truncated_jpeg_is_refused() {
    let dir = common::scratch("truncated_jpeg");
    let jpeg = encode(
        &DynamicImage::ImageRgb8(gradient(64, 48)),
        ImageFormat::Jpeg,
    );
    let path = write(&dir, "cut.jpg", &jpeg[..jpeg.len() * 2 / 3]);
    assert_fails(
        &capdec(&["caption", s(&path)]),
        1,
        &["cut.jpg", "not a valid JPEG image", "truncated"],
    );
}

#[test]
fn text_named_jpg_is_refused() {
    let dir = common::scratch("text_jpg");
    let path = write(&dir, "notes.jpg", b"this is not a picture\n");
    assert_fails(
        &capdec(&["caption", s(&path)]),
        1,
        &["notes.jpg", "not a valid JPEG image"],
    );
}

#[test]
fn unknown_content_without_extension_is_refused() {
    let dir = common::scratch("unknown_content");
    let path = write(&dir, "blob", b"\x00\x01\x02 nothing recognisable");
    assert_fails(
        &capdec(&["caption", s(&path)]),
        1,
        &["blob", "not a recognised image format"],
    );
}

#[test]
fn huge_dimensions_are_refused_before_decoding() {
    // A valid 1x1 PNG whose header claims 20000 x 20000: decoding it would need 400 MB or more.
    let dir = common::scratch("huge_png");
    let mut png = encode(
        &DynamicImage::ImageLuma8(image::GrayImage::new(1, 1)),
        ImageFormat::Png,
    );
    png[16..20].copy_from_slice(&20000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = common::crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let path = write(&dir, "huge.png", &png);
    assert_fails(
        &capdec(&["caption", s(&path)]),
        1,
        &["huge.png", "20000x20000", "larger than"],
    );
}

#[test]
fn missing_path_and_directory_are_refused() {
    let dir = common::scratch("missing_and_dir");
    let missing = dir.join("nowhere.png");
    assert_fails(
        &capdec(&["caption", s(&missing)]),
        1,
        &["nowhere.png", "cannot open", "No such file"],
    );
    assert_fails(
        &capdec(&["caption", s(&dir)]),
        1,
        &["missing_and_dir", "is a directory"],
    );
}

#[test]
fn odd_but_valid_images_caption() {
    let dir = common::scratch("odd_images");
    let rgb = gradient(40, 30);
    let images = [
        (
            "one-pixel.png",
            DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([200, 10, 10]))),
        ),
        ("grey.png", DynamicImage::ImageRgb8(rgb.clone()).grayscale()),
        (
            "grey-alpha.png",
            DynamicImage::ImageLumaA8(DynamicImage::ImageRgb8(rgb.clone()).to_luma_alpha8()),
        ),
        (
            "rgba.png",
            DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
        ),
        (
            "grey16.png",
            DynamicImage::ImageLuma16(DynamicImage::ImageRgb8(rgb.clone()).to_luma16()),
        ),
        (
            "rgb16.png",
            DynamicImage::ImageRgb16(DynamicImage::ImageRgb8(rgb.clone()).to_rgb16()),
        ),
        ("tall.png", DynamicImage::ImageRgb8(gradient(3, 500))),
    ];
    let mut args = vec!["caption".to_string()];
    for (name, image) in &images {
        args.push(s(&write(&dir, name, &encode(image, ImageFormat::Png))).to_string());
    }
    for (name, format) in [
        ("photo.webp", ImageFormat::WebP),
        ("photo.bmp", ImageFormat::Bmp),
    ] {
        args.push(
            s(&write(
                &dir,
                name,
                &encode(&DynamicImage::ImageRgb8(rgb.clone()), format),
            ))
            .to_string(),
        );
    }
    let run = capdec(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(
        run.stdout.lines().count(),
        images.len() + 2,
        "{}",
        run.stdout
    );
    for (name, _) in &images {
        assert!(
            run.stdout.lines().any(|l| l.contains(&format!("{name}: "))),
            "{name} missing: {}",
            run.stdout
        );
    }
}

#[test]
fn exif_orientation_is_applied() {
    let dir = common::scratch("exif");
    let jpeg = encode(
        &DynamicImage::ImageRgb8(gradient(48, 32)),
        ImageFormat::Jpeg,
    );
    let plain = write(&dir, "plain.jpg", &jpeg);
    // Orientation 6: the stored pixels must be turned 90 degrees clockwise for display.
    let rotated = write(&dir, "rotated.jpg", &with_exif_orientation(&jpeg, 6));
    let plain = capdec_edge::preprocess::load_rgb(&plain).expect("plain JPEG loads");
    let rotated_img = capdec_edge::preprocess::load_rgb(&rotated).expect("EXIF JPEG loads");
    assert_eq!(rotated_img.dimensions(), (32, 48));
    assert_eq!(rotated_img, image::imageops::rotate90(&plain));

    let run = capdec(&["caption", s(&rotated)]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
}

#[test]
fn one_bad_image_does_not_stop_the_others() {
    let dir = common::scratch("mixed");
    let good = write(
        &dir,
        "good.png",
        &encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png),
    );
    let bad = write(&dir, "bad.png", b"not a png");
    let also_good = write(
        &dir,
        "also.png",
        &encode(&DynamicImage::ImageRgb8(gradient(20, 30)), ImageFormat::Png),
    );
    let run = capdec(&["caption", s(&good), s(&bad), s(&also_good)]);
    assert_fails(&run, 1, &["bad.png"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with(&format!("{}: ", good.display())));
    assert!(lines[1].starts_with(&format!("{}: ", also_good.display())));
}

#[test]
fn json_output_has_every_field() {
    let dir = common::scratch("json");
    let path = write(
        &dir,
        "a.png",
        &encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png),
    );
    let run = capdec(&[
        "caption",
        s(&path),
        "--json",
        "--precision",
        "fp32",
        "--beam",
        "2",
        "--max-tokens",
        "5",
    ]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let record: serde_json::Value =
        serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(record["file"], s(&path));
    assert_eq!(record["precision"], "fp32");
    assert!(record["caption"].is_string());
    let tokens = record["tokens"].as_array().expect("tokens");
    assert!(!tokens.is_empty() && tokens.len() <= 5);
    assert!(record["mean_log_prob"].as_f64().expect("mean log-prob") < 0.0);
    for stage in ["preprocess", "encode", "map", "decode"] {
        assert!(
            record["ms"][stage].as_f64().expect("stage time") >= 0.0,
            "{stage}"
        );
    }
}

#[test]
fn single_image_prints_just_the_caption() {
    let dir = common::scratch("single");
    let path = write(
        &dir,
        "a.png",
        &encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png),
    );
    let run = capdec(&["caption", s(&path), "--beam=1"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1);
    assert!(!run.stdout.contains("a.png"));
}

#[test]
fn usage_errors_exit_2() {
    use common::assert_usage_error;
    assert_usage_error(
        &capdec(&[]),
        &["requires a subcommand", "caption, eval, bench"],
    );
    assert_usage_error(&capdec(&["caption"]), &["required", "<IMAGE>"]);
    assert_usage_error(
        &capdec(&["describe", "x.png"]),
        &["unrecognized subcommand 'describe'"],
    );
    assert_usage_error(
        &capdec(&["caption", "x.png", "--colour"]),
        &["unexpected argument '--colour'"],
    );
    assert_usage_error(
        &capdec(&["caption", "x.png", "--max-token", "3"]),
        &[
            "unexpected argument '--max-token'",
            "a similar argument exists: '--max-tokens'",
        ],
    );
    assert_usage_error(
        &capdec(&["captoin", "x.png"]),
        &["similar subcommand", "'caption'"],
    );
    assert_usage_error(
        &capdec(&["caption", "x.png", "--beam", "0"]),
        &[
            "invalid value '0' for '--beam <N>'",
            "positive whole number",
        ],
    );
    assert_usage_error(
        &capdec(&["caption", "x.png", "--max-tokens"]),
        &["a value is required for '--max-tokens <N>'"],
    );
    assert_usage_error(
        &capdec(&["caption", "x.png", "--precision", "fp16"]),
        &["invalid value 'fp16' for '--precision <P>'", "fp32, int8"],
    );
    assert_usage_error(
        &capdec(&["run", "a.toml", "--config", "b.toml"]),
        &["cannot be used with"],
    );
    assert_usage_error(
        &capdec(&["check-config"]),
        &["required", "<FILE|--config <FILE>>"],
    );
    let help = capdec(&["--help"]);
    assert_eq!(help.code, Some(0));
    for command in [
        "caption",
        "eval",
        "bench",
        "run",
        "check-config",
        "completions",
    ] {
        assert!(
            help.stdout.contains(&format!("\n  {command} ")),
            "{command}: {}",
            help.stdout
        );
    }
}

#[test]
fn each_command_has_its_own_help() {
    let caption = capdec(&["caption", "--help"]);
    assert_eq!(caption.code, Some(0), "{}", caption.stderr);
    assert!(
        caption.stdout.starts_with("Caption image files"),
        "{}",
        caption.stdout
    );
    for option in [
        "--model <DIR>",
        "--precision <P>",
        "--beam <N>",
        "--max-tokens <N>",
        "--threads <N>",
        "--json",
    ] {
        assert!(
            caption.stdout.contains(option),
            "{option}: {}",
            caption.stdout
        );
    }
    for other in ["--references", "--threads <LIST>", "--config"] {
        assert!(
            !caption.stdout.contains(other),
            "{other} is not caption's: {}",
            caption.stdout
        );
    }
    let bench = capdec(&["help", "bench"]);
    assert!(bench.stdout.contains("--threads <LIST>") && !bench.stdout.contains("--max-tokens"));
}

#[test]
fn the_daemon_commands_take_the_file_either_way() {
    let missing = common::scratch("config_spellings").join("missing.toml");
    let path = missing.to_str().unwrap();
    for args in [
        vec!["run", "--config", path],
        vec!["run", &format!("--config={path}")],
        vec!["run", path],
        vec!["check-config", path],
        vec!["check-config", "--config", path],
        vec!["check-config", &format!("--config={path}")],
    ] {
        assert_fails(&capdec(&args), 1, &["missing.toml: cannot read"]);
    }
}

#[test]
fn completions_are_written_for_each_shell() {
    let bash = capdec(&["completions", "bash"]);
    assert_eq!(bash.code, Some(0), "{}", bash.stderr);
    assert!(
        bash.stdout.contains("complete -F _capdec"),
        "{}",
        bash.stdout
    );
    assert!(bash.stdout.contains("check-config") && bash.stdout.contains("--max-tokens"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = capdec(&["completions", shell]);
        assert!(
            run.code == Some(0) && run.stdout.contains("capdec"),
            "{shell}: {}",
            run.stderr
        );
    }
    common::assert_usage_error(&capdec(&["completions", "tcsh"]), &["invalid value 'tcsh'"]);
}

#[test]
fn too_many_tokens_for_the_decoder_is_refused() {
    let dir = common::scratch("too_many_tokens");
    let path = write(
        &dir,
        "a.png",
        &encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png),
    );
    let run = capdec(&["caption", s(&path), "--max-tokens", "100000"]);
    assert_fails(
        &run,
        1,
        &[
            "fixture-tiny",
            "max tokens 100000 exceeds the 124 positions",
        ],
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn default_bundle_is_found_above_the_executable() {
    common::fixture();
    let dir = common::scratch("default_bundle");
    let path = write(
        &dir,
        "a.png",
        &encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png),
    );
    // target/debug/capdec -> the repository's models/, whatever the current folder.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capdec"))
        .args(["caption", s(&path)])
        .env_remove("CAPDEC_MODEL")
        .current_dir(&dir)
        .output()
        .expect("run capdec");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_refuses_a_tls_ca_file_that_is_missing_or_not_pem() {
    let dir = common::scratch("check_config_tls");
    fs::write(dir.join("ca.der"), [0x30, 0x82, 0x01, 0x0a]).unwrap();
    let config = |ca_file: &str| {
        format!(
            "[mqtt]\nhost = \"localhost\"\n\n[mqtt.tls]\nca_file = \"{ca_file}\"\n\n[[camera]]\nname = \"porch\"\n[camera.file]\npath = \".\"\n"
        )
    };
    let path = dir.join("capdec.toml");
    let path_text = path.to_str().unwrap();
    fs::write(&path, config("missing-ca.pem")).unwrap();
    assert_fails(
        &capdec(&["check-config", path_text]),
        1,
        &[
            "capdec.toml:5: in [mqtt.tls] key `ca_file`",
            "mqtt.tls.ca_file: cannot read",
            "missing-ca.pem",
        ],
    );
    fs::write(&path, config("ca.der")).unwrap();
    assert_fails(
        &capdec(&["check-config", path_text]),
        1,
        &[
            "capdec.toml:5: in [mqtt.tls] key `ca_file`",
            "ca.der is not PEM holding a CA certificate",
        ],
    );
}

#[test]
fn snapshot_takes_a_camera_s_pictures_and_saves_the_last() {
    let dir = common::scratch("cli-snapshot");
    let picture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket.jpg");
    let config = write(
        &dir,
        "capdec.toml",
        format!(
            "log_level = \"warn\"\n[mqtt]\nhost = \"127.0.0.1\"\n[[camera]]\nname = \"porch\"\n\
             [camera.file]\npath = \"{}\"\n[[camera]]\nname = \"gate\"\n[camera.file]\npath = \"missing.jpg\"\n",
            picture.display()
        )
        .as_bytes(),
    );
    let saved = dir.join("porch.png");
    let run = capdec(&[
        "snapshot",
        s(&config),
        "--camera",
        "porch",
        "--count",
        "2",
        "--every",
        "0",
        "-o",
        s(&saved),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("picture 1: 640x427 from "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("picture 2: 640x427 from "),
        "{}",
        run.stdout
    );
    assert_eq!(
        image::open(&saved).unwrap().to_rgb8(),
        image::open(&picture).unwrap().to_rgb8()
    );

    let run = capdec(&["snapshot", s(&config), "--camera", "gate", "--json"]);
    assert_eq!(
        run.code,
        Some(1),
        "a picture that cannot be taken fails the command"
    );
    let first: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("missing.jpg: cannot open"),
        "{first}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["failed"], 1);
    assert!(summary["cpu_s"].as_f64().unwrap() >= 0.0);

    assert_fails(
        &capdec(&["snapshot", s(&config)]),
        1,
        &["several cameras (porch, gate): say which with --camera"],
    );
    assert_fails(
        &capdec(&["snapshot", s(&config), "--camera", "door"]),
        1,
        &["no camera `door`; it has porch, gate"],
    );
}
