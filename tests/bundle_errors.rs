//! Broken bundles: each is a copy of the fixture with one thing wrong, and must fail with one line naming the
//! file and the problem, exit 1 and no panic.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_fails, capdec};
use image::{DynamicImage, ImageFormat, RgbImage};
use sha2::{Digest, Sha256};

/// A copy of the fixture in a scratch folder, and a small image to caption with it.
fn copy_fixture(name: &str) -> (PathBuf, PathBuf) {
    copy_bundle(&common::fixture(), name)
}

fn copy_bundle(source: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch(name);
    let bundle = dir.join("bundle");
    fs::create_dir(&bundle).expect("create bundle folder");
    for entry in fs::read_dir(source).expect("read fixture") {
        let path = entry.expect("fixture entry").path();
        fs::copy(&path, bundle.join(path.file_name().expect("file name")))
            .expect("copy fixture file");
    }
    let image = dir.join("a.png");
    DynamicImage::ImageRgb8(RgbImage::new(8, 8))
        .save_with_format(&image, ImageFormat::Png)
        .expect("write image");
    (bundle, image)
}

fn run(bundle: &Path, image: &Path) -> common::Run {
    capdec(&[
        "caption",
        image.to_str().expect("UTF-8"),
        "--model",
        bundle.to_str().expect("UTF-8"),
    ])
}

fn edit_manifest(bundle: &Path, edit: impl FnOnce(String) -> String) {
    let path = bundle.join("bundle.toml");
    let text = fs::read_to_string(&path).expect("read manifest");
    fs::write(&path, edit(text)).expect("write manifest");
}

#[test]
fn the_copy_itself_works() {
    let (bundle, image) = copy_fixture("bundle_ok");
    let run = run(&bundle, &image);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
}

#[test]
fn missing_file() {
    let (bundle, image) = copy_fixture("bundle_missing_file");
    fs::remove_file(bundle.join("mapper.fp32.onnx")).expect("remove");
    // Listed files are checked whichever precision is loaded.
    assert_fails(
        &run(&bundle, &image),
        1,
        &["mapper.fp32.onnx", "missing from the bundle"],
    );
}

#[test]
fn wrong_hash() {
    let (bundle, image) = copy_fixture("bundle_wrong_hash");
    let path = bundle.join("token_embeddings.q8.bin");
    let mut bytes = fs::read(&path).expect("read");
    bytes[100] ^= 0x40;
    fs::write(&path, bytes).expect("write");
    assert_fails(
        &run(&bundle, &image),
        1,
        &["token_embeddings.q8.bin", "SHA-256", "the manifest says"],
    );
}

#[test]
fn wrong_size() {
    let (bundle, image) = copy_fixture("bundle_wrong_size");
    let path = bundle.join("vocab.tiktoken");
    let mut bytes = fs::read(&path).expect("read");
    bytes.push(b'\n');
    fs::write(&path, bytes).expect("write");
    assert_fails(
        &run(&bundle, &image),
        1,
        &["vocab.tiktoken", "size is", "the manifest says"],
    );
}

#[test]
fn manifest_with_a_wrong_type() {
    let (bundle, image) = copy_fixture("bundle_wrong_type");
    edit_manifest(&bundle, |t| {
        t.replace("beam_size = 5", "beam_size = \"five\"")
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &[
            "bundle.toml",
            "invalid manifest",
            "line 40",
            "beam_size = \"five\"",
            "expected usize",
        ],
    );
}

#[test]
fn manifest_with_an_unknown_key() {
    let (bundle, image) = copy_fixture("bundle_unknown_key");
    edit_manifest(&bundle, |t| {
        t.replace("lowercase = true", "lowercase = true\ntemperature = 0.7")
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &["bundle.toml", "unknown field `temperature`"],
    );
}

#[test]
fn manifest_with_a_path_leaving_the_bundle() {
    let (bundle, image) = copy_fixture("bundle_escape");
    edit_manifest(&bundle, |t| {
        t.replace("\"vocab.tiktoken\"", "\"../vocab.tiktoken\"")
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &[
            "bundle.toml",
            "../vocab.tiktoken",
            "stay inside the bundle folder",
        ],
    );
}

#[test]
fn manifest_of_another_format_version() {
    let (bundle, image) = copy_fixture("bundle_version");
    edit_manifest(&bundle, |t| {
        t.replace("format_version = 1", "format_version = 3")
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &[
            "bundle.toml",
            "format_version is 3",
            "reads versions 1 to 2",
        ],
    );
}

#[test]
fn caption_vocabulary_without_the_stop_token() {
    let (bundle, image) = copy_bundle(
        &common::repo().join("models/fixture-tiny-vocab"),
        "bundle_vocab_stop",
    );
    let run_ok = run(&bundle, &image);
    assert_eq!(run_ok.code, Some(0), "stderr: {}", run_ok.stderr);
    edit_manifest(&bundle, |t| {
        t.replace("stop_token_ids = [13]", "stop_token_ids = [0]")
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &[
            "bundle.toml",
            "decoder.stop_token_ids 0 is not in the decoder's vocabulary",
        ],
    );
}

#[test]
fn no_manifest() {
    let (bundle, image) = copy_fixture("bundle_no_manifest");
    fs::remove_file(bundle.join("bundle.toml")).expect("remove");
    assert_fails(
        &run(&bundle, &image),
        1,
        &["bundle.toml", "cannot read the bundle manifest"],
    );
}

#[test]
fn garbage_onnx_with_a_matching_hash() {
    // The hash is fixed up, so it is the ONNX parse that must fail, and say which file.
    let (bundle, image) = copy_fixture("bundle_garbage_onnx");
    let name = "decoder.int8.onnx";
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let old = fs::read(bundle.join(name)).expect("read");
    fs::write(bundle.join(name), &garbage).expect("write");
    let hex = |b: &[u8]| {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    edit_manifest(&bundle, |t| {
        t.replace(&hex(&old), &hex(&garbage)).replace(
            &format!("bytes = {}", old.len()),
            &format!("bytes = {}", garbage.len()),
        )
    });
    assert_fails(&run(&bundle, &image), 1, &[name, "not a valid ONNX graph"]);
}

#[test]
fn onnx_with_the_wrong_graph() {
    // A valid graph in the wrong place: the mapper where the decoder should be.
    let (bundle, image) = copy_fixture("bundle_wrong_graph");
    let mapper = fs::read(bundle.join("mapper.int8.onnx")).expect("read");
    let old = fs::read(bundle.join("decoder.int8.onnx")).expect("read");
    fs::write(bundle.join("decoder.int8.onnx"), &mapper).expect("write");
    let hex = |b: &[u8]| {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };
    edit_manifest(&bundle, |t| {
        t.replace(&hex(&old), &hex(&mapper)).replace(
            &format!("bytes = {}", old.len()),
            &format!("bytes = {}", mapper.len()),
        )
    });
    assert_fails(
        &run(&bundle, &image),
        1,
        &[
            "decoder.int8.onnx",
            "unexpected graph inputs: clip_embedding",
        ],
    );
}

#[test]
fn missing_default_bundle_is_explained() {
    let (_, image) = copy_fixture("bundle_none");
    let missing = image.with_file_name("no-such-bundle");
    assert_fails(
        &run(&missing, &image),
        1,
        &[
            "no-such-bundle",
            "bundle.toml",
            "cannot read the bundle manifest",
        ],
    );
}
