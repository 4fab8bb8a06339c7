//! Telegram benchmark (release build), numbers for docs/performance.md:
//!
//! - update in → reply sent: the fake Bot API (tests/common/telegram.rs)
//!   queues an update and wakes the waiting long poll; the time until the
//!   reply's `sendMessage` arrived, one message at a time, the fake model
//!   answering at once; p50/p99.
//! - RSS the channel adds: the daemon's RSS after the same warm-up with and
//!   without `[channels.telegram]`.
//!
//! Environment: BENCH_TG_MESSAGES (default 500).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::telegram::FakeTelegram;
use common::{env_n, percentile};
use serde_json::json;

const OWNER: i64 = 111;

async fn warm(d: &common::Daemon) {
    let c = d.client().await;
    for i in 0..50 {
        common::send(&c, "main", &format!("warm {i}"), &format!("w{i}")).await;
        common::terminal(&c, &format!("w{i}")).await;
    }
    c.close().await;
}

fn main() {
    let n = env_n("BENCH_TG_MESSAGES", 500);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fake = common::FakeOpenAi::start().await;
        let tg = FakeTelegram::start().await;
        // without the channel
        let dir0 = tempfile::tempdir().unwrap();
        let d0 = common::Daemon::start_env(dir0.path(), &common::config_with(&fake.url, ""), &[("HEARTH_LOG", "warn")]);
        warm(&d0).await;
        let rss0 = common::rss_kb(d0.pid());
        drop(d0);

        let dir = tempfile::tempdir().unwrap();
        let cfg = common::config_with(&fake.url, &tg.section(&format!("allow_from = [{OWNER}]\ntyping = false")));
        let d = common::Daemon::start_env(dir.path(), &cfg, &[("HEARTH_LOG", "warn")]);
        let c = d.client().await;
        let t0 = Instant::now();
        loop {
            let s = c.request("status", json!({})).await.unwrap();
            if s["channels"][0]["status"]["polling"] == true {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never polled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warm(&d).await;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let before = tg.sent_to(OWNER).len();
            let t = Instant::now();
            tg.message(OWNER, OWNER, &format!("ping {i}"));
            while tg.sent_to(OWNER).len() == before {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if i >= 20 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let rss = common::rss_kb(d.pid());
        println!(
            "telegram update in -> reply sent ({n} messages, sequential): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99),
            percentile(&mut lat, 1.0)
        );
        println!(
            "daemon RSS after warm-up: {rss0} KB without the channel, {rss} KB with it after {n} messages (+{} KB)",
            rss.saturating_sub(rss0)
        );
    });
}
