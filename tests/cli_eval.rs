//! `capdec eval` through the real binary: the shipped demo scenes score as the library scores the captions the
//! command printed, captions go with their own images, and every bad references file or image is one clear error.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use capdec_edge::eval::metrics::score_captions;
use common::{Run, assert_fails, capdec};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

fn scenes() -> PathBuf {
    common::repo().join("tests/data/demo-scenes")
}

fn eval(images: &Path, references: &Path, extra: &[&str]) -> Run {
    let model = common::fixture();
    let mut args = vec![
        "eval",
        "--model",
        s(&model),
        "--images",
        s(images),
        "--references",
        s(references),
    ];
    args.extend(extra);
    capdec(&args)
}

fn relative(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The fixture's caption of one image, through `capdec caption`.
fn caption_of(path: &Path) -> String {
    let model = common::fixture();
    let run = capdec(&["caption", "--model", s(&model), s(path)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    run.stdout.trim_end().to_string()
}

#[test]
fn demo_scenes_summary_is_the_library_score_of_the_printed_captions() {
    let references_path = scenes().join("references.json");
    let run = eval(&scenes(), &references_path, &["--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let (summary, records) = lines.split_last().expect("output");

    // The references, read here independently of the command's own reader.
    let file: Value =
        serde_json::from_str(&fs::read_to_string(&references_path).expect("references.json"))
            .expect("JSON");
    let mut names: Vec<&String> = file.as_object().expect("object").keys().collect();
    names.sort();
    assert_eq!(records.len(), names.len());
    let mut captions = Vec::new();
    let mut references = Vec::new();
    for (record, name) in records.iter().zip(&names) {
        assert_eq!(record["file"], **name, "images in name order");
        let expected = strings(&file[name.as_str()]["references"]);
        assert_eq!(strings(&record["references"]), expected, "{name}");
        captions.push(record["caption"].as_str().expect("caption").to_string());
        references.push(expected);
    }
    // The same caption as `capdec caption` gives that image: eval captions the file it names.
    for (name, caption) in names.iter().zip(&captions).take(2) {
        assert_eq!(&caption_of(&scenes().join(name)), caption, "{name}");
    }

    let scores = score_captions(&captions, &references).expect("scores");
    assert_eq!(summary["images"], 150);
    assert_eq!(summary["ignored"], 0);
    assert_eq!(summary["precision"], "int8");
    assert_eq!(summary["beam_size"], 5);
    assert!(summary["model"].as_str().unwrap().ends_with("fixture-tiny"));
    for (metric, ours) in [
        ("bleu4", scores.bleu4),
        ("rouge_l", scores.rouge_l),
        ("cider_d", scores.cider_d),
    ] {
        let printed = summary["scores"][metric].as_f64().expect("score");
        // serde_json may read a float one unit in the last place off.
        assert!(
            relative(printed, ours) < 1e-14,
            "{metric}: printed {printed}, library {ours}"
        );
    }
    // Random weights write random words: ROUGE-L finds the odd shared word, nothing more.
    assert!(scores.rouge_l < 0.2 && scores.cider_d < 0.2, "{scores:?}");
}

#[test]
fn captions_that_are_their_references_score_full_marks() {
    let dir = common::scratch("eval_own_captions");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::copy(scenes().join("scene-000.png"), dir.join("a.png")).unwrap();
    fs::copy(scenes().join("scene-001.png"), dir.join("sub/b.png")).unwrap();
    fs::copy(scenes().join("scene-002.png"), dir.join("unlisted.png")).unwrap();
    fs::write(dir.join("notes.txt"), "not an image").unwrap();
    let (a, b) = (
        caption_of(&dir.join("a.png")),
        caption_of(&dir.join("sub/b.png")),
    );
    assert_ne!(a, b);
    let references = dir.join("references.json");
    // The list form, and the object form with other keys beside "references".
    let listing = serde_json::json!({
        "sub/b.png": {"references": [b, "something else entirely"], "kind": "two"},
        "a.png": [a],
    });
    fs::write(&references, listing.to_string()).unwrap();

    let run = eval(&dir, &references, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("a.png: {a}"));
    assert_eq!(lines[1], format!("sub/b.png: {b}"));
    assert!(
        run.stdout.contains("2 images from")
            && run.stdout.contains("1 other image in the folder ignored"),
        "{}",
        run.stdout
    );
    let expected = score_captions(
        &[a.clone(), b.clone()],
        &[
            vec![a.clone()],
            vec![b.clone(), "something else entirely".into()],
        ],
    )
    .unwrap();
    let row = format!("| 2 | 100.0 | 100.0 | {:.1} |", 100.0 * expected.cider_d);
    assert_eq!(lines.last().copied(), Some(row.as_str()), "{}", run.stdout);

    // The same references, each on the other image: the scores drop.
    let swapped = serde_json::json!({"a.png": [b], "sub/b.png": [a]});
    fs::write(&references, swapped.to_string()).unwrap();
    let run = eval(&dir, &references, &["--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert!(
        summary["scores"]["bleu4"].as_f64().unwrap() < 0.5,
        "{summary}"
    );
    assert_eq!(summary["ignored"], 1);

    // The options reach the captioner and the summary.
    let run = eval(
        &dir,
        &references,
        &["--json", "--precision", "fp32", "--beam", "1"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["precision"], "fp32");
    assert_eq!(summary["beam_size"], 1);
}

/// A scratch folder with one good image, `a.png`, and a references file holding `text`.
fn folder(name: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch(name);
    fs::copy(scenes().join("scene-000.png"), dir.join("a.png")).unwrap();
    let references = dir.join("references.json");
    fs::write(&references, text).unwrap();
    (dir, references)
}

fn assert_eval_fails(name: &str, text: &str, fragments: &[&str]) {
    let (dir, references) = folder(name, text);
    let run = eval(&dir, &references, &[]);
    assert_fails(&run, 1, fragments);
    assert!(
        !run.stdout.contains("BLEU-4"),
        "no scores after a failure: {}",
        run.stdout
    );
}

#[test]
fn a_missing_references_file_is_refused() {
    let dir = common::scratch("eval_no_references");
    let run = eval(&dir, &dir.join("missing.json"), &[]);
    assert_fails(&run, 1, &["missing.json", "cannot read"]);
}

#[test]
fn a_references_file_that_is_not_json_is_refused_with_its_line_and_column() {
    assert_eval_fails(
        "eval_not_json",
        "{\n \"a.png\": [\"a red circle\"],\n \"b.png\": [\"x\" \"y\"]\n}",
        &["references.json", "not valid JSON", "line 3 column 16"],
    );
}

#[test]
fn a_references_file_of_the_wrong_shape_is_refused() {
    assert_eval_fails(
        "eval_top_level_list",
        r#"["a.png"]"#,
        &[
            "references.json",
            "expected a JSON object mapping image file names",
        ],
    );
    assert_eval_fails(
        "eval_value_number",
        r#"{"a.png": 3}"#,
        &[
            "references.json",
            "`a.png`",
            "expected a list of reference captions",
            "found a number",
        ],
    );
    assert_eval_fails(
        "eval_object_without_references",
        r#"{"a.png": {"captions": ["a red circle"]}}"#,
        &["references.json", "`a.png`", "no \"references\" list"],
    );
    assert_eval_fails(
        "eval_reference_not_string",
        r#"{"a.png": ["a red circle", {"text": "x"}]}"#,
        &["`a.png`", "reference 2 is an object, expected a string"],
    );
    assert_eval_fails(
        "eval_listed_twice",
        "{\"a.png\": [\"a red circle\"],\n\"a.png\": [\"a blue star\"]}",
        &["references.json", "`a.png` is listed twice", "line 2"],
    );
    assert_eval_fails(
        "eval_no_images",
        "{}",
        &["references.json", "lists no images"],
    );
}

#[test]
fn an_empty_reference_list_is_refused() {
    assert_eval_fails(
        "eval_empty_list",
        r#"{"a.png": {"references": []}}"#,
        &["references.json", "`a.png`", "reference list is empty"],
    );
    assert_eval_fails(
        "eval_wordless_reference",
        r#"{"a.png": ["a red circle", " ... "]}"#,
        &["`a.png`", "reference 2", "has no words"],
    );
}

#[test]
fn a_listed_image_that_is_missing_is_refused() {
    assert_eval_fails(
        "eval_missing_image",
        r#"{"a.png": ["a red circle"], "gone.png": ["a blue star"]}"#,
        &["gone.png", "listed in", "does not exist"],
    );
}

#[test]
fn a_listed_image_that_is_unreadable_is_refused_not_skipped() {
    let (dir, references) = folder(
        "eval_bad_image",
        r#"{"a.png": ["a red circle"], "b.png": ["a blue star"]}"#,
    );
    fs::write(dir.join("b.png"), b"this is not a PNG file").unwrap();
    let run = eval(&dir, &references, &[]);
    assert_fails(&run, 1, &["b.png"]);
    assert!(run.stdout.starts_with("a.png: "), "{}", run.stdout);
    assert!(!run.stdout.contains("BLEU-4"), "{}", run.stdout);
}

#[test]
fn a_missing_images_folder_is_refused() {
    let (dir, references) = folder("eval_no_folder", r#"{"a.png": ["a red circle"]}"#);
    let run = eval(&dir.join("nowhere"), &references, &[]);
    assert_fails(&run, 1, &["nowhere", "not a folder"]);
}

#[test]
fn eval_needs_both_paths_and_no_positional_arguments() {
    common::assert_usage_error(
        &capdec(&["eval", "--references", "r.json"]),
        &["required", "--images <DIR>"],
    );
    common::assert_usage_error(
        &capdec(&["eval", "--images", "."]),
        &["required", "--references <FILE>"],
    );
    common::assert_usage_error(
        &capdec(&["eval", "--images", ".", "--references", "r.json", "x.png"]),
        &["unexpected argument 'x.png'"],
    );
}
