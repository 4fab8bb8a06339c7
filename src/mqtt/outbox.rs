//! Replies from the durable outbox onto `<prefix>/out/<device>`.
//!
//! - **QoS 2** (`reply_qos = 2`, the default): exactly once on the wire as
//!   long as the broker keeps Hearth's persistent session. Each reply gets
//!   a packet id from a range rumqttc leaves to Hearth ([`PKIDS`]), and
//!   the id is committed to the outbox row *before* the PUBLISH. On PUBREC
//!   (the broker has it; mosquitto hands it to subscribers at the PUBREL)
//!   "released" is committed, then PUBREL goes out; on PUBCOMP the row is
//!   deleted. After a crash at any point the next start repeats the step
//!   the row records: the same PUBLISH with DUP and the same id (the broker
//!   recognizes the id and does not take it again), or the PUBREL.
//! - **QoS 1**: at least once. Deleted on PUBACK; a crash between the
//!   PUBACK and the delete sends the reply again as a new message.
//!
//! If the broker lost the session (it restarted without persistence), every
//! row still in the outbox is published again as a new message: nothing is
//! lost, but a reply the broker had already passed on arrives twice.

use std::collections::{HashMap, HashSet, VecDeque};

use rumqttc::{EventLoop, PubRel, Publish, QoS, Request};
use serde_json::json;

use super::client::Mqtt;
use super::config::{valid_device, ReplyFormat};
use crate::channel::Outbox;
use crate::store::{OutboxItem, Wire};

/// rumqttc's own packet ids are `1..=INFLIGHT`.
pub const INFLIGHT: u16 = 100;
/// Replies at QoS 2 in flight at once; their ids are `INFLIGHT+1..`.
pub const PKIDS: u16 = 64;
/// Largest reply packet: the client's packet limit less room for the
/// header.
pub const MAX_REPLY: usize = super::client::MAX_PACKET - 1024;

fn reserved(pkid: u16) -> bool {
    pkid > INFLIGHT && pkid <= INFLIGHT + PKIDS
}

/// What is on the wire: QoS 1 publishes by packet id (rumqttc assigns
/// those in the order it takes the requests, and reports each as
/// `Outgoing::Publish(pkid)`), QoS 2 replies by their own id.
#[derive(Default)]
pub(super) struct Tracker {
    fifo: VecDeque<Option<u64>>,
    inflight: HashMap<u16, Option<u64>>,
    /// QoS 2 replies: packet id → outbox row.
    q2: HashMap<u16, u64>,
    /// Outbox rows on the wire now, not to be sent again.
    outstanding: HashSet<u64>,
}

impl Tracker {
    pub(super) fn queued(&mut self, seq: Option<u64>) {
        self.fifo.push_back(seq);
        if let Some(s) = seq {
            self.outstanding.insert(s);
        }
    }

    pub(super) fn sent(&mut self, pkid: u16) {
        if pkid == 0 || reserved(pkid) || self.inflight.contains_key(&pkid) {
            return;
        }
        let seq = self.fifo.pop_front().flatten();
        self.inflight.insert(pkid, seq);
    }

    pub(super) fn acked(&mut self, pkid: u16) -> Option<u64> {
        let seq = self.inflight.remove(&pkid).flatten()?;
        self.outstanding.remove(&seq);
        Some(seq)
    }

    /// Whether replies are on the wire.
    pub(super) fn busy(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// The broker had no session: rumqttc dropped what was in flight.
    pub(super) fn reset(&mut self) {
        self.fifo.clear();
        self.inflight.clear();
        self.q2.clear();
        self.outstanding.clear();
    }
}

impl Mqtt {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic and payload of a reply (`reply_format`).
    fn reply(&self, seq: u64, item: &OutboxItem) -> (String, Vec<u8>) {
        let topic = format!("{}/out/{}", self.cfg.topic_prefix, item.address());
        // cut to fit one packet (one over the limit would fail on every
        // reconnect); JSON escaping can take 6 bytes per character
        let mut text = item.text.clone();
        let room = (MAX_REPLY - topic.len()) / 6;
        if text.len() > room {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[reply cut to fit one MQTT message]");
        }
        let body = match self.cfg.reply_format {
            ReplyFormat::Text => text,
            ReplyFormat::Json => json!({"text": text, "id": format!("{}:{seq}", item.run_id),
                                        "runId": item.run_id})
            .to_string(),
        };
        (topic, body.into_bytes())
    }

