//! The listener: TCP accept, the limits that hold before a client has
//! authenticated, HTTP/1 with a header-read timeout, the Host check.
//!
//! A connection holds a *pre-auth slot* from accept until its WebSocket
//! `connect` succeeds (then it takes an authenticated slot instead) or it
//! closes. Pre-auth slots are limited over all (`max_handshakes`) and, for
//! peers off loopback, per address (`max_handshakes_per_peer`); a connection
//! over either limit is closed at once. Together with the header-read and
//! `connect` timeouts this bounds what an unauthenticated peer can hold,
//! and a signed-in client never waits for a slot strangers are using.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Gateway;

/// A client must send its request headers within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long HTTP connections get to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// Connections per peer address before authentication.
pub struct PeerCounts {
    map: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PeerCounts {
    pub fn new(max: usize) -> Arc<PeerCounts> {
        Arc::new(PeerCounts {
            map: Mutex::new(HashMap::new()),
            max,
        })
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// Addresses with a connection in the handshake now (for tests/status).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.counts.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What an unauthenticated connection holds.
pub struct PreAuth {
    _global: OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
}

/// The pre-auth slot of a connection, handed to the WebSocket upgrade in
/// the request's extensions (the HTTP task ends at the upgrade).
#[derive(Clone)]
pub struct PreAuthSlot(Arc<Mutex<Option<PreAuth>>>);

impl PreAuthSlot {
    pub fn take(&self) -> Option<PreAuth> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The address a client connected to (the Host check accepts it).
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub Option<SocketAddr>);

impl Gateway {
    /// A pre-auth slot for a new connection from `ip`, or `None` when the
    /// limits are reached.
    fn admit(&self, ip: IpAddr) -> Option<PreAuth> {
        let global = self.pre_auth.clone().try_acquire_owned().ok()?;
        let peer = if ip.is_loopback() {
            None
        } else {
            Some(self.peers.take(ip)?)
        };
        Some(PreAuth {
            _global: global,
            _peer: peer,
        })
    }
}

/// Accepts connections until `stop`, then lets HTTP exchanges finish
/// briefly. WebSocket connections end on the gateway's shutdown token.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, stop: CancellationToken) {
    let router = gw.router();
    let tracker = TaskTracker::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("gateway: cannot accept a connection: {e}");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        let Some(slot) = gw.admit(peer.ip()) else {
            gw.stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused, "gateway: too many connections that have not signed in; closing new ones");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let local = LocalAddr(tcp.local_addr().ok());
        let (gw, router, stop) = (gw.clone(), router.clone(), stop.clone());
        tracker.spawn(async move {
            http_connection(tcp, peer, local, slot, gw, router, stop).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(HTTP_DRAIN * 2, tracker.wait()).await;
}

async fn http_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    local: LocalAddr,
    slot: PreAuth,
    gw: Arc<Gateway>,
    router: axum::Router,
    stop: CancellationToken,
) {
    let slot = PreAuthSlot(Arc::new(Mutex::new(Some(slot))));
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(local);
        req.extensions_mut().insert(slot.clone());
        let refused = host_refused(&gw, &req, local);
        let mut router = router.clone();
        async move {
            if let Some(r) = refused {
                return Ok::<_, Infallible>(r);
            }
            tower_service::Service::call(&mut router, req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HTTP_DRAIN, conn).await;
        }
    }
}

/// 403 unless the Host header names this gateway (`GET /health` is open).
fn host_refused<B>(gw: &Gateway, req: &Request<B>, local: LocalAddr) -> Option<Response<Body>> {
    if req.uri().path() == "/health" {
        return None;
    }
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if gw.hosts.allows(host, local.0.map(|a| a.ip())) {
        return None;
    }
    gw.stats
        .bad_hosts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        host = host.unwrap_or("<none>"),
        "refused a request whose Host header does not name this gateway (DNS rebinding?); add the name to [gateway] hostnames if it is yours"
    );
    let mut r = Response::new(Body::from(
        "403: the Host header does not name this gateway; add it to [gateway] hostnames\n",
    ));
    *r.status_mut() = StatusCode::FORBIDDEN;
    Some(r)
}
