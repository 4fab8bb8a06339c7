//! The device/entity registry: every discovered entity with its last
//! state, in memory for the tools and in `<state>/devices.redb` so
//! `hearth devices` and a restart see it before the broker re-sends the
//! retained configs. Configs are written when they change (durable);
//! states at most every [`STATE_FLUSH`] and at shutdown, since sensors
//! report often and a board's SD card should not take a commit each time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::broadcast;

use super::discovery::{Component, Entity, Field, State};

const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
/// High-risk entities as first seen (see [`Pin`]), kept after removal.
const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("high_risk");

/// Entities the registry takes at most (a broker flooding discovery
/// configs cannot grow it without bound).
pub const MAX_ENTITIES: usize = 4096;

/// How a high-risk entity (a lock, an alarm panel, a door) is commanded,
/// as first announced. Its command side cannot be changed or taken over
/// through discovery afterwards, and its command topics stay high-risk
/// after the entity is removed; only the owner lifts a pin
/// (`hearth devices --forget`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub command_topics: Vec<String>,
    /// Component, device class, command topics, payloads and command
    /// templates, as canonical JSON.
    pub fingerprint: String,
}

/// The pin of `e` (whether or not it is high-risk).
pub fn pin_of(e: &Entity) -> Pin {
    let mut m = BTreeMap::new();
    m.insert("component".to_string(), Value::from(e.component.as_str()));
    for (k, v) in &e.config {
        let commands = k == "device_class"
            || k == "schema"
            || k.starts_with("payload_")
            || k.starts_with("position_")
            || k.starts_with("code")
            || k.ends_with("command_template")
            || k == "set_position_template"
            || super::discovery::COMMAND_KEYS.contains(&k.as_str());
        if commands {
            m.insert(k.clone(), v.clone());
        }
    }
    Pin {
        command_topics: e.command_topics(),
        fingerprint: serde_json::to_string(&m).expect("json"),
    }
}

/// How often changed states are written to `devices.redb`.
pub const STATE_FLUSH: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("device registry {path}: {why}")]
    Db { path: PathBuf, why: String },
}

#[derive(Default)]
struct Inner {
    entities: BTreeMap<String, Entity>,
    by_config: HashMap<String, String>,
    by_topic: HashMap<String, Vec<(String, Field)>>,
    /// Entities whose state changed since the last flush.
    dirty: HashSet<String>,
    pins: HashMap<String, Pin>,
    /// `[devices.aliases]`: entity id → other names.
    aliases: HashMap<String, Vec<String>>,
}

impl Inner {
    fn reindex(&mut self) {
        self.by_config.clear();
        self.by_topic.clear();
        for (id, e) in &self.entities {
            self.by_config.insert(e.config_topic.clone(), id.clone());
            for (t, f) in e.state_topics() {
                self.by_topic.entry(t).or_default().push((id.clone(), f));
            }
        }
    }
}

/// What an upsert did.
#[derive(Debug, PartialEq, Eq)]
pub enum Upsert {
    Added,
    Updated,
    Unchanged,
    /// Not taken: it would replace an entity announced from another
    /// discovery topic or by another device (the first one stays).
    Refused(String),
}

/// Who a config says it is: the device's identifiers (or connections, or
/// name). A config for a known entity must come from the same one.
fn device_key(e: &Entity) -> Option<String> {
    let d = e.config.get("device")?;
    d.get("identifiers")
        .or_else(|| d.get("connections"))
        .map(|v| v.to_string())
        .or_else(|| {
            d.get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!("name:{n}"))
        })
}

