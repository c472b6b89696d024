//! A frame in, a caption out: preprocess -> encode -> L2-normalise -> map -> decode with search -> text.

use std::cmp::Reverse;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use image::RgbImage;
use serde::ser::{Serialize, SerializeStruct, Serializer};

pub use crate::runtime::{available_cores, use_threads};

use crate::bundle::{self, Bundle, DecoderSpec, MANIFEST, TableDtype, Variant};
use crate::caption::decoder::{Decoder, DecoderShape, Session};
use crate::caption::embeddings::TokenEmbeddings;
use crate::caption::encoder::Encoder;
use crate::caption::mapper::Mapper;
use crate::caption::preprocess::Preprocessor;
use crate::caption::search::{self, Hypothesis, SearchConfig};
use crate::caption::tokenizer::{Tokenizer, parse_token_ids};

pub struct Captioner {
    precision: String,
    preprocessor: Preprocessor,
    encoder: Encoder,
    mapper: Mapper,
    decoder: Decoder,
    tokenizer: Tokenizer,
    normalized_in_graph: bool,
    lowercase: bool,
    search: SearchConfig,
    /// Positions left for tokens after the prefix.
    max_tokens_limit: usize,
}

#[derive(Debug, Clone)]
pub struct Caption {
    pub text: String,
    /// GPT-2 ids.
    pub tokens: Vec<u32>,
    pub mean_log_prob: f64,
    pub timings: Timings,
}

/// The first half of a caption: the picture's embedding, as the mapper takes it, and the time it took. The
/// daemon compares it with the last published one before it pays for the second half (`Captioner::finish`).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub embedding: Vec<f32>,
    pub timings: Timings,
}

/// Wall-clock milliseconds per stage of one caption.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Taking the picture (the daemon's cameras); 0 where the image was handed over.
    pub capture: f64,
    pub preprocess: f64,
    pub encode: f64,
    pub map: f64,
    pub decode: f64,
}

impl Timings {
    pub fn total(&self) -> f64 {
        self.capture + self.preprocess + self.encode + self.map + self.decode
    }
}

/// The caption's record on MQTT has every stage and the total.
impl Serialize for Timings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut record = serializer.serialize_struct("Timings", 6)?;
        record.serialize_field("capture", &self.capture)?;
        record.serialize_field("preprocess", &self.preprocess)?;
        record.serialize_field("encode", &self.encode)?;
        record.serialize_field("map", &self.map)?;
        record.serialize_field("decode", &self.decode)?;
        record.serialize_field("total", &self.total())?;
        record.end()
    }
}

/// Runs one stage, adding its wall-clock milliseconds to `ms`.
pub fn timed<T>(ms: &mut f64, stage: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = stage();
    *ms += start.elapsed().as_secs_f64() * 1e3;
    out
}

/// What to load: every command's model options, each `None` for the bundle's own.
#[derive(Debug, Clone, Default)]
pub struct ModelChoice {
    /// Without it: `bundle::locate`'s defaults.
    pub bundle: Option<PathBuf>,
    pub precision: Option<String>,
    pub beam_size: Option<usize>,
    pub max_tokens: Option<usize>,
}

/// A loaded model and how to search with it: what every command starts from.
pub struct Model {
    pub dir: PathBuf,
    pub bundle: Bundle,
    pub captioner: Captioner,
    pub search: SearchConfig,
}

impl Model {
    /// Opens the bundle, loads one precision and applies the choice's search settings, refusing those the
    /// decoder cannot honour before any image is read.
    pub fn load(choice: &ModelChoice) -> Result<Model> {
        let dir = bundle::locate(choice.bundle.as_deref())?;
        let bundle = Bundle::open(&dir)?;
        let captioner = Captioner::load(&bundle, choice.precision.as_deref())?;
        let mut search = captioner.search_config().clone();
        search.beam_size = choice.beam_size.unwrap_or(search.beam_size);
        search.max_tokens = choice.max_tokens.unwrap_or(search.max_tokens);
        captioner
            .check_search(&search)
            .with_context(|| format!("{}", dir.display()))?;
        Ok(Model {
            dir,
            bundle,
            captioner,
            search,
        })
    }

    /// The bundle's name, for reports and Home Assistant's device card.
    pub fn name(&self) -> &str {
        &self.bundle.manifest.name
    }
}

/// The three graphs, to order their loading.
enum Graph {
    Encoder,
    Mapper,
    Decoder,
}

fn token_embeddings(
    bundle: &Bundle,
    variant: &Variant,
    d: &DecoderSpec,
) -> Result<TokenEmbeddings> {
    let table_file = &variant.token_embeddings.file;
    let bytes = bundle.read_verified(table_file)?;
    match variant.token_embeddings.dtype {
        TableDtype::F32 => TokenEmbeddings::from_f32_bytes(&bytes, d.vocab_size, d.width),
        TableDtype::Q8Rows => TokenEmbeddings::from_q8_rows_bytes(&bytes, d.vocab_size, d.width),
    }
    .with_context(|| {
        format!(
            "{}: invalid token-embedding table",
            bundle.path(table_file).display()
        )
    })
}

