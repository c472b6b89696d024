//! The captioning thread: takes whichever camera's picture is waiting, encodes it, compares the embedding with
//! the last published one, and only for a changed scene (or a manual capture) pays for the decoder and publishes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::cameras::{Board, Job, Trigger};
use crate::caption::captioner::Model;
use crate::daemon::config::CameraSettings;
use crate::daemon::publish::{CaptionRecord, Delivery, Publisher};

const MINUTE: Duration = Duration::from_secs(60);

/// Per camera, what the captioning thread needs.
pub(super) struct CameraPlan {
    name: String,
    skip_if_similarity_above: f64,
    rate: RateLimit,
    last_published: Option<Vec<f32>>,
    published: u64,
}

impl CameraPlan {
    pub fn new(camera: &CameraSettings) -> CameraPlan {
        CameraPlan {
            name: camera.name.clone(),
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
) {
    while let Some((index, job)) = board.take() {
        let plan = &mut plans[index];
        match caption(model, plan, job) {
            Ok(Some(record)) => {
                let delivery = publisher.publish_caption(&record);
                let outcome = match delivery {
                    Some(Delivery::Published) => "caption published".to_string(),
                    Some(Delivery::Queued { waiting: 0 }) => {
                        "caption queued: the MQTT broker is unreachable".to_string()
                    }
                    Some(Delivery::Queued { waiting }) => format!(
                        "caption queued behind {waiting} others: the MQTT broker is unreachable"
                    ),
                    None => continue,
                };
                log::info!(camera = record.camera, sequence = record.sequence, trigger = record.trigger, source = record.source,
                    caption = record.caption, score = format!("{:.3}", record.score),
                    similarity = record.similarity.map(|s| format!("{s:.4}")).unwrap_or_else(|| "none".into()),
                    total_ms = format!("{:.0}", record.latency_ms.total());
                    "{outcome}");
            }
            Ok(None) => {}
            Err(error) => log::error!(camera = plan.name; "captioning failed: {error:#}"),
        }
    }
}

/// `None` when the picture is skipped: rate limit reached, or the scene has not changed.
fn caption(model: &Model, plan: &mut CameraPlan, job: Job) -> Result<Option<CaptionRecord>> {
    let now = Instant::now();
    if !plan.rate.allows(now) {
        log::info!(camera = plan.name, max_per_minute = plan.rate.max; "rate limit reached: picture skipped");
        return Ok(None);
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
        return Ok(None);
    }

    let caption = captioner.finish(&encoded, &model.search)?;
    plan.rate.record(now);
    plan.last_published = Some(encoded.embedding);
    plan.published += 1;
    Ok(Some(CaptionRecord {
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
