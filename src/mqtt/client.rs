//! The MQTT connection: one task owns rumqttc's event loop.
//!
//! - Session: a fixed client id with `clean_session = false`, so the
//!   broker keeps the subscriptions and queues QoS 1 messages while Hearth
//!   is away; every ConnAck re-subscribes anyway (a broker that lost its
//!   state). Reconnects back off 1, 2, 4 ... 30 s.
//! - Birth and will: `<prefix>/status` = `online` (retained) on connect,
//!   `offline` (retained) as the last will and on a clean stop.
//! - Inbound (`<prefix>/in/<device>`): manual acks. A QoS 1 message is
//!   acknowledged only after `Gateway::accept` committed it to the state
//!   database; while Hearth shuts down it stays unacknowledged and the
//!   broker delivers it again.
//! - Replies: a run's reply for `mqtt:<device>` is in the durable outbox
//!   (committed with the run). This task publishes it (QoS 1) and deletes
//!   it when the broker's PUBACK arrives, mapping packet ids to outbox
//!   rows ([`Tracker`]); after a reconnect without a session, everything
//!   unacknowledged is published again.
//! - Discovery configs, state topics and triggers: see `discovery`,
//!   `registry`, [`Mqtt::on_message`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::{valid_device, MqttConfig, TriggerOn};
use super::discovery::{self, Expect};
use super::registry::{Registry, STATE_FLUSH};
use crate::gateway::Gateway;
use crate::routing::{Inbound, PeerKind};
use crate::store::{now_ms, Store};

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest packet either way (discovery configs of big devices are a few
/// KiB; rumqttc's default of 10 KiB is too tight).
const MAX_PACKET: usize = 256 * 1024;

/// Connection facts for `status`.
#[derive(Debug, Default, Clone)]
struct Status {
    connected: bool,
    since_ms: u64,
    last_error: Option<String>,
    reconnects: u64,
    inbound: u64,
    replies: u64,
}

/// Packet ids of our QoS 1 publishes → outbox rows, so a reply leaves the
/// outbox only when the broker has it. rumqttc assigns packet ids in the
/// order publish requests are taken, and reports each as
/// `Outgoing::Publish(pkid)`; a retransmission reuses an id in flight.
#[derive(Default)]
struct Tracker {
    fifo: VecDeque<Option<u64>>,
    inflight: HashMap<u16, Option<u64>>,
    /// Outbox rows published and not acknowledged yet.
    outstanding: HashSet<u64>,
}

impl Tracker {
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.inflight.contains_key(&pkid) {
            return;
        }
        let seq = self.fifo.pop_front().flatten();
        self.inflight.insert(pkid, seq);
    }

    fn acked(&mut self, pkid: u16) -> Option<u64> {
        let seq = self.inflight.remove(&pkid).flatten()?;
        self.outstanding.remove(&seq);
        Some(seq)
    }

    /// The broker had no session: rumqttc dropped what was in flight.
    fn reset(&mut self) {
        self.fifo.clear();
        self.inflight.clear();
        self.outstanding.clear();
    }
}

/// The shared MQTT handle: publishing, the registry, status.
pub struct Mqtt {
    pub cfg: MqttConfig,
    pub registry: Arc<Registry>,
    client: AsyncClient,
    tracker: Mutex<Tracker>,
    status: Mutex<Status>,
    /// Last firing of each trigger (cooldown).
    fired: Mutex<HashMap<String, Instant>>,
}

fn status_topic(cfg: &MqttConfig) -> String {
    format!("{}/status", cfg.topic_prefix)
}

