//! Frigate's tracked-object events as it publishes them on `<topic_prefix>/events` (payload `{"type": "new" |
//! "update" | "end", "before": {...}, "after": {...}}`, each object `TrackedObject.to_dict()`: Frigate's
//! `frigate/object_processing.py` up to 0.14, `frigate/track/tracked_object.py` since), and which of them are
//! captioned: the configured cameras, labels, zones and phase, once per event. Pure and bounded: the MQTT thread
//! runs it on every message, and a fuzz target feeds it anything.

use std::collections::{HashSet, VecDeque};

use serde::Deserialize;

use crate::daemon::config::{FrigatePhase, FrigateSettings};

/// Events remembered as already captioned: far more than are ever in progress at once.
const REMEMBERED: usize = 1024;

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    after: Option<Tracked>,
}

/// The fields of Frigate's tracked object the daemon reads; the others are ignored.
#[derive(Deserialize)]
struct Tracked {
    id: String,
    camera: String,
    label: String,
    /// A name, or `[name, score]` in the tracked object's own form.
    #[serde(default)]
    sub_label: Option<serde_json::Value>,
    #[serde(default)]
    top_score: Option<f64>,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    false_positive: bool,
    #[serde(default)]
    entered_zones: Vec<String>,
}

/// An event to caption.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub id: String,
    pub camera: String,
    pub label: String,
    pub sub_label: Option<String>,
    /// The object's best score so far.
    pub score: Option<f64>,
    pub zones: Vec<String>,
    /// The message that made it captioned: `new`, `update` or `end`.
    pub kind: String,
}

/// What one message is to the daemon.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Caption(Event),
    /// Not for captioning: another phase, camera, label or zone, a false positive, an event already captioned.
    Pass,
    /// Not an event in Frigate's shape; the reason.
    Invalid(String),
}

/// Which events are captioned, remembering those already taken.
pub(crate) struct Filter {
    cameras: Vec<String>,
    labels: Vec<String>,
    zones: Vec<String>,
    phase: FrigatePhase,
    taken: HashSet<String>,
    order: VecDeque<String>,
}

