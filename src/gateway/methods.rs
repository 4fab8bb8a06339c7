//! The gateway's methods: one `match` in [`dispatch`], one function each.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::protocol::{ErrorShape, Frame};
use super::{str_param, Conn, Gateway, MAX_BUFFERED, MAX_PAYLOAD, PROTOCOL};
use crate::events::RunEvents;
use crate::queue::QueueError;
use crate::routing;
use crate::store::{
    new_id, now_ms, Entry, IdemRecord, InboxItem, Role, RunRecord, RunStatus, StoreError,
};

pub const METHODS: [&str; 23] = [
    "connect",
    "chat.startup",
    "health",
    "status",
    "chat.send",
    "chat.history",
    "chat.abort",
    "agent",
    "agent.wait",
    "send",
    "sessions.list",
    "sessions.reset",
    "sessions.delete",
    "sessions.compact",
    "devices.list",
    "devices.forget",
    "models.list",
    "config.get",
    "memory.search",
    "memory.reindex",
    "pairing.list",
    "pairing.approve",
    "pairing.revoke",
];
pub const EVENTS: [&str; 8] = [
    "connect.challenge",
    "tick",
    "agent",
    "chat",
    "sessions.changed",
    "health",
    "shutdown",
    "device",
];

/// Every method a signed-in client may call (hello-ok `features.methods`;
/// OpenClaw's Control UI calls only what is listed).
pub fn all_methods() -> Vec<&'static str> {
    let mut v: Vec<&str> = METHODS[1..].to_vec();
    v.extend(super::admin::METHODS);
    v.extend(super::compat::METHODS);
    v
}

type Res = Result<Value, ErrorShape>;

/// Checks the first frame and signs the client in (`devices::sign_in`:
/// a token always, on loopback too, so a web page a browser on this
/// machine opens cannot sign in; DNS rebinding, SPEC §5). Returns hello-ok,
/// the token generation it signed in with and the client's `client.id`;
/// errors carry (request id, error, close code).
pub async fn handshake(
    g: &Gateway,
    text: &str,
    conn_id: &str,
    nonce: &str,
    peer: std::net::IpAddr,
) -> Result<(Frame, u64, String), (String, ErrorShape, u16)> {
    let c = super::devices::parse_connect(text)?;
    let signed = super::devices::sign_in(g, &c, nonce, peer)
        .await
        .map_err(|e| (c.id.clone(), e, 1008))?;
    let (id, generation) = (c.id, signed.generation);
    let mut auth = json!({"role": c.role, "scopes": super::devices::SCOPES});
    if let Some((t, at)) = signed.device_token {
        auth["deviceToken"] = json!(t);
        auth["issuedAtMs"] = json!(at);
    }
    let hello = Frame::ok(
        &id,
        json!({
            "type": "hello-ok",
            "protocol": PROTOCOL,
            "server": {"version": crate::VERSION, "connId": conn_id},
            "features": {"methods": all_methods(), "events": EVENTS},
            "snapshot": {
                "presence": [],
                "health": {"ok": true, "ts": now_ms()},
                "stateVersion": {"presence": 0, "health": 0},
                "uptimeMs": g.started.elapsed().as_millis() as u64,
                "sessionDefaults": {"defaultAgentId": g.cfg.default_agent, "mainKey": "main",
                                     "mainSessionKey": format!("agent:{}:main", g.cfg.default_agent)},
            },
            "auth": auth,
            "policy": {"maxPayload": MAX_PAYLOAD, "maxBufferedBytes": MAX_BUFFERED, "tickIntervalMs": g.cfg.gateway.tick_interval.as_millis() as u64},
        }),
    );
    Ok((hello, generation, c.client_id))
}