impl Captioner {
    /// Loads one precision of a bundle (its default when `precision` is `None`), checking every file it reads.
    pub fn load(bundle: &Bundle, precision: Option<&str>) -> Result<Captioner> {
        let m = &bundle.manifest;
        let precision = precision.unwrap_or(&m.default_precision).to_string();
        let variant = bundle.variant(&precision)?;

        let d = &m.decoder;
        let token_ids = match &d.token_ids {
            None => None,
            Some(file) => Some(
                parse_token_ids(&bundle.read_verified(file)?, d.vocab_size).with_context(|| {
                    format!(
                        "{}: invalid caption vocabulary",
                        bundle.path(file).display()
                    )
                })?,
            ),
        };
        let vocab_path = bundle.path(&m.tokenizer.vocab);
        let vocab = bundle.read_verified(&m.tokenizer.vocab)?;
        let vocab = String::from_utf8(vocab)
            .with_context(|| format!("{}: not UTF-8 text", vocab_path.display()))?;
        let tokenizer = Tokenizer::from_tiktoken(&vocab, d.end_of_text_id, token_ids)
            .with_context(|| format!("{}: invalid tiktoken vocabulary", vocab_path.display()))?;
        ensure!(
            tokenizer.rows() == d.vocab_size,
            "{}: vocabulary has {} tokens, the manifest's decoder.vocab_size is {}",
            vocab_path.display(),
            tokenizer.rows(),
            d.vocab_size
        );
        // The search works in decoder rows; the manifest names GPT-2 ids.
        let row_of = |id: u32, key: &str| {
            tokenizer.row_of(id).with_context(|| {
                format!(
                    "{}: decoder.{key} {id} is not in the decoder's vocabulary",
                    bundle.path(MANIFEST).display()
                )
            })
        };
        let end_of_text_row = row_of(d.end_of_text_id, "end_of_text_id")?;
        let stop_rows = d
            .stop_token_ids
            .iter()
            .map(|&id| row_of(id, "stop_token_ids"))
            .collect::<Result<Vec<_>>>()?;

        let e = &m.encoder;
        // Loading a graph briefly holds about twice its weights (the file's bytes or its decoded protobuf, and
        // tract's tensors) on top of what is already resident, so the largest goes first (BENCHMARKS.md,
        // "Memory"); the token table is read once the decoder that keeps it is compiled.
        let size = |file: &str| m.entry(file).map_or(0, |entry| entry.bytes);
        let mut graphs = [Graph::Encoder, Graph::Mapper, Graph::Decoder];
        graphs.sort_by_key(|graph| {
            Reverse(size(match graph {
                Graph::Encoder => &variant.encoder.file,
                Graph::Mapper => &variant.mapper.file,
                Graph::Decoder => &variant.decoder.file,
            }))
        });
        let (mut encoder, mut mapper, mut decoder) = (None, None, None);
        for graph in graphs {
            match graph {
                Graph::Encoder => {
                    let file = &variant.encoder.file;
                    encoder = Some(Encoder::load(
                        &bundle.path(file),
                        bundle.read_verified(file)?,
                        e.input_size as usize,
                        e.embedding_size,
                    )?);
                }
                Graph::Mapper => {
                    let file = &variant.mapper.file;
                    mapper = Some(Mapper::load(
                        &bundle.path(file),
                        bundle.read_verified(file)?,
                        m.mapper.input_size,
                        m.mapper.prefix_length,
                        m.mapper.output_size,
                    )?);
                }
                Graph::Decoder => {
                    let file = &variant.decoder.file;
                    let shape = DecoderShape {
                        layers: d.layers,
                        heads: d.heads,
                        width: d.width,
                        vocab_size: d.vocab_size,
                    };
                    decoder = Some(Decoder::load(
                        &bundle.path(file),
                        bundle.read_verified(file)?,
                        shape,
                        || token_embeddings(bundle, variant, d),
                    )?);
                }
            }
        }
        let (Some(encoder), Some(mapper), Some(decoder)) = (encoder, mapper, decoder) else {
            bail!("{}: a graph was not loaded", bundle.path("").display());
        };

        Ok(Captioner {
            precision,
            preprocessor: Preprocessor {
                size: e.input_size,
                mean: e.mean,
                std: e.std,
            },
            encoder,
            mapper,
            decoder,
            tokenizer,
            normalized_in_graph: e.normalized_in_graph,
            lowercase: m.decoding.lowercase,
            search: SearchConfig {
                beam_size: m.decoding.beam_size,
                length_normalized: m.decoding.length_normalized,
                max_tokens: d.max_tokens,
                stop_rows,
                end_of_text_row,
            },
            max_tokens_limit: d.max_positions - m.mapper.prefix_length,
        })
    }