impl Filter {
    pub fn new(settings: &FrigateSettings) -> Filter {
        Filter {
            cameras: settings.cameras.clone(),
            labels: settings.labels.clone(),
            zones: settings.zones.clone(),
            phase: settings.phase,
            taken: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn consider(&mut self, payload: &[u8]) -> Verdict {
        let message: Message = match serde_json::from_slice(payload) {
            Ok(message) => message,
            Err(error) => return Verdict::Invalid(format!("not a Frigate event: {error}")),
        };
        let Some(object) = message.after else {
            return Verdict::Invalid("a Frigate event without `after`".into());
        };
        // `new` and `update` come while the object is tracked; `end` once, when it is gone. Phase `new` also
        // takes an event first seen at its end (the daemon started while it was in progress).
        let in_phase = match (self.phase, message.kind.as_str()) {
            (FrigatePhase::End, kind) => kind == "end",
            (FrigatePhase::New, kind) => matches!(kind, "new" | "update" | "end"),
        };
        if !in_phase || object.false_positive {
            return Verdict::Pass;
        }
        // The id becomes a path segment of Frigate's URLs and the camera a topic level: `.` and `..` must not
        // become either.
        for (what, value) in [("id", &object.id), ("camera", &object.camera)] {
            let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            let first = value.starts_with(|c: char| c.is_ascii_alphanumeric());
            if !first || value.len() > 128 || !value.chars().all(fine) {
                return Verdict::Invalid(format!(
                    "a Frigate event whose {what} is not a letter or digit, then letters, digits, `_`, `-` \
                     and `.`: {value:?}"
                ));
            }
        }
        let wanted =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        let in_zone = self.zones.is_empty()
            || object
                .entered_zones
                .iter()
                .any(|zone| self.zones.contains(zone));
        if !wanted(&self.cameras, &object.camera)
            || !wanted(&self.labels, &object.label)
            || !in_zone
        {
            return Verdict::Pass;
        }
        if !self.taken.insert(object.id.clone()) {
            return Verdict::Pass;
        }
        self.order.push_back(object.id.clone());
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.taken.remove(&oldest);
        }
        let sub_label = match object.sub_label {
            Some(serde_json::Value::String(name)) => Some(name),
            Some(serde_json::Value::Array(pair)) => {
                pair.first().and_then(|v| v.as_str()).map(str::to_string)
            }
            _ => None,
        };
        Verdict::Caption(Event {
            id: object.id,
            camera: object.camera,
            label: object.label,
            sub_label,
            score: object.top_score.or(object.score),
            zones: object.entered_zones,
            kind: message.kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(phase: FrigatePhase, labels: &[&str], zones: &[&str]) -> FrigateSettings {
        FrigateSettings {
            url: "http://frigate:5000".into(),
            events_topic: "frigate/events".into(),
            cameras: vec!["driveway".into()],
            labels: labels.iter().map(|l| l.to_string()).collect(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            phase,
            crop: true,
            snapshot_height: None,
            write_description: false,
            timeout: Duration::from_secs(10),
            queue_limit: 8,
        }
    }

    /// A message as Frigate 0.14 publishes it, trimmed of the fields the daemon does not read.
    fn message(kind: &str, id: &str, camera: &str, label: &str, zones: &[&str]) -> Vec<u8> {
        let object = serde_json::json!({
            "id": id, "camera": camera, "frame_time": 1733500000.5, "label": label, "sub_label": null,
            "top_score": 0.84, "false_positive": false, "start_time": 1733500000.1, "end_time": null,
            "score": 0.8, "box": [10, 20, 110, 220], "area": 20000, "ratio": 0.5, "region": [0, 0, 320, 320],
            "stationary": false, "motionless_count": 0, "position_changes": 1, "current_zones": zones,
            "entered_zones": zones, "has_clip": true, "has_snapshot": true, "attributes": {},
            "current_attributes": [],
        });
        serde_json::json!({"type": kind, "before": object, "after": object})
            .to_string()
            .into_bytes()
    }

    fn captioned(verdict: Verdict) -> Event {
        match verdict {
            Verdict::Caption(event) => event,
            other => panic!("expected a caption, got {other:?}"),
        }
    }

    #[test]
    fn phase_end_takes_the_end_once() {
        let mut filter = Filter::new(&settings(FrigatePhase::End, &["person"], &[]));
        let id = "1733500000.123456-abc123";
        assert_eq!(
            filter.consider(&message("new", id, "driveway", "person", &[])),
            Verdict::Pass
        );
        assert_eq!(
            filter.consider(&message("update", id, "driveway", "person", &[])),
            Verdict::Pass
        );
        let event =
            captioned(filter.consider(&message("end", id, "driveway", "person", &["yard"])));
        assert_eq!(
            event,
            Event {
                id: id.into(),
                camera: "driveway".into(),
                label: "person".into(),
                sub_label: None,
                score: Some(0.84),
                zones: vec!["yard".into()],
                kind: "end".into(),
            }
        );
        assert_eq!(
            filter.consider(&message("end", id, "driveway", "person", &[])),
            Verdict::Pass,
            "once per event"
        );
    }

    #[test]
    fn phase_new_waits_for_the_zone_and_filters_cameras_and_labels() {
        let mut filter = Filter::new(&settings(FrigatePhase::New, &["person", "car"], &["porch"]));
        let id = "1733500001.5-x";
        assert_eq!(
            filter.consider(&message("new", id, "driveway", "car", &[])),
            Verdict::Pass
        );
        assert_eq!(
            filter.consider(&message("update", id, "driveway", "car", &["lawn"])),
            Verdict::Pass
        );
        let event = captioned(filter.consider(&message(
            "update",
            id,
            "driveway",
            "car",
            &["lawn", "porch"],
        )));
        assert_eq!(event.kind, "update");
        assert_eq!(
            filter.consider(&message("update", "other", "garden", "car", &["porch"])),
            Verdict::Pass
        );
        assert_eq!(
            filter.consider(&message("new", "dog", "driveway", "dog", &["porch"])),
            Verdict::Pass
        );
    }

    #[test]
    fn false_positives_sub_labels_and_what_is_no_event() {
        let mut filter = Filter::new(&settings(FrigatePhase::End, &[], &[]));
        let mut object: serde_json::Value =
            serde_json::from_slice(&message("end", "a", "driveway", "person", &[])).unwrap();
        object["after"]["false_positive"] = true.into();
        assert_eq!(
            filter.consider(object.to_string().as_bytes()),
            Verdict::Pass
        );
        object["after"]["false_positive"] = false.into();
        object["after"]["sub_label"] = serde_json::json!(["Alice", 0.9]);
        assert_eq!(
            captioned(filter.consider(object.to_string().as_bytes()))
                .sub_label
                .as_deref(),
            Some("Alice")
        );
        for (payload, reason) in [
            (b"not json".to_vec(), "not a Frigate event"),
            (br#"{"type": "end"}"#.to_vec(), "without `after`"),
            (
                message("end", "../../api/config", "driveway", "person", &[]),
                "whose id is not",
            ),
            (
                message("end", "..", "driveway", "person", &[]),
                "whose id is not",
            ),
            (
                message("end", "", "driveway", "person", &[]),
                "whose id is not",
            ),
            (
                message("end", "c", ".", "person", &[]),
                "whose camera is not",
            ),
            (
                message("end", "b", "drive/way", "person", &[]),
                "whose camera is not",
            ),
        ] {
            match filter.consider(&payload) {
                Verdict::Invalid(why) => assert!(why.contains(reason), "{why}"),
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_memory_of_captioned_events_is_bounded() {
        let mut filter = Filter::new(&settings(FrigatePhase::End, &[], &[]));
        for n in 0..REMEMBERED + 10 {
            captioned(filter.consider(&message(
                "end",
                &format!("e{n}"),
                "driveway",
                "person",
                &[],
            )));
        }
        assert_eq!(filter.taken.len(), REMEMBERED);
        assert_eq!(filter.order.len(), REMEMBERED);
    }
}
