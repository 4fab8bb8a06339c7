//! Telegram as a [`Channel`]: Bot API long polling in, the outbox out.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[channels.telegram]` |
//! | [`api`] | the Bot API over ureq + rustls, typed errors, no token in any error |
//! | [`updates`] | a Telegram update → an [`Inbound`](crate::inbound::Inbound) (groups, topics, mentions, media) |
//! | [`poll`] | the `getUpdates` loop and its durable offset |
//! | [`deliver`] | replies from the outbox, in parts, each part once |
//! | [`format`] | Markdown → Telegram HTML, splitting at 4,096 characters |
//! | [`stream`] | draft streaming: the reply shown and edited as it grows |
//!
//! Invariants: an update is acknowledged (the next `getUpdates` offset)
//! only after the ingest handle answered for it, so nothing accepted is
//! lost and a redelivered update is a duplicate by its `update_id`. A
//! reply part is recorded as sending before its request and as sent right
//! after the answer (docs/channels.md says what that leaves open).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::channel::{Channel, ChannelContext};
use crate::config::Config;

pub mod api;
pub mod config;
pub mod deliver;
pub mod format;
pub mod poll;
pub mod stream;
pub mod updates;

use api::{Api, ApiError};
use config::TelegramConfig;

/// Within the daemon's stop budget: the last replies.
pub const STOP_BUDGET: Duration = Duration::from_secs(3);
/// How long a chat shows "typing" after a message was accepted, at most.
const TYPING_FOR: Duration = Duration::from_secs(120);

/// Health for `status`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub bot: Option<String>,
    pub polling: bool,
    pub last_poll_ms: u64,
    pub last_error: Option<String>,
    /// Why the channel stopped (a refused token); the daemon runs on.
    pub stopped: Option<String>,
    pub inbound: u64,
    pub replies: u64,
    pub offset: i64,
    /// The update being handled (a failure skips it).
    pub handling: Option<i64>,
}

/// Who the bot is (getMe): for mentions and replies in groups.
#[derive(Debug, Clone, Default)]
pub struct Me {
    pub id: i64,
    pub username: String,
}

pub struct TelegramChannel {
    pub cfg: TelegramConfig,
    api: Arc<Api>,
    status: Mutex<Status>,
    /// Chats with a reply on the way: until when they show "typing", and
    /// whether "typing" was sent since the message came.
    typing: Mutex<HashMap<String, (Instant, bool)>>,
    /// Woken when a chat starts waiting, so "typing" shows at once rather
    /// than at the next renewal.
    pub typing_started: tokio::sync::Notify,
    /// Replies being written, and their drafts.
    pub drafts: Mutex<stream::Drafts>,
    /// Held while a draft is sent or edited, and while a finished reply
    /// takes its draft over: never a draft after its reply.
    pub draft_io: tokio::sync::Mutex<()>,
}

/// `[channels.telegram]` → the channel.
pub fn build(cfg: &Config, _state_dir: &Path) -> Result<Option<Arc<dyn Channel>>, String> {
    let Some(t) = config::parse(cfg).map_err(|p| {
        p.into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    })?
    else {
        return Ok(None);
    };
    Ok(Some(Arc::new(TelegramChannel::new(t))))
}

impl TelegramChannel {
    pub fn new(cfg: TelegramConfig) -> TelegramChannel {
        TelegramChannel {
            api: Arc::new(Api::new(&cfg)),
            cfg,
            status: Mutex::new(Status::default()),
            typing: Mutex::new(HashMap::new()),
            typing_started: tokio::sync::Notify::new(),
            drafts: Mutex::new(stream::Drafts::default()),
            draft_io: tokio::sync::Mutex::new(()),
        }
    }

