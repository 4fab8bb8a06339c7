//! Gateway protocol v4: handshake, refusals, frame limits, methods.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads until the close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn connect_frame(min: u64, max: u64, token: Option<&str>) -> String {
    let mut p = json!({"minProtocol": min, "maxProtocol": max,
        "client": {"id": "test", "version": "1", "platform": "linux", "mode": "test"},
        "role": "operator", "scopes": ["operator.admin"]});
    if let Some(t) = token {
        p["auth"] = json!({"token": t});
    }
    json!({"type": "req", "id": "c1", "method": "connect", "params": p}).to_string()
}

#[tokio::test]
async fn handshake_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[gateway]\ntoken = \"${TEST_TOKEN}\"\n";
    let d = Daemon::start_env(dir.path(), cfg, &[("TEST_TOKEN", "tok-123-4567890abcdef")]);

    // Good handshake.
    let mut ws = raw(&d.url).await;
    let ch = next_text(&mut ws).await;
    assert_eq!(ch["event"], "connect.challenge");
    assert!(ch["payload"]["nonce"].as_str().unwrap().len() >= 16);
    assert!(ch["payload"]["ts"].as_u64().unwrap() > 0);
    ws.send(Message::Text(
        connect_frame(3, 4, Some("tok-123-4567890abcdef")).into(),
    ))
    .await
    .unwrap();
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["type"], "res");
    assert_eq!(hello["ok"], true, "{hello}");
    let p = &hello["payload"];
    assert_eq!(p["type"], "hello-ok");
    assert_eq!(p["protocol"], 4);
    assert!(p["server"]["connId"].as_str().is_some());
    let methods: Vec<&str> = p["features"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for m in [
        "health",
        "status",
        "chat.send",
        "chat.history",
        "chat.abort",
        "agent",
        "agent.wait",
        "send",
        "sessions.list",
        "sessions.reset",
        "sessions.delete",
        "models.list",
        "config.get",
    ] {
        assert!(methods.contains(&m), "missing method {m}");
    }
    assert!(p["features"]["events"]
        .as_array()
        .unwrap()
        .contains(&json!("tick")));
    assert_eq!(p["policy"]["tickIntervalMs"], 30000);
    assert!(p["policy"]["maxPayload"].as_u64().unwrap() >= 65536);
    send_json(&mut ws, json!({"type":"req","id":"h","method":"health"})).await;
    let h = next_text(&mut ws).await;
    assert_eq!(
        (h["id"].as_str(), h["ok"].as_bool()),
        (Some("h"), Some(true))
    );

    // Not connect first → INVALID_REQUEST, 1008.
    let mut ws = raw(&d.url).await;
    next_text(&mut ws).await;
    send_json(&mut ws, json!({"type":"req","id":"x","method":"health"})).await;
    let e = next_text(&mut ws).await;
    assert_eq!(e["ok"], false);
    assert_eq!(e["error"]["code"], "INVALID_REQUEST");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("first request must be connect"));
    assert_eq!(close_code(&mut ws).await, 1008);

    // Garbage first → same.
    let mut ws = raw(&d.url).await;
    next_text(&mut ws).await;
    ws.send(Message::Text("{{{not json".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await["error"]["code"], "INVALID_REQUEST");
    assert_eq!(close_code(&mut ws).await, 1008);

    // Wrong token and missing token → AUTH_TOKEN_MISMATCH, 1008.
    for tok in [Some("wrong"), None] {
        let mut ws = raw(&d.url).await;
        next_text(&mut ws).await;
        ws.send(Message::Text(connect_frame(4, 4, tok).into()))
            .await
            .unwrap();
        let e = next_text(&mut ws).await;
        assert_eq!(e["error"]["code"], "AUTH_TOKEN_MISMATCH", "{e}");
        assert_eq!(close_code(&mut ws).await, 1008);
    }

    // Protocol mismatch → PROTOCOL_MISMATCH, 1002.
    let mut ws = raw(&d.url).await;
    next_text(&mut ws).await;
    ws.send(Message::Text(
        connect_frame(5, 6, Some("tok-123-4567890abcdef")).into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut ws).await["error"]["code"],
        "PROTOCOL_MISMATCH"
    );
    assert_eq!(close_code(&mut ws).await, 1002);

    // Over 64 KiB before auth → error and close, daemon fine.
    let mut ws = raw(&d.url).await;
    next_text(&mut ws).await;
    let big = format!(
        "{{\"type\":\"req\",\"id\":\"c\",\"method\":\"connect\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(70_000)
    );
    ws.send(Message::Text(big.into())).await.unwrap();
    let e = next_text(&mut ws).await;
    assert_eq!(e["error"]["code"], "INVALID_REQUEST");
    assert_eq!(close_code(&mut ws).await, 1009);

    // Browser from a foreign origin → refused at the upgrade.
    let mut req = d.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    // Same-origin browser → fine.
    let mut req = d.url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", d.http().parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());

    // The token was never logged.
    let c = Client::connect(&d.url, Some("tok-123-4567890abcdef"))
        .await
        .unwrap();
    c.request("status", json!({})).await.unwrap();
    assert!(!d.log().contains("tok-123-4567890abcdef"));
}

