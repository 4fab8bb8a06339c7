//! Gateway frames before and after sign-in: request parsing, the request id
//! of a broken frame, and `connect` params (shape, protocol range, token).
#![no_main]

use hearth::gateway::{methods, protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = protocol::peek_id(&text);
    if let Ok((id, method, params)) = protocol::parse_request(&text) {
        assert!(!id.is_empty() && id.len() <= 128);
        assert!(!method.is_empty());
        assert!(params.is_object());
    }
    match methods::parse_connect(&text) {
        Ok(c) => assert!(c.scopes.len() <= 32 && c.role.chars().count() <= 64),
        Err((_, e, code)) => assert!(matches!(code, 1002 | 1008), "{code} {}", e.code),
    }
});
