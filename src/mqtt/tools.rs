//! Device tools for agents (policy group `group:devices`), offered when
//! `[channels.mqtt]` is configured:
//!
//! - `devices_list {query?, area?, component?}`
//! - `device_state {entity}`
//! - `device_set {entity, action, value?}`: publishes the command and
//!   waits briefly for the state topic to confirm.
//!
//! `entity` is an entity id or what people call the device ("kitchen
//! light"); an ambiguous name is answered with the candidates. High-risk
//! entities (locks, alarm panels, covers of doors, garages and gates) make
//! a `device_set` call [`Risk::High`]; the tool registry's approval hook
//! decides (today: `[channels.mqtt] allow_high_risk`, and only the owner
//! unless a sender policy says `high_risk = true`), and the call refuses
//! any high-risk entity the hook did not approve.

use std::sync::Arc;

use serde_json::{json, Value};

use super::client::Mqtt;
use super::discovery::Component;
use super::registry::Resolved;
use crate::tool::{Risk, Tool, ToolCx, ToolFuture, ToolSpec};

/// One device tool for the registry (group `devices`).
pub struct DeviceTool {
    spec: ToolSpec,
    mqtt: Arc<Mqtt>,
}

/// The device tools over this connection.
pub fn tools(m: &Arc<Mqtt>) -> Vec<Arc<dyn Tool>> {
    specs()
        .into_iter()
        .map(|spec| {
            Arc::new(DeviceTool {
                spec,
                mqtt: m.clone(),
            }) as Arc<dyn Tool>
        })
        .collect()
}

impl Tool for DeviceTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn group(&self) -> &'static str {
        "devices"
    }
    fn risk(&self, args: &Value) -> Risk {
        if self.spec.name != "device_set" {
            return Risk::Low;
        }
        let s = |k: &str| args.get(k).and_then(|x| x.as_str());
        let (Some(q), Some(action)) = (s("entity"), s("action")) else {
            return Risk::Low;
        };
        match resolve(&self.mqtt, q, &settable(&action_name(action))) {
            Ok(id) if self.mqtt.registry.is_high_risk(&id) => Risk::High {
                preapproved: self
                    .mqtt
                    .cfg
                    .allow_high_risk
                    .iter()
                    .any(|a| a == &id || a == "*"),
                subject: id,
            },
            _ => Risk::Low,
        }
    }
    fn call<'a>(&'a self, cx: &'a ToolCx, args: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            execute(&self.mqtt, &self.spec.name, &args, cx.approved.as_deref()).await
        })
    }
}

/// Every action `device_set` takes (the schema's enum).
const ACTIONS: [&str; 19] = [
    "turn_on",
    "turn_off",
    "toggle",
    "set_brightness",
    "set_percentage",
    "open",
    "close",
    "stop",
    "set_position",
    "lock",
    "unlock",
    "set_mode",
    "set_temperature",
    "press",
    "activate",
    "arm_away",
    "arm_home",
    "arm_night",
    "disarm",
];

/// An action as a model may write it ("Turn on", "switch-off", "on",
/// "brightness") in the canonical form.
pub fn action_name(raw: &str) -> String {
    let a: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let a = a.strip_prefix("device_").unwrap_or(&a);
    match a {
        "on" | "switch_on" | "power_on" | "enable" | "start" => "turn_on",
        "off" | "switch_off" | "power_off" | "shut_off" | "disable" => "turn_off",
        "brightness" | "dim" | "set_level" | "set_brightness_pct" => "set_brightness",
        "percentage" | "speed" | "set_speed" | "set_fan_speed" => "set_percentage",
        "position" | "set_cover_position" => "set_position",
        "temperature" | "set_temp" | "set_target_temperature" => "set_temperature",
        "mode" | "set_hvac_mode" => "set_mode",
        "open_cover" => "open",
        "close_cover" => "close",
        "stop_cover" => "stop",
        "scene_on" | "scene_activate" => "activate",
        other => other,
    }
    .to_string()
}

/// The action for this kind of entity: scenes and buttons take turn_on.
fn action_for(c: Component, action: &str) -> &str {
    match (c, action) {
        (Component::Scene, "turn_on") => "activate",
        (Component::Button, "turn_on") => "press",
        _ => action,
    }
}

/// The components `device_set` operates.
const COMMANDED: [Component; 9] = [
    Component::Light,
    Component::Switch,
    Component::Fan,
    Component::Cover,
    Component::Lock,
    Component::Climate,
    Component::Button,
    Component::Scene,
    Component::AlarmControlPanel,
];

/// The components that have this action (or take it, see [`action_for`]).
fn settable(action: &str) -> Vec<Component> {
    COMMANDED
        .into_iter()
        .filter(|c| c.actions().contains(&action_for(*c, action)))
        .collect()
}

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "devices_list".into(),
            description:
                "List the smart-home devices (lights, switches, sensors, locks, ...) with \
                          their current state. All filters are optional."
                    .into(),
            parameters: json!({"type":"object","properties":{
                "query":{"type":"string","description":"words of the name, e.g. kitchen"},
                "area":{"type":"string"},
                "component":{"type":"string","enum":["light","switch","fan","cover","lock","climate","sensor","binary_sensor","button","scene","alarm_control_panel"]}},
                "additionalProperties":false}),
        },
        ToolSpec {
            name: "device_state".into(),
            description: "The current state of one device, by entity id or name.".into(),
            parameters: json!({"type":"object","properties":{
                "entity":{"type":"string"}},"required":["entity"],"additionalProperties":false}),
        },
        ToolSpec {
            name: "device_set".into(),
            description: "Operate a device, by entity id or name. Actions: light turn_on (value = \
                          brightness %, optional), turn_off, set_brightness; switch/fan turn_on, \
                          turn_off, set_percentage (fan); cover open, close, stop, set_position \
                          (value %); lock lock, unlock; climate set_mode (value e.g. heat), \
                          set_temperature (value °); button press; scene activate. Says whether \
                          the device confirmed."
                .into(),
            parameters: json!({"type":"object","properties":{
                "entity":{"type":"string"},
                "action":{"type":"string","enum":ACTIONS},
                "value":{"type":["number","string"]}},
                "required":["entity","action"],"additionalProperties":false}),
        },
    ]
}

