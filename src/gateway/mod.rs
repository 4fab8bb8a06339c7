//! The gateway: WebSocket (OpenClaw gateway protocol v4) and HTTP on one port.
//!
//! Connection life: `server` accepts (pre-auth limits, header-read timeout,
//! Host check) → Origin check at the upgrade → `connect.challenge` event →
//! the first frame must be `connect` within [`CONNECT_TIMEOUT`] (else
//! `INVALID_REQUEST`, close 1008; wrong or missing token
//! `AUTH_TOKEN_MISMATCH`, close 1008; protocol `PROTOCOL_MISMATCH`, close
//! 1002) → an authenticated slot (`max_connections`; else `UNAVAILABLE`,
//! close 1013) → `hello-ok` → requests, events and `tick`s.
//!
//! Bounds: frames before auth are limited to 64 KiB, after to
//! `policy.maxPayload`; at most `max_inflight` requests per connection run
//! at once (more get a `retryable` error), at most [`MAX_WAITERS`] waits
//! (`agent`, `agent.wait`) over all; a full outbound queue stops reading
//! from that connection, and a client that takes nothing for
//! [`WRITE_TIMEOUT`] is disconnected. A bad frame gets an error response;
//! nothing a client sends can take the daemon down.

pub mod admin;
pub mod auth;
pub mod commands;
pub mod compat;
pub mod console;
pub mod devices;
pub mod ingest;
pub mod methods;
pub mod protocol;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::EventBus;
use crate::provider::Providers;
use crate::queue::Queue;
use crate::store::now_ms;
use protocol::{ErrorShape, Frame};

pub const PROTOCOL: u64 = 4;
pub const PRE_AUTH_MAX: usize = 64 * 1024;
pub const MAX_PAYLOAD: usize = 1024 * 1024;
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// The `connect` frame must arrive within this after the upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A wrong token is answered after this.
pub const AUTH_DELAY: Duration = Duration::from_secs(1);
/// A client that takes no frame for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued for one connection before reading from it stops.
const OUT_QUEUE: usize = 256;
/// `agent` / `agent.wait` calls waiting for a run, over all connections.
pub const MAX_WAITERS: usize = 256;

/// Everything the gateway's handlers share.
pub struct Gateway {
    pub cfg: Arc<Config>,
    pub queue: Queue,
    pub bus: EventBus,
    /// For status output (credential health); the agents hold their own.
    pub providers: Providers,
    pub state_dir: PathBuf,
    pub memory: crate::memory::service::Memory,
    pub started: Instant,
    pub shutdown: CancellationToken,
    /// The token every client signs in with, and its generation (bumped
    /// when `hearth token --rotate` replaced it).
    pub token: auth::Token,
    token_gen: watch::Sender<u64>,
    pub hosts: auth::HostPolicy,
    /// Authenticated connections.
    conns: Arc<Semaphore>,
    /// Connections that have not signed in yet (see `server`).
    pre_auth: Arc<server::PreAuthPool>,
    peers: Arc<server::PeerCounts>,
    /// Requests waiting for a run to end (`agent`, `agent.wait`).
    pub waiters: Arc<Semaphore>,
    next_conn: AtomicU64,
    pub stats: Stats,
    /// The MQTT connection, when configured (`devices.list`, status).
    pub mqtt: std::sync::OnceLock<Arc<crate::mqtt::client::Mqtt>>,
    /// The running channels (status).
    pub channels: std::sync::OnceLock<Vec<Arc<dyn crate::channel::Channel>>>,
    /// What start-up had to repair (a state file moved aside), for status.
    pub recovered: Vec<String>,
    /// The local chat model: where, whether it is there, and if not why.
    /// `send` and the `message` tool.
    pub outreach: crate::outreach::Outreach,
    pub local_model: serde_json::Value,
    /// `gateway.restart` wakes the daemon's stop with this.
    pub restart: tokio::sync::Notify,
}

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Connections closed at accept: the pre-auth limits were reached.
    pub refused: AtomicU64,
    /// Requests refused for their Host header.
    pub bad_hosts: AtomicU64,
    /// Requests refused because the connection had too many in flight.
    pub busy: AtomicU64,
    /// Unauthenticated connections closed to make room for newer ones.
    pub evicted: AtomicU64,
    /// Browser WebSockets refused for their Origin.
    pub bad_origins: AtomicU64,
}

