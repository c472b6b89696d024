//! The command line, as clap reads it: every command's options, its `--help`, and what each becomes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

const EXIT_STATUS: &str = "\
Exit status: 0 all captioned (eval: and scored; run: stopped by Ctrl-C or SIGTERM; check-config: valid), 1 a
failure (any image, the references file, the bundle, the configuration), 2 usage error.";

#[derive(Debug, Parser)]
#[command(
    name = "capdec",
    version,
    about = "capdec: caption images on the device with a CapDec model bundle",
    after_help = EXIT_STATUS,
    subcommand_required = true,
    // As before clap: an option given twice keeps its last value.
    args_override_self = true,
    // The derive would print the whole help for a bare `capdec`; a usage error says what is missing.
    arg_required_else_help = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Caption image files, one line each
    Caption(CaptionArgs),
    /// Caption the images a references file lists, sorted by name, and score the captions (BLEU-4, ROUGE-L and
    /// CIDEr-D as the COCO caption evaluation computes them, shown x100)
    Eval(EvalArgs),
    /// Time every stage, median and 90th percentile, at each thread count (the image defaults to a grey frame)
    Bench(BenchArgs),
    /// Caption cameras and publish over MQTT until Ctrl-C or SIGTERM (see config/capdec.toml)
    Run(ConfigFile),
    /// Check a daemon configuration, the files it names and its model bundle, then exit
    CheckConfig(ConfigFile),
    /// Take pictures from one camera of a daemon configuration as the daemon would (no model, no MQTT), print
    /// how long each took, and save the last: to check a camera, and to time it
    Snapshot(SnapshotArgs),
    /// Print a completion script for a shell (e.g. `capdec completions bash > /etc/bash_completion.d/capdec`)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
}

/// The model options every captioning command takes.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model bundle folder (default: $CAPDEC_MODEL, else models/demo or models/fixture-tiny next to the
    /// executable or in the current folder)
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// fp32 or int8 (default: the bundle's default_precision)
    #[arg(long, value_name = "P", value_parser = ["fp32", "int8"])]
    pub precision: Option<String>,
    /// Beam size, 1 = greedy (default: the bundle's; bench: 5)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub beam: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// Image files: JPEG, PNG, WebP or BMP
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Longest caption in tokens (default: the bundle's)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub max_tokens: Option<usize>,
    /// Threads for inference (default: the cores this process may use)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub threads: Option<usize>,
    /// One JSON object a line: file, caption, tokens, mean_log_prob, precision, ms per stage
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The images; files in DIR that the references file does not list are ignored
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// JSON object: image file name (relative to DIR) -> list of reference captions, or an object with a
    /// "references" list (the format of tests/data/demo-scenes/references.json)
    #[arg(long, value_name = "FILE")]
    pub references: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Threads for inference (default: the cores this process may use)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub threads: Option<usize>,
    /// One JSON object a line per image (file, caption, references), then a summary (images, ignored, scores
    /// as fractions, model, precision, beam_size)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The picture to caption (default: a mid-grey 640x480 frame; the networks' cost does not depend on it)
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Thread counts to measure, comma-separated
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,2", value_parser = positive)]
    pub threads: Vec<usize>,
    /// Timed runs per stage
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = positive)]
    pub runs: usize,
    /// Untimed runs first
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub warmup: usize,
    /// Every benchmarked caption is this long
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = positive)]
    pub tokens: usize,
    /// Run the networks on onnxruntime's shared library (libonnxruntime.so.*) instead of tract, under the same
    /// search (a build with the `onnxruntime` feature)
    #[arg(long, value_name = "LIBRARY")]
    pub onnxruntime: Option<PathBuf>,
    /// One JSON report
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    /// The camera, by name (default: the configuration's only camera)
    #[arg(long, value_name = "NAME")]
    pub camera: Option<String>,
    /// Where the last picture goes: .jpg, .png, .webp or .bmp
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Pictures to take
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive)]
    pub count: usize,
    /// Seconds from one picture to the next (default: the camera's interval_s)
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub every: Option<f64>,
    /// One JSON object a picture (ms, width, height, origin, or error), then a summary with the CPU time used
    #[arg(long)]
    pub json: bool,
}

/// `FILE` or `--config FILE`: `run` took the option, `check-config` the position; both take either.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ConfigFile {
    /// The daemon's configuration (see config/capdec.toml)
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The same, as an option
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigFile {
    pub fn path(&self) -> &std::path::Path {
        // The group requires exactly one of the two.
        self.file
            .as_deref()
            .or(self.config.as_deref())
            .unwrap_or(std::path::Path::new(""))
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a positive whole number is expected".into()),
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0 to 86400 is expected".into()),
    }
}
