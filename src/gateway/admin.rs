//! The owner's appliance methods the web console uses: `logs.tail`,
//! `config.set` (the setup page), `devices.set` (the Home page),
//! `agents.files.list/get/set` (the Memory page, workspace-confined like
//! the file tools) and `gateway.restart`. Every caller is a signed-in
//! owner (the gateway's token or an owner-approved device token).

use std::sync::Arc;

use serde_json::{json, Value};

use super::protocol::ErrorShape;
use super::{blocking_err, str_param, Gateway};
use crate::config::setup;

type Res = Result<Value, ErrorShape>;

/// The methods of this module; `None` for any other.
pub async fn dispatch(g: &Arc<Gateway>, method: &str, p: &Value) -> Option<Res> {
    Some(match method {
        "logs.tail" => {
            // reads the setup env file and scrubs up to 1000 lines
            let (g, p) = (g.clone(), p.clone());
            tokio::task::spawn_blocking(move || logs_tail(&g, &p))
                .await
                .map_err(blocking_err)
        }
        "config.set" => config_set(g, p).await,
        "devices.set" => devices_set(g, p).await,
        "agents.files.list" => files_list(g, p).await,
        "agents.files.get" => files_get(g, p).await,
        "agents.files.set" => files_set(g, p).await,
        "gateway.restart" => Ok(restart(g)),
        _ => return None,
    })
}

pub const METHODS: [&str; 7] = [
    "logs.tail",
    "config.set",
    "devices.set",
    "agents.files.list",
    "agents.files.get",
    "agents.files.set",
    "gateway.restart",
];

/// Every secret this gateway knows, for [`crate::logs::scrub`].
fn secrets(g: &Gateway) -> Vec<String> {
    let mut out = vec![g.token.current().expose().to_string()];
    for p in g.cfg.providers.values() {
        out.extend(p.credentials.iter().map(|c| c.key.expose().to_string()));
    }
    for t in g.cfg.channels.values() {
        for (k, v) in t {
            let secretish = ["token", "password", "key", "secret"]
                .iter()
                .any(|w| k.contains(w));
            if let (true, Some(s)) = (secretish, v.as_str()) {
                out.push(s.to_string());
            }
        }
    }
    if let Some(pw) = g.cfg.mqtt.as_ref().and_then(|m| m.password.as_ref()) {
        out.push(pw.expose().to_string());
    }
    out.extend(setup::read_env(&g.state_dir).into_values());
    out
}

/// `logs.tail {cursor?, limit?, maxBytes?}` → OpenClaw's shape
/// `{file, cursor, size, lines, truncated, reset}`; lines are scrubbed.
fn logs_tail(g: &Gateway, p: &Value) -> Value {
    let limit = p["limit"].as_u64().unwrap_or(200).clamp(1, 1000) as usize;
    let max_bytes = p["maxBytes"]
        .as_u64()
        .unwrap_or(256 * 1024)
        .clamp(1024, 512 * 1024) as usize;
    let t = crate::logs::ring().tail(p["cursor"].as_u64(), limit, max_bytes);
    let secrets = secrets(g);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let lines: Vec<String> = t
        .lines
        .iter()
        .map(|l| crate::logs::scrub(l, &refs))
        .collect();
    json!({"file": "memory:hearth", "cursor": t.cursor, "size": t.size, "lines": lines,
           "truncated": t.truncated, "reset": t.reset})
}

fn text(p: &Value, section: &str, k: &str) -> String {
    p[section][k].as_str().unwrap_or("").trim().to_string()
}

