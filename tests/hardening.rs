//! Regression tests for the holes an adversarial review of 5b0ef1f found
//! in the gateway (issue 13, items 1-5 and 12). Each runs against the real
//! daemon on loopback, as the holes were found.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn port(d: &Daemon) -> u16 {
    d.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One HTTP/1.1 request with this Host header; returns the status code.
fn http_status(port: u16, path: &str, host: &str, extra: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A WebSocket upgrade with these headers (Host replaced); the HTTP status
/// of a refusal, or 101.
async fn ws_upgrade(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

fn connect_frame(token: Option<&str>) -> String {
    let mut p = json!({"minProtocol": 4, "maxProtocol": 4,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "test"}});
    if let Some(t) = token {
        p["auth"] = json!({"token": t});
    }
    json!({"type": "req", "id": "c1", "method": "connect", "params": p}).to_string()
}

/// Challenge, connect with `token`; the hello (or error) frame.
async fn sign_in(ws: &mut Ws, token: Option<&str>) -> Value {
    let ch = next_json(ws).await.expect("challenge");
    assert_eq!(ch["event"], "connect.challenge");
    ws.send(Message::Text(connect_frame(token).into()))
        .await
        .unwrap();
    next_json(ws).await.expect("hello or error")
}

/// Item 1: a DNS-rebinding page has its own domain in Host (and Origin).
#[tokio::test]
async fn dns_rebinding_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let p = port(&d);
    let evil = format!("rebind.evil.example:{p}");
    assert_eq!(http_status(p, "/", &evil, ""), 403);
    assert_eq!(http_status(p, "/metrics", &evil, ""), 403);
    assert_eq!(http_status(p, "/", "localhost.evil.example", ""), 403);
    // /health stays open; the gateway's own names work.
    assert_eq!(http_status(p, "/health", &evil, ""), 200);
    assert_eq!(http_status(p, "/", &format!("localhost:{p}"), ""), 200);
    assert_eq!(http_status(p, "/", &format!("127.0.0.1:{p}"), ""), 200);
    // (`gateway.hostnames` adds names: the unit tests in gateway::auth)
    // The WebSocket upgrade of the rebinding page: Origin = http:// + Host.
    let origin = format!("http://{evil}");
    let r = ws_upgrade(&d.url, &[("host", &evil), ("origin", &origin)]).await;
    assert_eq!(r.err(), Some(403));
    // The same page on the gateway's own name still has to sign in.
    let own = format!("localhost:{p}");
    let mut ws = ws_upgrade(
        &d.url,
        &[("host", &own), ("origin", &format!("http://{own}"))],
    )
    .await
    .expect("same-origin upgrade");
    let e = sign_in(&mut ws, None).await;
    assert_eq!(e["error"]["code"], "AUTH_TOKEN_MISMATCH", "{e}");
    assert!(d.log().contains("does not name this gateway"));
}

/// Item 1: a token always exists; loopback clients and browsers sign in.
#[tokio::test]
async fn a_token_always_exists_and_is_required() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let file = d.state.join("gateway.token");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let token = d.token();
    assert_eq!(token.len(), 64);
    let log = d.log();
    assert!(log.contains(file.to_str().unwrap()), "{log}");
    assert!(!log.contains(&token), "the token is in the log");

    // Loopback without a token: refused (5b0ef1f let it in).
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    let e = sign_in(&mut ws, None).await;
    assert_eq!(e["error"]["code"], "AUTH_TOKEN_MISMATCH", "{e}");
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut ws, Some(&token)).await["ok"], true);
    // A browser (Origin) on loopback, same origin: needs it too.
    let own = d.http();
    let mut ws = ws_upgrade(&d.url, &[("origin", &own)]).await.unwrap();
    assert_eq!(
        sign_in(&mut ws, None).await["error"]["code"],
        "AUTH_TOKEN_MISMATCH"
    );

    // `hearth token` prints it; --rotate replaces it and the daemon closes
    // the connections signed in with the old one.
    let hearth = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--state-dir")
            .arg(&d.state)
            .arg("--config")
            .arg(&d.config)
            .env_remove("HEARTH_GATEWAY_TOKEN")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(hearth(&["token"]), token);
    let mut old = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut old, Some(&token)).await["ok"], true);
    let new = hearth(&["token", "--rotate"]);
    assert_ne!(new, token);
    assert_eq!(new.len(), 64);
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), old.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("the old connection was not closed: {other:?}"),
        }
    };
    assert_eq!(closed, Some(1008));
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(
        sign_in(&mut ws, Some(&token)).await["error"]["code"],
        "AUTH_TOKEN_MISMATCH"
    );
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut ws, Some(&new)).await["ok"], true);
    assert!(!d.log().contains(&new));
}

