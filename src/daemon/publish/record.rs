//! The JSON published on `<base>/<camera>/caption`.

use serde::Serialize;

use crate::caption::captioner::Timings;

#[derive(Debug, Clone, Serialize)]
pub struct CaptionRecord {
    pub camera: String,
    /// This camera's captions counted from 1 since the daemon started: a gap is a lost caption, a repeat is a
    /// duplicate (QoS 1 delivers at least once).
    pub sequence: u64,
    pub caption: String,
    /// Mean log-probability per token: closer to 0 is more confident.
    pub score: f64,
    pub model: String,
    pub precision: String,
    /// RFC 3339, UTC, when the frame was taken.
    pub timestamp: String,
    /// `interval` or `manual`.
    pub trigger: &'static str,
    /// Cosine similarity of this frame's embedding with the last published one; `null` for the first.
    pub similarity: Option<f64>,
    /// Where the frame came from: a file, a URL, a device.
    pub source: String,
    /// Every stage and the total.
    pub latency_ms: Timings,
}

impl CaptionRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, numbers and options always serialise")
    }

    /// Home Assistant's event entity: its `event_type`, the other keys become the event's attributes.
    pub fn event_json(&self) -> Vec<u8> {
        serde_json::json!({
            "event_type": "caption",
            "caption": self.caption,
            "trigger": self.trigger,
            "score": self.score,
            "sequence": self.sequence,
            "timestamp": self.timestamp,
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_has_the_documented_fields() {
        let record = CaptionRecord {
            camera: "porch".into(),
            sequence: 7,
            caption: "a red circle".into(),
            score: -0.5,
            model: "demo".into(),
            precision: "int8".into(),
            timestamp: "2026-12-02T10:00:00.000Z".into(),
            trigger: "interval",
            similarity: None,
            source: "porch.jpg".into(),
            latency_ms: Timings {
                capture: 1.0,
                preprocess: 2.0,
                encode: 3.0,
                map: 4.0,
                decode: 5.0,
            },
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "camera": "porch", "sequence": 7, "caption": "a red circle", "score": -0.5, "model": "demo",
                "precision": "int8", "timestamp": "2026-12-02T10:00:00.000Z", "trigger": "interval",
                "similarity": null, "source": "porch.jpg",
                "latency_ms": {"capture": 1.0, "preprocess": 2.0, "encode": 3.0, "map": 4.0, "decode": 5.0,
                    "total": 15.0},
            })
        );
    }
}