/// `config.set {provider?{kind, apiKey, model, baseUrl}, telegram?{botToken},
/// mqtt?{url, username, password}}`: validated with the config file as
/// `hearth config validate` does, every problem at once; written to the
/// setup files (docs/console.md); takes effect at the next start.
async fn config_set(g: &Gateway, p: &Value) -> Res {
    let c = setup::Change {
        provider: p["provider"].is_object().then(|| {
            (
                text(p, "provider", "kind"),
                text(p, "provider", "apiKey"),
                text(p, "provider", "model"),
                text(p, "provider", "baseUrl"),
            )
        }),
        telegram_token: p["telegram"]
            .is_object()
            .then(|| text(p, "telegram", "botToken")),
        mqtt: p["mqtt"].is_object().then(|| {
            (
                text(p, "mqtt", "url"),
                text(p, "mqtt", "username"),
                text(p, "mqtt", "password"),
            )
        }),
    };
    if c.provider.is_none() && c.telegram_token.is_none() && c.mqtt.is_none() {
        return Err(ErrorShape::invalid(
            "nothing to set: give provider, telegram or mqtt",
        ));
    }
    let (state, source) = (g.state_dir.clone(), g.cfg.source.clone());
    let r = tokio::task::spawn_blocking(move || -> Result<Vec<String>, Vec<(String, String)>> {
        let _one = setup::lock();
        let table = setup::read_table(&state).map_err(|m| vec![(String::new(), m)])?;
        let env = setup::read_env(&state);
        let (table, env, changed) =
            setup::plan(&c, table.unwrap_or_default(), env).map_err(|ps| {
                ps.into_iter()
                    .map(|p| (p.key, p.message))
                    .collect::<Vec<_>>()
            })?;
        crate::channel::check_config(source.as_deref(), &state, Some((&table, &env))).map_err(
            |e| {
                e.0.into_iter()
                    .map(|p| (p.key, p.message))
                    .collect::<Vec<_>>()
            },
        )?;
        setup::write(&state, &table, &env).map_err(|e| {
            vec![(
                String::new(),
                format!("cannot write the setup files in {}: {e}", state.display()),
            )]
        })?;
        Ok(changed)
    })
    .await
    .map_err(blocking_err)?;
    match r {
        Ok(changed) => {
            tracing::info!(changed = ?changed, "setup saved by the console; a restart applies it");
            Ok(
                json!({"ok": true, "changed": changed, "restartRequired": true,
                      "message": "Saved. Restart Hearth to apply it (the button below, or `sudo systemctl restart hearth`)."}),
            )
        }
        Err(probs) => {
            let n = probs.len();
            let list: Vec<Value> = probs
                .into_iter()
                .map(|(k, m)| json!({"key": k, "message": m}))
                .collect();
            let mut e = ErrorShape::invalid(format!("{n} problem(s); nothing was saved"));
            e.details = Some(Box::new(json!({"problems": list})));
            Err(e)
        }
    }
}

/// `devices.set {entity, action, value?}` → what `device_set` returns
/// (`published`, `confirmed`, `state`). High-risk devices only when
/// pre-approved in `[channels.mqtt] allow_high_risk`; everything else
/// about them goes through the approval path in chat.
async fn devices_set(g: &Gateway, p: &Value) -> Res {
    let Some(m) = g.mqtt.get() else {
        return Err(ErrorShape::invalid(
            "no MQTT channel is configured ([channels.mqtt])",
        ));
    };
    let id = str_param(p, "entity").ok_or_else(|| ErrorShape::invalid("entity is required"))?;
    if m.registry.get(id).is_none() {
        return Err(ErrorShape::invalid(format!("no device {id:?}")));
    }
    let approved = m.cfg.allow_high_risk.iter().any(|e| e == id).then_some(id);
    let mut args = p.clone();
    args["entity"] = json!(id);
    let out = crate::mqtt::tools::execute(m, "device_set", &args, approved)
        .await
        .map_err(ErrorShape::invalid)?;
    Ok(serde_json::from_str(&out).unwrap_or_else(|_| json!({"result": out})))
}

/// The files the Memory page offers: MEMORY.md, the workspace's bootstrap
/// files and `memory/*.md` (the daily notes).
fn allowed_name(name: &str) -> bool {
    const TOP: [&str; 7] = [
        "MEMORY.md",
        "AGENTS.md",
        "SOUL.md",
        "USER.md",
        "IDENTITY.md",
        "TOOLS.md",
        "HEARTBEAT.md",
    ];
    if TOP.contains(&name) {
        return true;
    }
    name.strip_prefix("memory/").is_some_and(|n| {
        n.ends_with(".md")
            && n.len() <= 128
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    })
}

fn file_param(g: &Gateway, p: &Value) -> Result<(std::path::PathBuf, String), ErrorShape> {
    let agent = super::agent_param(g, p)?;
    let name = str_param(p, "name")
        .ok_or_else(|| ErrorShape::invalid("name is required"))?
        .to_string();
    if !allowed_name(&name) {
        return Err(ErrorShape::invalid(format!(
            "{name:?} is not a memory file (MEMORY.md, the workspace's .md files, memory/<name>.md)"
        )));
    }
    Ok((agent.workspace_in(&g.state_dir), name))
}

fn path_err(e: crate::tool::dir::PathError) -> ErrorShape {
    ErrorShape::invalid(e.to_string())
}

/// Largest file the page reads or writes.
const MAX_FILE: usize = 512 * 1024;

async fn files_list(g: &Gateway, p: &Value) -> Res {
    let agent = super::agent_param(g, p)?;
    let ws = agent.workspace_in(&g.state_dir);
    let files = tokio::task::spawn_blocking(move || {
        let mut names: Vec<String> = Vec::new();
        if let Ok(root) = crate::tool::dir::Root::open(&ws) {
            for n in root.list(".").unwrap_or_default() {
                if allowed_name(&n) {
                    names.push(n);
                }
            }
            for n in root.list("memory").unwrap_or_default() {
                let n = format!("memory/{n}");
                if allowed_name(&n) {
                    names.push(n);
                }
            }
        }
        if !names.iter().any(|n| n == "MEMORY.md") {
            names.insert(0, "MEMORY.md".into());
        }
        names.sort_by_key(|n| (n != "MEMORY.md", n.starts_with("memory/"), n.clone()));
        let list: Vec<Value> = names
            .iter()
            .map(|n| {
                let m = std::fs::symlink_metadata(ws.join(n))
                    .ok()
                    .filter(|m| m.is_file());
                let mut v = json!({"name": n, "path": ws.join(n), "missing": m.is_none()});
                if let Some(m) = m {
                    v["size"] = json!(m.len());
                }
                v
            })
            .collect();
        (ws, list)
    })
    .await
    .map_err(blocking_err)?;
    let (ws, list) = files;
    Ok(json!({"agentId": agent.id, "workspace": ws, "files": list}))
}