fn candidates(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(id, name)| format!("{id} ({name})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves a name for a tool, or the message the model gets instead.
fn resolve(m: &Mqtt, q: &str, components: &[Component]) -> Result<String, String> {
    match m.registry.resolve(q, components) {
        Resolved::One(id) => Ok(id),
        Resolved::Ambiguous(c) => Err(format!(
            "{q:?} could mean several devices: {}. Ask which one, or use the entity id.",
            candidates(&c)
        )),
        Resolved::NotFound(c) if c.is_empty() => Err(format!(
            "no device matches {q:?} (the registry has {} entities)",
            m.registry.len()
        )),
        Resolved::NotFound(c) => Err(format!(
            "no device matches {q:?}; the closest are: {}",
            candidates(&c)
        )),
    }
}

/// Devices in one `devices_list` answer; the model narrows with filters.
pub const MAX_LISTED: usize = 100;

/// Runs a device tool; `Err` is an error result for the model.
/// `approved`: the high-risk entity the approval hook allowed, if any.
pub async fn execute(
    m: &Mqtt,
    name: &str,
    v: &Value,
    approved: Option<&str>,
) -> Result<String, String> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str());
    match name {
        "devices_list" => {
            let list = m.registry.list(s("query"), s("area"), s("component"));
            if list.is_empty() {
                return Ok(if m.registry.is_empty() {
                    "No devices are known yet (none announced through MQTT discovery).".into()
                } else {
                    "No device matches these filters.".into()
                });
            }
            let total = list.len();
            let shown: Vec<Value> = list.into_iter().take(MAX_LISTED).collect();
            let mut out = Value::Array(shown).to_string();
            if total > MAX_LISTED {
                out.push_str(&format!(
                    "\n[{} more devices not shown; narrow the list with query, area or component]",
                    total - MAX_LISTED
                ));
            }
            Ok(out)
        }
        "device_state" => {
            let q = s("entity").ok_or("invalid arguments: entity is required")?;
            let id = resolve(m, q, &[])?;
            let e = m.registry.get(&id).ok_or("the device went away")?;
            Ok(e.describe().to_string())
        }
        "device_set" => {
            let q = s("entity").ok_or("invalid arguments: entity is required")?;
            let raw = s("action").ok_or("invalid arguments: action is required")?;
            let action = action_name(raw);
            let comps = settable(&action);
            if comps.is_empty() {
                let shown: String = raw.chars().take(64).collect();
                return Err(format!(
                    "unknown action {shown:?}; actions: {}",
                    ACTIONS.join(", ")
                ));
            }
            let id = resolve(m, q, &comps)?;
            let e = m.registry.get(&id).ok_or("the device went away")?;
            let action = action_for(e.component, &action);
            if m.registry.is_high_risk(&id) && approved != Some(id.as_str()) {
                tracing::warn!(entity = %id, action, "device_set refused: high-risk entity not approved");
                return Err(format!(
                    "{id} ({}) is a high-risk device and this call was not approved for it",
                    e.name
                ));
            }
            let r = m.command(&id, action, v.get("value")).await?;
            Ok(r.to_string())
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::grammar::Automaton;

    /// Every action a component takes is in the schema's enum (the local
    /// model can only write what the enum names), and the constrained
    /// decoder refuses an invented one.
    #[test]
    fn the_action_enum_covers_every_component_and_binds_the_decoder() {
        for c in COMMANDED {
            for a in c.actions() {
                assert!(ACTIONS.contains(a), "{a} of {c:?}");
            }
        }
        let set = specs()
            .into_iter()
            .find(|s| s.name == "device_set")
            .unwrap();
        let mut a = Automaton::new(&[(set.name.clone(), set.parameters.clone())]);
        assert!(a.feed_str(r#"{"name":"device_set","arguments":{"entity":"light.k","action":""#));
        assert!(a.accepts("turn_o"));
        assert!(!a.accepts("switch_the_light"));
        assert!(!a.accepts("read"));
    }

    #[test]
    fn obvious_synonyms_are_read() {
        for (raw, want) in [
            ("on", "turn_on"),
            ("Turn On", "turn_on"),
            ("switch-off", "turn_off"),
            ("brightness", "set_brightness"),
            ("position", "set_position"),
            ("device_turn_off", "turn_off"),
            ("lock", "lock"),
        ] {
            assert_eq!(action_name(raw), want, "{raw}");
        }
        assert_eq!(action_for(Component::Scene, "turn_on"), "activate");
        assert!(settable("turn_on").contains(&Component::Scene));
        assert!(settable("fly").is_empty());
    }
}
