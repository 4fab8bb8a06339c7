//! Appliance basics: single instance, sd-notify, config validation, CLI.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn hearth(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("HEARTH_CONFIG")
        .env_remove("HEARTH_GATEWAY_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "");
    let out = Command::new(bin())
        .args(["serve", "--state-dir"])
        .arg(&d.state)
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&d.child.as_ref().unwrap().id().to_string()),
        "names the pid: {err}"
    );
}

#[test]
fn sd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sp = sock_path.to_str().unwrap().to_string();
    let mut d = Daemon::start_env(
        dir.path(),
        "",
        &[("NOTIFY_SOCKET", &sp), ("WATCHDOG_USEC", "400000")],
    );
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(got.contains("READY=1") && got.contains("WATCHDOG=1")) {
        assert!(Instant::now() < deadline, "notifications so far: {got:?}");
        let n = sock.recv(&mut buf).unwrap();
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        got.push('\n');
    }
    assert!(got.contains("STATUS=listening on 127.0.0.1:"), "{got}");
    // READY comes only once the gateway answers.
    let url = format!("{}/health", d.http());
    assert_eq!(ureq::get(&url).call().unwrap().status(), 200);
    assert_eq!(d.term(), Some(0));
    let mut rest = String::new();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(rest.contains("STOPPING=1"), "{rest}");
}

#[test]
fn config_validate_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[gateway]\nbind = \"0.0.0.0:18789\"\n[agents.defaults]\nmodel = \"ghost/m\"\n[messages.queue]\nmode = \"sideways\"\n[typo]\n",
    )
    .unwrap();
    let out = hearth(&["config", "validate", "--config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "bad.toml",
        "gateway.token",
        "agents[main].model",
        "messages",
        "typo",
        "sideways",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[gateway]\nbind = \"127.0.0.1:18789\"\n").unwrap();
    let out = hearth(&["config", "validate", "--config", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // serve refuses the bad file with the same report.
    let out = Command::new(bin())
        .args(["serve", "--config", p.to_str().unwrap(), "--state-dir"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.token"));
}

#[test]
fn non_loopback_bind_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--bind", "0.0.0.0:0", "--state-dir"])
        .arg(dir.path().join("s"))
        .env_remove("HEARTH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
}

#[test]
fn help_and_version() {
    let v = hearth(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("hearth {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["chat", "--help"],
        &["status", "--help"],
        &["config", "validate", "--help"],
    ] {
        let h = hearth(args);
        assert_eq!(h.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&h.stdout).contains("Usage:"),
            "{args:?}"
        );
    }
    let s = String::from_utf8_lossy(&hearth(&["serve", "--help"]).stdout).to_string();
    assert!(s.contains("--state-dir") && s.contains("--bind") && s.contains("--config"));
    let st = hearth(&["status", "--url", "ws://127.0.0.1:9"]);
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("not reachable"));
}

#[test]
fn journald_logs_have_no_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_env(dir.path(), "", &[("JOURNAL_STREAM", "8:12345")]);
    assert_eq!(d.term(), Some(0));
    let log = d.log();
    let first = log.lines().next().unwrap();
    assert!(first.trim_start().starts_with("INFO"), "{first}");
    assert!(!log.contains("\x1b["), "no colour codes for the journal");
    // Outside systemd, lines carry a timestamp.
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), "");
    assert_eq!(d.term(), Some(0));
    assert!(d.log().lines().next().unwrap().starts_with("20"));
}

#[tokio::test]
async fn sighup_is_ignored_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), "");
    unsafe_kill(d.pid(), libc::SIGHUP);
    until("the SIGHUP log line", Duration::from_secs(10), || {
        d.log().contains("SIGHUP ignored")
    })
    .await;
    let c = d.client().await;
    let h = c.request("health", serde_json::json!({})).await;
    assert!(h.is_ok(), "alive after SIGHUP: {h:?}\n{}", d.log());
    assert!(d.log().contains("systemctl restart hearth"));
    drop(c);
    assert_eq!(d.term(), Some(0));
}
