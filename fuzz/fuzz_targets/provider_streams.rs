//! Provider responses: the same bytes as an OpenAI chat-completions, an
//! Anthropic Messages and a Gemini streamGenerateContent SSE stream.
#![no_main]

use std::sync::atomic::AtomicBool;

use hearth::provider::{anthropic, gemini, openai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
