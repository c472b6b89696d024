//! `capdec`: caption image files with a CapDec model bundle, score captions against references, or run the
//! camera daemon.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use capdec_edge::bench::BenchOptions;
use capdec_edge::bundle::{Bundle, MANIFEST};
use capdec_edge::captioner::{Caption, Captioner};
use capdec_edge::config::{Config, SourceConfig};
use capdec_edge::{daemon, eval, logging, metrics, preprocess};
use serde_json::json;

const USAGE: &str = "capdec caption IMAGE... [--model DIR] [--precision fp32|int8] [--beam N] [--max-tokens N] [--json]
       capdec eval --images DIR --references FILE [--model DIR] [--precision fp32|int8] [--beam N] [--json]
       capdec bench [IMAGE] [--model DIR] [--precision fp32|int8] [--threads 1,2] [--runs N] [--warmup N] [--tokens N] [--beam N] [--json]
       capdec run --config FILE
       capdec check-config FILE";

const HELP: &str = "\
capdec: caption images on the device with a CapDec model bundle

usage: capdec caption IMAGE... [OPTIONS]
       capdec eval --images DIR --references FILE [OPTIONS]
       capdec bench [IMAGE] [OPTIONS]
       capdec run --config FILE     caption cameras and publish over MQTT (see config/capdec.toml)
       capdec check-config FILE     check a daemon configuration and its model bundle, then exit

options (caption, eval and bench):
  --model DIR          model bundle folder (default: $CAPDEC_MODEL, else models/demo or
                       models/fixture-tiny next to the executable or in the current folder)
  --precision P        fp32 or int8 (default: the bundle's default_precision)
  --beam N             beam size, 1 = greedy (default: the bundle's; bench: 5)
  --json               caption: one JSON object a line: file, caption, tokens, mean_log_prob, ms per stage;
                       eval: one JSON object a line per image (file, caption, references), then a summary
                       (images, ignored, scores as fractions, model, precision, beam_size);
                       bench: one JSON report
  -h, --help           this help
  -V, --version        version

caption:
  --max-tokens N       longest caption in tokens (default: the bundle's)

eval (captions every image the references file lists, sorted by name, and scores the captions: BLEU-4,
ROUGE-L and CIDEr-D as the COCO caption evaluation computes them, shown x100):
  --images DIR         the images; files in DIR that the references file does not list are ignored
  --references FILE    JSON object: image file name (relative to DIR) -> list of reference captions, or an
                       object with a \"references\" list (the format of tests/data/demo-scenes/references.json)

bench (times every stage, median and 90th percentile; the image defaults to a grey frame):
  --threads LIST       thread counts to measure, comma-separated (default: 1,2)
  --runs N             timed runs per stage (default: 20)
  --warmup N           untimed runs first (default: 3)
  --tokens N           every benchmarked caption is this long (default: 20)

Exit status: 0 all captioned (eval: and scored; run: stopped by Ctrl-C or SIGTERM; check-config: valid), 1 a
failure (any image, the references file, the bundle, the configuration), 2 usage error.";

/// The default bundles, most capable first.
const DEFAULT_BUNDLES: [&str; 2] = ["models/demo", "models/fixture-tiny"];

/// Options every command takes.
#[derive(Debug, Default)]
struct CommonArgs {
    model: Option<PathBuf>,
    precision: Option<String>,
    beam: Option<usize>,
    json: bool,
}

#[derive(Debug, Default)]
struct CaptionArgs {
    common: CommonArgs,
    images: Vec<PathBuf>,
    max_tokens: Option<usize>,
}

#[derive(Debug)]
struct EvalArgs {
    common: CommonArgs,
    images: PathBuf,
    references: PathBuf,
}

#[derive(Debug)]
struct BenchArgs {
    common: CommonArgs,
    image: Option<PathBuf>,
    threads: Vec<usize>,
    runs: usize,
    warmup: usize,
    tokens: usize,
}

enum Command {
    Help,
    Version,
    Caption(CaptionArgs),
    Eval(EvalArgs),
    Bench(BenchArgs),
    Run(PathBuf),
    CheckConfig(PathBuf),
}

fn main() -> ExitCode {
    let command = match parse_args(env::args_os().skip(1).collect()) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message} (usage: {USAGE})");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            println!("{HELP}");
            Ok(true)
        }
        Command::Version => {
            println!("capdec {}", env!("CARGO_PKG_VERSION"));
            Ok(true)
        }
        Command::Caption(args) => caption(&args),
        Command::Eval(args) => evaluate(&args).map(|()| true),
        Command::Bench(args) => bench(&args),
        // Before the logger is installed (a bad file) only standard error can say what went wrong.
        Command::Run(path) => run(&path).map(|()| true),
        Command::CheckConfig(path) => check_config(&path).map(|summary| {
            println!("{summary}");
            true
        }),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// What an option parser made of one argument.
enum Parsed {
    Taken,
    Help,
    Unknown,
}

/// Walks a command's arguments: positional ones go to `positional`; `--name value` and `--name=value` go to
/// `option` first, then to the options every command shares.
fn walk_args(
    args: impl Iterator<Item = OsString>,
    common: &mut CommonArgs,
    mut positional: impl FnMut(OsString),
    mut option: impl FnMut(
        &str,
        &mut dyn FnMut(&str) -> Result<OsString, String>,
    ) -> Result<Parsed, String>,
) -> Result<Parsed, String> {
    let mut args = args.into_iter();
    let mut only_files = false;
    while let Some(arg) = args.next() {
        let Some(text) = arg
            .to_str()
            .filter(|t| !only_files && t.starts_with('-') && t.len() > 1)
        else {
            positional(arg);
            continue;
        };
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
            _ => (text.to_string(), None),
        };
        let mut value = |what: &str| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--" => only_files = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "--json" if inline.is_none() => common.json = true,
            "--model" => common.model = Some(PathBuf::from(value("a folder")?)),
            "--precision" => {
                let p = value("fp32 or int8")?.to_string_lossy().into_owned();
                if p != "fp32" && p != "int8" {
                    return Err(format!("--precision must be fp32 or int8, not `{p}`"));
                }
                common.precision = Some(p);
            }
            "--beam" => common.beam = Some(positive(&name, value("a number")?)?),
            _ => match option(&name, &mut value)? {
                Parsed::Unknown => return Err(format!("unknown option `{name}`")),
                Parsed::Help => return Ok(Parsed::Help),
                Parsed::Taken => {}
            },
        }
    }
    Ok(Parsed::Taken)
}

