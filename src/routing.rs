//! Routing: which agent handles an inbound message, and under which session key.
//!
//! Session keys follow OpenClaw's formats exactly (SPEC §3); the key is also
//! the permission boundary: a run only ever reads its own session's transcript.
//! Bindings are matched most-specific-first: exact peer → group → account →
//! channel → the default agent. A device always gets a session of its own
//! (`agent:<id>:<channel>:direct:<device>`), whatever the `dm_scope`: its
//! text is never merged into a person's conversation.

use crate::config::{Config, DmScope};

pub use crate::inbound::{ChatKind, Inbound};

/// Resolves the agent for an inbound message.
pub fn agent_for<'a>(cfg: &'a Config, m: &Inbound) -> &'a str {
    match binding_for(cfg, m) {
        Some(i) => cfg.bindings[i].agent.as_str(),
        None => cfg.default_agent.as_str(),
    }
}

/// The index of the binding that routes this message, if one does.
pub fn binding_for(cfg: &Config, m: &Inbound) -> Option<usize> {
    let mut best: Option<(u8, usize)> = None;
    for (i, b) in cfg.bindings.iter().enumerate() {
        let bm = &b.matches;
        if bm.channel.as_deref().is_some_and(|c| c != m.channel) {
            continue;
        }
        if bm.account.is_some() && bm.account != m.account {
            continue;
        }
        let score = if let Some(p) = &bm.peer {
            if m.chat == ChatKind::Group || *p != m.peer {
                continue;
            }
            4
        } else if let Some(g) = &bm.group {
            if m.chat != ChatKind::Group || *g != m.peer {
                continue;
            }
            3
        } else if bm.account.is_some() {
            2
        } else if bm.channel.is_some() {
            1
        } else {
            0
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The session key for an inbound message handled by `agent`.
pub fn session_key(scope: DmScope, agent: &str, m: &Inbound) -> String {
    let ch = sanitize(&m.channel);
    match m.chat {
        ChatKind::Device => format!("agent:{agent}:{ch}:direct:{}", sanitize(&m.peer)),
        ChatKind::Group => {
            let mut k = format!("agent:{agent}:{ch}:group:{}", sanitize(&m.peer));
            if let Some(t) = &m.thread {
                k.push_str(&format!(":topic:{}", sanitize(t)));
            }
            k
        }
        ChatKind::Direct => {
            let peer = sanitize(&m.peer);
            match scope {
                DmScope::Main => format!("agent:{agent}:main"),
                DmScope::PerPeer => format!("agent:{agent}:direct:{peer}"),
                DmScope::PerChannelPeer => format!("agent:{agent}:{ch}:direct:{peer}"),
                DmScope::PerAccountChannelPeer => {
                    let acc = sanitize(m.account.as_deref().unwrap_or("default"));
                    format!("agent:{agent}:{ch}:{acc}:direct:{peer}")
                }
            }
        }
    }
}

/// Lower-cases and replaces characters that would break the `:` structure.
fn sanitize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            ':' | ' ' | '\t' | '\n' | '\r' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// A session key given by a client (`chat.send {sessionKey}`), made canonical:
/// `"main"` → `agent:<default>:main`, `agent:x:...` kept as is.
pub fn canonical_key(cfg: &Config, key: &str) -> Result<String, String> {
    let key = key.trim();
    if key.is_empty() || key.len() > 512 || key.chars().any(|c| c.is_control()) {
        return Err("sessionKey must be 1-512 printable characters".into());
    }
    if let Some(rest) = key.strip_prefix("agent:") {
        let (agent, tail) = rest
            .split_once(':')
            .ok_or("sessionKey \"agent:<id>:<rest>\" needs a rest part")?;
        if cfg.agent(agent).is_none() {
            return Err(format!("unknown agent {agent:?} in sessionKey"));
        }
        if tail.is_empty() {
            return Err("sessionKey \"agent:<id>:<rest>\" needs a rest part".into());
        }
        return Ok(key.to_string());
    }
    Ok(format!("agent:{}:{}", cfg.default_agent, key))
}

/// The agent id of a canonical session key.
pub fn agent_of(key: &str) -> Option<&str> {
    key.strip_prefix("agent:")?.split(':').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, kind: ChatKind, peer: &str) -> Inbound {
        Inbound {
            reply_to: None,
            agent: None,
            channel: channel.into(),
            account: Some("acc1".into()),
            chat: kind,
            peer: peer.into(),
            thread: None,
            sender: crate::inbound::Sender {
                id: peer.into(),
                name: None,
            },
            text: "hi".into(),
            platform_message_id: None,
        }
    }

    #[test]
    fn dm_scopes() {
        let m = msg("telegram", ChatKind::Direct, "42");
        assert_eq!(session_key(DmScope::Main, "main", &m), "agent:main:main");
        assert_eq!(
            session_key(DmScope::PerPeer, "main", &m),
            "agent:main:direct:42"
        );
        assert_eq!(
            session_key(DmScope::PerChannelPeer, "main", &m),
            "agent:main:telegram:direct:42"
        );
        assert_eq!(
            session_key(DmScope::PerAccountChannelPeer, "main", &m),
            "agent:main:telegram:acc1:direct:42"
        );
        let mut g = msg("telegram", ChatKind::Group, "-100");
        g.thread = Some("7".into());
        assert_eq!(
            session_key(DmScope::Main, "main", &g),
            "agent:main:telegram:group:-100:topic:7"
        );
        let d = msg("mqtt", ChatKind::Device, "kitchen-panel");
        for scope in [DmScope::Main, DmScope::PerPeer, DmScope::PerChannelPeer] {
            assert_eq!(
                session_key(scope, "home", &d),
                "agent:home:mqtt:direct:kitchen-panel",
                "a device never shares a person's session"
            );
        }
    }

    #[test]
    fn most_specific_binding_wins() {
        let cfg = Config::from_str(
            r#"
            [[agents.list]]
            id = "home"
            [[agents.list]]
            id = "kid"
            [[agents.list]]
            id = "fam"
            [[agents.list]]
            id = "acct"
            [[bindings]]
            agent = "home"
            match = { channel = "telegram" }
            [[bindings]]
            agent = "kid"
            match = { channel = "telegram", peer = "42" }
            [[bindings]]
            agent = "fam"
            match = { group = "-100" }
            [[bindings]]
            agent = "acct"
            match = { channel = "telegram", account = "acc2" }
            "#,
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            agent_for(&cfg, &msg("telegram", ChatKind::Direct, "42")),
            "kid"
        );
        assert_eq!(
            agent_for(&cfg, &msg("telegram", ChatKind::Direct, "7")),
            "home"
        );
        assert_eq!(
            agent_for(&cfg, &msg("telegram", ChatKind::Group, "-100")),
            "fam"
        );
        let mut a2 = msg("telegram", ChatKind::Direct, "7");
        a2.account = Some("acc2".into());
        assert_eq!(agent_for(&cfg, &a2), "acct");
        assert_eq!(agent_for(&cfg, &msg("mqtt", ChatKind::Direct, "x")), "main");
    }

    #[test]
    fn canonical_keys() {
        let cfg = Config::embedded();
        assert_eq!(canonical_key(&cfg, "main").unwrap(), "agent:main:main");
        assert_eq!(canonical_key(&cfg, "agent:main:x").unwrap(), "agent:main:x");
        assert!(canonical_key(&cfg, "agent:ghost:x").is_err());
        assert!(canonical_key(&cfg, "").is_err());
        assert_eq!(agent_of("agent:main:direct:1"), Some("main"));
    }
}
