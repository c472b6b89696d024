//! The networks on onnxruntime (what a user would otherwise pick), loaded from its shared library at run time,
//! so that `capdec bench` compares engines under the very search, preprocessing and token table of the
//! captioner. The sessions read the same verified bundle files as tract does.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, ensure};
use ort::environment::Environment;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use super::Engine;
use crate::caption::captioner::{Captioner, Model};
use crate::caption::decoder::{DecoderShape, cache_names};
use crate::caption::search::Step;

pub(super) struct OnnxRuntime<'m> {
    environment: Environment,
    captioner: &'m Captioner,
    /// The bundle's graph files (path, bytes), read and verified once.
    graphs: [(PathBuf, Vec<u8>); 3],
    /// The sessions and the thread count they were made for.
    sessions: Option<(usize, Sessions)>,
    encoder_input: [usize; 4],
    mapper_input: usize,
}

struct Sessions {
    encoder: Session,
    mapper: Session,
    decoder: Session,
}

impl<'m> OnnxRuntime<'m> {
    pub(super) fn load(model: &'m Model, library: &Path) -> Result<OnnxRuntime<'m>> {
        let environment = environment(library)?;
        let variant = model.bundle.variant(model.captioner.precision())?;
        let graphs = [
            &variant.encoder.file,
            &variant.mapper.file,
            &variant.decoder.file,
        ]
        .map(|file| Ok((model.bundle.path(file), model.bundle.read_verified(file)?)));
        let [encoder, mapper, decoder]: [Result<_>; 3] = graphs;
        let size = model.bundle.manifest.encoder.input_size as usize;
        let mut engine = OnnxRuntime {
            environment,
            captioner: &model.captioner,
            graphs: [encoder?, mapper?, decoder?],
            sessions: None,
            encoder_input: [1, 3, size, size],
            mapper_input: model.bundle.manifest.mapper.input_size,
        };
        engine.use_threads(1)?;
        Ok(engine)
    }

    fn sessions(&mut self) -> Result<&mut Sessions> {
        self.sessions
            .as_mut()
            .map(|(_, sessions)| sessions)
            .context("onnxruntime sessions not created")
    }
}

impl Engine for OnnxRuntime<'_> {
    fn name(&self) -> String {
        "onnxruntime".into()
    }

    /// Sessions fix their thread pools when they are created: new ones for every other count.
    fn use_threads(&mut self, threads: usize) -> Result<()> {
        if matches!(self.sessions, Some((made_for, _)) if made_for == threads) {
            return Ok(());
        }
        self.sessions = None;
        let session = |(path, graph): &(PathBuf, Vec<u8>)| -> Result<Session> {
            Session::builder(&self.environment)
                .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
                .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
                .and_then(|mut b| b.commit_from_memory(graph))
                .map_err(|e| anyhow!("{}: onnxruntime cannot load it: {e}", path.display()))
        };
        let [encoder, mapper, decoder] = &self.graphs;
        let sessions = Sessions {
            encoder: session(encoder)?,
            mapper: session(mapper)?,
            decoder: session(decoder)?,
        };
        self.sessions = Some((threads, sessions));
        Ok(())
    }

    fn embed(&mut self, pixels: Vec<f32>) -> Result<Vec<f32>> {
        let shape = self.encoder_input;
        let embedding = run_fixed(
            &mut self.sessions()?.encoder,
            "pixel_values",
            &shape,
            pixels,
            "image_embeds",
        )?;
        self.captioner.normalized(embedding)
    }

    fn prefix(&mut self, embedding: Vec<f32>) -> Result<Vec<f32>> {
        let shape = [1, self.mapper_input];
        run_fixed(
            &mut self.sessions()?.mapper,
            "clip_embedding",
            &shape,
            embedding,
            "prefix_embeds",
        )
    }

