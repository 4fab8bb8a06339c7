//! Config text: parsing, `${VAR}` interpolation, validation. What validates
//! must hold the ranges `serve` relies on.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config_toml(data));
