//! `capdec`: caption image files with a CapDec model bundle, score captions against references, time the
//! stages, run the camera daemon or try one of its cameras. This file only dispatches and chooses the exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Usage errors exit 2, `--help` and `--version` 0, as clap decides.
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Caption(args) => commands::caption(args),
        Command::Eval(args) => commands::evaluate(args).map(|()| true),
        Command::Bench(args) => commands::bench(args).map(|()| true),
        Command::Run(file) => capdec_edge::daemon::run(file.path()).map(|()| true),
        Command::CheckConfig(file) => capdec_edge::daemon::check(file.path()).map(|summary| {
            println!("{summary}");
            true
        }),
        Command::Snapshot(args) => commands::snapshot(args),
        Command::Completions { shell } => {
            commands::completions(*shell);
            Ok(true)
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", commands::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