pub async fn dispatch(g: &Arc<Gateway>, c: &Conn, id: String, method: String, p: Value) {
    let r = match method.as_str() {
        "health" => health(g),
        "status" => status(g).await,
        "chat.send" => return chat_send_ordered(g, c, &id, &p).await,
        "chat.history" | "chat.startup" => chat_history(g, &p).await,
        "chat.abort" => chat_abort(g, &p),
        "agent" => return agent(g, c, &id, &p).await,
        "agent.wait" => agent_wait(g, &p).await,
        "send" => send(g, &p).await,
        "sessions.list" => sessions_list(g, &p).await,
        "sessions.reset" => sessions_reset(g, &p).await,
        "sessions.delete" => sessions_delete(g, &p).await,
        "sessions.compact" => sessions_compact(g, &p).await,
        "devices.list" => devices_list(g, &p),
        "devices.forget" => devices_forget(g, &p).await,
        "models.list" => Ok(models_list(g)),
        "config.get" => Ok(config_get(g)),
        "memory.search" => memory_search(g, &p).await,
        "memory.reindex" => memory_reindex(g, &p).await,
        "pairing.list" => pairing_list(g).await,
        "pairing.approve" => pairing_approve(g, &p).await,
        "pairing.revoke" => pairing_revoke(g, &p).await,
        "connect" => Err(ErrorShape::invalid("already connected")),
        other => match super::admin::dispatch(g, other, &p).await {
            Some(r) => r,
            None => match super::compat::dispatch(g, other, &p).await {
                Some(r) => r,
                None => Err(ErrorShape::invalid(format!("unknown method {other:?}"))),
            },
        },
    };
    c.send(match r {
        Ok(v) => Frame::ok(&id, v),
        Err(e) => Frame::err(&id, e),
    })
    .await;
}

/// `chat.send`: the answer goes out before any event of its run (a
/// client may take the run's end for its own answer otherwise), so the
/// connection holds that run's events back until then.
async fn chat_send_ordered(g: &Gateway, c: &Conn, id: &str, p: &Value) {
    let run = str_param(p, "idempotencyKey").map(str::to_string);
    if let Some(r) = &run {
        c.hold(r).await;
    }
    let f = match chat_send(g, p).await {
        Ok(v) => Frame::ok(id, v),
        Err(e) => Frame::err(id, e),
    };
    match &run {
        Some(r) => c.release(r, f).await,
        None => c.send(f).await,
    }
}

use super::{blocking, blocking_err};

fn health(g: &Gateway) -> Res {
    let (running, pending) = g.queue.load();
    Ok(
        json!({"ok": true, "ts": now_ms(), "uptimeMs": g.started.elapsed().as_millis() as u64,
              "queue": {"running": running, "pending": pending}}),
    )
}

async fn status(g: &Gateway) -> Res {
    let (running, pending) = g.queue.load();
    let cfg = &g.cfg;
    let agents: Vec<Value> = cfg
        .agents
        .iter()
        .map(|a| {
            json!({"id": a.id, "default": a.id == cfg.default_agent,
                   "workspace": a.workspace_in(&g.state_dir),
                   "model": a.model.as_ref().map(|m| json!({"primary": m.primary, "fallbacks": m.fallbacks})),
                   "maxSteps": a.max_steps})
        })
        .collect();
    let providers = g.providers.status();
    let dir = g.state_dir.clone();
    let disk = tokio::task::spawn_blocking(move || disk_use(&dir))
        .await
        .map_err(blocking_err)?;
    Ok(json!({
        "version": crate::VERSION,
        "disk": disk,
        "uptimeMs": g.started.elapsed().as_millis() as u64,
        "gateway": {"bind": cfg.gateway.bind.to_string(), "auth": "token", "token": g.token.source(),
                    "connections": {"signedIn": g.connection_counts().1, "handshakes": g.connection_counts().0,
                                    "max": cfg.gateway.max_connections, "maxHandshakes": cfg.gateway.max_handshakes}},
        "recovered": g.recovered,
        "stateDir": g.state_dir,
        "config": cfg.source.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded defaults".into()),
        "agents": agents,
        "providers": providers,
        "queue": {"mode": format!("{:?}", cfg.queue.mode).to_lowercase(), "running": running, "pending": pending,
                  "maxConcurrent": cfg.max_concurrent, "cap": cfg.queue.cap},
        "memory": g.memory.describe(),
        "localModel": g.local_model,
        "channels": g.channels.get().map(|cs| cs.iter().map(|c| json!({"kind": c.kind(), "status": c.status()})).collect::<Vec<_>>()).unwrap_or_default(),
        "mqtt": match g.mqtt.get() {
            Some(m) => {
                let store = g.queue.store().clone();
                let waiting = blocking(move || Ok(store.outbox().pending("mqtt")?.len())).await?;
                let mut v = m.status_json();
                v["outbox"] = json!(waiting);
                Some(v)
            }
            None => None,
        },
    }))
}

