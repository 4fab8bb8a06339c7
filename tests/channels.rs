//! The channel conformance harness (tests/common/conformance.rs) run over
//! every channel: one platform per channel, the same checks for all.

mod common;

use std::time::Duration;

use common::broker::{self, Broker, TestClient};
use common::conformance::{self, Fut, Platform, Sent};
use common::Daemon;
use serde_json::json;

/// MQTT: a device on a real mosquitto publishing `{"text", "id"}` to
/// `hearth/in/<device>` and reading `hearth/out/<device>`.
struct Mqtt {
    broker: Broker,
    device: Option<TestClient>,
}

impl Platform for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
    }
    fn config(&self, fake_url: &str) -> String {
        broker::config(fake_url, &self.broker, "")
    }
    fn attach<'a>(&'a mut self, d: &'a Daemon) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.device.is_none() {
                let port = self.broker.port;
                self.device = Some(
                    TestClient::connect(port, "conformance-panel", &["hearth/out/panel"]).await,
                );
            }
            let c = d.client().await;
            broker::wait_status(&c, "connected", |s| s["connected"] == true).await;
            c.close().await;
        })
    }
    fn send<'a>(&'a mut self, id: &'a str, text: &'a str) -> Fut<'a, Sent> {
        Box::pin(async move {
            let payload = json!({"text": text, "id": id}).to_string();
            self.device
                .as_ref()
                .unwrap()
                .publish("hearth/in/panel", payload, false)
                .await;
            Sent::Held
        })
    }
    fn replies<'a>(&'a mut self, _d: &'a Daemon) -> Fut<'a, Vec<String>> {
        Box::pin(async move { self.device.as_ref().unwrap().on("hearth/out/panel") })
    }
}

/// The web chat: a WebSocket client sending `chat.send` with the platform
/// id as its idempotency key; what it was answered is the session's history.
#[derive(Default)]
struct WebChat {
    client: Option<hearth::client::Client>,
}

const WEB_SESSION: &str = "agent:main:conformance";

impl Platform for WebChat {
    fn name(&self) -> &'static str {
        "webchat"
    }
    fn config(&self, fake_url: &str) -> String {
        common::config_with(fake_url, "")
    }
    fn attach<'a>(&'a mut self, d: &'a Daemon) -> Fut<'a, ()> {
        Box::pin(async move {
            self.client = Some(d.client().await);
        })
    }
    fn send<'a>(&'a mut self, id: &'a str, text: &'a str) -> Fut<'a, Sent> {
        Box::pin(async move {
            let r = self
                .client
                .as_ref()
                .unwrap()
                .request(
                    "chat.send",
                    json!({"sessionKey": WEB_SESSION, "message": text, "idempotencyKey": id}),
                )
                .await;
            match r {
                Ok(_) => Sent::Held,
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("retry") || e.contains("shutting down") || e.contains("closed"),
                        "a refusal must say to retry: {e}"
                    );
                    Sent::Refused
                }
            }
        })
    }
    fn replies<'a>(&'a mut self, _d: &'a Daemon) -> Fut<'a, Vec<String>> {
        Box::pin(async move {
            let h = common::history(self.client.as_ref().unwrap(), WEB_SESSION).await;
            h.iter()
                .filter(|m| m["role"] == "assistant")
                .map(|m| m["content"][0]["text"].as_str().unwrap_or("").to_string())
                .collect()
        })
    }
}

/// Telegram: the fake Bot API; the owner's DM is chat 111. A message sent
/// again keeps its `update_id`, as Telegram's own redelivery does.
struct Telegram {
    fake: common::telegram::FakeTelegram,
    ids: std::collections::HashMap<String, i64>,
}

const OWNER: i64 = 111;

impl Platform for Telegram {
    fn name(&self) -> &'static str {
        "telegram"
    }
    fn config(&self, fake_url: &str) -> String {
        common::config_with(
            fake_url,
            &self.fake.section(&format!("allow_from = [{OWNER}]")),
        )
    }
    fn attach<'a>(&'a mut self, d: &'a Daemon) -> Fut<'a, ()> {
        Box::pin(async move {
            let c = d.client().await;
            let t = std::time::Instant::now();
            loop {
                let s = c.request("status", json!({})).await.unwrap();
                let tg = s["channels"]
                    .as_array()
                    .and_then(|a| a.iter().find(|c| c["kind"] == "telegram").cloned());
                if tg.is_some_and(|t| t["status"]["polling"] == true) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "telegram never polled:\n{}",
                    d.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.close().await;
        })
    }
    fn send<'a>(&'a mut self, id: &'a str, text: &'a str) -> Fut<'a, Sent> {
        Box::pin(async move {
            let update = json!({"message": {"message_id": 1, "date": 0, "chat": {"id": OWNER, "type": "private"},
                                            "from": {"id": OWNER, "is_bot": false, "first_name": "Dana"}, "text": text}});
            match self.ids.get(id) {
                Some(&uid) => self.fake.push_again(uid, update),
                None => {
                    let uid = self.fake.push(update);
                    self.ids.insert(id.to_string(), uid);
                }
            }
            Sent::Held
        })
    }
    fn replies<'a>(&'a mut self, _d: &'a Daemon) -> Fut<'a, Vec<String>> {
        Box::pin(async move { self.fake.sent_to(OWNER) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_conforms() {
    let mut p = Telegram {
        fake: common::telegram::FakeTelegram::start().await,
        ids: Default::default(),
    };
    tokio::time::timeout(Duration::from_secs(240), conformance::run(&mut p))
        .await
        .expect("the harness finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_conforms() {
    let mut p = Mqtt {
        broker: Broker::start(),
        device: None,
    };
    tokio::time::timeout(Duration::from_secs(240), conformance::run(&mut p))
        .await
        .expect("the harness finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webchat_conforms() {
    let mut p = WebChat::default();
    tokio::time::timeout(Duration::from_secs(240), conformance::run(&mut p))
        .await
        .expect("the harness finished");
}