    pub fn precision(&self) -> &str {
        &self.precision
    }

    /// The bundle's search settings, to adjust per call.
    pub fn search_config(&self) -> &SearchConfig {
        &self.search
    }

    /// A picture's caption: `encode`, then `finish`.
    pub fn caption(&self, image: &RgbImage, config: &SearchConfig) -> Result<Caption> {
        self.finish(&self.encode(image)?, config)
    }

    /// Preprocess, encode and normalise: the embedding the scene gate compares and the mapper takes.
    pub fn encode(&self, image: &RgbImage) -> Result<Encoded> {
        let mut preprocess_ms = 0.0;
        let pixels = timed(&mut preprocess_ms, || self.preprocess(image));
        self.encode_pixels(pixels, preprocess_ms)
    }

    /// `encode` of a picture preprocessed elsewhere (`preprocessor()`, off the captioning thread), which took
    /// `preprocess_ms`.
    pub fn encode_pixels(&self, pixels: Vec<f32>, preprocess_ms: f64) -> Result<Encoded> {
        let mut timings = Timings {
            preprocess: preprocess_ms,
            ..Timings::default()
        };
        let embedding = timed(&mut timings.encode, || self.embed(pixels))?;
        Ok(Encoded { embedding, timings })
    }

    /// What turns a picture into the encoder's input, for whoever prepares pictures on other threads.
    pub(crate) fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Map and decode: the caption of an encoded picture, with the time of every stage.
    pub fn finish(&self, encoded: &Encoded, config: &SearchConfig) -> Result<Caption> {
        let mut timings = encoded.timings.clone();
        let prefix = timed(&mut timings.map, || self.prefix(encoded.embedding.clone()))?;
        let hypothesis = timed(&mut timings.decode, || self.decode(&prefix, config))?;
        Ok(Caption {
            text: self.text(&hypothesis.tokens),
            mean_log_prob: hypothesis.mean_log_prob(),
            tokens: self.token_ids(&hypothesis.tokens),
            timings,
        })
    }

    /// The encoder's input, `[3, S, S]`.
    pub fn preprocess(&self, image: &RgbImage) -> Vec<f32> {
        self.preprocessor.tensor(image)
    }

    /// The image embedding as the mapper takes it: L2-normalised, as CapDec was trained.
    pub fn embed(&self, pixels: Vec<f32>) -> Result<Vec<f32>> {
        self.normalized(self.encoder.encode(pixels)?)
    }

    /// The encoder's output L2-normalised, unless the graph did it.
    pub(crate) fn normalized(&self, mut embedding: Vec<f32>) -> Result<Vec<f32>> {
        if !self.normalized_in_graph {
            let norm = embedding
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt() as f32;
            ensure!(
                norm > 0.0 && norm.is_finite(),
                "image embedding has norm {norm}, cannot normalise it"
            );
            embedding.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(embedding)
    }

    /// The decoder's prefix, `[P, W]`.
    pub fn prefix(&self, embedding: Vec<f32>) -> Result<Vec<f32>> {
        self.mapper.map(embedding)
    }

    /// Refuses settings the decoder cannot honour, before any image is processed.
    pub(crate) fn check_search(&self, config: &SearchConfig) -> Result<()> {
        ensure!(
            config.max_tokens <= self.max_tokens_limit,
            "max tokens {} exceeds the {} positions the decoder has left after its prefix",
            config.max_tokens,
            self.max_tokens_limit
        );
        ensure!(
            config.beam_size >= 1 && config.max_tokens >= 1,
            "beam size and max tokens must be at least 1"
        );
        Ok(())
    }

    pub fn decode(&self, prefix: &[f32], config: &SearchConfig) -> Result<Hypothesis> {
        self.check_search(config)?;
        let (mut session, first) = self.start_decoding(prefix)?;
        search::search(&first, &mut session, config)
    }

    /// For `capdec bench`'s onnxruntime engine, which runs its own graphs with this decoder's token table.
    #[cfg(feature = "onnxruntime")]
    pub(crate) fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The decoder's prefix call: a session to step token by token, and the first logits.
    pub(crate) fn start_decoding(&self, prefix: &[f32]) -> Result<(Session<'_>, Vec<f32>)> {
        self.decoder.start(prefix)
    }

    /// The GPT-2 ids of a hypothesis's decoder rows.
    pub fn token_ids(&self, rows: &[u32]) -> Vec<u32> {
        self.tokenizer.ids(rows)
    }

    /// The text of a hypothesis's decoder rows.
    pub fn text(&self, rows: &[u32]) -> String {
        let text = self.tokenizer.decode(rows);
        let text = text.trim();
        if self.lowercase {
            text.to_lowercase()
        } else {
            text.to_string()
        }
    }
}
