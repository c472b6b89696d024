//! What each command prints. The work is the library's: every command loads its model through `Model::load`,
//! `eval`, `bench` and `snapshot` run their own loops, `run` and `check-config` are the daemon's.

use std::io::Write;

use anyhow::{Context, Result};
use capdec_edge::caption::captioner::{
    Caption, Model, ModelChoice, available_cores, timed, use_threads,
};
use capdec_edge::eval::Evaluation;
use capdec_edge::{bench, preprocess};
use clap::CommandFactory;
use serde_json::json;

use crate::cli::{BenchArgs, CaptionArgs, Cli, EvalArgs, ModelArgs, SnapshotArgs};

fn choice(model: &ModelArgs, max_tokens: Option<usize>) -> ModelChoice {
    ModelChoice {
        bundle: model.model.clone(),
        precision: model.precision.clone(),
        beam_size: model.beam,
        max_tokens,
    }
}

/// Captions every image, reporting each failure as it happens; `Ok(false)` when any image failed.
pub fn caption(args: &CaptionArgs) -> Result<bool> {
    use_threads(args.threads.unwrap_or_else(available_cores));
    let model = Model::load(&choice(&args.model, args.max_tokens))?;
    let mut all_ok = true;
    for path in &args.images {
        let file = path.display().to_string();
        let result = (|| -> Result<Caption> {
            let mut load_ms = 0.0;
            let image = timed(&mut load_ms, || preprocess::load_rgb(path))?;
            let mut caption = model
                .captioner
                .caption(&image, &model.search)
                .with_context(|| format!("{file}: captioning failed"))?;
            // Reading and decoding the file is the command's preprocessing.
            caption.timings.preprocess += load_ms;
            Ok(caption)
        })();
        match result {
            Ok(c) if args.json => {
                let t = &c.timings;
                let record = json!({
                    "file": file,
                    "caption": c.text,
                    "tokens": c.tokens,
                    "mean_log_prob": c.mean_log_prob,
                    "precision": model.captioner.precision(),
                    "ms": {"preprocess": t.preprocess, "encode": t.encode, "map": t.map, "decode": t.decode},
                });
                println!("{record}");
            }
            Ok(c) if args.images.len() > 1 => println!("{file}: {}", c.text),
            Ok(c) => println!("{}", c.text),
            Err(e) => {
                all_ok = false;
                let message = one_line(&e);
                eprintln!("error: {message}");
                if args.json {
                    println!("{}", json!({"file": file, "error": message}));
                }
            }
        }
    }
    Ok(all_ok)
}

/// The references file and the folder are checked before the model is loaded.
pub fn evaluate(args: &EvalArgs) -> Result<()> {
    let evaluation = Evaluation::read(&args.images, &args.references)?;
    use_threads(args.threads.unwrap_or_else(available_cores));
    let model = Model::load(&choice(&args.model, None))?;
    let scores = evaluation.run(&model, |image, caption| {
        if args.json {
            let record = json!({"file": image.name, "caption": caption.text, "references": image.references});
            println!("{record}");
        } else {
            println!("{}: {}", image.name, caption.text);
        }
    })?;
    let (precision, beam) = (model.captioner.precision(), model.search.beam_size);
    let ignored = evaluation.ignored;
    if args.json {
        let summary = json!({
            "images": scores.captions,
            "ignored": ignored,
            "scores": {"bleu4": scores.bleu4, "rouge_l": scores.rouge_l, "cider_d": scores.cider_d},
            "model": model.dir.display().to_string(),
            "precision": precision,
            "beam_size": beam,
        });
        println!("{summary}");
        return Ok(());
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    println!(
        "\n{} image{} from {} scored against {}; {ignored} other image{} in the folder ignored",
        scores.captions,
        plural(scores.captions),
        args.images.display(),
        args.references.display(),
        plural(ignored),
    );
    println!(
        "model {} ({}, {precision}, beam {beam})\n",
        model.dir.display(),
        model.name()
    );
    println!("| images | BLEU-4 | ROUGE-L | CIDEr-D |\n|---|---|---|---|");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} |",
        scores.captions,
        100.0 * scores.bleu4,
        100.0 * scores.rouge_l,
        100.0 * scores.cider_d
    );
    Ok(())
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let dir = capdec_edge::bundle::locate(args.model.model.as_deref())?;
    let image = match &args.image {
        Some(path) => preprocess::load_rgb(path)?,
        // A mid-grey 640x480 frame: the networks' cost does not depend on the picture.
        None => image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128])),
    };
    let options = bench::BenchOptions {
        precision: args.model.precision.clone(),
        threads: args.threads.clone(),
        runs: args.runs,
        warmup: args.warmup,
        tokens: args.tokens,
        beam_size: args.model.beam.unwrap_or(5),
        onnxruntime: args.onnxruntime.clone(),
    };
    let report = bench::run(&dir, &image, &options)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Takes `count` pictures from the camera, one line (or JSON object) each; `Ok(false)` when any failed.
pub fn snapshot(args: &SnapshotArgs) -> Result<bool> {
    let path = args.config.path();
    let (camera, mut source) = capdec_edge::daemon::camera_source(path, args.camera.as_deref())?;
    let every = args
        .every
        .map_or(camera.interval, std::time::Duration::from_secs_f64);
    let started = std::time::Instant::now();
    let mut last = None;
    let mut failures = 0;
    for index in 1..=args.count {
        let due = started + every * (index as u32 - 1);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let mut ms = 0.0;
        let grabbed = timed(&mut ms, || source.grab());
        let report = match &grabbed {
            Ok(Some(frame)) => {
                let (width, height) = frame.image.dimensions();
                json!({"picture": index, "ms": ms, "width": width, "height": height, "origin": frame.origin})
            }
            Ok(None) => json!({"picture": index, "ms": ms, "none": "nothing new to look at"}),
            Err(e) => {
                failures += 1;
                json!({"picture": index, "ms": ms, "error": one_line(e)})
            }
        };
        if args.json {
            println!("{report}");
        } else {
            match grabbed {
                Ok(Some(ref frame)) => println!(
                    "picture {index}: {}x{} from {} in {ms:.1} ms",
                    frame.image.width(),
                    frame.image.height(),
                    frame.origin
                ),
                Ok(None) => println!("picture {index}: nothing new to look at ({ms:.1} ms)"),
                Err(ref e) => println!("picture {index}: {} ({ms:.1} ms)", one_line(e)),
            }
        }
        if let Ok(Some(frame)) = grabbed {
            last = Some(frame);
        }
    }
    if let (Some(output), Some(frame)) = (&args.output, &last) {
        frame
            .image
            .save(output)
            .with_context(|| format!("{}: cannot save the picture", output.display()))?;
        if !args.json {
            println!("saved {}", output.display());
        }
    }
    if args.json {
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds();
        println!(
            "{}",
            json!({"camera": camera.name, "pictures": args.count, "failed": failures, "wall_s": wall,
                   "cpu_s": cpu, "cpu_s_per_minute": cpu / wall * 60.0})
        );
    }
    Ok(failures == 0)
}

/// User and system time of this process and of the programs it waited for (a command camera's).
fn cpu_seconds() -> f64 {
    let seconds = |who| {
        // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid one.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return 0.0;
        }
        let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    seconds(libc::RUSAGE_SELF) + seconds(libc::RUSAGE_CHILDREN)
}

pub fn completions(shell: clap_complete::Shell) {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "capdec", &mut out);
    let _ = out.flush();
}

/// Errors go on one line: tract and the decoders sometimes put line breaks in theirs.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