impl Inner {
    /// Why `e` may not replace what the registry holds, if it may not.
    fn takeover(&self, e: &Entity) -> Option<String> {
        if let Some(p) = self.pins.get(&e.id) {
            if pin_of(e).fingerprint != p.fingerprint {
                return Some(format!(
                    "the config for the high-risk {id} changes how it is commanded (class, command \
                     topics or payloads); the first one stays. If the change is yours, run \
                     `hearth devices --forget {id}`, then announce it again",
                    id = e.id
                ));
            }
        }
        if !self.entities.contains_key(&e.id) && self.entities.len() >= MAX_ENTITIES {
            return Some(format!(
                "the registry holds {MAX_ENTITIES} entities already"
            ));
        }
        if let Some(old) = self.entities.get(&e.id) {
            if old.config_topic != e.config_topic {
                return Some(format!(
                    "{} is already announced on {}; the config on {} would take it over",
                    e.id, old.config_topic, e.config_topic
                ));
            }
            if device_key(old) != device_key(e) {
                return Some(format!(
                    "the config for {} now names another device ({} instead of {})",
                    e.id,
                    device_key(e).unwrap_or_else(|| "none".into()),
                    device_key(old).unwrap_or_else(|| "none".into())
                ));
            }
        }
        let renamed = self
            .by_config
            .get(&e.config_topic)
            .filter(|id| **id != e.id);
        if let Some(old) = renamed.and_then(|id| self.entities.get(id)) {
            if device_key(old) != device_key(e) {
                return Some(format!(
                    "the config on {} described {} of another device",
                    e.config_topic, old.id
                ));
            }
        }
        None
    }

    /// High-risk itself, or sharing a command topic with a high-risk
    /// entity (or publishing below one: Zigbee2MQTT takes
    /// `<device>/set/<attribute>` too). A "switch" whose `payload_on` is
    /// UNLOCK on a lock's topic is a lock.
    fn high_risk(&self, e: &Entity) -> bool {
        self.high_risk_in(e, &self.risky_topics())
    }

    /// The command topics of every pinned high-risk entity, live or
    /// removed, for [`high_risk_in`](Self::high_risk_in).
    fn risky_topics(&self) -> Risky {
        let mut r = Risky::default();
        for t in self.pins.values().flat_map(|p| &p.command_topics) {
            r.topics.insert(t.clone());
            for a in ancestors(t) {
                r.above.insert(a.to_string());
            }
        }
        r
    }

    fn high_risk_in(&self, e: &Entity, risky: &Risky) -> bool {
        if e.is_high_risk() || self.pins.contains_key(&e.id) {
            return true;
        }
        e.command_topics().iter().any(|m| {
            // m is a risky topic or below one, or above one
            ancestors(m).any(|a| risky.topics.contains(a)) || risky.above.contains(m)
        })
    }
}

/// Risky command topics, and every topic they are below (themselves
/// included): two set lookups per level instead of a scan of all pins.
#[derive(Default)]
struct Risky {
    topics: HashSet<String>,
    above: HashSet<String>,
}

/// `a/b/c`, `a/b`, `a`.
fn ancestors(t: &str) -> impl Iterator<Item = &str> {
    std::iter::once(t).chain(t.rmatch_indices('/').map(move |(i, _)| &t[..i]))
}

/// How a name resolved.
#[derive(Debug, PartialEq)]
pub enum Resolved {
    One(String),
    /// Several fit about equally well: (id, name) of each.
    Ambiguous(Vec<(String, String)>),
    /// Nothing fits; the closest few.
    NotFound(Vec<(String, String)>),
}

pub struct Registry {
    inner: Mutex<Inner>,
    db: Database,
    path: PathBuf,
    changes: broadcast::Sender<String>,
}