/// Bytes under the state dir (at most 20 000 entries are walked) and
/// free on its file system.
fn disk_use(dir: &std::path::Path) -> Value {
    let mut used = 0u64;
    let mut seen = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > 20_000 {
                break;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => used += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    let free = rustix::fs::statvfs(dir)
        .ok()
        .map(|v| v.f_bavail * v.f_frsize);
    json!({"usedBytes": used, "freeBytes": free, "usedHuman": human(used),
           "freeHuman": free.map_or_else(|| "?".into(), human)})
}

/// A URL with any `user:password@` masked.
fn hide_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}****{}", &url[..a + 3], &url[b..]),
        _ => url.to_string(),
    }
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} kB", b.div_ceil(1024)),
    }
}

/// `pairing.list`: codes waiting for the owner, and approved senders.
async fn pairing_list(g: &Gateway) -> Res {
    let store = g.queue.store().clone();
    let (reqs, approved, devices) = blocking(move || {
        Ok((
            store.pairing().requests()?,
            store.pairing().list()?,
            store.devices().list()?,
        ))
    })
    .await?;
    let under = g.token.fingerprint();
    Ok(json!({
        // OpenClaw clients holding a device token (`pairing.revoke
        // {channel:"device", sender:<device>}` ends one)
        "devices": devices.iter().map(|d| json!({"device": d.device, "client": d.client,
            "issuedAt": d.issued_ms, "valid": d.under == under})).collect::<Vec<_>>(),
        "requests": reqs.iter().map(|r| json!({"code": r.code, "channel": r.channel, "account": r.account,
            "sender": r.sender, "name": r.name, "createdAt": r.created_ms})).collect::<Vec<_>>(),
        "approved": approved.iter().map(|a| json!({"channel": a.channel, "account": a.account,
            "sender": a.sender, "name": a.name, "trust": a.trust, "approvedAt": a.approved_ms})).collect::<Vec<_>>(),
    }))
}

/// `pairing.approve {code, trust?}`: the sender of that code becomes
/// `member` (default) or, asked for explicitly, `owner`.
async fn pairing_approve(g: &Gateway, p: &Value) -> Res {
    use crate::inbound::Trust;
    let code = str_param(p, "code")
        .ok_or_else(|| ErrorShape::invalid("code is required"))?
        .trim()
        .to_string();
    let trust = match str_param(p, "trust").unwrap_or("member") {
        "owner" => Trust::Owner,
        "member" => Trust::Member,
        other => {
            return Err(ErrorShape::invalid(format!(
                "trust must be \"owner\" or \"member\", not {other:?}"
            )))
        }
    };
    let store = g.queue.store().clone();
    let c = code.clone();
    let console = blocking(move || {
        let reqs = store.pairing().requests()?;
        Ok(reqs.iter().any(|r| {
            r.code.eq_ignore_ascii_case(&c) && r.channel == super::devices::CONSOLE_CHANNEL
        }))
    })
    .await?;
    if console && trust != Trust::Owner {
        return Err(ErrorShape::invalid(
            "this code is a browser asking for the web console, which is full control of Hearth: approve it with --owner (trust \"owner\") if it is yours",
        ));
    }
    let store = g.queue.store().clone();
    let c = code.clone();
    match blocking(move || store.pairing().approve(&c, trust)).await? {
        Some(a) => {
            tracing::info!(channel = %a.channel, sender = %a.sender, trust = a.trust.as_str(), "pairing approved by the owner");
            Ok(json!({"ok": true, "channel": a.channel, "account": a.account, "sender": a.sender,
                      "name": a.name, "trust": a.trust}))
        }
        None => Err(ErrorShape::invalid(format!(
            "no pairing request with code {code:?} (codes are valid for one hour; `hearth pairing list` shows them)"
        ))),
    }
}

/// `pairing.revoke {channel, account?, sender}`: takes an approval back.
async fn pairing_revoke(g: &Gateway, p: &Value) -> Res {
    let channel = str_param(p, "channel")
        .ok_or_else(|| ErrorShape::invalid("channel is required"))?
        .to_string();
    let sender = str_param(p, "sender")
        .ok_or_else(|| ErrorShape::invalid("sender is required"))?
        .to_string();
    let account = str_param(p, "account").unwrap_or("").to_string();
    let store = g.queue.store().clone();
    let had = blocking(move || match channel.as_str() {
        "device" => store.devices().revoke(&sender),
        _ => store.pairing().revoke(&channel, &account, &sender),
    })
    .await?;
    Ok(json!({"ok": true, "revoked": had}))
}