fn parse_args(args: Vec<OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err("no command given".into());
    };
    match first.to_str() {
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("caption") => parse_caption(args),
        Some("eval") => parse_eval(args),
        Some("bench") => parse_bench(args),
        Some("run") => match (args.next(), args.next(), args.next()) {
            (Some(flag), Some(file), None) if flag == "--config" => {
                Ok(Command::Run(PathBuf::from(file)))
            }
            _ => Err("run takes --config FILE".into()),
        },
        Some("check-config") => match (args.next(), args.next()) {
            (Some(file), None) => Ok(Command::CheckConfig(PathBuf::from(file))),
            _ => Err("check-config takes one FILE".into()),
        },
        _ => Err(format!("unknown command `{}`", first.to_string_lossy())),
    }
}

fn parse_caption(args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut parsed = CaptionArgs::default();
    let mut images = Vec::new();
    let mut max_tokens = None;
    let walked = walk_args(
        args,
        &mut parsed.common,
        |arg| images.push(PathBuf::from(arg)),
        |name, value| {
            if name != "--max-tokens" {
                return Ok(Parsed::Unknown);
            }
            max_tokens = Some(positive(name, value("a number")?)?);
            Ok(Parsed::Taken)
        },
    )?;
    if let Parsed::Help = walked {
        return Ok(Command::Help);
    }
    if images.is_empty() {
        return Err("no image given".into());
    }
    parsed.images = images;
    parsed.max_tokens = max_tokens;
    Ok(Command::Caption(parsed))
}

fn parse_eval(args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut common = CommonArgs::default();
    let mut positional = Vec::new();
    let (mut images, mut references) = (None, None);
    let walked = walk_args(
        args,
        &mut common,
        |arg| positional.push(arg),
        |name, value| {
            match name {
                "--images" => images = Some(PathBuf::from(value("a folder")?)),
                "--references" => references = Some(PathBuf::from(value("a JSON file")?)),
                _ => return Ok(Parsed::Unknown),
            }
            Ok(Parsed::Taken)
        },
    )?;
    if let Parsed::Help = walked {
        return Ok(Command::Help);
    }
    if let Some(arg) = positional.first() {
        return Err(format!(
            "eval takes no positional arguments (got `{}`); the images come from --images DIR",
            arg.to_string_lossy()
        ));
    }
    match (images, references) {
        (Some(images), Some(references)) => Ok(Command::Eval(EvalArgs {
            common,
            images,
            references,
        })),
        (None, _) => Err("eval needs --images DIR".into()),
        (_, None) => Err("eval needs --references FILE".into()),
    }
}

