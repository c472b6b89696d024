//! What the daemon has done since it started, counted where it happens (the captioner, the cameras, the API)
//! and published every `mqtt.stats_interval_s` on `<base>/stats`, in the manner of Frigate's `frigate/stats`.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::memory;

/// Why a camera's picture got no caption.
#[derive(Debug, Clone, Copy)]
pub(super) enum Skipped {
    /// The scene gate: the embedding was too close to the last published one.
    Unchanged,
    /// `max_captions_per_minute` reached.
    RateLimit,
}

/// How much waits, where.
#[derive(Debug, Serialize)]
pub(super) struct Queues {
    /// API requests and Frigate events waiting for the captioner.
    pub captioner_waiting: usize,
    /// Captions waiting for the broker.
    pub mqtt_waiting: usize,
    /// Caption messages handed to the broker and not confirmed yet.
    pub mqtt_unconfirmed: usize,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    count: u64,
    last_ms: Option<f64>,
    mean_ms: Option<f64>,
    max_ms: Option<f64>,
    #[serde(skip)]
    sum_ms: f64,
}

impl Latency {
    fn record(&mut self, ms: f64) {
        self.count += 1;
        self.sum_ms += ms;
        self.last_ms = Some(ms);
        self.mean_ms = Some(self.sum_ms / self.count as f64);
        self.max_ms = Some(self.max_ms.map_or(ms, |max| max.max(ms)));
    }
}

#[derive(Debug, Default, Serialize)]
struct CameraCounts {
    captions: u64,
    skipped_unchanged: u64,
    skipped_rate_limit: u64,
    /// Pictures that could not be taken (each attempt of a failing camera).
    capture_failures: u64,
    /// Pictures taken that could not be captioned.
    caption_failures: u64,
    /// From the grab to the caption.
    latency_ms: Latency,
}

#[derive(Debug, Default, Serialize)]
struct ApiCounts {
    answered: u64,
    /// 503: `queue_limit` requests were already taken.
    busy: u64,
    /// 408 and 504.
    timed_out: u64,
    /// Every other refusal: bad requests, tokens, paths.
    refused: u64,
    /// From the request's arrival to its answer.
    latency_ms: Latency,
}

#[derive(Debug, Default, Serialize)]
struct FrigateCounts {
    /// Events taken for captioning (the configured cameras, labels, zones and phase, once each).
    events: u64,
    captioned: u64,
    /// Events over `frigate.queue_limit`.
    dropped: u64,
    /// Events whose snapshot could not be fetched or captioned.
    failed: u64,
    /// From the event's turn to its caption, the snapshot's fetch included.
    latency_ms: Latency,
}

struct Counts {
    /// By camera index, in the configuration's order.
    cameras: Vec<(String, CameraCounts)>,
    api: ApiCounts,
    frigate: FrigateCounts,
}

pub(super) struct Stats {
    started: Instant,
    counts: Mutex<Counts>,
}

impl Stats {
    pub fn new(cameras: &[String]) -> Stats {
        Stats {
            started: Instant::now(),
            counts: Mutex::new(Counts {
                cameras: cameras
                    .iter()
                    .map(|name| (name.clone(), CameraCounts::default()))
                    .collect(),
                api: ApiCounts::default(),
                frigate: FrigateCounts::default(),
            }),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Counters only: a panicking holder leaves numbers, never a broken structure.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn camera(&self, index: usize, count: impl FnOnce(&mut CameraCounts)) {
        if let Some((_, camera)) = self.counts().cameras.get_mut(index) {
            count(camera);
        }
    }

    pub fn captioned(&self, camera: usize, total_ms: f64) {
        self.camera(camera, |c| {
            c.captions += 1;
            c.latency_ms.record(total_ms);
        });
    }

    pub fn skipped(&self, camera: usize, why: Skipped) {
        self.camera(camera, |c| match why {
            Skipped::Unchanged => c.skipped_unchanged += 1,
            Skipped::RateLimit => c.skipped_rate_limit += 1,
        });
    }

    pub fn capture_failed(&self, camera: usize) {
        self.camera(camera, |c| c.capture_failures += 1);
    }

    pub fn caption_failed(&self, camera: usize) {
        self.camera(camera, |c| c.caption_failures += 1);
    }

    pub fn api_answered(&self, ms: f64) {
        let api = &mut self.counts().api;
        api.answered += 1;
        api.latency_ms.record(ms);
    }

    pub fn api_refused(&self, status: u16) {
        let api = &mut self.counts().api;
        match status {
            503 => api.busy += 1,
            408 | 504 => api.timed_out += 1,
            _ => api.refused += 1,
        }
    }

    pub fn frigate_queued(&self) {
        self.counts().frigate.events += 1;
    }

    pub fn frigate_dropped(&self) {
        self.counts().frigate.dropped += 1;
    }

    pub fn frigate_failed(&self) {
        self.counts().frigate.failed += 1;
    }

    pub fn frigate_captioned(&self, ms: f64) {
        let frigate = &mut self.counts().frigate;
        frigate.captioned += 1;
        frigate.latency_ms.record(ms);
    }

    /// The `<base>/stats` payload, with the queues' depths.
    pub fn snapshot(&self, queues: Queues) -> Value {
        let counts = self.counts();
        let cameras: serde_json::Map<String, Value> = counts
            .cameras
            .iter()
            .map(|(name, camera)| (name.clone(), json!(camera)))
            .collect();
        json!({
            "uptime_s": self.started.elapsed().as_secs(),
            "cameras": cameras,
            "api": counts.api,
            "frigate": counts.frigate,
            "queues": queues,
            "memory": {
                "rss_mb": memory::resident_mb(),
                "peak_rss_mb": memory::peak_resident_mb(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_latencies_per_camera_and_for_the_api() {
        let stats = Stats::new(&["porch".into(), "yard".into()]);
        stats.captioned(0, 100.0);
        stats.captioned(0, 300.0);
        stats.skipped(0, Skipped::Unchanged);
        stats.skipped(1, Skipped::RateLimit);
        stats.capture_failed(1);
        stats.caption_failed(1);
        stats.api_answered(50.0);
        for status in [503, 503, 408, 504, 400, 401] {
            stats.api_refused(status);
        }
        let snapshot = stats.snapshot(Queues {
            captioner_waiting: 1,
            mqtt_waiting: 7,
            mqtt_unconfirmed: 2,
        });
        let porch = &snapshot["cameras"]["porch"];
        assert_eq!(porch["captions"], 2);
        assert_eq!(porch["skipped_unchanged"], 1);
        assert_eq!(
            porch["latency_ms"],
            json!({"count": 2, "last_ms": 300.0, "mean_ms": 200.0, "max_ms": 300.0})
        );
        let yard = &snapshot["cameras"]["yard"];
        assert_eq!(
            (
                &yard["skipped_rate_limit"],
                &yard["capture_failures"],
                &yard["caption_failures"]
            ),
            (&json!(1), &json!(1), &json!(1))
        );
        assert_eq!(yard["latency_ms"]["last_ms"], Value::Null);
        let api = &snapshot["api"];
        assert_eq!((&api["answered"], &api["busy"]), (&json!(1), &json!(2)));
        assert_eq!((&api["timed_out"], &api["refused"]), (&json!(2), &json!(2)));
        assert_eq!(
            snapshot["queues"],
            json!({"captioner_waiting": 1, "mqtt_waiting": 7, "mqtt_unconfirmed": 2})
        );
        assert!(snapshot["memory"]["rss_mb"].as_f64().unwrap() > 0.0);
        assert!(snapshot["uptime_s"].is_u64());
    }
}
