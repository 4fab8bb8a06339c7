//! The channel entry point: a normalized [`Inbound`] message is routed
//! (bindings → agent, `session.dm_scope` → session key) and queued durably.
//! Channels call only this; they never reach the agent loop or the store.

use crate::queue::QueueError;
use crate::routing::{self, Inbound};
use crate::store::{new_id, now_ms, IdemRecord, InboxItem, StoreError};

use super::Gateway;

/// What happened to an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Queued; the reply will come with this run id.
    Queued { run_id: String, session_key: String },
    /// The platform delivered the same message id again; nothing new runs.
    Duplicate { run_id: String },
}

impl Gateway {
    /// Routes and queues a channel message. The platform message id (if
    /// any) is the idempotency key, so a redelivery after a crash or a
    /// reconnect is answered once.
    pub async fn accept(&self, m: Inbound) -> Result<Accepted, QueueError> {
        let agent = match &m.agent {
            Some(a) if self.cfg.agent(a).is_some() => a.clone(),
            Some(a) => return Err(QueueError::UnknownAgent(a.clone())),
            None => routing::agent_for(&self.cfg, &m).to_string(),
        };
        let session_key = routing::session_key(self.cfg.dm_scope, &agent, &m);
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
        };
        match self.queue.submit(item, idem).await {
            Ok(it) => Ok(Accepted::Queued {
                run_id: it.run_id,
                session_key,
            }),
            Err(QueueError::Store(StoreError::Duplicate(first))) => Ok(Accepted::Duplicate {
                run_id: first.run_id,
            }),
            Err(e) => Err(e),
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
    use crate::config::Config;
    use crate::events::EventBus;
    use crate::provider::Providers;
    use crate::queue::Queue;
    use crate::routing::PeerKind;
    use crate::store::{RunStatus, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inbound_is_routed_queued_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_str(
            r#"
            [[agents.list]]
            id = "home"
            [[bindings]]
            agent = "home"
            match = { channel = "mqtt" }
            [session]
            dm_scope = "per-channel-peer"
            "#,
            None,
            &|_| None,
        )
        .unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut agents = HashMap::new();
        for a in &cfg.agents {
            let ws = a.workspace_in(dir.path());
            std::fs::create_dir_all(&ws).unwrap();
            agents.insert(
                a.id.clone(),
                AgentCtx {
                    store: store.clone(),
                    providers: Providers::default(),
                    agent: a.clone(),
                    workspace: ws,
                    memory: crate::memory::service::Memory::new(
                        dir.path(),
                        cfg.memory.clone(),
                        cfg.models.clone(),
                        Some(store.clone()),
                    ),
                    devices: None,
                },
            );
        }
        let bus = EventBus::new(64);
        let queue = Queue::new(cfg.queue, cfg.reset, 2, store.clone(), bus.clone(), agents);
        let token = tokio_util::sync::CancellationToken::new();
        let memory = crate::memory::service::Memory::new(
            dir.path(),
            cfg.memory.clone(),
            cfg.models.clone(),
            Some(store.clone()),
        );
        let g = Gateway::new(
            Arc::new(cfg),
            crate::gateway::Parts {
                queue,
                bus,
                providers: crate::provider::Providers::default(),
                state_dir: dir.path().into(),
                memory,
                shutdown: token,
                token: crate::gateway::auth::Token::fixed(crate::config::Secret::new(
                    "t0ken-for-tests",
                )),
                recovered: vec![],
                local_model: serde_json::Value::Null,
            },
        );

        let msg = Inbound {
            reply_to: None,
            agent: None,
            channel: "mqtt".into(),
            account: None,
            peer_kind: PeerKind::Direct,
            peer: "Kitchen-Panel".into(),
            thread: None,
            sender: None,
            text: "is the door locked?".into(),
            platform_message_id: Some("m-1".into()),
        };
        let Accepted::Queued {
            run_id,
            session_key,
        } = g.accept(msg.clone()).await.unwrap()
        else {
            panic!("not queued");
        };
        assert_eq!(session_key, "agent:home:mqtt:direct:kitchen-panel");
        assert_eq!(
            g.accept(msg.clone()).await.unwrap(),
            Accepted::Duplicate {
                run_id: run_id.clone()
            }
        );
        // With no provider the run ends with the how-to-configure error, and
        // the transcript holds the message once.
        let mut done = g.queue.completions();
        loop {
            let r = store.get_run(&run_id).unwrap().unwrap();
            if r.status.is_final() {
                assert_eq!(r.status, RunStatus::Error);
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), done.recv()).await;
        }
        let t = store.transcript(&session_key, 10).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].text, "is the door locked?");
        g.queue
            .shutdown(Duration::from_secs(1), Duration::from_secs(1))
            .await;
    }
}
