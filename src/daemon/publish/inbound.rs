//! What an incoming MQTT message asks for, decided without side effects so that it can be tested and fuzzed:
//! Home Assistant's status, a camera command, or nothing (with the reason, for the log).
//!
//! Anyone allowed to publish on the daemon's topics can send anything, so nothing here trusts the payload: it is
//! bounded before it is looked at, and only ever shown cut (the logger escapes what is left).

use super::Command;
use super::topics::Topics;

/// Larger than any command or status; a bigger message is ignored, whatever it says.
pub const PAYLOAD_LIMIT: usize = 1024;

/// How many bytes of a payload a log line shows.
const SHOWN_LIMIT: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Home Assistant has (re)started: it wants the discovery messages again.
    HomeAssistantOnline,
    Command {
        camera: &'a str,
        command: Command,
    },
    /// Worth a warning: what was wrong with the message, and the start of the payload when it helps.
    Refused {
        reason: String,
        payload: Option<String>,
    },
    /// Nothing to do and nothing to say (Home Assistant going offline, a topic the daemon did not ask for).
    Ignored,
}

pub fn interpret<'a>(
    topics: &Topics,
    topic: &'a str,
    payload: &[u8],
    retained: bool,
) -> Inbound<'a> {
    if payload.len() > PAYLOAD_LIMIT {
        return Inbound::Refused {
            reason: format!(
                "ignoring an oversized message ({} bytes; commands and statuses are at most {PAYLOAD_LIMIT})",
                payload.len()
            ),
            payload: None,
        };
    }
    let word = std::str::from_utf8(payload)
        .map(|text| text.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if topic == topics.home_assistant_status() {
        return match word.as_str() {
            "online" => Inbound::HomeAssistantOnline,
            _ => Inbound::Ignored,
        };
    }
    let Some(camera) = topics.camera_of_set(topic) else {
        return Inbound::Ignored;
    };
    // A retained command would replay on every connection.
    if retained {
        return Inbound::Refused {
            reason: "ignoring a retained command; publish commands without retain".into(),
            payload: Some(shown(payload)),
        };
    }
    let command = match word.as_str() {
        "capture" => Command::Capture,
        "on" => Command::Resume,
        "off" => Command::Pause,
        _ => {
            return Inbound::Refused {
                reason: "unknown command: expected capture, ON or OFF".into(),
                payload: Some(shown(payload)),
            };
        }
    };
    Inbound::Command { camera, command }
}

/// A payload as a log line may show it: at most `SHOWN_LIMIT` bytes (invalid UTF-8 replaced), with the full
/// length when it was cut.
pub fn shown(payload: &[u8]) -> String {
    let head = &payload[..payload.len().min(SHOWN_LIMIT)];
    let text = String::from_utf8_lossy(head);
    if head.len() < payload.len() {
        format!("{text}… ({} bytes)", payload.len())
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::for_test("home/capdec", "homeassistant", "attic")
    }

    fn command(payload: &[u8]) -> Inbound<'static> {
        interpret(&topics(), "home/capdec/porch/set", payload, false)
    }

    #[test]
    fn commands_are_trimmed_and_case_insensitive() {
        for (payload, expected) in [
            (&b"capture"[..], Command::Capture),
            (b"Capture", Command::Capture),
            (b" CAPTURE\n", Command::Capture),
            (b"on", Command::Resume),
            (b"On", Command::Resume),
            (b"OFF\r\n", Command::Pause),
        ] {
            assert_eq!(
                command(payload),
                Inbound::Command {
                    camera: "porch",
                    command: expected
                },
                "{payload:?}"
            );
        }
    }

    #[test]
    fn unknown_and_oversized_payloads_are_refused_and_shown_bounded() {
        let Inbound::Refused { reason, payload } = command(b"explode\0now") else {
            panic!("an unknown command is refused")
        };
        assert_eq!(reason, "unknown command: expected capture, ON or OFF");
        assert_eq!(payload.as_deref(), Some("explode\0now"));
        let Inbound::Refused { payload, .. } = command(&[b'x'; 1000]) else {
            panic!("an unknown command is refused")
        };
        assert_eq!(payload, Some(format!("{}… (1000 bytes)", "x".repeat(64))));
        let big = vec![b'c'; PAYLOAD_LIMIT + 1];
        let Inbound::Refused { reason, payload } =
            interpret(&topics(), "homeassistant/status", &big, true)
        else {
            panic!("an oversized status is refused")
        };
        assert!(reason.contains("oversized message (1025 bytes"), "{reason}");
        assert_eq!(payload, None);
        assert!(matches!(command(&[0xff, 0xfe]), Inbound::Refused { .. }));
    }

    #[test]
    fn retained_commands_are_refused_and_status_is_read() {
        assert!(matches!(
            interpret(&topics(), "home/capdec/porch/set", b"capture", true),
            Inbound::Refused { .. }
        ));
        for status in [&b"online"[..], b"ONLINE", b" online\n"] {
            assert_eq!(
                interpret(&topics(), "homeassistant/status", status, true),
                Inbound::HomeAssistantOnline
            );
        }
        assert_eq!(
            interpret(&topics(), "homeassistant/status", b"offline", true),
            Inbound::Ignored
        );
        assert_eq!(
            interpret(&topics(), "home/capdec/porch/state", b"ON", false),
            Inbound::Ignored
        );
    }

    #[test]
    fn shown_cuts_and_replaces_invalid_utf8() {
        assert_eq!(shown(b"a\"b\n"), "a\"b\n");
        assert_eq!(shown(&[0xff]), "\u{fffd}");
        assert_eq!(shown(&[b'a'; 64]), "a".repeat(64));
    }
}
