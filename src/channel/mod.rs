//! Channels as components: what a channel gets, what it gives, and the
//! one registry that builds them.
//!
//! A channel turns its platform's messages into [`Inbound`]s and hands
//! them to its [`Ingest`] handle; it delivers the replies addressed to it
//! (`<kind>:<address>`) from its [`Outbox`] handle, woken by its own
//! [`Notify`]. It holds no gateway and never touches the store, the queue
//! or the agent loop: the context it is started with is all it has.
//!
//! Adding a channel: one module implementing [`Channel`] with a
//! `build(&Config, state_dir)` function, plus one line in [`REGISTRY`]
//! (`channel::registry`).
//! Its config section is `[channels.<kind>]`: the shared access keys
//! (`dm_policy`, `allow_from`, `members`, `tools`) are already taken out
//! into `Config::access`; the rest is in `Config::channels[kind]` for the
//! module to read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod registry;

pub use crate::inbound::{ChatKind, Inbound, Sender, Trust};
use crate::store::{OutboxItem, Store, StoreError, Wire};
use crate::tool::Tool;
pub use registry::{build_all, check, kinds, REGISTRY};

/// What the gateway did with an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and queued; the reply will come with this run id.
    Accepted { run_id: String, session_key: String },
    /// The platform delivered the same message id again; nothing new runs.
    Duplicate { run_id: String },
    /// A command (`/new`, `/status`, ...) was handled; its answer is in the
    /// outbox when the message had a `reply_to`, else in `reply`.
    Command { reply: String },
    /// Not taken now (shutting down, the state database failed): the
    /// platform should deliver it again; acknowledge nothing.
    RetryLater(String),
    /// Not taken, ever; tell the sender `reply` if there is one (a
    /// pairing code, "not allowed"). Acknowledge it.
    Refused { why: String, reply: Option<String> },
}

/// The channel's way into the gateway.
pub trait Ingest: Send + Sync {
    fn accept(&self, m: Inbound) -> BoxFuture<'_, IngestOutcome>;
}

/// One wake-up per channel kind: a committed reply for `mqtt:...` wakes
/// the MQTT channel only.
#[derive(Clone, Default)]
pub struct Wakers(Arc<Mutex<HashMap<String, Arc<Notify>>>>);

impl Wakers {
    pub fn get(&self, kind: &str) -> Arc<Notify> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_string())
            .or_default()
            .clone()
    }

    /// Wakes the channel a reply address (`<kind>:<address>`) belongs to.
    /// A permit, not only a wake-up: the channel may be busy right now.
    pub fn wake(&self, to: &str) {
        let kind = to.split_once(':').map_or(to, |(k, _)| k);
        self.get(kind).notify_one();
    }
}

/// A channel's own deliveries: the outbox rows addressed to its kind.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    kind: String,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(store: Store, kind: &str, wakers: &Wakers) -> Outbox {
        Outbox {
            store,
            kind: kind.into(),
            wake: wakers.get(kind),
        }
    }

    /// Resolves when a reply for this channel was committed (or one was
    /// committed since the last call).
    pub async fn notified(&self) {
        self.wake.notified().await
    }

    // Blocking (redb): call from the blocking pool.

    /// The replies waiting for this channel, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        self.store.outbox().pending(&self.kind)
    }
    /// Records how far the delivery of one reply got. Durable.
    pub fn set_wire(&self, seq: u64, wire: Wire) -> Result<(), StoreError> {
        self.store.outbox().set_wire(seq, wire)
    }
    /// Delivered: gone for good. Durable.
    pub fn done(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.store.outbox().done(seqs)
    }
    /// Delivered, and losing this step in a crash is harmless.
    pub fn done_lazy(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.store.outbox().done_lazy(seqs)
    }
}

/// The replies being written, for a channel that shows them as they grow
/// (Telegram's draft streaming): `(run id, text so far)` of every run.
#[derive(Clone)]
pub struct Drafts(crate::events::EventBus);

impl Drafts {
    pub fn new(bus: crate::events::EventBus) -> Drafts {
        Drafts(bus)
    }
    pub fn subscribe(&self) -> DraftStream {
        DraftStream(self.0.subscribe())
    }
}

