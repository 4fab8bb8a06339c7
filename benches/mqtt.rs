//! MQTT benchmark (release build), numbers for docs/performance.md:
//!
//! - inbound MQTT message → reply published: a device publishes to
//!   `hearth/in/<device>` (QoS 1) and waits for `hearth/out/<device>`, one
//!   message at a time, through a real mosquitto and the real daemon, with
//!   the fake provider answering at once; p50/p99, with replies at QoS 2
//!   (the default, exactly once) and at QoS 1.
//! - a registry of 1,000 discovered entities: memory it adds (RSS of this
//!   process before and after), and `devices_list` / name resolution
//!   latency.
//!
//! Environment: BENCH_MQTT_MESSAGES (default 1000), BENCH_ENTITIES (1000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::broker::{Broker, TestClient};
use common::{env_n, percentile};
use hearth::mqtt::discovery::{self, Component};
use hearth::mqtt::registry::Registry;
use serde_json::json;

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One device at `qos` (the subscription) and Hearth at `reply_qos`.
fn round_trip(n: usize, reply_qos: u8) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::start();
        let fake = common::FakeOpenAi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = common::config_with(
            &fake.url,
            &format!(
                "[channels.mqtt]\nurl = \"{}\"\ndiscovery_prefix = \"\"\nreply_qos = {reply_qos}\n",
                broker.url()
            ),
        );
        let d = common::Daemon::start_env(dir.path(), &cfg, &[("HEARTH_LOG", "warn")]);
        let c = d.client().await;
        let t0 = Instant::now();
        while c.request("status", json!({})).await.unwrap()["mqtt"]["connected"] != true {
            assert!(t0.elapsed() < Duration::from_secs(20), "no MQTT connection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let qos = if reply_qos == 2 {
            rumqttc::QoS::ExactlyOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        };
        let dev = TestClient::connect_qos(broker.port, "bench-dev", &["hearth/out/bench"], qos).await;
        let mut lat = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let before = dev.on("hearth/out/bench").len();
            let t = Instant::now();
            dev.publish("hearth/in/bench", format!("ping {i}"), false).await;
            loop {
                if dev.on("hearth/out/bench").len() > before {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            if i >= 20 {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        println!(
            "mqtt in -> reply out, reply_qos {reply_qos} ({n} messages, sequential): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99),
            percentile(&mut lat, 1.0)
        );
    });
}

fn registry(n: usize) {
    let comps = [
        "light",
        "switch",
        "sensor",
        "binary_sensor",
        "cover",
        "climate",
        "lock",
        "fan",
    ];
    let rooms = [
        "kitchen",
        "living room",
        "bedroom",
        "bathroom",
        "hallway",
        "office",
        "garage",
        "garden",
    ];
    let dir = tempfile::tempdir().unwrap();
    let configs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let c = comps[i % comps.len()];
            let room = rooms[(i / comps.len()) % rooms.len()];
            let name = format!("{room} {c} {i}");
            let mut p = json!({"name": name, "uniq_id": format!("u{i}"), "stat_t": format!("z2m/dev{i}"),
                               "val_tpl": "{{ value_json.state }}", "avty_t": "z2m/bridge/state",
                               "dev": {"ids": [format!("d{i}")], "name": name, "sa": room, "mf": "Bench", "mdl": "B1"}});
            if !matches!(c, "sensor" | "binary_sensor") {
                p["cmd_t"] = json!(format!("z2m/dev{i}/set"));
            }
            (format!("homeassistant/{c}/dev{i}/x/config"), p.to_string().into_bytes())
        })
        .collect();
    let before = rss_kb();
    let t = Instant::now();
    let reg = Registry::open(&dir.path().join("devices.redb"), "hearth").unwrap();
    for (topic, payload) in &configs {
        let e = discovery::parse("homeassistant", topic, payload)
            .unwrap()
            .unwrap();
        reg.upsert(e).unwrap();
    }
    let load = t.elapsed();
    for i in 0..n {
        reg.on_state(&format!("z2m/dev{i}"), r#"{"state":"ON"}"#, 1);
    }
    let after = rss_kb();
    let time = |f: &dyn Fn()| {
        let mut v: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
    };
    let all = time(&|| assert_eq!(reg.list(None, None, None).len(), n));
    let area = time(&|| assert!(!reg.list(None, Some("kitchen"), None).is_empty()));
    let query = time(&|| assert!(!reg.list(Some("bedroom light"), None, None).is_empty()));
    let resolve = time(&|| {
        let _ = reg.resolve("bedroom light 130", &[Component::Light]);
    });
    println!(
        "registry of {n} entities: +{} KB RSS (configs and state in memory), first discovery {:.0} ms ({:.2} ms/entity, one redb commit each)",
        after.saturating_sub(before),
        load.as_secs_f64() * 1000.0,
        load.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "devices_list all {n}: p50 {:.2} ms, p99 {:.2} ms",
        all.0, all.1
    );
    println!(
        "devices_list area=kitchen: p50 {:.2} ms, p99 {:.2} ms",
        area.0, area.1
    );
    println!(
        "devices_list query=\"bedroom light\": p50 {:.2} ms, p99 {:.2} ms",
        query.0, query.1
    );
    println!(
        "resolve \"bedroom light 130\": p50 {:.2} ms, p99 {:.2} ms",
        resolve.0, resolve.1
    );
}

fn main() {
    registry(env_n("BENCH_ENTITIES", 1000));
    round_trip(env_n("BENCH_MQTT_MESSAGES", 1000), 2);
    round_trip(env_n("BENCH_MQTT_MESSAGES", 1000), 1);
}
