//! `[channels.telegram]`: the bot token, the groups Hearth answers in,
//! where the Bot API is. The access keys (`dm_policy`, `allow_from`,
//! `members`, `tools`) are shared by every channel (`config::access`).

use std::time::Duration;

use crate::config::Config;
use crate::secret::Secret;

/// The public Bot API.
pub const PUBLIC_API: &str = "https://api.telegram.org";

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub bot_token: Secret,
    /// Group chat ids Hearth answers in (`"*"`: every group it is in).
    pub groups: Vec<String>,
    /// In groups, answer only when mentioned (`@bot`) or replied to.
    pub require_mention: bool,
    /// `https://api.telegram.org` (tests: a fake on loopback).
    pub api_base: String,
    /// How long one `getUpdates` long poll waits on Telegram's side.
    pub poll_timeout: Duration,
    /// Largest photo, voice note or document kept in the state directory.
    pub media_max_bytes: u64,
    /// `sendChatAction typing` while a reply is being written.
    pub typing: bool,
    /// Show the reply as it is written (a draft message, edited).
    pub streaming: bool,
}

const KEYS: [&str; 8] = [
    "streaming",
    "bot_token",
    "groups",
    "require_mention",
    "api_base",
    "poll_timeout_secs",
    "media_max_bytes",
    "typing",
];

/// Parses the section; every problem is one `(key, message)`.
pub fn parse(cfg: &Config) -> Result<Option<TelegramConfig>, Vec<(String, String)>> {
    let Some(t) = cfg.channels.get("telegram") else {
        return Ok(None);
    };
    let mut probs = Vec::new();
    let key = |k: &str| format!("channels.telegram.{k}");
    for k in t.keys() {
        if !KEYS.contains(&k.as_str()) {
            probs.push((
                key(k),
                format!(
                    "unknown key (known: {}, dm_policy, allow_from, members, tools)",
                    KEYS.join(", ")
                ),
            ));
        }
    }
    let token = match t.get("bot_token").map(|v| v.as_str()) {
        Some(Some(s)) if valid_token(s.trim()) => s.trim().to_string(),
        Some(Some(s)) if s.trim().is_empty() => {
            probs.push((
                key("bot_token"),
                "is empty (is TELEGRAM_BOT_TOKEN set?)".into(),
            ));
            String::new()
        }
        Some(_) => {
            probs.push((
                key("bot_token"),
                "must look like 123456789:AA... (the token BotFather gave you)".into(),
            ));
            String::new()
        }
        None => {
            probs.push((
                key("bot_token"),
                "is required: bot_token = \"${TELEGRAM_BOT_TOKEN}\"".into(),
            ));
            String::new()
        }
    };
    let mut groups = Vec::new();
    match t.get("groups") {
        None => {}
        Some(toml::Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                match v {
                    toml::Value::Integer(n) => groups.push(n.to_string()),
                    toml::Value::String(s) if s == "*" || s.trim().parse::<i64>().is_ok() => {
                        groups.push(s.trim().to_string())
                    }
                    _ => probs.push((
                        format!("{}[{i}]", key("groups")),
                        "must be a chat id (e.g. -1001234567890) or \"*\"".into(),
                    )),
                }
            }
        }
        Some(_) => probs.push((key("groups"), "must be a list of chat ids".into())),
    }
    let flag = |k: &str, d: bool, probs: &mut Vec<(String, String)>| match t.get(k) {
        None => d,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => {
            probs.push((key(k), "must be true or false".into()));
            d
        }
    };
    let require_mention = flag("require_mention", true, &mut probs);
    let typing = flag("typing", true, &mut probs);
    let streaming = flag("streaming", true, &mut probs);
    let api_base = match t.get("api_base") {
        None => PUBLIC_API.to_string(),
        Some(toml::Value::String(s))
            if (s.starts_with("https://") || s.starts_with("http://"))
                && !s.contains(char::is_whitespace) =>
        {
            s.trim_end_matches('/').to_string()
        }
        Some(_) => {
            probs.push((key("api_base"), "must be an http(s):// URL".into()));
            PUBLIC_API.to_string()
        }
    };
    let int = |k: &str,
               range: std::ops::RangeInclusive<i64>,
               d: i64,
               probs: &mut Vec<(String, String)>| match t.get(k) {
        None => d,
        Some(toml::Value::Integer(n)) if range.contains(n) => *n,
        Some(_) => {
            probs.push((
                key(k),
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
            d
        }
    };
    let poll = int("poll_timeout_secs", 1..=50, 30, &mut probs);
    let media = int("media_max_bytes", 0..=(20 << 20), 10 << 20, &mut probs);
    if !probs.is_empty() {
        return Err(probs);
    }
    Ok(Some(TelegramConfig {
        bot_token: Secret::new(token),
        groups,
        require_mention,
        api_base,
        poll_timeout: Duration::from_secs(poll as u64),
        media_max_bytes: media as u64,
        typing,
        streaming,
    }))
}

/// `<bot id>:<35 or so URL-safe characters>`: nothing that could change
/// the request URL's path.
fn valid_token(s: &str) -> bool {
    let Some((id, rest)) = s.split_once(':') else {
        return false;
    };
    !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && rest.len() >= 20
        && rest.len() <= 100
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// For `config validate` and the daemon's start: the section's problems.
pub fn check(cfg: &Config) -> Vec<String> {
    match parse(cfg) {
        Ok(_) => Vec::new(),
        Err(p) => p.into_iter().map(|(k, m)| format!("{k}: {m}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(section: &str) -> Config {
        Config::from_str(&format!("[channels.telegram]\n{section}"), None, &|_| None).unwrap()
    }

    #[test]
    fn tokens_and_keys_are_checked() {
        let c = cfg(
            "bot_token = \"123456:ABCdefGHIjklMNOpqrSTUvwxYZ_-12345\"\ngroups = [-100123, \"*\"]\n",
        );
        let t = parse(&c).unwrap().unwrap();
        assert_eq!(t.groups, vec!["-100123", "*"]);
        assert!(t.require_mention);
        assert_eq!(t.api_base, PUBLIC_API);
        for bad in [
            "bot_token = \"123456:AB/../../x?y=1234567890123\"",
            "bot_token = \"\"",
            "bot_token = \"123456:ABCdefGHIjklMNOpqrSTUvwxYZ\"\npoll_timeout_secs = 600",
            "bot_token = \"123456:ABCdefGHIjklMNOpqrSTUvwxYZ\"\napi_base = \"ftp://x\"",
            "bot_token = \"123456:ABCdefGHIjklMNOpqrSTUvwxYZ\"\ngroupz = []",
            "bot_token = \"123456:ABCdefGHIjklMNOpqrSTUvwxYZ\"\ngroups = [\"family\"]",
        ] {
            assert!(!check(&cfg(bad)).is_empty(), "{bad}");
        }
    }
}
