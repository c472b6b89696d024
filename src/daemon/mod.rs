//! The daemon: cameras in, captions out. Each camera has a thread (`cameras`) that takes its pictures on schedule
//! or on command and leaves the latest in its slot; one captioning thread (`captioning`) takes whichever slot is
//! filled, so a slow caption never holds up a camera or MQTT (`publish`), and a picture waiting for the captioner
//! is replaced by a newer one rather than queued. The CLIP embedding is compared with the last published one
//! before the decoder runs, so an unchanged scene costs an encoder pass, not a caption. The HTTP API (`api`)
//! hands the pictures sent to it to the same captioner through the same board (`board`), where they take their
//! turn with the cameras. `config` is read once, in full, before anything starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

mod api;
mod board;
mod cameras;
mod captioning;
pub mod config;
pub(crate) mod frigate;
mod logging;
mod picture;
pub(crate) mod publish;
pub mod sources;
mod stats;
mod tls;

use crate::bundle::{self, Bundle};
use crate::caption::captioner::{Model, ModelChoice, available_cores, use_threads};
use api::ApiServer;
use board::Board;
use captioning::CameraPlan;
use config::Settings;
use publish::Publisher;
use stats::{Queues, Stats};

/// How long the MQTT connection gets, at exit, to deliver what is queued and say `stopped`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `capdec run`: configuration, logging, model, then cameras until Ctrl-C or SIGTERM; then stops taking
/// pictures, finishes the caption in flight, publishes `stopped` and disconnects.
pub fn run(path: &Path) -> Result<()> {
    let settings = Settings::load(path)?;
    // Before the logger is installed (a bad file) only standard error can say what went wrong.
    logging::init(settings.log_level)?;
    let (dir, choice) = model_choice(&settings)?;
    let threads = settings.model.threads.unwrap_or_else(available_cores);
    use_threads(threads);
    log::info!(bundle = dir.display().to_string(), threads; "loading the model");
    let model = Model::load(&choice).with_context(|| format!("{}: [model]", path.display()))?;
    serve(&settings, model)
}

/// `capdec snapshot`: the source of the camera named (or of the only one), opened as `run` opens it, its
/// settings, and the daemon's logging on standard error.
pub fn camera_source(
    path: &Path,
    camera: Option<&str>,
) -> Result<(config::CameraSettings, Box<dyn sources::FrameSource>)> {
    let settings = Settings::load(path)?;
    logging::init(settings.log_level)?;
    let names = || {
        let names: Vec<&str> = settings.cameras.iter().map(|c| c.name.as_str()).collect();
        names.join(", ")
    };
    let index = match camera {
        Some(name) => settings
            .cameras
            .iter()
            .position(|c| c.name == name)
            .with_context(|| {
                format!("{}: no camera `{name}`; it has {}", path.display(), names())
            })?,
        None if settings.cameras.len() == 1 => 0,
        None => anyhow::bail!(
            "{}: several cameras ({}): say which with --camera",
            path.display(),
            names()
        ),
    };
    let mut cameras = settings.cameras;
    let camera = cameras.swap_remove(index);
    let source = sources::open(&camera.name, &camera.source);
    Ok((camera, source))
}

/// `capdec check-config`: everything `run` reads before it starts (the file, its secrets and TLS files, the
/// bundle's manifest and files), and a summary of what it would do.
pub fn check(path: &Path) -> Result<String> {
    let settings = Settings::load(path)?;
    let (dir, choice) = model_choice(&settings)?;
    let bundle = Bundle::open(&dir)?;
    if let Some(precision) = &choice.precision {
        bundle.variant(precision)?;
    }
    let mqtt = &settings.mqtt;
    let mut summary = format!(
        "{}: valid; model {} ({}); broker {}:{}; topics under {}/",
        path.display(),
        bundle.manifest.name,
        dir.display(),
        mqtt.host,
        mqtt.port,
        mqtt.base_topic
    );
    if let Some(frigate) = &settings.frigate {
        summary.push_str(&format!(
            "; Frigate's events from {} (snapshots from {})",
            frigate.events_topic, frigate.url
        ));
    }
    if let Some(api) = &settings.api {
        let token = if api.bearer_token.is_some() {
            ", bearer token required"
        } else {
            ""
        };
        summary.push_str(&format!("; HTTP API on http://{}{token}", api.listen));
    }
    for camera in &settings.cameras {
        summary.push_str(&format!(
            "\n  camera {}: {}, every {} s",
            camera.name,
            camera.source.describe(),
            camera.interval.as_secs_f64()
        ));
    }
    Ok(summary)
}