/// `devices.list {query?, area?, component?}`: the device registry.
fn devices_list(g: &Gateway, p: &Value) -> Res {
    let Some(m) = g.mqtt.get() else {
        return Err(ErrorShape::invalid(
            "no MQTT channel is configured ([channels.mqtt])",
        ));
    };
    let devices = m.registry.list(
        str_param(p, "query"),
        str_param(p, "area"),
        str_param(p, "component"),
    );
    Ok(json!({"devices": devices, "connected": m.connected()}))
}

/// `devices.forget {entity}`: the owner lets a device be announced anew
/// (its high-risk pin goes too; docs/smart-home.md).
async fn devices_forget(g: &Gateway, p: &Value) -> Res {
    let Some(m) = g.mqtt.get() else {
        return Err(ErrorShape::invalid(
            "no MQTT channel is configured ([channels.mqtt])",
        ));
    };
    let id = str_param(p, "entity")
        .ok_or_else(|| ErrorShape::invalid("entity is required"))?
        .to_string();
    let (r, i) = (m.registry.clone(), id.clone());
    let had = tokio::task::spawn_blocking(move || r.forget(&i))
        .await
        .map_err(blocking_err)?
        .map_err(blocking_err)?;
    if had {
        tracing::info!(entity = %id, "device forgotten by the owner; its next announcement is taken as new");
        m.rediscover();
    }
    Ok(json!({"entity": id, "forgotten": had}))
}

fn memory_err(e: crate::memory::MemoryError) -> ErrorShape {
    match e {
        crate::memory::MemoryError::BadRequest(m) => ErrorShape::invalid(m),
        e => {
            tracing::error!("memory: {e}");
            ErrorShape::unavailable(format!("memory search failed: {e}"))
        }
    }
}

