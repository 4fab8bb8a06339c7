//! The listener: TCP accept, the limits that hold before a client has
//! authenticated, HTTP/1 with a header-read timeout, the Host check.
//!
//! A connection holds a *pre-auth slot* from accept until its WebSocket
//! `connect` succeeds (then it takes an authenticated slot instead) or it
//! closes. Peers off loopback get at most `max_handshakes_per_peer` (per
//! address; IPv6 per /64): more are closed at once. Over all there are
//! `max_handshakes` slots; when they are full, the oldest unauthenticated
//! connection is closed to make room, so a newcomer (the owner) always gets
//! its turn. HTTP requests close their connection after the response (no
//! keep-alive before sign-in), headers must arrive within
//! [`HEADER_TIMEOUT`] and `connect` within the gateway's connect timeout:
//! a stranger holds a slot for seconds, and never a signed-in client's.

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
        let ip = peer_key(ip);
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

/// The address a per-peer limit counts: IPv4 as it is, IPv6 by its /64
/// (one home network hands out many addresses per host).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The unauthenticated connections, oldest first.
pub struct PreAuthPool {
    inner: Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
    max: usize,
}

impl PreAuthPool {
    pub fn new(max: usize) -> Arc<PreAuthPool> {
        Arc::new(PreAuthPool {
            inner: Mutex::new((0, Default::default())),
            max,
        })
    }

    /// A slot for a new connection; when all are taken, the oldest holder
    /// is told to go (its token is cancelled). Returns whether one was.
    fn admit(self: &Arc<Self>) -> (PoolSlot, CancellationToken, bool) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        while g.1.len() >= self.max {
            if let Some((_, t)) = g.1.pop_front() {
                t.cancel();
                evicted = true;
            }
        }
        g.0 += 1;
        let id = g.0;
        let t = CancellationToken::new();
        g.1.push_back((id, t.clone()));
        (
            PoolSlot {
                pool: self.clone(),
                id,
            },
            t,
            evicted,
        )
    }

    /// Connections holding a slot now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct PoolSlot {
    pool: Arc<PreAuthPool>,
    id: u64,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        let mut g = self.pool.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = g.1.iter().position(|(id, _)| *id == self.id) {
            g.1.remove(i);
        }
    }
}

/// What an unauthenticated connection holds.
pub struct PreAuth {
    _slot: PoolSlot,
    _peer: Option<PeerSlot>,
    evicted: CancellationToken,
}

impl PreAuth {
    /// Cancelled when the connection must make room for a newer one.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }
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
        let peer = if ip.to_canonical().is_loopback() {
            None
        } else {
            Some(self.peers.take(ip)?)
        };
        let (slot, evicted, made_room) = self.pre_auth.admit();
        if made_room {
            self.stats
                .evicted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(PreAuth {
            _slot: slot,
            _peer: peer,
            evicted,
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
    let evicted = slot.evicted();
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
            let mut r = tower_service::Service::call(&mut router, req).await?;
            // no keep-alive before sign-in: one request per connection
            // (an upgrade answers 101 and keeps it)
            if r.status() != StatusCode::SWITCHING_PROTOCOLS {
                r.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok(r)
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
        // the WebSocket handshake has its own copy of the token
        _ = evicted.cancelled() => {}
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
    let n = gw
        .stats
        .bad_hosts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    // 1, 2, 4, 8 ...: a flood does not flood the log
    if n.is_power_of_two() {
        tracing::warn!(
            host = host.unwrap_or("<none>"),
            refused = n,
            "refused a request whose Host header does not name this gateway (DNS rebinding?); add the name to [gateway] hostnames if it is yours"
        );
    }
    let mut r = Response::new(Body::from(
        "403: the Host header does not name this gateway; add it to [gateway] hostnames\n",
    ));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    Some(r)
}