    /// Publishes the outbox replies not on the wire yet. `session` is
    /// whether the broker kept Hearth's session (false only right after a
    /// ConnAck without one).
    pub(super) async fn deliver_outbox(&self, ev: &mut EventLoop, store: &Outbox, session: bool) {
        if !self.connected() {
            return;
        }
        let s = store.clone();
        let rows = match tokio::task::spawn_blocking(move || s.pending()).await {
            Ok(Ok(r)) => r,
            other => {
                tracing::error!("mqtt: cannot read the outbox: {other:?}");
                return;
            }
        };
        let mut used: HashSet<u16> = rows
            .iter()
            .filter_map(|(_, o)| o.wire.map(|w| w.id))
            .collect();
        used.extend(self.tracker().q2.keys());
        let mut drop_rows = Vec::new();
        for (seq, item) in rows {
            if self.tracker().outstanding.contains(&seq) {
                continue;
            }
            if !valid_device(item.address()) {
                tracing::warn!(to = %item.to, "mqtt: dropping a reply to an invalid device id");
                drop_rows.push(seq);
                continue;
            }
            let (topic, payload) = self.reply(seq, &item);
            // an id from another range (a changed build) is not usable
            let step = match item.wire.filter(|w| reserved(w.id)) {
                Some(w) if w.released && session => Request::PubRel(PubRel::new(w.id)),
                // without a session the broker forgot it: published again
                Some(w) => publish(&topic, payload, w.id, session),
                None if self.cfg.reply_qos == 2 => {
                    let Some(id) = (INFLIGHT + 1..=INFLIGHT + PKIDS).find(|i| !used.contains(i))
                    else {
                        continue; // all ids in flight: the next PUBCOMP makes room
                    };
                    let wire = Wire {
                        id,
                        ..Wire::default()
                    };
                    let s = store.clone();
                    if let Err(e) =
                        flatten(tokio::task::spawn_blocking(move || s.set_wire(seq, wire)).await)
                    {
                        tracing::error!(
                            "mqtt: cannot record a reply's packet id ({e}); will retry"
                        );
                        break;
                    }
                    used.insert(id);
                    publish(&topic, payload, id, false)
                }
                None => {
                    let body = String::from_utf8_lossy(&payload).into_owned();
                    if let Err(e) = self.publish(&topic, body, false, Some(seq)) {
                        tracing::warn!("mqtt: {e}; will retry");
                        break;
                    }
                    continue;
                }
            };
            let id = match &step {
                Request::PubRel(r) => r.pkid,
                Request::Publish(p) => p.pkid,
                _ => unreachable!("only publishes and releases"),
            };
            let mut t = self.tracker();
            t.q2.insert(id, seq);
            t.outstanding.insert(seq);
            drop(t);
            ev.pending.push_back(step);
        }
        if !drop_rows.is_empty() {
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.done(&drop_rows)).await;
        }
    }

    /// PUBACK, PUBREC, PUBCOMP of replies. Returns whether `p` was one.
    pub(super) async fn on_ack(
        &self,
        ev: &mut EventLoop,
        store: &Outbox,
        p: &rumqttc::Packet,
    ) -> bool {
        use rumqttc::Packet;
        match p {
            Packet::PubAck(a) => {
                let seq = self.tracker().acked(a.pkid);
                if let Some(seq) = seq {
                    self.delivered(store, seq, true).await;
                }
            }
            Packet::PubRec(r) if reserved(r.pkid) => {
                let Some(seq) = self.tracker().q2.get(&r.pkid).copied() else {
                    // not ours any more (a reset): release it anyway
                    ev.pending.push_back(Request::PubRel(PubRel::new(r.pkid)));
                    return true;
                };
                crate::util::crash_hook("mqtt-after-pubrec");
                let wire = Wire {
                    id: r.pkid,
                    released: true,
                    ..Wire::default()
                };
                let s = store.clone();
                if let Err(e) =
                    flatten(tokio::task::spawn_blocking(move || s.set_wire(seq, wire)).await)
                {
                    // no PUBREL before the commit: the next pass publishes
                    // it again (DUP) and the broker answers PUBREC again
                    tracing::error!("mqtt: cannot record a delivered reply ({e}); will retry");
                    let mut t = self.tracker();
                    t.q2.remove(&r.pkid);
                    t.outstanding.remove(&seq);
                    return true;
                }
                ev.pending.push_back(Request::PubRel(PubRel::new(r.pkid)));
            }
            Packet::PubComp(c) if reserved(c.pkid) => {
                let seq = {
                    let mut t = self.tracker();
                    let seq = t.q2.remove(&c.pkid);
                    if let Some(s) = seq {
                        t.outstanding.remove(&s);
                    }
                    seq
                };
                crate::util::crash_hook("mqtt-after-pubcomp");
                if let Some(seq) = seq {
                    self.delivered(store, seq, false).await;
                }
            }
            _ => return false,
        }
        true
    }

    /// The row of a delivered reply goes. At QoS 1 durably (a lost delete
    /// would send it again); at QoS 2 without waiting for the disk (a lost
    /// delete only repeats the PUBREL).
    async fn delivered(&self, store: &Outbox, seq: u64, durable: bool) {
        self.set_status(|s| s.replies += 1);
        let s = store.clone();
        let job = move || {
            if durable {
                s.done(&[seq])
            } else {
                s.done_lazy(&[seq])
            }
        };
        if let Err(e) = flatten(tokio::task::spawn_blocking(job).await) {
            tracing::error!("mqtt: cannot clear a delivered reply: {e}");
        }
    }
}

fn publish(topic: &str, payload: Vec<u8>, pkid: u16, dup: bool) -> Request {
    let mut p = Publish::new(topic, QoS::ExactlyOnce, payload);
    p.pkid = pkid;
    p.dup = dup;
    Request::Publish(p)
}

fn flatten<T>(
    r: Result<Result<T, crate::store::StoreError>, tokio::task::JoinError>,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_maps_acks_to_outbox_rows() {
        let mut t = Tracker::default();
        t.queued(Some(7));
        t.queued(None);
        t.queued(Some(9));
        t.sent(1);
        t.sent(2);
        t.sent(1); // a retransmission
        t.sent(INFLIGHT + 1); // a QoS 2 reply: not from the FIFO
        t.sent(3);
        assert_eq!(t.acked(2), None);
        assert_eq!(t.acked(3), Some(9));
        assert_eq!(t.acked(1), Some(7));
        assert!(t.outstanding.is_empty());
        t.queued(Some(11));
        t.reset();
        assert!(t.fifo.is_empty());
    }
}
