//! `capdec eval`: the references file (which images to caption, and what each should say), the folder it
//! describes, and the loop that captions the listed images and scores the captions (`metrics`).
//!
//! The references file is a JSON object mapping an image's file name, relative to the images folder, to its
//! reference captions: a list of strings, or an object with a `"references"` list (other keys ignored), the
//! format of `tests/data/demo-scenes/references.json`.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

pub mod metrics;

use crate::caption::captioner::{Caption, Model};
use crate::caption::preprocess;

/// File name extensions of the images `capdec` reads (its `image` features), for counting unlisted images.
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "bmp"];

/// What to caption and what it should say: read, checked and found before any model is loaded.
pub struct Evaluation {
    /// Sorted by name.
    pub listed: Vec<Listed>,
    paths: Vec<PathBuf>,
    /// Images in the folder that the references file does not list.
    pub ignored: usize,
}

impl Evaluation {
    pub fn read(images: &Path, references: &Path) -> Result<Evaluation> {
        let listed = read_references(references)?;
        let paths = image_paths(images, &listed, references)?;
        let ignored = unlisted_images(images, &listed)?;
        Ok(Evaluation {
            listed,
            paths,
            ignored,
        })
    }

    /// Captions every listed image, handing each caption to `each` as it comes, then scores them. Any failure
    /// ends the run: a skipped image would change the score.
    pub fn run(
        &self,
        model: &Model,
        mut each: impl FnMut(&Listed, &Caption),
    ) -> Result<metrics::CaptionScores> {
        let mut captions = Vec::with_capacity(self.listed.len());
        for (image, path) in self.listed.iter().zip(&self.paths) {
            let pixels = preprocess::load_rgb(path)?;
            let caption = model
                .captioner
                .caption(&pixels, &model.search)
                .with_context(|| format!("{}: captioning failed", path.display()))?;
            each(image, &caption);
            captions.push(caption.text);
        }
        let references: Vec<Vec<String>> =
            self.listed.iter().map(|l| l.references.clone()).collect();
        metrics::score_captions(&captions, &references)
    }
}

/// One listed image and its reference captions.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The key in the references file, relative to the images folder.
    pub name: String,
    pub references: Vec<String>,
}

/// Reads a references file: every listed image with its references, sorted by name. Every error names the file,
/// and the image (key) or the line and column at fault.
fn read_references(path: &Path) -> Result<Vec<Listed>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_references(&text, path)
}

/// A references file's text; errors name `path`.
pub(crate) fn parse_references(text: &str, path: &Path) -> Result<Vec<Listed>> {
    let file = path.display();
    let Entries(entries) = serde_json::from_str(text).map_err(|e| match e.classify() {
        // Valid JSON of the wrong shape, or a key given twice.
        Category::Data => anyhow::anyhow!("{file}: {e}"),
        _ => anyhow::anyhow!("{file}: not valid JSON: {e}"),
    })?;
    if entries.is_empty() {
        bail!("{file}: lists no images");
    }
    let mut listed = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let references = references_of(&name, &value).with_context(|| format!("{file}"))?;
        listed.push(Listed { name, references });
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listed)
}

/// One key's reference captions, checked: a non-empty list of strings each with at least one word.
fn references_of(name: &str, value: &Value) -> Result<Vec<String>> {
    if name.is_empty() {
        bail!("an empty image name");
    }
    if Path::new(name).is_absolute() {
        bail!("`{name}`: image names are relative to the images folder, not absolute paths");
    }
    let list = match value {
        Value::Array(list) => list,
        Value::Object(fields) => match fields.get("references") {
            Some(Value::Array(list)) => list,
            Some(other) => bail!(
                "`{name}`: \"references\" is {}, expected a list of reference captions",
                kind(other)
            ),
            None => bail!("`{name}`: the object has no \"references\" list"),
        },
        other => bail!(
            "`{name}`: expected a list of reference captions or an object with a \"references\" list, found {}",
            kind(other)
        ),
    };
    if list.is_empty() {
        bail!("`{name}`: the reference list is empty (a caption needs at least one reference)");
    }
    let mut references = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let Value::String(text) = item else {
            bail!(
                "`{name}`: reference {} is {}, expected a string",
                index + 1,
                kind(item)
            );
        };
        if metrics::tokenize(text).is_empty() {
            bail!(
                "`{name}`: reference {} `{text}` has no words to score against",
                index + 1
            );
        }
        references.push(text.clone());
    }
    Ok(references)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The top-level object's entries in file order, refusing a key given twice (which would silently drop one
