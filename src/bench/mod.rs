//! `capdec bench`: where a caption's time and memory go, stage by stage, at each thread count.
//!
//! Captions are forced to a fixed length (no stop token can end them) so that runs, thread counts and engines
//! compare like for like; medians and 90th percentiles over many runs after a warm-up, never a single timing.
//! Every sample is bracketed by calls of [`capdec_bench_mark`], where scripts/arm-bench's instruction counter
//! notes its running total, so that counts under emulation are per sample too.
//!
//! The networks run on an [`Engine`]: tract, as the captioner does, or (the `onnxruntime` feature) onnxruntime's
//! own library. Preprocessing, search and text are the captioner's on both, so the engines compare like for like.

#[cfg(feature = "onnxruntime")]
mod onnxruntime;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use image::RgbImage;
use serde_json::{Value, json};

use crate::caption::captioner::{Captioner, Model, ModelChoice, timed};
use crate::caption::search::{self, SearchConfig, Step};
use crate::memory;
use crate::runtime::kernels::int8_matmul::{self, Work};
use crate::runtime::use_threads;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub precision: Option<String>,
    pub threads: Vec<usize>,
    pub runs: usize,
    pub warmup: usize,
    /// Tokens in every benchmarked caption.
    pub tokens: usize,
    pub beam_size: usize,
    /// onnxruntime's shared library, to run the networks on it instead of tract.
    pub onnxruntime: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Timed samples (after the warm-up), each bracketed by two marks.
    pub samples: usize,
    /// Int8 products done on our kernels, per sample (the mean).
    pub int8_multiply_adds: f64,
    pub int8_weights: f64,
}

/// One timed run of a stage, or one decoder step.
struct Sample {
    ms: f64,
    int8: Work,
}

#[derive(Debug, Clone)]
pub struct ThreadReport {
    pub threads: usize,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub model: String,
    pub precision: String,
    pub engine: String,
    pub load_ms: f64,
    pub options: BenchOptions,
    pub per_threads: Vec<ThreadReport>,
    /// Peak resident memory of the whole process (Linux `VmHWM`), after loading and after all runs; none on
    /// onnxruntime, which runs beside a loaded captioner.
    pub peak_rss_after_load_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

pub fn run(model: &Path, image: &RgbImage, options: &BenchOptions) -> Result<BenchReport> {
    ensure!(
        options.runs >= 1 && options.tokens >= 1 && options.beam_size >= 2,
        "bench needs at least 1 run, 1 token and a beam of 2 or more"
    );
    let choice = ModelChoice {
        bundle: Some(model.to_path_buf()),
        precision: options.precision.clone(),
        ..ModelChoice::default()
    };
    let mut load_ms = 0.0;
    let model = timed(&mut load_ms, || Model::load(&choice))?;
    let captioner = &model.captioner;
    let mut peak_rss_after_load_mb = memory::peak_resident_mb();
    let mut engine: Box<dyn Engine + '_> = match &options.onnxruntime {
        None => Box::new(Tract(captioner)),
        Some(library) => {
            peak_rss_after_load_mb = None;
            load_ms = 0.0;
            timed(&mut load_ms, || onnxruntime_engine(&model, library))?
        }
    };

    let greedy = fixed_length(captioner, 1, options.tokens);
    let beam = fixed_length(captioner, options.beam_size, options.tokens);
    captioner.check_search(&beam)?;
    let mut per_threads = Vec::new();
    for &threads in &options.threads {
        ensure!(threads >= 1, "thread counts must be at least 1");
        engine.use_threads(threads)?;
        let engine = engine.as_mut();
        let pixels = captioner.preprocess(image);
        let embedding = engine.embed(pixels.clone())?;
        let prefix = engine.prefix(embedding.clone())?;
        let mut stages = Vec::new();
        stages.push(timed_stage(options, "preprocess", &mut || {
            sample(|| Ok(captioner.preprocess(image)))
        })?);
        stages.push(timed_stage(options, "encode", &mut || {
            sample(|| engine.embed(pixels.clone()))
        })?);
        stages.push(timed_stage(options, "map", &mut || {
            sample(|| engine.prefix(embedding.clone()))
        })?);
        stages.push(timed_stage(options, "decoder prefix step", &mut || {
            sample(|| engine.start_decoding(&prefix).map(|(_, first)| first))
        })?);
        for (name, rows) in [
            ("decoder token step", 1),
            ("decoder beam step", options.beam_size),
        ] {
            stages.push(timed_stage(options, name, &mut || {
                token_steps(engine, &prefix, rows, options.tokens)
            })?);
        }
        for (name, search) in [("caption greedy", &greedy), ("caption beam", &beam)] {
            stages.push(timed_stage(options, name, &mut || {
                sample(|| caption(engine, captioner, image, search))
            })?);
        }
        // The part of a caption that the decoder's size and vocabulary decide, search included.
        stages.push(timed_stage(options, "decode beam", &mut || {
            sample(|| decode(engine, captioner, &prefix, &beam))
        })?);
        per_threads.push(ThreadReport { threads, stages });
    }
    // tract's executor is process-wide: back to one thread for whoever runs next.
    use_threads(1);
    Ok(BenchReport {
        model: model.name().to_string(),
        precision: captioner.precision().to_string(),
        engine: engine.name(),
        load_ms,
        options: options.clone(),
        per_threads,
        peak_rss_mb: peak_rss_after_load_mb.and(memory::peak_resident_mb()),
        peak_rss_after_load_mb,
    })
}

