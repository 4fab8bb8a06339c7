//! Home Assistant value templates (the subset Hearth evaluates) against a
//! payload: the input is `template \0 payload`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::templates(data));
