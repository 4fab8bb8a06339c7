//! The local intent stage: a deterministic sentence matcher that handles
//! the common device commands and questions before any model is called
//! (the way Home Assistant's Assist does), so "turn off the kitchen light"
//! works with the internet down and answers in milliseconds.
//!
//! - [`lang`]: one language's file (`lang/<code>.toml`: sentences,
//!   numbers, replies) and the matching of words against its sentences.
//! - here: [`Intents::plan`] turns a message into device tool calls
//!   against the live registry (names, aliases, areas, kinds), and
//!   [`Intents::reply`] phrases their results.
//!
//! The stage only plans: the agent runs the calls through the agent's tool
//! registry, the same path as the model's `device_set`, so policy, trust,
//! high-risk approval and the log are the same. A message that matches no
//! sentence, or names no device that exists, goes to the model; one that
//! names several devices goes to the model with the candidates.

pub mod lang;

use std::path::Path;

use serde_json::{json, Value};

use crate::mqtt::discovery::{Component, Entity};
use crate::mqtt::registry::{measures, Registry, Resolved};
use lang::{Captures, Intent, Lang};

/// The languages that ship: adding one is adding a file here (or, without
/// a rebuild, `<state>/intents/<code>.toml`).
pub const LANGUAGES: [(&str, &str); 2] = [
    ("en", include_str!("lang/en.toml")),
    ("de", include_str!("lang/de.toml")),
];

/// How well a name must fit for the matcher to act on it (the tools take
/// 0.5: a model can ask again; a sentence matcher should not guess).
const MIN_FIT: f32 = 0.75;

/// Devices one sentence may operate ("everything off in the kitchen").
const MAX_TARGETS: usize = 32;

/// The loaded languages.
pub struct Intents {
    langs: Vec<Lang>,
}

/// One device tool call of a plan, and how to phrase its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `device_set` or `device_state`.
    pub tool: &'static str,
    pub args: Value,
    /// The device's name, for the reply.
    pub name: String,
    /// The `device_set` action, or `ask_state` / `ask_measure`.
    pub action: String,
    /// For questions: the state asked about ("locked"), or the measure.
    pub ask: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Run these calls; `lang` phrases the reply.
    Act {
        lang: usize,
        steps: Vec<Step>,
    },
    /// A sentence matched but its name fits several devices: for the
    /// model, a note naming them; without one, the question to ask.
    Ambiguous {
        note: String,
        question: String,
    },
    /// An area with nothing to switch ("everything off in the hall").
    Say(String),
    NoMatch,
}

impl Default for Intents {
    fn default() -> Self {
        Intents::load(None)
    }
}

impl Intents {
    /// The shipped languages, and `<dir>/*.toml` (a file for a shipped
    /// language replaces it). A file that does not parse is logged and
    /// left out.
    pub fn load(dir: Option<&Path>) -> Intents {
        let mut langs: Vec<Lang> = LANGUAGES
            .iter()
            .filter_map(|(code, text)| match Lang::parse(text) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!("intents: the shipped language {code} does not parse: {e}");
                    None
                }
            })
            .collect();
        let files = dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"));
        for p in files {
            let parsed = std::fs::metadata(&p)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    if m.len() > 256 * 1024 {
                        Err("larger than 256 KiB".into())
                    } else {
                        std::fs::read_to_string(&p).map_err(|e| e.to_string())
                    }
                })
                .and_then(|t| Lang::parse(&t));
            match parsed {
                Ok(l) => {
                    tracing::info!(language = %l.code, file = %p.display(), "intents: language loaded");
                    langs.retain(|x| x.code != l.code);
                    langs.push(l);
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), "intents: language file left out: {e}")
                }
            }
        }
        Intents { langs }
    }

    pub fn languages(&self) -> Vec<&str> {
        self.langs.iter().map(|l| l.code.as_str()).collect()
    }

    /// What to do with `text`, against the devices as they are now.
    pub fn plan(&self, reg: &Registry, text: &str) -> Plan {
        if reg.is_empty() || text.trim_start().starts_with('/') {
            return Plan::NoMatch;
        }
        let mut ambiguous = None;
        let mut say = None;
        for (li, lang) in self.langs.iter().enumerate() {
            let Some(words) = lang.words(text) else {
                continue;
            };
            if words.is_empty() {
                continue;
            }
            let area_ok = |p: &str| p == "outdoor" || reg.area_named(p).is_some();
            for (intent, caps) in lang.matches(&words, &area_ok) {
                match targets(reg, lang, intent, &caps) {
                    Target::Steps(steps) if !steps.is_empty() => {
                        return Plan::Act { lang: li, steps };
                    }
                    Target::Steps(_) => {
                        let area = caps.area.clone().unwrap_or_default();
                        say.get_or_insert_with(|| lang.say("none_in_area", &[("area", &area)]));
                    }
                    Target::Ambiguous(c) => {
                        ambiguous.get_or_insert((li, c));
                    }
                    Target::None => {}
                }
            }
        }
        if let Some((li, c)) = ambiguous {
            let list: Vec<String> = c.iter().map(|(id, n)| format!("{n} ({id})")).collect();
            let names: Vec<&str> = c.iter().map(|(_, n)| n.as_str()).collect();
            return Plan::Ambiguous {
                note: format!(
                    "The message names a device that fits several: {}. Ask which one is meant, unless the message makes it clear.",
                    list.join(", ")
                ),
                question: self.langs[li].say("which", &[("names", &names.join(", "))]),
            };
        }
        say.map_or(Plan::NoMatch, Plan::Say)
    }

    /// The reply for a plan's results (`(ok, output)` per step, in order).
    pub fn reply(&self, lang: usize, steps: &[Step], results: &[(bool, String)]) -> String {
        let Some(l) = self.langs.get(lang) else {
            return String::new();
        };
        let parts: Vec<String> = steps
            .iter()
            .zip(results)
            .map(|(s, (ok, out))| phrase(l, s, *ok, out))
            .collect();
        let joiner = l.say("joiner", &[]);
        format!("{} {}", parts.join(&joiner), l.say("handled", &[]))
    }
}