/// `memory.search {query, agentId?, maxResults?}` → `{results: [...], mode}`.
async fn memory_search(g: &Gateway, p: &Value) -> Res {
    let agent = super::agent_param(g, p)?;
    let query = str_param(p, "query")
        .ok_or_else(|| ErrorShape::invalid("query is required"))?
        .to_string();
    let max = p
        .get("maxResults")
        .or_else(|| p.get("max_results"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let (mem, ws) = (g.memory.clone(), agent.workspace_in(&g.state_dir));
    let hits = tokio::task::spawn_blocking(move || mem.search(&agent.id, &ws, &query, max))
        .await
        .map_err(blocking_err)?
        .map_err(memory_err)?;
    Ok(json!({"results": hits, "mode": g.memory.mode()}))
}

/// `memory.reindex {agentId?}` → what changed.
async fn memory_reindex(g: &Gateway, p: &Value) -> Res {
    let agent = super::agent_param(g, p)?;
    let (mem, ws) = (g.memory.clone(), agent.workspace_in(&g.state_dir));
    let stats = tokio::task::spawn_blocking(move || mem.reindex(&agent.id, &ws))
        .await
        .map_err(blocking_err)?
        .map_err(memory_err)?;
    Ok(json!({"stats": stats, "mode": g.memory.mode()}))
}

fn session_param(g: &Gateway, p: &Value) -> Result<String, ErrorShape> {
    let k = str_param(p, "sessionKey")
        .or_else(|| str_param(p, "key"))
        .unwrap_or("main");
    routing::canonical_key(&g.cfg, k).map_err(ErrorShape::invalid)
}

fn idem_param(p: &Value) -> Result<String, ErrorShape> {
    let k = str_param(p, "idempotencyKey")
        .ok_or_else(|| ErrorShape::invalid("idempotencyKey is required for this method"))?;
    if k.len() > 200 {
        return Err(ErrorShape::invalid(
            "idempotencyKey is longer than 200 characters",
        ));
    }
    Ok(k.to_string())
}

fn message_param(p: &Value) -> Result<String, ErrorShape> {
    let m = p
        .get("message")
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorShape::invalid("message (string) is required"))?;
    if m.trim().is_empty() {
        return Err(ErrorShape::invalid("message is empty"));
    }
    if m.len() > 256 * 1024 {
        return Err(ErrorShape::invalid("message is longer than 256 KiB"));
    }
    Ok(m.to_string())
}

fn queue_err(e: QueueError) -> ErrorShape {
    match e {
        QueueError::Full(_) => ErrorShape::unavailable(e.to_string()),
        QueueError::ShuttingDown => ErrorShape {
            retry_after_ms: Some(5000),
            ..ErrorShape::unavailable(e.to_string())
        },
        QueueError::UnknownAgent(_) => ErrorShape::invalid(e.to_string()),
        QueueError::Store(s) => blocking_err(s),
    }
}

/// Queues a message for an agent run; duplicates return the first record.
async fn submit(
    g: &Gateway,
    method: &str,
    session: String,
    text: String,
    idem: String,
) -> Result<Result<InboxItem, IdemRecord>, ErrorShape> {
    let agent_id = routing::agent_of(&session)
        .unwrap_or(&g.cfg.default_agent)
        .to_string();
    let run_id = idem.clone();
    let item = InboxItem {
        seq: 0,
        session_key: session,
        agent_id,
        text,
        run_id: run_id.clone(),
        channel: "webchat".into(),
        received_ms: now_ms(),
        dropped: vec![],
        started: None,
        reply_to: None,
        from: Some(crate::inbound::Origin::owner("webchat")),
    };
    let rec = IdemRecord {
        method: method.into(),
        run_id: run_id.clone(),
        response: json!({"runId": run_id, "status": "started"}),
        ts: now_ms(),
    };
    match g
        .queue
        .submit(item, Some((format!("{method}:{idem}"), rec)))
        .await
    {
        Ok(it) => Ok(Ok(it)),
        Err(QueueError::Store(StoreError::Duplicate(r))) => Ok(Err(*r)),
        Err(e) => Err(queue_err(e)),
    }
}

async fn chat_send(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    let text = message_param(p)?;
    let idem = idem_param(p)?;
    if let Some(cmd) = super::commands::parse(&text) {
        let origin = crate::inbound::Origin::owner("webchat");
        return super::commands::answer_client(g, cmd, &session, &idem, &origin).await;
    }
    match submit(g, "chat.send", session, text, idem).await? {
        Ok(it) => Ok(json!({"runId": it.run_id, "status": "started"})),
        Err(first) => Ok(first.response),
    }
}

/// A transcript entry as a `chat.history` message, with OpenClaw's
/// identity (`__openclaw {id, seq}`, a user turn's `idempotencyKey`) and
/// the model that wrote a reply (`local` for the offline model).
fn entry_json(g: &Gateway, index: u64, e: &Entry) -> Value {
    let mut m =
        json!({"role": e.role, "content": [{"type": "text", "text": e.text}], "timestamp": e.ts});
    let user_run = (e.role == crate::store::Role::User)
        .then_some(e.run_id.as_deref())
        .flatten();
    m["__openclaw"] = crate::events::message_identity(index, user_run);
    if let Some(k) = user_run {
        m["idempotencyKey"] = json!(format!("{k}:user"));
    }
    if let Some(model) = &e.model {
        let provider = model.split('/').next().unwrap_or("");
        m["model"] = json!(model);
        m["provider"] = json!(provider);
        m["local"] = json!(g.providers.kind_of(provider) == Some("local"));
    }
    if !e.tool_calls.is_empty() {
        m["toolCalls"] = json!(e
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect::<Vec<_>>());
    }
    if let Some(id) = &e.tool_call_id {
        m["toolCallId"] = json!(id);
    }
    if let Some(r) = &e.run_id {
        m["runId"] = json!(r);
    }
    if let Some(s) = &e.state {
        m["state"] = json!(s);
    }
    m
}

async fn chat_history(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    let limit = p["limit"].as_u64().unwrap_or(200).clamp(1, 1000) as usize;
    let store = g.queue.store().clone();
    let k = session.clone();
    let (entries, meta) = blocking(move || {
        Ok((
            store.transcripts().tail_indexed(&k, limit)?,
            store.sessions().get(&k)?,
        ))
    })
    .await?;
    let messages: Vec<Value> = entries.iter().map(|(i, e)| entry_json(g, *i, e)).collect();
    let info = meta.as_ref().map(|m| super::compat::session_row(g, m));
    Ok(json!({
        "sessionKey": session,
        "sessionId": meta.map(|m| m.session_id),
        "messages": messages,
        "defaults": super::compat::defaults(g),
        "sessionInfo": info,
        "thinkingLevel": "off",
        "verboseLevel": "off",
        "fastMode": false,
        "hasMore": false,
    }))
}

fn chat_abort(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    let aborted = g.queue.abort(&session, str_param(p, "runId"));
    Ok(
        json!({"ok": true, "aborted": aborted.is_some(), "runIds": aborted.into_iter().collect::<Vec<_>>()}),
    )
}

fn run_payload(r: &RunRecord) -> Value {
    let status = match r.status {
        RunStatus::Ok => "ok",
        RunStatus::Error | RunStatus::Dropped => "error",
        RunStatus::Aborted => "aborted",
        RunStatus::Queued | RunStatus::Running => "running",
    };
    let mut v = json!({"runId": r.run_id, "sessionKey": r.session_key, "status": status,
                       "startedAt": r.started_ms, "endedAt": r.ended_ms});
    if let Some(t) = &r.reply {
        v["summary"] = json!("completed");
        v["result"] = json!({"payloads": [{"text": t}]});
    }
    if let Some(e) = &r.error {
        v["error"] = json!(e);
    }
    v
}

/// Waits until the run is final, or `timeout`. `None` on timeout.
async fn wait_run(
    g: &Gateway,
    run_id: &str,
    timeout: Duration,
) -> Result<Option<RunRecord>, ErrorShape> {
    let Ok(_waiting) = g.waiters.clone().try_acquire_owned() else {
        return Err(ErrorShape::unavailable(format!(
            "{} requests are already waiting for runs; try again shortly",
            super::MAX_WAITERS
        )));
    };
    let mut done = g.queue.completions();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let store = g.queue.store().clone();
        let id = run_id.to_string();
        if let Some(r) = blocking(move || store.get_run(&id)).await? {
            if r.status.is_final() {
                return Ok(Some(r));
            }
        }
        // Wait for this run id (or a lag, after which the store is re-read).
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                r = done.recv() => match r {
                    Ok(id) if &*id == run_id => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(_) => return Ok(None),
                },
            }
        }
    }
}