    pub fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn status_now(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One Bot API call on the blocking pool.
    pub async fn call(&self, method: &'static str, body: Value) -> Result<Value, ApiError> {
        let api = self.api.clone();
        tokio::task::spawn_blocking(move || api.call(method, &body))
            .await
            .unwrap_or_else(|e| Err(ApiError::Network(format!("task: {e}"))))
    }

    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// The token was refused: the channel stops, the daemon runs on.
    pub fn stop_unauthorized(&self, e: &ApiError) {
        let why = format!("stopped: {e}; fix channels.telegram.bot_token and restart Hearth");
        tracing::error!("telegram: {why}");
        self.set_status(|s| {
            s.polling = false;
            s.stopped = Some(why);
        });
    }

    pub fn start_typing(&self, chat: &str) {
        if self.cfg.typing {
            self.typing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(chat.to_string(), (Instant::now() + TYPING_FOR, false));
            self.typing_started.notify_one();
        }
    }

    pub fn stop_typing(&self, chat: &str) {
        self.typing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(chat);
    }

    /// The chats that should show "typing" now (`only_new`: those not
    /// told yet); they count as told from here.
    pub fn typing_chats(&self, only_new: bool) -> Vec<String> {
        let mut t = self.typing.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        t.retain(|_, (until, _)| *until > now);
        t.iter_mut()
            .filter(|(_, (_, told))| !(only_new && *told))
            .map(|(chat, (_, told))| {
                *told = true;
                chat.clone()
            })
            .collect()
    }

    /// getMe until it answers; `None` when the token is refused or the
    /// daemon stops first.
    async fn whoami(&self, cx: &ChannelContext) -> Option<Me> {
        let mut backoff = poll::Backoff::default();
        loop {
            match self.call("getMe", json!({})).await {
                Ok(me) => {
                    let m = Me {
                        id: me["id"].as_i64().unwrap_or(0),
                        username: me["username"].as_str().unwrap_or("").to_string(),
                    };
                    tracing::info!(bot = %m.username, "telegram: connected as @{}", m.username);
                    self.set_status(|s| s.bot = Some(m.username.clone()));
                    return Some(m);
                }
                Err(e @ ApiError::Unauthorized(_)) => {
                    self.stop_unauthorized(&e);
                    return None;
                }
                Err(e) => {
                    let wait = match e {
                        ApiError::RetryAfter(d) => d,
                        _ => backoff.wait(),
                    };
                    tracing::warn!(
                        "telegram: getMe failed ({e}); again in {} s",
                        wait.as_secs()
                    );
                    self.set_status(|s| s.last_error = Some(e.to_string()));
                    tokio::select! {
                        _ = cx.shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Runs the poll loop; a panic in it (a bug meeting an odd update) is
/// logged, the update it was handling is skipped (acknowledged), and the
/// loop starts again: polling never stops silently, and one bad update
/// cannot hold up the rest.
async fn supervise(ch: Arc<TelegramChannel>, cx: ChannelContext, me: Arc<Me>) {
    use futures_util::FutureExt;
    loop {
        let r = std::panic::AssertUnwindSafe(poll::run(ch.clone(), cx.clone(), me.clone()))
            .catch_unwind()
            .await;
        if r.is_ok() {
            return;
        }
        let bad = ch.status_now().handling;
        tracing::error!(update = ?bad, "telegram: handling an update failed; it is skipped, polling goes on");
        ch.set_status(|s| {
            s.last_error =
                Some("an update could not be handled and was skipped; see the log".into());
            s.handling = None;
        });
        if let Some(id) = bad {
            poll::save(&cx.state_dir.join("offset"), me.id, id + 1).await;
        }
        tokio::select! {
            _ = cx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A reusable inline keyboard: rows of (label, callback data ≤ 64 bytes).
/// A press comes back as a message with the data as its text.
pub fn keyboard(rows: &[&[(&str, &str)]]) -> Value {
    json!({"inline_keyboard": rows.iter().map(|r| r.iter().map(|(label, data)| {
        let data: String = data.chars().scan(0, |n, c| { *n += c.len_utf8(); (*n <= 64).then_some(c) }).collect();
        json!({"text": label, "callback_data": data})
    }).collect::<Vec<_>>()).collect::<Vec<_>>()})
}

impl Channel for TelegramChannel {
    fn kind(&self) -> &'static str {
        "telegram"
    }
    fn status(&self) -> Value {
        let s = self.status_now();
        json!({"bot": s.bot, "polling": s.polling,
               "lastPoll": (s.last_poll_ms > 0).then(|| crate::util::rfc3339(s.last_poll_ms)),
               "lastError": s.last_error, "stopped": s.stopped,
               "inbound": s.inbound, "replies": s.replies, "offset": s.offset,
               "apiBase": self.cfg.api_base})
    }
    fn run(self: Arc<Self>, cx: ChannelContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(me) = self.whoami(&cx).await else {
                return;
            };
            let me = Arc::new(me);
            let poller = tokio::spawn(supervise(self.clone(), cx.clone(), me));
            let drafts = self
                .cfg
                .streaming
                .then(|| tokio::spawn(stream::run(self.clone(), cx.clone())));
            deliver::run(self.clone(), cx).await;
            poller.abort();
            let _ = poller.await;
            if let Some(d) = drafts {
                d.abort();
                let _ = d.await;
            }
        })
    }
    fn stop_budget(&self) -> Duration {
        STOP_BUDGET
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyboards_carry_at_most_64_bytes_of_data() {
        let k = super::keyboard(&[&[("Allow once", "approve:1"), ("Deny", &"é".repeat(40))]]);
        let row = &k["inline_keyboard"][0];
        assert_eq!(
            row[0],
            serde_json::json!({"text": "Allow once", "callback_data": "approve:1"})
        );
        let data = row[1]["callback_data"].as_str().unwrap();
        assert_eq!(
            data.len(),
            64,
            "cut on a character boundary within Telegram's limit"
        );
    }
}