/// Item 2: requests in flight per connection and waiters are bounded; a
/// flood neither grows memory without bound nor keeps it after close.
#[tokio::test]
async fn request_floods_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let token = d.token();
    let pid = d.pid();
    // agent.wait for a run that never ends: the first 32 wait, the rest are
    // told to retry at once.
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut ws, Some(&token)).await["ok"], true);
    for i in 0..200 {
        let f = json!({"type":"req","id":format!("w{i}"),"method":"agent.wait",
                       "params":{"runId":"no-such-run","timeoutMs":600000}});
        ws.send(Message::Text(f.to_string().into())).await.unwrap();
    }
    let mut busy = 0;
    while busy < 168 {
        let r = next_json(&mut ws).await.expect("an answer");
        if r["type"] != "res" {
            continue;
        }
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], "UNAVAILABLE");
        assert_eq!(r["error"]["retryable"], true);
        busy += 1;
    }
    drop(ws);

    // `status` as fast as possible without reading a single answer.
    let before = rss_kb(pid);
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut ws, Some(&token)).await["ok"], true);
    let (mut tx, rx) = ws.split();
    let flood = tokio::spawn(async move {
        let f = json!({"type":"req","id":"s","method":"status"}).to_string();
        let mut sent = 0;
        for _ in 0..100_000 {
            if tx.send(Message::Text(f.clone().into())).await.is_err() {
                break;
            }
            sent += 1;
        }
        (tx, sent)
    });
    let mut peak = before;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) && !flood.is_finished() {
        peak = peak.max(rss_kb(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = if flood.is_finished() {
        format!("all {} sent", flood.await.unwrap().1)
    } else {
        flood.abort();
        "the gateway stopped reading".into()
    };
    println!("flood: {sent} after {:?}", t0.elapsed());
    drop(rx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid);
    println!(
        "RSS before {} MiB, peak during the flood {} MiB, 2 s after close {} MiB",
        before / 1024,
        peak / 1024,
        after / 1024
    );
    // 5b0ef1f: 19 MB → 971 MB in 7 s, and it stayed.
    assert!(peak < before + 64 * 1024, "peak {peak} KiB from {before}");
    assert!(after < before + 32 * 1024, "after close {after} KiB");
    let c = d.client().await;
    assert_eq!(c.request("health", json!({})).await.unwrap()["ok"], true);
}

/// Item 3: half-sent HTTP requests time out; they and idle handshakes
/// cannot lock the owner out.
#[tokio::test]
async fn unauthenticated_peers_cannot_lock_the_owner_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let p = port(&d);
    // 100 WebSocket handshakes that never send `connect`, more than the 64
    // pre-auth slots (5b0ef1f: the 33rd client, the owner, got 503).
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(ws_upgrade(&d.url, &[]).await.expect("upgrade"));
    }
    let c = d.client().await;
    assert_eq!(c.request("health", json!({})).await.unwrap()["ok"], true);
    // An HTTP connection before sign-in serves one request, then closes.
    let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut first = Vec::new();
    s.read_to_end(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));
    // 300 half-sent HTTP requests: past the pre-auth limit they are closed
    // at once, the others after the header timeout.
    let mut half = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localh");
        half.push(s);
    }
    let t0 = Instant::now();
    for mut s in half {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = Vec::new();
        // EOF or a reset, not a timeout.
        match s.read_to_end(&mut b) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() == std::io::ErrorKind::ConnectionReset,
                "a half-sent request was kept open: {e}"
            ),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(12));
    // The idle handshakes were closed: by the connect timeout (1008), or
    // to make room for newer connections (1013), or at once.
    for mut ws in idle {
        let f = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(None | Some(Err(_))) => break None,
                Err(_) => panic!("an idle handshake was kept"),
            }
        };
        assert!(matches!(f, Some(1008 | 1013) | None), "{f:?}");
    }
    // The owner's connection is still there, and new ones get in.
    assert_eq!(c.request("health", json!({})).await.unwrap()["ok"], true);
    let c2 = d.client().await;
    assert_eq!(c2.request("health", json!({})).await.unwrap()["ok"], true);
}

