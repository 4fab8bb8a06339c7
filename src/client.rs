//! A small gateway client (protocol v4) used by `hearth chat` / `hearth status`
//! and by the integration tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to the gateway at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the gateway refused the connection: {code}: {message}")]
    Refused { code: String, message: String },
    /// The gateway's message; its code (`INVALID_REQUEST`, ...) is for
    /// programs (`hearth --verbose` prints it too).
    #[error("{}", if message.is_empty() { code } else { message })]
    Rpc { code: String, message: String },
    #[error("the connection to the gateway closed")]
    Closed,
    #[error("the gateway sent something unexpected: {0}")]
    Protocol(String),
}

type Pending = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Result<Value, ClientError>>>>>;

pub struct Client {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next: AtomicU64,
    /// Every event frame (`{event, payload, seq}`) the gateway sends.
    pub events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    pub hello: Value,
    /// Events a `wait_event` call skipped, kept for later calls (bounded).
    backlog: Mutex<std::collections::VecDeque<Value>>,
    closed: oneshot::Receiver<()>,
}

impl Client {
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let cerr = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| cerr("timed out".into()))?
        .map_err(|e| cerr(e.to_string()))?;
        let (mut tx, mut rx) = ws.split();
        // connect.challenge first
        let first = next_json(&mut rx).await?;
        if first["event"] != "connect.challenge" {
            return Err(ClientError::Protocol("no connect.challenge".into()));
        }
        let mut params = json!({
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "cli", "version": crate::VERSION, "platform": std::env::consts::OS, "mode": "cli"},
            "role": "operator", "scopes": ["operator.admin"],
        });
        if let Some(t) = token {
            params["auth"] = json!({"token": t});
        }
        let req = json!({"type": "req", "id": "connect", "method": "connect", "params": params});
        tx.send(Message::Text(req.to_string().into()))
            .await
            .map_err(|_| ClientError::Closed)?;
        let hello = next_json(&mut rx).await?;
        if hello["ok"] != true {
            return Err(ClientError::Refused {
                code: hello["error"]["code"].as_str().unwrap_or("?").into(),
                message: hello["error"]["message"].as_str().unwrap_or("").into(),
            });
        }
        let pending: Pending = Arc::default();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (closed_tx, closed_rx) = oneshot::channel();
        let p2 = pending.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => if tx.send(m).await.is_err() { break },
                        None => { let _ = tx.close().await; break }
                    },
                    m = rx.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                            match v["type"].as_str() {
                                Some("event") => { let _ = ev_tx.send(v); }
                                Some("res") => {
                                    let id = v["id"].as_str().unwrap_or("").to_string();
                                    let r = if v["ok"] == true {
                                        Ok(v["payload"].clone())
                                    } else {
                                        Err(ClientError::Rpc {
                                            code: v["error"]["code"].as_str().unwrap_or("?").into(),
                                            message: v["error"]["message"].as_str().unwrap_or("").into(),
                                        })
                                    };
                                    if let Some(s) = p2.lock().unwrap().get(&id) { let _ = s.send(r); }
                                }
                                _ => {}
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    }
                }
            }
            p2.lock().unwrap().clear();
            let _ = closed_tx.send(());
        });
        Ok(Client {
            out: out_tx,
            pending,
            next: AtomicU64::new(1),
            events: tokio::sync::Mutex::new(ev_rx),
            hello: hello["payload"].clone(),
            backlog: Mutex::default(),
            closed: closed_rx,
        })
    }

    /// Says goodbye with a close frame and waits (at most 2 s) for the
    /// gateway's close, so that neither side sees a reset connection.
    pub async fn close(self) {
        if self.out.send(Message::Close(None)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.closed).await;
        }
    }

    /// Sends a request; the receiver yields every response with its id
    /// (`agent` answers twice).
    pub fn start(
        &self,
        method: &str,
        params: Value,
    ) -> Result<mpsc::UnboundedReceiver<Result<Value, ClientError>>, ClientError> {
        let id = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().insert(id.clone(), tx);
        let req = json!({"type": "req", "id": id, "method": method, "params": params});
        self.out
            .send(Message::Text(req.to_string().into()))
            .map_err(|_| ClientError::Closed)?;
        Ok(rx)
    }

    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let mut rx = self.start(method, params)?;
        rx.recv().await.unwrap_or(Err(ClientError::Closed))
    }

    /// Waits for the next event named `name` matching `pred`.
    pub async fn wait_event(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let hit = |e: &Value| e["event"] == name && pred(&e["payload"]);
        let from_backlog = || {
            let mut b = self.backlog.lock().unwrap();
            b.iter()
                .position(hit)
                .and_then(|i| b.remove(i))
                .map(|e| e["payload"].clone())
        };
        if let Some(p) = from_backlog() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ev = tokio::time::timeout_at(deadline, self.events.lock())
            .await
            .ok()?;
        // Another waiter may have parked our event while we waited for the lock.
        if let Some(p) = from_backlog() {
            return Some(p);
        }
        loop {
            let e = tokio::time::timeout_at(deadline, ev.recv()).await.ok()??;
            if hit(&e) {
                return Some(e["payload"].clone());
            }
            if e["event"] != "tick" {
                let mut b = self.backlog.lock().unwrap();
                if b.len() >= 1000 {
                    b.pop_front();
                }
                b.push_back(e);
            }
        }
    }
}

async fn next_json<S>(rx: &mut S) -> Result<Value, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
            Err(_) => {
                return Err(ClientError::Protocol(
                    "timed out during the handshake".into(),
                ))
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(&t).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                return Err(ClientError::Refused {
                    code: f
                        .as_ref()
                        .map(|f| u16::from(f.code).to_string())
                        .unwrap_or_default(),
                    message: f.map(|f| f.reason.to_string()).unwrap_or_default(),
                })
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Err(ClientError::Closed),
        }
    }
}
