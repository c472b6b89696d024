//! Home Assistant's MQTT discovery: the retained messages that make each camera a device's entities.

use std::time::Duration;

use serde_json::{Value, json};

use super::topics::Topics;
use super::{OFFLINE, ONLINE};

/// What the device card shows, and which entities it has.
#[derive(Debug, Clone)]
pub(super) struct Discovery {
    pub device_name: String,
    /// The captioning model's name.
    pub model: String,
    /// An image entity per camera, of `<base>/<camera>/picture`.
    pub picture: bool,
    /// The caption sensor's `expire_after`.
    pub expire_after: Option<Duration>,
}

/// The retained discovery messages: per camera a caption sensor, a capture button, a captioning switch, an event
/// entity, an image entity (where pictures are published) and a diagnostic latency sensor; for the device,
/// diagnostic sensors of the model and the version.
pub(super) fn messages(
    topics: &Topics,
    cameras: &[String],
    discovery: &Discovery,
) -> Vec<(String, String)> {
    let node = topics.node_id();
    let device = json!({
        "identifiers": [format!("capdec_{node}")],
        "name": discovery.device_name,
        "manufacturer": "capdec-edge",
        "model": format!("CapDec captioner ({})", discovery.model),
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({"name": "capdec-edge", "sw_version": env!("CARGO_PKG_VERSION")});
    // `stopped` means unavailable too; Home Assistant would ignore a payload that is neither.
    let availability = json!([{
        "topic": topics.available(),
        "value_template": format!("{{{{ '{ONLINE}' if value == '{ONLINE}' else '{OFFLINE}' }}}}"),
    }]);
    // Every entity's common keys, beside its own.
    let entity = |name: String, id: String, own: Value| {
        let mut config = json!({
            "name": name,
            "unique_id": id,
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        if let (Some(config), Value::Object(own)) = (config.as_object_mut(), own) {
            config.extend(own);
        }
        config
    };
    let diagnostic = |what: &str, template: &str, icon: &str| {
        entity(
            what.into(),
            format!("{node}_{}", what.to_lowercase()),
            json!({
                "state_topic": topics.info(),
                "value_template": template,
                "entity_category": "diagnostic",
                "icon": icon,
            }),
        )
    };
    let mut messages = vec![
        (
            topics.discovery("sensor", "model"),
            diagnostic("Model", "{{ value_json.model.name }}", "mdi:brain").to_string(),
        ),
        (
            topics.discovery("sensor", "version"),
            diagnostic("Version", "{{ value_json.version }}", "mdi:tag").to_string(),
        ),
    ];
    for name in cameras {
        let mut sensor = entity(
            format!("{name} caption"),
            format!("{node}_{name}_caption"),
            json!({
                "state_topic": topics.text(name),
                "json_attributes_topic": topics.caption(name),
                "icon": "mdi:image-text",
            }),
        );
        if let Some(after) = discovery.expire_after {
            sensor["expire_after"] = json!(after.as_secs());
        }
        let event = entity(
            format!("{name} new caption"),
            format!("{node}_{name}_new_caption"),
            json!({
                "state_topic": topics.event(name),
                "event_types": ["caption"],
                "icon": "mdi:message-image",
            }),
        );
        let latency = entity(
            format!("{name} caption latency"),
            format!("{node}_{name}_caption_latency"),
            json!({
                "state_topic": topics.caption(name),
                "value_template": "{{ value_json.latency_ms.total | round(0) }}",
                "unit_of_measurement": "ms",
                "device_class": "duration",
                "state_class": "measurement",
                "entity_category": "diagnostic",
            }),
        );
        messages.push((
            topics.discovery("event", &format!("{name}_new_caption")),
            event.to_string(),
        ));
        messages.push((
            topics.discovery("sensor", &format!("{name}_caption_latency")),
            latency.to_string(),
        ));
        if discovery.picture {
            let picture = entity(
                format!("{name} captioned picture"),
                format!("{node}_{name}_picture"),
                json!({"image_topic": topics.picture(name), "content_type": "image/jpeg"}),
            );
            messages.push((
                topics.discovery("image", &format!("{name}_picture")),
                picture.to_string(),
            ));
        }
        let button = entity(
            format!("{name} capture"),
            format!("{node}_{name}_capture"),
            json!({
                "command_topic": topics.set(name),
                "payload_press": "capture",
                "icon": "mdi:camera",
            }),
        );
        let switch = entity(
            format!("{name} captioning"),
            format!("{node}_{name}_captioning"),
            json!({
                "command_topic": topics.set(name),
                "state_topic": topics.state(name),
                "payload_on": "ON",
                "payload_off": "OFF",
                "state_on": "ON",
                "state_off": "OFF",
                "icon": "mdi:cctv",
            }),
        );
        for (component, object, config) in [
            ("sensor", "caption", sensor),
            ("button", "capture", button),
            ("switch", "captioning", switch),
        ] {
            messages.push((
                topics.discovery(component, &format!("{name}_{object}")),
                config.to_string(),
            ));
        }
    }
    messages
}