/// What [`Gateway::new`] needs besides the config.
pub struct Parts {
    pub queue: Queue,
    pub bus: EventBus,
    pub providers: Providers,
    pub state_dir: PathBuf,
    pub memory: crate::memory::service::Memory,
    pub shutdown: CancellationToken,
    pub token: auth::Token,
    pub recovered: Vec<String>,
    pub local_model: serde_json::Value,
    pub outreach: crate::outreach::Outreach,
}

impl Gateway {
    pub fn new(cfg: Arc<Config>, p: Parts) -> Arc<Gateway> {
        let g = &cfg.gateway;
        Arc::new(Gateway {
            conns: Arc::new(Semaphore::new(g.max_connections)),
            pre_auth: server::PreAuthPool::new(g.max_handshakes),
            peers: server::PeerCounts::new(g.max_handshakes_per_peer),
            waiters: Arc::new(Semaphore::new(MAX_WAITERS)),
            hosts: auth::HostPolicy::new(g),
            token_gen: watch::channel(p.token.generation()).0,
            token: p.token,
            memory: p.memory,
            queue: p.queue,
            bus: p.bus,
            providers: p.providers,
            state_dir: p.state_dir,
            started: Instant::now(),
            shutdown: p.shutdown,
            next_conn: AtomicU64::new(1),
            stats: Stats::default(),
            mqtt: std::sync::OnceLock::new(),
            channels: std::sync::OnceLock::new(),
            recovered: p.recovered,
            local_model: p.local_model,
            outreach: p.outreach,
            restart: tokio::sync::Notify::new(),
            cfg,
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(root))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/console/app.js", get(console::app_js))
            .route("/console/app.css", get(console::app_css))
            .with_state(self.clone())
    }

    /// Re-reads a rotated token file every [`auth::WATCH_EVERY`]; the
    /// connections signed in with the old token close.
    pub fn spawn_token_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let g = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(auth::WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = g.shutdown.cancelled() => return,
                    _ = t.tick() => {}
                }
                g.token.refresh();
                let now = g.token.generation();
                g.token_gen
                    .send_if_modified(|v| std::mem::replace(v, now) != now);
            }
        })
    }

    /// Connections waiting to sign in, authenticated ones (for tests and
    /// metrics).
    pub fn connection_counts(&self) -> (usize, usize) {
        let g = &self.cfg.gateway;
        (
            self.pre_auth.len(),
            g.max_connections - self.conns.available_permits(),
        )
    }
}

