//! Regression tests for the MQTT holes of issue 13 (items 6-8 and the
//! devices_list cap of 9), against a real mosquitto and the real daemon.

mod common;

use std::time::{Duration, Instant};

use common::broker::{config, status, wait_status, Broker, TestClient};
use rumqttc::QoS;
use serde_json::{json, Value};

async fn chat(c: &common::Client, text: &str, key: &str) -> String {
    let r = common::send(c, "main", text, key).await;
    let fin = common::terminal(c, r["runId"].as_str().unwrap()).await;
    common::text_of(&fin)
}

async fn devices(c: &common::Client) -> Vec<Value> {
    c.request("devices.list", json!({})).await.unwrap()["devices"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for the daemon to exit on its own (a test crash hook).
fn wait_exit(d: &mut common::Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let child = d.child.as_mut().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d.child = None;
}

/// Item 6: a retained config with a NUL or a 70,000-byte topic made every
/// SUBSCRIBE malformed, and devices.redb kept it across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_discovery_topics_do_not_break_the_channel() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(broker.port, "sim", &[]).await;
    let bad = [
        (
            "homeassistant/sensor/nul/config",
            json!({"name": "Nul", "stat_t": "a\u{0}b"}),
        ),
        (
            "homeassistant/sensor/huge/config",
            json!({"name": "Huge", "stat_t": "x".repeat(70_000)}),
        ),
        // mosquitto drops a connection for a non-character too
        (
            "homeassistant/sensor/nonchar/config",
            json!({"name": "Nonchar", "stat_t": "a\u{FFFF}"}),
        ),
        (
            "homeassistant/switch/wild/config",
            json!({"name": "Wild", "cmd_t": "x/#"}),
        ),
        (
            "homeassistant/sensor/sys/config",
            json!({"name": "Sys", "stat_t": "$SYS/broker/uptime"}),
        ),
    ];
    for (t, p) in &bad {
        sim.publish(t, p.to_string(), true).await;
    }
    sim.publish(
        "homeassistant/sensor/good/config",
        json!({"name": "Good", "stat_t": "good/state"}).to_string(),
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake.url, &broker, "");
    let mut d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    wait_status(&c, "discovery", |s| {
        s["connected"] == true && s["entities"] == 1
    })
    .await;
    sim.publish("good/state", "21.5", false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices(&c).await[0]["state"] != "21.5" {
        assert!(Instant::now() < deadline, "the good sensor got no state");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = status(&c).await;
    assert_eq!(
        (s["connected"].as_bool(), s["reconnects"].as_u64()),
        (Some(true), Some(0)),
        "{s}"
    );
    assert!(
        d.log().contains("ignoring a bad discovery config"),
        "{}",
        d.log()
    );
    drop(c);
    d.term();

    // A devices.redb that already holds such an entity heals on start.
    {
        let reg = hearth::mqtt::registry::Registry::open(&d.state.join("devices.redb"), "hearth")
            .unwrap();
        let e = hearth::mqtt::discovery::parse(
            "homeassistant",
            "homeassistant/sensor/nul/config",
            json!({"name": "Nul", "stat_t": "a\u{0}b"})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .unwrap();
        reg.upsert(e).unwrap();
        assert_eq!(reg.len(), 2);
    }
    for (t, _) in &bad {
        sim.publish(t, "", true).await; // the broker forgets them
    }
    let d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    wait_status(&c, "the healed registry", |s| {
        s["connected"] == true && s["entities"] == 1
    })
    .await;
    assert!(
        d.log().contains("dropping an entity with a bad topic"),
        "{}",
        d.log()
    );
    sim.publish("good/state", "22", false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while devices(&c).await[0]["state"] != "22" {
        assert!(Instant::now() < deadline, "no state after the restart");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Item 7: a crash between the broker's acceptance and the outbox commit
/// (the test hook aborts there) sends no second copy to a QoS 2 subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_the_commit_sends_no_second_copy() {
    let (broker, fake) = (Broker::start(), common::FakeOpenAi::start().await);
    let (panel, dev) = qos2_panel(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake.url, &broker, "");
    for (i, point) in ["mqtt-after-pubrec", "mqtt-after-pubcomp"]
        .iter()
        .enumerate()
    {
        let mut d = common::Daemon::start_env(dir.path(), &cfg, &[("HEARTH_TEST_CRASH", point)]);
        let c = d.client().await;
        wait_status(&c, "connected", |s| s["connected"] == true).await;
        let text = format!("crash {i}");
        dev.publish("hearth/in/panel", text.clone(), false).await;
        wait_exit(&mut d);
        assert!(
            d.log().contains(&format!("aborting at {point}")),
            "{}",
            d.log()
        );
        // mosquitto delivers a QoS 2 message at the PUBREL: none yet after
        // the PUBREC, one after the PUBCOMP
        let want = format!("echo: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let copies = panel
            .on("hearth/out/panel")
            .iter()
            .filter(|p| **p == want)
            .count();
        assert!(copies <= 1, "{point}: {copies} copies");
        // the next start finishes the delivery without a second copy
        let d = common::Daemon::start(dir.path(), &cfg);
        let c = d.client().await;
        wait_status(&c, "delivered", |s| s["connected"] == true).await;
        drain_outbox(&d).await;
        let got = panel.on("hearth/out/panel");
        assert_eq!(
            got.iter().filter(|p| **p == want).count(),
            1,
            "{point}: {got:?}"
        );
        drop(c);
        // a clean stop: the last delete is not waited for on the disk
        // (docs/smart-home.md), and a kill -9 here would leave a PUBREL to
        // repeat, at which the next round's hook would fire
        let mut d = d;
        d.term();
    }
}

/// A panel subscribed to `hearth/out/panel` at QoS 2, and a device to
/// send from.
async fn qos2_panel(broker: &Broker) -> (TestClient, TestClient) {
    let panel = TestClient::connect_qos(
        broker.port,
        "panel",
        &["hearth/out/panel"],
        QoS::ExactlyOnce,
    )
    .await;
    let dev = TestClient::connect(broker.port, "dev", &[]).await;
    (panel, dev)
}

/// Waits until the daemon's outbox is empty, then a little for the broker.
async fn drain_outbox(d: &common::Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_len(d).await != 0 {
        assert!(Instant::now() < deadline, "replies stayed in the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Replies still in the outbox (through `status`, which counts them; a
/// build without the count gets 2 s).
async fn outbox_len(d: &common::Daemon) -> u64 {
    let c = d.client().await;
    match status(&c).await["outbox"].as_u64() {
        Some(n) => n,
        None => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            0
        }
    }
}

/// Item 7 as it was found: kill -9 right after a reply reached its
/// subscriber, many times (5b0ef1f answered 4-5 turns of 40 twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_each_reply_never_repeats_one() {
    let (broker, fake) = (Broker::start(), common::FakeOpenAi::start().await);
    let (panel, dev) = qos2_panel(&broker).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake.url, &broker, "");
    let n = 12;
    for i in 0..n {
        let mut d = common::Daemon::start(dir.path(), &cfg);
        let c = d.client().await;
        wait_status(&c, "connected", |s| s["connected"] == true).await;
        dev.publish(
            "hearth/in/panel",
            format!("{{\"text\": \"k{i}\", \"id\": \"m{i}\"}}"),
            false,
        )
        .await;
        let want = format!("echo: k{i}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = panel
                .got
                .lock()
                .unwrap()
                .iter()
                .any(|(_, p, _)| p.contains(&want));
            if seen {
                break;
            }
            assert!(Instant::now() < deadline, "no reply {i}:\n{}", d.log());
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        d.kill9();
    }
    // one more start delivers whatever was cut off
    let d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    wait_status(&c, "connected", |s| s["connected"] == true).await;
    drain_outbox(&d).await;
    let got = panel.on("hearth/out/panel");
    for i in 0..n {
        let want = format!("echo: k{i}");
        assert_eq!(
            got.iter().filter(|p| **p == want).count(),
            1,
            "reply {i}: {got:?}"
        );
    }
}

/// At QoS 1 a reply still arrives (at least once); `reply_format = "json"`
/// gives it an id that stays the same on every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_qos_1_and_json_replies() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let panel = TestClient::connect(broker.port, "panel", &["hearth/out/panel"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &fake.url,
        &broker,
        "reply_qos = 1\nreply_format = \"json\"\n",
    );
    let d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    wait_status(&c, "connected", |s| s["connected"] == true).await;
    panel.publish("hearth/in/panel", "hi there", false).await;
    let p = panel
        .wait_for("hearth/out/panel", Duration::from_secs(20), |p| {
            p.contains("echo: hi there")
        })
        .await;
    let v: Value = serde_json::from_str(&p).unwrap();
    assert_eq!(v["text"], "echo: hi there");
    let run = v["runId"].as_str().unwrap();
    assert!(
        v["id"].as_str().unwrap().starts_with(&format!("{run}:")),
        "{v}"
    );
}

/// Item 8: discovery cannot get around the high-risk gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_cannot_defeat_the_high_risk_gate() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(
        broker.port,
        "sim",
        &[
            "zigbee2mqtt/Front door/set",
            "zigbee2mqtt/Front door/set/state",
            "attacker/set",
            "hearth/in/panel",
        ],
    )
    .await;
    let lock = json!({"name": "Front door", "cmd_t": "zigbee2mqtt/Front door/set",
        "stat_t": "zigbee2mqtt/Front door", "value_template": "{{ value_json.state }}",
        "payload_lock": "LOCK", "payload_unlock": "UNLOCK", "state_locked": "LOCKED", "state_unlocked": "UNLOCKED",
        "dev": {"ids": ["0x00158d0001"], "name": "Front door"}});
    sim.publish(
        "homeassistant/lock/front_door/config",
        lock.to_string(),
        true,
    )
    .await;
    // a "switch" on the lock's topic whose on is UNLOCK, and one below it
    sim.publish("homeassistant/switch/party/config",
        json!({"name": "Party lights", "cmd_t": "zigbee2mqtt/Front door/set", "payload_on": "UNLOCK"}).to_string(), true).await;
    sim.publish("homeassistant/switch/party2/config",
        json!({"name": "Disco ball", "cmd_t": "zigbee2mqtt/Front door/set/state", "payload_on": "UNLOCK"}).to_string(), true).await;
    // the lock's id from another discovery topic, commands elsewhere
    sim.publish(
        "homeassistant/lock/impostor/config",
        json!({"name": "Front door", "object_id": "front_door", "cmd_t": "attacker/set",
               "dev": {"ids": ["evil"], "name": "Front door"}})
        .to_string(),
        true,
    )
    .await;
    // a command topic under Hearth's own prefix
    sim.publish(
        "homeassistant/switch/loop/config",
        json!({"name": "Loop", "cmd_t": "hearth/in/panel"}).to_string(),
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "allow_high_risk = [\"lock.front_door\"]\n";
    let d = common::Daemon::start(dir.path(), &config(&fake.url, &broker, extra));
    let c = d.client().await;
    wait_status(&c, "discovery", |s| {
        s["connected"] == true && s["entities"] == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = devices(&c).await;
    let ids: Vec<&str> = list.iter().map(|e| e["entity"].as_str().unwrap()).collect();
    assert!(!ids.contains(&"switch.loop"), "{ids:?}");
    for e in &list {
        assert_eq!(e["high_risk"], true, "{e}");
    }
    for (i, id) in ["switch.party", "switch.party2"].iter().enumerate() {
        let r = chat(
            &c,
            &format!("[call:device_set:{{\"entity\":\"{id}\",\"action\":\"turn_on\"}}]"),
            &format!("p{i}"),
        )
        .await;
        assert!(r.contains("high-risk"), "{r}");
    }
    // the approved lock still goes to its own topic, not the impostor's
    let r = chat(
        &c,
        "[call:device_set:{\"entity\":\"lock.front_door\",\"action\":\"unlock\"}]",
        "l1",
    )
    .await;
    assert!(!r.contains("error"), "{r}");
    sim.wait_for("zigbee2mqtt/Front door/set", Duration::from_secs(5), |p| {
        p == "UNLOCK"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.on("zigbee2mqtt/Front door/set").len(),
        1,
        "only the lock's own command"
    );
    assert!(sim.on("zigbee2mqtt/Front door/set/state").is_empty());
    assert!(sim.on("attacker/set").is_empty());
    assert!(sim.on("hearth/in/panel").is_empty());
    let log = d.log();
    assert!(log.contains("refused a discovery config"), "{log}");
    assert!(log.contains("under Hearth's own topics"), "{log}");

    // The approved lock re-announced on its own topic by the same device,
    // with its payloads swapped: refused, the first config stays.
    let mut swapped = lock.clone();
    swapped["payload_lock"] = json!("UNLOCK");
    swapped["payload_unlock"] = json!("LOCK");
    sim.publish(
        "homeassistant/lock/front_door/config",
        swapped.to_string(),
        true,
    )
    .await;
    common::until("the refusal", Duration::from_secs(10), || {
        d.log().contains("changes how it is commanded")
    })
    .await;
    let r = chat(
        &c,
        "[call:device_set:{\"entity\":\"lock.front_door\",\"action\":\"lock\"}]",
        "l2",
    )
    .await;
    assert!(!r.contains("error"), "{r}");
    sim.wait_for("zigbee2mqtt/Front door/set", Duration::from_secs(5), |p| {
        p == "LOCK"
    })
    .await;
    // The lock removed (an empty config), then a switch on its topic: the
    // topic is still a lock's.
    sim.publish("homeassistant/lock/front_door/config", "", true)
        .await;
    sim.publish(
        "homeassistant/switch/later/config",
        json!({"name": "Later", "cmd_t": "zigbee2mqtt/Front door/set", "payload_on": "UNLOCK"})
            .to_string(),
        true,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !devices(&c)
        .await
        .iter()
        .any(|e| e["entity"] == "switch.later")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "switch.later not discovered"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let r = chat(
        &c,
        "[call:device_set:{\"entity\":\"switch.later\",\"action\":\"turn_on\"}]",
        "l3",
    )
    .await;
    assert!(r.contains("high-risk"), "{r}");
    // The owner forgets the lock: its new config is taken.
    let f = c
        .request("devices.forget", json!({"entity": "lock.front_door"}))
        .await
        .unwrap();
    assert_eq!(f["forgotten"], true, "{f}");
    sim.publish(
        "homeassistant/lock/front_door/config",
        swapped.to_string(),
        true,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !devices(&c)
        .await
        .iter()
        .any(|e| e["entity"] == "lock.front_door")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock did not come back"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A garage door re-announced without its device class stays high-risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_cannot_shed_its_class() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(broker.port, "sim", &["garage/set"]).await;
    let door = json!({"name": "Garage", "cmd_t": "garage/set", "device_class": "garage",
                      "dev": {"ids": ["g1"], "name": "Garage"}});
    sim.publish("homeassistant/cover/garage/config", door.to_string(), true)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &config(&fake.url, &broker, ""));
    let c = d.client().await;
    wait_status(&c, "discovery", |s| s["entities"] == 1).await;
    let mut plain = door.clone();
    plain.as_object_mut().unwrap().remove("device_class");
    sim.publish("homeassistant/cover/garage/config", plain.to_string(), true)
        .await;
    common::until("the refusal", Duration::from_secs(10), || {
        d.log().contains("changes how it is commanded")
    })
    .await;
    let r = chat(
        &c,
        "[call:device_set:{\"entity\":\"cover.garage\",\"action\":\"open\"}]",
        "g1",
    )
    .await;
    assert!(r.contains("high-risk"), "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sim.on("garage/set").is_empty());
}

/// Item 9: `devices_list` output is capped like every tool's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_output_is_capped() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(broker.port, "sim", &[]).await;
    let n = 150;
    for i in 0..n {
        let p = json!({"name": format!("Plug {i} with a rather long name for the list"), "cmd_t": format!("plugs/{i}/set"),
                       "dev": {"ids": [format!("plug{i}")], "name": format!("Plug {i}"), "sa": "Garage"}});
        sim.publish(
            &format!("homeassistant/switch/plug{i}/config"),
            p.to_string(),
            true,
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &config(&fake.url, &broker, ""));
    let c = d.client().await;
    wait_status(&c, "discovery", |s| s["entities"] == n).await;
    let r = chat(&c, "[call:devices_list:{}]", "dl").await;
    assert!(r.starts_with("tool said: "), "{r}");
    let n_req = fake.log.count();
    let last = &fake.log.all()[n_req - 1];
    let tool = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .unwrap();
    let text = tool["content"].as_str().unwrap();
    assert!(
        text.len() <= hearth::tool::MAX_OUTPUT + 200,
        "{} bytes",
        text.len()
    );
    assert!(
        text.contains("more devices not shown"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
}

/// A reply longer than one MQTT packet holds is cut to fit (a packet over
/// the limit would fail on every reconnect and take the channel down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_is_cut_to_one_message() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let panel = TestClient::connect(broker.port, "panel", &["hearth/out/panel"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake.url, &broker, "reply_format = \"json\"\n");
    let d = common::Daemon::start(dir.path(), &cfg);
    let c = d.client().await;
    wait_status(&c, "connected", |s| s["connected"] == true).await;
    // control characters: six bytes each once escaped in JSON
    let long = "\u{1}".repeat(200_000);
    panel.publish("hearth/in/panel", long, false).await;
    let p = panel
        .wait_for("hearth/out/panel", Duration::from_secs(20), |p| {
            p.contains("reply cut")
        })
        .await;
    assert!(p.len() <= 256 * 1024, "{} bytes", p.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = status(&c).await;
    assert_eq!(
        (s["connected"].as_bool(), s["reconnects"].as_u64()),
        (Some(true), Some(0)),
        "{s}"
    );
}
