//! The event bus: every `agent`/`chat`/`sessions.changed`/... event goes
//! through here to all connected gateway clients. Events are not replayed
//! (SPEC §5): a client that reconnects re-reads state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::store::now_ms;

/// An event, serialized once for all connections.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    /// The payload as JSON text.
    pub payload: String,
}

impl Event {
    /// The wire frame with this connection's sequence number.
    pub fn frame(&self, seq: u64) -> String {
        format!(
            "{{\"type\":\"event\",\"event\":\"{}\",\"payload\":{},\"seq\":{seq}}}",
            self.name, self.payload
        )
    }
}

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        EventBus {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn emit(&self, name: &'static str, payload: Value) {
        if self.tx.receiver_count() > 0 {
            let payload = payload.to_string();
            let _ = self.tx.send(Arc::new(Event { name, payload }));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// Emits the events of one run with their per-run sequence numbers.
pub struct RunEvents {
    bus: EventBus,
    pub run_id: String,
    pub session_key: String,
    seq: AtomicU64,
    chat_seq: AtomicU64,
}

impl RunEvents {
    pub fn new(bus: EventBus, run_id: &str, session_key: &str) -> RunEvents {
        RunEvents {
            bus,
            run_id: run_id.into(),
            session_key: session_key.into(),
            seq: AtomicU64::new(0),
            chat_seq: AtomicU64::new(0),
        }
    }

    pub fn agent(&self, stream: &str, data: Value) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.bus.emit(
            "agent",
            json!({"runId": self.run_id, "seq": seq, "stream": stream, "ts": now_ms(),
                   "data": data, "sessionKey": self.session_key}),
        );
    }

    fn chat(&self, run_id: &str, state: &str, extra: Value) {
        let seq = self.chat_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p =
            json!({"runId": run_id, "sessionKey": self.session_key, "seq": seq, "state": state});
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        self.bus.emit("chat", p);
    }

    /// `text` is the reply so far (OpenClaw sends the accumulated message).
    pub fn chat_delta(&self, text: &str) {
        self.chat(&self.run_id, "delta", json!({"message": message(text)}));
    }

    /// The terminal events go to this run id and to `also`: the run ids of
    /// messages this run answered too (merged by `collect`, steered in, or
    /// dropped together). One counter, so `seq` keeps rising to the end.
    pub fn chat_final(&self, text: &str, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(id, "final", json!({"message": message(text)}));
        }
    }

    pub fn chat_error(&self, msg: &str, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(id, "error", json!({"errorMessage": msg}));
        }
    }

    pub fn chat_aborted(&self, partial: &str, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(id, "aborted", json!({"message": message(partial)}));
        }
    }
}

/// An assistant message in OpenClaw's shape.
pub fn message(text: &str) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": now_ms()})
}
