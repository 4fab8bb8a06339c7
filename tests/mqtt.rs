//! The MQTT channel and smart-home control against a real broker
//! (Debian's mosquitto, started per test on a loopback port): discovery of
//! every supported component from retained configs, a chat turn that
//! operates a device and sees it confirmed, device text in and replies
//! out, garbage ignored, a broker restart without losing a message, the
//! last will, triggers.

mod common;

use std::time::Duration;

use common::broker::{
    config, fixtures, publish_fixtures, simulate_kitchen_light, status, wait_status, Broker,
    TestClient,
};
use serde_json::json;

async fn chat(c: &common::Client, text: &str, key: &str) -> String {
    let r = common::send(c, "main", text, key).await;
    let fin = common::terminal(c, r["runId"].as_str().unwrap()).await;
    common::text_of(&fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_device_control_and_triggers() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let sim = TestClient::connect(
        broker.port,
        "sim",
        &[
            "home/kitchen/light/set",
            "home/kitchen/light/brightness/set",
            "zigbee2mqtt/Front door/set",
            "zigbee2mqtt/Coffee machine/set",
            "hearth/out/hallway",
        ],
    )
    .await;
    let fx = fixtures();
    publish_fixtures(&sim).await;
    // malformed configs: not JSON, no command topic, unknown component
    sim.publish("homeassistant/light/broken/config", "{not json", true)
        .await;
    sim.publish("homeassistant/switch/nocmd/config", r#"{"name":"x"}"#, true)
        .await;
    sim.publish("homeassistant/vacuum/robo/config", r#"{"cmd_t":"v"}"#, true)
        .await;
    sim.publish(
        "homeassistant/light/spare/config",
        r#"{"name":"Spare","cmd_t":"spare/set"}"#,
        true,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let extra = "[[channels.mqtt.triggers]]\nentity = \"binary_sensor.doorbell\"\nstate = \"on\"\n\
                 message = \"Someone is at the door.\"\nreply_to = \"mqtt:hallway\"\n";
    let d = common::Daemon::start(dir.path(), &config(&fake.url, &broker, extra));
    let c = d.client().await;
    let n = fx.len() + 1;
    wait_status(&c, "discovery", |s| {
        s["connected"] == true && s["entities"] == n
    })
    .await;

    // an empty retained config removes the entity
    sim.publish("homeassistant/light/spare/config", "", true)
        .await;
    wait_status(&c, "removal", |s| s["entities"] == fx.len()).await;
    // Home Assistant restarting: the retained configs are read again
    sim.publish("homeassistant/status", "online", false).await;
    common::until("the re-read", Duration::from_secs(10), || {
        d.log().contains("re-reading discovery configs")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&c).await["entities"], fx.len());

    let list = c.request("devices.list", json!({})).await.unwrap()["devices"].clone();
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["entity"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = fx.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    let get = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["entity"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(get("light.living_room_lamp")["brightness"], 50);
    assert_eq!(get("light.living_room_lamp")["state"], "on");
    assert_eq!(get("light.kitchen")["name"], "Kitchen Light");
    assert_eq!(get("cover.living_room_blind")["position"], 100);
    assert_eq!(get("lock.front_door")["state"], "locked");
    assert_eq!(get("climate.bathroom_radiator")["state"], "heat");
    assert_eq!(get("climate.bathroom_radiator")["target_temperature"], 20.0);
    assert_eq!(
        get("climate.bathroom_radiator")["current_temperature"],
        18.5
    );
    assert_eq!(get("sensor.hallway_temperature")["state"], "21.3");
    assert_eq!(get("sensor.hallway_temperature")["unit"], "°C");
    assert_eq!(get("binary_sensor.doorbell")["state"], "off");
    assert_eq!(get("fan.bedroom_fan")["state"], "off");
    assert_eq!(get("cover.garage_door")["high_risk"], true);
    let kitchen = c
        .request("devices.list", json!({"area": "kitchen"}))
        .await
        .unwrap();
    assert_eq!(kitchen["devices"].as_array().unwrap().len(), 2, "{kitchen}");

    // the command line through the daemon
    let v = common::cli_json(&d, &["devices", "--json", "--component", "climate"], &[]);
    assert_eq!(v[0]["entity"], "climate.bathroom_radiator");

    // a simulated light that reports what it was told
    let light = simulate_kitchen_light(&sim);

    let reply = chat(
        &c,
        r#"turn on the kitchen light [call:device_set:{"entity":"kitchen light","action":"turn_on","value":60}]"#,
        "k1",
    )
    .await;
    assert!(reply.contains(r#""confirmed":true"#), "{reply}");
    assert_eq!(sim.on("home/kitchen/light/set"), vec!["ON"]);
    assert_eq!(sim.on("home/kitchen/light/brightness/set"), vec!["60"]);
    let k = c
        .request("devices.list", json!({"query": "kitchen light"}))
        .await
        .unwrap();
    assert_eq!(k["devices"][0]["state"], "on", "{k}");
    assert_eq!(k["devices"][0]["brightness"], 60, "{k}");

    // again: the state does not change, but the device repeating it confirms
    let reply = chat(
        &c,
        r#"[call:device_set:{"entity":"light.kitchen","action":"turn_on","value":60}]"#,
        "k1b",
    )
    .await;
    assert!(reply.contains(r#""confirmed":true"#), "{reply}");

    // a device that does not report back: sent, unconfirmed
    let reply = chat(
        &c,
        r#"[call:device_set:{"entity":"coffee machine","action":"turn_on"}]"#,
        "k2",
    )
    .await;
    assert!(reply.contains(r#""confirmed":false"#), "{reply}");
    assert_eq!(sim.on("zigbee2mqtt/Coffee machine/set"), vec!["ON"]);

    // a lock is high-risk: refused without approval, nothing published
    let reply = chat(
        &c,
        r#"[call:device_set:{"entity":"front door","action":"unlock"}]"#,
        "k3",
    )
    .await;
    assert!(reply.contains("high-risk"), "{reply}");
    // an unknown name says so
    let reply = chat(&c, r#"[call:device_state:{"entity":"garden hose"}]"#, "k4").await;
    assert!(reply.contains("no device matches"), "{reply}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sim.on("zigbee2mqtt/Front door/set").is_empty());

    // the doorbell trigger: a run whose reply goes to the hallway panel;
    // the retained "idle" at startup did not fire it
    assert!(sim.on("hearth/out/hallway").is_empty());
    sim.publish("home/doorbell/state", "pressed", false).await;
    let msg = sim
        .wait_for("hearth/out/hallway", Duration::from_secs(10), |p| {
            p.contains("Doorbell")
        })
        .await;
    assert!(msg.starts_with("echo: Someone is at the door."), "{msg}");
    assert!(msg.contains("(binary_sensor.doorbell) is now on"), "{msg}");

    light.abort();
    let log = d.log();
    assert!(log.contains("ignoring a bad discovery config"), "{log}");

    // after a clean stop, `hearth devices` reads devices.redb itself, with
    // the states flushed at shutdown
    drop(c);
    let mut d = d;
    assert_eq!(d.term(), Some(0));
    let v = common::cli_json(&d, &["devices", "kitchen light", "--json"], &[]);
    let k = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "light.kitchen")
        .unwrap();
    assert_eq!(
        (k["state"].as_str(), k["brightness"].as_i64()),
        (Some("on"), Some(60)),
        "{v}"
    );
}

/// A broker, the fake provider, a connected daemon, and a device `panel`
/// listening on its out topic.
struct Panel {
    broker: Broker,
    fake: common::FakeOpenAi,
    panel: TestClient,
    _dir: tempfile::TempDir,
    d: common::Daemon,
    c: common::Client,
}

impl Panel {
    async fn start() -> Panel {
        let broker = Broker::start();
        let fake = common::FakeOpenAi::start().await;
        let panel = TestClient::connect(broker.port, "panel", &["hearth/out/panel"]).await;
        let dir = tempfile::tempdir().unwrap();
        let d = common::Daemon::start(dir.path(), &config(&fake.url, &broker, ""));
        let c = d.client().await;
        wait_status(&c, "connection", |s| s["connected"] == true).await;
        Panel {
            broker,
            fake,
            panel,
            _dir: dir,
            d,
            c,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_text_is_answered_and_garbage_is_ignored() {
    let Panel {
        broker: _broker,
        fake: _fake,
        panel,
        d,
        c,
        _dir: _state,
    } = Panel::start().await;

    panel
        .publish("hearth/in/panel", vec![0xff, 0xfe, 0x00], false)
        .await;
    panel
        .publish("hearth/in/panel", r#"{"nope": 1}"#, false)
        .await;
    panel.publish("hearth/in/panel", "   ", false).await;
    panel.publish("hearth/in/bad id", "x", false).await;
    panel.publish("hearth/in/panel", "hello there", false).await;
    panel
        .wait_for("hearth/out/panel", Duration::from_secs(10), |p| {
            p == "echo: hello there"
        })
        .await;
    panel
        .publish(
            "hearth/in/panel",
            r#"{"text": "from json", "from": "kid"}"#,
            false,
        )
        .await;
    panel
        .wait_for("hearth/out/panel", Duration::from_secs(10), |p| {
            p == "echo: from json"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        panel.on("hearth/out/panel").len(),
        2,
        "only real messages are answered"
    );
    // the session is the device's, on channel mqtt
    let s = c.request("sessions.list", json!({})).await.unwrap();
    assert!(
        s["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["channel"] == "mqtt"),
        "{s}"
    );
    let log = d.log();
    assert!(
        log.contains("not UTF-8") && log.contains("invalid device id"),
        "{log}"
    );
    assert_eq!(status(&c).await["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_message_either_way() {
    let Panel {
        mut broker,
        fake,
        panel,
        d: _d,
        c,
        _dir: _state,
    } = Panel::start().await;

    // a reply that is ready while the broker is down waits in the outbox
    panel
        .publish("hearth/in/panel", "[slow:100] first", false)
        .await;
    wait_status(&c, "the first message", |s| s["inbound"] == 1).await;
    broker.stop();
    common::until("the reply to be written", Duration::from_secs(10), || {
        fake.log.count() >= 1
    })
    .await;
    wait_status(&c, "the disconnect", |s| s["connected"] == false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // the broker comes back with Hearth's persistent session: a message
    // sent before Hearth reconnects is queued for it
    broker.restart();
    let sender = TestClient::connect(broker.port, "sender", &[]).await;
    sender.publish("hearth/in/panel", "second", false).await;

    panel
        .wait_for("hearth/out/panel", Duration::from_secs(20), |p| {
            p.ends_with("done: [slow:100] first")
        })
        .await;
    panel
        .wait_for("hearth/out/panel", Duration::from_secs(20), |p| {
            p == "echo: second"
        })
        .await;
    // both replies left the outbox once the broker acknowledged them
    let s = wait_status(&c, "both acknowledged", |s| s["replies"] == 2).await;
    assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(panel.on("hearth/out/panel").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_when_killed_and_offline_when_stopped() {
    let broker = Broker::start();
    let fake = common::FakeOpenAi::start().await;
    let watch = TestClient::connect(broker.port, "watch", &["hearth/status"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&fake.url, &broker, "");
    let mut d = common::Daemon::start(dir.path(), &cfg);
    watch
        .wait_for("hearth/status", Duration::from_secs(10), |p| p == "online")
        .await;
    d.kill9();
    watch
        .wait_for("hearth/status", Duration::from_secs(15), |p| p == "offline")
        .await;
    let n = watch.on("hearth/status").len();
    let mut d = common::Daemon::start(dir.path(), &cfg);
    common::until("online again", Duration::from_secs(10), || {
        watch.on("hearth/status")[n..].iter().any(|p| p == "online")
    })
    .await;
    assert_eq!(d.term(), Some(0));
    common::until("offline on a clean stop", Duration::from_secs(10), || {
        watch
            .on("hearth/status")
            .last()
            .is_some_and(|p| p == "offline")
    })
    .await;
    assert!(d.log().contains("mqtt: stopped"));
}

/// A CA and a server certificate for localhost, made with openssl.
fn make_certs(dir: &std::path::Path, name: &str) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca = format!("{name}-ca");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        &format!("{ca}.key"),
        "-out",
        &format!("{ca}.crt"),
        "-subj",
        &format!("/CN=Hearth test {name}"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{name}.key"),
        "-out",
        &format!("{name}.csr"),
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        &format!("{ca}.crt"),
        "-CAkey",
        &format!("{ca}.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &format!("{name}.crt"),
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca() {
    let tls_port = common::free_port();
    let broker = Broker::start_with(|dir| {
        make_certs(dir, "server");
        make_certs(dir, "other");
        format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/server-ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n",
            dir.display()
        )
    });
    let fake = common::FakeOpenAi::start().await;
    let panel = TestClient::connect(broker.port, "panel", &["hearth/out/panel"]).await;
    let mqtt = |ca: &str| {
        common::config_with(
            &fake.url,
            &format!(
                "[channels.mqtt]\nurl = \"mqtts://localhost:{tls_port}\"\nca_file = \"{}/{ca}\"\n",
                broker.dir.path().display()
            ),
        )
    };
    // the right CA: connected over TLS, messages flow
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &mqtt("server-ca.crt"));
    let c = d.client().await;
    wait_status(&c, "a TLS connection", |s| s["connected"] == true).await;
    panel.publish("hearth/in/panel", "over tls", false).await;
    panel
        .wait_for("hearth/out/panel", Duration::from_secs(10), |p| {
            p == "echo: over tls"
        })
        .await;
    drop(c);
    drop(d);

    // another CA: refused, and status says why
    let dir = tempfile::tempdir().unwrap();
    let d = common::Daemon::start(dir.path(), &mqtt("other-ca.crt"));
    let c = d.client().await;
    let s = wait_status(&c, "a certificate error", |s| !s["lastError"].is_null()).await;
    assert_eq!(s["connected"], false);
    assert!(
        s["lastError"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_used_and_never_shown() {
    let broker = Broker::start_with(|dir| {
        let pw = dir.join("passwd");
        let out = std::process::Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&pw)
            .args(["hearth", "s3cret-Pass-77"])
            .output()
            .expect("mosquitto_passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("password_file {}\n", pw.display())
    });
    let fake = common::FakeOpenAi::start().await;
    // the password comes from the environment, as a household would set it
    let cfg = config(
        &fake.url,
        &broker,
        "username = \"hearth\"\npassword = \"${MQTT_PASSWORD}\"\n",
    );
    for (pass, ok) in [("s3cret-Pass-77", true), ("wrong-Pass-99", false)] {
        let dir = tempfile::tempdir().unwrap();
        let d = common::Daemon::start_env(dir.path(), &cfg, &[("MQTT_PASSWORD", pass)]);
        let c = d.client().await;
        let s = wait_status(&c, "the connection attempt", |s| {
            s["connected"] == true || !s["lastError"].is_null()
        })
        .await;
        assert_eq!(s["connected"] == true, ok, "{s}");
        let status = c.request("status", json!({})).await.unwrap().to_string();
        let config = c
            .request("config.get", json!({}))
            .await
            .unwrap()
            .to_string();
        drop(c);
        drop(d);
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
        for text in [&status, &config, &log] {
            assert!(!text.contains(pass), "the password leaked");
        }
    }
}
