//! What the daemon hands over and the connection thread takes: captions waiting for the broker, in a bounded
//! queue whose oldest caption is dropped (and counted) when it is full, and each camera's capturing state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use std::sync::mpsc::Sender;

use rumqttc::QoS;

use super::Command;

/// One MQTT message of a caption; `caption` groups the messages of one caption for the queue bound.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Message {
    pub caption: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Default)]
pub(super) struct Outbox {
    /// Captions not yet handed to the client, oldest first, each as its messages.
    pub queue: VecDeque<Vec<Message>>,
    /// Whether each camera is capturing; published on every connection and on change.
    pub states: BTreeMap<String, bool>,
    pub states_changed: bool,
    /// Each camera's command channel, until the daemon stops taking pictures.
    pub commands: BTreeMap<String, Sender<Command>>,
    pub next_caption: u64,
    /// A connection is up: what is queued now goes out within moments.
    pub connected: bool,
    /// Captions queued while no connection was up, to report when they go out.
    pub queued_offline: usize,
    pub dropped: u64,
    pub stopping: bool,
    /// The connection thread has ended.
    pub finished: bool,
}

impl Outbox {
    pub fn push_back(&mut self, messages: Vec<Message>, limit: usize) {
        self.queue.push_back(messages);
        self.enforce(limit);
    }

    /// Puts captions a lost connection left unconfirmed back at the front, in the order they were sent: they
    /// are older than anything queued since, so they are the first dropped when the queue is over its bound.
    pub fn requeue(&mut self, unconfirmed: Vec<Vec<Message>>, limit: usize) {
        for group in unconfirmed.into_iter().rev() {
            self.queue.push_front(group);
        }
        self.enforce(limit);
    }

    pub fn set_state(&mut self, camera: &str, capturing: bool) {
        self.states.insert(camera.to_string(), capturing);
        self.states_changed = true;
    }

    fn enforce(&mut self, limit: usize) {
        while self.queue.len() > limit {
            self.queue.pop_front();
            self.dropped += 1;
            log::warn!(dropped_total = self.dropped, queue_limit = limit;
                "caption queue full while the broker is unreachable: dropped the oldest caption");
        }
    }
}

/// The outbox and the condition the connection thread waits on.
pub(super) struct Shared {
    outbox: Mutex<Outbox>,
    pub wake: Condvar,
}

impl Shared {
    pub fn new(outbox: Outbox) -> Shared {
        Shared {
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
        }
    }

    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // A panic elsewhere while holding the lock leaves the queue consistent (every change is one push or pop).
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
pub(super) fn message(caption: u64, topic: &str) -> Message {
    Message {
        caption,
        topic: topic.into(),
        payload: vec![],
        qos: QoS::AtLeastOnce,
        retain: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captions(outbox: &Outbox) -> Vec<u64> {
        outbox.queue.iter().map(|group| group[0].caption).collect()
    }

    #[test]
    fn the_oldest_is_dropped_beyond_the_limit() {
        let mut outbox = Outbox::default();
        for caption in 0..5 {
            outbox.push_back(vec![message(caption, "t")], 3);
        }
        assert_eq!(captions(&outbox), [2, 3, 4]);
        assert_eq!(outbox.dropped, 2);
    }

    #[test]
    fn requeued_captions_go_first_and_are_dropped_first() {
        let mut outbox = Outbox::default();
        outbox.push_back(vec![message(7, "t")], 3);
        outbox.requeue(vec![vec![message(4, "t")], vec![message(5, "t")]], 3);
        assert_eq!(
            captions(&outbox),
            [4, 5, 7],
            "sent order, then the newer queued one"
        );
        outbox.requeue(vec![vec![message(2, "t")], vec![message(3, "t")]], 3);
        assert_eq!(captions(&outbox), [4, 5, 7], "the two oldest dropped");
        assert_eq!(outbox.dropped, 2);
    }
}
