//! The one list of channel kinds, and building them from the config.

use std::path::Path;
use std::sync::Arc;

use super::Channel;
use crate::config::Config;

/// Builds a channel when its section is configured (`Ok(None)` when not).
/// Blocking work (opening its files) is fine: called on the blocking pool.
pub type Build = fn(&Config, &Path) -> Result<Option<Arc<dyn Channel>>, String>;

/// Problems in a configured section, for `config validate` and the start
/// (MQTT's section is checked by the config module itself).
pub type Check = fn(&Config) -> Vec<String>;

fn checked_by_config(_: &Config) -> Vec<String> {
    Vec::new()
}

/// Every channel kind: one line each.
pub const REGISTRY: &[(&str, Build, Check)] = &[
    ("mqtt", crate::mqtt::channel::build, checked_by_config),
    (
        "telegram",
        crate::telegram::build,
        crate::telegram::config::check,
    ),
];

/// The channel kinds Hearth knows.
pub fn kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|(k, ..)| *k).collect()
}

/// Config problems the config module cannot see: sections of unknown
/// channel kinds.
pub fn check(cfg: &Config) -> Vec<String> {
    let known = kinds();
    let own = REGISTRY.iter().flat_map(|(_, _, check)| check(cfg));
    cfg.channels
        .keys()
        .chain(cfg.access.keys())
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| {
            format!(
                "channels.{k}: unknown channel kind (known: {})",
                known.join(", ")
            )
        })
        .chain(own)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Builds every configured channel.
pub fn build_all(cfg: &Config, state_dir: &Path) -> Result<Vec<Arc<dyn Channel>>, String> {
    let mut out = Vec::new();
    for (kind, build, _) in REGISTRY {
        if let Some(c) = build(cfg, state_dir).map_err(|e| format!("channel {kind}: {e}"))? {
            out.push(c);
        }
    }
    Ok(out)
}
