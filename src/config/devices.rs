//! `[devices]`: what the household calls its devices. Today the aliases:
//!
//! ```toml
//! [devices.aliases]
//! "light.kitchen_ceiling" = ["big light", "deckenlicht"]
//! "lock.front_door" = "front door lock"
//! ```
//!
//! An alias counts like the device's own name in name resolution (the
//! device tools and the local intent stage).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Aliases per entity, and names per alias, at most.
pub const MAX_ALIASES: usize = 16;
/// Entities with aliases, at most.
pub const MAX_ENTITIES: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevices {
    #[serde(default)]
    aliases: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicesConfig {
    /// entity id → the other names it goes by.
    pub aliases: BTreeMap<String, Vec<String>>,
}

pub(crate) fn parse(raw: RawDevices, add: &mut dyn FnMut(String, String)) -> DevicesConfig {
    let mut out = DevicesConfig::default();
    if raw.aliases.len() > MAX_ENTITIES {
        add(
            "devices.aliases".into(),
            format!("has {} entities; at most {MAX_ENTITIES}", raw.aliases.len()),
        );
        return out;
    }
    for (id, names) in raw.aliases {
        let key = format!("devices.aliases.{id:?}");
        let valid_id = id.split_once('.').is_some_and(|(c, o)| {
            !c.is_empty()
                && !o.is_empty()
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' || ch == '-')
        });
        if !valid_id {
            add(
                key,
                "must be an entity id such as \"light.kitchen_ceiling\" (see `hearth devices`)"
                    .into(),
            );
            continue;
        }
        let names = match names {
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(v) => v,
        };
        if names.len() > MAX_ALIASES {
            add(key, format!("at most {MAX_ALIASES} aliases per device"));
            continue;
        }
        let mut ok = Vec::new();
        for n in names {
            let t = n.trim();
            if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
                add(
                    key.clone(),
                    format!("alias {n:?} must be 1-64 characters, no control characters"),
                );
            } else {
                ok.push(t.to_string());
            }
        }
        out.aliases.insert(id, ok);
    }
    out
}
