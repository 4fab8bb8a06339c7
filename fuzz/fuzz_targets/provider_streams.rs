//! Provider responses: the same bytes as an OpenAI chat-completions, an
//! Anthropic Messages and a Gemini streamGenerateContent SSE stream.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::provider_streams(data));
