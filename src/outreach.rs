//! Messages Hearth sends on its own, not as a reply: the `message` tool
//! and the gateway's `send` method. Both go through [`Outreach::send`]:
//! the target is checked against the policy, then the text is queued in
//! the outbox of the target's channel (durable, delivered once like a
//! reply) or, for `webchat:<session>`, written to that session and pushed
//! to the connected clients.
//!
//! Targets by default: `telegram:<id>` for the owner's own chats (the
//! `allow_from` ids of `[channels.telegram]`), `mqtt:<device>` for any
//! device, `webchat:<session>` for any session. Anything else is refused.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::channel::Wakers;
use crate::config::Config;
use crate::events::EventBus;
use crate::store::{new_id, now_ms, Entry, IdemRecord, OutboxItem, Role, Store, StoreError};
use crate::tool::{Tool, ToolCx, ToolFuture, ToolSpec};

/// Longest message text.
pub const MAX_TEXT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SendError {
    #[error("{0}")]
    BadTarget(String),
    #[error("{0} is not a target Hearth may send to (allowed: the owner's own chats, devices, web chat sessions)")]
    NotAllowed(String),
    #[error("the message is empty or longer than {MAX_TEXT} characters")]
    BadText,
    #[error("state database: {0}")]
    Store(String),
}

#[derive(Clone)]
pub struct Outreach {
    store: Store,
    wakers: Wakers,
    bus: EventBus,
    /// Configured channel kinds (outbox targets).
    kinds: Vec<String>,
    /// `(kind, id)` chats that are the owner's.
    owner_chats: Vec<(String, String)>,
    cfg: Arc<Config>,
}

impl Outreach {
    pub fn new(
        cfg: Arc<Config>,
        store: Store,
        wakers: Wakers,
        bus: EventBus,
        kinds: Vec<String>,
    ) -> Outreach {
        let owner_chats = cfg
            .access
            .iter()
            .flat_map(|(k, a)| a.allow_from.iter().map(move |id| (k.clone(), id.clone())))
            .collect();
        Outreach {
            store,
            wakers,
            bus,
            kinds,
            owner_chats,
            cfg,
        }
    }

    /// Checks `to` against the policy; `(kind, address)`.
    pub fn check(&self, to: &str) -> Result<(String, String), SendError> {
        let Some((kind, addr)) = to.split_once(':') else {
            return Err(SendError::BadTarget(format!(
                "target {to:?} must be <channel>:<address>, e.g. telegram:123456, mqtt:kitchen-panel, webchat:main"
            )));
        };
        let ok_chars = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        if !ok_chars(addr) {
            return Err(SendError::BadTarget(format!(
                "target address {addr:?} has characters Hearth does not send to"
            )));
        }
        let allowed = match kind {
            // a web chat session, not another channel's (`...:telegram:group:...`)
            "webchat" => !addr.split(':').any(|seg| {
                matches!(seg, "direct" | "group" | "topic") || self.kinds.iter().any(|k| k == seg)
            }),
            "mqtt" => self.kinds.iter().any(|k| k == "mqtt") && !addr.contains(':'),
            k if self.kinds.iter().any(|c| c == k) => {
                let mut it = addr.split(':');
                let chat = it.next().unwrap_or("");
                // an optional topic: a number
                let topic_ok =
                    it.next().is_none_or(|t| t.parse::<i64>().is_ok()) && it.next().is_none();
                topic_ok && self.owner_chats.iter().any(|(c, id)| c == k && id == chat)
            }
            _ => false,
        };
        if !allowed {
            return Err(SendError::NotAllowed(to.to_string()));
        }
        Ok((kind.to_string(), addr.to_string()))
    }

    /// Sends `text` to `to` (blocking: redb). Returns the message id.
    pub fn send(&self, to: &str, text: &str) -> Result<String, SendError> {
        self.send_once(to, text, None).map(|(id, _)| id)
    }

