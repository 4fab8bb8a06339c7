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
    /// The run it belongs to (a connection holds a run's events back until
    /// its own `chat.send` answer for that run went out).
    pub run: Option<Arc<str>>,
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
        self.emit_run(name, payload, None)
    }

    /// An event of run `run`.
    pub fn emit_run(&self, name: &'static str, payload: Value, run: Option<&str>) {
        if self.tx.receiver_count() > 0 {
            let payload = payload.to_string();
            let run = run.map(Arc::from);
            let _ = self.tx.send(Arc::new(Event { name, payload, run }));
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
    /// The reply text of the last delta (for `deltaText`).
    last: std::sync::Mutex<String>,
}

impl RunEvents {
    pub fn new(bus: EventBus, run_id: &str, session_key: &str) -> RunEvents {
        RunEvents {
            bus,
            run_id: run_id.into(),
            session_key: session_key.into(),
            seq: AtomicU64::new(0),
            chat_seq: AtomicU64::new(0),
            last: std::sync::Mutex::new(String::new()),
        }
    }

    pub fn agent(&self, stream: &str, data: Value) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.bus.emit_run(
            "agent",
            json!({"runId": self.run_id, "seq": seq, "stream": stream, "ts": now_ms(),
                   "data": data, "sessionKey": self.session_key}),
            Some(&self.run_id),
        );
    }

    fn chat(&self, run_id: &str, state: &str, extra: Value) {
        let seq = self.chat_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut p =
            json!({"runId": run_id, "sessionKey": self.session_key, "seq": seq, "state": state});
        if let Some(a) = agent_of(&self.session_key) {
            p["agentId"] = json!(a);
        }
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        self.bus.emit_run("chat", p, Some(run_id));
    }

    /// `text` is the reply so far (OpenClaw sends the accumulated message,
    /// and in `deltaText` what is new since the last delta; `replace` when
    /// the text does not continue the last one, e.g. a retried stream).
    pub fn chat_delta(&self, text: &str) {
        let (new, replace) = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let r = match text.strip_prefix(last.as_str()) {
                Some(rest) => (rest.to_string(), false),
                None => (text.to_string(), true),
            };
            text.clone_into(&mut last);
            r
        };
        let mut extra = json!({"message": message(text), "deltaText": new});
        if replace {
            extra["replace"] = json!(true);
        }
        self.chat(&self.run_id, "delta", extra);
    }

    /// The terminal events go to this run id and to `also`: the run ids of
    /// messages this run answered too (merged by `collect`, steered in, or
    /// dropped together). One counter, so `seq` keeps rising to the end.
    pub fn chat_final(&self, text: &str, also: &[String]) {
        self.chat_final_message(message(text), also)
    }

    /// [`chat_final`](Self::chat_final) with the stored message (its
    /// `__openclaw` id, the model that wrote it).
    pub fn chat_final_message(&self, msg: Value, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(id, "final", json!({"message": msg, "stopReason": "stop"}));
        }
    }

    pub fn chat_error(&self, msg: &str, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(
                id,
                "error",
                json!({"errorMessage": msg, "stopReason": "error"}),
            );
        }
    }

    pub fn chat_aborted(&self, partial: &str, also: &[String]) {
        for id in std::iter::once(&self.run_id).chain(also) {
            self.chat(
                id,
                "aborted",
                json!({"message": message(partial), "stopReason": "aborted"}),
            );
        }
    }
}

/// The agent of an OpenClaw session key (`agent:<id>:...`).
fn agent_of(key: &str) -> Option<&str> {
    key.strip_prefix("agent:")?.split(':').next()
}

/// OpenClaw's identity of the transcript entry at `index`: a stable `id`
/// and a positive `seq`; a user turn also carries the idempotency key
/// OpenClaw's clients match their optimistic message by (`<runId>:user`).
pub fn message_identity(index: u64, user_run: Option<&str>) -> Value {
    let mut v = json!({"id": format!("m{index}"), "seq": index + 1});
    if let Some(r) = user_run {
        v["idempotencyKey"] = json!(format!("{r}:user"));
        v["runId"] = json!(r);
    }
    v
}

/// A stored reply as the final event carries it: the text, when, and the
/// model that wrote it (`local` when it was the offline model).
pub fn stored_message(e: &crate::store::Entry, local: bool) -> Value {
    let mut m = json!({"role": "assistant", "content": [{"type": "text", "text": e.text}], "timestamp": e.ts});
    if let Some(model) = &e.model {
        m["model"] = json!(model);
        m["provider"] = json!(model.split('/').next().unwrap_or(""));
        m["local"] = json!(local);
    }
    m
}

/// An assistant message in OpenClaw's shape.
pub fn message(text: &str) -> Value {
    json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": now_ms()})
}
