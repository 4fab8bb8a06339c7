//! The channel entry point ([`Ingest`] for the gateway): a normalized
//! [`Inbound`] is classified (who is it, how far is it trusted: from the
//! config and the pairing records, never from the message), answered if
//! it is a command, else routed (bindings → agent, `session.dm_scope` →
//! session key) and queued durably. Channels call only this; they never
//! reach the agent loop or the store.
//!
//! Trust: a device chat ([`ChatKind::Device`]) is `device`. A person is
//! `owner` when listed in `allow_from` or paired as owner, `member` when
//! listed in `members` or paired as member; anyone else follows the
//! channel's `dm_policy` (pairing: a code and nothing else; allowlist /
//! disabled: refused; open: member). In groups an unknown sender is
//! ignored. With `dm_scope = "main"` only the owner talks in the main
//! session; anyone else gets `agent:<id>:<channel>:direct:<peer>`.

use futures_util::future::BoxFuture;

use crate::channel::{Ingest, IngestOutcome};
use crate::config::DmPolicy;
use crate::inbound::{ChatKind, Inbound, Origin, Trust};
use crate::queue::QueueError;
use crate::routing;
use crate::store::{new_id, now_ms, IdemRecord, InboxItem, OutboxItem, StoreError};

use super::Gateway;

/// Longest message a channel may hand in.
pub const MAX_TEXT: usize = 64 * 1024;

impl Ingest for Gateway {
    fn accept(&self, m: Inbound) -> BoxFuture<'_, IngestOutcome> {
        Box::pin(self.ingest(m))
    }
}

/// What the sender may do, or what they are told instead.
enum Classified {
    Trusted(Trust),
    Refused { why: String, reply: Option<String> },
}