    fn start_decoding(&mut self, prefix: &[f32]) -> Result<(Box<dyn Step + '_>, Vec<f32>)> {
        let captioner = self.captioner;
        let shape = captioner.decoder().shape();
        let (past, present) = cache_names(shape.layers);
        let mut decoding = Decoding {
            session: &mut self.sessions()?.decoder,
            captioner,
            shape,
            past,
            present,
            cache: Vec::new(),
            position: 0,
        };
        let length = prefix.len() / shape.width;
        ensure!(
            length > 0 && prefix.len() == length * shape.width,
            "prefix of {} values is not [P, {}]",
            prefix.len(),
            shape.width
        );
        let head_dim = shape.width / shape.heads;
        let empty = || Tensor::<f32>::from_array(([1, shape.heads, 0, head_dim], Vec::new()));
        let cache = (0..2 * shape.layers)
            .map(|_| Ok(empty()?.into_dyn()))
            .collect::<Result<Vec<DynValue>>>()?;
        let mut logits = decoding.run(prefix.to_vec(), [1, length], cache)?;
        ensure!(
            logits.len() == 1,
            "decoder returned {} rows of logits for one prefix",
            logits.len()
        );
        Ok((Box::new(decoding), logits.swap_remove(0)))
    }
}

/// onnxruntime allows one environment, and one library, per process.
fn environment(library: &Path) -> Result<Environment> {
    static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((path, environment)) = loaded.as_ref() {
        ensure!(
            path == library,
            "{}: onnxruntime was already loaded from {}",
            library.display(),
            path.display()
        );
        return Ok(environment.clone());
    }
    let environment = ort::init_from(library)
        .map_err(|e| anyhow!("{}: cannot load onnxruntime: {e}", library.display()))?
        .with_name("capdec-bench")
        .build()
        .map_err(|e| anyhow!("{}: onnxruntime: {e}", library.display()))?;
    *loaded = Some((library.to_path_buf(), environment.clone()));
    Ok(environment)
}

/// One input, one output, as the encoder and the mapper are.
fn run_fixed(
    session: &mut Session,
    input: &str,
    shape: &[usize],
    values: Vec<f32>,
    output: &str,
) -> Result<Vec<f32>> {
    let tensor = Tensor::<f32>::from_array((shape.to_vec(), values))?;
    let mut outputs = session.run(vec![(input, tensor)])?;
    let value = outputs
        .remove(output)
        .with_context(|| format!("the graph has no output `{output}`"))?;
    let (_, values) = value.try_extract_tensor::<f32>()?;
    Ok(values.to_vec())
}

/// One caption's decoder state on onnxruntime: its own cache values, reordered as the search asks.
struct Decoding<'s> {
    session: &'s mut Session,
    captioner: &'s Captioner,
    shape: DecoderShape,
    past: Vec<String>,
    present: Vec<String>,
    cache: Vec<DynValue>,
    position: usize,
}

impl Decoding<'_> {
    /// `[rows, seq]` new positions from `self.position` on; returns each row's logits and keeps the new cache.
    fn run(
        &mut self,
        embeds: Vec<f32>,
        [rows, seq]: [usize; 2],
        cache: Vec<DynValue>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.shape.vocab_size;
        let positions: Vec<i64> = (0..rows)
            .flat_map(|_| (self.position..self.position + seq).map(|p| p as i64))
            .collect();
        let mut inputs: Vec<(Cow<str>, SessionInputValue)> = vec![
            (
                "inputs_embeds".into(),
                Tensor::<f32>::from_array(([rows, seq, self.shape.width], embeds))?.into(),
            ),
            (
                "position_ids".into(),
                Tensor::<i64>::from_array(([rows, seq], positions))?.into(),
            ),
        ];
        inputs.extend(
            self.past
                .iter()
                .zip(cache)
                .map(|(name, value)| (Cow::from(name.as_str()), value.into())),
        );
        let mut outputs = self.session.run(inputs)?;
        let logits = outputs
            .remove("logits")
            .context("the decoder has no output `logits`")?;
        let (shape, values) = logits.try_extract_tensor::<f32>()?;
        ensure!(
            **shape == [rows as i64, vocab as i64],
            "decoder returned logits of shape {shape:?}"
        );
        let rows = values.chunks(vocab).map(<[f32]>::to_vec).collect();
        self.cache = self
            .present
            .iter()
            .map(|name| {
                outputs
                    .remove(name)
                    .with_context(|| format!("the decoder has no output `{name}`"))
            })
            .collect::<Result<_>>()?;
        self.position += seq;
        Ok(rows)
    }
}

