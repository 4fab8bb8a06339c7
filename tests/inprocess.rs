//! The daemon started in-process on a test's own listener and stop future
//! (`daemon::run`), the way a test harness or an embedding program does.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_in_process_and_stops_on_its_future() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg =
        hearth::config::Config::from_str(&common::config_with(&fake.url, ""), None, &|_| None)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(hearth::daemon::run(
        cfg,
        state.clone(),
        Some(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    let token_file = state.join(hearth::gateway::auth::TOKEN_FILE);
    common::until("the token file", Duration::from_secs(10), || {
        token_file.exists()
    })
    .await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    let c = hearth::client::Client::connect(&url, Some(token.trim()))
        .await
        .unwrap();
    common::send(&c, "main", "hello in process", "k1").await;
    let fin = common::terminal(&c, "k1").await;
    assert_eq!(common::text_of(&fin), "echo: hello in process");
    let s = c.request("status", json!({})).await.unwrap();
    assert_eq!(s["channels"], json!([]), "no channel configured");
    c.close().await;
    // the stop future ends it: drained, within the stop budget, lock released
    let t = Instant::now();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(hearth::daemon::STOP_BUDGET, daemon)
        .await
        .expect("stopped within the budget")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < hearth::daemon::STOP_BUDGET);
    assert!(
        !hearth::daemon::running(&state),
        "the instance lock is released"
    );
}

/// `hearth pairing` against a running daemon: the list, and a bad code
/// refused with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pairing_cli_talks_to_the_gateway() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &common::config_with(&fake.url, ""));
    let _c = d.client().await;
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .arg("--url")
            .arg(&d.url)
            .arg("--state-dir")
            .arg(&d.state)
            .output()
            .unwrap()
    };
    let out = run(&["pairing", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no pairing requests waiting"));
    let out = run(&["pairing", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], json!([]));
    let out = run(&["pairing", "approve", "ABCD2345"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no pairing request with code") && err.contains("hearth pairing list"),
        "{err}"
    );
}