impl Gateway {
    /// Classifies, answers commands, routes and queues a channel message.
    /// The platform message id (if any) is the idempotency key, so a
    /// redelivery after a crash or a reconnect is answered once.
    pub async fn ingest(&self, mut m: Inbound) -> IngestOutcome {
        if self.shutdown.is_cancelled() {
            return IngestOutcome::RetryLater("Hearth is shutting down".into());
        }
        if m.text.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !m.text.is_char_boundary(cut) {
                cut -= 1;
            }
            m.text.truncate(cut);
            m.text
                .push_str("\n[message cut: it was longer than 64 KiB]");
        }
        // a name is the sender's own choice: bounded, printable
        m.sender.name = m.sender.name.take().map(|n| {
            n.chars()
                .filter(|c| !c.is_control() && !('\u{202a}'..='\u{202e}').contains(c))
                .take(64)
                .collect()
        });
        m.sender.id = m
            .sender
            .id
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        let trust = match self.classify(&m).await {
            Ok(Classified::Trusted(t)) => t,
            Ok(Classified::Refused { why, reply }) => {
                tracing::info!(channel = %m.channel, sender = %m.sender.id, "inbound refused: {why}");
                return IngestOutcome::Refused { why, reply };
            }
            Err(e) => return IngestOutcome::RetryLater(e.to_string()),
        };
        let agent = match &m.agent {
            Some(a) if self.cfg.agent(a).is_some() => a.clone(),
            Some(a) => {
                return IngestOutcome::Refused {
                    why: format!("unknown agent {a:?}"),
                    reply: None,
                }
            }
            None => routing::agent_for(&self.cfg, &m).to_string(),
        };
        let binding = m
            .agent
            .is_none()
            .then(|| routing::binding_for(&self.cfg, &m))
            .flatten();
        // the main session is the owner's: anyone else talks in their own
        let scope = match self.cfg.dm_scope {
            crate::config::DmScope::Main if trust < Trust::Owner => {
                crate::config::DmScope::PerChannelPeer
            }
            s => s,
        };
        let session_key = routing::session_key(scope, &agent, &m);
        let origin = Origin {
            channel: m.channel.clone(),
            chat: m.chat,
            sender: m.sender.clone(),
            trust,
            binding,
        };
        if let Some(cmd) = super::commands::parse(&m.text) {
            return self
                .channel_command(cmd, &session_key, &origin, m.reply_to)
                .await;
        }
        self.queue_inbound(m, agent, session_key, origin).await
    }

    async fn classify(&self, m: &Inbound) -> Result<Classified, StoreError> {
        if m.chat == ChatKind::Device {
            return Ok(Classified::Trusted(Trust::Device));
        }
        let access = self.cfg.access.get(&m.channel).cloned().unwrap_or_default();
        let id = m.sender.id.as_str();
        if access.allow_from.iter().any(|a| a == id) {
            return Ok(Classified::Trusted(Trust::Owner));
        }
        if access.members.iter().any(|a| a == id) {
            return Ok(Classified::Trusted(Trust::Member));
        }
        let store = self.queue.store().clone();
        let (ch, acc, sid) = (
            m.channel.clone(),
            m.account.clone().unwrap_or_default(),
            id.to_string(),
        );
        let paired = tokio::task::spawn_blocking(move || store.pairing().approved(&ch, &acc, &sid))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
        if let Some(t) = paired {
            return Ok(Classified::Trusted(t));
        }
        if m.chat == ChatKind::Group {
            return Ok(Classified::Refused {
                why: "a group message from a sender nobody approved".into(),
                reply: None,
            });
        }
        Ok(match access.dm_policy {
            DmPolicy::Open => Classified::Trusted(Trust::Member),
            DmPolicy::Disabled => Classified::Refused {
                why: "direct messages are disabled on this channel".into(),
                reply: None,
            },
            DmPolicy::Allowlist => Classified::Refused {
                why: "the sender is not on the allow list".into(),
                reply: Some("Hearth does not know you. Ask the owner to add you.".into()),
            },
            DmPolicy::Pairing => {
                let store = self.queue.store().clone();
                let (ch, acc, sid, name) = (
                    m.channel.clone(),
                    m.account.clone().unwrap_or_default(),
                    id.to_string(),
                    m.sender.name.clone(),
                );
                let code = tokio::task::spawn_blocking(move || {
                    store.pairing().request(&ch, &acc, &sid, name.as_deref())
                })
                .await
                .map_err(|e| StoreError::Io(e.to_string()))??;
                tracing::warn!(channel = %m.channel, sender = %id, code = %code, "an unknown sender asked to pair; approve with `hearth pairing approve {code}`");
                Classified::Refused {
                    why: "pairing required".into(),
                    reply: Some(format!(
                        "Hearth does not know you yet. Your pairing code is {code}. Ask the owner to approve it; it is valid for one hour."
                    )),
                }
            }
        })
    }

    /// A command from a channel: run it, and put the answer in the outbox
    /// when the channel wants replies there.
    async fn channel_command(
        &self,
        cmd: super::commands::Command,
        session: &str,
        origin: &Origin,
        reply_to: Option<String>,
    ) -> IngestOutcome {
        let text = match super::commands::run(self, cmd, session, origin).await {
            Ok((t, _)) => t,
            Err(e) => e.message,
        };
        if let Some(to) = reply_to {
            let item = OutboxItem {
                to: to.clone(),
                text: text.clone(),
                run_id: format!("cmd-{}", new_id()),
                created_ms: now_ms(),
                wire: None,
            };
            let store = self.queue.store().clone();
            match tokio::task::spawn_blocking(move || store.outbox().push(item)).await {
                Ok(Ok(())) => self.queue.wakers().wake(&to),
                other => {
                    tracing::error!("cannot queue a command's answer: {other:?}");
                    return IngestOutcome::RetryLater("the state database failed".into());
                }
            }
        }
        IngestOutcome::Command { reply: text }
    }

    async fn queue_inbound(
        &self,
        m: Inbound,
        agent: String,
        session_key: String,
        origin: Origin,
    ) -> IngestOutcome {
        let run_id = new_id();
        let idem = m.platform_message_id.as_ref().map(|id| {
            let key = format!(
                "inbound:{}:{}:{}",
                m.channel,
                m.account.as_deref().unwrap_or(""),
                id
            );
            let rec = IdemRecord {
                method: "inbound".into(),
                run_id: run_id.clone(),
                response: serde_json::json!({"runId": run_id, "sessionKey": session_key}),
                ts: now_ms(),
            };
            (key, rec)
        });
        let item = InboxItem {
            seq: 0,
            session_key: session_key.clone(),
            agent_id: agent,
            text: m.text,
            run_id: run_id.clone(),
            channel: m.channel,
            received_ms: now_ms(),
            dropped: vec![],
            started: None,
            reply_to: m.reply_to,
            from: Some(origin),
        };
        match self.queue.submit(item, idem).await {
            Ok(it) => IngestOutcome::Accepted {
                run_id: it.run_id,
                session_key,
            },
            Err(QueueError::Store(StoreError::Duplicate(first))) => IngestOutcome::Duplicate {
                run_id: first.run_id,
            },
            Err(QueueError::ShuttingDown) => {
                IngestOutcome::RetryLater("Hearth is shutting down".into())
            }
            Err(QueueError::Store(e)) => IngestOutcome::RetryLater(e.to_string()),
            Err(e) => IngestOutcome::Refused {
                why: e.to_string(),
                reply: Some(format!("Hearth could not take this message: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::agent::AgentCtx;
    use crate::config::{ChannelAccess, Config};
    use crate::events::EventBus;
    use crate::inbound::Sender;
    use crate::provider::Providers;
    use crate::queue::Queue;
    use crate::store::{RunStatus, Store};

    fn gateway(dir: &std::path::Path, cfg: Config) -> Arc<Gateway> {
        let store = Store::open(&dir.join("s.redb")).unwrap();
        let memory = crate::memory::service::Memory::new(
            dir,
            cfg.memory.clone(),
            cfg.models.clone(),
            Some(store.clone()),
        );
        let mut agents = HashMap::new();
        for a in &cfg.agents {
            let ws = a.workspace_in(dir);
            std::fs::create_dir_all(&ws).unwrap();
            agents.insert(
                a.id.clone(),
                AgentCtx {
                    store: store.clone(),
                    providers: Providers::default(),
                    agent: a.clone(),
                    workspace: ws,
                    memory: memory.clone(),
                    tools: crate::agent::tools_for(&cfg, a, &memory, &[]),
                    devices: None,
                    intents: Default::default(),
                },
            );
        }
        let bus = EventBus::new(64);
        let cfg = Arc::new(cfg);
        let outreach = crate::outreach::Outreach::new(
            cfg.clone(),
            store.clone(),
            Default::default(),
            bus.clone(),
            vec![],
        );
        let queue = Queue::new(
            cfg.queue,
            cfg.reset,
            2,
            store,
            bus.clone(),
            agents,
            Default::default(),
        );
        Gateway::new(
            cfg,
            crate::gateway::Parts {
                queue,
                bus,
                providers: Providers::default(),
                state_dir: dir.into(),
                memory,
                shutdown: tokio_util::sync::CancellationToken::new(),
                token: crate::gateway::auth::Token::fixed(crate::config::Secret::new(
                    "t0ken-for-tests",
                )),
                recovered: vec![],
                local_model: serde_json::Value::Null,
                outreach,
            },
        )
    }

    fn msg(channel: &str, chat: ChatKind, peer: &str, text: &str, id: Option<&str>) -> Inbound {
        Inbound {
            reply_to: None,
            agent: None,
            channel: channel.into(),
            account: None,
            chat,
            peer: peer.into(),
            thread: None,
            sender: Sender {
                id: peer.into(),
                name: Some("Someone".into()),
            },
            text: text.into(),
            platform_message_id: id.map(str::to_string),
        }
    }

    async fn wait_final(g: &Gateway, run_id: &str) -> RunStatus {
        let mut done = g.queue.completions();
        loop {
            let r = g.queue.store().get_run(run_id).unwrap().unwrap();
            if r.status.is_final() {
                return r.status;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), done.recv()).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_gets_its_own_session_and_is_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_str(
            "[[agents.list]]\nid = \"home\"\n[[bindings]]\nagent = \"home\"\nmatch = { channel = \"mqtt\" }\n",
            None,
            &|_| None,
        )
        .unwrap();
        // dm_scope is "main": a person's DMs would share the main session
        assert_eq!(cfg.dm_scope, crate::config::DmScope::Main);
        let g = gateway(dir.path(), cfg);
        let m = msg(
            "mqtt",
            ChatKind::Device,
            "Kitchen-Panel",
            "is the door locked?",
            Some("m-1"),
        );
        let IngestOutcome::Accepted {
            run_id,
            session_key,
        } = g.ingest(m.clone()).await
        else {
            panic!("not queued");
        };
        assert_eq!(session_key, "agent:home:mqtt:direct:kitchen-panel");
        assert_eq!(
            g.ingest(m.clone()).await,
            IngestOutcome::Duplicate {
                run_id: run_id.clone()
            }
        );
        // With no provider the run ends with the how-to-configure error,
        // and the transcript holds the message once, marked as a device's.
        assert_eq!(wait_final(&g, &run_id).await, RunStatus::Error);
        let t = g
            .queue
            .store()
            .transcripts()
            .tail(&session_key, 10)
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].text, "is the door locked?");
        let src = t[0].source.as_deref().unwrap();
        assert!(
            src.contains("mqtt device") && src.contains("trust: device"),
            "{src}"
        );
        // commands: a device may start over, not read the appliance's status
        let r = g
            .ingest(msg(
                "mqtt",
                ChatKind::Device,
                "kitchen-panel",
                "/status",
                None,
            ))
            .await;
        assert!(
            matches!(&r, IngestOutcome::Command { reply } if reply.contains("not available")),
            "{r:?}"
        );
        let r = g
            .ingest(msg("mqtt", ChatKind::Device, "kitchen-panel", "/new", None))
            .await;
        assert!(
            matches!(&r, IngestOutcome::Command { reply } if reply.contains("new session")),
            "{r:?}"
        );
        g.queue
            .shutdown(Duration::from_secs(1), Duration::from_secs(1))
            .await;
    }

    /// A chat channel with `dm_policy = "pairing"`: an unknown sender
    /// gets a code and nothing reaches an agent until the owner approves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_sender_must_pair_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::embedded();
        cfg.access.insert(
            "testchat".into(),
            ChannelAccess {
                members: vec!["kid".into()],
                ..Default::default()
            },
        );
        let g = gateway(dir.path(), cfg);
        let r = g
            .ingest(msg(
                "testchat",
                ChatKind::Direct,
                "stranger",
                "hi",
                Some("1"),
            ))
            .await;
        let IngestOutcome::Refused {
            reply: Some(reply), ..
        } = r
        else {
            panic!("{r:?}")
        };
        let code = reply
            .split_whitespace()
            .find(|w| w.len() == 9 && w.ends_with('.'))
            .map(|w| w.trim_end_matches('.').to_string())
            .unwrap();
        // asking again: the same code, still nothing queued
        let r = g
            .ingest(msg(
                "testchat",
                ChatKind::Direct,
                "stranger",
                "hello?",
                Some("2"),
            ))
            .await;
        assert!(
            matches!(&r, IngestOutcome::Refused { reply: Some(t), .. } if t.contains(&code)),
            "{r:?}"
        );
        assert!(g.queue.store().inbox().list().unwrap().is_empty());
        assert!(g.queue.store().sessions().list().unwrap().is_empty());
        // not in a group either, and silently
        let r = g
            .ingest(msg("testchat", ChatKind::Group, "stranger", "hi all", None))
            .await;
        assert!(
            matches!(r, IngestOutcome::Refused { reply: None, .. }),
            "{r:?}"
        );
        // a listed member gets through as a member, in a session of their
        // own (the main session is the owner's)
        let IngestOutcome::Accepted { session_key, .. } = g
            .ingest(msg("testchat", ChatKind::Direct, "kid", "hi", None))
            .await
        else {
            panic!("member refused")
        };
        assert_eq!(session_key, "agent:main:testchat:direct:kid");
        // approved as owner: accepted, with the owner's trust
        let a = g
            .queue
            .store()
            .pairing()
            .approve(&code, Trust::Owner)
            .unwrap()
            .unwrap();
        assert_eq!(a.sender, "stranger");
        let r = g
            .ingest(msg(
                "testchat",
                ChatKind::Direct,
                "stranger",
                "hi again",
                Some("3"),
            ))
            .await;
        let IngestOutcome::Accepted { run_id, .. } = r else {
            panic!("{r:?}")
        };
        wait_final(&g, &run_id).await;
        let t = g
            .queue
            .store()
            .transcripts()
            .tail("agent:main:main", 10)
            .unwrap();
        assert!(
            t.iter().any(|e| e.text == "hi again" && e.source.is_none()),
            "{t:?}"
        );
        g.queue
            .shutdown(Duration::from_secs(1), Duration::from_secs(1))
            .await;
    }
}
