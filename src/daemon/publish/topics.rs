//! The topic scheme, in one place so that discovery, publishing and command parsing agree.

use crate::daemon::config::Settings;

/// Home Assistant keeps at most this many characters of an entity's state.
pub const STATE_LIMIT: usize = 255;

#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
    discovery_prefix: String,
    node_id: String,
}

impl Topics {
    pub fn new(settings: &Settings) -> Topics {
        Topics {
            base: settings.mqtt.base_topic.clone(),
            discovery_prefix: settings.home_assistant.discovery_prefix.clone(),
            node_id: settings.home_assistant.node_id.clone(),
        }
    }

    #[cfg(any(test, fuzzing))]
    pub fn for_test(base: &str, discovery_prefix: &str, node_id: &str) -> Topics {
        Topics {
            base: base.into(),
            discovery_prefix: discovery_prefix.into(),
            node_id: node_id.into(),
        }
    }

    pub fn available(&self) -> String {
        format!("{}/available", self.base)
    }
    pub fn info(&self) -> String {
        format!("{}/info", self.base)
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }
    pub fn caption(&self, camera: &str) -> String {
        format!("{}/{camera}/caption", self.base)
    }
    pub fn text(&self, camera: &str) -> String {
        format!("{}/{camera}/text", self.base)
    }
    pub fn event(&self, camera: &str) -> String {
        format!("{}/{camera}/event", self.base)
    }
    pub fn picture(&self, camera: &str) -> String {
        format!("{}/{camera}/picture", self.base)
    }
    /// A Frigate camera's captions, apart from the daemon's own cameras.
    pub fn frigate_caption(&self, camera: &str) -> String {
        format!("{}/frigate/{camera}/caption", self.base)
    }
    pub fn set(&self, camera: &str) -> String {
        format!("{}/{camera}/set", self.base)
    }
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{camera}/state", self.base)
    }
    pub fn discovery(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.discovery_prefix, self.node_id
        )
    }
    pub fn home_assistant_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    /// The camera a `<base>/<camera>/set` topic addresses.
    pub fn camera_of_set<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(&self.base)?
            .strip_prefix('/')?
            .strip_suffix("/set")
            .filter(|c| !c.contains('/'))
    }
}

/// The caption cut to Home Assistant's state limit, on a character boundary.
pub fn state_text(caption: &str) -> String {
    caption.chars().take(STATE_LIMIT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_topics_name_their_camera() {
        let t = Topics::for_test("home/capdec", "homeassistant", "attic");
        assert_eq!(t.camera_of_set("home/capdec/porch/set"), Some("porch"));
        assert_eq!(t.camera_of_set("home/capdec/porch/state"), None);
        assert_eq!(t.camera_of_set("home/capdec/a/b/set"), None);
        assert_eq!(t.camera_of_set("home/capdecx/porch/set"), None);
        assert_eq!(
            t.discovery("sensor", "porch_caption"),
            "homeassistant/sensor/attic/porch_caption/config"
        );
    }

    #[test]
    fn state_text_is_cut_on_characters() {
        let long = "é".repeat(300);
        let cut = state_text(&long);
        assert_eq!(cut.chars().count(), STATE_LIMIT);
        assert!(long.starts_with(&cut));
        assert_eq!(state_text("a dog."), "a dog.");
    }
}
