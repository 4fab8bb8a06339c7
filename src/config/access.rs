//! The keys every `[channels.<kind>]` section shares: who may talk to
//! Hearth there (`dm_policy`, `allow_from`, `members`) and which tools
//! their messages may use (`tools`). Taken out of the section before the
//! channel reads the rest.

use std::collections::BTreeMap;

use serde::Deserialize;

/// OpenClaw's `dmPolicy`: what happens to a direct message from a sender
/// nobody approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmPolicy {
    /// They get a short pairing code; nothing reaches an agent until the
    /// owner approves the code (`hearth pairing approve`).
    #[default]
    Pairing,
    /// Only `allow_from` / `members` (and approved pairings) get through.
    Allowlist,
    /// Anyone gets through, as a member.
    Open,
    /// No direct messages at all.
    Disabled,
}

impl DmPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Pairing => "pairing",
            DmPolicy::Allowlist => "allowlist",
            DmPolicy::Open => "open",
            DmPolicy::Disabled => "disabled",
        }
    }
}

/// The tools of senders other than the owner (`tools = { allow = [...],
/// deny = [...], high_risk = false }`). Deny wins; an empty allow list
/// allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderTools {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// May these senders operate high-risk devices that are pre-approved
    /// in `allow_high_risk`? (Default: no; only the owner.)
    pub high_risk: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSenderTools {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    high_risk: bool,
}

impl RawSenderTools {
    pub(crate) fn check(self, key: &str, add: &mut dyn FnMut(String, String)) -> SenderTools {
        for (i, p) in self.allow.iter().chain(&self.deny).enumerate() {
            if p.trim().is_empty() {
                add(format!("{key}[{i}]"), "is empty".into());
            }
        }
        SenderTools {
            allow: self.allow,
            deny: self.deny,
            high_risk: self.high_risk,
        }
    }
}

/// Access settings of one channel kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelAccess {
    pub dm_policy: DmPolicy,
    /// Sender ids that are the owner.
    pub allow_from: Vec<String>,
    /// Sender ids that are household members.
    pub members: Vec<String>,
    /// The tools of non-owner senders here (default: by trust).
    pub tools: Option<SenderTools>,
}

const KEYS: [&str; 4] = ["dm_policy", "allow_from", "members", "tools"];

/// Takes the shared keys out of every `[channels.<kind>]` table.
pub(crate) fn parse(
    channels: &mut BTreeMap<String, toml::Table>,
    add: &mut dyn FnMut(String, String),
) -> BTreeMap<String, ChannelAccess> {
    let mut out = BTreeMap::new();
    for (kind, t) in channels.iter_mut() {
        let key = |k: &str| format!("channels.{kind}.{k}");
        let mut a = ChannelAccess::default();
        for k in KEYS {
            let Some(v) = t.remove(k) else { continue };
            match k {
                "dm_policy" => match v.as_str() {
                    Some("pairing") => a.dm_policy = DmPolicy::Pairing,
                    Some("allowlist") => a.dm_policy = DmPolicy::Allowlist,
                    Some("open") => a.dm_policy = DmPolicy::Open,
                    Some("disabled") => a.dm_policy = DmPolicy::Disabled,
                    _ => add(
                        key(k),
                        "must be \"pairing\", \"allowlist\", \"open\" or \"disabled\"".into(),
                    ),
                },
                "allow_from" | "members" => {
                    let list = ids(&v, &key(k), add);
                    if k == "allow_from" {
                        a.allow_from = list;
                    } else {
                        a.members = list;
                    }
                }
                _ => {
                    let mut p = super::Problems {
                        file: String::new(),
                        list: Vec::new(),
                    };
                    if let Some(r) =
                        super::lenient::deserialize::<RawSenderTools>(v, &key(k), &mut p)
                    {
                        a.tools = Some(r.check(&key(k), add));
                    }
                    for pr in p.list {
                        add(pr.key, pr.message);
                    }
                }
            }
        }
        if kind == "mqtt" && (a.dm_policy != DmPolicy::Pairing || !a.allow_from.is_empty()) {
            add(
                key("dm_policy"),
                "MQTT clients are devices, not people: they always get a session of their own with \
                 the device tools; use tools = { ... } to change what they may do"
                    .into(),
            );
        }
        out.insert(kind.clone(), a);
    }
    out
}

/// A list of sender ids (strings or integers, as Telegram ids are).
fn ids(v: &toml::Value, key: &str, add: &mut dyn FnMut(String, String)) -> Vec<String> {
    let Some(arr) = v.as_array() else {
        add(key.into(), "must be a list of sender ids".into());
        return vec![];
    };
    let mut out = Vec::new();
    for (i, x) in arr.iter().enumerate() {
        match x {
            toml::Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
            toml::Value::Integer(n) => out.push(n.to_string()),
            _ => add(
                format!("{key}[{i}]"),
                "must be a sender id (text or number)".into(),
            ),
        }
    }
    out
}
