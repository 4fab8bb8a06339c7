//! Discovery configs from the broker: parsing (abbreviations, `~`),
//! topic checks, then every action's command payload and a state message.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::discovery(data));
