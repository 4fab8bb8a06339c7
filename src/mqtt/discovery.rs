//! Home Assistant MQTT discovery: a retained config on
//! `<prefix>/<component>/[<node_id>/]<object_id>/config` describes one
//! entity. This module turns such a payload into an [`Entity`] (expanding
//! abbreviations and the `~` base topic), normalizes what its state topics
//! report, and builds the command payload for an action.
//!
//! Normalized state, per component: light/switch/fan/binary_sensor `on` or
//! `off`; cover `open`, `closed`, `opening`, `closing`, `stopped` plus
//! `position` (0-100); lock `locked`, `unlocked`, `jammed`, ...; climate
//! the mode plus `target_temperature`, `current_temperature`; sensor the
//! value as sent (with `unit`); alarm panels their state (`armed_away`,
//! `disarmed`, ...). Brightness and fan speed are percentages.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Light,
    Switch,
    Fan,
    Cover,
    Lock,
    Climate,
    Sensor,
    BinarySensor,
    Button,
    Scene,
    AlarmControlPanel,
}

impl Component {
    pub fn parse(s: &str) -> Option<Component> {
        Some(match s {
            "light" => Component::Light,
            "switch" => Component::Switch,
            "fan" => Component::Fan,
            "cover" => Component::Cover,
            "lock" => Component::Lock,
            "climate" => Component::Climate,
            "sensor" => Component::Sensor,
            "binary_sensor" => Component::BinarySensor,
            "button" => Component::Button,
            "scene" => Component::Scene,
            "alarm_control_panel" => Component::AlarmControlPanel,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Light => "light",
            Component::Switch => "switch",
            Component::Fan => "fan",
            Component::Cover => "cover",
            Component::Lock => "lock",
            Component::Climate => "climate",
            Component::Sensor => "sensor",
            Component::BinarySensor => "binary_sensor",
            Component::Button => "button",
            Component::Scene => "scene",
            Component::AlarmControlPanel => "alarm_control_panel",
        }
    }

    /// The actions `device_set` takes for this component.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Component::Light => &["turn_on", "turn_off", "toggle", "set_brightness"],
            Component::Switch => &["turn_on", "turn_off", "toggle"],
            Component::Fan => &["turn_on", "turn_off", "toggle", "set_percentage"],
            Component::Cover => &["open", "close", "stop", "set_position"],
            Component::Lock => &["lock", "unlock", "open"],
            Component::Climate => &["set_mode", "set_temperature"],
            Component::Button => &["press"],
            Component::Scene => &["activate"],
            Component::AlarmControlPanel => &["arm_away", "arm_home", "arm_night", "disarm"],
            Component::Sensor | Component::BinarySensor => &[],
        }
    }
}

