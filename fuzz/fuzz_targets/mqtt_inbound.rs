//! MQTT messages Hearth receives: device text on `<prefix>/in/<device>`
//! and state payloads for every field of every fixture entity (value
//! templates, JSON state, availability).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::mqtt_inbound(data));