impl Registry {
    /// Opens (or creates) `devices.redb` and loads the entities. A file
    /// that is not a readable registry is moved aside and started anew:
    /// discovery fills it again from the broker's retained configs.
    pub fn open(path: &Path, own_prefix: &str) -> Result<Registry, RegistryError> {
        let err = |e: &dyn std::fmt::Display| RegistryError::Db {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let create = || Database::builder().set_cache_size(1 << 20).create(path);
        let db = match create() {
            Ok(db) => db,
            // permissions, a full disk, a second process: not damage
            Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => return Err(err(&e)),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(err(&e))
            }
            Err(why) => {
                let aside = path.with_extension(format!("redb.corrupt-{}", crate::util::today()));
                tracing::warn!(path = %path.display(), "device registry unreadable ({why}); moved aside to {} and starting anew", aside.display());
                std::fs::rename(path, &aside).map_err(|e| err(&e))?;
                create().map_err(|e| err(&e))?
            }
        };
        let w = db.begin_write().map_err(|e| err(&e))?;
        w.open_table(ENTITIES).map_err(|e| err(&e))?;
        w.open_table(PINS).map_err(|e| err(&e))?;
        w.commit().map_err(|e| err(&e))?;
        let mut inner = Inner::default();
        {
            let r = db.begin_read().map_err(|e| err(&e))?;
            let pins = r.open_table(PINS).map_err(|e| err(&e))?;
            for row in pins.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                match serde_json::from_slice::<Pin>(v.value()) {
                    Ok(p) => {
                        inner.pins.insert(k.value().to_string(), p);
                    }
                    Err(e) => {
                        tracing::warn!("device registry: unreadable pin of {}: {e}", k.value())
                    }
                }
            }
            let t = r.open_table(ENTITIES).map_err(|e| err(&e))?;
            for row in t.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                match serde_json::from_slice::<Entity>(v.value()) {
                    Ok(e) => {
                        inner.entities.insert(k.value().to_string(), e);
                    }
                    Err(e) => tracing::warn!("device registry: skipping {}: {e}", k.value()),
                }
            }
        }
        // entities a bad discovery config left here (a NUL or a wildcard in
        // a topic broke every SUBSCRIBE, for good): dropped now
        let bad: Vec<(String, String)> = inner
            .entities
            .values()
            .filter_map(|e| {
                super::discovery::check_topics(e, own_prefix)
                    .err()
                    .map(|why| (e.id.clone(), why.to_string()))
            })
            .collect();
        if !bad.is_empty() {
            let w = db.begin_write().map_err(|e| err(&e))?;
            {
                let mut t = w.open_table(ENTITIES).map_err(|e| err(&e))?;
                for (id, why) in &bad {
                    tracing::warn!(entity = %id, "device registry: dropping an entity with a bad topic: {why}");
                    t.remove(id.as_str()).map_err(|e| err(&e))?;
                    inner.entities.remove(id);
                }
            }
            w.commit().map_err(|e| err(&e))?;
        }
        // high-risk entities from before pins existed
        let unpinned: Vec<(String, Pin)> = inner
            .entities
            .values()
            .filter(|e| e.is_high_risk() && !inner.pins.contains_key(&e.id))
            .map(|e| (e.id.clone(), pin_of(e)))
            .collect();
        if !unpinned.is_empty() {
            let w = db.begin_write().map_err(|e| err(&e))?;
            {
                let mut t = w.open_table(PINS).map_err(|e| err(&e))?;
                for (id, p) in &unpinned {
                    let b = serde_json::to_vec(p).expect("json");
                    t.insert(id.as_str(), b.as_slice()).map_err(|e| err(&e))?;
                }
            }
            w.commit().map_err(|e| err(&e))?;
            inner.pins.extend(unpinned);
        }
        inner.reindex();
        Ok(Registry {
            inner: Mutex::new(inner),
            db,
            path: path.to_path_buf(),
            changes: broadcast::channel(256).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Db {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// The household's other names for entities (`[devices.aliases]`);
    /// they count like the entity's own name.
    pub fn set_aliases(&self, aliases: impl IntoIterator<Item = (String, Vec<String>)>) {
        self.lock().aliases = aliases.into_iter().collect();
    }

    /// An entity's name and aliases.
    pub fn names_of(&self, id: &str) -> Vec<String> {
        let g = self.lock();
        let mut out: Vec<String> = g
            .entities
            .get(id)
            .map(|e| e.name.clone())
            .into_iter()
            .collect();
        out.extend(g.aliases.get(id).cloned().unwrap_or_default());
        out
    }

    /// Every entity, with its state (a copy).
    pub fn entities(&self) -> Vec<Entity> {
        self.lock().entities.values().cloned().collect()
    }

    /// Entity ids as state messages for them arrive.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    pub fn len(&self) -> usize {
        self.lock().entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces an entity from its discovery config (keeping the
    /// known state when the id stays). Blocking (a redb commit on change).
    pub fn upsert(&self, mut e: Entity) -> Result<Upsert, RegistryError> {
        let (result, removed, pin) = {
            let mut g = self.lock();
            if let Some(why) = g.takeover(&e) {
                return Ok(Upsert::Refused(why));
            }
            // the same config topic may now describe another id
            let removed = g
                .by_config
                .get(&e.config_topic)
                .filter(|id| **id != e.id)
                .cloned();
            if let Some(old) = &removed {
                g.entities.remove(old);
            }
            let result = match g.entities.get(&e.id) {
                Some(old) if old.config == e.config => Upsert::Unchanged,
                Some(old) => {
                    let n = e.state.availability.len();
                    e.state = old.state.clone();
                    e.state.availability.resize(n, None);
                    Upsert::Updated
                }
                None => Upsert::Added,
            };
            let pin = (e.is_high_risk() && !g.pins.contains_key(&e.id)).then(|| pin_of(&e));
            if let Some(p) = &pin {
                g.pins.insert(e.id.clone(), p.clone());
            }
            if result != Upsert::Unchanged {
                g.entities.insert(e.id.clone(), e.clone());
                g.reindex();
            }
            (result, removed, pin)
        };
        if result != Upsert::Unchanged || removed.is_some() || pin.is_some() {
            let w = self.db.begin_write().map_err(|x| self.err(x))?;
            if let Some(p) = &pin {
                let b = serde_json::to_vec(p).expect("json");
                w.open_table(PINS)
                    .map_err(|x| self.err(x))?
                    .insert(e.id.as_str(), b.as_slice())
                    .map_err(|x| self.err(x))?;
            }
            {
                let mut t = w.open_table(ENTITIES).map_err(|x| self.err(x))?;
                if let Some(old) = &removed {
                    t.remove(old.as_str()).map_err(|x| self.err(x))?;
                }
                let b = serde_json::to_vec(&e).expect("entities serialize");
                t.insert(e.id.as_str(), b.as_slice())
                    .map_err(|x| self.err(x))?;
            }
            w.commit().map_err(|x| self.err(x))?;
        }
        Ok(result)
    }

    /// Removes the entity a config topic described (an empty config).
    pub fn remove_config(&self, config_topic: &str) -> Result<Option<String>, RegistryError> {
        let id = {
            let mut g = self.lock();
            let Some(id) = g.by_config.get(config_topic).cloned() else {
                return Ok(None);
            };
            g.entities.remove(&id);
            g.dirty.remove(&id);
            g.reindex();
            id
        };
        let w = self.db.begin_write().map_err(|x| self.err(x))?;
        w.open_table(ENTITIES)
            .map_err(|x| self.err(x))?
            .remove(id.as_str())
            .map_err(|x| self.err(x))?;
        w.commit().map_err(|x| self.err(x))?;
        Ok(Some(id))
    }

    /// The owner's word that `id` may be announced anew: the entity and its
    /// high-risk pin go (the next announcement is taken as new). Durable.
    /// Returns whether there was anything to forget.
    pub fn forget(&self, id: &str) -> Result<bool, RegistryError> {
        let had = {
            let mut g = self.lock();
            let a = g.entities.remove(id).is_some();
            let b = g.pins.remove(id).is_some();
            g.dirty.remove(id);
            g.reindex();
            a || b
        };
        if had {
            let w = self.db.begin_write().map_err(|x| self.err(x))?;
            w.open_table(ENTITIES)
                .map_err(|x| self.err(x))?
                .remove(id)
                .map_err(|x| self.err(x))?;
            w.open_table(PINS)
                .map_err(|x| self.err(x))?
                .remove(id)
                .map_err(|x| self.err(x))?;
            w.commit().map_err(|x| self.err(x))?;
        }
        Ok(had)
    }

    /// Every state and availability topic to subscribe to.
    pub fn state_topics(&self) -> Vec<String> {
        self.lock().by_topic.keys().cloned().collect()
    }

    /// Applies a message on a state topic; returns the entities whose
    /// state changed, with their state before and after. Every entity the
    /// topic belongs to is announced on [`changes`](Self::changes), changed
    /// or not: a device repeating its state is what confirms a command.
    pub fn on_state(&self, topic: &str, payload: &str, now_ms: u64) -> Vec<(String, State, State)> {
        let mut out = Vec::new();
        let mut touched = Vec::new();
        {
            let mut g = self.lock();
            let Some(targets) = g.by_topic.get(topic).cloned() else {
                return out;
            };
            for (id, field) in targets {
                let Some(e) = g.entities.get_mut(&id) else {
                    continue;
                };
                let before = e.state.clone();
                if e.apply(field, payload, now_ms) {
                    out.push((id.clone(), before, e.state.clone()));
                    g.dirty.insert(id.clone());
                }
                if !touched.contains(&id) {
                    touched.push(id);
                }
            }
        }
        for id in touched {
            let _ = self.changes.send(id);
        }
        out
    }

    /// Writes the states that changed since the last call. Blocking.
    pub fn flush_states(&self) -> Result<usize, RegistryError> {
        let rows: Vec<(String, Vec<u8>)> = {
            let mut g = self.lock();
            let dirty: Vec<String> = g.dirty.drain().collect();
            dirty
                .into_iter()
                .filter_map(|id| {
                    let e = g.entities.get(&id)?;
                    Some((id, serde_json::to_vec(e).expect("entities serialize")))
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let w = self.db.begin_write().map_err(|x| self.err(x))?;
        {
            let mut t = w.open_table(ENTITIES).map_err(|x| self.err(x))?;
            for (id, b) in &rows {
                t.insert(id.as_str(), b.as_slice())
                    .map_err(|x| self.err(x))?;
            }
        }
        w.commit().map_err(|x| self.err(x))?;
        Ok(rows.len())
    }

    pub fn get(&self, id: &str) -> Option<Entity> {
        self.lock().entities.get(id).cloned()
    }

    /// Whether operating `id` needs approval (see [`Inner::high_risk`]).
    pub fn is_high_risk(&self, id: &str) -> bool {
        let g = self.lock();
        g.entities.get(id).is_some_and(|e| g.high_risk(e))
    }

    fn describe(g: &Inner, e: &Entity, risky: &Risky) -> Value {
        let mut v = e.describe();
        if g.high_risk_in(e, risky) {
            v["high_risk"] = Value::Bool(true);
        }
        v
    }

    /// Entities matching all given filters, as the tools show them.
    /// `query` is matched loosely (words of the name, area, id).
    pub fn list(
        &self,
        query: Option<&str>,
        area: Option<&str>,
        component: Option<&str>,
    ) -> Vec<Value> {
        let g = self.lock();
        let area = area.map(norm);
        let qwords = query.map(words).unwrap_or_default();
        let risky = g.risky_topics();
        g.entities
            .values()
            .filter(|e| component.is_none_or(|c| e.component.as_str() == c))
            .filter(|e| {
                area.as_ref()
                    .is_none_or(|a| e.area.as_deref().map(norm).is_some_and(|x| x == *a))
            })
            .filter(|e| qwords.is_empty() || score(&qwords, e, &g.aliases) >= 0.5)
            .map(|e| Registry::describe(&g, e, &risky))
            .collect()
    }

    /// Resolves what a user or model called a device: an exact entity id,
    /// an exact name, or the best loose match when it stands out.
    /// `components` limits the candidates (those an action applies to).
    pub fn resolve(&self, query: &str, components: &[Component]) -> Resolved {
        self.resolve_with(query, components, 0.5)
    }

    /// The area `phrase` names (loosely: "kichen"), as the registry has it.
    pub fn area_named(&self, phrase: &str) -> Option<String> {
        let q = words(phrase);
        if q.is_empty() {
            return None;
        }
        let g = self.lock();
        let mut areas: Vec<&String> = g
            .entities
            .values()
            .filter_map(|e| e.area.as_ref())
            .collect();
        areas.sort();
        areas.dedup();
        areas
            .into_iter()
            .find(|a| {
                let aw = words(a);
                aw.len() == q.len() && aw.iter().zip(&q).all(|(x, y)| close(x, y))
            })
            .cloned()
    }

    /// [`resolve`](Self::resolve) with the score a loose match needs
    /// (share of the query's words that fit; the intent stage asks more).
    pub fn resolve_with(&self, query: &str, components: &[Component], min: f32) -> Resolved {
        let g = self.lock();
        let pool: Vec<&Entity> = g
            .entities
            .values()
            .filter(|e| components.is_empty() || components.contains(&e.component))
            .collect();
        if let Some(e) = pool.iter().find(|e| e.id == query.trim()) {
            return Resolved::One(e.id.clone());
        }
        let q = norm(query);
        let exact: Vec<&&Entity> = pool
            .iter()
            .filter(|e| {
                norm(&e.name) == q
                    || g.aliases
                        .get(&e.id)
                        .is_some_and(|a| a.iter().any(|n| norm(n) == q))
            })
            .collect();
        if exact.len() == 1 {
            return Resolved::One(exact[0].id.clone());
        }
        let qw = words(query);
        let mut scored: Vec<(f32, &Entity)> = pool
            .iter()
            .map(|e| (score(&qw, e, &g.aliases), *e))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        let pair = |e: &Entity| (e.id.clone(), e.name.clone());
        match scored.as_slice() {
            [] => Resolved::NotFound(vec![]),
            [(s, _), ..] if *s < min => {
                Resolved::NotFound(scored.iter().take(5).map(|(_, e)| pair(e)).collect())
            }
            [(s1, _), (s2, _), ..] if s1 - s2 < 0.15 => Resolved::Ambiguous(
                scored
                    .iter()
                    .take_while(|(s, _)| s1 - s < 0.15)
                    .take(8)
                    .map(|(_, e)| pair(e))
                    .collect(),
            ),
            [(_, e), ..] => Resolved::One(e.id.clone()),
        }
    }
}

fn norm(s: &str) -> String {
    words(s).join(" ")
}

/// Lowercase words; "the", "a" and the like dropped; "outside" and
/// "outdoors" read as "outdoor".
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .map(|w| match w.as_str() {
            "outside" | "outdoors" | "exterior" => "outdoor".to_string(),
            _ => w,
        })
        .filter(|w| {
            !matches!(
                w.as_str(),
                "the" | "a" | "an" | "in" | "of" | "my" | "on" | "at"
            )
        })
        .collect()
}

/// Words a component goes by in speech.
fn synonyms(c: Component) -> &'static [&'static str] {
    match c {
        Component::Light => &["light", "lights", "lamp", "lamps", "bulb"],
        Component::Switch => &["switch", "plug", "socket", "outlet"],
        Component::Fan => &["fan"],
        // "garage", "door", "gate" come from the device class: a blind
        // is not what "close the garage" means
        Component::Cover => &["cover", "blind", "blinds", "shade", "shutter", "curtain"],
        Component::Lock => &["lock", "door"],
        Component::Climate => &[
            "thermostat",
            "heating",
            "heater",
            "climate",
            "radiator",
            "trv",
            "ac",
        ],
        Component::Sensor | Component::BinarySensor => &["sensor"],
        Component::Button => &["button"],
        Component::Scene => &["scene"],
        Component::AlarmControlPanel => &["alarm"],
    }
}

/// What a sensor measures, as the intent stage asks for it
/// ("temperature", "humidity"), from its device class or unit.
pub fn measures(e: &Entity) -> Option<&'static str> {
    class_words(e)
        .first()
        .copied()
        .filter(|w| matches!(*w, "temperature" | "humidity"))
}

/// Words an entity goes by for what it measures or watches: its device
/// class and unit are the evidence ("temperature" is the sensor in °C,
/// not every sensor; "door" is a door contact).
fn class_words(e: &Entity) -> &'static [&'static str] {
    let class = e.config.get("device_class").and_then(|v| v.as_str());
    let unit = e
        .config
        .get("unit_of_measurement")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    match (e.component, class) {
        (Component::Sensor, Some("temperature")) => &["temperature", "temp"],
        (Component::Sensor, None) if unit.ends_with("°C") || unit.ends_with("°F") => {
            &["temperature", "temp"]
        }
        (Component::Sensor, Some("humidity")) => &["humidity", "humid"],
        (Component::Sensor, Some(_)) => &[],
        (Component::BinarySensor, Some("door" | "garage_door")) => &["door", "contact"],
        (Component::BinarySensor, Some("window")) => &["window", "contact"],
        (Component::BinarySensor, Some("opening")) => &["contact", "door", "window"],
        (Component::BinarySensor, Some("motion" | "occupancy" | "presence")) => &["motion"],
        (Component::BinarySensor, Some("moisture")) => &["leak", "water"],
        (Component::Cover, Some("garage")) => &["garage", "door"],
        (Component::Cover, Some("gate")) => &["gate"],
        (Component::Cover, Some("door")) => &["door"],
        _ => &[],
    }
}

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if a.len() >= 4 && b.len() >= 4 && (a.starts_with(b) || b.starts_with(a)) {
        return true;
    }
    // one edit apart ("kichen"), for words long enough to be sure
    a.len() >= 5 && b.len() >= 5 && edit1(a, b)
}

fn edit1(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        match a.len().cmp(&b.len()) {
            std::cmp::Ordering::Greater => i += 1,
            std::cmp::Ordering::Less => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

/// Share of the query's words the entity answers to (name and kind of
/// device fully, area, device and id a little less), minus a little for
/// each word of the name the query does not mention.
fn score(q: &[String], e: &Entity, aliases: &HashMap<String, Vec<String>>) -> f32 {
    let own = score_as(q, e, &e.name);
    aliases
        .get(&e.id)
        .into_iter()
        .flatten()
        .map(|a| score_as(q, e, a))
        .fold(own, f32::max)
}

/// [`score`] with `name` as the entity's name.
fn score_as(q: &[String], e: &Entity, name: &str) -> f32 {
    if q.is_empty() {
        return 0.0;
    }
    let name = words(name);
    let mut other: Vec<String> = words(&e.id.replace(['.', '_'], " "));
    other.extend(e.area.as_deref().map(words).unwrap_or_default());
    other.extend(e.device.as_deref().map(words).unwrap_or_default());
    let kind = synonyms(e.component);
    let class = class_words(e);
    let mut s = 0.0;
    for w in q {
        // the kind of device ("light") counts like a word of the name
        if name.iter().any(|n| close(w, n))
            || kind.contains(&w.as_str())
            || class.contains(&w.as_str())
        {
            s += 1.0;
        } else if other.iter().any(|n| close(w, n)) {
            s += 0.8;
        }
    }
    // names with words the query does not mention fit a little less
    let extra = name
        .iter()
        .filter(|n| !q.iter().any(|w| close(w, n)))
        .count();
    s / q.len() as f32 - 0.05 * extra as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::discovery::parse;
    use serde_json::json;

    fn reg(entities: &[(&str, Value)]) -> (tempfile::TempDir, Registry) {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::open(&d.path().join("devices.redb"), "hearth").unwrap();
        for (t, p) in entities {
            let e = parse("homeassistant", t, p.to_string().as_bytes())
                .unwrap()
                .unwrap();
            r.upsert(e).unwrap();
        }
        (d, r)
    }

    fn house() -> (tempfile::TempDir, Registry) {
        let dev = |n: &str, a: &str| json!({"name": n, "suggested_area": a});
        reg(&[
            (
                "homeassistant/light/kitchen_ceiling/config",
                json!({"name": "Kitchen ceiling light", "command_topic": "a", "state_topic": "a/s", "device": dev("Kitchen ceiling light", "Kitchen")}),
            ),
            (
                "homeassistant/light/kitchen_counter/config",
                json!({"name": "Kitchen counter strip", "command_topic": "b", "device": dev("Kitchen counter strip", "Kitchen")}),
            ),
            (
                "homeassistant/light/bedroom/config",
                json!({"name": "Bedroom lamp", "command_topic": "c", "device": dev("Bedroom lamp", "Bedroom")}),
            ),
            (
                "homeassistant/lock/front/config",
                json!({"name": "Front door", "command_topic": "d"}),
            ),
            (
                "homeassistant/switch/kettle/config",
                json!({"name": "Kettle plug", "command_topic": "e", "device": dev("Kettle plug", "Kitchen")}),
            ),
        ])
    }

    #[test]
    fn names_resolve_loosely_and_ambiguity_is_reported() {
        let (_d, r) = house();
        let lights = [Component::Light];
        assert_eq!(
            r.resolve("light.bedroom", &[]),
            Resolved::One("light.bedroom".into())
        );
        assert_eq!(
            r.resolve("bedroom lamp", &[]),
            Resolved::One("light.bedroom".into())
        );
        assert_eq!(
            r.resolve("the kitchen ceiling light", &lights),
            Resolved::One("light.kitchen_ceiling".into())
        );
        assert_eq!(
            r.resolve("kichen ceiling", &lights),
            Resolved::One("light.kitchen_ceiling".into())
        );
        assert_eq!(
            r.resolve("front door", &[Component::Lock]),
            Resolved::One("lock.front".into())
        );
        match r.resolve("kitchen light", &lights) {
            Resolved::Ambiguous(c) => {
                let ids: Vec<&str> = c.iter().map(|(i, _)| i.as_str()).collect();
                assert!(
                    ids.contains(&"light.kitchen_ceiling")
                        && ids.contains(&"light.kitchen_counter"),
                    "{ids:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.resolve("garden hose", &[]),
            Resolved::NotFound(_)
        ));
        assert_eq!(r.list(None, Some("kitchen"), None).len(), 3);
        assert_eq!(r.list(Some("kettle"), None, None).len(), 1);
        assert_eq!(r.list(None, None, Some("lock")).len(), 1);
    }

    /// Device classes and units are evidence: "outdoor temperature" is not
    /// the outdoor humidity sensor, "temperature outside" finds the outdoor
    /// one, "close the garage" is not a blind.
    #[test]
    fn classes_and_units_pick_the_device() {
        let dev = |n: &str, a: &str| json!({"name": n, "suggested_area": a});
        let (_d, r) = reg(&[
            (
                "homeassistant/sensor/ot/config",
                json!({"name": "Temperature", "object_id": "outdoor_temperature", "state_topic": "o",
                       "device_class": "temperature", "unit_of_measurement": "°C", "device": dev("Outdoor", "Garden")}),
            ),
            (
                "homeassistant/sensor/oh/config",
                json!({"name": "Humidity", "object_id": "outdoor_humidity", "state_topic": "o",
                       "device_class": "humidity", "unit_of_measurement": "%", "device": dev("Outdoor", "Garden")}),
            ),
            (
                "homeassistant/sensor/lt/config",
                json!({"name": "Temperature", "object_id": "living_room_temperature", "state_topic": "l",
                       "device_class": "temperature", "device": dev("Living room sensor", "Living room")}),
            ),
            (
                "homeassistant/cover/g/config",
                json!({"name": "Garage door", "command_topic": "g", "device_class": "garage"}),
            ),
            (
                "homeassistant/cover/b/config",
                json!({"name": "Bedroom blind", "command_topic": "b"}),
            ),
        ]);
        assert_eq!(
            r.resolve("outdoor temperature", &[]),
            Resolved::One("sensor.outdoor_temperature".into())
        );
        assert_eq!(
            r.resolve("temperature outside", &[]),
            Resolved::One("sensor.outdoor_temperature".into())
        );
        assert_eq!(
            r.resolve("outdoor humidity", &[]),
            Resolved::One("sensor.outdoor_humidity".into())
        );
        assert_eq!(
            r.resolve_with("garage", &[Component::Cover], 0.75),
            Resolved::One("cover.g".into())
        );
        let e = r.get("sensor.outdoor_humidity").unwrap();
        assert_eq!(measures(&e), Some("humidity"));
    }

    #[test]
    fn registry_survives_reopen_and_removal_is_persisted() {
        let (d, r) = house();
        let path = d.path().join("devices.redb");
        r.on_state("a/s", "ON", 5);
        assert_eq!(r.flush_states().unwrap(), 1);
        assert_eq!(
            r.remove_config("homeassistant/switch/kettle/config")
                .unwrap()
                .as_deref(),
            Some("switch.kettle")
        );
        drop(r);
        let r = Registry::open(&path, "hearth").unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r.get("light.kitchen_ceiling")
                .unwrap()
                .state
                .value
                .as_deref(),
            Some("on")
        );
        assert!(r.state_topics().contains(&"a/s".to_string()));
        drop(r);
        std::fs::write(&path, vec![7u8; 9000]).unwrap();
        let r = Registry::open(&path, "hearth").unwrap();
        assert!(r.is_empty(), "a damaged file starts a new registry");
    }
}