fn parse_bench(args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut common = CommonArgs::default();
    let mut images = Vec::new();
    let (mut threads, mut runs, mut warmup, mut tokens) = (vec![1, 2], 20, 3, 20);
    let walked = walk_args(
        args,
        &mut common,
        |arg| images.push(PathBuf::from(arg)),
        |name, value| {
            match name {
                "--threads" => {
                    let list = value("a list such as 1,2")?;
                    threads = list
                        .to_string_lossy()
                        .split(',')
                        .map(|n| positive(name, OsString::from(n)))
                        .collect::<Result<_, _>>()?;
                }
                "--runs" => runs = positive(name, value("a number")?)?,
                "--warmup" => warmup = whole(name, value("a number")?)?,
                "--tokens" => tokens = positive(name, value("a number")?)?,
                _ => return Ok(Parsed::Unknown),
            }
            Ok(Parsed::Taken)
        },
    )?;
    if let Parsed::Help = walked {
        return Ok(Command::Help);
    }
    if images.len() > 1 {
        return Err("bench takes at most one image".into());
    }
    Ok(Command::Bench(BenchArgs {
        common,
        image: images.pop(),
        threads,
        runs,
        warmup,
        tokens,
    }))
}

fn whole(name: &str, value: OsString) -> Result<usize, String> {
    let text = value.to_string_lossy();
    text.parse::<usize>()
        .map_err(|_| format!("{name} must be a whole number, not `{text}`"))
}

fn positive(name: &str, value: OsString) -> Result<usize, String> {
    match whole(name, value.clone()) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{name} must be a positive whole number, not `{}`",
            value.to_string_lossy()
        )),
    }
}

fn bench(args: &BenchArgs) -> Result<bool> {
    let model = model_dir(&args.common)?;
    let image = match &args.image {
        Some(path) => preprocess::load_rgb(path)?,
        // A mid-grey 640x480 frame: the networks' cost does not depend on the picture.
        None => image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128])),
    };
    let options = BenchOptions {
        precision: args.common.precision.clone(),
        threads: args.threads.clone(),
        runs: args.runs,
        warmup: args.warmup,
        tokens: args.tokens,
        beam_size: args.common.beam.unwrap_or(5),
    };
    let report = capdec_edge::bench::run(&model, &image, &options)?;
    if args.common.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(true)
}

fn model_dir(common: &CommonArgs) -> Result<PathBuf> {
    match &common.model {
        Some(dir) => Ok(dir.clone()),
        None => default_bundle(),
    }
}

/// Captions every image, reporting each failure as it happens; `Ok(false)` when any image failed.
fn caption(args: &CaptionArgs) -> Result<bool> {
    let dir = model_dir(&args.common)?;
    let bundle = Bundle::open(&dir)?;
    let captioner = Captioner::load(&bundle, args.common.precision.as_deref())?;
    let mut config = captioner.search_config().clone();
    config.beam_size = args.common.beam.unwrap_or(config.beam_size);
    config.max_tokens = args.max_tokens.unwrap_or(config.max_tokens);
    captioner
        .check_search(&config)
        .with_context(|| format!("{}", dir.display()))?;

    let mut all_ok = true;
    for path in &args.images {
        let file = path.display().to_string();
        let result = (|| -> Result<Caption> {
            let start = Instant::now();
            let image = preprocess::load_rgb(path)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let mut caption = captioner
                .caption(&image, &config)
                .with_context(|| format!("{file}: captioning failed"))?;
            caption.timings.preprocess += load_ms;
            Ok(caption)
        })();
        match result {
            Ok(c) if args.common.json => {
                let t = &c.timings;
                let record = json!({
                    "file": file,
                    "caption": c.text,
                    "tokens": c.tokens,
                    "mean_log_prob": c.mean_log_prob,
                    "precision": captioner.precision(),
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
                if args.common.json {
                    println!("{}", json!({"file": file, "error": message}));
                }
            }
        }
    }
    Ok(all_ok)
}

/// Captions every image the references file lists (sorted by name), then scores the captions. Any failure (the
/// references file, a listed image missing or unreadable, the bundle) ends the run: a skipped image would change
/// the score.
fn evaluate(args: &EvalArgs) -> Result<()> {
    let listed = eval::read_references(&args.references)?;
    let paths = eval::image_paths(&args.images, &listed, &args.references)?;
    let ignored = eval::unlisted_images(&args.images, &listed)?;

    let dir = model_dir(&args.common)?;
    let bundle = Bundle::open(&dir)?;
    let captioner = Captioner::load(&bundle, args.common.precision.as_deref())?;
    let mut config = captioner.search_config().clone();
    config.beam_size = args.common.beam.unwrap_or(config.beam_size);
    captioner
        .check_search(&config)
        .with_context(|| format!("{}", dir.display()))?;

    let mut captions = Vec::with_capacity(listed.len());
    for (image, path) in listed.iter().zip(&paths) {
        let pixels = preprocess::load_rgb(path)?;
        let caption = captioner
            .caption(&pixels, &config)
            .with_context(|| format!("{}: captioning failed", path.display()))?;
        if args.common.json {
            let record = json!({"file": image.name, "caption": caption.text, "references": image.references});
            println!("{record}");
        } else {
            println!("{}: {}", image.name, caption.text);
        }
        captions.push(caption.text);
    }
    let references: Vec<Vec<String>> = listed.iter().map(|l| l.references.clone()).collect();
    let scores = metrics::score_captions(&captions, &references)?;

    if args.common.json {
        let summary = json!({
            "images": scores.captions,
            "ignored": ignored,
            "scores": {"bleu4": scores.bleu4, "rouge_l": scores.rouge_l, "cider_d": scores.cider_d},
            "model": dir.display().to_string(),
            "precision": captioner.precision(),
            "beam_size": config.beam_size,
        });
        println!("{summary}");
    } else {
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
            "model {} ({}, {}, beam {})\n",
            dir.display(),
            bundle.manifest.name,
            captioner.precision(),
            config.beam_size
        );
        println!("| images | BLEU-4 | ROUGE-L | CIDEr-D |\n|---|---|---|---|");
        println!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            scores.captions,
            100.0 * scores.bleu4,
            100.0 * scores.rouge_l,
            100.0 * scores.cider_d
        );
    }
    Ok(())
}

