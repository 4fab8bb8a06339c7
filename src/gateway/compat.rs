//! What OpenClaw's own clients (the terminal UI and the browser Control
//! UI, npm `openclaw`) call besides Hearth's methods, in OpenClaw's shapes
//! (`@openclaw/gateway-protocol`'s schema): session subscriptions,
//! `chat.startup`, agent and identity lists, the command list, the tool
//! catalog, and the empty lists of features Hearth does not have yet
//! (tasks, questions, approvals, cron, updates). docs/protocol.md lists
//! each with its OpenClaw counterpart.
//!
//! Every connection already gets every event, so the subscriptions only
//! answer `subscribed`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::protocol::ErrorShape;
use super::{str_param, Gateway};
use crate::routing;
use crate::store::{now_ms, SessionMeta};

type Res = Result<Value, ErrorShape>;

pub const METHODS: [&str; 25] = [
    "sessions.observer.visibility",
    "sessions.subscribe",
    "sessions.unsubscribe",
    "sessions.messages.subscribe",
    "sessions.messages.unsubscribe",
    "sessions.describe",
    "sessions.patch",
    "sessions.preview",
    "agents.list",
    "agent.identity.get",
    "commands.list",
    "tools.catalog",
    "models.authStatus",
    "chat.metadata",
    "tasks.list",
    "update.status",
    "question.list",
    "plugin.approval.list",
    "exec.approval.list",
    "openclaw.approval.list",
    "cron.list",
    "cron.status",
    "cron.runs",
    "system-presence",
    "last-heartbeat",
];

/// The methods of this module; `None` for any other.
pub async fn dispatch(g: &Arc<Gateway>, method: &str, p: &Value) -> Option<Res> {
    Some(match method {
        "sessions.subscribe" => Ok(json!({"subscribed": true})),
        "sessions.observer.visibility" => Ok(json!({"ok": true})),
        "sessions.unsubscribe" | "sessions.messages.unsubscribe" => {
            Ok(json!({"subscribed": false}))
        }
        "sessions.messages.subscribe" => messages_subscribe(g, p),
        "sessions.describe" => describe(g, p).await,
        "sessions.patch" => patch(g, p).await,
        "sessions.preview" => preview(g, p).await,
        "agents.list" => Ok(agents_list(g)),
        "agent.identity.get" => identity(g, p),
        "commands.list" => Ok(commands_list()),
        "tools.catalog" => Ok(tools_catalog(g, p)),
        "models.authStatus" => Ok(auth_status(g)),
        "chat.metadata" => Ok(json!({})),
        "tasks.list" => Ok(json!({"tasks": []})),
        "update.status" => Ok(json!({"sentinel": null, "updateAvailable": null})),
        "question.list" => Ok(json!({"questions": []})),
        "plugin.approval.list" | "exec.approval.list" | "openclaw.approval.list" => Ok(json!([])),
        "cron.list" => Ok(cron_list(p)),
        "cron.status" => Ok(json!({"enabled": false, "jobs": 0, "nextWakeAtMs": null})),
        "cron.runs" => Ok(json!({"entries": [], "total": 0, "offset": 0, "hasMore": false})),
        "system-presence" => Ok(json!([])),
        "last-heartbeat" => Ok(Value::Null),
        _ => return None,
    })
}

/// `provider/model` of an agent's primary model, split.
pub fn agent_model(g: &Gateway, agent: &str) -> (Option<String>, Option<String>) {
    let r = g
        .cfg
        .agent(agent)
        .and_then(|a| a.model.as_ref())
        .map(|m| m.primary.clone());
    match r.as_deref().and_then(|r| r.split_once('/')) {
        Some((p, m)) => (Some(p.to_string()), Some(m.to_string())),
        None => (None, None),
    }
}

