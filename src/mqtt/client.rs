//! The MQTT connection: one task owns rumqttc's event loop.
//!
//! - Session: a fixed client id with `clean_session = false`, so the
//!   broker keeps the subscriptions and queues QoS 1 messages while Hearth
//!   is away; every ConnAck re-subscribes anyway (a broker that lost its
//!   state). Reconnects back off 1, 2, 4 ... 30 s.
//! - Birth and will: `<prefix>/status` = `online` (retained) on connect,
//!   `offline` (retained) as the last will and on a clean stop.
//! - Inbound (`<prefix>/in/<device>`): manual acks. A QoS 1 message is
//!   acknowledged only after the channel's ingest handle committed it to
//!   the state database; while Hearth shuts down it stays unacknowledged and the
//!   broker delivers it again.
//! - Replies: a run's reply for `mqtt:<device>` is in the durable outbox
//!   (committed with the run); `outbox` puts it on the wire, exactly once
//!   at QoS 2 (the default) as long as the broker keeps the session.
//! - Topics: every filter is checked before it is subscribed, so one bad
//!   topic cannot make a SUBSCRIBE malformed (the broker would drop the
//!   connection), and refused filters are logged from the SUBACK.
//! - Discovery configs, state topics and triggers: see `discovery`,
//!   `registry`, [`Mqtt::on_message`].

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{json, Value};

use super::config::{valid_device, MqttConfig, TriggerOn};
use super::discovery::{self, Expect};
use super::outbox::Tracker;
use super::registry::{Registry, STATE_FLUSH};
use crate::channel::{ChannelContext, ChatKind, Inbound, IngestOutcome, Outbox, Sender};
use crate::store::now_ms;

