//! What each fuzz target checks, as plain functions: the targets in
//! fuzz_targets/ call them with libFuzzer's inputs, and the main crate's
//! tests/fuzz_seeds.rs calls them with every seed in fuzz/seeds (and cuts of
//! them) on each `cargo test`, so a finding added to the seeds stays fixed.
#![allow(dead_code)]

use hearth::config::Config;
use hearth::gateway::{devices, protocol};
use hearth::mqtt::client::parse_device_text;
use hearth::mqtt::discovery::{self, Entity};
use hearth::mqtt::template;
use hearth::provider::{anthropic, gemini, openai};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

/// Gateway frames before and after sign-in: request parsing, the request id
/// of a broken frame, and `connect` params (shape, protocol range, token).
pub fn gateway_frames(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = protocol::peek_id(&text);
    if let Ok((id, method, params)) = protocol::parse_request(&text) {
        assert!(!id.is_empty() && id.len() <= 128);
        assert!(!method.is_empty());
        assert!(params.is_object());
    }
    match devices::parse_connect(&text) {
        Ok(c) => assert!(c.scopes.len() <= 32 && c.role.chars().count() <= 64),
        Err((_, e, code)) => assert!(matches!(code, 1002 | 1008), "{code} {}", e.code),
    }
}

/// Config text: parsing, `${VAR}` interpolation, validation. What validates
/// must hold the ranges `serve` relies on.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_str(text, None, &|_| None);
    if let Ok(c) = Config::from_str(text, None, &|k| Some(format!("v-{k}"))) {
        let g = &c.gateway;
        assert!((1..=1024).contains(&g.max_connections));
        assert!((1..=1024).contains(&g.max_inflight));
        for p in c.providers.values() {
            assert!(p.timeout.as_secs() <= 3600);
            // what the first chat does with it (5b0ef1f panicked here)
            let _ = std::time::Instant::now()
                .checked_add(p.timeout)
                .expect("timeout fits");
        }
        for a in &c.agents {
            assert!(a.max_steps >= 1);
            if let Some(w) = &a.workspace {
                assert!(w.is_absolute());
            }
        }
    }
}

/// Provider responses: the same bytes as an OpenAI chat-completions, an
/// Anthropic Messages and a Gemini streamGenerateContent SSE stream.
pub fn provider_streams(data: &[u8]) {
    let cancel = AtomicBool::new(false);
    let mut deltas = 0usize;
    let mut on = |d: &str| deltas += d.len();
    let _ = openai::parse_sse(std::io::Cursor::new(data), &mut on, &cancel);
    let _ = anthropic::parse_sse(std::io::Cursor::new(data), &mut on, &cancel);
    let _ = gemini::parse_sse(std::io::Cursor::new(data), &mut on, &cancel);
    assert!(
        deltas <= data.len() * 3 + 16,
        "deltas larger than the input"
    );
}

fn entities() -> &'static Vec<Entity> {
    static E: OnceLock<Vec<Entity>> = OnceLock::new();
    E.get_or_init(|| {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/ha_discovery.json")).unwrap();
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

/// MQTT messages Hearth receives: device text on `<prefix>/in/<device>`
/// and state payloads for every field of every fixture entity (value
/// templates, JSON state, availability).
pub fn mqtt_inbound(data: &[u8]) {
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
}

const TOPICS: [&str; 6] = [
    "homeassistant/light/x/config",
    "homeassistant/switch/n/x/config",
    "homeassistant/lock/x/config",
    "homeassistant/cover/x/config",
    "homeassistant/climate/x/config",
    "homeassistant/fan/x/config",
];

/// Discovery configs from the broker: parsing (abbreviations, `~`),
/// topic checks, then every action's command payload and a state message.
pub fn discovery(data: &[u8]) {
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
}

/// Home Assistant value templates (the subset Hearth evaluates) against a
/// payload: the input is `template \0 payload`.
pub fn templates(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (tpl, payload) = text
        .split_once('\0')
        .unwrap_or((&text, "{\"state\":\"ON\",\"a\":[1,2]}"));
    if let Some(out) = template::render_value(tpl, payload) {
        assert!(
            out.len() <= (tpl.len() + 1) * (payload.len() + 32),
            "output grew: {}",
            out.len()
        );
    }
}
