//! Discovery configs from the broker: parsing (abbreviations, `~`),
//! topic checks, then every action's command payload and a state message.
#![no_main]

use hearth::mqtt::discovery;
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 6] = [
    "homeassistant/light/x/config",
    "homeassistant/switch/n/x/config",
    "homeassistant/lock/x/config",
    "homeassistant/cover/x/config",
    "homeassistant/climate/x/config",
    "homeassistant/fan/x/config",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let topic = TOPICS[sel as usize % TOPICS.len()];
    let Ok(Some(mut e)) = discovery::parse("homeassistant", topic, payload) else {
        return;
    };
    if discovery::check_topics(&e, "hearth").is_err() {
        return;
    }
    for (k, t) in e.topics() {
        assert!(
            !t.contains('\0') && !t.contains('#') && !t.contains('+'),
            "{k}"
        );
    }
    for action in e.component.actions() {
        for v in [
            None,
            Some(serde_json::json!(50)),
            Some(serde_json::json!("heat")),
        ] {
            if let Ok(cmd) = e.command(action, v.as_ref()) {
                for (t, _) in &cmd.publish {
                    assert!(!t.is_empty());
                }
            }
        }
    }
    let text = String::from_utf8_lossy(payload);
    for (_, f) in e.state_topics() {
        e.apply(f, &text, 1);
    }
});
