//! Gateway frames before and after sign-in: request parsing, the request id
//! of a broken frame, and `connect` params (shape, protocol range, token).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gateway_frames(data));
