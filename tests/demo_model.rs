//! The bundled demo model (models/demo, made by `scripts/toolkit demo`) on held-out scenes it never saw: the
//! scenes under tests/data/demo-scenes, with the main object's colour and shape from the scene world.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

const COLOURS: [&str; 7] = [
    "red", "green", "blue", "yellow", "purple", "orange", "white",
];
const SHAPES: [&str; 5] = ["circle", "square", "triangle", "star", "diamond"];

#[derive(Deserialize)]
struct Scene {
    main_colour: String,
    main_shape: String,
}

fn demo_bundle() -> PathBuf {
    let dir = common::repo().join("models/demo");
    assert!(
        dir.join("bundle.toml").is_file(),
        "{} is missing: make it with `scripts/toolkit demo --out models/demo`",
        dir.display()
    );
    dir
}

fn scenes() -> (PathBuf, BTreeMap<String, Scene>) {
    let dir = common::repo().join("tests/data/demo-scenes");
    let text = std::fs::read_to_string(dir.join("references.json")).expect("read references.json");
    (
        dir,
        serde_json::from_str(&text).expect("parse references.json"),
    )
}

/// The first colour word and the first shape word (singular or plural) of a caption: the scene grammar names the
/// main object first (training/src/capdec_toolkit/demo/scene_world.py, `first_colour_and_shape`).
fn first_colour_and_shape(caption: &str) -> (Option<String>, Option<String>) {
    let lower = caption.to_lowercase().replace([',', '.'], " ");
    let words: Vec<&str> = lower.split_whitespace().collect();
    let colour = words
        .iter()
        .find(|w| COLOURS.contains(w))
        .map(|w| w.to_string());
    let shape = words
        .iter()
        .map(|w| w.strip_suffix('s').unwrap_or(w))
        .find(|w| SHAPES.contains(w))
        .map(str::to_string);
    (colour, shape)
}

/// Captions every scene through `capdec caption --json`; file name -> (caption, token ids).
fn caption_scenes(precision: &str) -> BTreeMap<String, (String, Vec<u64>)> {
    let (dir, scenes) = scenes();
    let bundle = demo_bundle();
    let mut args = vec![
        "caption".to_string(),
        "--json".to_string(),
        "--model".to_string(),
        bundle.display().to_string(),
        "--precision".to_string(),
        precision.to_string(),
    ];
    args.extend(
        scenes
            .keys()
            .map(|name| dir.join(name).display().to_string()),
    );
    let run = common::capdec(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, Some(0), "capdec caption failed: {}", run.stderr);
    run.stdout
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            let file = PathBuf::from(record["file"].as_str().expect("file"));
            let name = file
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let caption = record["caption"].as_str().expect("caption").to_string();
            let tokens = record["tokens"]
                .as_array()
                .expect("tokens")
                .iter()
                .map(|t| t.as_u64().expect("token id"))
                .collect();
            (name, (caption, tokens))
        })
        .collect()
}

#[test]
fn scene_words_are_found_in_captions() {
    assert_eq!(
        first_colour_and_shape("Two green triangles, one above the other."),
        (Some("green".into()), Some("triangle".into()))
    );
    assert_eq!(
        first_colour_and_shape("a little white star above a big red circle."),
        (Some("white".into()), Some("star".into()))
    );
    assert_eq!(first_colour_and_shape("a picture."), (None, None));
}

#[test]
fn int8_demo_names_the_main_object_of_held_out_scenes_and_agrees_with_fp32() {
    let (_, scenes) = scenes();
    assert!(scenes.len() >= 50, "only {} held-out scenes", scenes.len());
    let int8 = caption_scenes("int8");
    let fp32 = caption_scenes("fp32");
    assert_eq!(int8.len(), scenes.len());
    assert_eq!(fp32.len(), scenes.len());

    let mut wrong = Vec::new();
    for (name, scene) in &scenes {
        let caption = &int8[name].0;
        let expected = (
            Some(scene.main_colour.clone()),
            Some(scene.main_shape.clone()),
        );
        if first_colour_and_shape(caption) != expected {
            wrong.push(format!(
                "{name}: {caption:?}, main object {} {}",
                scene.main_colour, scene.main_shape
            ));
        }
    }
    let right = scenes.len() - wrong.len();
    let identical = scenes
        .keys()
        .filter(|name| int8[*name].1 == fp32[*name].1)
        .count();
    let same_object = scenes
        .keys()
        .filter(|name| {
            first_colour_and_shape(&int8[*name].0) == first_colour_and_shape(&fp32[*name].0)
        })
        .count();
    eprintln!(
        "main object right in {right}/{} int8 captions; int8 and fp32 name the same main object in {same_object}/{}, \
         token ids identical on {identical}/{}",
        scenes.len(),
        scenes.len(),
        scenes.len()
    );
    assert!(
        right * 10 >= scenes.len() * 9,
        "the main object is right in only {right} of {} captions:\n{}",
        scenes.len(),
        wrong.join("\n")
    );
    // int8 may reword a caption ("big" for "large": the demo's captions are long and full of near-ties, and its
    // int8 and fp32 token ids agree on 103 to 133 of 150 scenes from one training run to the next), but it must
    // name the main object as fp32 does.
    assert!(
        same_object * 20 >= scenes.len() * 19,
        "int8 and fp32 name the same main object in only {same_object} of {} scenes",
        scenes.len()
    );
}