async fn agent(g: &Gateway, c: &Conn, id: &str, p: &Value) {
    let r: Result<(String, bool), ErrorShape> = async {
        let session = match str_param(p, "agentId") {
            Some(a) if str_param(p, "sessionKey").is_none() => {
                routing::canonical_key(&g.cfg, &format!("agent:{a}:main"))
                    .map_err(ErrorShape::invalid)?
            }
            _ => session_param(g, p)?,
        };
        let text = message_param(p)?;
        let idem = idem_param(p)?;
        match submit(g, "agent", session, text, idem).await? {
            Ok(it) => Ok((it.run_id, true)),
            Err(first) => Ok((first.run_id, false)),
        }
    }
    .await;
    let (run_id, fresh) = match r {
        Ok(x) => x,
        Err(e) => return c.send(Frame::err(id, e)).await,
    };
    // Seconds, as OpenClaw's `agent` takes it; capped like agent.wait.
    let timeout = Duration::from_millis(
        p["timeout"]
            .as_u64()
            .map_or(600_000, |s| s.saturating_mul(1000))
            .min(600_000),
    );
    c.send(Frame::ok(
        id,
        json!({"runId": run_id, "status": "accepted", "acceptedAt": now_ms(), "duplicate": !fresh}),
    ))
    .await;
    match wait_run(g, &run_id, timeout).await {
        Ok(Some(r)) => c.send(Frame::ok(id, run_payload(&r))).await,
        Ok(None) => {
            c.send(Frame::ok(id, json!({"runId": run_id, "status": "timeout"})))
                .await
        }
        Err(e) => c.send(Frame::err(id, e)).await,
    }
}

async fn agent_wait(g: &Gateway, p: &Value) -> Res {
    let run_id = str_param(p, "runId").ok_or_else(|| ErrorShape::invalid("runId is required"))?;
    let timeout = Duration::from_millis(p["timeoutMs"].as_u64().unwrap_or(30_000).min(600_000));
    match wait_run(g, run_id, timeout).await? {
        Some(r) => Ok(run_payload(&r)),
        None => Ok(json!({"runId": run_id, "status": "timeout"})),
    }
}