impl Step for Decoding<'_> {
    fn step(&mut self, sources: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        ensure!(
            !tokens.is_empty() && sources.len() == tokens.len(),
            "a step needs one source row per token"
        );
        let cache = std::mem::take(&mut self.cache);
        let cache =
            if sources.iter().copied().eq(0..tokens.len()) && same_rows(&cache, tokens.len())? {
                cache
            } else {
                cache
                    .iter()
                    .map(|value| gather_rows(value, sources))
                    .collect::<Result<_>>()?
            };
        let embeds = self.captioner.decoder().token_embeddings(tokens)?;
        self.run(embeds, [tokens.len(), 1], cache)
    }
}

fn same_rows(cache: &[DynValue], rows: usize) -> Result<bool> {
    match cache.first() {
        Some(value) => Ok(value.try_extract_tensor::<f32>()?.0.first() == Some(&(rows as i64))),
        None => Ok(true),
    }
}

/// Row `i` of the result is row `sources[i]` of `value` (along the batch axis).
fn gather_rows(value: &DynValue, sources: &[usize]) -> Result<DynValue> {
    let (shape, values) = value.try_extract_tensor::<f32>()?;
    let rows = shape.first().map_or(0, |&r| r as usize);
    ensure!(
        sources.iter().all(|&s| s < rows),
        "source row out of range: {sources:?} of {rows} rows"
    );
    let row = values.len() / rows.max(1);
    let gathered: Vec<f32> = sources
        .iter()
        .flat_map(|&s| &values[s * row..(s + 1) * row])
        .copied()
        .collect();
    let mut dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    dims[0] = sources.len();
    Ok(Tensor::<f32>::from_array((dims, gathered))?.into_dyn())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::caption;
    use crate::caption::captioner::ModelChoice;
    use crate::caption::search::SearchConfig;

    /// `$CAPDEC_ONNXRUNTIME`, or the library of the toolkit's onnxruntime (scripts/onnxruntime-library).
    fn library() -> PathBuf {
        if let Some(path) = std::env::var_os("CAPDEC_ONNXRUNTIME") {
            return path.into();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnxruntime-library");
        let out = std::process::Command::new(&script)
            .output()
            .expect("scripts/onnxruntime-library runs");
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().into()
    }

    /// The fixture's goldens came from onnxruntime in Python (tests/parity.rs holds tract to them): the same
    /// search over onnxruntime from Rust must give their very tokens. (The lossless golden pictures, which our
    /// preprocessing turns into PIL's tensors bit for bit.)
    #[test]
    fn captions_the_goldens_at_both_precisions_and_thread_counts() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(repo.join("tests/data/fixture-goldens.json")).unwrap();
        let goldens: serde_json::Value = serde_json::from_str(&text).unwrap();
        let library = library();
        let mut checked = 0;
        for precision in ["fp32", "int8"] {
            let model = Model::load(&ModelChoice {
                bundle: Some(repo.join("models/fixture-tiny")),
                precision: Some(precision.into()),
                ..ModelChoice::default()
            })
            .unwrap();
            let mut engine = OnnxRuntime::load(&model, &library).unwrap();
            let images = goldens["precisions"][precision].as_object().unwrap();
            for threads in [1, 2] {
                engine.use_threads(threads).unwrap();
                for (name, golden) in images.iter().filter(|(name, _)| name.ends_with(".png")) {
                    let image =
                        crate::caption::preprocess::load_rgb(&repo.join("tests/data").join(name))
                            .unwrap();
                    for (kind, beam_size) in [("greedy", 1), ("beam", 5)] {
                        let config = SearchConfig {
                            beam_size,
                            ..model.search.clone()
                        };
                        let (tokens, _) =
                            caption(&mut engine, &model.captioner, &image, &config).unwrap();
                        let want: Vec<u32> = golden[kind]["tokens"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|id| id.as_u64().unwrap() as u32)
                            .collect();
                        assert_eq!(tokens, want, "{precision} {name} {kind}, {threads} threads");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * 4 * 2);
    }

    #[test]
    fn a_missing_library_is_named() {
        let model = Model::load(&ModelChoice {
            bundle: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixture-tiny")),
            ..ModelChoice::default()
        })
        .unwrap();
        let missing = Path::new("/nonexistent/libonnxruntime.so");
        let error = format!("{:#}", OnnxRuntime::load(&model, missing).err().unwrap());
        assert!(error.contains("/nonexistent/libonnxruntime.so"), "{error}");
    }
}