/// The networks of a caption, on one engine.
trait Engine {
    fn name(&self) -> String;
    fn use_threads(&mut self, threads: usize) -> Result<()>;
    /// The image embedding as the mapper takes it (`Captioner::embed`).
    fn embed(&mut self, pixels: Vec<f32>) -> Result<Vec<f32>>;
    fn prefix(&mut self, embedding: Vec<f32>) -> Result<Vec<f32>>;
    /// The decoder's prefix call: a session to step, and the first logits.
    fn start_decoding(&mut self, prefix: &[f32]) -> Result<(Box<dyn Step + '_>, Vec<f32>)>;
}

/// The captioner's own engine.
struct Tract<'c>(&'c Captioner);

impl Engine for Tract<'_> {
    fn name(&self) -> String {
        "tract".into()
    }

    fn use_threads(&mut self, threads: usize) -> Result<()> {
        use_threads(threads);
        Ok(())
    }

    fn embed(&mut self, pixels: Vec<f32>) -> Result<Vec<f32>> {
        self.0.embed(pixels)
    }

    fn prefix(&mut self, embedding: Vec<f32>) -> Result<Vec<f32>> {
        self.0.prefix(embedding)
    }

    fn start_decoding(&mut self, prefix: &[f32]) -> Result<(Box<dyn Step + '_>, Vec<f32>)> {
        let (session, first) = self.0.start_decoding(prefix)?;
        Ok((Box::new(session), first))
    }
}

#[cfg(feature = "onnxruntime")]
fn onnxruntime_engine<'m>(model: &'m Model, library: &Path) -> Result<Box<dyn Engine + 'm>> {
    Ok(Box::new(onnxruntime::OnnxRuntime::load(model, library)?))
}

#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime_engine<'m>(_: &'m Model, library: &Path) -> Result<Box<dyn Engine + 'm>> {
    anyhow::bail!(
        "cannot load {}: this capdec was built without onnxruntime (cargo build --release --features onnxruntime)",
        library.display()
    )
}

/// A stage's samples after its warm-up.
fn timed_stage(
    options: &BenchOptions,
    name: &'static str,
    f: &mut dyn FnMut() -> Result<Vec<Sample>>,
) -> Result<Stage> {
    for _ in 0..options.warmup {
        f()?;
    }
    let mut samples = Vec::new();
    for _ in 0..options.runs {
        samples.extend(f()?);
    }
    Ok(Stage::from_samples(name, samples))
}

/// A whole caption as `Captioner::caption` makes it, with the engine's networks: its tokens and text.
fn caption(
    engine: &mut dyn Engine,
    captioner: &Captioner,
    image: &RgbImage,
    config: &SearchConfig,
) -> Result<(Vec<u32>, String)> {
    let embedding = engine.embed(captioner.preprocess(image))?;
    let prefix = engine.prefix(embedding)?;
    decode(engine, captioner, &prefix, config)
}

/// A caption's decoding from the mapper's prefix: the decoder's calls, the search and the text.
fn decode(
    engine: &mut dyn Engine,
    captioner: &Captioner,
    prefix: &[f32],
    config: &SearchConfig,
) -> Result<(Vec<u32>, String)> {
    let (mut session, first) = engine.start_decoding(prefix)?;
    let hypothesis = search::search(&first, session.as_mut(), config)?;
    let text = captioner.text(&hypothesis.tokens);
    Ok((hypothesis.tokens, text))
}