    /// [`send`](Self::send) once per idempotency key: a key used before
    /// gives the first record (`Some`) and sends nothing.
    pub fn send_once(
        &self,
        to: &str,
        text: &str,
        idem: Option<(&str, &IdemRecord)>,
    ) -> Result<(String, Option<IdemRecord>), SendError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_TEXT {
            return Err(SendError::BadText);
        }
        let (kind, addr) = self.check(to)?;
        let id = format!("msg-{}", new_id());
        if kind == "webchat" {
            let session =
                crate::routing::canonical_key(&self.cfg, &addr).map_err(SendError::BadTarget)?;
            let agent = crate::routing::agent_of(&session)
                .unwrap_or(&self.cfg.default_agent)
                .to_string();
            let e = Entry::new(Role::Assistant, text, Some(&id));
            self.store
                .transcripts()
                .append(&session, &agent, &[e])
                .map_err(|e| SendError::Store(e.to_string()))?;
            self.bus.emit(
                "chat",
                json!({"runId": id, "sessionKey": session, "seq": 1, "state": "final",
                       "message": crate::events::message(text)}),
            );
            return Ok((id, None));
        }
        let item = OutboxItem {
            to: format!("{kind}:{addr}"),
            text: text.to_string(),
            run_id: id.clone(),
            created_ms: now_ms(),
            wire: None,
        };
        let r = match idem {
            Some((key, rec)) => self.store.outbox().push_once(item, key, rec),
            None => self.store.outbox().push(item),
        };
        match r {
            Ok(()) => {}
            Err(StoreError::Duplicate(first)) => return Ok((id, Some(*first))),
            Err(e) => return Err(SendError::Store(e.to_string())),
        }
        self.wakers.wake(to);
        Ok((id, None))
    }
}

/// The `message` tool (policy group `message`).
pub struct MessageTool {
    out: Outreach,
    spec: ToolSpec,
}

pub fn tool(out: Outreach) -> Arc<dyn Tool> {
    Arc::new(MessageTool {
        out,
        spec: ToolSpec {
            name: "message".into(),
            description: "Send a message to someone now, not as your reply: to = \"telegram:<chat id>\" (the owner's phone), \"mqtt:<device>\" or \"webchat:<session>\".".into(),
            parameters: json!({"type": "object", "properties": {
                "to": {"type": "string"}, "text": {"type": "string"}},
                "required": ["to", "text"], "additionalProperties": false}),
        },
    })
}

impl Tool for MessageTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn group(&self) -> &'static str {
        "message"
    }
    fn call<'a>(&'a self, _cx: &'a ToolCx, args: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let s = |k: &str| args.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(to), Some(text)) = (s("to"), s("text")) else {
                return Err("invalid arguments: to and text are required strings".into());
            };
            let out = self.out.clone();
            let t2 = to.clone();
            let r = tokio::task::spawn_blocking(move || out.send(&t2, &text))
                .await
                .map_err(|e| e.to_string())?;
            r.map(|id| format!("queued for {to} (id {id})"))
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_owners_chats_devices_and_web_sessions() {
        let cfg = Config::from_str(
            "[channels.telegram]\nbot_token = \"1:AAAAAAAAAAAAAAAAAAAAAAAA\"\nallow_from = [111]\n",
            None,
            &|_| None,
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.redb")).unwrap();
        let o = Outreach::new(
            Arc::new(cfg),
            store.clone(),
            Wakers::default(),
            EventBus::new(4),
            vec!["telegram".into(), "mqtt".into()],
        );
        assert!(o.check("telegram:111").is_ok());
        assert!(
            o.check("telegram:111:7").is_ok(),
            "a topic of the owner's chat"
        );
        assert!(o.check("mqtt:kitchen-panel").is_ok());
        assert!(o.check("webchat:main").is_ok());
        for bad in [
            "telegram:222",
            "telegram:-100",
            "slack:111",
            "mqtt:a/b",
            "telegram",
            "mqtt:",
        ] {
            assert!(o.check(bad).is_err(), "{bad}");
        }
        o.send("telegram:111", "hi").unwrap();
        assert_eq!(store.outbox().pending("telegram").unwrap()[0].1.text, "hi");
        assert_eq!(o.send("telegram:111", "  "), Err(SendError::BadText));
        o.send("webchat:main", "note").unwrap();
        let t = store.transcripts().tail("agent:main:main", 5).unwrap();
        assert_eq!(t[0].text, "note");
    }
}
