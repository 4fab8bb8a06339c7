//! `[channels.mqtt]`: the broker connection, topics, device-control safety
//! and triggers. Absent section: no MQTT at all.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMqtt {
    url: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    keep_alive_secs: Option<u64>,
    topic_prefix: Option<String>,
    discovery_prefix: Option<String>,
    confirm_timeout_ms: Option<u64>,
    reply_qos: Option<u8>,
    reply_format: Option<ReplyFormat>,
    #[serde(default)]
    allow_high_risk: Vec<String>,
    #[serde(default)]
    triggers: Vec<RawTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: Option<String>,
    entity: Option<String>,
    topic: Option<String>,
    state: Option<String>,
    payload: Option<String>,
    agent: Option<String>,
    message: Option<String>,
    reply_to: Option<String>,
    cooldown_secs: Option<u64>,
}

/// How a reply is put on `<prefix>/out/<device>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyFormat {
    /// The reply text as it is.
    Text,
    /// `{"text", "id", "runId"}`: `id` is the same on every copy of one
    /// reply, for devices that deduplicate.
    Json,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// PEM file with the CA that signed the broker's certificate; without
    /// it, the public web roots.
    pub ca_file: Option<PathBuf>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    /// `<prefix>/in/<device>`, `<prefix>/out/<device>`, `<prefix>/status`.
    pub topic_prefix: String,
    /// Home Assistant discovery prefix; `None` = discovery off.
    pub discovery_prefix: Option<String>,
    /// How long `device_set` waits for the state topic to confirm.
    pub confirm_timeout: Duration,
    /// 2 (default): exactly once across crashes while the broker keeps
    /// Hearth's session; 1: at least once.
    pub reply_qos: u8,
    pub reply_format: ReplyFormat,
    /// High-risk entities (locks, alarms, door covers) the agent may operate.
    pub allow_high_risk: Vec<String>,
    pub triggers: Vec<Trigger>,
    /// The URL as configured, without credentials (for status).
    pub url: String,
}

/// A device event that starts a run.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    pub on: TriggerOn,
    /// The agent that gets the event (default: bindings for channel mqtt).
    pub agent: Option<String>,
    /// The message the agent gets (default: a description of the event).
    pub message: Option<String>,
    /// Where the agent's reply goes: `mqtt:<device>` (default: nowhere but
    /// the session transcript).
    pub reply_to: Option<String>,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOn {
    /// An entity's normalized state becomes `state` (e.g. `on`).
    Entity { entity: String, state: String },
    /// A message on `topic`, optionally only with this exact payload.
    Topic {
        topic: String,
        payload: Option<String>,
    },
}

