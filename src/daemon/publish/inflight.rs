//! Which caption messages the broker has confirmed. rumqttc forgets unacknowledged messages when a clean session
//! reconnects, so the connection thread follows each caption message itself: handed to the client (in order),
//! written (the client's `Outgoing::Publish` gives its packet id), confirmed (PUBACK for QoS 1; PUBREC for QoS 2,
//! once the broker has the message the rest is between it and us). What a lost connection leaves unconfirmed
//! goes back to the queue, in the order it was sent.

use std::collections::{BTreeMap, VecDeque};

use rumqttc::{Event, Incoming, Outgoing, QoS};

use super::outbox::Message;

#[derive(Default)]
pub(super) struct Inflight {
    /// Messages handed to the client and not yet written, in order; `Some` for captions that need an ack.
    unwritten: VecDeque<Option<Message>>,
    /// Written captions awaiting their ack, by packet id, with the order they were written in.
    unacked: BTreeMap<u16, (u64, Message)>,
    written: u64,
}

impl Inflight {
    /// A message the client took; `caption` is `None` for the daemon's own messages (availability, discovery,
    /// states), which are sent again on every connection anyway.
    pub fn handed(&mut self, caption: Option<Message>) {
        self.unwritten
            .push_back(caption.filter(|m| m.qos != QoS::AtMostOnce));
    }

    /// Follows a connection event: a write, or an acknowledgement.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::Outgoing(Outgoing::Publish(packet_id)) => {
                if let Some(Some(message)) = self.unwritten.pop_front() {
                    self.written += 1;
                    self.unacked.insert(*packet_id, (self.written, message));
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                self.unacked.remove(&ack.pkid);
            }
            Event::Incoming(Incoming::PubRec(rec)) => {
                self.unacked.remove(&rec.pkid);
            }
            _ => {}
        }
    }

    /// Caption messages handed to the client and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.unwritten.iter().flatten().count() + self.unacked.len()
    }

    pub fn all_confirmed(&self) -> bool {
        self.unwritten.is_empty() && self.unacked.is_empty()
    }

    /// After a lost connection: the unconfirmed captions, each as its messages, in the order they were sent
    /// (written ones first, then those still unwritten). Nothing is tracked afterwards, so the next connection
    /// starts clean, whatever packet ids it reuses.
    pub fn take_unconfirmed(&mut self) -> Vec<Vec<Message>> {
        let mut unacked: Vec<(u64, Message)> =
            std::mem::take(&mut self.unacked).into_values().collect();
        unacked.sort_by_key(|(order, _)| *order);
        let unconfirmed = unacked
            .into_iter()
            .map(|(_, m)| m)
            .chain(self.unwritten.drain(..).flatten());
        let mut groups: Vec<Vec<Message>> = Vec::new();
        for message in unconfirmed {
            match groups.last_mut() {
                Some(group) if group[0].caption == message.caption => group.push(message),
                _ => groups.push(vec![message]),
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{PubAck, PubRec};

    use super::super::outbox::message;
    use super::*;

    fn written(packet_id: u16) -> Event {
        Event::Outgoing(Outgoing::Publish(packet_id))
    }
    fn acked(packet_id: u16) -> Event {
        Event::Incoming(Incoming::PubAck(PubAck::new(packet_id)))
    }

    /// Each caption is two messages (its JSON and its text), as the publisher sends them.
    fn hand_caption(inflight: &mut Inflight, caption: u64) {
        inflight.handed(Some(message(caption, "json")));
        inflight.handed(Some(message(caption, "text")));
    }

    fn captions(groups: &[Vec<Message>]) -> Vec<(u64, Vec<&str>)> {
        groups
            .iter()
            .map(|g| (g[0].caption, g.iter().map(|m| m.topic.as_str()).collect()))
            .collect()
    }

    #[test]
    fn acknowledged_captions_are_not_sent_again() {
        let mut inflight = Inflight::default();
        for caption in 0..3 {
            hand_caption(&mut inflight, caption);
        }
        for packet_id in 1..=6 {
            inflight.observe(&written(packet_id));
        }
        assert!(!inflight.all_confirmed());
        // Caption 1's acks arrive; caption 0 gets only its text's, caption 2 none.
        for packet_id in [3, 4, 2] {
            inflight.observe(&acked(packet_id));
        }
        let unconfirmed = inflight.take_unconfirmed();
        assert_eq!(
            captions(&unconfirmed),
            [(0, vec!["json"]), (2, vec!["json", "text"])]
        );
        assert!(inflight.all_confirmed(), "nothing tracked after a drop");
    }

    #[test]
    fn a_drop_requeues_written_then_unwritten_in_sent_order() {
        let mut inflight = Inflight::default();
        inflight.handed(None); // availability
        hand_caption(&mut inflight, 0);
        hand_caption(&mut inflight, 1);
        // The broker may hand out packet ids in any order; the order of writing is what counts.
        for packet_id in [0, 9, 8] {
            inflight.observe(&written(packet_id));
        }
        let unconfirmed = inflight.take_unconfirmed();
        assert_eq!(
            captions(&unconfirmed),
            [(0, vec!["json", "text"]), (1, vec!["json", "text"])],
            "caption 0 written (ids 9, 8), caption 1 still with the client"
        );
    }

    #[test]
    fn qos_0_and_own_messages_are_never_tracked() {
        let mut inflight = Inflight::default();
        inflight.handed(None);
        inflight.handed(Some(Message {
            qos: QoS::AtMostOnce,
            ..message(0, "json")
        }));
        hand_caption(&mut inflight, 1);
        for packet_id in [0, 0, 1, 2] {
            inflight.observe(&written(packet_id));
        }
        inflight.observe(&acked(1));
        assert_eq!(captions(&inflight.take_unconfirmed()), [(1, vec!["text"])]);
    }

    #[test]
    fn qos_2_is_confirmed_by_pubrec() {
        let mut inflight = Inflight::default();
        inflight.handed(Some(Message {
            qos: QoS::ExactlyOnce,
            ..message(0, "json")
        }));
        inflight.observe(&written(5));
        inflight.observe(&Event::Incoming(Incoming::PubRec(PubRec::new(5))));
        assert!(inflight.all_confirmed());
    }

    #[test]
    fn a_reconnect_starts_clean_when_packet_ids_are_reused() {
        let mut inflight = Inflight::default();
        hand_caption(&mut inflight, 0);
        inflight.observe(&written(1));
        inflight.observe(&written(2));
        assert_eq!(inflight.take_unconfirmed().len(), 1);
        // The next connection sends caption 0 again and caption 1, with the same packet ids.
        hand_caption(&mut inflight, 0);
        hand_caption(&mut inflight, 1);
        for packet_id in 1..=4 {
            inflight.observe(&written(packet_id));
        }
        for packet_id in [1, 2] {
            inflight.observe(&acked(packet_id));
        }
        assert_eq!(
            captions(&inflight.take_unconfirmed()),
            [(1, vec!["json", "text"])]
        );
    }
}
