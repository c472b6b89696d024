//! The captioning thread: takes whichever camera's picture or API request is waiting. A camera's picture is
//! encoded and its embedding compared with the last published one, and only a changed scene (or a manual
//! capture) pays for the decoder and is published; a request's pictures are captioned and answered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::board::{Board, Job, Request, Trigger, Work};
use super::picture;
use super::stats::{Skipped, Stats};
use crate::caption::captioner::Model;
use crate::daemon::config::{CameraSettings, PictureSettings};
use crate::daemon::publish::{CaptionRecord, Delivery, Publisher};

const MINUTE: Duration = Duration::from_secs(60);

/// Per camera, what the captioning thread needs.
pub(super) struct CameraPlan {
    name: String,
    /// How the captioned picture is published, where it is.
    picture: Option<PictureSettings>,
    skip_if_similarity_above: f64,
    rate: RateLimit,
    last_published: Option<Vec<f32>>,
    published: u64,
}

impl CameraPlan {
    pub fn new(camera: &CameraSettings, picture: Option<PictureSettings>) -> CameraPlan {
        CameraPlan {
            name: camera.name.clone(),
            picture,
            skip_if_similarity_above: camera.skip_if_similarity_above,
            rate: RateLimit::new(camera.max_captions_per_minute),
            last_published: None,
            published: 0,
        }
    }
}

/// At most `max` events in any sliding minute.
struct RateLimit {
    max: usize,
    recent: VecDeque<Instant>,
}

impl RateLimit {
    fn new(max: u32) -> RateLimit {
        RateLimit {
            max: max as usize,
            recent: VecDeque::new(),
        }
    }

    fn allows(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        self.recent.len() < self.max
    }

    fn record(&mut self, now: Instant) {
        self.recent.push_back(now);
    }
}

/// Cosine similarity of two L2-normalised embeddings, in f64 so that identical pictures give exactly 1.
fn similarity(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    dot.clamp(-1.0, 1.0)
}

/// Runs until the board stops.
pub(super) fn caption_loop(
    model: &Model,
    mut plans: Vec<CameraPlan>,
    board: &Board,
    publisher: &Publisher,
    stats: &Stats,
) {
    while let Some(work) = board.take() {
        let (index, job) = match work {
            Work::Camera(index, job) => (index, job),
            Work::Request(request) => {
                answer(model, request);
                continue;
            }
        };
        let plan = &mut plans[index];
        let Captioned { record, picture } = match caption(model, plan, job) {
            Ok(Ok(captioned)) => captioned,
            Ok(Err(why)) => {
                stats.skipped(index, why);
                continue;
            }
            Err(error) => {
                stats.caption_failed(index);
                log::error!(camera = plan.name; "captioning failed: {error:#}");
                continue;
            }
        };
        stats.captioned(index, record.latency_ms.total());
        let outcome = match publisher.publish_caption(&record, picture) {
            Some(Delivery::Published) => "caption published".to_string(),
            Some(Delivery::Queued { waiting: 0 }) => {
                "caption queued: the MQTT broker is unreachable".to_string()
            }
            Some(Delivery::Queued { waiting }) => {
                format!("caption queued behind {waiting} others: the MQTT broker is unreachable")
            }
            None => continue,
        };
        log::info!(camera = record.camera, sequence = record.sequence, trigger = record.trigger, source = record.source,
            caption = record.caption, score = format!("{:.3}", record.score),
            similarity = record.similarity.map(|s| format!("{s:.4}")).unwrap_or_else(|| "none".into()),
            total_ms = format!("{:.0}", record.latency_ms.total());
            "{outcome}");
    }
}