/// Discovery abbreviations (the ones devices and Zigbee2MQTT use).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("bri_cmd_t", "brightness_command_topic"),
    ("bri_cmd_tpl", "brightness_command_template"),
    ("bri_scl", "brightness_scale"),
    ("bri_stat_t", "brightness_state_topic"),
    ("bri_val_tpl", "brightness_value_template"),
    ("cmd_t", "command_topic"),
    ("cmd_tpl", "command_template"),
    ("curr_temp_t", "current_temperature_topic"),
    ("curr_temp_tpl", "current_temperature_template"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("json_attr_t", "json_attributes_topic"),
    ("max_temp", "max_temp"),
    ("min_temp", "min_temp"),
    ("mode_cmd_t", "mode_command_topic"),
    ("mode_cmd_tpl", "mode_command_template"),
    ("mode_stat_t", "mode_state_topic"),
    ("mode_stat_tpl", "mode_state_template"),
    ("obj_id", "object_id"),
    ("pct_cmd_t", "percentage_command_topic"),
    ("pct_cmd_tpl", "percentage_command_template"),
    ("pct_stat_t", "percentage_state_topic"),
    ("pct_val_tpl", "percentage_value_template"),
    ("pl_arm_away", "payload_arm_away"),
    ("pl_arm_home", "payload_arm_home"),
    ("pl_arm_nite", "payload_arm_night"),
    ("pl_avail", "payload_available"),
    ("pl_cls", "payload_close"),
    ("pl_disarm", "payload_disarm"),
    ("pl_lock", "payload_lock"),
    ("pl_not_avail", "payload_not_available"),
    ("pl_off", "payload_off"),
    ("pl_on", "payload_on"),
    ("pl_open", "payload_open"),
    ("pl_prs", "payload_press"),
    ("pl_stop", "payload_stop"),
    ("pl_unlk", "payload_unlock"),
    ("pos_clsd", "position_closed"),
    ("pos_open", "position_open"),
    ("pos_t", "position_topic"),
    ("pos_tpl", "position_template"),
    ("set_pos_t", "set_position_topic"),
    ("set_pos_tpl", "set_position_template"),
    ("spd_rng_max", "speed_range_max"),
    ("spd_rng_min", "speed_range_min"),
    ("stat_clsd", "state_closed"),
    ("stat_closing", "state_closing"),
    ("stat_jam", "state_jammed"),
    ("stat_locked", "state_locked"),
    ("stat_locking", "state_locking"),
    ("stat_off", "state_off"),
    ("stat_on", "state_on"),
    ("stat_open", "state_open"),
    ("stat_opening", "state_opening"),
    ("stat_stopped", "state_stopped"),
    ("stat_t", "state_topic"),
    ("stat_tpl", "state_value_template"),
    ("stat_unlocked", "state_unlocked"),
    ("stat_unlocking", "state_unlocking"),
    ("stat_val_tpl", "state_value_template"),
    ("t", "topic"),
    ("temp_cmd_t", "temperature_command_topic"),
    ("temp_cmd_tpl", "temperature_command_template"),
    ("temp_stat_t", "temperature_state_topic"),
    ("temp_stat_tpl", "temperature_state_template"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("val_tpl", "value_template"),
];

const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("ids", "identifiers"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("sa", "suggested_area"),
    ("sw", "sw_version"),
    ("hw", "hw_version"),
    ("cns", "connections"),
];

fn expand_keys(m: Map<String, Value>, table: &[(&str, &str)]) -> Map<String, Value> {
    m.into_iter()
        .map(|(k, v)| {
            let k = table
                .iter()
                .find(|(a, _)| *a == k)
                .map_or(k, |(_, full)| full.to_string());
            (k, v)
        })
        .collect()
}

/// Expands abbreviations (also in `device` and `availability` entries) and
/// the `~` base topic in every `*topic` value.
pub fn expand(config: Map<String, Value>) -> Map<String, Value> {
    let mut m = expand_keys(config, ABBREVIATIONS);
    let base = m.get("~").and_then(|v| v.as_str()).map(str::to_string);
    if let Some(Value::Object(d)) = m.remove("device") {
        m.insert(
            "device".into(),
            Value::Object(expand_keys(d, DEVICE_ABBREVIATIONS)),
        );
    }
    if let Some(Value::Array(list)) = m.remove("availability") {
        let list = list
            .into_iter()
            .map(|a| match a {
                Value::Object(o) => Value::Object(expand_keys(o, ABBREVIATIONS)),
                other => other,
            })
            .collect();
        m.insert("availability".into(), Value::Array(list));
    }
    if let Some(base) = base {
        let fix = |s: &str| -> Option<String> {
            if let Some(r) = s.strip_prefix('~') {
                Some(format!("{base}{r}"))
            } else {
                s.strip_suffix('~').map(|l| format!("{l}{base}"))
            }
        };
        for (k, v) in m.iter_mut() {
            if k.ends_with("topic") {
                if let Some(f) = v.as_str().and_then(fix) {
                    *v = Value::String(f);
                }
            }
        }
        if let Some(Value::Array(list)) = m.get_mut("availability") {
            for a in list {
                if let Some(t) = a.get_mut("topic") {
                    if let Some(f) = t.as_str().and_then(fix) {
                        *t = Value::String(f);
                    }
                }
            }
        }
    }
    m
}

/// What a state topic of an entity reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    Main,
    Brightness,
    Position,
    Mode,
    TargetTemp,
    CurrentTemp,
    Percentage,
    /// The n-th availability topic.
    Availability(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The normalized main state (see the module docs); `None` = unknown.
    pub value: Option<String>,
    /// brightness, position, percentage, mode, target_temperature,
    /// current_temperature (as present).
    pub attrs: Map<String, Value>,
    /// Per availability topic: true = available.
    pub availability: Vec<Option<bool>>,
    pub updated_ms: u64,
}

/// One discovered entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entity {
    /// `<component>.<object id>`, e.g. `light.kitchen_ceiling`.
    pub id: String,
    pub component: Component,
    /// Friendly name (device name and entity name as Home Assistant
    /// combines them).
    pub name: String,
    pub area: Option<String>,
    pub device: Option<String>,
    /// The discovery topic it came from (its removal comes there too).
    pub config_topic: String,
    /// The config with abbreviations and `~` expanded.
    pub config: Map<String, Value>,
    #[serde(default)]
    pub state: State,
}

/// The config keys whose topic `device_set` publishes to.
pub const COMMAND_KEYS: [&str; 6] = [
    "command_topic",
    "brightness_command_topic",
    "percentage_command_topic",
    "set_position_topic",
    "mode_command_topic",
    "temperature_command_topic",
];

/// Checks every topic of a discovered entity before Hearth subscribes to
/// or publishes on it: a valid topic name each (no NUL, no wildcard, not
/// too long), and no command topic under Hearth's own `own_prefix` (the
/// agent's commands would come back in as device text).
pub fn check_topics(e: &Entity, own_prefix: &str) -> Result<(), DiscoveryError> {
    if let Some(Value::Array(a)) = e.config.get("availability") {
        if a.len() > 16 {
            return Err(DiscoveryError::Invalid(
                "more than 16 availability topics".into(),
            ));
        }
    }
    for (k, t) in e.topics() {
        super::topic::check_name(&t).map_err(|m| DiscoveryError::Invalid(format!("{k}: {m}")))?;
    }
    for t in e.command_topics() {
        if super::topic::under(&t, own_prefix) {
            return Err(DiscoveryError::Invalid(format!(
                "command topic {t:?} is under Hearth's own topics ({own_prefix}/...)"
            )));
        }
    }
    Ok(())
}

/// Why a discovery message was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("not a discovery config topic")]
    Topic,
    #[error("component {0:?} is not supported")]
    Unsupported(String),
    #[error("payload is not a JSON object: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