/// Item 4: a client's close frame is answered with a close frame.
#[tokio::test]
async fn a_close_frame_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let mut ws = ws_upgrade(&d.url, &[]).await.unwrap();
    assert_eq!(sign_in(&mut ws, Some(&d.token())).await["ok"], true);
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "bye".into(),
        },
    )))
    .await
    .unwrap();
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame back (a client sees 1006): {other:?}"),
        }
    };
    assert_eq!(got.map(|f| u16::from(f.code)), Some(1000));
}

fn validate(dir: &std::path::Path, toml: &str) -> (bool, String) {
    let f = dir.join("check.toml");
    std::fs::write(&f, toml).unwrap();
    let out = Command::new(bin())
        .args(["config", "validate", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 5: configs that passed `validate` and then crashed `serve`.
#[tokio::test]
async fn configs_that_validate_start() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        (
            "[gateway]\nmax_connections = 2305843009213693952\n",
            "gateway.max_connections",
        ),
        (
            "[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\ntimeout_secs = 9223372036854775807\n[agents.defaults]\nmodel = \"x/m\"\n",
            "providers.x.timeout_secs",
        ),
        ("[agents.defaults]\nworkspace = \"\"\n", "agents.defaults.workspace"),
        (
            "[[agents.list]]\nid = \"a\"\nworkspace = \"relative/ws\"\n",
            "agents.list[0].workspace",
        ),
        ("[gateway]\nmax_inflight = 0\n", "gateway.max_inflight"),
        ("[agents.defaults]\nrun_timeout_secs = 18446744073709551\n", "run_timeout_secs"),
        ("[messages.queue]\ndebounce_ms = 99999999999\n", "messages.queue.debounce_ms"),
        ("[models]\nthreads = 100000\n", "models.threads"),
        ("[gateway]\ntoken = \"1234\"\n", "gateway.token"),
    ] {
        let (ok, err) = validate(dir.path(), toml);
        assert!(!ok, "validated: {toml}");
        assert!(err.contains(key), "{key} not named: {err}");
    }
    // Every number at the top of its range validates, and then serves: the
    // daemon starts and answers a chat through a provider with the longest
    // timeout.
    let fake = FakeOpenAi::start().await;
    let extra = "[gateway]\nmax_connections = 1024\nmax_handshakes = 1024\nmax_handshakes_per_peer = 1024\nmax_inflight = 1024\ntick_interval_ms = 3600000\n\
                 [session]\nrun_retention_days = 3650\n[messages.queue]\ndebounce_ms = 600000\ncap = 1000\nmode = \"followup\"\n\
                 [models]\nthreads = 64\nmemory_mb = 65536\ncontext_tokens = 4096\nmax_tokens = 4096\n";
    let cfg = config_with(&fake.url, extra).replace(
        "api_key = \"sk-test-secret-key\"",
        "api_key = \"sk-test-secret-key\"\ntimeout_secs = 3600\nmax_tokens = 1000000\ncontext_window = 100000000",
    ).replace("max_concurrent = 4", "max_concurrent = 64\nmax_steps = 1000\nrun_timeout_secs = 86400\ntool_timeout_secs = 3600");
    let (ok, err) = validate(dir.path(), &cfg);
    assert!(ok, "{err}");
    let d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    send(&c, "main", "at the limits", "lim-1").await;
    let t = terminal(&c, "lim-1").await;
    assert_eq!(text_of(&t), "echo: at the limits", "{t}");
}

/// Item 12: every stage of the stop fits the unit's TimeoutStopSec.
#[test]
fn the_stop_budget_fits_the_unit() {
    use hearth::daemon::*;
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/hearth.service"
    ))
    .unwrap();
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec in the unit")
        .trim()
        .parse()
        .unwrap();
    let stages = DRAIN_DEADLINE + CUT_WAIT + CHANNEL_STOP + SERVER_STOP;
    assert!(stages <= STOP_BUDGET, "{stages:?} > {STOP_BUDGET:?}");
    assert!(
        STOP_BUDGET + Duration::from_secs(3) <= Duration::from_secs(stop),
        "the budget leaves no room below TimeoutStopSec={stop}"
    );
}

