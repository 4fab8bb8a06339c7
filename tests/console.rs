//! The web console in a real browser: Debian's chromium, headless, driven
//! by tests/browser/console.mjs (playwright-core over the DevTools
//! protocol) against a real daemon, a real mosquitto with simulated
//! devices and the fake OpenAI-compatible provider. Sign-in (a wrong token
//! refused), a streamed reply, history after a reload, sessions, a device
//! toggled and its state arriving as an event, status and the log tail
//! without secrets, memory edit and search, the setup page with bad then
//! good values, and a second browser paired through the owner.
//! `scripts/browser-deps` installs chromium and the npm packages.
//! Screenshots go to target/console-shots (docs/console.md shows them;
//! `HEARTH_UPDATE_SCREENSHOTS=1` copies them to docs/console/).

mod common;

use std::path::Path;
use std::process::Command;

use common::broker::{publish_fixtures, simulate_kitchen_light, Broker, TestClient};

fn node_script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name)
}

/// Fails with the fix when the browser tooling is missing (never skips).
pub fn require_browser_deps() {
    let pw =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    assert!(
        pw.is_dir() && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need chromium and tests/browser/node_modules: run scripts/browser-deps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    require_browser_deps();
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(
        broker.port,
        "sim",
        &[
            "home/kitchen/light/set",
            "home/kitchen/light/brightness/set",
        ],
    )
    .await;
    publish_fixtures(&sim).await;
    sim.publish("home/kitchen/status", "online", true).await;
    let light = simulate_kitchen_light(&sim);
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::broker::config(&fake.url, &broker, "allow_high_risk = []\n");
    let d = common::Daemon::start(dir.path(), &cfg);
    let token = std::fs::read_to_string(d.state.join("gateway.token")).unwrap();
    let http = d.url.replace("ws://", "http://");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-shots");

    let out = tokio::task::spawn_blocking({
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg(node_script("console.mjs"))
                .env("HEARTH_URL", &http)
                .env("HEARTH_TOKEN", token.trim())
                .env("SHOTS", &shots)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    light.abort();
    assert!(
        out.status.success() && stdout.contains("\nOK"),
        "the console script failed:\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        d.log()
    );

    // what the page did, seen from outside the browser
    assert!(
        sim.on("home/kitchen/light/set").len() == 1,
        "one command for one click: {:?}",
        sim.on("home/kitchen/light/set")
    );
    let problems = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBLEMS "))
        .unwrap();
    let problems: Vec<String> = serde_json::from_str(problems).unwrap();
    assert!(
        problems.iter().any(|p| p.contains("provider.apiKey"))
            && problems.iter().any(|p| p.contains("mqtt.url")),
        "{problems:?}"
    );
    let setup = std::fs::read_to_string(d.state.join("setup.toml")).unwrap();
    assert!(setup.contains("anthropic/claude-sonnet-4-5"), "{setup}");
    assert!(
        !setup.contains("sk-ant-console"),
        "the key is not in the TOML: {setup}"
    );
    let env = std::fs::read_to_string(d.state.join("setup.env")).unwrap();
    assert!(env.contains("HEARTH_SETUP_ANTHROPIC_API_KEY=sk-ant-console-test-0123456789"));
    assert!(
        env.contains("HEARTH_SETUP_TELEGRAM_BOT_TOKEN=123456:ABCdefGHIjklMNOpqrSTUvwxYZ_-12345")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.state.join("setup.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let memory = std::fs::read_to_string(d.state.join("workspace/MEMORY.md")).unwrap();
    assert!(memory.contains("dog named Pepper"), "{memory}");
    assert!(
        !d.log().contains("sk-ant-console-test"),
        "the new key is not logged"
    );
    // the daemon validates what the page wrote the same way at its next start
    let v = Command::new(common::bin())
        .args(["config", "validate", "--config"])
        .arg(&d.config)
        .env("HEARTH_STATE_DIR", &d.state)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "config validate with the setup files: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    if std::env::var_os("HEARTH_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        for e in std::fs::read_dir(&shots).unwrap().flatten() {
            std::fs::copy(e.path(), docs.join(e.file_name())).unwrap();
        }
    }
}

/// The renderer on hostile Markdown (a link inside a link's URL once put an
/// `onmouseover` attribute into the page; the CSP was the only guard).
#[test]
fn markdown_never_makes_a_tag_it_did_not_mean() {
    let out = Command::new("node")
        .arg(node_script("markdown.mjs"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