async fn health(State(g): State<Arc<Gateway>>) -> Response {
    let (running, pending) = g.queue.load();
    let body = json!({"ok": true, "status": "ready", "version": crate::VERSION,
        "uptimeMs": g.started.elapsed().as_millis() as u64,
        "queue": {"running": running, "pending": pending}});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    let (running, pending) = g.queue.load();
    let (handshakes, authed) = g.connection_counts();
    let s = &g.stats;
    let text = format!(
        "# TYPE hearth_uptime_seconds gauge\nhearth_uptime_seconds {}\n\
# TYPE hearth_runs_running gauge\nhearth_runs_running {running}\n\
# TYPE hearth_messages_pending gauge\nhearth_messages_pending {pending}\n\
# TYPE hearth_ws_connections gauge\nhearth_ws_connections {authed}\n\
# TYPE hearth_handshakes gauge\nhearth_handshakes {handshakes}\n\
# TYPE hearth_ws_connections_total counter\nhearth_ws_connections_total {}\n\
# TYPE hearth_ws_requests_total counter\nhearth_ws_requests_total {}\n\
# TYPE hearth_ws_bad_frames_total counter\nhearth_ws_bad_frames_total {}\n\
# TYPE hearth_connections_refused_total counter\nhearth_connections_refused_total {}\n\
# TYPE hearth_bad_host_total counter\nhearth_bad_host_total {}\n\
# TYPE hearth_ws_busy_total counter\nhearth_ws_busy_total {}\n\
# TYPE hearth_handshakes_evicted_total counter\nhearth_handshakes_evicted_total {}\n",
        g.started.elapsed().as_secs(),
        s.connections.load(Ordering::Relaxed),
        s.requests.load(Ordering::Relaxed),
        s.bad_frames.load(Ordering::Relaxed),
        s.refused.load(Ordering::Relaxed),
        s.bad_hosts.load(Ordering::Relaxed),
        s.busy.load(Ordering::Relaxed),
        s.evicted.load(Ordering::Relaxed),
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn root(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<Extension<server::PreAuthSlot>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return console::index(host);
    };
    if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::origin_allowed(origin, host, &g.cfg.gateway.allowed_origins) {
            let n = g.stats.bad_origins.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(%peer, origin, refused = n, "refused a browser WebSocket from a foreign origin");
            }
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    let pre = slot.and_then(|Extension(s)| s.take());
    ws.max_message_size(MAX_PAYLOAD * 2)
        .max_frame_size(MAX_PAYLOAD * 2)
        .on_upgrade(move |socket| async move { connection(g, socket, peer, pre).await })
}

/// What goes out on a connection: frames, then at most one close.
pub enum Out {
    Text(String),
    Close(u16, String),
    /// Answered once everything before it was written and flushed.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

/// After a `chat.send` answer went out, the run's events wait this long
/// more (for every client but Hearth's own): OpenClaw's TUI handles an
/// answer only after the events that arrive in the same read, and would
/// then take a finished run as still waiting (its spinner sticks).
const AFTER_ANSWER: Duration = Duration::from_millis(100);

/// Per-connection context handed to method handlers.
pub struct Conn {
    pub out: mpsc::Sender<Out>,
    /// Event sequence numbers of this connection.
    seq: AtomicU64,
    /// Runs whose events wait for this connection's `chat.send` answer.
    hold: tokio::sync::Mutex<Hold>,
    /// How long a run's events wait after its answer was flushed.
    settle: Duration,
}

#[derive(Default)]
struct Hold {
    /// Run id → answers still pending for it (a repeated `chat.send` of
    /// the same key holds the same run).
    runs: std::collections::HashMap<String, usize>,
    held: Vec<Arc<crate::events::Event>>,
}

/// Events held back for one connection at most (more are dropped, as for
/// a slow client).
const MAX_HELD: usize = 1024;

impl Conn {
    pub fn new(out: mpsc::Sender<Out>, settle: Duration) -> Conn {
        Conn {
            out,
            seq: AtomicU64::new(0),
            hold: Default::default(),
            settle,
        }
    }

    pub async fn send(&self, f: Frame) {
        let _ = self.out.send(Out::Text(f.to_text())).await;
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends an event, or holds it while its run's answer is pending.
    /// Sequence numbers are taken under the lock, so they go out in order.
    async fn forward(&self, e: Arc<crate::events::Event>) {
        let mut h = self.hold.lock().await;
        if e.run.as_deref().is_some_and(|r| h.runs.contains_key(r)) {
            if h.held.len() < MAX_HELD {
                h.held.push(e);
            }
            return;
        }
        let _ = self.out.send(Out::Text(e.frame(self.next_seq()))).await;
    }

    /// A `tick` event, numbered in order with the others.
    async fn tick(&self) {
        let _h = self.hold.lock().await;
        let f = Frame::event("tick", json!({"ts": now_ms()}), Some(self.next_seq()));
        let _ = self.out.send(Out::Text(f.to_text())).await;
    }

    /// Holds `run`'s events until [`release`](Self::release).
    pub async fn hold(&self, run: &str) {
        *self
            .hold
            .lock()
            .await
            .runs
            .entry(run.to_string())
            .or_default() += 1;
    }

    /// Sends `answer`, then the events of `run` held since
    /// [`hold`](Self::hold), once the answer is flushed and `settle` has
    /// passed. The lock is not held while waiting: other events go on.
    pub async fn release(&self, run: &str, answer: Frame) {
        let _ = self.out.send(Out::Text(answer.to_text())).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.out.send(Out::Flushed(tx)).await.is_ok() {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, rx).await;
            tokio::time::sleep(self.settle).await;
        }
        let mut h = self.hold.lock().await;
        match h.runs.get_mut(run) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return;
            }
            _ => {
                h.runs.remove(run);
            }
        }
        let held = std::mem::take(&mut h.held);
        for e in held {
            if e.run.as_deref() == Some(run) {
                let _ = self.out.send(Out::Text(e.frame(self.next_seq()))).await;
            } else {
                h.held.push(e);
            }
        }
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

/// Challenge, `connect`, token, authenticated slot. `None` when the client
/// was refused (it has been told why and the socket closed).
async fn sign_in(
    g: &Gateway,
    tx: &mut Sink,
    rx: &mut Stream,
    conn_id: &str,
    peer: SocketAddr,
    evicted: CancellationToken,
) -> Option<(OwnedSemaphorePermit, u64, String)> {
    let nonce = crate::store::new_id();
    let challenge = Frame::event(
        "connect.challenge",
        json!({"nonce": nonce, "ts": now_ms()}),
        None,
    );
    tx.send(Message::Text(challenge.to_text().into()))
        .await
        .ok()?;
    let first = tokio::select! {
        f = tokio::time::timeout(CONNECT_TIMEOUT, rx.next()) => f,
        _ = evicted.cancelled() => {
            let _ = close(tx, 1013, "too many connections are signing in; try again").await;
            return None;
        }
    };
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(Some(Ok(Message::Binary(_)))) => String::from("<binary>"),
        Ok(Some(Ok(Message::Close(f)))) => {
            let _ = close(tx, f.map_or(1000, |f| f.code), "bye").await;
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Ok(_))) => String::from("<control>"),
        Ok(Some(Err(_))) => {
            // Over the hard frame limit or a broken stream.
            let _ = close(tx, 1009, "frame too large").await;
            return None;
        }
        Err(_) => {
            let _ = close(tx, 1008, "handshake timeout").await;
            return None;
        }
    };
    let refuse = |shape: ErrorShape| (String::from("connect"), shape);
    let res = if text.len() > PRE_AUTH_MAX {
        Err((
            refuse(ErrorShape::invalid(format!(
                "frame exceeds the {PRE_AUTH_MAX}-byte limit before auth"
            ))),
            1009,
        ))
    } else {
        methods::handshake(g, &text, conn_id, &nonce, peer.ip())
            .await
            .map_err(|(id, shape, code)| ((id, shape), code))
    };
    let (hello, generation, client) = match res {
        Ok(h) => h,
        Err(((id, shape), code)) => {
            g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, code = %shape.code, "refused a gateway connection");
            if matches!(
                shape.code.as_str(),
                "AUTH_TOKEN_MISMATCH" | "AUTH_DEVICE_TOKEN_MISMATCH" | "NOT_PAIRED"
            ) {
                // a guesser gets one try a second per connection (and
                // `max_handshakes_per_peer` connections)
                tokio::time::sleep(AUTH_DELAY).await;
            }
            let _ = tx
                .send(Message::Text(
                    Frame::err(&id, shape.clone()).to_text().into(),
                ))
                .await;
            let _ = close(tx, code, &shape.message).await;
            return None;
        }
    };
    let Ok(permit) = g.conns.clone().try_acquire_owned() else {
        let e = ErrorShape::unavailable(format!(
            "the gateway has its {} connections; close one or try again later",
            g.cfg.gateway.max_connections
        ));
        let _ = tx
            .send(Message::Text(Frame::err("connect", e).to_text().into()))
            .await;
        let _ = close(tx, 1013, "too many connections").await;
        return None;
    };
    tx.send(Message::Text(hello.to_text().into())).await.ok()?;
    Some((permit, generation, client))
}