/// The file's `[model]`, with the bundle found as `capdec caption` finds it where the file names none.
fn model_choice(settings: &Settings) -> Result<(PathBuf, ModelChoice)> {
    let model = &settings.model;
    let dir = bundle::locate(model.bundle.as_deref())?;
    let choice = ModelChoice {
        bundle: Some(dir.clone()),
        precision: model.precision.clone(),
        beam_size: model.beam_size,
        max_tokens: model.max_tokens,
    };
    Ok((dir, choice))
}

fn serve(settings: &Settings, model: Model) -> Result<()> {
    let (stop, stopped) = mpsc::channel();
    ctrlc::set_handler(move || {
        // A second signal while stopping finds the receiver busy or gone; the first one is enough.
        let _ = stop.send(());
    })
    .context("cannot install the Ctrl-C/SIGTERM handler")?;

    let board = Arc::new(Board::new(settings.cameras.len()));
    let names: Vec<String> = settings.cameras.iter().map(|c| c.name.clone()).collect();
    let stats = Arc::new(Stats::new(&names));
    let mut commands = Vec::new();
    let mut plans = Vec::new();
    for (index, camera) in settings.cameras.iter().enumerate() {
        let (command, command_rx) = mpsc::channel();
        let (name, interval) = (camera.name.clone(), camera.interval);
        let (camera_board, camera_stats) = (Arc::clone(&board), Arc::clone(&stats));
        let source = camera.source.clone();
        thread::Builder::new()
            .name(format!("camera-{name}"))
            .spawn(move || {
                let source = sources::open(&name, &source);
                let place = cameras::Place {
                    index,
                    board: &camera_board,
                    stats: &camera_stats,
                };
                cameras::capture_loop(&name, source, interval, &command_rx, &place)
            })
            .with_context(|| format!("cannot start the thread of camera `{}`", camera.name))?;
        commands.push(command);
        plans.push(CameraPlan::new(camera, settings.home_assistant.picture));
        log::info!(camera = camera.name, interval_s = interval.as_secs_f64(); "camera started");
    }

    let api = match &settings.api {
        Some(api) => {
            let server = ApiServer::start(api, Arc::clone(&board), &model, Arc::clone(&stats))?;
            log::info!(address = server.address.to_string(); "API listening");
            Some(server)
        }
        None => None,
    };
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": {
            "name": model.name(),
            "precision": model.captioner.precision(),
            "beam_size": model.search.beam_size,
            "max_tokens": model.search.max_tokens,
        },
        "cameras": names,
        "api": api.as_ref().map(|api| format!("http://{}", api.address)),
        "frigate": settings.frigate.as_ref().map(|frigate| &frigate.url),
        "started_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    let (listeners, frigate) = match &settings.frigate {
        Some(frigate) => {
            let (listener, frigate) = frigate::listen(frigate, Arc::clone(&stats));
            (vec![listener], Some(frigate))
        }
        None => (Vec::new(), None),
    };
    let (reporter, waiting) = (Arc::clone(&stats), Arc::clone(&board));
    let publisher = Arc::new(Publisher::start(
        settings,
        model.name(),
        info,
        commands,
        Box::new(move |mqtt_waiting, mqtt_unconfirmed| {
            reporter.snapshot(Queues {
                captioner_waiting: waiting.waiting_requests(),
                mqtt_waiting,
                mqtt_unconfirmed,
            })
        }),
        listeners,
    )?);
    if let Some(frigate) = frigate {
        frigate.start(
            Arc::clone(&board),
            model.captioner.preprocessor().clone(),
            Arc::downgrade(&publisher),
            Arc::clone(&stats),
        )?;
        log::info!("captioning Frigate's events");
    }
    let worker_board = Arc::clone(&board);
    let worker_publisher = Arc::clone(&publisher);
    let worker = thread::Builder::new()
        .name("captioner".into())
        .spawn(move || {
            captioning::caption_loop(&model, plans, &worker_board, &worker_publisher, &stats)
        })
        .context("cannot start the captioning thread")?;

    // Ctrl-C or SIGTERM; a closed channel cannot happen while the handler holds its sender.
    let _ = stopped.recv();
    log::info!("stopping: finishing the caption in flight");
    // Closing the command channels ends the camera threads at their next wake-up; one in the middle of a slow
    // fetch is not waited for.
    publisher.close_commands();
    if let Some(api) = api {
        api.stop();
    }
    board.stop();
    if worker.join().is_err() {
        log::error!("the captioning thread panicked");
    }
    match Arc::try_unwrap(publisher) {
        Ok(publisher) => publisher.stop(STOP_GRACE),
        Err(_) => {
            log::error!("the MQTT publisher is still shared; exiting without a clean disconnect")
        }
    }
    log::info!("stopped");
    Ok(())
}
