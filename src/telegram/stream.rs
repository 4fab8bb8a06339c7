//! Draft streaming (OpenClaw's): the first words of a reply go out as a
//! message as soon as there are some, and that message is edited as the
//! reply grows (at most every [`EDIT_EVERY`], within Telegram's limits).
//! The finished reply replaces the draft (`deliver` edits it into the
//! first part). Drafts live in memory: after a restart the finished reply
//! comes as a new message and an old draft stays as it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::updates::parse_address;
use super::{format, TelegramChannel};
use crate::channel::ChannelContext;

/// Between two edits of one draft.
pub const EDIT_EVERY: Duration = Duration::from_millis(1500);
/// A draft starts once the reply has this many characters.
const FIRST_CHARS: usize = 24;
/// Runs followed at once, at most (the oldest is forgotten).
const MAX_RUNS: usize = 256;

#[derive(Debug, Clone)]
pub struct Draft {
    pub chat: String,
    pub message_id: i64,
    shown: String,
    edited: Instant,
}

#[derive(Default)]
pub struct Drafts {
    /// run id → the chat its reply goes to (from the accepted message).
    runs: HashMap<String, (String, Instant)>,
    drafts: HashMap<String, Draft>,
}

impl Drafts {
    pub fn follow(&mut self, run: &str, chat: &str) {
        if self.runs.len() >= MAX_RUNS {
            if let Some(old) = self
                .runs
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.runs.remove(&old);
                self.drafts.remove(&old);
            }
        }
        self.runs
            .insert(run.to_string(), (chat.to_string(), Instant::now()));
    }

    /// The finished reply is here: no new draft or edit for `run`; its
    /// draft, if any, for the reply to edit.
    pub fn finishing(&mut self, run: &str) -> Option<Draft> {
        self.runs.remove(run);
        self.drafts.get(run).cloned()
    }

    /// The reply is delivered: the run is not followed any more.
    pub fn take(&mut self, run: &str) -> Option<Draft> {
        self.runs.remove(run);
        self.drafts.remove(run)
    }
}

pub async fn run(ch: Arc<TelegramChannel>, cx: ChannelContext) {
    let mut stream = cx.drafts.subscribe();
    loop {
        let next = tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            n = stream.next() => n,
        };
        let Some((run, text)) = next else { return };
        if ch.status_now().stopped.is_some() {
            return;
        }
        // held through the request: the finished reply waits for it
        let _io = ch.draft_io.lock().await;
        let step = {
            let d = ch.drafts.lock().unwrap_or_else(|p| p.into_inner());
            let Some((chat, _)) = d.runs.get(&run).cloned() else {
                continue;
            };
            match d.drafts.get(&run) {
                None if text.chars().count() >= FIRST_CHARS => Some((chat, None)),
                Some(dr) if dr.edited.elapsed() >= EDIT_EVERY && dr.shown != text => {
                    Some((chat, Some(dr.message_id)))
                }
                _ => None,
            }
        };
        let Some((chat, existing)) = step else {
            continue;
        };
        let Some((c, thread)) = parse_address(&chat) else {
            continue;
        };
        // the text so far, as its first part will look
        let html = format::parts(&text)
            .into_iter()
            .next()
            .map(|p| p.html)
            .unwrap_or_default();
        let r = match existing {
            None => {
                let mut body = json!({"chat_id": c, "text": html, "parse_mode": "HTML",
                                      "link_preview_options": {"is_disabled": true}});
                if let Some(t) = thread {
                    body["message_thread_id"] = json!(t);
                }
                ch.call("sendMessage", body)
                    .await
                    .map(|m| m["message_id"].as_i64())
            }
            Some(id) => ch
                .call(
                    "editMessageText",
                    json!({"chat_id": c, "message_id": id, "text": html, "parse_mode": "HTML",
                                                "link_preview_options": {"is_disabled": true}}),
                )
                .await
                .map(|_| Some(id)),
        };
        match r {
            Ok(Some(id)) => {
                let mut d = ch.drafts.lock().unwrap_or_else(|p| p.into_inner());
                // the finished reply may have taken it meanwhile
                if d.runs.contains_key(&run) {
                    d.drafts.insert(
                        run,
                        Draft {
                            chat,
                            message_id: id,
                            shown: text,
                            edited: Instant::now(),
                        },
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                // whether a first draft arrived is unknown: no more drafts
                // for this run (the finished reply comes as a message)
                tracing::debug!(
                    "telegram: draft update failed ({e}); the reply comes when finished"
                );
                ch.drafts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .runs
                    .remove(&run);
            }
        }
    }
}