#[tokio::test]
async fn malformed_and_oversize_frames_after_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let mut ws = raw(&d.url).await;
    next_text(&mut ws).await;
    ws.send(Message::Text(connect_frame(4, 4, Some(&d.token())).into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["ok"], true);

    let bad = [
        "not json".to_string(),
        json!({"type":"req","id":"a"}).to_string(),
        json!({"type":"req","method":"health"}).to_string(),
        json!({"type":"res","id":"b","method":"health"}).to_string(),
        json!({"type":"req","id":"c","method":"health","params":[1]}).to_string(),
        json!({"type":"req","id":"d","method":"no.such"}).to_string(),
        json!({"type":"req","id":"e","method":"chat.send","params":{"message":"hi"}}).to_string(),
        json!({"type":"req","id":"f","method":"chat.send","params":{"idempotencyKey":"k"}}).to_string(),
        json!({"type":"req","id":"g","method":"chat.history","params":{"sessionKey":"agent:ghost:x"}}).to_string(),
        format!("{{\"type\":\"req\",\"id\":\"big\",\"method\":\"health\",\"params\":{{\"p\":\"{}\"}}}}", "y".repeat(1_100_000)),
    ];
    for b in &bad {
        ws.send(Message::Text(b.clone().into())).await.unwrap();
        let r = loop {
            let r = next_text(&mut ws).await;
            if r["type"] == "res" {
                break r;
            }
        };
        assert_eq!(r["ok"], false, "accepted {}", &b[..b.len().min(80)]);
        assert_eq!(r["error"]["code"], "INVALID_REQUEST", "{r}");
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["ok"], false);
    // Still alive, same connection.
    send_json(&mut ws, json!({"type":"req","id":"ok","method":"health"})).await;
    let r = next_text(&mut ws).await;
    assert_eq!(
        (r["id"].as_str(), r["ok"].as_bool()),
        (Some("ok"), Some(true))
    );
    // A frame over the hard limit ends only this connection.
    ws.send(Message::Text("z".repeat(3_000_000).into()))
        .await
        .ok();
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let r = reqwest_health(&d).await;
    assert_eq!(r["ok"], true);
}