/// The daemon: configuration, logging, model, then cameras until a signal.
fn run(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    logging::init(config.log_level.get_ref())?;
    let (dir, bundle) = daemon_bundle(&config)?;
    let precision = config
        .model
        .precision
        .as_ref()
        .map(|p| p.get_ref().as_str());
    log::info!(bundle = dir.display().to_string(); "loading the model");
    let captioner = Captioner::load(&bundle, precision)?;
    let mut search = captioner.search_config().clone();
    if let Some(beam) = &config.model.beam_size {
        search.beam_size = *beam.get_ref();
    }
    if let Some(max_tokens) = &config.model.max_tokens {
        search.max_tokens = *max_tokens.get_ref();
    }
    captioner
        .check_search(&search)
        .with_context(|| format!("{}: [model] beam_size/max_tokens", path.display()))?;
    let name = bundle.manifest.name.clone();
    daemon::run(
        &config,
        daemon::Model {
            captioner,
            search,
            name,
        },
    )
}

/// Checks what `run` would read before it starts: the file, its secrets, the bundle's manifest and files.
fn check_config(path: &Path) -> Result<String> {
    let config = Config::load(path)?;
    let (dir, bundle) = daemon_bundle(&config)?;
    if let Some(precision) = &config.model.precision {
        bundle.variant(precision.get_ref())?;
    }
    let mut summary = format!(
        "{}: valid; model {} ({}); broker {}:{}; topics under {}/",
        path.display(),
        bundle.manifest.name,
        dir.display(),
        config.mqtt.host.get_ref(),
        config.port(),
        config.mqtt.base_topic.get_ref()
    );
    for camera in &config.camera {
        let c = camera.get_ref();
        let source = match c.source() {
            SourceConfig::File(file) => format!("file {}", file.path.display()),
            SourceConfig::Http(http) => format!("http {}", http.url.get_ref()),
            SourceConfig::Device(device) => match (&device.index, &device.name) {
                (Some(index), _) => format!("device /dev/video{index}"),
                (None, name) => format!("device `{}`", name.as_deref().unwrap_or_default()),
            },
        };
        summary.push_str(&format!(
            "\n  camera {}: {source}, every {} s",
            c.name.get_ref(),
            c.interval_s.get_ref()
        ));
    }
    Ok(summary)
}

/// The configuration's bundle, else the same default as `capdec caption`.
fn daemon_bundle(config: &Config) -> Result<(PathBuf, Bundle)> {
    let dir = match &config.model.bundle {
        Some(dir) => dir.clone(),
        None => default_bundle()?,
    };
    let bundle = Bundle::open(&dir)?;
    Ok((dir, bundle))
}

/// `$CAPDEC_MODEL`, else the first default bundle found above the executable (`target/release/capdec` sits
/// two levels below the repository) or in the current folder.
fn default_bundle() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("CAPDEC_MODEL").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = env::current_exe() {
        bases.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Ok(cwd) = env::current_dir() {
        bases.push(cwd);
    }
    for name in DEFAULT_BUNDLES {
        if let Some(dir) = bases
            .iter()
            .map(|b| b.join(name))
            .find(|d| d.join(MANIFEST).is_file())
        {
            return Ok(dir);
        }
    }
    bail!(
        "no model bundle found: pass --model DIR or set CAPDEC_MODEL (looked for {})",
        DEFAULT_BUNDLES.join(" and ")
    )
}

/// Errors go on one line: tract and the decoders sometimes put line breaks in theirs.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