async fn files_get(g: &Gateway, p: &Value) -> Res {
    let (ws, name) = file_param(g, p)?;
    let n = name.clone();
    let w = ws.clone();
    // the size first: a huge file is never read into memory (a planted
    // link is refused by the read itself)
    let r = tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(w.join(&n)) {
        Ok(m) if m.is_file() && m.len() > MAX_FILE as u64 => Ok(None),
        _ => crate::tool::fs::read_file(&w, &n).map(Some),
    })
    .await
    .map_err(blocking_err)?;
    let (content, missing) = match r {
        Ok(None) => {
            return Err(ErrorShape::invalid(format!(
                "{name} is larger than {MAX_FILE} bytes; edit it on the board"
            )))
        }
        Ok(Some(b)) if b.len() > MAX_FILE => {
            return Err(ErrorShape::invalid(format!(
                "{name} is larger than {MAX_FILE} bytes; edit it on the board"
            )))
        }
        Ok(Some(b)) => (String::from_utf8_lossy(&b).into_owned(), false),
        Err(crate::tool::dir::PathError::Io(m)) if m.contains("no such file") => {
            (String::new(), true)
        }
        Err(e) => return Err(path_err(e)),
    };
    Ok(
        json!({"agentId": super::agent_param(g, p)?.id, "workspace": ws,
              "file": {"name": name, "path": ws.join(&name), "missing": missing, "size": content.len(), "content": content}}),
    )
}

async fn files_set(g: &Gateway, p: &Value) -> Res {
    let (ws, name) = file_param(g, p)?;
    let content = p["content"]
        .as_str()
        .ok_or_else(|| ErrorShape::invalid("content (text) is required"))?
        .to_string();
    if content.len() > MAX_FILE {
        return Err(ErrorShape::invalid(format!(
            "content is larger than {MAX_FILE} bytes"
        )));
    }
    let (w, n, len) = (ws.clone(), name.clone(), content.len());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(w.join("memory")).map_err(|e| {
            crate::tool::dir::PathError::Io(format!("cannot create the workspace: {e}"))
        })?;
        let root = crate::tool::dir::Root::open(&w)?;
        root.write(&n, content.as_bytes())
    })
    .await
    .map_err(blocking_err)?
    .map_err(path_err)?;
    tracing::info!(file = %name, bytes = len, "memory file saved from the console");
    let agent = super::agent_param(g, p)?.id;
    Ok(json!({"ok": true, "agentId": agent, "workspace": ws,
              "file": {"name": name, "path": ws.join(&name), "missing": false, "size": len}}))
}

/// Time for the answer to `gateway.restart` to go out before the stop
/// closes the connections.
const RESTART_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// `gateway.restart`: the ordered shutdown, then the daemon executes
/// itself anew (`daemon::restart_self`) with the config and setup files as
/// they are now.
fn restart(g: &Arc<Gateway>) -> Value {
    tracing::info!("restart requested by the owner from a gateway client");
    let g = g.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RESTART_AFTER).await;
        super::request_restart(&g);
    });
    json!({"ok": true, "restarting": true})
}

/// Pushes device state changes to every client as `device` events (the
/// entity as `devices.list` shows it), coalesced per 100 ms so a chatty
/// sensor costs one event per entity per tick.
pub fn spawn_device_events(
    g: Arc<Gateway>,
    m: Arc<crate::mqtt::client::Mqtt>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = m.registry.changes();
        let mut batch = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = g.shutdown.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(id) => { batch.insert(id); }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            while let Ok(id) = rx.try_recv() {
                batch.insert(id);
            }
            for id in std::mem::take(&mut batch) {
                if let Some(e) = m.registry.get(&id) {
                    let mut v = e.describe();
                    if m.registry.is_high_risk(&id) {
                        v["high_risk"] = json!(true);
                    }
                    g.bus.emit("device", v);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::allowed_name;

    #[test]
    fn only_memory_files_are_offered() {
        for ok in ["MEMORY.md", "memory/2026-12-03.md", "SOUL.md"] {
            assert!(allowed_name(ok), "{ok}");
        }
        for bad in [
            "../MEMORY.md",
            "memory/../../etc/passwd.md",
            "memory/x.txt",
            "memory/.hidden.md",
            "memory/a/b.md",
            "notes.md",
            "/etc/hearth/hearth.toml",
        ] {
            assert!(!allowed_name(bad), "{bad}");
        }
    }
}
