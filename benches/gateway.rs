//! Gateway benchmark (release build): startup to /health, idle RSS, added
//! latency per message, throughput over 100 sessions, RSS after many
//! messages. Run with `scripts/bench`; numbers go to docs/performance.md.
//!
//! Environment: BENCH_MESSAGES (default 100000), BENCH_SESSIONS (100),
//! BENCH_CONNS (10), BENCH_STARTS (20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// User + system CPU seconds of a process.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

fn health_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

fn startup() {
    let n = env_n("BENCH_STARTS", 20);
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let t0 = Instant::now();
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
            ])
            .arg(dir.path().join("s"))
            .env_clear()
            .env("HOME", dir.path())
            .env("HEARTH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !health_ok(port) {
            std::thread::sleep(Duration::from_micros(500));
            assert!(t0.elapsed() < Duration::from_secs(10));
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(1000));
        rss.push(rss_kb(child.id()) as f64 / 1024.0);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    println!(
        "startup exec→/health 200: median {:.1} ms, max {:.1} ms over {n} starts",
        percentile(&mut times.clone(), 0.5),
        percentile(&mut times, 1.0)
    );
    println!(
        "idle RSS (embedded defaults, 1 s after ready): median {:.1} MiB",
        percentile(&mut rss, 0.5)
    );
}

async fn one_message(c: &Client, session: &str, key: &str) -> f64 {
    let t0 = Instant::now();
    c.request(
        "chat.send",
        json!({"sessionKey": session, "message": "ping", "idempotencyKey": key}),
    )
    .await
    .unwrap();
    c.wait_event("chat", Duration::from_secs(60), |p| {
        p["runId"] == key && p["state"] == "final"
    })
    .await
    .expect("final");
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Time for the fake provider alone (the same SSE exchange over ureq).
fn provider_baseline(url: &str, n: usize) -> Vec<f64> {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let body = json!({"model": "fake-1", "stream": true, "messages": [{"role": "user", "content": "ping"}]});
            let mut r = agent.post(format!("{url}/chat/completions")).header("content-type", "application/json").send(body.to_string().as_bytes()).unwrap();
            let _ = r.body_mut().read_to_string().unwrap();
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

async fn load() {
    let total = env_n("BENCH_MESSAGES", 100_000);
    let sessions = env_n("BENCH_SESSIONS", 100);
    let conns = env_n("BENCH_CONNS", 10).min(sessions);
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    // max_concurrent = 4 (set by config_with): runs at once over the gateway.
    let cfg = config_with(&fake.url, "");
    let d = Daemon::start(dir.path(), &cfg);
    let pid = d.child.as_ref().unwrap().id();

    // Added latency: one session, sequential, after a warm-up.
    let c = d.client().await;
    for i in 0..50 {
        one_message(&c, "warm", &format!("w{i}")).await;
    }
    let idle_rss = rss_kb(pid) as f64 / 1024.0;
    let mut lat = Vec::new();
    for i in 0..500 {
        lat.push(one_message(&c, "lat", &format!("l{i}")).await);
    }
    let url = fake.url.clone();
    let mut base = tokio::task::spawn_blocking(move || provider_baseline(&url, 500))
        .await
        .unwrap();
    let (b50, b99) = (
        percentile(&mut base.clone(), 0.5),
        percentile(&mut base, 0.99),
    );
    let (l50, l99) = (
        percentile(&mut lat.clone(), 0.5),
        percentile(&mut lat, 0.99),
    );
    println!("latency chat.send→final, 1 session: p50 {l50:.2} ms, p99 {l99:.2} ms; provider alone p50 {b50:.2} ms, p99 {b99:.2} ms");
    println!(
        "added by the gateway: p50 {:.2} ms, p99 {:.2} ms",
        l50 - b50,
        l99 - b99
    );
    drop(c);

    // Throughput: `sessions` sessions over `conns` connections, each session sequential.
    let per_session = total.div_ceil(sessions);
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            samples.push(format!("{:.1}", rss_kb(pid) as f64 / 1024.0));
            println!("  RSS samples every 5 s (MiB): {}", samples.join(" "));
        }
    });
    let done = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for ci in 0..conns {
        let url = d.url.clone();
        let token = d.token();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let c = Arc::new(Client::connect(&url, Some(&token)).await.unwrap());
            // Every client gets every event; drain them so they do not pile up here.
            let drain = c.clone();
            tokio::spawn(async move {
                let mut ev = drain.events.lock().await;
                while ev.recv().await.is_some() {}
            });
            let mut inner = Vec::new();
            for s in (ci..sessions).step_by(conns) {
                let c = c.clone();
                let done = done.clone();
                inner.push(tokio::spawn(async move {
                    for m in 0..per_session {
                        let key = format!("s{s}-{m}");
                        // `agent` answers twice on the request id: accepted, then the result.
                        let mut rx = c
                            .start("agent", json!({"sessionKey": format!("load-{s}"), "message": "ping", "idempotencyKey": key}))
                            .unwrap();
                        rx.recv().await.unwrap().unwrap();
                        let fin = rx.recv().await.unwrap().unwrap();
                        assert_eq!(fin["status"], "ok", "{fin}");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in inner {
                t.await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    sampler.abort();
    let n = done.load(Ordering::Relaxed);
    println!("throughput: {n} replies over {sessions} sessions / {conns} connections in {secs:.1} s = {:.0} replies/s", n as f64 / secs);
    let cpu = cpu_secs(pid) - cpu0;
    println!(
        "daemon CPU: {cpu:.1} s in {secs:.1} s ({:.0}% of one core; the load generator and fake provider share the 2 cores) = {:.0} replies per daemon CPU-second",
        cpu / secs * 100.0,
        n as f64 / cpu
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid) as f64 / 1024.0;
    println!(
        "RSS: {idle_rss:.1} MiB after warm-up, {after:.1} MiB after {n} more messages ({:+.1}%)",
        (after / idle_rss - 1.0) * 100.0
    );
    let db = std::fs::metadata(d.state.join("hearth.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("state database size: {:.1} MiB", db as f64 / 1048576.0);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / cargo test discovery
    }
    startup();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(load());
    let arm = std::path::Path::new("target/aarch64-unknown-linux-musl/release/hearth");
    if let Ok(m) = std::fs::metadata(arm) {
        println!(
            "static aarch64 binary: {:.2} MB ({} bytes)",
            m.len() as f64 / 1e6,
            m.len()
        );
    }
}
