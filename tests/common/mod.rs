//! Test harness: the real `hearth` binary on 127.0.0.1:0 with a temp state
//! dir, and a fake OpenAI-compatible server on loopback that speaks the real
//! chat-completions SSE wire format, including streamed tool calls.
//!
//! The fake's behaviour is driven by markers in the last user message:
//! - `[slow:N]`: stream the reply in 10 chunks, N ms apart
//! - `[tool:read:PATH]`: first answer with a streamed `read {path}` call
//! - `[slowtool:N]`: wait N ms, then call `ls {}` once
//! - `[tool:loop]`: call `ls {}` on every turn (for max_steps)
//! - `[call:NAME:ARGS]`: first answer with a call of tool NAME with the
//!   JSON object ARGS (which must not contain `]`)
//! - `[garbage]`: a delta, then a line that is not JSON (broken output)
//! - `[cut]`: a delta, then the stream ends without a finish (truncated)
//! - anything else: `echo: <text>` in three chunks
//!
//! After a tool result it answers `tool said: <result>`.
//!
//! Compaction (scripted by Hearth's own prompts, not markers):
//! - a call whose system prompt asks to compact a conversation answers a
//!   "summary": one line `- [keep:X]` per distinct `[keep:X]` marker in the
//!   request (so facts marked that way survive, also across compactions);
//! - the memory-flush turn writes those markers to `memory/flush.md` with
//!   the `write` tool, then answers `NO_REPLY`;
//! - `[slowcompact:N]` anywhere in the request: the summary comes after N ms;
//! - `[recall:WORD]` answers `recalled: ` and every `[keep:…]` marker with
//!   WORD anywhere in the request (system prompt included), or `nothing`.
#![allow(dead_code)]

pub mod broker;
pub mod cloud;
pub mod conformance;
pub mod telegram;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub use hearth::client::Client;