/// `sessions.list`'s and `chat.history`'s `defaults` (the default agent's
/// model; Hearth has no thinking levels).
pub fn defaults(g: &Gateway) -> Value {
    let (provider, model) = agent_model(g, &g.cfg.default_agent);
    json!({"modelProvider": provider, "model": model, "contextTokens": null,
           "modelSelectionTarget": "session",
           "thinkingLevels": [{"id": "off", "label": "off"}], "thinkingOptions": ["off"],
           "thinkingDefault": "off"})
}

/// One session as OpenClaw's `SessionRow`, with Hearth's own fields.
pub fn session_row(g: &Gateway, s: &SessionMeta) -> Value {
    let (provider, model) = agent_model(g, &s.agent_id);
    let active: Vec<String> = g.queue.active_run(&s.key).into_iter().collect();
    let display = s.key.splitn(3, ':').nth(2).unwrap_or(&s.key).to_string();
    json!({"key": s.key, "kind": if s.key.contains(":group:") { "group" } else { "direct" },
           "sessionId": s.session_id, "agentId": s.agent_id, "displayName": display,
           "createdAt": s.created_ms, "updatedAt": s.updated_ms, "channel": s.last_channel,
           "busy": g.queue.is_busy(&s.key), "hasActiveRun": !active.is_empty(),
           "activeRunIds": active, "status": if g.queue.is_busy(&s.key) { "running" } else { "idle" },
           "model": model, "modelProvider": provider, "thinkingLevel": "off"})
}

fn key_param(g: &Gateway, p: &Value) -> Result<String, ErrorShape> {
    let k = str_param(p, "key")
        .or_else(|| str_param(p, "sessionKey"))
        .unwrap_or("main");
    routing::canonical_key(&g.cfg, k).map_err(ErrorShape::invalid)
}

fn messages_subscribe(g: &Gateway, p: &Value) -> Res {
    let key = key_param(g, p)?;
    let mut v = json!({"subscribed": true, "key": key});
    if p["includeApprovals"].as_bool() == Some(true) {
        v["approvalReplay"] = json!({"approvals": [], "complete": true});
    }
    Ok(v)
}

async fn meta(g: &Gateway, key: &str) -> Result<Option<SessionMeta>, ErrorShape> {
    let store = g.queue.store().clone();
    let k = key.to_string();
    super::blocking(move || store.sessions().get(&k)).await
}

async fn describe(g: &Gateway, p: &Value) -> Res {
    let key = key_param(g, p)?;
    let row = meta(g, &key).await?.map(|m| session_row(g, &m));
    Ok(json!({"session": row}))
}

/// `sessions.patch`: Hearth keeps no per-session overrides yet (model,
/// thinking level, label); the answer is the session as it is.
async fn patch(g: &Gateway, p: &Value) -> Res {
    let key = key_param(g, p)?;
    let row = meta(g, &key).await?.map(|m| session_row(g, &m));
    let (provider, model) = agent_model(g, routing::agent_of(&key).unwrap_or("main"));
    Ok(
        json!({"ok": true, "key": key, "entry": row.unwrap_or(json!({"key": key, "kind": "direct"})),
              "resolved": {"modelProvider": provider, "model": model, "thinkingLevel": "off"}}),
    )
}