/// Sends what the handlers queue; a client that takes nothing for
/// [`WRITE_TIMEOUT`] is dropped. Ends after a close or when every sender
/// is gone.
async fn writer(mut tx: Sink, mut out: mpsc::Receiver<Out>, stop: CancellationToken) {
    while let Some(o) = out.recv().await {
        let r = match o {
            Out::Text(t) => tokio::time::timeout(WRITE_TIMEOUT, tx.send(Message::Text(t.into())))
                .await
                .map_err(|_| ())
                .and_then(|r| r.map_err(|_| ())),
            Out::Flushed(done) => {
                let r = tokio::time::timeout(WRITE_TIMEOUT, tx.flush()).await;
                let _ = done.send(());
                r.map_err(|_| ()).and_then(|r| r.map_err(|_| ()))
            }
            Out::Close(code, reason) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), close(&mut tx, code, &reason))
                    .await;
                break;
            }
        };
        if r.is_err() {
            break;
        }
    }
    stop.cancel();
}

async fn connection(
    g: Arc<Gateway>,
    socket: WebSocket,
    peer: SocketAddr,
    pre: Option<server::PreAuth>,
) {
    let conn_id = format!("c{}", g.next_conn.fetch_add(1, Ordering::Relaxed));
    let (mut tx, mut rx) = socket.split();
    let evicted = pre
        .as_ref()
        .map_or_else(CancellationToken::new, |p| p.evicted());
    let Some((_slot, generation, client)) =
        sign_in(&g, &mut tx, &mut rx, &conn_id, peer, evicted).await
    else {
        return;
    };
    drop(pre);
    g.stats.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, conn = %conn_id, "client connected");

    let (out_tx, out_rx) = mpsc::channel::<Out>(OUT_QUEUE);
    // Hearth's own clients take an answer before the frames after it
    let settle = if matches!(client.as_str(), "cli" | "hearth-console") {
        Duration::ZERO
    } else {
        AFTER_ANSWER
    };
    let conn = Arc::new(Conn::new(out_tx, settle));
    let stop = CancellationToken::new();
    let writer = tokio::spawn(writer(tx, out_rx, stop.clone()));
    let close = serve_connection(&g, &conn, &mut rx, &conn_id, generation, &stop).await;
    if let Some((code, reason)) = close {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            conn.out.send(Out::Close(code, reason)),
        )
        .await;
    }
    drop(conn);
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
    tracing::debug!(conn = %conn_id, "client disconnected");
}