/// image's references and change the score).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object mapping image file names to their references")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(name.clone()) {
                        return Err(de::Error::custom(format!("image `{name}` is listed twice")));
                    }
                    entries.push((name, map.next_value()?));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Where each listed image is, checked to be a file before any captioning starts.
fn image_paths(dir: &Path, listed: &[Listed], references: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{}: not a folder of images", dir.display());
    }
    listed
        .iter()
        .map(|image| {
            let path = dir.join(&image.name);
            if !path.is_file() {
                let what = if path.is_dir() {
                    "is a folder, not an image"
                } else {
                    "does not exist"
                };
                bail!(
                    "{}: listed in {} but {what}",
                    path.display(),
                    references.display()
                );
            }
            Ok(path)
        })
        .collect()
}

/// How many image files directly in `dir` the references file does not list (they are not scored).
fn unlisted_images(dir: &Path, listed: &[Listed]) -> Result<usize> {
    let names: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    let mut count = 0;
    let entries =
        fs::read_dir(dir).with_context(|| format!("{}: cannot read the folder", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot read the folder", dir.display()))?;
        let path = entry.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        let listed = entry
            .file_name()
            .to_str()
            .is_some_and(|n| names.contains(n));
        if is_image && path.is_file() && !listed {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, text: &str) -> Result<Vec<Listed>> {
        let dir = std::env::temp_dir().join(format!("capdec-eval-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("references.json");
        fs::write(&path, text).unwrap();
        let result = read_references(&path);
        fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn error(name: &str, text: &str) -> String {
        format!("{:#}", read(name, text).unwrap_err())
    }

    #[test]
    fn both_shapes_are_read_and_sorted() {
        let listed = read(
            "shapes",
            r#"{"b.png": ["a red circle", "a circle"], "a.png": {"references": ["two stars"], "kind": "two"}}"#,
        )
        .unwrap();
        assert_eq!(
            listed,
            vec![
                Listed {
                    name: "a.png".into(),
                    references: vec!["two stars".into()]
                },
                Listed {
                    name: "b.png".into(),
                    references: vec!["a red circle".into(), "a circle".into()]
                },
            ]
        );
    }

    #[test]
    fn bad_files_name_the_problem() {
        assert!(error("syntax", "{\n \"a.png\": [\"x\",]\n}").contains("line 2 column 16"));
        assert!(error("array", "[]").contains("invalid type: sequence, expected a JSON object"));
        assert!(error("empty", "{}").ends_with("lists no images"));
        let twice = error("twice", "{\"a.png\": [\"x\"],\n \"a.png\": [\"y\"]}");
        assert!(
            twice.contains("image `a.png` is listed twice at line 2 column 8"),
            "{twice}"
        );
        assert!(error("number", r#"{"a.png": 3}"#).contains(
            "`a.png`: expected a list of reference captions or an object with a \"references\" list, found a number"
        ));
        assert!(
            error("no-key", r#"{"a.png": {"refs": []}}"#)
                .contains("`a.png`: the object has no \"references\" list")
        );
        assert!(
            error("not-list", r#"{"a.png": {"references": "x"}}"#)
                .contains("`a.png`: \"references\" is a string, expected a list")
        );
        assert!(
            error("empty-list", r#"{"a.png": []}"#)
                .contains("`a.png`: the reference list is empty")
        );
        assert!(
            error("not-string", r#"{"a.png": ["x", 2]}"#)
                .contains("`a.png`: reference 2 is a number, expected a string")
        );
        assert!(
            error("no-words", r#"{"a.png": ["x", "..."]}"#)
                .contains("`a.png`: reference 2 `...` has no words")
        );
        assert!(error("absolute", r#"{"/a.png": ["x"]}"#).contains("not absolute paths"));
        assert!(error("blank", r#"{"": ["x"]}"#).contains("an empty image name"));
    }
}
