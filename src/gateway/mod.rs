//! The gateway: WebSocket (OpenClaw gateway protocol v4) and HTTP on one port.
//!
//! Connection life: Origin check at the upgrade → `connect.challenge` event →
//! the first frame must be `connect` (else `INVALID_REQUEST`, close 1008;
//! wrong token `AUTH_TOKEN_MISMATCH`, close 1008; protocol `PROTOCOL_MISMATCH`,
//! close 1002) → `hello-ok` → requests, events and `tick`s. Frames before auth
//! are limited to 64 KiB; after, to `policy.maxPayload`. A bad frame gets an
//! error response; nothing a client sends can take the daemon down.

pub mod ingest;
pub mod methods;
pub mod protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
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
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    conns: Arc<Semaphore>,
    next_conn: AtomicU64,
    pub stats: Stats,
    /// The MQTT channel, when configured (status, `devices.list`).
    pub mqtt: std::sync::OnceLock<Arc<crate::mqtt::client::Mqtt>>,
}

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        queue: Queue,
        bus: EventBus,
        providers: Providers,
        state_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> Arc<Gateway> {
        let memory = crate::memory::service::Memory::new(
            &state_dir,
            cfg.memory.clone(),
            cfg.models.clone(),
            Some(queue.store().clone()),
        );
        Gateway::with_memory(cfg, queue, bus, providers, state_dir, memory, shutdown)
    }

    /// As [`new`](Self::new), sharing the agents' memory handle.
    pub fn with_memory(
        cfg: Arc<Config>,
        queue: Queue,
        bus: EventBus,
        providers: Providers,
        state_dir: PathBuf,
        memory: crate::memory::service::Memory,
        shutdown: CancellationToken,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            memory,
            conns: Arc::new(Semaphore::new(cfg.gateway.max_connections)),
            cfg,
            queue,
            bus,
            providers,
            state_dir,
            started: Instant::now(),
            shutdown,
            next_conn: AtomicU64::new(1),
            stats: Stats::default(),
            mqtt: std::sync::OnceLock::new(),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(root))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
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
    let s = &g.stats;
    let text = format!(
        "# TYPE hearth_uptime_seconds gauge\nhearth_uptime_seconds {}\n\
# TYPE hearth_runs_running gauge\nhearth_runs_running {running}\n\
# TYPE hearth_messages_pending gauge\nhearth_messages_pending {pending}\n\
# TYPE hearth_ws_connections_total counter\nhearth_ws_connections_total {}\n\
# TYPE hearth_ws_requests_total counter\nhearth_ws_requests_total {}\n\
# TYPE hearth_ws_bad_frames_total counter\nhearth_ws_bad_frames_total {}\n",
        g.started.elapsed().as_secs(),
        s.connections.load(Ordering::Relaxed),
        s.requests.load(Ordering::Relaxed),
        s.bad_frames.load(Ordering::Relaxed),
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

const CONSOLE: &str = "<!doctype html><meta charset=utf-8><title>Hearth</title>\
<h1>Hearth</h1><p>The gateway is running. Talk to it with <code>hearth chat</code> \
or any OpenClaw gateway-protocol v4 client on this address.</p>";

async fn root(
    State(g): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return Html(CONSOLE).into_response();
    };
    if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !origin_allowed(origin, host, &g.cfg.gateway.allowed_origins) {
            tracing::warn!(%peer, origin, "refused a browser WebSocket from a foreign origin");
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    let Ok(permit) = g.conns.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    };
    ws.max_message_size(MAX_PAYLOAD * 2)
        .max_frame_size(MAX_PAYLOAD * 2)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            connection(g, socket, peer).await
        })
}