/// The signed-in part of a connection: requests, events, ticks. Returns
/// the close frame to send, if any.
async fn serve_connection(
    g: &Arc<Gateway>,
    conn: &Arc<Conn>,
    rx: &mut Stream,
    conn_id: &str,
    generation: u64,
    stop: &CancellationToken,
) -> Option<(u16, String)> {
    let mut events = g.bus.subscribe();
    let mut token_gen = g.token_gen.subscribe();
    // rotated between the sign-in and this subscription: `changed` would
    // not fire for it
    if *token_gen.borrow_and_update() != generation {
        return Some((1008, "the gateway token was changed".to_string()));
    }
    let mut tick = tokio::time::interval(g.cfg.gateway.tick_interval);
    tick.tick().await;
    let inflight = Arc::new(Semaphore::new(g.cfg.gateway.max_inflight));
    let tasks = tokio_util::task::TaskTracker::new();
    let closed = CancellationToken::new();
    let close = loop {
        tokio::select! {
            _ = stop.cancelled() => break None,
            _ = g.shutdown.cancelled() => {
                conn.send(Frame::event("shutdown", json!({"reason": "gateway stopping", "restartExpectedMs": 5000}), None)).await;
                break Some((1012, "gateway stopping".to_string()));
            }
            r = token_gen.changed() => {
                if r.is_ok() && *token_gen.borrow() != generation {
                    tracing::info!(conn = %conn_id, "closing a connection signed in with a rotated token");
                    break Some((1008, "the gateway token was changed".to_string()));
                }
            }
            _ = tick.tick() => conn.tick().await,
            ev = events.recv() => match ev {
                Ok(e) => conn.forward(e).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(conn = %conn_id, skipped = n, "slow client missed events");
                }
                Err(_) => break None,
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => request(g, conn, &t, &inflight, &tasks, &closed).await,
                Some(Ok(Message::Binary(_))) => {
                    g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    conn.send(Frame::err("?", ErrorShape::invalid("binary frames are not supported; send JSON text"))).await;
                }
                // RFC 6455 §5.5.1: answer a close with a close.
                Some(Ok(Message::Close(f))) => {
                    break Some((f.map_or(1000, |f| f.code), String::new()));
                }
                None => break None,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    // (a client that went away without a close frame)
                    tracing::debug!(conn = %conn_id, "connection error: {e}");
                    break None;
                }
            },
        }
    };
    tasks.close();
    closed.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(200), tasks.wait()).await;
    close
}