async fn reqwest_health(d: &Daemon) -> Value {
    let url = format!("{}/health", d.http());
    tokio::task::spawn_blocking(move || {
        let mut resp = ureq::get(&url).call().unwrap();
        assert_eq!(resp.status(), 200);
        serde_json::from_str::<Value>(&resp.body_mut().read_to_string().unwrap()).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn http_health_metrics_console() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let h = reqwest_health(&d).await;
    assert_eq!(h["status"], "ready");
    let base = d.http();
    let (m, root) = tokio::task::spawn_blocking(move || {
        let m = ureq::get(&format!("{base}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let r = ureq::get(&format!("{base}/"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        (m, r)
    })
    .await
    .unwrap();
    assert!(m.contains("hearth_runs_running 0"));
    assert!(root.contains("Hearth"));
}

#[tokio::test]
async fn chat_send_streams_to_final_and_history() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    let r = send(&c, "main", "hello there", "k1").await;
    assert_eq!(r["runId"], "k1");
    assert_eq!(r["status"], "started");
    // agent lifecycle start + assistant deltas + chat final
    let start = c
        .wait_event("agent", Duration::from_secs(10), |p| {
            p["runId"] == "k1" && p["stream"] == "lifecycle"
        })
        .await
        .unwrap();
    assert_eq!(start["data"]["phase"], "start");
    assert_eq!(start["sessionKey"], "agent:main:main");
    let delta = c
        .wait_event("chat", Duration::from_secs(10), |p| {
            p["runId"] == "k1" && p["state"] == "delta"
        })
        .await
        .expect("a delta");
    let fin = terminal(&c, "k1").await;
    assert_eq!(fin["state"], "final");
    // One counter per run: the final comes after the deltas.
    assert!(
        fin["seq"].as_u64() > delta["seq"].as_u64(),
        "{delta} / {fin}"
    );
    assert_eq!(text_of(&fin), "echo: hello there");
    assert_eq!(fin["message"]["content"][0]["type"], "text");
    assert_eq!(fin["message"]["role"], "assistant");

    let h = c
        .request("chat.history", json!({"sessionKey": "main", "limit": 10}))
        .await
        .unwrap();
    assert_eq!(h["sessionKey"], "agent:main:main");
    let m = h["messages"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["role"], "user");
    assert_eq!(m[0]["content"][0]["text"], "hello there");
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(
        m[1]["content"][0],
        json!({"type": "text", "text": "echo: hello there"})
    );
    let limited = c
        .request("chat.history", json!({"sessionKey": "main", "limit": 1}))
        .await
        .unwrap();
    assert_eq!(limited["messages"].as_array().unwrap().len(), 1);

    // The model saw the system prompt built from the workspace and our text,
    // and the API key went only into the Authorization header.
    let req = &fake.log.all()[0];
    assert_eq!(req["model"], "fake-1");
    assert_eq!(req["stream"], true);
    assert!(req["messages"][0]["content"]
        .as_str()
        .unwrap()
        .contains("AGENTS.md"));
    assert!(req["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["function"]["name"] == "read"));
    assert!(!d.log().contains("sk-test-secret-key"));

    // sessions.list / models.list / status / send / reset / delete
    let s = c.request("sessions.list", json!({})).await.unwrap();
    assert_eq!(s["sessions"][0]["key"], "agent:main:main");
    let ml = c.request("models.list", json!({})).await.unwrap();
    assert_eq!(ml["models"][0]["ref"], "fake/fake-1");
    assert_eq!(ml["models"][0]["available"], true);
    assert_eq!(ml["providers"][0]["credentials"][0]["key"], "sk-…ey");
    let st = c.request("status", json!({})).await.unwrap();
    assert_eq!(st["providers"][0]["credentials"][0]["id"], "default");
    assert_eq!(st["providers"][0]["credentials"][0]["key"], "sk-…ey");
    assert_eq!(st["providers"][0]["credentials"][0]["state"], "ok");
    let cg = c.request("config.get", json!({})).await.unwrap();
    assert_eq!(
        cg["config"]["providers"]["fake"]["credentials"][0]["key"],
        "sk-…ey"
    );
    for v in [&ml, &st, &cg] {
        assert!(!v.to_string().contains("sk-test-secret-key"), "{v}");
    }
    let out = c
        .request(
            "send",
            json!({"sessionKey": "main", "message": "Dinner is ready", "idempotencyKey": "s1"}),
        )
        .await
        .unwrap();
    let again = c
        .request(
            "send",
            json!({"sessionKey": "main", "message": "Dinner is ready", "idempotencyKey": "s1"}),
        )
        .await
        .unwrap();
    assert_eq!(out, again);
    assert_eq!(
        history(&c, "main")
            .await
            .iter()
            .filter(|m| m["content"][0]["text"] == "Dinner is ready")
            .count(),
        1
    );
    assert!(c
        .request("send", json!({"sessionKey": "main", "message": "x"}))
        .await
        .is_err());
    let old_id = h["sessionId"].clone();
    let r = c
        .request("sessions.reset", json!({"key": "main"}))
        .await
        .unwrap();
    assert_ne!(r["sessionId"], old_id);
    assert!(history(&c, "main").await.is_empty());
    let r = c
        .request("sessions.delete", json!({"key": "main"}))
        .await
        .unwrap();
    assert_eq!(r["deleted"], true);
    assert_eq!(
        c.request("sessions.list", json!({})).await.unwrap()["count"],
        0
    );
}

#[tokio::test]
async fn agent_method_accepts_then_answers_and_wait() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let c = d.client().await;
    let mut rx = c.start("agent", json!({"message": "what time", "idempotencyKey": "a1", "sessionKey": "agent:main:main"})).unwrap();
    let acc = rx.recv().await.unwrap().unwrap();
    assert_eq!(
        (acc["runId"].as_str(), acc["status"].as_str()),
        (Some("a1"), Some("accepted"))
    );
    let fin = rx.recv().await.unwrap().unwrap();
    assert_eq!(fin["status"], "ok");
    assert_eq!(fin["result"]["payloads"][0]["text"], "echo: what time");
    let w = c
        .request("agent.wait", json!({"runId": "a1", "timeoutMs": 1000}))
        .await
        .unwrap();
    assert_eq!(w["status"], "ok");
    let w = c
        .request("agent.wait", json!({"runId": "nope", "timeoutMs": 100}))
        .await
        .unwrap();
    assert_eq!(w["status"], "timeout");
    // Repeat: same final result, no new model call.
    let n = fake.log.count();
    let mut rx = c
        .start(
            "agent",
            json!({"message": "what time", "idempotencyKey": "a1"}),
        )
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap()["duplicate"], true);
    assert_eq!(
        rx.recv().await.unwrap().unwrap()["result"]["payloads"][0]["text"],
        "echo: what time"
    );
    assert_eq!(fake.log.count(), n);
    assert!(c.request("agent", json!({"message": "x"})).await.is_err());
    // An absurd timeout is capped, not an overflow.
    let mut rx = c
        .start(
            "agent",
            json!({"message": "big", "idempotencyKey": "a-big", "timeout": u64::MAX}),
        )
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap()["status"], "accepted");
    assert_eq!(rx.recv().await.unwrap().unwrap()["status"], "ok");
}

#[tokio::test]
async fn no_provider_gives_a_clear_error_reply() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let c = d.client().await;
    send(&c, "main", "hi", "n1").await;
    let t = terminal(&c, "n1").await;
    assert_eq!(t["state"], "error");
    let msg = t["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("No model provider is configured") && msg.contains("[providers."),
        "{msg}"
    );
    // The CLI shows it and exits 1.
    let out = std::process::Command::new(bin())
        .args(["chat", "--url", &d.url, "hello"])
        .arg("--state-dir")
        .arg(&d.state)
        .env_remove("HEARTH_GATEWAY_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No model provider is configured"));
}

/// Runs the hearth CLI with `input` on stdin, off the async workers.
async fn hearth_cli(args: &[&str], input: &'static [u8]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = std::process::Command::new(bin())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn cli_chat_streams_a_reply() {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &config_with(&fake.url, ""));
    let out = hearth_cli(
        &[
            "chat",
            "--url",
            &d.url,
            "--state-dir",
            d.state.to_str().unwrap(),
            "--session",
            "cli",
            "good morning",
        ],
        b"",
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "echo: good morning"
    );
    // Interactive: lines from stdin, one reply each, /quit leaves.
    let input = b"first line\n\nsecond line\n/quit\n";
    let st = d.state.to_str().unwrap();
    let out = hearth_cli(
        &[
            "chat",
            "--url",
            &d.url,
            "--state-dir",
            st,
            "--session",
            "tty",
        ],
        input,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: first line\necho: second line\n"
    );
    let st = hearth_cli(&["status", "--url", &d.url, "--state-dir", st], b"").await;
    assert!(String::from_utf8_lossy(&st.stdout).contains("fake/fake-1"));
}

#[tokio::test]
async fn idle_connections_get_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "[gateway]\ntick_interval_ms = 200\n");
    let c = d.client().await;
    assert_eq!(c.hello["policy"]["tickIntervalMs"], 200);
    let t0 = std::time::Instant::now();
    for _ in 0..2 {
        let t = c
            .wait_event("tick", Duration::from_secs(5), |_| true)
            .await
            .expect("tick");
        assert!(t["ts"].as_u64().unwrap() > 0);
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
}