pub struct DraftStream(tokio::sync::broadcast::Receiver<Arc<crate::events::Event>>);

impl DraftStream {
    /// The next streamed text; `None` when the gateway is gone. A slow
    /// reader skips what it missed (the next delta carries all the text).
    pub async fn next(&mut self) -> Option<(String, String)> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.0.recv().await {
                Ok(e) if e.name == "chat" && e.payload.contains("\"delta\"") => {
                    let v: Value = serde_json::from_str(&e.payload).ok()?;
                    if v["state"] != "delta" {
                        continue;
                    }
                    let (Some(run), Some(text)) = (
                        v["runId"].as_str(),
                        v["message"]["content"][0]["text"].as_str(),
                    ) else {
                        continue;
                    };
                    return Some((run.to_string(), text.to_string()));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// Everything a running channel gets.
#[derive(Clone)]
pub struct ChannelContext {
    pub ingest: Arc<dyn Ingest>,
    pub outbox: Outbox,
    /// Cancelled after the queue drained: deliver what is left, then stop.
    pub shutdown: CancellationToken,
    /// `<state>/channels/<kind>`, created before the channel starts.
    pub state_dir: PathBuf,
    /// Replies as they are written (read-only).
    pub drafts: Drafts,
}

/// A channel, built from its config section.
pub trait Channel: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Tools this channel gives the agents (MQTT: the device tools).
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        Vec::new()
    }
    /// Health for `status` (never secrets).
    fn status(&self) -> Value;
    /// Runs until `cx.shutdown`, then finishes within [`Channel::stop_budget`].
    fn run(self: Arc<Self>, cx: ChannelContext) -> BoxFuture<'static, ()>;
    fn stop_budget(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// For the daemon to reach a concrete channel (MQTT's device registry
    /// serves `devices.list`).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The ingest handle a channel gets: it writes the channel's own kind on
/// every message, so one channel cannot borrow another's allow lists.
struct Stamped {
    inner: Arc<dyn Ingest>,
    kind: &'static str,
}

impl Ingest for Stamped {
    fn accept(&self, mut m: Inbound) -> BoxFuture<'_, IngestOutcome> {
        m.channel = self.kind.to_string();
        self.inner.accept(m)
    }
}

/// Starts a channel with its context; returns its task.
pub fn start(
    c: Arc<dyn Channel>,
    ingest: Arc<dyn Ingest>,
    store: &Store,
    wakers: &Wakers,
    drafts: Drafts,
    shutdown: CancellationToken,
    state_root: &Path,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let kind = c.kind();
    let dir = state_root.join("channels").join(kind);
    std::fs::create_dir_all(&dir)?;
    let cx = ChannelContext {
        ingest: Arc::new(Stamped {
            inner: ingest,
            kind,
        }),
        outbox: Outbox::new(store.clone(), kind, wakers),
        shutdown,
        state_dir: dir,
        drafts,
    };
    Ok(tokio::spawn(c.run(cx)))
}

/// What `hearth config validate` checks: the config (with the console's
/// setup from `state` over it, or `over`/`extra` instead when given),
/// then the paths it names and the channel kinds. Every problem at once.
pub fn check_config(
    path: Option<&Path>,
    state: &Path,
    planned: Option<(&toml::Table, &std::collections::BTreeMap<String, String>)>,
) -> Result<crate::config::Config, crate::config::ConfigErrors> {
    let c = match planned {
        Some((t, env)) => crate::config::Config::load_over(path, Some(t), env)?,
        None => crate::config::Config::load_with_setup(path, state)?,
    };
    let file = path.map_or("embedded defaults".into(), |p| p.display().to_string());
    let mut p = c.check_paths();
    p.extend(
        check(&c)
            .into_iter()
            .map(|message| crate::config::ConfigProblem {
                file: file.clone(),
                key: String::new(),
                message,
            }),
    );
    if p.is_empty() {
        Ok(c)
    } else {
        Err(crate::config::ConfigErrors(p))
    }
}