enum Target {
    Steps(Vec<Step>),
    Ambiguous(Vec<(String, String)>),
    None,
}

/// The components an action can be about.
fn components(action: &str, ask: Option<&str>) -> &'static [Component] {
    use Component::*;
    match (action, ask) {
        ("turn_on", _) => &[Light, Switch, Fan, Scene],
        ("turn_off", _) => &[Light, Switch, Fan, Climate],
        ("toggle", _) => &[Light, Switch, Fan],
        ("set_brightness", _) => &[Light],
        ("set_percentage", _) => &[Fan],
        ("set_position", _) => &[Cover],
        ("set_temperature" | "set_mode", _) => &[Climate],
        ("set_value", _) => &[Light, Fan, Cover, Climate],
        ("open" | "close" | "stop", _) => &[Cover],
        ("lock" | "unlock", _) => &[Lock],
        ("activate", _) => &[Scene],
        ("press", _) => &[Button],
        ("arm" | "disarm", _) => &[AlarmControlPanel],
        ("ask_state", Some("on" | "off")) => &[Light, Switch, Fan, Climate, BinarySensor],
        ("ask_state", Some("open" | "closed")) => &[BinarySensor, Cover],
        ("ask_state", Some("locked" | "unlocked")) => &[Lock],
        _ => &[],
    }
}

/// The `device_set` action for an entity, or `None` when it has none.
fn action_for(e: &Entity, action: &str) -> Option<(&'static str, Option<Value>)> {
    let a: &'static str = match (e.component, action) {
        (Component::Scene, "turn_on") => "activate",
        (Component::Climate, "turn_off") => return Some(("set_mode", Some(json!("off")))),
        (Component::Climate, "turn_on") => return None,
        (Component::Light, "set_value") => "set_brightness",
        (Component::Fan, "set_value") => "set_percentage",
        (Component::Cover, "set_value") => "set_position",
        (Component::Climate, "set_value") => "set_temperature",
        (Component::AlarmControlPanel, "arm") => "arm_away",
        (_, other) => e.actions().into_iter().find(|x| *x == other)?,
    };
    e.actions().contains(&a).then_some((a, None))
}