#[derive(Clone, Default)]
pub struct FakeLog {
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeLog {
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

pub struct FakeOpenAi {
    pub url: String,
    pub log: FakeLog,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn marker(text: &str, name: &str) -> Option<String> {
    let start = text.find(&format!("[{name}:"))? + name.len() + 2;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "fake-1",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

async fn completions(State(log): State<FakeLog>, body: String) -> Response {
    let req: Value = serde_json::from_str(&body).expect("request is JSON");
    log.requests.lock().unwrap().push(req.clone());
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or(json!({}));
    let last_user = unmark(
        msgs.iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or(""),
    );
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(32);
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Ok(s)).await;
            }
        };
        send(chunk(json!({"role": "assistant", "content": ""}), None)).await;
        let system = msgs
            .first()
            .filter(|m| m["role"] == "system")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let mut keep: Vec<String> = Vec::new();
        for m in &msgs {
            let mut t = m["content"].as_str().unwrap_or("");
            while let Some(i) = t.find("[keep:") {
                let Some(j) = t[i..].find(']') else { break };
                let k = t[i..i + j + 1].to_string();
                if !keep.contains(&k) {
                    keep.push(k);
                }
                t = &t[i + j + 1..];
            }
        }
        if system.contains("You compact a conversation") {
            let slow = msgs
                .iter()
                .find_map(|m| marker(m["content"].as_str().unwrap_or(""), "slowcompact"));
            if let Some(ms) = slow.and_then(|v| v.parse::<u64>().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let lines: Vec<String> = keep.iter().map(|k| format!("- {k}")).collect();
            let text = if lines.is_empty() {
                "- nothing to keep".to_string()
            } else {
                lines.join("\n")
            };
            send(chunk(json!({"content": text}), None)).await;
            send(chunk(json!({}), Some("stop"))).await;
            send("data: [DONE]\n\n".into()).await;
            return;
        }
        if last_user.contains("[Pre-compaction memory flush]") {
            if last["role"] == "user" {
                let args =
                    json!({"path": "memory/flush.md", "content": keep.join("\n")}).to_string();
                send(chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_flush", "type": "function",
                    "function": {"name": "write", "arguments": args}}]}),
                    None,
                ))
                .await;
                send(chunk(json!({}), Some("tool_calls"))).await;
            } else {
                send(chunk(json!({"content": "NO_REPLY"}), None)).await;
                send(chunk(json!({}), Some("stop"))).await;
            }
            send("data: [DONE]\n\n".into()).await;
            return;
        }
        if let Some(w) = marker(&last_user, "recall") {
            let found: Vec<&String> = keep.iter().filter(|k| k.contains(&w)).collect();
            let text = if found.is_empty() {
                "recalled: nothing".to_string()
            } else {
                format!(
                    "recalled: {}",
                    found
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            };
            send(chunk(json!({"content": text}), None)).await;
            send(chunk(json!({}), Some("stop"))).await;
            send("data: [DONE]\n\n".into()).await;
            return;
        }
        let looping = last_user.contains("[tool:loop]");
        if last_user.contains("[garbage]") {
            send(chunk(json!({"content": "half a rep"}), None)).await;
            send("data: {\"choices\": [oops\n\n".into()).await;
            return;
        }
        if last_user.contains("[cut]") {
            send(chunk(json!({"content": "half a rep"}), None)).await;
            return;
        }
        if last["role"] == "tool" && !looping {
            let r = unmark(last["content"].as_str().unwrap_or(""))
                .chars()
                .take(300)
                .collect::<String>();
            send(chunk(json!({"content": format!("tool said: {r}")}), None)).await;
            send(chunk(json!({}), Some("stop"))).await;
        } else if let Some(q) =
            marker(&last_user, "tool:memory_search").filter(|_| last["role"] == "user")
        {
            let args = json!({"query": q}).to_string();
            send(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_mem", "type": "function",
                "function": {"name": "memory_search", "arguments": args}}]}),
                None,
            ))
            .await;
            send(chunk(json!({}), Some("tool_calls"))).await;
        } else if let Some(call) = marker(&last_user, "call").filter(|_| last["role"] == "user") {
            let (name, args) = call.split_once(':').expect("[call:NAME:ARGS]");
            send(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                "function": {"name": name, "arguments": args}}]}),
                None,
            ))
            .await;
            send(chunk(json!({}), Some("tool_calls"))).await;
        } else if let Some(path) =
            marker(&last_user, "tool:read").filter(|_| last["role"] == "user")
        {
            let args = json!({"path": path}).to_string();
            let (a, b) = args.split_at(args.len() / 2);
            send(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "read", "arguments": a}}]}),
                None,
            ))
            .await;
            send(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                None,
            ))
            .await;
            send(chunk(json!({}), Some("tool_calls"))).await;
        } else if looping
            || (last["role"] == "user"
                && marker(&last_user, "slowtool").is_some()
                && last["content"] == last_user)
        {
            if let Some(ms) = marker(&last_user, "slowtool").and_then(|m| m.parse::<u64>().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            send(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_ls", "type": "function",
                "function": {"name": "ls", "arguments": "{}"}}]}),
                None,
            ))
            .await;
            send(chunk(json!({}), Some("tool_calls"))).await;
        } else if let Some(ms) = marker(&last_user, "slow").and_then(|m| m.parse::<u64>().ok()) {
            for i in 0..10 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                send(chunk(json!({"content": format!("part{i} ")}), None)).await;
            }
            send(chunk(
                json!({"content": format!("done: {last_user}")}),
                None,
            ))
            .await;
            send(chunk(json!({}), Some("stop"))).await;
        } else {
            let text = format!("echo: {last_user}");
            let n = text.len();
            let cut1 = (0..=n / 3)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap();
            let cut2 = (0..=2 * n / 3)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap();
            for part in [&text[..cut1], &text[cut1..cut2], &text[cut2..]] {
                send(chunk(json!({"content": part}), None)).await;
            }
            send(chunk(json!({}), Some("stop"))).await;
        }
        send("data: [DONE]\n\n".into()).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let log = FakeLog::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(log.clone());
        let (addr, stop) = serve(app).await;
        FakeOpenAi {
            url: format!("http://{addr}/v1"),
            log,
            stop,
        }
    }
}

/// Serves `app` on 127.0.0.1:0 (TCP_NODELAY) until the token is
/// cancelled; every fake server starts this way.
pub async fn serve(app: Router) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use axum::serve::ListenerExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s2 = stop.clone();
    let l = l.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async move { s2.cancelled().await })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// A config using the fake provider, plus extra TOML.
/// The text inside Hearth's `<untrusted source="...">` mark (tool results,
/// non-owner messages), so the fakes script and echo the text itself; a
/// real model gets the mark (tests/trust.rs checks it arrives).
pub fn unmark(s: &str) -> String {
    match s
        .strip_prefix("<untrusted source=")
        .and_then(|r| r.split_once('\n'))
    {
        Some((_, rest)) => rest
            .strip_suffix("\n</untrusted>")
            .unwrap_or(rest)
            .to_string(),
        None => s.to_string(),
    }
}

pub fn config_with(fake_url: &str, extra: &str) -> String {
    format!(
        "[providers.fake]\nkind = \"openai\"\nbase_url = \"{fake_url}\"\napi_key = \"sk-test-secret-key\"\n\n\
         [agents.defaults]\nmodel = \"fake/fake-1\"\nmax_concurrent = 4\n\n{extra}\n"
    )
}