/// The rustls client config on the ring provider: the CA file's
/// certificates, or the public web roots.
fn tls_config(cfg: &MqttConfig) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(f) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
                .with_context(|| format!("cannot read the CA file {}", f.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("{} is not a PEM certificate file", f.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{} holds no certificate", f.display());
            }
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("bad certificate in {}", f.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Mqtt {
    /// The handle and its event loop (not connected yet: [`run`](Self::run)
    /// drives it). The registry is `<state>/devices.redb`.
    pub fn new(cfg: MqttConfig, state_dir: &Path) -> anyhow::Result<(Arc<Mqtt>, EventLoop)> {
        let registry = Arc::new(Registry::open(&state_dir.join("devices.redb"))?);
        let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        o.set_keep_alive(cfg.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                status_topic(&cfg),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(u) = &cfg.username {
            o.set_credentials(
                u.clone(),
                cfg.password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            );
        }
        if cfg.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls_config(&cfg)?),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        // small packets (a reply, an ack) must not wait for Nagle: with the
        // peer's delayed acks that costs ~40 ms per hop
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(10);
        eventloop.set_network_options(net);
        Ok((
            Arc::new(Mqtt {
                cfg,
                registry,
                client,
                tracker: Mutex::new(Tracker::default()),
                status: Mutex::new(Status::default()),
                fired: Mutex::new(HashMap::new()),
            }),
            eventloop,
        ))
    }

    /// Queues a QoS 1 publish; `seq` is the outbox row it delivers.
    fn publish(
        &self,
        topic: &str,
        payload: String,
        retain: bool,
        seq: Option<u64>,
    ) -> Result<(), String> {
        let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| format!("cannot publish to {topic}: {e}"))?;
        t.fifo.push_back(seq);
        if let Some(s) = seq {
            t.outstanding.insert(s);
        }
        Ok(())
    }

    pub fn connected(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connected
    }

    /// For `status` (no credentials).
    pub fn status_json(&self) -> Value {
        let s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({"url": self.cfg.url, "clientId": self.cfg.client_id, "connected": s.connected,
               "since": (s.since_ms > 0).then(|| crate::util::rfc3339(s.since_ms)),
               "lastError": s.last_error, "reconnects": s.reconnects,
               "inbound": s.inbound, "replies": s.replies,
               "entities": self.registry.len(),
               "discovery": self.cfg.discovery_prefix})
    }

    /// Publishes an action's payloads and waits up to `confirm_timeout`
    /// for the state to show it. Returns (published, confirmed, state).
    pub async fn command(
        &self,
        id: &str,
        action: &str,
        value: Option<&Value>,
    ) -> Result<Value, String> {
        let e = self
            .registry
            .get(id)
            .ok_or_else(|| format!("no entity {id:?}"))?;
        let cmd = e.command(action, value)?;
        if !self.connected() {
            return Err(format!(
                "not connected to the MQTT broker ({}); nothing was sent",
                self.cfg.url
            ));
        }
        let mut changes = self.registry.changes();
        for (t, p) in &cmd.publish {
            self.publish(t, p.clone(), false, None)?;
        }
        tracing::info!(entity = %id, action, "device command published");
        let published: Vec<Value> = cmd
            .publish
            .iter()
            .map(|(t, p)| json!({"topic": t, "payload": p}))
            .collect();
        let confirmed = match cmd.expect {
            Expect::Nothing => None,
            expect => {
                // confirmed by the first state message after the publish
                // that shows the expected state (a device repeating an
                // unchanged state counts)
                let deadline = tokio::time::Instant::now() + self.cfg.confirm_timeout;
                let mut ok = false;
                loop {
                    use tokio::sync::broadcast::error::RecvError;
                    match tokio::time::timeout_at(deadline, changes.recv()).await {
                        Err(_) | Ok(Err(RecvError::Closed)) => break,
                        Ok(Ok(e)) if e != id => continue,
                        Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                    }
                    let now = self.registry.get(id).map(|e| e.state);
                    if now.is_some_and(|s| expect.met(&s)) {
                        ok = true;
                        break;
                    }
                }
                Some(ok)
            }
        };
        let state = self.registry.get(id).map(|e| e.describe());
        Ok(json!({
            "entity": id,
            "action": action,
            "published": published,
            "confirmed": confirmed,
            "result": match confirmed {
                Some(true) => "confirmed: the device reported the new state",
                Some(false) => "unconfirmed: sent, but the device did not report the new state in time",
                None => "sent (this kind of device reports no state to confirm)",
            },
            "state": state,
        }))
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn subscribe_all(&self) {
        let mut topics = vec![format!("{}/in/+", self.cfg.topic_prefix)];
        if let Some(d) = &self.cfg.discovery_prefix {
            topics.push(format!("{d}/+/+/config"));
            topics.push(format!("{d}/+/+/+/config"));
            topics.push(format!("{d}/status"));
        }
        for t in &self.cfg.triggers {
            if let TriggerOn::Topic { topic, .. } = &t.on {
                topics.push(topic.clone());
            }
        }
        topics.extend(self.registry.state_topics());
        self.subscribe(topics);
    }

    fn subscribe(&self, topics: Vec<String>) {
        for chunk in topics.chunks(64) {
            let filters = chunk
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(filters) {
                tracing::warn!("mqtt: cannot subscribe: {e}");
            }
        }
    }

    /// Publishes outbox replies not yet in flight.
    async fn deliver_outbox(&self, store: &Store) {
        if !self.connected() {
            return;
        }
        let s = store.clone();
        let rows = match tokio::task::spawn_blocking(move || s.outbox("mqtt")).await {
            Ok(Ok(r)) => r,
            other => {
                tracing::error!("mqtt: cannot read the outbox: {other:?}");
                return;
            }
        };
        let mut drop_rows = Vec::new();
        for (seq, item) in rows {
            let pending = self
                .tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .outstanding
                .contains(&seq);
            if pending {
                continue;
            }
            let dev = item.address();
            if !valid_device(dev) {
                tracing::warn!(to = %item.to, "mqtt: dropping a reply to an invalid device id");
                drop_rows.push(seq);
                continue;
            }
            let topic = format!("{}/out/{dev}", self.cfg.topic_prefix);
            if let Err(e) = self.publish(&topic, item.text.clone(), false, Some(seq)) {
                tracing::warn!("mqtt: {e}; will retry");
                break;
            }
        }
        if !drop_rows.is_empty() {
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.outbox_done(&drop_rows)).await;
        }
    }

    /// Runs the connection until `stop`; then publishes `offline` and
    /// disconnects. `stop` should fire after the queue drained, so the
    /// last replies still go out.
    pub async fn run(
        self: Arc<Self>,
        mut ev: EventLoop,
        gw: Arc<Gateway>,
        outbox: Arc<Notify>,
        stop: CancellationToken,
    ) {
        let store = gw.queue.store().clone();
        let mut backoff = Duration::from_secs(1);
        let mut flush = tokio::time::interval(STATE_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(url = %self.cfg.url, client_id = %self.cfg.client_id, "mqtt: connecting");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = outbox.notified() => self.deliver_outbox(&store).await,
                _ = flush.tick() => {
                    self.flush_states().await;
                    // also a safety net for the outbox (one read per tick)
                    self.deliver_outbox(&store).await;
                }
                r = ev.poll() => match r {
                    Ok(Event::Incoming(Packet::ConnAck(ca))) => {
                        backoff = Duration::from_secs(1);
                        if !ca.session_present {
                            self.tracker.lock().unwrap_or_else(|p| p.into_inner()).reset();
                        }
                        self.set_status(|s| {
                            s.connected = true;
                            s.since_ms = now_ms();
                            s.last_error = None;
                        });
                        tracing::info!(url = %self.cfg.url, session = ca.session_present, "mqtt: connected");
                        let _ = self.publish(&status_topic(&self.cfg), "online".into(), true, None);
                        self.subscribe_all();
                        self.deliver_outbox(&store).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        self.on_message(&gw, &p).await;
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        let seq = self.tracker.lock().unwrap_or_else(|p| p.into_inner()).acked(a.pkid);
                        if let Some(seq) = seq {
                            self.set_status(|s| s.replies += 1);
                            let s = store.clone();
                            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.outbox_done(&[seq])).await {
                                tracing::error!("mqtt: cannot clear a delivered reply: {e}");
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        self.tracker.lock().unwrap_or_else(|p| p.into_inner()).sent(pkid);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let was = self.connected();
                        self.set_status(|s| {
                            s.connected = false;
                            s.last_error = Some(e.to_string());
                            s.reconnects += u64::from(was);
                        });
                        if was {
                            tracing::warn!(url = %self.cfg.url, "mqtt: connection lost: {e}; reconnecting");
                        } else {
                            tracing::warn!(url = %self.cfg.url, "mqtt: cannot connect: {e}; retrying in {} s", backoff.as_secs());
                        }
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
            }
        }
        // a clean stop: the last replies, offline, disconnect
        if self.connected() {
            self.deliver_outbox(&store).await;
            let _ = self.publish(&status_topic(&self.cfg), "offline".into(), true, None);
            let _ = self.client.try_disconnect();
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                match tokio::time::timeout_at(until, ev.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                        let seq = self
                            .tracker
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .acked(a.pkid);
                        if let Some(seq) = seq {
                            let s = store.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || s.outbox_done(&[seq])).await;
                        }
                    }
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        self.tracker
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .sent(pkid);
                    }
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(_)) => {}
                }
            }
        }
        self.flush_states().await;
        tracing::info!("mqtt: stopped");
    }

    async fn flush_states(&self) {
        let r = self.registry.clone();
        match tokio::task::spawn_blocking(move || r.flush_states()).await {
            Ok(Err(e)) => tracing::warn!("mqtt: {e}"),
            Err(e) => tracing::warn!("mqtt: state flush failed: {e}"),
            _ => {}
        }
    }

    /// One incoming message: a device's text, a discovery config, a state
    /// update, a trigger. Acknowledged at the end, except an inbound text
    /// that could not be stored (the broker delivers it again).
    async fn on_message(&self, gw: &Arc<Gateway>, p: &Publish) {
        let topic = p.topic.as_str();
        let mut ack = true;
        let in_prefix = format!("{}/in/", self.cfg.topic_prefix);
        if let Some(dev) = topic.strip_prefix(&in_prefix) {
            ack = self.on_device_text(gw, dev, &p.payload).await;
        } else if let Some(d) = self
            .cfg
            .discovery_prefix
            .as_deref()
            .filter(|d| topic.starts_with(&format!("{d}/")))
        {
            if topic == format!("{d}/status") {
                if p.payload.as_ref() == b"online" {
                    // Home Assistant restarted and devices re-announce:
                    // read the retained configs again
                    tracing::info!("mqtt: {topic} = online; re-reading discovery configs");
                    let topics = vec![format!("{d}/+/+/config"), format!("{d}/+/+/+/config")];
                    for t in &topics {
                        let _ = self.client.try_unsubscribe(t.clone());
                    }
                    self.subscribe(topics);
                }
            } else if topic.ends_with("/config") {
                self.on_discovery(d, topic, &p.payload).await;
            } else {
                self.on_state(gw, topic, &p.payload, p.retain).await;
            }
        } else {
            self.on_state(gw, topic, &p.payload, p.retain).await;
        }
        if ack {
            if let Err(e) = self.client.try_ack(p) {
                tracing::warn!("mqtt: cannot acknowledge a message: {e}");
            }
        }
    }

    /// Returns whether to acknowledge.
    async fn on_device_text(&self, gw: &Arc<Gateway>, dev: &str, payload: &[u8]) -> bool {
        if !valid_device(dev) {
            tracing::warn!(device = %dev, "mqtt: ignoring a message for an invalid device id");
            return true;
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            tracing::warn!(device = %dev, bytes = payload.len(), "mqtt: ignoring a message that is not UTF-8 text");
            return true;
        };
        let (text, from, id) = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => match o.get("text").and_then(|t| t.as_str()) {
                Some(t) => (
                    t.to_string(),
                    o.get("from").and_then(|f| f.as_str()).map(str::to_string),
                    o.get("id").and_then(|f| f.as_str()).map(str::to_string),
                ),
                None => {
                    tracing::warn!(device = %dev, "mqtt: ignoring a JSON message without \"text\"");
                    return true;
                }
            },
            _ => (text.to_string(), None, None),
        };
        if text.trim().is_empty() {
            tracing::warn!(device = %dev, "mqtt: ignoring an empty message");
            return true;
        }
        let m = Inbound {
            channel: "mqtt".into(),
            account: None,
            peer_kind: PeerKind::Direct,
            peer: dev.to_string(),
            thread: None,
            sender: from,
            text,
            platform_message_id: id.map(|i| format!("{dev}:{i}")),
            reply_to: Some(format!("mqtt:{dev}")),
            agent: None,
        };
        self.set_status(|s| s.inbound += 1);
        match gw.accept(m).await {
            Ok(a) => {
                tracing::info!(device = %dev, accepted = ?a, "mqtt: message accepted");
                true
            }
            Err(crate::queue::QueueError::ShuttingDown) => false,
            Err(crate::queue::QueueError::Store(e)) => {
                tracing::error!(device = %dev, "mqtt: cannot store the message ({e}); the broker will deliver it again");
                false
            }
            Err(e) => {
                tracing::warn!(device = %dev, "mqtt: message refused: {e}");
                let _ = self.publish(
                    &format!("{}/out/{dev}", self.cfg.topic_prefix),
                    format!("Hearth could not take this message: {e}"),
                    false,
                    None,
                );
                true
            }
        }
    }

    async fn on_discovery(&self, prefix: &str, topic: &str, payload: &[u8]) {
        match discovery::parse(prefix, topic, payload) {
            Ok(Some(e)) => {
                let id = e.id.clone();
                let topics: Vec<String> = e.state_topics().into_iter().map(|(t, _)| t).collect();
                let r = self.registry.clone();
                match tokio::task::spawn_blocking(move || r.upsert(e)).await {
                    Ok(Ok(u)) => {
                        if u != super::registry::Upsert::Unchanged {
                            tracing::info!(entity = %id, change = ?u, "mqtt: discovered");
                            self.subscribe(topics);
                        }
                    }
                    Ok(Err(e)) => tracing::error!("mqtt: {e}"),
                    Err(e) => tracing::error!("mqtt: registry task failed: {e}"),
                }
            }
            Ok(None) => {
                let r = self.registry.clone();
                let t = topic.to_string();
                if let Ok(Ok(Some(id))) =
                    tokio::task::spawn_blocking(move || r.remove_config(&t)).await
                {
                    tracing::info!(entity = %id, "mqtt: entity removed (empty discovery config)");
                }
            }
            Err(discovery::DiscoveryError::Unsupported(c)) => {
                tracing::debug!(
                    topic,
                    "mqtt: skipping discovery of unsupported component {c}"
                );
            }
            Err(e) => tracing::warn!(topic, "mqtt: ignoring a bad discovery config: {e}"),
        }
    }

    async fn on_state(&self, gw: &Arc<Gateway>, topic: &str, payload: &[u8], retained: bool) {
        let text = String::from_utf8_lossy(payload);
        let changes = self.registry.on_state(topic, &text, now_ms());
        // triggers: transitions only, and not the retained state a
        // (re)subscription replays
        if retained {
            return;
        }
        for t in &self.cfg.triggers {
            let hit = match &t.on {
                TriggerOn::Entity { entity, state } => {
                    changes.iter().find_map(|(id, before, after)| {
                        (id == entity
                            && after.value.as_deref() == Some(state.as_str())
                            && before.value != after.value)
                            .then(|| {
                                let name = self.registry.get(id).map_or(id.clone(), |e| e.name);
                                format!("[device event] {name} ({id}) is now {state}.")
                            })
                    })
                }
                TriggerOn::Topic {
                    topic: f,
                    payload: want,
                } => (topic_matches(f, topic) && want.as_ref().is_none_or(|w| w.as_str() == text))
                    .then(|| format!("[device event] {topic}: {text}")),
            };
            let Some(event) = hit else { continue };
            {
                let mut fired = self.fired.lock().unwrap_or_else(|p| p.into_inner());
                if fired
                    .get(&t.name)
                    .is_some_and(|at| at.elapsed() < t.cooldown)
                {
                    tracing::info!(trigger = %t.name, "mqtt: trigger in cooldown; not starting a run");
                    continue;
                }
                fired.insert(t.name.clone(), Instant::now());
            }
            let text = match &t.message {
                Some(m) => format!("{m}\n\n{event}"),
                None => event,
            };
            let m = Inbound {
                channel: "mqtt".into(),
                account: None,
                peer_kind: PeerKind::Direct,
                peer: format!("event-{}", t.name),
                thread: None,
                sender: Some("system".into()),
                text,
                platform_message_id: None,
                reply_to: t.reply_to.clone(),
                agent: t.agent.clone(),
            };
            match gw.accept(m).await {
                Ok(a) => {
                    tracing::info!(trigger = %t.name, accepted = ?a, "mqtt: trigger started a run")
                }
                Err(e) => {
                    tracing::warn!(trigger = %t.name, "mqtt: trigger could not start a run: {e}")
                }
            }
        }
    }
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_a_broker() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
    }

    #[test]
    fn tracker_maps_acks_to_outbox_rows() {
        let mut t = Tracker::default();
        t.fifo.extend([Some(7), None, Some(9)]);
        t.outstanding.extend([7, 9]);
        t.sent(1);
        t.sent(2);
        t.sent(1); // a retransmission
        t.sent(3);
        assert_eq!(t.acked(2), None);
        assert_eq!(t.acked(3), Some(9));
        assert_eq!(t.acked(1), Some(7));
        assert!(t.outstanding.is_empty());
        t.fifo.push_back(Some(11));
        t.reset();
        assert!(t.fifo.is_empty());
    }
}