fn targets(reg: &Registry, lang: &Lang, it: &Intent, caps: &Captures) -> Target {
    match it.action.as_str() {
        "ask_measure" => return measure_target(reg, it, caps),
        "all_off" | "all_on" => {
            let Some(area) = caps.area.as_deref().and_then(|a| reg.area_named(a)) else {
                return Target::None;
            };
            let action = if it.action == "all_off" {
                "turn_off"
            } else {
                "turn_on"
            };
            let pick = |e: &Entity| {
                e.area.as_deref() == Some(area.as_str())
                    && matches!(
                        e.component,
                        Component::Light | Component::Switch | Component::Fan
                    )
            };
            return many(reg, action, pick, caps);
        }
        _ => {}
    }
    let comps = components(&it.action, it.ask.as_deref());
    let Some(name) = caps.name.as_deref() else {
        let Some(area) = caps.area.as_deref().and_then(|a| reg.area_named(a)) else {
            // "set the temperature to 21": the house's one thermostat
            return match caps.area {
                None => only(reg, &it.action, comps, caps),
                Some(_) => Target::None,
            };
        };
        // "lights off in the kitchen"
        let pick = |e: &Entity| {
            e.area.as_deref() == Some(area.as_str()) && e.component == Component::Light
        };
        return many(reg, &it.action, pick, caps);
    };
    // a name that fits exactly ("garden lights", a switch) before the
    // plural reading ("kitchen lights": every light in the kitchen)
    let exact = matches!(reg.resolve_with(name, comps, 0.99), Resolved::One(_));
    if !exact {
        if let Some(t @ Target::Steps(_)) = plural(reg, lang, it, name, caps) {
            return t;
        }
    }
    let ids = match reg.resolve_with(name, comps, MIN_FIT) {
        Resolved::One(id) => vec![id],
        Resolved::Ambiguous(c) => return Target::Ambiguous(c),
        Resolved::NotFound(_) => return Target::None,
    };
    let Some(e) = ids.first().and_then(|id| reg.get(id)) else {
        return Target::None;
    };
    match step(
        &e,
        &it.action,
        it.value.or(caps.number),
        caps,
        it.ask.as_deref(),
    ) {
        Some(s) => Target::Steps(vec![s]),
        None => Target::None,
    }
}

/// "kitchen lights", "all the blinds": every device of the kind in the
/// area (or the house, with "all").
fn plural(reg: &Registry, lang: &Lang, it: &Intent, name: &str, caps: &Captures) -> Option<Target> {
    let words: Vec<&str> = name.split(' ').collect();
    let (i, kind) = words
        .iter()
        .enumerate()
        .find_map(|(i, w)| lang.kinds.get(*w).map(|k| (i, k.clone())))?;
    let comp = Component::parse(&kind)?;
    let all = words.iter().any(|w| lang.all.iter().any(|a| a == w));
    let rest: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|(j, w)| {
            *j != i && !lang.all.iter().any(|a| a == *w) && !matches!(**w, "in" | "of")
        })
        .map(|(_, w)| *w)
        .collect();
    let area = if rest.is_empty() {
        None
    } else {
        Some(reg.area_named(&rest.join(" "))?)
    };
    if area.is_none() && !all {
        return None;
    }
    let pick = |e: &Entity| {
        e.component == comp
            && area
                .as_ref()
                .is_none_or(|a| e.area.as_deref() == Some(a.as_str()))
    };
    Some(many(reg, &it.action, pick, caps))
}

/// The one entity of `comps` there is (not a high-risk one), when a
/// sentence names none.
fn only(reg: &Registry, action: &str, comps: &[Component], caps: &Captures) -> Target {
    let pool: Vec<Entity> = reg
        .entities()
        .into_iter()
        .filter(|e| comps.contains(&e.component) && !reg.is_high_risk(&e.id))
        .collect();
    match pool.as_slice() {
        [] => Target::None,
        [e] => step(e, action, caps.number, caps, None)
            .map_or(Target::None, |s| Target::Steps(vec![s])),
        more => Target::Ambiguous(
            more.iter()
                .map(|e| (e.id.clone(), e.name.clone()))
                .collect(),
        ),
    }
}

/// A step for every entity `pick` takes (high-risk ones never: they are
/// named one by one).
fn many(reg: &Registry, action: &str, pick: impl Fn(&Entity) -> bool, caps: &Captures) -> Target {
    let steps: Vec<Step> = reg
        .entities()
        .into_iter()
        .filter(|e| pick(e) && !reg.is_high_risk(&e.id))
        .filter_map(|e| step(&e, action, caps.number, caps, None))
        .take(MAX_TARGETS)
        .collect();
    Target::Steps(steps)
}

fn step(
    e: &Entity,
    action: &str,
    number: Option<f64>,
    caps: &Captures,
    ask: Option<&str>,
) -> Option<Step> {
    if action == "ask_state" {
        return Some(Step {
            tool: "device_state",
            args: json!({"entity": e.id}),
            name: e.name.clone(),
            action: action.into(),
            ask: ask.map(str::to_string),
        });
    }
    let (a, fixed) = action_for(e, action)?;
    let value = fixed
        .or_else(|| {
            caps.mode
                .clone()
                .map(Value::from)
                .filter(|_| a == "set_mode")
        })
        .or_else(|| number.map(|n| json!(n)));
    let needs_value = matches!(
        a,
        "set_brightness" | "set_percentage" | "set_position" | "set_temperature" | "set_mode"
    );
    if needs_value && value.is_none() {
        return None;
    }
    let mut args = json!({"entity": e.id, "action": a});
    if needs_value {
        args["value"] = value.unwrap_or(Value::Null);
    }
    Some(Step {
        tool: "device_set",
        args,
        name: e.name.clone(),
        action: a.into(),
        ask: None,
    })
}

