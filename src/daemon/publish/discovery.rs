//! Home Assistant's MQTT discovery: the retained messages that make each camera a device's entities.

use serde_json::json;

use super::topics::Topics;
use super::{OFFLINE, ONLINE};

/// What the device card shows.
#[derive(Debug, Clone)]
pub(super) struct Discovery {
    pub device_name: String,
    /// The captioning model's name.
    pub model: String,
}

/// The retained discovery messages: per camera a caption sensor, a capture button and a captioning switch.
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
    let mut messages = Vec::new();
    for name in cameras {
        let sensor = json!({
            "name": format!("{name} caption"),
            "unique_id": format!("{node}_{name}_caption"),
            "state_topic": topics.text(name),
            "json_attributes_topic": topics.caption(name),
            "icon": "mdi:image-text",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        let button = json!({
            "name": format!("{name} capture"),
            "unique_id": format!("{node}_{name}_capture"),
            "command_topic": topics.set(name),
            "payload_press": "capture",
            "icon": "mdi:camera",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
        let switch = json!({
            "name": format!("{name} captioning"),
            "unique_id": format!("{node}_{name}_captioning"),
            "command_topic": topics.set(name),
            "state_topic": topics.state(name),
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_on": "ON",
            "state_off": "OFF",
            "icon": "mdi:cctv",
            "availability": availability,
            "device": device,
            "origin": origin,
        });
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