/// Delivers a message to a session without an agent run (webchat: it is
/// added to the transcript and sent to connected clients).
async fn send(g: &Gateway, p: &Value) -> Res {
    // `channel` + `to` (OpenClaw's shape) to a channel: through the outbox
    if let Some(ch) = str_param(p, "channel").filter(|c| *c != "webchat") {
        return send_to_channel(g, p, ch).await;
    }
    let session = match str_param(p, "to") {
        Some(to) => routing::canonical_key(&g.cfg, to).map_err(ErrorShape::invalid)?,
        None => session_param(g, p)?,
    };
    let text = message_param(p)?;
    let idem = idem_param(p)?;
    let message_id = new_id();
    let response = json!({"runId": idem, "messageId": message_id, "channel": "webchat", "sessionKey": session});
    let rec = IdemRecord {
        method: "send".into(),
        run_id: idem.clone(),
        response: response.clone(),
        ts: now_ms(),
    };
    let store = g.queue.store().clone();
    let key = format!("send:{idem}");
    let agent_id = routing::agent_of(&session)
        .unwrap_or(&g.cfg.default_agent)
        .to_string();
    let (k2, t2, i2) = (session.clone(), text.clone(), idem.clone());
    let dup = tokio::task::spawn_blocking(move || -> Result<Option<IdemRecord>, StoreError> {
        let entry = Entry::new(Role::Assistant, t2, Some(&i2));
        match store.record_outbound(&key, &rec, &k2, &agent_id, entry) {
            Ok(()) => Ok(None),
            Err(StoreError::Duplicate(r)) => Ok(Some(*r)),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(blocking_err)?
    .map_err(blocking_err)?;
    if let Some(first) = dup {
        return Ok(first.response);
    }
    RunEvents::new(g.bus.clone(), &idem, &session).chat_final(&text, &[]);
    Ok(response)
}

/// `send {channel, to, message, idempotencyKey}` to a channel's target,
/// under the outreach policy (docs/protocol.md).
async fn send_to_channel(g: &Gateway, p: &Value, channel: &str) -> Res {
    let to = str_param(p, "to").ok_or_else(|| ErrorShape::invalid("send to a channel needs to"))?;
    let target = format!("{channel}:{to}");
    let text = message_param(p)?;
    let idem = idem_param(p)?;
    let out = g.outreach.clone();
    let t2 = target.clone();
    let (id, first) = tokio::task::spawn_blocking(move || {
        let rec = IdemRecord {
            method: "send".into(),
            run_id: idem.clone(),
            response: json!({"runId": idem, "channel": t2.split(':').next(), "to": t2,
                             "messageId": format!("send-{idem}")}),
            ts: now_ms(),
        };
        out.send_once(&t2, &text, Some((&format!("send:{idem}"), &rec)))
            .map(|(id, first)| (id, first.map(|f| f.response).unwrap_or(rec.response)))
    })
    .await
    .map_err(blocking_err)?
    .map_err(|e| ErrorShape::invalid(e.to_string()))?;
    let mut r = first;
    if r.get("messageId").is_none() {
        r["messageId"] = json!(id);
    }
    Ok(r)
}

async fn sessions_list(g: &Gateway, p: &Value) -> Res {
    let limit = p["limit"].as_u64().unwrap_or(500) as usize;
    let store = g.queue.store().clone();
    let mut list = blocking(move || store.sessions().list()).await?;
    // Hearth has no sub-agent sessions: none was spawned by another
    if p.get("spawnedBy").is_some_and(|v| !v.is_null()) {
        list.clear();
    }
    list.sort_by_key(|s| std::cmp::Reverse(s.updated_ms));
    list.truncate(limit);
    let sessions: Vec<Value> = list
        .iter()
        .map(|s| super::compat::session_row(g, s))
        .collect();
    Ok(
        json!({"ts": now_ms(), "path": "", "count": sessions.len(), "hasMore": false,
              "defaults": super::compat::defaults(g), "sessions": sessions}),
    )
}

async fn sessions_reset(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    let store = g.queue.store().clone();
    let k = session.clone();
    match blocking(move || store.sessions().reset(&k)).await? {
        Some(m) => {
            g.bus.emit(
                "sessions.changed",
                json!({"sessionKey": session, "reason": "reset"}),
            );
            Ok(json!({"ok": true, "key": session, "sessionId": m.session_id}))
        }
        None => Err(ErrorShape::invalid(format!("no session {session:?}"))),
    }
}

async fn sessions_delete(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    if g.queue.is_busy(&session) {
        return Err(ErrorShape::unavailable(
            "the session has a run in progress or queued messages; abort it first",
        ));
    }
    let store = g.queue.store().clone();
    let k = session.clone();
    let deleted = blocking(move || store.sessions().delete(&k)).await?;
    if deleted {
        g.bus.emit(
            "sessions.changed",
            json!({"sessionKey": session, "reason": "deleted"}),
        );
    }
    Ok(json!({"ok": true, "key": session, "deleted": deleted}))
}

/// `sessions.compact {key}`: summarizes the older turns now.
async fn sessions_compact(g: &Gateway, p: &Value) -> Res {
    let session = session_param(g, p)?;
    let owner = crate::inbound::Origin::owner("webchat");
    let out = super::commands::compact_session(g, &session, &owner).await?;
    Ok(json!({"ok": true, "key": session, "compacted": out.to_json()}))
}

fn models_list(g: &Gateway) -> Value {
    let mut seen = std::collections::BTreeSet::new();
    for a in &g.cfg.agents {
        if let Some(m) = &a.model {
            for r in m.refs() {
                seen.insert(r.to_string());
            }
        }
    }
    let status = g.providers.status();
    let models: Vec<Value> = seen
        .iter()
        .filter_map(|r| {
            let (p, m) = r.split_once('/')?;
            let prov = status.iter().find(|s| s["name"] == p);
            // Available when any credential of its provider is usable now.
            let available = prov.is_some_and(|s| {
                s["credentials"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["state"] == "ok"))
            });
            Some(
                json!({"id": m, "name": m, "provider": p, "ref": r, "available": available,
                        "kind": prov.map(|s| s["kind"].clone())}),
            )
        })
        .collect();
    json!({"models": models, "providers": status})
}

/// The effective configuration with every secret masked: the gateway token
/// and API keys never leave the process.
fn config_get(g: &Gateway) -> Value {
    let c = &g.cfg;
    let providers: serde_json::Map<String, Value> = c
        .providers
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                json!({"kind": p.kind.as_str(), "baseUrl": p.base_url,
                       "timeoutSecs": p.timeout.as_secs(), "maxTokens": p.max_tokens,
                       "credentials": p.credentials.iter().map(|k| json!({"id": k.id, "key": k.key.masked()})).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let agents: Vec<Value> = c
        .agents
        .iter()
        .map(|a| {
            json!({"id": a.id, "model": a.model.as_ref().map(|m| json!({"primary": m.primary, "fallbacks": m.fallbacks})),
                   "maxSteps": a.max_steps, "runTimeoutSecs": a.run_timeout.as_secs(),
                   "toolTimeoutSecs": a.tool_timeout.as_secs(),
                   "tools": {"allow": a.tools.allow, "deny": a.tools.deny}})
        })
        .collect();
    let cloud: Vec<String> = c
        .providers
        .iter()
        .filter(|(_, p)| p.kind.as_str() != "local")
        .map(|(n, p)| format!("{n} ({})", p.kind.as_str()))
        .collect();
    let model = c
        .agent(&c.default_agent)
        .and_then(|a| a.model.as_ref())
        .map(|m| m.primary.clone());
    let setup = json!({
        "needed": cloud.is_empty(),
        "provider": (!cloud.is_empty()).then(|| format!("{}, model {}", cloud.join(", "), model.unwrap_or_default())),
        "telegram": c.channels.contains_key("telegram"),
        "mqtt": c.mqtt.as_ref().map(|m| hide_userinfo(&m.url)),
        "files": [crate::config::setup::toml_path(&g.state_dir), crate::config::setup::env_path(&g.state_dir)],
    });
    json!({
        "path": c.source.as_ref().map(|p| p.display().to_string()),
        "setup": setup,
        "config": {
            "gateway": {"bind": c.gateway.bind.to_string(), "token": c.gateway.token.as_ref().map(|t| t.masked()),
                        "allowedOrigins": c.gateway.allowed_origins, "hostnames": c.gateway.hostnames,
                        "maxConnections": c.gateway.max_connections, "maxHandshakes": c.gateway.max_handshakes,
                        "maxHandshakesPerPeer": c.gateway.max_handshakes_per_peer, "maxInflight": c.gateway.max_inflight},
            "providers": providers,
            "agents": agents,
            "defaultAgent": c.default_agent,
            "maxConcurrent": c.max_concurrent,
        }
    })
}