/// A search that always writes `tokens` tokens: nothing stops it early.
fn fixed_length(captioner: &Captioner, beam_size: usize, tokens: usize) -> SearchConfig {
    SearchConfig {
        beam_size,
        max_tokens: tokens,
        stop_rows: Vec::new(),
        end_of_text_row: u32::MAX,
        ..captioner.search_config().clone()
    }
}

/// Every decoder call of a caption after the prefix, `rows` sequences at a time.
fn token_steps(
    engine: &mut dyn Engine,
    prefix: &[f32],
    rows: usize,
    tokens: usize,
) -> Result<Vec<Sample>> {
    let (mut session, first) = engine.start_decoding(prefix)?;
    let token = first
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(id, _)| id as u32)
        .context("the decoder returned no logits")?;
    let mut samples = Vec::with_capacity(tokens);
    let mut sources = vec![0; rows];
    for _ in 0..tokens {
        let tokens = vec![token; rows];
        samples.push(measured(|| session.step(&sources, &tokens))?);
        sources = (0..rows).collect();
    }
    Ok(samples)
}

/// One timed run as a stage's sample.
fn sample<T>(run: impl FnOnce() -> Result<T>) -> Result<Vec<Sample>> {
    Ok(vec![measured(run)?])
}

fn measured<T>(run: impl FnOnce() -> Result<T>) -> Result<Sample> {
    let before = int8_matmul::work_done();
    capdec_bench_mark();
    let mut ms = 0.0;
    timed(&mut ms, run)?;
    capdec_bench_mark();
    Ok(Sample {
        ms,
        int8: int8_matmul::work_done() - before,
    })
}

/// Does nothing, visibly: scripts/arm-bench's instruction counter notes its total at every call (by this symbol's
/// address), and the calls bracket every sample.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn capdec_bench_mark() {
    std::hint::black_box(());
}

impl Stage {
    fn from_samples(name: &'static str, samples: Vec<Sample>) -> Stage {
        let count = samples.len();
        let mean = |of: fn(&Work) -> u64| {
            samples.iter().map(|s| of(&s.int8) as f64).sum::<f64>() / count as f64
        };
        let (int8_multiply_adds, int8_weights) = (mean(|w| w.multiply_adds), mean(|w| w.weights));
        let mut ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((count - 1) as f64 * q).round() as usize];
        Stage {
            name,
            median_ms: at(0.5),
            p90_ms: at(0.9),
            samples: count,
            int8_multiply_adds,
            int8_weights,
        }
    }
}

impl BenchReport {
    pub fn to_json(&self) -> Value {
        let mb = |v: Option<f64>| v.map_or(Value::Null, |v| json!(v));
        json!({
            "model": self.model,
            "precision": self.precision,
            "engine": self.engine,
            "load_ms": self.load_ms,
            "runs": self.options.runs,
            "warmup": self.options.warmup,
            "tokens": self.options.tokens,
            "beam_size": self.options.beam_size,
            "peak_rss_after_load_mb": mb(self.peak_rss_after_load_mb),
            "peak_rss_mb": mb(self.peak_rss_mb),
            "threads": self.per_threads.iter().map(|t| json!({
                "threads": t.threads,
                "stages": t.stages.iter().map(|s| json!({
                    "stage": s.name, "median_ms": s.median_ms, "p90_ms": s.p90_ms,
                    "samples": s.samples, "int8_multiply_adds": s.int8_multiply_adds,
                    "int8_weights": s.int8_weights,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mb = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} MB"));
        let mut text = format!(
            "model {} ({}) on {}, load {:.0} ms, peak RSS {} after load, {} overall\n\
             {} runs after {} warm-up, captions of {} tokens, beam {}\n\n{:<22}",
            self.model,
            self.precision,
            self.engine,
            self.load_ms,
            mb(self.peak_rss_after_load_mb),
            mb(self.peak_rss_mb),
            self.options.runs,
            self.options.warmup,
            self.options.tokens,
            self.options.beam_size,
            "stage (ms)",
        );
        for t in &self.per_threads {
            text += &format!(
                "{:>24}",
                format!(
                    "{} thread{} median / p90",
                    t.threads,
                    if t.threads == 1 { "" } else { "s" }
                )
            );
        }
        text.push('\n');
        let Some(first) = self.per_threads.first() else {
            return text;
        };
        for (ix, stage) in first.stages.iter().enumerate() {
            text += &format!("{:<22}", stage.name);
            for t in &self.per_threads {
                let s = &t.stages[ix];
                text += &format!("{:>24}", format!("{:.2} / {:.2}", s.median_ms, s.p90_ms));
            }
            text.push('\n');
        }
        text
    }
}
