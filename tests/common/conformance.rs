//! The channel conformance harness: the same checks run over every channel
//! (tests/channels.rs names one [`Platform`] per channel). A platform is the
//! far side of a channel as a user would drive it: the MQTT broker and a
//! device, a WebSocket client, the fake Telegram Bot API.
//!
//! Checks, each against the real daemon binary and a fake model provider:
//! - a message delivered twice by the platform (same platform id) is
//!   answered once;
//! - kill -9 in the middle of a run: after the restart the reply is
//!   delivered exactly once;
//! - a message that arrives while the daemon is shutting down is refused
//!   for now (not lost): after the restart it is answered once;
//! - SIGTERM stops the daemon, with the channel connected and a run in
//!   flight, within its stop budget and with exit code 0.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::{Daemon, FakeOpenAi};

pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the platform did with a message it handed to the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The platform holds it (a broker, Telegram's update queue): the
    /// channel gets it whenever it is ready.
    Held,
    /// The sender was told "not now" and sends it again after the restart
    /// (a WebSocket client's retryable error).
    Refused,
}

/// The far side of one channel.
pub trait Platform: Send {
    fn name(&self) -> &'static str;
    /// The config for the daemon: the model provider `fake_url` and the
    /// channel's own section.
    fn config(&self, fake_url: &str) -> String;
    /// Called after every daemon start, once it answers.
    fn attach<'a>(&'a mut self, d: &'a Daemon) -> Fut<'a, ()>;
    /// The user sends `text` as platform message `id`.
    fn send<'a>(&'a mut self, id: &'a str, text: &'a str) -> Fut<'a, Sent>;
    /// Every reply text the user has received so far, in order.
    fn replies<'a>(&'a mut self, d: &'a Daemon) -> Fut<'a, Vec<String>>;
}

async fn wait_reply(p: &mut dyn Platform, d: &Daemon, want: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        let got = p.replies(d).await;
        if got.iter().any(|r| r.contains(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no reply {want:?}; got {got:?}\n{}",
            p.name(),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits a moment for a second copy, then asserts each reply came once
/// (a reply matches when it contains `want`: the fake streams in parts).
async fn exactly_once(p: &mut dyn Platform, d: &Daemon, want: &[&str]) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = p.replies(d).await;
    for w in want {
        let n = got.iter().filter(|r| r.contains(w)).count();
        assert_eq!(
            n,
            1,
            "{}: reply {w:?} came {n} times: {got:?}\n{}",
            p.name(),
            d.log()
        );
    }
}

async fn start(p: &mut dyn Platform, dir: &std::path::Path, cfg: &str) -> Daemon {
    let d = Daemon::start(dir, cfg);
    p.attach(&d).await;
    d
}

/// Runs every check over `p`.
pub async fn run(p: &mut dyn Platform) {
    let fake = FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = p.config(&fake.url);
    let mut d = start(p, dir.path(), &cfg).await;

    // 1. redelivery (same platform id) is answered once, and the model
    //    is called once
    let asked = |fake: &FakeOpenAi, what: &str| {
        fake.log
            .all()
            .iter()
            .filter(|r| r.to_string().contains(what))
            .count()
    };
    p.send("conf-1", "first words").await;
    p.send("conf-1", "first words").await;
    wait_reply(p, &d, "echo: first words", Duration::from_secs(20)).await;
    exactly_once(p, &d, &["echo: first words"]).await;
    assert_eq!(asked(&fake, "first words"), 1, "{}: model calls", p.name());

    // 2. kill -9 in the middle of a run: answered once after the restart
    p.send("conf-2", "[slow:150] cut short").await;
    let t = Instant::now();
    while asked(&fake, "cut short") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{}: run 2 never started\n{}",
            p.name(),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    let d2 = start(p, dir.path(), &cfg).await;
    wait_reply(p, &d2, "cut short", Duration::from_secs(30)).await;
    exactly_once(p, &d2, &["echo: first words", "cut short"]).await;
    let mut d = d2;

    // 3./4. SIGTERM with a run in flight: a message that arrives during
    //    the drain is refused for now and answered once after the restart;
    //    the daemon exits 0 within its stop budget
    p.send("conf-3", "[slow:200] draining").await;
    let t = Instant::now();
    while asked(&fake, "draining") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{}: run 3 never started",
            p.name()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    let stopper = std::thread::spawn(move || (d.term(), d));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = p.send("conf-4", "late words").await;
    let (code, d_old) = tokio::task::spawn_blocking(move || stopper.join().unwrap())
        .await
        .unwrap();
    let took = stopping.elapsed();
    assert_eq!(code, Some(0), "{}: exit code\n{}", p.name(), d_old.log());
    assert!(
        took < hearth::daemon::STOP_BUDGET,
        "{}: stopping took {took:?}",
        p.name()
    );
    let log = d_old.log();
    assert!(
        !log.contains("did not stop in time"),
        "{}: a channel missed its stop budget\n{log}",
        p.name()
    );
    let d = start(p, dir.path(), &cfg).await;
    if late == Sent::Refused {
        p.send("conf-4", "late words").await;
    }
    wait_reply(p, &d, "echo: late words", Duration::from_secs(30)).await;
    exactly_once(
        p,
        &d,
        &["draining", "echo: late words", "echo: first words"],
    )
    .await;
    assert_eq!(asked(&fake, "late words"), 1, "{}: model calls", p.name());
    drop(d);
}
