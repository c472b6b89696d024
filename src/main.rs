//! `capdec`: caption image files with a CapDec model bundle, or run the camera daemon.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use capdec_edge::bundle::{Bundle, MANIFEST};
use capdec_edge::captioner::{Caption, Captioner};
use capdec_edge::config::{Config, SourceConfig};
use capdec_edge::{daemon, logging, preprocess};
use serde_json::json;

const USAGE: &str = "capdec caption IMAGE... [--model DIR] [--precision fp32|int8] [--beam N] [--max-tokens N] [--json]";

const HELP: &str = "\
capdec: caption images on the device with a CapDec model bundle

usage: capdec caption IMAGE... [OPTIONS]
       capdec run --config FILE     caption cameras and publish over MQTT (see config/capdec.toml)
       capdec check-config FILE     check a daemon configuration and its model bundle, then exit

options:
  --model DIR          model bundle folder (default: $CAPDEC_MODEL, else models/demo or
                       models/fixture-tiny next to the executable or in the current folder)
  --precision P        fp32 or int8 (default: the bundle's default_precision)
  --beam N             beam size, 1 = greedy (default: the bundle's)
  --max-tokens N       longest caption in tokens (default: the bundle's)
  --json               one JSON object a line: file, caption, tokens, mean_log_prob, ms per stage
  -h, --help           this help
  -V, --version        version

Exit status: 0 all captioned (run: stopped by Ctrl-C or SIGTERM; check-config: valid), 1 a failure (any
image, the bundle, the configuration), 2 usage error.";

/// The default bundles, most capable first.
const DEFAULT_BUNDLES: [&str; 2] = ["models/demo", "models/fixture-tiny"];

#[derive(Debug, Default)]
struct CaptionArgs {
    images: Vec<PathBuf>,
    model: Option<PathBuf>,
    precision: Option<String>,
    beam: Option<usize>,
    max_tokens: Option<usize>,
    json: bool,
}

enum Command {
    Help,
    Version,
    Caption(CaptionArgs),
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
    match command {
        Command::Help => println!("{HELP}"),
        Command::Version => println!("capdec {}", env!("CARGO_PKG_VERSION")),
        Command::Caption(args) => match caption(&args) {
            Ok(true) => {}
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {}", one_line(&e));
                return ExitCode::FAILURE;
            }
        },
        Command::Run(path) => {
            if let Err(e) = run(&path) {
                // The logger may not be installed yet (a bad file); standard error always is.
                eprintln!("error: {}", one_line(&e));
                return ExitCode::FAILURE;
            }
        }
        Command::CheckConfig(path) => match check_config(&path) {
            Ok(summary) => println!("{summary}"),
            Err(e) => {
                eprintln!("error: {}", one_line(&e));
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn parse_args(args: Vec<OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Err("no command given".into());
    };
    match first.to_str() {
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("caption") => {}
        Some("run") => {
            return match (args.next(), args.next(), args.next()) {
                (Some(flag), Some(file), None) if flag == "--config" => {
                    Ok(Command::Run(PathBuf::from(file)))
                }
                _ => Err("run takes --config FILE".into()),
            };
        }
        Some("check-config") => {
            return match (args.next(), args.next()) {
                (Some(file), None) => Ok(Command::CheckConfig(PathBuf::from(file))),
                _ => Err("check-config takes one FILE".into()),
            };
        }
        _ => return Err(format!("unknown command `{}`", first.to_string_lossy())),
    }
    let mut parsed = CaptionArgs::default();
    let mut only_files = false;
    while let Some(arg) = args.next() {
        let Some(option) = arg
            .to_str()
            .filter(|t| !only_files && t.starts_with('-') && t.len() > 1)
        else {
            parsed.images.push(PathBuf::from(arg));
            continue;
        };
        // `--name=value` and `--name value` are both accepted.
        let (name, inline) = match option.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(OsString::from(v))),
            _ => (option.to_string(), None),
        };
        let mut value = |what: &str| -> Result<OsString, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--" => only_files = true,
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => parsed.json = true,
            "--model" => parsed.model = Some(PathBuf::from(value("a folder")?)),
            "--precision" => {
                let p = value("fp32 or int8")?.to_string_lossy().into_owned();
                if p != "fp32" && p != "int8" {
                    return Err(format!("--precision must be fp32 or int8, not `{p}`"));
                }
                parsed.precision = Some(p);
            }
            "--beam" => parsed.beam = Some(positive(&name, value("a number")?)?),
            "--max-tokens" => parsed.max_tokens = Some(positive(&name, value("a number")?)?),
            _ => return Err(format!("unknown option `{name}`")),
        }
    }
    if parsed.images.is_empty() {
        return Err("no image given".into());
    }
    Ok(Command::Caption(parsed))
}

fn positive(name: &str, value: OsString) -> Result<usize, String> {
    let text = value.to_string_lossy();
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{name} must be a positive whole number, not `{text}`"
        )),
    }
}

/// Captions every image, reporting each failure as it happens; `Ok(false)` when any image failed.
fn caption(args: &CaptionArgs) -> Result<bool> {
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => default_bundle()?,
    };
    let bundle = Bundle::open(&dir)?;
    let captioner = Captioner::load(&bundle, args.precision.as_deref())?;
    let mut config = captioner.search_config().clone();
    config.beam_size = args.beam.unwrap_or(config.beam_size);
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
            Ok(c) if args.json => {
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
                if args.json {
                    println!("{}", json!({"file": file, "error": message}));
                }
            }
        }
    }
    Ok(all_ok)
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
