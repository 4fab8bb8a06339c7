//! MQTT messages Hearth receives: device text on `<prefix>/in/<device>`
//! and state payloads for every field of every fixture entity (value
//! templates, JSON state, availability).
#![no_main]

use std::sync::OnceLock;

use hearth::mqtt::client::parse_device_text;
use hearth::mqtt::discovery::{self, Entity};
use libfuzzer_sys::fuzz_target;

fn entities() -> &'static Vec<Entity> {
    static E: OnceLock<Vec<Entity>> = OnceLock::new();
    E.get_or_init(|| {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/ha_discovery.json")).unwrap();
        fx["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let topic = e["topic"].as_str()?;
                discovery::parse("homeassistant", topic, e["payload"].to_string().as_bytes())
                    .ok()?
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((text, _, id)) = parse_device_text(data) {
        assert!(!text.trim().is_empty());
        assert!(id.is_none_or(|i| i.len() <= 200));
    }
    let payload = String::from_utf8_lossy(data);
    for e in entities() {
        let mut e = e.clone();
        for (_, field) in e.state_topics() {
            e.apply(field, &payload, 1);
        }
        let _ = e.describe();
    }
});