/// A browser origin may open the socket only if it is the gateway's own
/// origin (same host:port) or explicitly configured.
pub fn origin_allowed(origin: &str, host: &str, extra: &[String]) -> bool {
    if extra.iter().any(|o| o == origin) {
        return true;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!(rest, Some(h) if !host.is_empty() && h.eq_ignore_ascii_case(host))
}

/// Per-connection context handed to method handlers.
pub struct Conn {
    pub out: mpsc::Sender<String>,
}

impl Conn {
    pub async fn send(&self, f: Frame) {
        let _ = self.out.send(f.to_text()).await;
    }
}

async fn connection(g: Arc<Gateway>, socket: WebSocket, peer: SocketAddr) {
    g.stats.connections.fetch_add(1, Ordering::Relaxed);
    let conn_id = format!("c{}", g.next_conn.fetch_add(1, Ordering::Relaxed));
    let (mut tx, mut rx) = socket.split();
    let nonce = crate::store::new_id();
    let challenge = Frame::event(
        "connect.challenge",
        json!({"nonce": nonce, "ts": now_ms()}),
        None,
    );
    if tx
        .send(Message::Text(challenge.to_text().into()))
        .await
        .is_err()
    {
        return;
    }

    // Handshake.
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.next()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(Some(Ok(Message::Binary(_)))) => String::from("<binary>"),
        Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return,
        Ok(Some(Ok(_))) => String::from("<control>"),
        Ok(Some(Err(_))) => {
            // Over the hard frame limit or a broken stream.
            let _ = close(&mut tx, 1009, "frame too large").await;
            return;
        }
        Err(_) => {
            let _ = close(&mut tx, 1008, "handshake timeout").await;
            return;
        }
    };
    if text.len() > PRE_AUTH_MAX {
        g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        let f = Frame::err(
            "connect",
            ErrorShape::invalid(format!(
                "frame exceeds the {PRE_AUTH_MAX}-byte limit before auth"
            )),
        );
        let _ = tx.send(Message::Text(f.to_text().into())).await;
        let _ = close(&mut tx, 1009, "frame too large").await;
        return;
    }
    let hello = match methods::handshake(&g, &text, &conn_id, peer) {
        Ok(h) => h,
        Err((id, shape, code)) => {
            g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, code = %shape.code, "refused a gateway connection");
            let _ = tx
                .send(Message::Text(
                    Frame::err(&id, shape.clone()).to_text().into(),
                ))
                .await;
            let _ = close(&mut tx, code, &shape.message).await;
            return;
        }
    };
    if tx
        .send(Message::Text(hello.to_text().into()))
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(%peer, conn = %conn_id, "client connected");

    // Writer task: everything outbound goes through one bounded channel.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let conn = Arc::new(Conn { out: out_tx });
    let mut events = g.bus.subscribe();
    let mut tick = tokio::time::interval(g.cfg.gateway.tick_interval);
    tick.tick().await;
    let seq = AtomicU64::new(0);
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = CancellationToken::new();
    let closed = CancellationToken::new();
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while let Some(t) = out_rx.recv().await {
                if tx.send(Message::Text(t.into())).await.is_err() {
                    break;
                }
            }
            stop.cancel();
            tx
        })
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = g.shutdown.cancelled() => {
                conn.send(Frame::event("shutdown", json!({"reason": "gateway stopping", "restartExpectedMs": 5000}), None)).await;
                break;
            }
            _ = tick.tick() => {
                let s = seq.fetch_add(1, Ordering::Relaxed) + 1;
                conn.send(Frame::event("tick", json!({"ts": now_ms()}), Some(s))).await;
            }
            ev = events.recv() => match ev {
                Ok(e) => {
                    let s = seq.fetch_add(1, Ordering::Relaxed) + 1;
                    let _ = conn.out.send(e.frame(s)).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(conn = %conn_id, skipped = n, "slow client missed events");
                }
                Err(_) => break,
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    g.stats.requests.fetch_add(1, Ordering::Relaxed);
                    if t.len() > MAX_PAYLOAD {
                        g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                        conn.send(Frame::err(&protocol::peek_id(&t), ErrorShape::invalid(format!("frame exceeds maxPayload ({MAX_PAYLOAD} bytes)")))).await;
                        continue;
                    }
                    match protocol::parse_request(&t) {
                        Ok((id, method, params)) => {
                            let (g2, c2, gone) = (g.clone(), conn.clone(), closed.clone());
                            // A handler (e.g. agent.wait) ends with its connection.
                            tasks.spawn(async move {
                                tokio::select! {
                                    _ = gone.cancelled() => {}
                                    _ = methods::dispatch(&g2, &c2, id, method, params) => {}
                                }
                            });
                        }
                        Err((id, shape)) => {
                            g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                            conn.send(Frame::err(&id, shape)).await;
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    g.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    conn.send(Frame::err("?", ErrorShape::invalid("binary frames are not supported; send JSON text"))).await;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::info!(conn = %conn_id, "connection error: {e}");
                    break;
                }
            },
        }
    }
    tasks.close();
    closed.cancel();
    drop(conn);
    let _ = tokio::time::timeout(Duration::from_millis(200), tasks.wait()).await;
    if let Ok(Ok(mut tx)) = tokio::time::timeout(Duration::from_secs(1), writer).await {
        let code = if g.shutdown.is_cancelled() {
            1012
        } else {
            1000
        };
        let _ = close(&mut tx, code, "bye").await;
    }
    tracing::debug!(conn = %conn_id, "client disconnected");
}

async fn close(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) -> Result<(), axum::Error> {
    let reason: String = reason.chars().take(100).collect();
    tx.send(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    })))
    .await?;
    tx.flush().await
}

/// The value of a JSON field as a string, for handlers.
pub fn str_param<'a>(p: &'a Value, k: &str) -> Option<&'a str> {
    p.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins() {
        use super::origin_allowed as ok;
        assert!(ok("http://127.0.0.1:18789", "127.0.0.1:18789", &[]));
        assert!(!ok("https://evil.example", "127.0.0.1:18789", &[]));
        assert!(!ok("http://localhost:3000", "127.0.0.1:18789", &[]));
        assert!(ok("https://ha.local", "x", &["https://ha.local".into()]));
        assert!(!ok("null", "127.0.0.1:18789", &[]));
    }
}
