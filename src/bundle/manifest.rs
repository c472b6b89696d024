//! `bundle.toml`, parsed and cross-checked: the manifest's types (serde; unknown keys are errors) and the
//! consistency rules of docs/bundle-format.md that a file-by-file parse cannot express.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

/// The newest version this runtime reads; it reads every older one too (docs/bundle-format.md, "Versions").
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub description: String,
    pub default_precision: String,
    pub encoder: EncoderSpec,
    pub mapper: MapperSpec,
    pub decoder: DecoderSpec,
    pub tokenizer: TokenizerSpec,
    pub decoding: DecodingSpec,
    pub variants: BTreeMap<String, Variant>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    pub input_size: u32,
    pub resize_filter: ResizeFilter,
    pub crop: Crop,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub embedding_size: usize,
    pub normalized_in_graph: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    Bicubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    Center,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperSpec {
    pub kind: MapperKind,
    pub prefix_length: usize,
    pub input_size: usize,
    pub output_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapperKind {
    Mlp,
    Transformer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    pub architecture: Architecture,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub end_of_text_id: u32,
    pub stop_token_ids: Vec<u32>,
    pub max_tokens: usize,
    /// The caption vocabulary (version 2): the GPT-2 id of every decoder row, `vocab_size` little-endian u32s,
    /// ascending. Without it row `i` is GPT-2 id `i`.
    pub token_ids: Option<String>,
    pub token_embeddings: TokenEmbeddingsSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Gpt2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEmbeddingsSpec {
    pub lookup: EmbeddingLookup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingLookup {
    File,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    pub kind: TokenizerKind,
    pub vocab: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenizerKind {
    #[serde(rename = "gpt2-bpe")]
    Gpt2Bpe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingSpec {
    pub beam_size: usize,
    pub length_normalized: bool,
    pub lowercase: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub encoder: GraphFile,
    pub mapper: GraphFile,
    pub decoder: GraphFile,
    pub token_embeddings: TableFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    pub file: String,
    pub quantization: Quantization,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantization {
    None,
    DynamicInt8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    pub file: String,
    pub dtype: TableDtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableDtype {
    F32,
    Q8Rows,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    pub(crate) fn entry(&self, rel: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == rel)
    }

    /// Every path the manifest names outside `[[files]]`, with where it is named.
    fn named_files(&self) -> Vec<(String, &str)> {
        let mut named = vec![("tokenizer.vocab".to_string(), self.tokenizer.vocab.as_str())];
        if let Some(ids) = &self.decoder.token_ids {
            named.push(("decoder.token_ids".to_string(), ids));
        }
        for (name, v) in &self.variants {
            named.push((format!("variants.{name}.encoder"), &v.encoder.file));
            named.push((format!("variants.{name}.mapper"), &v.mapper.file));
            named.push((format!("variants.{name}.decoder"), &v.decoder.file));
            named.push((
                format!("variants.{name}.token_embeddings"),
                &v.token_embeddings.file,
            ));
        }
        named
    }

    pub(super) fn validate(&self) -> Result<()> {
        ensure!(
            (1..=FORMAT_VERSION).contains(&self.format_version),
            "format_version is {}, this runtime reads versions 1 to {FORMAT_VERSION}",
            self.format_version
        );
        ensure!(
            self.decoder.token_ids.is_none() || self.format_version >= 2,
            "decoder.token_ids needs format_version = 2"
        );
        ensure!(
            self.variants.contains_key(&self.default_precision),
            "default_precision `{}` is not one of [variants.*]",
            self.default_precision
        );

        let mut listed = HashSet::new();
        for f in &self.files {
            check_relative_path(&f.path).with_context(|| format!("[[files]] path `{}`", f.path))?;
            ensure!(
                listed.insert(f.path.as_str()),
                "[[files]] lists `{}` twice",
                f.path
            );
            ensure!(
                f.sha256.len() == 64
                    && f.sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "[[files]] `{}`: sha256 must be 64 lower-case hex digits",
                f.path
            );
        }
        for (key, path) in self.named_files() {
            check_relative_path(path).with_context(|| format!("{key} = `{path}`"))?;
            ensure!(
                listed.contains(path),
                "{key} = `{path}` is not listed in [[files]]"
            );
        }

        let e = &self.encoder;
        ensure!(e.input_size > 0, "encoder.input_size must be positive");
        ensure!(
            e.embedding_size > 0,
            "encoder.embedding_size must be positive"
        );
        ensure!(
            e.std.iter().all(|s| s.is_finite() && *s > 0.0) && e.mean.iter().all(|m| m.is_finite()),
            "encoder.mean must be finite and encoder.std finite and positive"
        );

        let m = &self.mapper;
        ensure!(m.prefix_length > 0, "mapper.prefix_length must be positive");
        ensure!(
            m.input_size == e.embedding_size,
            "mapper.input_size ({}) differs from encoder.embedding_size ({})",
            m.input_size,
            e.embedding_size
        );

        let d = &self.decoder;
        ensure!(
            d.layers > 0 && d.heads > 0 && d.width > 0,
            "decoder.layers, heads and width must be positive"
        );
        ensure!(
            d.width.is_multiple_of(d.heads),
            "decoder.width ({}) is not a multiple of decoder.heads ({})",
            d.width,
            d.heads
        );
        ensure!(
            m.output_size == d.width,
            "mapper.output_size ({}) differs from decoder.width ({})",
            m.output_size,
            d.width
        );
        ensure!(d.vocab_size > 0, "decoder.vocab_size must be positive");
        // With a caption vocabulary the ids are GPT-2's, checked against its file when it is read.
        if d.token_ids.is_none() {
            ensure!(
                (d.end_of_text_id as usize) < d.vocab_size,
                "decoder.end_of_text_id {} is outside the vocabulary ({} tokens)",
                d.end_of_text_id,
                d.vocab_size
            );
            if let Some(id) = d
                .stop_token_ids
                .iter()
                .find(|&&id| id as usize >= d.vocab_size)
            {
                bail!(
                    "decoder.stop_token_ids: {id} is outside the vocabulary ({} tokens)",
                    d.vocab_size
                );
            }
        }
        ensure!(d.max_tokens > 0, "decoder.max_tokens must be positive");
        ensure!(
            m.prefix_length + d.max_tokens <= d.max_positions,
            "mapper.prefix_length + decoder.max_tokens ({}) exceeds decoder.max_positions ({})",
            m.prefix_length + d.max_tokens,
            d.max_positions
        );
        ensure!(
            self.decoding.beam_size > 0,
            "decoding.beam_size must be at least 1"
        );
        Ok(())
    }
}

/// Manifest paths are plain relative paths: no root, no `..`, so they stay in the bundle folder.
fn check_relative_path(path: &str) -> Result<()> {
    ensure!(!path.is_empty(), "empty path");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => bail!("path must be relative and stay inside the bundle folder"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_TEXT: &str = r#"
format_version = 1
name = "t"
description = "d"
default_precision = "fp32"

[encoder]
input_size = 8
resize_filter = "bicubic"
crop = "center"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
embedding_size = 4
normalized_in_graph = false

[mapper]
kind = "mlp"
prefix_length = 2
input_size = 4
output_size = 6

[decoder]
architecture = "gpt2"
layers = 1
heads = 2
width = 6
vocab_size = 10
max_positions = 16
end_of_text_id = 9
stop_token_ids = [3]
max_tokens = 5

[decoder.token_embeddings]
lookup = "file"

[tokenizer]
kind = "gpt2-bpe"
vocab = "vocab.tiktoken"

[decoding]
beam_size = 2
length_normalized = true
lowercase = true

[variants.fp32]
encoder = { file = "e.onnx", quantization = "none" }
mapper = { file = "m.onnx", quantization = "none" }
decoder = { file = "d.onnx", quantization = "none" }
token_embeddings = { file = "t.bin", dtype = "f32" }
"#;

    fn files(paths: &[&str]) -> String {
        paths
            .iter()
            .map(|p| {
                format!(
                    "[[files]]\npath = \"{p}\"\nbytes = 1\nsha256 = \"{}\"\n",
                    "0".repeat(64)
                )
            })
            .collect()
    }

    fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        m.validate()?;
        Ok(m)
    }

    fn all_files() -> String {
        files(&["e.onnx", "m.onnx", "d.onnx", "t.bin", "vocab.tiktoken"])
    }

    #[test]
    fn accepts_a_consistent_manifest() {
        let m = parse(&format!("{MANIFEST_TEXT}{}", all_files())).unwrap();
        assert_eq!(m.decoder.stop_token_ids, vec![3]);
        assert_eq!(m.variants["fp32"].token_embeddings.dtype, TableDtype::F32);
    }

    #[test]
    fn refuses_unknown_keys_in_any_table() {
        let text = format!("{MANIFEST_TEXT}{}", all_files());
        for (from, to) in [
            ("lowercase = true", "lowercase = true\ncolour = 1"),
            (
                "quantization = \"none\" }",
                "quantization = \"none\", extra = 1 }",
            ),
            ("lookup = \"file\"", "lookup = \"file\"\nx = 2"),
            ("format_version = 1", "format_version = 1\nsurprise = 1"),
        ] {
            let err = parse(&text.replacen(from, to, 1)).unwrap_err();
            assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        }
    }

    #[test]
    fn refuses_wrong_types_and_versions() {
        let text = format!("{MANIFEST_TEXT}{}", all_files());
        let err = parse(&text.replace("beam_size = 2", "beam_size = \"two\"")).unwrap_err();
        assert!(format!("{err:#}").contains("beam_size"), "{err:#}");
        let err = parse(&text.replace("format_version = 1", "format_version = 3")).unwrap_err();
        assert!(
            format!("{err:#}").contains("format_version is 3, this runtime reads versions 1 to 2"),
            "{err:#}"
        );
        let err = parse(&text.replace("\"bicubic\"", "\"bilinear\"")).unwrap_err();
        assert!(format!("{err:#}").contains("bilinear"), "{err:#}");
    }

    #[test]
    fn a_caption_vocabulary_needs_version_2_and_a_listed_file() {
        let text = format!(
            "{MANIFEST_TEXT}{}",
            files(&[
                "e.onnx",
                "m.onnx",
                "d.onnx",
                "t.bin",
                "vocab.tiktoken",
                "ids.u32"
            ])
        )
        .replace("max_tokens = 5", "max_tokens = 5\ntoken_ids = \"ids.u32\"")
        .replace("end_of_text_id = 9", "end_of_text_id = 50256");
        let err = parse(&text).unwrap_err();
        assert!(
            format!("{err:#}").contains("decoder.token_ids needs format_version = 2"),
            "{err:#}"
        );
        let text = text.replace("format_version = 1", "format_version = 2");
        let m = parse(&text).unwrap();
        assert_eq!(m.decoder.token_ids.as_deref(), Some("ids.u32"));
        let err = parse(&text.replace("path = \"ids.u32\"", "path = \"other.u32\"")).unwrap_err();
        assert!(
            format!("{err:#}").contains("decoder.token_ids = `ids.u32` is not listed in [[files]]"),
            "{err:#}"
        );
    }

    #[test]
    fn refuses_unlisted_and_escaping_paths() {
        let err = parse(&format!(
            "{MANIFEST_TEXT}{}",
            files(&["e.onnx", "m.onnx", "d.onnx", "t.bin"])
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("tokenizer.vocab = `vocab.tiktoken` is not listed"),
            "{err:#}"
        );
        let text = format!("{MANIFEST_TEXT}{}", all_files()).replace("t.bin", "../t.bin");
        let err = parse(&text).unwrap_err();
        assert!(
            format!("{err:#}").contains("stay inside the bundle folder"),
            "{err:#}"
        );
        let text =
            format!("{MANIFEST_TEXT}{}", all_files()).replace("\"e.onnx\"", "\"/etc/e.onnx\"");
        assert!(parse(&text).is_err());
    }

    #[test]
    fn refuses_inconsistent_sizes() {
        let text = format!("{MANIFEST_TEXT}{}", all_files());
        let err = parse(&text.replace("output_size = 6", "output_size = 7")).unwrap_err();
        assert!(
            format!("{err:#}").contains("mapper.output_size (7) differs from decoder.width (6)"),
            "{err:#}"
        );
        let err =
            parse(&text.replace("stop_token_ids = [3]", "stop_token_ids = [30]")).unwrap_err();
        assert!(format!("{err:#}").contains("stop_token_ids: 30"), "{err:#}");
        let err = parse(&text.replace(
            "default_precision = \"fp32\"",
            "default_precision = \"int8\"",
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("default_precision `int8`"),
            "{err:#}"
        );
    }
}