/// Captions a request's pictures, unless its client has stopped waiting.
fn answer(model: &Model, request: Request) {
    if request.reply.is_closed() {
        log::debug!("API request dropped: its client stopped waiting");
        return;
    }
    let captioner = &model.captioner;
    let mut captions = Vec::with_capacity(request.pictures.len());
    for picture in request.pictures {
        // A client that gave up in the middle of many pictures costs no more of them.
        if request.reply.is_closed() {
            log::debug!("API request dropped: its client stopped waiting");
            return;
        }
        captions.push(
            captioner
                .encode_pixels(picture.pixels, picture.preprocess_ms)
                .and_then(|encoded| captioner.finish(&encoded, &model.search)),
        );
    }
    let captions: Result<Vec<_>> = captions.into_iter().collect();
    if let Err(error) = &captions {
        log::error!("captioning an API request failed: {error:#}");
    }
    // A client that stopped waiting in the meantime has been answered already (a timeout).
    let _ = request.reply.send(captions);
    // Only now may the API take another request in its place.
    drop(request.place);
}

/// A camera's caption, to publish.
struct Captioned {
    record: CaptionRecord,
    /// The picture it describes, downscaled, where pictures are published.
    picture: Option<Vec<u8>>,
}

/// The caption and the picture to publish with it, or why the picture is skipped: rate limit reached, or the
/// scene has not changed.
fn caption(model: &Model, plan: &mut CameraPlan, job: Job) -> Result<Result<Captioned, Skipped>> {
    let now = Instant::now();
    if !plan.rate.allows(now) {
        log::info!(camera = plan.name, max_per_minute = plan.rate.max; "rate limit reached: picture skipped");
        return Ok(Err(Skipped::RateLimit));
    }
    let captioner = &model.captioner;
    let mut encoded = captioner.encode(&job.frame.image)?;
    encoded.timings.capture = job.capture_ms;

    let similar = plan
        .last_published
        .as_deref()
        .map(|last| similarity(last, &encoded.embedding));
    if let Some(value) = similar
        && job.trigger == Trigger::Interval
        && value > plan.skip_if_similarity_above
    {
        log::debug!(camera = plan.name, similarity = format!("{value:.4}"),
            threshold = plan.skip_if_similarity_above; "scene unchanged: decoder skipped");
        return Ok(Err(Skipped::Unchanged));
    }

    let caption = captioner.finish(&encoded, &model.search)?;
    plan.rate.record(now);
    plan.last_published = Some(encoded.embedding);
    plan.published += 1;
    let thumbnail = plan.picture.and_then(|settings| {
        let thumbnail = picture::thumbnail(&job.frame.image, settings);
        if thumbnail.is_none() {
            log::warn!(camera = plan.name, max_bytes = settings.max_bytes;
                "the captioned picture does not fit home_assistant.picture_max_kb even at its smallest: not published");
        }
        thumbnail
    });
    let record = CaptionRecord {
        camera: plan.name.clone(),
        sequence: plan.published,
        caption: caption.text,
        score: caption.mean_log_prob,
        model: model.name().to_string(),
        precision: captioner.precision().to_string(),
        timestamp: humantime::format_rfc3339_millis(job.frame.taken_at).to_string(),
        trigger: job.trigger.as_str(),
        similarity: similar,
        source: job.frame.origin,
        latency_ms: caption.timings,
    };
    Ok(Ok(Captioned {
        record,
        picture: thumbnail,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_a_sliding_minute() {
        let start = Instant::now();
        let mut rate = RateLimit::new(2);
        for second in [0, 10] {
            let at = start + Duration::from_secs(second);
            assert!(rate.allows(at));
            rate.record(at);
        }
        assert!(!rate.allows(start + Duration::from_secs(59)));
        assert!(
            rate.allows(start + Duration::from_secs(60)),
            "the first event has left the window"
        );
    }

    #[test]
    fn similarity_of_normalised_embeddings() {
        let a = [0.6, 0.8, 0.0];
        assert_eq!(similarity(&a, &a), 1.0);
        assert_eq!(similarity(&a, &[0.0, 0.0, 1.0]), 0.0);
        assert!((similarity(&a, &[0.8, 0.6, 0.0]) - 0.96).abs() < 1e-6);
    }
}