/// (component, node id, object id) of a config topic.
pub fn parse_topic<'a>(
    prefix: &str,
    topic: &'a str,
) -> Option<(&'a str, Option<&'a str>, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest.strip_suffix("/config")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        [c, o] => Some((c, None, o)),
        [c, n, o] => Some((c, Some(n), o)),
        _ => None,
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Parses a discovery message. `Ok(None)`: an empty payload, which removes
/// the entity.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Option<Entity>, DiscoveryError> {
    let (comp, node, object) = parse_topic(prefix, topic).ok_or(DiscoveryError::Topic)?;
    let component =
        Component::parse(comp).ok_or_else(|| DiscoveryError::Unsupported(comp.to_string()))?;
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| DiscoveryError::Json(e.to_string()))?;
    let Value::Object(raw) = v else {
        return Err(DiscoveryError::Json("not an object".into()));
    };
    let config = expand(raw);
    let s = |k: &str| config.get(k).and_then(|v| v.as_str());
    let needs_command = !matches!(component, Component::Sensor | Component::BinarySensor);
    if needs_command && s("command_topic").is_none() && !has_any_command(component, &config) {
        return Err(DiscoveryError::Invalid(format!(
            "a {} needs a command_topic",
            component.as_str()
        )));
    }
    if !needs_command && s("state_topic").is_none() {
        return Err(DiscoveryError::Invalid(format!(
            "a {} needs a state_topic",
            component.as_str()
        )));
    }
    let object_id = match s("object_id") {
        Some(o) => slug(o),
        None => match node {
            Some(n) => slug(&format!("{n}_{object}")),
            None => slug(object),
        },
    };
    if object_id.is_empty() {
        return Err(DiscoveryError::Invalid("empty object id".into()));
    }
    let device = config
        .get("device")
        .and_then(|d| d.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let area = config
        .get("device")
        .and_then(|d| d.get("suggested_area"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let name = match (s("name"), &device) {
        (Some(n), Some(d)) if !n.to_lowercase().contains(&d.to_lowercase()) => format!("{d} {n}"),
        (Some(n), _) => n.to_string(),
        (None, Some(d)) => d.clone(),
        (None, None) => object_id.replace('_', " "),
    };
    let n_avail = availability(&config).len();
    Ok(Some(Entity {
        id: format!("{}.{object_id}", component.as_str()),
        component,
        name,
        area,
        device,
        config_topic: topic.to_string(),
        config,
        state: State {
            availability: vec![None; n_avail],
            ..State::default()
        },
    }))
}

fn has_any_command(c: Component, m: &Map<String, Value>) -> bool {
    match c {
        Component::Climate => {
            m.contains_key("mode_command_topic") || m.contains_key("temperature_command_topic")
        }
        Component::Cover => m.contains_key("set_position_topic"),
        _ => false,
    }
}

/// (topic, payload_available, payload_not_available, template) per
/// availability source.
fn availability(m: &Map<String, Value>) -> Vec<(String, String, String, Option<String>)> {
    let get = |o: &Map<String, Value>, k: &str, d: &str| {
        o.get(k).and_then(|v| v.as_str()).unwrap_or(d).to_string()
    };
    let mut out = Vec::new();
    if let Some(t) = m.get("availability_topic").and_then(|v| v.as_str()) {
        out.push((
            t.to_string(),
            get(m, "payload_available", "online"),
            get(m, "payload_not_available", "offline"),
            m.get("availability_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        ));
    }
    if let Some(Value::Array(list)) = m.get("availability") {
        for a in list {
            let Some(o) = a.as_object() else { continue };
            let Some(t) = o.get("topic").and_then(|v| v.as_str()) else {
                continue;
            };
            out.push((
                t.to_string(),
                get(o, "payload_available", "online"),
                get(o, "payload_not_available", "offline"),
                o.get("value_template")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            ));
        }
    }
    out
}

impl Entity {
    fn s(&self, k: &str) -> Option<&str> {
        self.config.get(k).and_then(|v| v.as_str())
    }

    /// A payload or state setting as text. Zigbee2MQTT and zwave-js-ui
    /// announce JSON booleans and numbers (`payload_on: false`); these
    /// read as Home Assistant reads them (`cv.string`: "False", "1").
    fn t(&self, k: &str) -> Option<String> {
        match self.config.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn t_or(&self, k: &str, d: &str) -> String {
        self.t(k).unwrap_or_else(|| d.to_string())
    }

    fn f(&self, k: &str) -> Option<f64> {
        self.config.get(k).and_then(|v| v.as_f64())
    }

    fn json_schema(&self) -> bool {
        self.s("schema") == Some("json")
    }

    /// Every topic in its config as (key, topic): the `*_topic` keys and
    /// the `availability` list.
    pub fn topics(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .config
            .iter()
            .filter(|(k, _)| k.ends_with("_topic"))
            .filter_map(|(k, v)| v.as_str().map(|t| (k.clone(), t.to_string())))
            .collect();
        if let Some(Value::Array(list)) = self.config.get("availability") {
            for (i, a) in list.iter().enumerate() {
                if let Some(t) = a.get("topic").and_then(|t| t.as_str()) {
                    out.push((format!("availability[{i}].topic"), t.to_string()));
                }
            }
        }
        out
    }

    /// The topics `device_set` publishes to.
    pub fn command_topics(&self) -> Vec<String> {
        COMMAND_KEYS
            .iter()
            .filter_map(|k| self.s(k).map(str::to_string))
            .collect()
    }

    /// Whether operating it needs approval: locks, alarm panels, and
    /// covers of doors, garages and gates. (The registry also counts an
    /// entity that shares a command topic with one of these.)
    pub fn is_high_risk(&self) -> bool {
        match self.component {
            Component::Lock | Component::AlarmControlPanel => true,
            Component::Cover => matches!(self.s("device_class"), Some("door" | "garage" | "gate")),
            _ => false,
        }
    }

    /// Every topic to follow, with what it reports.
    pub fn state_topics(&self) -> Vec<(String, Field)> {
        let mut out = Vec::new();
        let mut add = |k: &str, f: Field| {
            if let Some(t) = self.s(k) {
                out.push((t.to_string(), f));
            }
        };
        add("state_topic", Field::Main);
        add("brightness_state_topic", Field::Brightness);
        add("position_topic", Field::Position);
        add("mode_state_topic", Field::Mode);
        add("temperature_state_topic", Field::TargetTemp);
        add("current_temperature_topic", Field::CurrentTemp);
        add("percentage_state_topic", Field::Percentage);
        for (i, (t, ..)) in availability(&self.config).into_iter().enumerate() {
            out.push((t, Field::Availability(i)));
        }
        out
    }

    /// `None` while no availability source has reported; otherwise whether
    /// every source that reported says available (`availability_mode =
    /// "any"`: at least one).
    pub fn available(&self) -> Option<bool> {
        let known: Vec<bool> = self.state.availability.iter().flatten().copied().collect();
        if known.is_empty() {
            return None;
        }
        Some(match self.s("availability_mode") {
            Some("any") => known.iter().any(|b| *b),
            _ => known.iter().all(|b| *b),
        })
    }

    /// Applies a message of one of its state topics; true if the state
    /// changed.
    pub fn apply(&mut self, field: Field, payload: &str, now_ms: u64) -> bool {
        let before = self.state.clone();
        let tpl = |k: &str| self.s(k).map(str::to_string);
        let render = |t: Option<String>| match t {
            Some(t) => template::render_value(&t, payload),
            None => Some(payload.trim().to_string()),
        };
        match field {
            Field::Main => self.apply_main(payload),
            Field::Brightness => {
                if let Some(v) =
                    render(tpl("brightness_value_template")).and_then(|v| v.parse::<f64>().ok())
                {
                    let scale = self.f("brightness_scale").unwrap_or(255.0);
                    self.set_attr("brightness", pct(v, scale));
                }
            }
            Field::Position => {
                if let Some(v) =
                    render(tpl("position_template")).and_then(|v| v.parse::<f64>().ok())
                {
                    let open = self.f("position_open").unwrap_or(100.0);
                    let closed = self.f("position_closed").unwrap_or(0.0);
                    let p = if (open - closed).abs() < f64::EPSILON {
                        v
                    } else {
                        (v - closed) / (open - closed) * 100.0
                    };
                    self.set_attr("position", json!(p.round().clamp(0.0, 100.0) as i64));
                }
            }
            Field::Mode => {
                if let Some(v) = render(tpl("mode_state_template")) {
                    self.state.value = Some(v.to_lowercase());
                    self.set_attr("mode", json!(v.to_lowercase()));
                }
            }
            Field::TargetTemp => {
                if let Some(v) =
                    render(tpl("temperature_state_template")).and_then(|v| v.parse::<f64>().ok())
                {
                    self.set_attr("target_temperature", json!(v));
                }
            }
            Field::CurrentTemp => {
                if let Some(v) =
                    render(tpl("current_temperature_template")).and_then(|v| v.parse::<f64>().ok())
                {
                    self.set_attr("current_temperature", json!(v));
                }
            }
            Field::Percentage => {
                if let Some(v) =
                    render(tpl("percentage_value_template")).and_then(|v| v.parse::<f64>().ok())
                {
                    let (lo, hi) = (
                        self.f("speed_range_min").unwrap_or(1.0),
                        self.f("speed_range_max").unwrap_or(100.0),
                    );
                    let p = if v <= 0.0 {
                        0.0
                    } else {
                        ((v - lo + 1.0) / (hi - lo + 1.0) * 100.0).clamp(0.0, 100.0)
                    };
                    self.set_attr("percentage", json!(p.round() as i64));
                }
            }
            Field::Availability(i) => {
                if let Some((_, yes, no, t)) = availability(&self.config).into_iter().nth(i) {
                    let v = match t {
                        Some(t) => template::render_value(&t, payload),
                        None => Some(payload.trim().to_string()),
                    };
                    let a =
                        v.and_then(|v| (v == yes).then_some(true).or((v == no).then_some(false)));
                    if let Some(slot) = self.state.availability.get_mut(i) {
                        if a.is_some() {
                            *slot = a;
                        }
                    }
                }
            }
        }
        let changed = self.state != before;
        if changed {
            self.state.updated_ms = now_ms;
        }
        changed
    }

    fn set_attr(&mut self, k: &str, v: Value) {
        self.state.attrs.insert(k.to_string(), v);
    }

    fn apply_main(&mut self, payload: &str) {
        let c = self.component;
        if c == Component::Light && self.json_schema() {
            let Ok(j) = serde_json::from_str::<Value>(payload) else {
                return;
            };
            if let Some(s) = j.get("state").and_then(|v| v.as_str()) {
                self.state.value = Some(s.to_lowercase());
            }
            if let Some(b) = j.get("brightness").and_then(|v| v.as_f64()) {
                let scale = self.f("brightness_scale").unwrap_or(255.0);
                self.set_attr("brightness", pct(b, scale));
            }
            return;
        }
        let tpl_key = if c == Component::Light {
            "state_value_template"
        } else {
            "value_template"
        };
        let raw = match self.s(tpl_key).or(self.s("value_template")) {
            Some(t) => match template::render_value(t, payload) {
                Some(v) => v,
                None => {
                    tracing::debug!(entity = %self.id, "unsupported template {t:?}: using the raw payload");
                    payload.trim().to_string()
                }
            },
            None => payload.trim().to_string(),
        };
        let is = |k: &str, d: &str| same(&raw, &self.t_or(k, d));
        let v = match c {
            Component::Light | Component::Switch | Component::Fan | Component::BinarySensor => {
                let on = self
                    .t("state_on")
                    .or(self.t("payload_on"))
                    .unwrap_or_else(|| "ON".into());
                let off = self
                    .t("state_off")
                    .or(self.t("payload_off"))
                    .unwrap_or_else(|| "OFF".into());
                if same(&raw, &on) {
                    "on".to_string()
                } else if same(&raw, &off) {
                    "off".to_string()
                } else {
                    raw.to_lowercase()
                }
            }
            Component::Cover => {
                if is("state_open", "open") {
                    "open".into()
                } else if is("state_closed", "closed") {
                    "closed".into()
                } else if is("state_opening", "opening") {
                    "opening".into()
                } else if is("state_closing", "closing") {
                    "closing".into()
                } else if is("state_stopped", "stopped") {
                    "stopped".into()
                } else {
                    raw.to_lowercase()
                }
            }
            Component::Lock => {
                if is("state_locked", "LOCKED") {
                    "locked".into()
                } else if is("state_unlocked", "UNLOCKED") {
                    "unlocked".into()
                } else if is("state_jammed", "JAMMED") {
                    "jammed".into()
                } else if is("state_locking", "LOCKING") {
                    "locking".into()
                } else if is("state_unlocking", "UNLOCKING") {
                    "unlocking".into()
                } else {
                    raw.to_lowercase()
                }
            }
            Component::Climate => {
                self.set_attr("mode", json!(raw.to_lowercase()));
                raw.to_lowercase()
            }
            Component::AlarmControlPanel => raw.to_lowercase(),
            Component::Sensor | Component::Button | Component::Scene => raw,
        };
        if !v.is_empty() {
            self.state.value = Some(v);
        }
    }

    /// The actions this entity takes: its component's, less those its
    /// config gives no payload for (a lock opens only with `payload_open`).
    pub fn actions(&self) -> Vec<&'static str> {
        self.component
            .actions()
            .iter()
            .copied()
            .filter(|a| {
                !(self.component == Component::Lock && *a == "open")
                    || self.t("payload_open").is_some()
            })
            .collect()
    }

    /// The payloads for an action, and what the state should show after.
    /// `toggle` turns it off when it is on, on otherwise.
    pub fn command(&self, action: &str, value: Option<&Value>) -> Result<Command, String> {
        let c = self.component;
        let actions = self.actions();
        if !actions.contains(&action) {
            return Err(if actions.is_empty() {
                format!("{} is a {} and can only be read", self.id, c.as_str())
            } else {
                format!(
                    "{} ({}) does not take {action:?}; actions: {}",
                    self.id,
                    c.as_str(),
                    actions.join(", ")
                )
            });
        }
        if action == "toggle" {
            let next = if self.state.value.as_deref() == Some("on") {
                "turn_off"
            } else {
                "turn_on"
            };
            return self.command(next, None);
        }
        let num = |what: &str, lo: f64, hi: f64| -> Result<f64, String> {
            let v = value
                .and_then(|v| {
                    v.as_f64().or_else(|| {
                        v.as_str()
                            .and_then(|s| s.trim().trim_end_matches('%').parse().ok())
                    })
                })
                .ok_or_else(|| format!("{action} needs a numeric value ({what})"))?;
            if !(lo..=hi).contains(&v) {
                return Err(format!("{what} must be between {lo} and {hi}"));
            }
            Ok(v)
        };
        let cmd_topic = || {
            self.s("command_topic")
                .map(str::to_string)
                .ok_or_else(|| format!("{} has no command topic", self.id))
        };
        // command_template, when given, wraps the plain payload
        let plain = |payload: &str| -> String {
            self.cmd_payload("command_template", json!(payload), payload.to_string())
        };
        let one = |topic: String, payload: String, expect: Expect| Command {
            publish: vec![(topic, payload)],
            expect,
        };
        let main = |s: &[&str]| Expect::Main(s.iter().map(|x| x.to_string()).collect());
        Ok(match (c, action) {
            (Component::Light, "turn_on" | "set_brightness") => {
                let bri = if action == "set_brightness" || value.is_some() {
                    Some(num("brightness in percent", 0.0, 100.0)?)
                } else {
                    None
                };
                let scale = self.f("brightness_scale").unwrap_or(255.0);
                let raw_bri = bri.map(|b| (b / 100.0 * scale).round() as i64);
                if self.json_schema() {
                    let mut p = json!({"state": "ON"});
                    if let Some(b) = raw_bri {
                        p["brightness"] = json!(b);
                    }
                    let expect = match bri {
                        Some(b) => {
                            Expect::All(vec![main(&["on"]), Expect::Attr("brightness".into(), b)])
                        }
                        None => main(&["on"]),
                    };
                    one(cmd_topic()?, p.to_string(), expect)
                } else {
                    let mut publish = Vec::new();
                    let mut expects = vec![main(&["on"])];
                    if let Some(b) = raw_bri {
                        let t = self.s("brightness_command_topic").ok_or_else(|| {
                            format!("{} cannot dim (no brightness_command_topic)", self.id)
                        })?;
                        let payload = self.cmd_payload(
                            "brightness_command_template",
                            json!(b),
                            b.to_string(),
                        );
                        publish.push((t.to_string(), payload));
                        if self.s("brightness_state_topic").is_some() {
                            expects.push(Expect::Attr("brightness".into(), bri.unwrap_or(0.0)));
                        }
                    }
                    // brightness alone turns most lights on; the on payload
                    // goes first so "on" is not overridden by a 0 -> on race
                    publish.insert(0, (cmd_topic()?, plain(&self.t_or("payload_on", "ON"))));
                    Command {
                        publish,
                        expect: Expect::All(expects),
                    }
                }
            }
            (Component::Light, "turn_off") => {
                if self.json_schema() {
                    one(
                        cmd_topic()?,
                        json!({"state": "OFF"}).to_string(),
                        main(&["off"]),
                    )
                } else {
                    one(
                        cmd_topic()?,
                        plain(&self.t_or("payload_off", "OFF")),
                        main(&["off"]),
                    )
                }
            }
            (Component::Switch | Component::Fan, "turn_on") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_on", "ON")),
                main(&["on"]),
            ),
            (Component::Switch | Component::Fan, "turn_off") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_off", "OFF")),
                main(&["off"]),
            ),
            (Component::Fan, "set_percentage") => {
                let p = num("percentage", 0.0, 100.0)?;
                let t = self
                    .s("percentage_command_topic")
                    .ok_or_else(|| format!("{} has no speed control", self.id))?;
                let (lo, hi) = (
                    self.f("speed_range_min").unwrap_or(1.0),
                    self.f("speed_range_max").unwrap_or(100.0),
                );
                let raw = if p <= 0.0 {
                    0.0
                } else {
                    (lo - 1.0 + p / 100.0 * (hi - lo + 1.0)).ceil()
                };
                one(
                    t.to_string(),
                    (raw as i64).to_string(),
                    Expect::Attr("percentage".into(), p),
                )
            }
            (Component::Cover, "open") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_open", "OPEN")),
                main(&["open", "opening"]),
            ),
            (Component::Cover, "close") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_close", "CLOSE")),
                main(&["closed", "closing"]),
            ),
            (Component::Cover, "stop") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_stop", "STOP")),
                Expect::AnyUpdate,
            ),
            (Component::Cover, "set_position") => {
                let p = num("position in percent (100 = open)", 0.0, 100.0)?;
                let t = self
                    .s("set_position_topic")
                    .ok_or_else(|| format!("{} cannot be set to a position", self.id))?;
                let open = self.f("position_open").unwrap_or(100.0);
                let closed = self.f("position_closed").unwrap_or(0.0);
                let raw = (closed + p / 100.0 * (open - closed)).round() as i64;
                let payload =
                    self.cmd_payload("set_position_template", json!(raw), raw.to_string());
                let expect = if self.s("position_topic").is_some() {
                    Expect::Attr("position".into(), p)
                } else {
                    Expect::AnyUpdate
                };
                one(t.to_string(), payload, expect)
            }
            (Component::Lock, "lock") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_lock", "LOCK")),
                main(&["locked"]),
            ),
            (Component::Lock, "unlock") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_unlock", "UNLOCK")),
                main(&["unlocked"]),
            ),
            (Component::Lock, "open") => {
                let p = self
                    .t("payload_open")
                    .ok_or_else(|| format!("{} cannot open (no payload_open)", self.id))?;
                one(cmd_topic()?, plain(&p), main(&["open", "unlocked"]))
            }
            (Component::Climate, "set_mode") => {
                let mode = value
                    .and_then(|v| v.as_str())
                    .ok_or("set_mode needs a value (the mode, e.g. \"heat\")")?
                    .to_lowercase();
                let modes: Vec<String> = self
                    .config
                    .get("modes")
                    .and_then(|m| m.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_lowercase))
                            .collect()
                    })
                    .unwrap_or_else(|| {
                        ["auto", "off", "cool", "heat", "dry", "fan_only"]
                            .map(String::from)
                            .to_vec()
                    });
                if !modes.contains(&mode) {
                    return Err(format!(
                        "{} has no mode {mode:?}; modes: {}",
                        self.id,
                        modes.join(", ")
                    ));
                }
                let t = self
                    .s("mode_command_topic")
                    .ok_or_else(|| format!("{} has no mode_command_topic", self.id))?;
                let payload = self.cmd_payload("mode_command_template", json!(mode), mode.clone());
                let expect = if self.s("mode_state_topic").is_some() {
                    Expect::AttrStr("mode".into(), mode)
                } else {
                    Expect::AnyUpdate
                };
                one(t.to_string(), payload, expect)
            }
            (Component::Climate, "set_temperature") => {
                let lo = self.f("min_temp").unwrap_or(7.0);
                let hi = self.f("max_temp").unwrap_or(35.0);
                let v = num("target temperature", lo, hi)?;
                let t = self
                    .s("temperature_command_topic")
                    .ok_or_else(|| format!("{} has no temperature_command_topic", self.id))?;
                let payload =
                    self.cmd_payload("temperature_command_template", json!(v), v.to_string());
                let expect = if self.s("temperature_state_topic").is_some() {
                    Expect::Attr("target_temperature".into(), v)
                } else {
                    Expect::AnyUpdate
                };
                one(t.to_string(), payload, expect)
            }
            (Component::Button, "press") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_press", "PRESS")),
                Expect::Nothing,
            ),
            (Component::Scene, "activate") => one(
                cmd_topic()?,
                plain(&self.t_or("payload_on", "ON")),
                Expect::Nothing,
            ),
            (Component::AlarmControlPanel, a) => {
                let (k, d, st) = match a {
                    "arm_away" => ("payload_arm_away", "ARM_AWAY", "armed_away"),
                    "arm_home" => ("payload_arm_home", "ARM_HOME", "armed_home"),
                    "arm_night" => ("payload_arm_night", "ARM_NIGHT", "armed_night"),
                    _ => ("payload_disarm", "DISARM", "disarmed"),
                };
                one(
                    cmd_topic()?,
                    plain(&self.t_or(k, d)),
                    main(&[st, "arming", "pending"]),
                )
            }
            _ => return Err(format!("{action} is not supported for {}", self.id)),
        })
    }

    /// A command payload: the config's template `key` rendered with
    /// `value` (also as `position`, for covers), or `plain` when there is
    /// no template or it is not supported.
    fn cmd_payload(&self, key: &str, value: Value, plain: String) -> String {
        let Some(t) = self.s(key) else {
            return plain;
        };
        let mut vars = Map::new();
        vars.insert("position".into(), value.clone());
        vars.insert("value".into(), value);
        template::render(t, &vars).unwrap_or(plain)
    }

    /// What the tools show of an entity.
    pub fn describe(&self) -> Value {
        let mut v = json!({
            "entity": self.id,
            "name": self.name,
            "component": self.component.as_str(),
            "state": self.state.value,
        });
        if let Some(a) = &self.area {
            v["area"] = json!(a);
        }
        for (k, x) in &self.state.attrs {
            if k != "mode" || self.component != Component::Climate {
                v[k] = x.clone();
            }
        }
        if let Some(u) = self.s("unit_of_measurement") {
            v["unit"] = json!(u);
        }
        if let Some(dc) = self.s("device_class") {
            v["device_class"] = json!(dc);
        }
        if let Some(a) = self.available() {
            v["available"] = json!(a);
        }
        let acts = self.actions();
        if !acts.is_empty() {
            v["actions"] = json!(acts);
        }
        if self.is_high_risk() {
            v["high_risk"] = json!(true);
        }
        v
    }
}