pub struct Daemon {
    pub child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

/// The binary under test; `HEARTH_BIN` points the benchmark at another build
/// (e.g. the static musl one).
pub fn bin() -> String {
    std::env::var("HEARTH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hearth").to_string())
}

impl Daemon {
    /// Starts `hearth serve` on 127.0.0.1:0 in `dir` (state in dir/state).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Self::start_env(dir, config, &[])
    }

    pub fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let cfg = dir.join("hearth.toml");
        std::fs::write(&cfg, config).unwrap();
        let state = dir.join("state");
        let _ = std::fs::remove_file(state.join("gateway.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        // No local model unless a test asks for one (HEARTH_MODELS_DIR in env).
        let no_models = dir.join("no-models");
        std::fs::create_dir_all(&no_models).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .args(["--bind", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("HEARTH_LOG", "info")
            .env("HEARTH_MODELS_DIR", &no_models)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn hearth");
        let mut d = Daemon {
            child: Some(child),
            url: String::new(),
            dir: dir.to_path_buf(),
            state: state.clone(),
            config: cfg,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::fs::read_to_string(state.join("gateway.json")) {
                if let Ok(v) = serde_json::from_str::<Value>(&s) {
                    d.url = v["url"].as_str().unwrap().to_string();
                    return d;
                }
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("hearth exited early ({st}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "hearth did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn http(&self) -> String {
        self.url.replace("ws://", "http://")
    }

    /// The gateway token: `[gateway] token` from the config, else the one
    /// the daemon made in the state dir.
    pub fn token(&self) -> String {
        let cfg = std::fs::read_to_string(&self.config).unwrap_or_default();
        if let Some(t) = cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("token = \""))
            .and_then(|r| r.strip_suffix('"'))
        {
            return t.to_string();
        }
        // "" for a daemon that makes none (HEARTH_BIN pointing at an older build)
        hearth::gateway::auth::read_token_file(&self.state)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url, Some(&self.token()))
            .await
            .expect("connect")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn term(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_kill(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("hearth did not stop after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[allow(unsafe_code)]
pub fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall on a child pid we own.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `hearth ARGS --config <d's> --state-dir <d's>` (with `env`),
/// asserts it succeeded and parses its stdout as JSON.
pub fn cli_json(d: &Daemon, args: &[&str], env: &[(&str, &Path)]) -> Value {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .arg("--config")
        .arg(&d.config)
        .arg("--state-dir")
        .arg(&d.state);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "hearth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Resident memory of a process, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A benchmark size from the environment.
pub fn env_n(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The `p` quantile (0-1) of `v` (sorted in place).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends chat.send and returns the runId.
pub async fn send(c: &Client, session: &str, text: &str, key: &str) -> Value {
    c.request(
        "chat.send",
        json!({"sessionKey": session, "message": text, "idempotencyKey": key}),
    )
    .await
    .expect("chat.send")
}

/// A loopback port nothing listens on (to bind next, or for "connection refused").
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for a terminal chat event (final/error/aborted) of `run_id`.
pub async fn terminal(c: &Client, run_id: &str) -> Value {
    terminal_within(c, run_id, Duration::from_secs(30)).await
}

/// [`terminal`] with a longer wait (local model inference).
pub async fn terminal_within(c: &Client, run_id: &str, wait: Duration) -> Value {
    c.wait_event("chat", wait, |p| {
        p["runId"] == run_id && matches!(p["state"].as_str(), Some("final" | "error" | "aborted"))
    })
    .await
    .unwrap_or_else(|| panic!("no terminal chat event for {run_id}"))
}

pub fn text_of(p: &Value) -> String {
    p["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub async fn history(c: &Client, session: &str) -> Vec<Value> {
    let h = c
        .request(
            "chat.history",
            json!({"sessionKey": session, "limit": 1000}),
        )
        .await
        .unwrap();
    h["messages"].as_array().unwrap().clone()
}

/// Waits until `f` is true, polling.
pub async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`models_dir`] as text when `want` (for `HEARTH_MODELS_DIR`).
pub fn models_dir_if(want: bool) -> Option<String> {
    want.then(|| models_dir().to_string_lossy().into_owned())
}

/// The models directory the tests use: `$HEARTH_MODELS_DIR`, else the
/// checkout's `models/` (scripts/fetch-models). Missing models fail the test
/// (CI fetches them), they never skip it.
pub fn models_dir() -> PathBuf {
    let d = std::env::var_os("HEARTH_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert!(
        d.join(hearth::models::EMBED_DIR).is_dir(),
        "no models in {} (run scripts/fetch-models)",
        d.display()
    );
    d
}