/// "what is the temperature in the kitchen / outside": the one sensor of
/// that measure there, or a thermostat's reading.
fn measure_target(reg: &Registry, it: &Intent, caps: &Captures) -> Target {
    let Some(m) = it.measure.as_deref() else {
        return Target::None;
    };
    let outdoor = caps.area.as_deref() == Some("outdoor")
        || (caps.area.is_none() && caps.name.as_deref() == Some("outdoor"));
    let area = caps
        .area
        .as_deref()
        .filter(|_| !outdoor)
        .and_then(|a| reg.area_named(a));
    if caps.area.is_some() && !outdoor && area.is_none() {
        return Target::None;
    }
    let all = reg.entities();
    let is_outdoor = |e: &Entity| {
        let text = format!("{} {}", e.name, e.area.as_deref().unwrap_or("")).to_lowercase();
        [
            "outdoor", "outside", "garden", "außen", "draußen", "balcony", "patio",
        ]
        .iter()
        .any(|w| text.contains(w))
    };
    let here = |e: &Entity| {
        if outdoor {
            is_outdoor(e)
        } else {
            area.as_ref()
                .is_none_or(|a| e.area.as_deref() == Some(a.as_str()))
        }
    };
    let sensors: Vec<&Entity> = all
        .iter()
        .filter(|e| e.component == Component::Sensor && measures(e) == Some(m) && here(e))
        .collect();
    let pool: Vec<&Entity> = if sensors.is_empty() && m == "temperature" {
        all.iter()
            .filter(|e| e.component == Component::Climate && here(e))
            .filter(|e| e.state.attrs.contains_key("current_temperature"))
            .collect()
    } else {
        sensors
    };
    match pool.as_slice() {
        [] => Target::None,
        [e] => Target::Steps(vec![Step {
            tool: "device_state",
            args: json!({"entity": e.id}),
            name: e.name.clone(),
            action: "ask_measure".into(),
            ask: Some(m.to_string()),
        }]),
        more => Target::Ambiguous(
            more.iter()
                .map(|e| (e.id.clone(), e.name.clone()))
                .collect(),
        ),
    }
}

/// One step's result as a sentence.
fn phrase(l: &Lang, s: &Step, ok: bool, out: &str) -> String {
    let name = s.name.as_str();
    if !ok {
        let why = out.trim_start_matches("error: ").trim();
        return l.say("failed", &[("name", name), ("error", why)]);
    }
    let v: Value = serde_json::from_str(out).unwrap_or(Value::Null);
    match s.action.as_str() {
        "ask_state" => {
            let Some(state) = v["state"].as_str() else {
                return l.say("unknown_state", &[("name", name)]);
            };
            let word = l.state_word(state);
            match s.ask.as_deref() {
                None => l.say("state", &[("name", name), ("state", &word)]),
                Some(ask) => {
                    let yes = state == ask
                        || (ask == "on" && v["component"] == "climate" && state != "off");
                    l.say(
                        if yes { "yes" } else { "no" },
                        &[("name", name), ("state", &word)],
                    )
                }
            }
        }
        "ask_measure" => {
            let value = if v["component"] == "climate" {
                v["current_temperature"].to_string()
            } else {
                v["state"].as_str().unwrap_or("").to_string()
            };
            if value.is_empty() || value == "null" {
                return l.say("unknown_state", &[("name", name)]);
            }
            let unit = v["unit"]
                .as_str()
                .unwrap_or(if v["component"] == "climate" {
                    "°C"
                } else {
                    ""
                });
            let unit = if unit.starts_with('°') || unit == "%" {
                unit.to_string()
            } else {
                format!(" {unit}")
            };
            l.say(
                "measure",
                &[("name", name), ("value", &value), ("unit", unit.trim_end())],
            )
        }
        action => {
            if v["confirmed"] == false {
                return l.say("unconfirmed", &[("name", name)]);
            }
            let value = match &s.args["value"] {
                Value::Number(n) => {
                    let f = n.as_f64().unwrap_or(0.0);
                    if f.fract() == 0.0 {
                        format!("{}", f as i64)
                    } else {
                        format!("{f}")
                    }
                }
                Value::String(x) => x.clone(),
                _ => String::new(),
            };
            l.say(action, &[("name", name), ("value", &value)])
        }
    }
}

#[cfg(test)]
mod tests;
