//! What the web console's setup page writes: `<state>/setup.toml`, merged
//! over the config file's tables at load (its keys win), and
//! `<state>/setup.env` (mode 0600), the secrets it names as `${VAR}`.
//!
//! The config file itself (often `/etc/hearth/hearth.toml`, read-only to
//! the daemon) is never rewritten. A key is never echoed back: the setup
//! TOML holds `${HEARTH_SETUP_…}` references, the values only the env file.
//! Both are written to a temporary file and renamed into place, the env
//! file first, so a power cut leaves the old pair or the new one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

pub fn toml_path(state: &Path) -> PathBuf {
    state.join("setup.toml")
}

pub fn env_path(state: &Path) -> PathBuf {
    state.join("setup.env")
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
pub fn merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The setup overlay, if there is one. A broken file is an error with its
/// path (it was written by Hearth; someone edited it by hand).
pub fn read_table(state: &Path) -> Result<Option<Table>, String> {
    let p = toml_path(state);
    match std::fs::read_to_string(&p) {
        Ok(t) => t
            .parse::<Table>()
            .map(Some)
            .map_err(|e| format!("{}: not valid TOML: {}", p.display(), e.message().trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "cannot read the console's setup: {e} (run as the service user, or give the state directory with --state-dir)"
        )),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// `NAME=value` lines of the setup env file (comments and blanks skipped).
pub fn read_env(state: &Path) -> BTreeMap<String, String> {
    let Ok(t) = std::fs::read_to_string(env_path(state)) else {
        return BTreeMap::new();
    };
    t.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| valid_name(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// One change from the setup page. Empty strings mean "not given".
#[derive(Debug, Default, Clone)]
pub struct Change {
    /// kind (`openai`, `anthropic`, `gemini`), key, model id, base URL.
    pub provider: Option<(String, String, String, String)>,
    pub telegram_token: Option<String>,
    /// url, username, password.
    pub mqtt: Option<(String, String, String)>,
}

/// A model to start with per kind, when the page gave none.
fn default_model(kind: &str) -> &'static str {
    match kind {
        "anthropic" => "claude-sonnet-4-5",
        "gemini" => "gemini-2.5-flash",
        _ => "gpt-4o-mini",
    }
}

/// A problem with a field of the page, before any config is validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem {
    pub key: String,
    pub message: String,
}

fn secret_ok(key: &str, v: &str, probs: &mut Vec<FieldProblem>) -> bool {
    let ok = !v.chars().any(|c| c.is_control() || c == ' ' || c == '$') && v.len() <= 4096;
    if !ok {
        probs.push(FieldProblem {
            key: key.into(),
            message: "must be one line without spaces or $ (paste the key alone)".into(),
        });
    }
    ok
}

/// A setting that is not a secret: one line, no control characters, and
/// no `$` (the config expands `${VAR}` in every string, so a `$` here could
/// pull another secret into a value a page shows or an error message).
fn plain_ok(key: &str, v: &str, probs: &mut Vec<FieldProblem>) -> bool {
    let ok = !v.chars().any(|c| c.is_control() || c == '$') && v.len() <= 1024;
    if !ok {
        probs.push(FieldProblem {
            key: key.into(),
            message: "must be one line of at most 1024 characters without $".into(),
        });
    }
    ok
}

/// The overlay, the env and the names of what changed.
pub type Planned = (Table, BTreeMap<String, String>, Vec<String>);

/// Sets `path` (tables, then a key) in `t`.
fn put(t: &mut Table, path: &[&str], v: Value) {
    let mut at = t;
    for p in &path[..path.len() - 1] {
        at = at
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .expect("setup tables are tables");
    }
    at.insert(path[path.len() - 1].to_string(), v);
}

fn problem(probs: &mut Vec<FieldProblem>, key: &str, message: impl Into<String>) {
    probs.push(FieldProblem {
        key: key.into(),
        message: message.into(),
    });
}

/// The overlay and env after `c`, from the current ones. Every problem
/// with the fields at once.
pub fn plan(
    c: &Change,
    mut table: Table,
    mut env: BTreeMap<String, String>,
) -> Result<Planned, Vec<FieldProblem>> {
    let mut probs = Vec::new();
    let mut changed = Vec::new();
    if let Some(p) = &c.provider {
        if plan_provider(p, &mut table, &mut env, &mut probs) {
            changed.push("provider".to_string());
        }
    }
    if let Some(tok) = c.telegram_token.as_ref().filter(|t| !t.is_empty()) {
        if secret_ok("telegram.botToken", tok, &mut probs) {
            env.insert("HEARTH_SETUP_TELEGRAM_BOT_TOKEN".into(), tok.clone());
            let r = "${HEARTH_SETUP_TELEGRAM_BOT_TOKEN}";
            put(&mut table, &["channels", "telegram", "bot_token"], r.into());
            changed.push("telegram".into());
        }
    }
    if let Some(m) = &c.mqtt {
        if plan_mqtt(m, &mut table, &mut env, &mut probs) {
            changed.push("mqtt".into());
        }
    }
    if probs.is_empty() {
        Ok((table, env, changed))
    } else {
        Err(probs)
    }
}

/// `[providers.<kind>]` and `agents.defaults.model`; whether it applies.
fn plan_provider(
    (kind, key, model, base): &(String, String, String, String),
    table: &mut Table,
    env: &mut BTreeMap<String, String>,
    probs: &mut Vec<FieldProblem>,
) -> bool {
    let fine = plain_ok("provider.model", model, probs) & plain_ok("provider.baseUrl", base, probs);
    if !fine {
        return false;
    }
    if !["openai", "anthropic", "gemini"].contains(&kind.as_str()) {
        problem(probs, "provider.kind", "choose openai, anthropic or gemini");
        return false;
    }
    let has_key = env.contains_key(&env_name(kind));
    if key.is_empty() && !has_key && (kind != "openai" || base.is_empty()) {
        problem(
            probs,
            "provider.apiKey",
            format!("an API key is needed for {kind}"),
        );
    }
    if !key.is_empty() && secret_ok("provider.apiKey", key, probs) {
        env.insert(env_name(kind), key.clone());
    }
    let model = if model.is_empty() {
        default_model(kind)
    } else {
        model
    };
    if model.contains(char::is_whitespace) || model.contains('/') && kind != "openai" {
        problem(
            probs,
            "provider.model",
            "a model id without spaces, e.g. gpt-4o-mini",
        );
    }
    put(table, &["providers", kind, "kind"], kind.as_str().into());
    if env.contains_key(&env_name(kind)) {
        let r = format!("${{{}}}", env_name(kind));
        put(table, &["providers", kind, "api_key"], r.into());
    }
    if !base.is_empty() {
        put(
            table,
            &["providers", kind, "base_url"],
            base.as_str().into(),
        );
    }
    let m = format!("{kind}/{model}");
    put(table, &["agents", "defaults", "model"], m.into());
    true
}

/// `[channels.mqtt]` url, username, password; whether it applies.
fn plan_mqtt(
    (url, user, pass): &(String, String, String),
    table: &mut Table,
    env: &mut BTreeMap<String, String>,
    probs: &mut Vec<FieldProblem>,
) -> bool {
    if !(plain_ok("mqtt.url", url, probs) & plain_ok("mqtt.username", user, probs)) {
        return false;
    }
    if url.is_empty() {
        problem(
            probs,
            "mqtt.url",
            "the broker's URL, e.g. mqtt://192.168.1.10:1883",
        );
    } else {
        put(table, &["channels", "mqtt", "url"], url.as_str().into());
    }
    if !user.is_empty() {
        put(
            table,
            &["channels", "mqtt", "username"],
            user.as_str().into(),
        );
    }
    if !pass.is_empty() && secret_ok("mqtt.password", pass, probs) {
        env.insert("HEARTH_SETUP_MQTT_PASSWORD".into(), pass.clone());
        let r = "${HEARTH_SETUP_MQTT_PASSWORD}";
        put(table, &["channels", "mqtt", "password"], r.into());
    }
    true
}

fn env_name(kind: &str) -> String {
    format!("HEARTH_SETUP_{}_API_KEY", kind.to_ascii_uppercase())
}

/// TOML text for a setup table (string and table values only, which is
/// all `plan` writes). A JSON string literal is a valid TOML basic string.
pub fn to_toml(t: &Table) -> String {
    fn walk(t: &Table, path: &mut Vec<String>, out: &mut String) {
        let mut plain = String::new();
        for (k, v) in t {
            if !matches!(v, Value::Table(_)) {
                let val = match v {
                    Value::String(s) => serde_json::to_string(s).expect("strings serialize"),
                    Value::Integer(i) => i.to_string(),
                    Value::Boolean(b) => b.to_string(),
                    // not written by `plan`
                    _ => continue,
                };
                plain.push_str(&format!("{} = {val}\n", quote_key(k)));
            }
        }
        if !plain.is_empty() {
            if !path.is_empty() {
                let head: Vec<String> = path.iter().map(|p| quote_key(p)).collect();
                out.push_str(&format!("\n[{}]\n", head.join(".")));
            }
            out.push_str(&plain);
        }
        for (k, v) in t {
            if let Value::Table(sub) = v {
                path.push(k.clone());
                walk(sub, path, out);
                path.pop();
            }
        }
    }
    let mut out =
        String::from("# Written by Hearth's web console (Setup). Merged over hearth.toml.\n");
    walk(t, &mut Vec::new(), &mut out);
    out
}

fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        serde_json::to_string(k).expect("strings serialize")
    }
}

/// Writes the env file, then the overlay (both 0600, each atomically),
/// after checking that the text reads back as the same table (a file the
/// next start could not parse is never written).
pub fn write(state: &Path, t: &Table, env: &BTreeMap<String, String>) -> std::io::Result<()> {
    let text = to_toml(t);
    if text.parse::<Table>().ok().as_ref() != Some(t) {
        return Err(std::io::Error::other(
            "the settings do not round-trip through TOML; nothing was written",
        ));
    }
    let mut e = String::from("# Secrets set by Hearth's web console (Setup).\n");
    for (k, v) in env {
        if v.contains(['\n', '\r']) || !valid_name(k) {
            return Err(std::io::Error::other("a secret is not one line"));
        }
        e.push_str(&format!("{k}={v}\n"));
    }
    atomic(&env_path(state), e.as_bytes())?;
    atomic(&toml_path(state), text.as_bytes())
}

/// Serializes read-plan-write of the setup files (`config.set`).
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn atomic(p: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = p.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_keeps_keys_out_of_the_toml_and_round_trips() {
        let c = Change {
            provider: Some((
                "anthropic".into(),
                "sk-ant-123456789".into(),
                String::new(),
                String::new(),
            )),
            telegram_token: Some("123:ABC".into()),
            mqtt: Some((
                "mqtt://broker.lan:1883".into(),
                "home".into(),
                "pw\"x".into(),
            )),
        };
        let (t, env, changed) = plan(&c, Table::new(), BTreeMap::new()).unwrap();
        assert_eq!(changed, ["provider", "telegram", "mqtt"]);
        let text = to_toml(&t);
        assert!(!text.contains("sk-ant"), "{text}");
        assert!(!text.contains("pw"), "{text}");
        let back: Table = text.parse().unwrap();
        assert_eq!(back, t);
        assert_eq!(env["HEARTH_SETUP_ANTHROPIC_API_KEY"], "sk-ant-123456789");
        assert_eq!(
            back["agents"]["defaults"]["model"].as_str(),
            Some("anthropic/claude-sonnet-4-5")
        );
    }

    #[test]
    fn every_field_problem_is_reported_at_once() {
        let c = Change {
            provider: Some((
                "gemini".into(),
                "two words".into(),
                String::new(),
                String::new(),
            )),
            telegram_token: Some("a\nb".into()),
            mqtt: Some((String::new(), String::new(), String::new())),
        };
        let probs = plan(&c, Table::new(), BTreeMap::new()).unwrap_err();
        let keys: Vec<&str> = probs.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["provider.apiKey", "telegram.botToken", "mqtt.url"]);
    }

    /// `${VAR}` in a setting would be expanded by the config loader and
    /// could come back in an error message (`"<the token>" must start with
    /// http://`): refused, as are control characters TOML cannot hold.
    #[test]
    fn settings_cannot_reference_other_secrets_or_break_the_file() {
        for (base, url) in [
            ("${HEARTH_GATEWAY_TOKEN}", "mqtt://a:1883"),
            ("https://x", "mqtt://h:${OPENAI_API_KEY}"),
            ("https://x\u{7f}", "mqtt://a:1883"),
            ("https://x\nkind = \"y\"", "mqtt://a:1883"),
        ] {
            let c = Change {
                provider: Some((
                    "openai".into(),
                    "sk-1234567890".into(),
                    "m".into(),
                    base.into(),
                )),
                telegram_token: None,
                mqtt: Some((url.into(), String::new(), String::new())),
            };
            let probs = plan(&c, Table::new(), BTreeMap::new()).unwrap_err();
            assert!(!probs.is_empty(), "{base} {url}");
        }
        let c = Change {
            provider: Some((
                "openai".into(),
                "sk-12$34567890".into(),
                String::new(),
                String::new(),
            )),
            ..Default::default()
        };
        assert!(plan(&c, Table::new(), BTreeMap::new()).is_err());
    }

    #[test]
    fn merge_is_deep_and_the_overlay_wins() {
        let mut base: Table = "[channels.mqtt]\nurl = \"a\"\nclient_id = \"x\"\n"
            .parse()
            .unwrap();
        let over: Table = "[channels.mqtt]\nurl = \"b\"\n".parse().unwrap();
        merge(&mut base, &over);
        assert_eq!(base["channels"]["mqtt"]["url"].as_str(), Some("b"));
        assert_eq!(base["channels"]["mqtt"]["client_id"].as_str(), Some("x"));
    }
}