async fn until_running(c: &Client) {
    let t0 = Instant::now();
    while c.request("status", json!({})).await.unwrap()["queue"]["running"] != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the run did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 12, measured: a run that never ends is cut, and the daemon exits
/// within the budget.
#[tokio::test]
async fn a_hung_run_does_not_outlast_the_stop_budget() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    send(&c, "main", "[slow:100000] never ends", "hung-1").await;
    until_running(&c).await;
    let t0 = Instant::now();
    let code = tokio::task::spawn_blocking(move || d.term()).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(code, Some(0));
    println!("stopped in {took:?}");
    assert!(
        took < hearth::daemon::STOP_BUDGET + Duration::from_secs(2),
        "{took:?}"
    );
}

/// Item 9: file writes stay in the workspace, against the real daemon.
#[tokio::test]
async fn file_writes_stay_in_the_workspace() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    let ws = d.state.join("workspace");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // 5b0ef1f: `write {"path": "."}` wrote <state>/workspace.hearth-tmp-<pid>.
    send(
        &c,
        "main",
        r#"[call:write:{"path":".","content":"x"}]"#,
        "w1",
    )
    .await;
    let t = text_of(&terminal(&c, "w1").await);
    assert!(t.contains("error"), "{t}");
    let stray: Vec<_> = std::fs::read_dir(&d.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("hearth-tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // A planted `note.hearth-tmp-<pid>` link redirected the write of `note`.
    let planted = ws.join(format!("note.hearth-tmp-{}", d.pid()));
    std::os::unix::fs::symlink(outside.join("pwned"), &planted).unwrap();
    send(
        &c,
        "main",
        r#"[call:write:{"path":"note","content":"x"}]"#,
        "w2",
    )
    .await;
    terminal(&c, "w2").await;
    assert!(
        !outside.join("pwned").exists(),
        "the write left the workspace"
    );
    assert_eq!(std::fs::read_to_string(ws.join("note")).unwrap(), "x");
    // A link inside the workspace is not followed, for reading either.
    std::fs::write(outside.join("secret"), "s3cret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), ws.join("s")).unwrap();
    send(&c, "main", "[tool:read:s]", "w3").await;
    let t = text_of(&terminal(&c, "w3").await);
    assert!(t.contains("symbolic link") && !t.contains("s3cret"), "{t}");
}

/// Item 10: an empty or garbled hearth.redb (what a power cut on an SD
/// card can leave) is moved aside loudly, never silently replaced.
#[tokio::test]
async fn a_damaged_state_file_is_moved_aside_loudly() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&fake.url, "");
    let mut d = Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    send(&c, "main", "keep me", "k1").await;
    terminal(&c, "k1").await;
    drop(c);
    // kill -9: the next start checks the database, and keeps the session
    d.kill9();
    let mut d = Daemon::start(dir.path(), &cfg);
    assert!(d.log().contains("did not stop cleanly"), "{}", d.log());
    let c = d.client().await;
    assert_eq!(history(&c, "main").await.len(), 2);
    drop(c);
    d.term();
    for (what, bytes) in [("empty", vec![]), ("garbage", vec![0x5a; 8192])] {
        std::fs::write(d.state.join("hearth.redb"), &bytes).unwrap();
        let _ = std::fs::remove_file(dir.path().join("daemon.log"));
        let mut d2 = Daemon::start(dir.path(), &cfg);
        let log = d2.log();
        assert!(log.contains("state database was damaged"), "{what}: {log}");
        let c = d2.client().await;
        let s = c.request("status", json!({})).await.unwrap();
        let rec = s["recovered"][0].as_str().unwrap_or("").to_string();
        assert!(rec.contains("moved aside"), "{what}: {s}");
        let out = Command::new(bin())
            .args(["status", "--url", &d2.url, "--state-dir"])
            .arg(&d2.state)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("WARNING"),
            "{out:?}"
        );
        let aside: Vec<_> = std::fs::read_dir(&d2.state)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("hearth.redb.damaged-")
            })
            .collect();
        assert!(!aside.is_empty(), "{what}: nothing moved aside");
        for a in aside {
            assert_eq!(
                std::fs::read(a.path()).unwrap(),
                bytes,
                "{what}: the old file is kept as it was"
            );
            std::fs::remove_file(a.path()).unwrap();
        }
        drop(c);
        d2.term();
    }
}