/// A rendered state against a configured payload; booleans in either
/// case ("false" from a plain payload, "False" from a template).
fn same(raw: &str, want: &str) -> bool {
    raw == want || (matches!(want, "True" | "False") && raw.eq_ignore_ascii_case(want))
}

fn pct(v: f64, scale: f64) -> Value {
    json!((v / scale.max(1.0) * 100.0).round().clamp(0.0, 100.0) as i64)
}

/// What to publish for an action, and how its success shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub publish: Vec<(String, String)>,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The main state becomes one of these.
    Main(Vec<String>),
    /// A numeric attribute reaches this value (within 1).
    Attr(String, f64),
    AttrStr(String, String),
    All(Vec<Expect>),
    /// Any state message counts.
    AnyUpdate,
    /// Nothing to wait for (buttons, scenes).
    Nothing,
}

impl Expect {
    /// Whether `now` shows the command's effect (checked after each state
    /// message of the entity).
    pub fn met(&self, now: &State) -> bool {
        match self {
            Expect::Main(v) => now.value.as_ref().is_some_and(|s| v.contains(s)),
            Expect::Attr(k, x) => now
                .attrs
                .get(k)
                .and_then(|v| v.as_f64())
                .is_some_and(|v| (v - x).abs() <= 1.0),
            Expect::AttrStr(k, x) => now.attrs.get(k).and_then(|v| v.as_str()) == Some(x.as_str()),
            Expect::All(l) => l.iter().all(|e| e.met(now)),
            // checked when a state message arrived: that is the update
            Expect::AnyUpdate => true,
            Expect::Nothing => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(topic: &str, payload: Value) -> Entity {
        parse("homeassistant", topic, payload.to_string().as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn abbreviations_base_topic_and_names() {
        let e = ent(
            "homeassistant/light/kitchen/config",
            json!({"~": "home/kitchen", "name": "Ceiling", "uniq_id": "k1", "cmd_t": "~/set",
                   "stat_t": "~/state", "bri_cmd_t": "~/bri/set", "bri_stat_t": "~/bri",
                   "dev": {"name": "Kitchen", "ids": ["k"], "sa": "Kitchen"}}),
        );
        assert_eq!(e.id, "light.kitchen");
        assert_eq!(e.name, "Kitchen Ceiling");
        assert_eq!(e.area.as_deref(), Some("Kitchen"));
        assert_eq!(e.s("command_topic"), Some("home/kitchen/set"));
        assert_eq!(e.s("brightness_state_topic"), Some("home/kitchen/bri"));
        let z = ent(
            "homeassistant/light/0x0017880104e45517/light/config",
            json!({"name": null, "schema": "json", "command_topic": "zigbee2mqtt/Hall/set",
                   "state_topic": "zigbee2mqtt/Hall", "brightness": true, "object_id": "hall",
                   "device": {"name": "Hall"}}),
        );
        assert_eq!((z.id.as_str(), z.name.as_str()), ("light.hall", "Hall"));
        let n = ent(
            "homeassistant/switch/0xabc/plug/config",
            json!({"command_topic": "x/set"}),
        );
        assert_eq!(n.id, "switch.0xabc_plug");
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let p = |t: &str, b: &str| parse("homeassistant", t, b.as_bytes());
        assert!(matches!(
            p("homeassistant/light/x/config", "{not json"),
            Err(DiscoveryError::Json(_))
        ));
        assert!(matches!(
            p("homeassistant/light/x/config", "[1]"),
            Err(DiscoveryError::Json(_))
        ));
        assert!(matches!(
            p("homeassistant/light/x/config", "{}"),
            Err(DiscoveryError::Invalid(_))
        ));
        assert!(matches!(
            p("homeassistant/vacuum/x/config", "{}"),
            Err(DiscoveryError::Unsupported(_))
        ));
        assert!(matches!(
            p("homeassistant/light/config", "{}"),
            Err(DiscoveryError::Topic)
        ));
        assert_eq!(
            p("homeassistant/light/x/config", "").unwrap().map(|e| e.id),
            None
        );
    }

    /// Zigbee2MQTT announces a door contact with JSON booleans
    /// (`payload_on: false`: contact lost = open); they once compared as
    /// text against the template's "True"/"False" and a closed door read
    /// "true".
    #[test]
    fn boolean_payloads_compare_as_values() {
        let mut d = ent(
            "homeassistant/binary_sensor/0x1/contact/config",
            json!({"state_topic": "z2m/door", "device_class": "door", "payload_on": false,
                   "payload_off": true, "value_template": "{{ value_json.contact }}"}),
        );
        assert!(d.apply(Field::Main, r#"{"contact": true}"#, 1));
        assert_eq!(d.state.value.as_deref(), Some("off"));
        assert!(d.apply(Field::Main, r#"{"contact": false}"#, 2));
        assert_eq!(d.state.value.as_deref(), Some("on"));
        // a plain payload "false" reads the same
        let mut p = ent(
            "homeassistant/binary_sensor/p/config",
            json!({"state_topic": "p", "payload_on": true, "payload_off": false}),
        );
        p.apply(Field::Main, "false", 1);
        assert_eq!(p.state.value.as_deref(), Some("off"));
        p.apply(Field::Main, "true", 2);
        assert_eq!(p.state.value.as_deref(), Some("on"));
    }

    /// A lock lists `open` only when it has `payload_open`.
    #[test]
    fn a_lock_opens_only_with_payload_open() {
        let l = ent(
            "homeassistant/lock/a/config",
            json!({"command_topic": "a/set"}),
        );
        assert_eq!(l.actions(), ["lock", "unlock"]);
        assert!(l.describe()["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a != "open"));
        assert!(l.command("open", None).is_err());
        let o = ent(
            "homeassistant/lock/b/config",
            json!({"command_topic": "b/set", "payload_open": "OPEN"}),
        );
        assert_eq!(o.actions(), ["lock", "unlock", "open"]);
        assert_eq!(o.command("open", None).unwrap().publish[0].1, "OPEN");
    }

    #[test]
    fn state_normalization_and_commands() {
        let mut l = ent(
            "homeassistant/light/k/config",
            json!({"command_topic": "k/set", "state_topic": "k/state",
                   "brightness_command_topic": "k/bri/set", "brightness_state_topic": "k/bri",
                   "brightness_scale": 100}),
        );
        assert!(l.apply(Field::Main, "ON", 1));
        assert!(l.apply(Field::Brightness, "40", 2));
        assert_eq!(l.state.value.as_deref(), Some("on"));
        assert_eq!(l.state.attrs["brightness"], json!(40));
        let c = l.command("turn_on", Some(&json!(60))).unwrap();
        assert_eq!(
            c.publish,
            vec![
                ("k/set".into(), "ON".into()),
                ("k/bri/set".into(), "60".into())
            ]
        );
        let mut j = ent(
            "homeassistant/light/j/config",
            json!({"schema": "json", "command_topic": "j/set", "state_topic": "j"}),
        );
        let c = j.command("set_brightness", Some(&json!(50))).unwrap();
        assert_eq!(c.publish[0].1, r#"{"brightness":128,"state":"ON"}"#);
        assert!(!c.expect.met(&j.state));
        j.apply(Field::Main, r#"{"state":"ON","brightness":128}"#, 5);
        assert!(c.expect.met(&j.state));

        let mut cov = ent(
            "homeassistant/cover/g/config",
            json!({"command_topic": "g/set", "state_topic": "g", "value_template": "{{ value_json.state }}",
                   "position_topic": "g", "position_template": "{{ value_json.position }}",
                   "set_position_topic": "g/set", "set_position_template": "{ \"position\": {{ position }} }",
                   "state_open": "OPEN", "state_closed": "CLOSE", "device_class": "garage"}),
        );
        assert!(cov.is_high_risk());
        cov.apply(Field::Main, r#"{"state":"OPEN","position":70}"#, 1);
        cov.apply(Field::Position, r#"{"state":"OPEN","position":70}"#, 1);
        assert_eq!(cov.state.value.as_deref(), Some("open"));
        assert_eq!(cov.state.attrs["position"], json!(70));
        let c = cov.command("set_position", Some(&json!("25%"))).unwrap();
        assert_eq!(c.publish[0].1, r#"{ "position": 25 }"#);

        let mut clim = ent(
            "homeassistant/climate/trv/config",
            json!({"mode_command_topic": "t/mode/set", "mode_state_topic": "t", "mode_state_template": "{{ value_json.system_mode }}",
                   "temperature_command_topic": "t/temp/set", "temperature_state_topic": "t",
                   "temperature_state_template": "{{ value_json.current_heating_setpoint }}",
                   "current_temperature_topic": "t", "current_temperature_template": "{{ value_json.local_temperature }}",
                   "modes": ["off", "heat", "auto"], "min_temp": 5, "max_temp": 30}),
        );
        let msg =
            r#"{"system_mode":"heat","current_heating_setpoint":21,"local_temperature":19.5}"#;
        for f in [Field::Mode, Field::TargetTemp, Field::CurrentTemp] {
            clim.apply(f, msg, 1);
        }
        assert_eq!(clim.describe()["target_temperature"], json!(21.0));
        assert_eq!(clim.describe()["current_temperature"], json!(19.5));
        assert_eq!(clim.state.value.as_deref(), Some("heat"));
        assert!(clim.command("set_mode", Some(&json!("cool"))).is_err());
        assert!(clim.command("set_temperature", Some(&json!(40))).is_err());
        assert_eq!(
            clim.command("set_temperature", Some(&json!(22.5)))
                .unwrap()
                .publish[0],
            ("t/temp/set".into(), "22.5".into())
        );

        let mut lock = ent(
            "homeassistant/lock/front/config",
            json!({"command_topic": "l/set", "state_topic": "l", "availability_topic": "l/avail"}),
        );
        lock.apply(Field::Main, "LOCKED", 1);
        lock.apply(Field::Availability(0), "offline", 1);
        assert_eq!(lock.describe()["state"], "locked");
        assert_eq!(lock.describe()["available"], false);
        let s = ent(
            "homeassistant/sensor/t/config",
            json!({"state_topic": "s", "unit_of_measurement": "°C"}),
        );
        assert!(s
            .command("turn_on", None)
            .unwrap_err()
            .contains("can only be read"));
    }
}