/// At a clean stop, how long the last replies get to be acknowledged
/// (within the daemon's `MQTT_STOP`).
const STOP_ACKS: Duration = Duration::from_secs(2);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest packet either way (discovery configs of big devices are a few
/// KiB; rumqttc's default of 10 KiB is too tight).
pub const MAX_PACKET: usize = 256 * 1024;

/// Connection facts for `status`.
#[derive(Debug, Default, Clone)]
pub(super) struct Status {
    connected: bool,
    since_ms: u64,
    last_error: Option<String>,
    reconnects: u64,
    inbound: u64,
    pub(super) replies: u64,
}

/// SUBSCRIBE filter lists waiting for their packet id, and by packet id
/// waiting for the SUBACK.
type Subs = (VecDeque<Vec<String>>, HashMap<u16, Vec<String>>);

/// The shared MQTT handle: publishing, the registry, status.
pub struct Mqtt {
    pub cfg: MqttConfig,
    pub registry: Arc<Registry>,
    client: AsyncClient,
    pub(super) tracker: Mutex<Tracker>,
    status: Mutex<Status>,
    /// Filters of the SUBSCRIBEs not acknowledged yet, in request order
    /// (for naming the ones a SUBACK refuses).
    subs: Mutex<Subs>,
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
        let registry = Arc::new(Registry::open(
            &state_dir.join("devices.redb"),
            &cfg.topic_prefix,
        )?);
        let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        o.set_keep_alive(cfg.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(super::outbox::INFLIGHT)
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
        // ids above INFLIGHT are the outbox's own (vendor/README.md)
        eventloop.state.reserve_pkids(super::outbox::PKIDS);
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
                subs: Mutex::new(Default::default()),
                status: Mutex::new(Status::default()),
                fired: Mutex::new(HashMap::new()),
            }),
            eventloop,
        ))
    }

    /// Queues a QoS 1 publish; `seq` is the outbox row it delivers.
    pub(super) fn publish(
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
        t.queued(seq);
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

    pub(super) fn set_status(&self, f: impl FnOnce(&mut Status)) {
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

    /// Reads the retained discovery configs again (subscribing anew makes
    /// the broker send them).
    pub fn rediscover(&self) {
        let Some(d) = &self.cfg.discovery_prefix else {
            return;
        };
        let topics = vec![format!("{d}/+/+/config"), format!("{d}/+/+/+/config")];
        for t in &topics {
            let _ = self.client.try_unsubscribe(t.clone());
        }
        self.subscribe(topics);
    }

    fn subscribe(&self, topics: Vec<String>) {
        let topics: Vec<String> = topics
            .into_iter()
            .filter(|t| match super::topic::check_filter(t) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("mqtt: not subscribing to a bad topic: {e}");
                    false
                }
            })
            .collect();
        for chunk in topics.chunks(64) {
            let filters = chunk
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            match self.client.try_subscribe_many(filters) {
                Ok(()) => self.subs().0.push_back(chunk.to_vec()),
                Err(e) => tracing::warn!("mqtt: cannot subscribe: {e}"),
            }
        }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A SUBACK: names the filters the broker refused (the others hold).
    fn on_suback(&self, a: &rumqttc::SubAck) {
        let Some(filters) = self.subs().1.remove(&a.pkid) else {
            return;
        };
        for (f, code) in filters.iter().zip(&a.return_codes) {
            if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                tracing::warn!(filter = %f, "mqtt: the broker refused a subscription");
            }
        }
    }

    /// Runs the connection until `stop`; then publishes `offline` and
    /// disconnects. `stop` should fire after the queue drained, so the
    /// last replies still go out.
    pub async fn run(self: Arc<Self>, mut ev: EventLoop, cx: ChannelContext) {
        let store = cx.outbox.clone();
        let stop = cx.shutdown.clone();
        let mut backoff = Duration::from_secs(1);
        let mut flush = tokio::time::interval(STATE_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(url = %self.cfg.url, client_id = %self.cfg.client_id, "mqtt: connecting");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = store.notified() => self.deliver_outbox(&mut ev, &store, true).await,
                _ = flush.tick() => {
                    self.flush_states().await;
                    // also a safety net for the outbox (one read per tick)
                    self.deliver_outbox(&mut ev, &store, true).await;
                }
                r = ev.poll() => match r {
                    Ok(Event::Incoming(Packet::ConnAck(ca))) => {
                        backoff = Duration::from_secs(1);
                        if !ca.session_present {
                            self.tracker.lock().unwrap_or_else(|p| p.into_inner()).reset();
                            *self.subs() = Subs::default();
                        }
                        self.set_status(|s| {
                            s.connected = true;
                            s.since_ms = now_ms();
                            s.last_error = None;
                        });
                        tracing::info!(url = %self.cfg.url, session = ca.session_present, "mqtt: connected");
                        let _ = self.publish(&status_topic(&self.cfg), "online".into(), true, None);
                        self.subscribe_all();
                        self.deliver_outbox(&mut ev, &store, ca.session_present).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        self.on_message(&cx, &p).await;
                    }
                    Ok(Event::Incoming(p @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)))) => {
                        self.on_ack(&mut ev, &store, &p).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => self.on_suback(&a),
                    Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                        let mut s = self.subs();
                        if let Some(f) = s.0.pop_front() {
                            s.1.insert(pkid, f);
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
            self.finish(&mut ev, &store).await;
        }
        self.flush_states().await;
        tracing::info!("mqtt: stopped");
    }

    /// At a clean stop: the replies still in the outbox go out (waiting
    /// for their acknowledgements up to [`STOP_ACKS`]), then `offline`
    /// and DISCONNECT. A reply cut off here is completed on the next start.
    async fn finish(&self, ev: &mut EventLoop, store: &Outbox) {
        self.deliver_outbox(ev, store, true).await;
        let _ = self.publish(&status_topic(&self.cfg), "offline".into(), true, None);
        let until = tokio::time::Instant::now() + STOP_ACKS;
        let mut disconnecting = false;
        loop {
            let pending = self
                .tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .busy();
            if !disconnecting && (!pending || tokio::time::Instant::now() >= until) {
                let _ = self.client.try_disconnect();
                disconnecting = true;
            }
            let deadline = until + Duration::from_millis(500);
            match tokio::time::timeout_at(deadline, ev.poll()).await {
                Ok(Ok(Event::Incoming(
                    p @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)),
                ))) => {
                    self.on_ack(ev, store, &p).await;
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
    async fn on_message(&self, gw: &ChannelContext, p: &Publish) {
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
                    self.rediscover();
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
    async fn on_device_text(&self, gw: &ChannelContext, dev: &str, payload: &[u8]) -> bool {
        // `event-<trigger>` is a trigger's own session
        if !valid_device(dev) || dev.to_ascii_lowercase().starts_with("event-") {
            tracing::warn!(device = %dev, "mqtt: ignoring a message for an invalid device id");
            return true;
        }
        let (text, from, id) = match parse_device_text(payload) {
            Ok(t) => t,
            Err(why) => {
                tracing::warn!(device = %dev, bytes = payload.len(), "mqtt: ignoring a message: {why}");
                return true;
            }
        };
        let m = Inbound {
            channel: "mqtt".into(),
            account: None,
            chat: ChatKind::Device,
            peer: dev.to_string(),
            thread: None,
            sender: Sender {
                id: dev.to_string(),
                name: from,
            },
            text,
            platform_message_id: id.map(|i| format!("{dev}:{i}")),
            reply_to: Some(format!("mqtt:{dev}")),
            agent: None,
        };
        self.set_status(|s| s.inbound += 1);
        match gw.ingest.accept(m).await {
            o @ (IngestOutcome::Accepted { .. }
            | IngestOutcome::Duplicate { .. }
            | IngestOutcome::Command { .. }) => {
                tracing::info!(device = %dev, outcome = ?o, "mqtt: message accepted");
                true
            }
            IngestOutcome::RetryLater(why) => {
                tracing::warn!(device = %dev, "mqtt: message not taken now ({why}); the broker will deliver it again");
                false
            }
            IngestOutcome::Refused { why, reply } => {
                tracing::warn!(device = %dev, "mqtt: message refused: {why}");
                let _ = self.publish(
                    &format!("{}/out/{dev}", self.cfg.topic_prefix),
                    reply.unwrap_or_else(|| format!("Hearth could not take this message: {why}")),
                    false,
                    None,
                );
                true
            }
        }
    }

    async fn on_discovery(&self, prefix: &str, topic: &str, payload: &[u8]) {
        let parsed = discovery::parse(prefix, topic, payload).and_then(|e| match e {
            Some(e) => discovery::check_topics(&e, &self.cfg.topic_prefix).map(|()| Some(e)),
            None => Ok(None),
        });
        match parsed {
            Ok(Some(e)) => {
                let id = e.id.clone();
                let topics: Vec<String> = e.state_topics().into_iter().map(|(t, _)| t).collect();
                let r = self.registry.clone();
                match tokio::task::spawn_blocking(move || r.upsert(e)).await {
                    Ok(Ok(super::registry::Upsert::Refused(why))) => {
                        tracing::warn!(topic, "mqtt: refused a discovery config: {why}");
                    }
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

    async fn on_state(&self, gw: &ChannelContext, topic: &str, payload: &[u8], retained: bool) {
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
                } => (super::topic::matches(f, topic)
                    && want.as_ref().is_none_or(|w| w.as_str() == text))
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
                chat: ChatKind::Device,
                peer: format!("event-{}", t.name),
                thread: None,
                sender: Sender {
                    id: format!("trigger:{}", t.name),
                    name: Some(format!("trigger {}", t.name)),
                },
                text,
                platform_message_id: None,
                reply_to: t.reply_to.clone(),
                agent: t.agent.clone(),
            };
            match gw.ingest.accept(m).await {
                o @ (IngestOutcome::Accepted { .. } | IngestOutcome::Duplicate { .. }) => {
                    tracing::info!(trigger = %t.name, outcome = ?o, "mqtt: trigger started a run")
                }
                o => {
                    tracing::warn!(trigger = %t.name, outcome = ?o, "mqtt: trigger could not start a run")
                }
            }
        }
    }
}

/// A device's message: plain UTF-8 text, or JSON `{"text", "from"?,
/// "id"?}`. Returns (text, from, id), or why it is ignored.
pub fn parse_device_text(
    payload: &[u8],
) -> Result<(String, Option<String>, Option<String>), &'static str> {
    let text = std::str::from_utf8(payload).map_err(|_| "it is not UTF-8 text")?;
    let (text, from, id) = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => match o.get("text").and_then(|t| t.as_str()) {
            Some(t) => (
                t.to_string(),
                o.get("from").and_then(|f| f.as_str()).map(str::to_string),
                o.get("id").and_then(|f| f.as_str()).map(str::to_string),
            ),
            None => return Err("JSON without \"text\""),
        },
        _ => (text.to_string(), None, None),
    };
    if text.trim().is_empty() {
        return Err("it is empty");
    }
    let id = id.filter(|i| i.len() <= 200);
    Ok((text, from, id))
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_texts() {
        use super::parse_device_text as p;
        assert_eq!(p(b"hi").unwrap().0, "hi");
        let (t, f, i) = p(br#"{"text":"x","from":"kid","id":"7"}"#).unwrap();
        assert_eq!(
            (t.as_str(), f.as_deref(), i.as_deref()),
            ("x", Some("kid"), Some("7"))
        );
        assert!(p(b"\xff").is_err());
        assert!(p(br#"{"nope":1}"#).is_err());
        assert!(p(b"  ").is_err());
    }
}
