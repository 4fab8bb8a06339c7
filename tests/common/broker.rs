//! A real MQTT broker for tests: Debian's mosquitto on a loopback port
//! with its own config file (persistence in its temp dir, so a restart
//! keeps persistent sessions), stopped by PID when dropped. And a small
//! rumqttc test client that records what it receives.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// More mosquitto.conf lines (another listener).
    extra: String,
    child: Option<Child>,
}

/// Debian installs it in /usr/sbin, which a non-root PATH may lack.
fn mosquitto() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(|_| String::new())
    }

    /// `extra` gets the broker's temp dir and returns more config lines.
    pub fn start_with(extra: impl FnOnce(&std::path::Path) -> String) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra(dir.path());
        let mut b = Broker {
            port: super::free_port(),
            dir,
            extra,
            child: None,
        };
        b.spawn();
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let data: PathBuf = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // `user root`: run as whoever starts it (as root it would switch to
        // the mosquitto user, who cannot read this temp dir)
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\nset_tcp_nodelay true\nlog_dest file {}/mosquitto.log\nlog_type all\n{}\n",
                self.port,
                data.display(),
                self.dir.path().display(),
                self.extra
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker (SIGTERM: it saves its persistent sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::unsafe_kill(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A config with the fake provider and `[channels.mqtt]` on `broker`,
/// plus `extra` lines for that section.
pub fn config(fake: &str, broker: &Broker, extra: &str) -> String {
    super::config_with(
        fake,
        &format!(
            "[channels.mqtt]\nurl = \"{}\"\nclient_id = \"hearth-test\"\nkeep_alive_secs = 5\nconfirm_timeout_ms = 1500\n{extra}\n",
            broker.url()
        ),
    )
}

/// The `mqtt` part of `status`.
pub async fn status(c: &super::Client) -> serde_json::Value {
    c.request("status", serde_json::json!({})).await.unwrap()["mqtt"].clone()
}

/// Polls `status` until `f` holds (20 s at most).
pub async fn wait_status(
    c: &super::Client,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(c).await;
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A test client: publishes, and records every message on its
/// subscriptions as (topic, payload, retained).
pub struct TestClient {
    pub client: AsyncClient,
    pub got: Arc<Mutex<Vec<(String, String, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestClient {
    /// A client with a persistent session (the broker queues its QoS 1
    /// messages while it is away) that re-subscribes on every connect.
    pub async fn connect(port: u16, id: &str, subscribe: &[&str]) -> TestClient {
        TestClient::connect_qos(port, id, subscribe, QoS::AtLeastOnce).await
    }

    /// [`connect`](Self::connect) subscribing at `qos`.
    pub async fn connect_qos(port: u16, id: &str, subscribe: &[&str], qos: QoS) -> TestClient {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(false);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = AsyncClient::new(o, 256);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        ev.set_network_options(net);
        let topics: Vec<String> = subscribe.iter().map(|s| s.to_string()).collect();
        let c2 = client.clone();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let subs = subscribe.len();
        let task = tokio::spawn(async move {
            let mut acked = 0;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        g2.lock().unwrap().push((
                            p.topic.clone(),
                            String::from_utf8_lossy(&p.payload).into_owned(),
                            p.retain,
                        ));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acked += 1;
                        if acked >= subs {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &topics {
                            let _ = c2.try_subscribe(t.clone(), qos);
                        }
                        if subs == 0 {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("test client connected")
            .unwrap();
        TestClient { client, got, task }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// The messages on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, ..)| t == topic)
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// Waits until `topic` got a message satisfying `f`; returns it.
    pub async fn wait_for(&self, topic: &str, wait: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = self.on(topic).into_iter().find(|p| f(p)) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no matching message on {topic}; got {:?}",
                self.got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Home Assistant / Zigbee2MQTT discovery fixture
/// (tests/fixtures/ha_discovery.json): `{id, topic, payload, state?}` each.
pub fn fixtures() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ha_discovery.json"
    ))
    .unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["entities"]
        .as_array()
        .unwrap()
        .clone()
}

/// Publishes every fixture's discovery config and first state, retained.
pub async fn publish_fixtures(sim: &TestClient) {
    for e in &fixtures() {
        sim.publish(e["topic"].as_str().unwrap(), e["payload"].to_string(), true)
            .await;
        if let Some(st) = e["state"].as_array() {
            sim.publish(st[0].as_str().unwrap(), st[1].as_str().unwrap(), true)
                .await;
        }
    }
}

/// The fixture's kitchen light, answering each command with its new
/// state: `.../light/set` → `.../light/state`, `.../brightness/set` →
/// `.../brightness`. `sim` must subscribe to the two command topics.
pub fn simulate_kitchen_light(sim: &TestClient) -> tokio::task::JoinHandle<()> {
    let (client, got) = (sim.client.clone(), sim.got.clone());
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let cmds: Vec<(String, String)> = got
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, ..)| t.starts_with("home/kitchen/light/"))
                .map(|(t, p, _)| (t.clone(), p.clone()))
                .collect();
            for (t, p) in &cmds[seen..] {
                let state = match t.strip_suffix("/brightness/set") {
                    Some(base) => format!("{base}/brightness"),
                    None => t.replace("/set", "/state"),
                };
                let _ = client
                    .publish(state, QoS::AtLeastOnce, false, p.clone())
                    .await;
            }
            seen = cmds.len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}