/// Validates `[channels.mqtt]`; problems go to `add(key, message)`.
pub(crate) fn parse(m: RawMqtt, add: &mut dyn FnMut(String, String)) -> Option<MqttConfig> {
    let key = |k: &str| format!("channels.mqtt.{k}");
    let (scheme, rest) = match m.url.split_once("://") {
        Some(x) => x,
        None => {
            add(
                key("url"),
                "must look like mqtt://host:1883 or mqtts://host:8883".into(),
            );
            ("mqtt", m.url.as_str())
        }
    };
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            add(
                key("url"),
                format!("unknown scheme {other:?}: use mqtt:// or mqtts://"),
            );
            false
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') {
        add(
            key("url"),
            "give only host and port in the URL; credentials go in username/password".into(),
        );
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h.trim_matches(['[', ']']).to_string(), p),
            _ => {
                add(key("url"), format!("bad port {p:?}"));
                (h.to_string(), 1883)
            }
        },
        None => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        add(key("url"), "no host".into());
    }
    if let Some(ca) = &m.ca_file {
        if !tls {
            add(key("ca_file"), "is only used with an mqtts:// URL".into());
        } else if !ca.is_file() {
            add(
                key("ca_file"),
                format!("{} is not a readable file", ca.display()),
            );
        }
    }
    if m.password.is_some() && m.username.is_none() {
        add(key("password"), "needs a username".into());
    }
    let prefix = m.topic_prefix.unwrap_or_else(|| "hearth".into());
    let bad_topic = |t: &str| super::topic::check_name(t).is_err() || t.ends_with('/');
    if bad_topic(&prefix) {
        add(
            key("topic_prefix"),
            "must be a topic without wildcards or a trailing '/'".into(),
        );
    }
    let discovery = m.discovery_prefix.unwrap_or_else(|| "homeassistant".into());
    if !discovery.is_empty() && bad_topic(&discovery) {
        add(
            key("discovery_prefix"),
            "must be a topic without wildcards, or \"\" to turn discovery off".into(),
        );
    }
    let keep_alive = m.keep_alive_secs.unwrap_or(30);
    if !(5..=3600).contains(&keep_alive) {
        add(key("keep_alive_secs"), "must be between 5 and 3600".into());
    }
    let confirm_ms = m.confirm_timeout_ms.unwrap_or(3000);
    if !(100..=60_000).contains(&confirm_ms) {
        add(
            key("confirm_timeout_ms"),
            "must be between 100 and 60000".into(),
        );
    }
    let reply_qos = m.reply_qos.unwrap_or(2);
    if !matches!(reply_qos, 1 | 2) {
        add(key("reply_qos"), "must be 1 or 2".into());
    }
    let client_id = m.client_id.unwrap_or_else(default_client_id);
    if client_id.is_empty() || client_id.len() > 128 {
        add(key("client_id"), "must be 1-128 characters".into());
    }
    let mut triggers = Vec::new();
    for (i, t) in m.triggers.into_iter().enumerate() {
        let k = format!("channels.mqtt.triggers[{i}]");
        let on = match (t.entity, t.topic) {
            (Some(entity), None) => match t.state {
                Some(state) => TriggerOn::Entity {
                    entity,
                    state: state.to_lowercase(),
                },
                None => {
                    add(
                        k.clone(),
                        "an entity trigger needs state (e.g. \"on\")".into(),
                    );
                    continue;
                }
            },
            (None, Some(topic)) => {
                if let Err(e) = super::topic::check_filter(&topic) {
                    add(format!("{k}.topic"), e);
                    continue;
                }
                TriggerOn::Topic {
                    topic,
                    payload: t.payload,
                }
            }
            _ => {
                add(k.clone(), "set either entity (with state) or topic".into());
                continue;
            }
        };
        if let Some(r) = &t.reply_to {
            let telegram = |a: &str| {
                let (chat, topic) = a.split_once(':').map_or((a, None), |(c, t)| (c, Some(t)));
                chat.parse::<i64>().is_ok() && topic.is_none_or(|t| t.parse::<i64>().is_ok())
            };
            if !(r.strip_prefix("mqtt:").is_some_and(valid_device)
                || r.strip_prefix("telegram:").is_some_and(telegram))
            {
                add(
                    format!("{k}.reply_to"),
                    "must be mqtt:<device id> (letters, digits, - _ .) or telegram:<chat id>"
                        .into(),
                );
            }
        }
        triggers.push(Trigger {
            name: t.name.unwrap_or_else(|| format!("trigger{}", i + 1)),
            on,
            agent: t.agent,
            message: t.message,
            reply_to: t.reply_to,
            cooldown: Duration::from_secs(match t.cooldown_secs {
                Some(c) if c > 86_400 => {
                    add(format!("{k}.cooldown_secs"), "must be at most 86400".into());
                    30
                }
                c => c.unwrap_or(30),
            }),
        });
    }
    Some(MqttConfig {
        url: format!("{scheme}://{rest}"),
        host,
        port,
        tls,
        ca_file: m.ca_file,
        client_id,
        username: m.username,
        password: m.password.map(Secret::new),
        keep_alive: Duration::from_secs(keep_alive),
        topic_prefix: prefix,
        discovery_prefix: (!discovery.is_empty()).then_some(discovery),
        confirm_timeout: Duration::from_millis(confirm_ms),
        reply_qos,
        reply_format: m.reply_format.unwrap_or(ReplyFormat::Text),
        allow_high_risk: m.allow_high_risk,
        triggers,
    })
}

/// A device id usable in `<prefix>/in/<device>`: one topic level.
pub fn valid_device(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `hearth-<hostname>`: stable across restarts (the broker keeps the
/// session and queues QoS 1 messages for it), distinct per machine.
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    if host.is_empty() {
        "hearth".into()
    } else {
        format!("hearth-{host}")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_str(text, None, &|_| None).map_err(|e| {
            e.0.iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    #[test]
    fn defaults_and_url_forms() {
        assert!(load("").unwrap().mqtt.is_none());
        let c = load("[channels.mqtt]\nurl = \"mqtt://broker.lan\"\n")
            .unwrap()
            .mqtt
            .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls),
            ("broker.lan", 1883, false)
        );
        assert_eq!(c.topic_prefix, "hearth");
        assert_eq!(c.discovery_prefix.as_deref(), Some("homeassistant"));
        assert!(c.client_id.starts_with("hearth"));
        let c =
            load("[channels.mqtt]\nurl = \"mqtts://broker.lan:8884\"\ndiscovery_prefix = \"\"\n")
                .unwrap()
                .mqtt
                .unwrap();
        assert_eq!((c.port, c.tls, c.discovery_prefix), (8884, true, None));
    }

    #[test]
    fn problems_are_reported_together() {
        let e = load(
            "[channels.mqtt]\nurl = \"http://user:pw@host:99999\"\ntopic_prefix = \"a/#\"\n\
             password = \"x\"\nca_file = \"/nonexistent.pem\"\nconfirm_timeout_ms = 5\n\
             [[channels.mqtt.triggers]]\nentity = \"binary_sensor.x\"\n\
             [[channels.mqtt.triggers]]\ntopic = \"t\"\nreply_to = \"telegram:one\"\n",
        )
        .unwrap_err();
        let all = e.join("\n");
        for want in [
            "channels.mqtt.url: unknown scheme",
            "credentials go in username/password",
            "channels.mqtt.topic_prefix",
            "channels.mqtt.password: needs a username",
            "channels.mqtt.ca_file: is only used with an mqtts:// URL",
            "channels.mqtt.confirm_timeout_ms",
            "channels.mqtt.triggers[0]: an entity trigger needs state",
            "channels.mqtt.triggers[1].reply_to",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let e = load("[channels.mqtt]\nurl = \"mqtt://h\"\ncolour = 1\n").unwrap_err();
        assert!(e.join(" ").contains("colour"), "{e:?}");
    }
}