/// One request frame: parsed, then run as its own task while the
/// connection has an in-flight slot for it.
async fn request(
    g: &Arc<Gateway>,
    conn: &Arc<Conn>,
    t: &str,
    inflight: &Arc<Semaphore>,
    tasks: &tokio_util::task::TaskTracker,
    closed: &CancellationToken,
) {
    g.stats.requests.fetch_add(1, Ordering::Relaxed);
    if t.len() > MAX_PAYLOAD {
        g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        let e = ErrorShape::invalid(format!("frame exceeds maxPayload ({MAX_PAYLOAD} bytes)"));
        return conn.send(Frame::err(&protocol::peek_id(t), e)).await;
    }
    let (id, method, params) = match protocol::parse_request(t) {
        Ok(r) => r,
        Err((id, shape)) => {
            g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            return conn.send(Frame::err(&id, shape)).await;
        }
    };
    let Ok(permit) = inflight.clone().try_acquire_owned() else {
        g.stats.busy.fetch_add(1, Ordering::Relaxed);
        let e = ErrorShape::unavailable(format!(
            "{} requests of this connection are still running; wait for their answers",
            g.cfg.gateway.max_inflight
        ));
        // Awaiting a full outbound queue here stops reading this client.
        return conn.send(Frame::err(&id, e)).await;
    };
    let (g2, c2, gone) = (g.clone(), conn.clone(), closed.clone());
    // A handler (e.g. agent.wait) ends with its connection.
    tasks.spawn(async move {
        let _permit = permit;
        tokio::select! {
            _ = gone.cancelled() => {}
            _ = methods::dispatch(&g2, &c2, id, method, params) => {}
        }
    });
}

/// Sends a close frame. After the client's close, the WebSocket layer has
/// already queued its answer and refuses another: flushing sends it.
async fn close(tx: &mut Sink, code: u16, reason: &str) -> Result<(), axum::Error> {
    let reason: String = reason.chars().take(100).collect();
    let sent = tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    let flushed = tx.flush().await;
    sent.or(flushed)
}

/// The agent a request names (`agentId`, `agent`), else the default.
pub(crate) fn agent_param(
    g: &Gateway,
    p: &Value,
) -> Result<crate::config::AgentConfig, ErrorShape> {
    let id = str_param(p, "agentId")
        .or_else(|| str_param(p, "agent"))
        .unwrap_or(&g.cfg.default_agent);
    g.cfg
        .agent(id)
        .cloned()
        .ok_or_else(|| ErrorShape::invalid(format!("no agent {id:?}")))
}

static RESTART: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the daemon of `g` to stop in order and start again
/// (`gateway.restart`, the console's setup page).
pub fn request_restart(g: &Gateway) {
    RESTART.store(true, std::sync::atomic::Ordering::SeqCst);
    g.restart.notify_one();
}

/// Whether the daemon stopped to start again ([`request_restart`]).
pub fn restart_requested() -> bool {
    RESTART.load(std::sync::atomic::Ordering::SeqCst)
}

/// The value of a JSON field as a string, for handlers.
pub fn str_param<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

pub(crate) fn blocking_err(e: impl std::fmt::Display) -> ErrorShape {
    tracing::error!("state database error: {e}");
    ErrorShape::unavailable("Hearth's state database had an error; see the log")
}

/// Runs store work on the blocking pool; its errors become `UNAVAILABLE`.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ErrorShape> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(blocking_err)?
        .map_err(blocking_err)
}