/// `sessions.preview {keys, limit?, maxChars?}` → the last messages of each.
async fn preview(g: &Gateway, p: &Value) -> Res {
    let keys: Vec<String> = p["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(50)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let limit = p["limit"].as_u64().unwrap_or(3).clamp(1, 20) as usize;
    let max = p["maxChars"].as_u64().unwrap_or(200).clamp(10, 2000) as usize;
    let mut out = Vec::new();
    for k in keys {
        let Ok(key) = routing::canonical_key(&g.cfg, &k) else {
            out.push(json!({"key": k, "status": "missing", "items": []}));
            continue;
        };
        let store = g.queue.store().clone();
        let kk = key.clone();
        let entries = super::blocking(move || store.transcripts().tail(&kk, limit)).await?;
        let items: Vec<Value> = entries
            .iter()
            .map(|e| json!({"role": e.role, "text": e.text.chars().take(max).collect::<String>(), "timestamp": e.ts}))
            .collect();
        let status = if items.is_empty() { "empty" } else { "ok" };
        out.push(json!({"key": k, "status": status, "items": items}));
    }
    Ok(json!({"ts": now_ms(), "previews": out}))
}

fn agents_list(g: &Gateway) -> Value {
    let agents: Vec<Value> = g
        .cfg
        .agents
        .iter()
        .map(|a| {
            let model = a
                .model
                .as_ref()
                .map(|m| json!({"primary": m.primary, "fallbacks": m.fallbacks}));
            json!({"id": a.id, "name": a.id, "kind": "agent", "model": model})
        })
        .collect();
    json!({"defaultId": g.cfg.default_agent, "mainKey": "main", "scope": "per-sender", "agents": agents})
}

fn identity(g: &Gateway, p: &Value) -> Res {
    let id = str_param(p, "agentId")
        .map(str::to_string)
        .or_else(|| {
            str_param(p, "sessionKey")
                .and_then(routing::agent_of)
                .map(str::to_string)
        })
        .unwrap_or_else(|| g.cfg.default_agent.clone());
    if g.cfg.agent(&id).is_none() {
        return Err(ErrorShape::invalid(format!("no agent {id:?}")));
    }
    Ok(
        json!({"agentId": id, "name": if id == "main" { "Hearth".to_string() } else { id.clone() }, "avatarStatus": "none"}),
    )
}

fn commands_list() -> Value {
    let cmds: Vec<Value> = super::commands::HELP
        .iter()
        .map(|(c, d)| {
            let name = c.name().trim_start_matches('/');
            json!({"name": name, "description": d, "source": "native", "scope": "text",
                   "acceptsArgs": matches!(c, super::commands::Command::Context { .. })})
        })
        .collect();
    json!({"commands": cmds})
}

fn tools_catalog(g: &Gateway, p: &Value) -> Value {
    let id = str_param(p, "agentId").unwrap_or(&g.cfg.default_agent);
    let mut specs = crate::tool::fs::specs();
    specs.extend(crate::memory::service::specs());
    specs.extend(crate::mqtt::tools::specs());
    let group_of = |name: &str| match name {
        n if crate::tool::fs::FS_TOOLS.contains(&n) => ("fs", "Files"),
        n if n.starts_with("memory") => ("memory", "Memory"),
        _ => ("devices", "Devices"),
    };
    let mut groups: Vec<Value> = Vec::new();
    for s in specs {
        let (gid, label) = group_of(&s.name);
        let tool = json!({"id": s.name, "label": s.name, "description": s.description,
                          "source": "core", "defaultProfiles": ["full"]});
        match groups.iter_mut().find(|g| g["id"] == gid) {
            Some(g) => g["tools"].as_array_mut().expect("tools").push(tool),
            None => {
                groups.push(json!({"id": gid, "label": label, "source": "core", "tools": [tool]}))
            }
        }
    }
    json!({"agentId": id, "profiles": [], "groups": groups})
}

fn auth_status(g: &Gateway) -> Value {
    let providers: Vec<Value> = g
        .providers
        .status()
        .into_iter()
        .map(|s| {
            let ok = s["credentials"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["state"] == "ok"));
            json!({"provider": s["name"], "kind": s["kind"], "status": if ok { "ok" } else { "unavailable" }})
        })
        .collect();
    json!({"ts": now_ms(), "providers": providers})
}

/// An empty page in the shape the Control UI checks (`jobs`, `total`,
/// `offset`, `limit`, `hasMore`, `nextOffset`, `snapshotRevision`).
fn cron_list(p: &Value) -> Value {
    let limit = p["limit"].as_u64().unwrap_or(50).clamp(1, 500);
    json!({"jobs": [], "total": 0, "offset": 0, "limit": limit, "hasMore": false,
           "nextOffset": null, "snapshotRevision": "0"})
}
