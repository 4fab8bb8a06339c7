//! Home Assistant value templates (the subset Hearth evaluates) against a
//! payload: the input is `template \0 payload`.
#![no_main]

use hearth::mqtt::template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
