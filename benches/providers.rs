//! Provider-layer benchmark (release build), numbers for docs/performance.md:
//!
//! - failover: time from a primary that fails hard (connection refused) to
//!   the complete reply of the first fallback (a fake Gemini API on
//!   loopback), through the real chain with its one quick retry; a fresh
//!   credential book per run, so every run takes the failing path.
//! - per-token overhead: parsing a long in-memory SSE stream of each kind
//!   (one text delta per event, the callback included), per delta.
//!
//! Environment: BENCH_FAILOVERS (default 20), BENCH_TOKENS (default 200000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cloud::FakeCloud;
use common::{env_n, free_port};
use hearth::config::Config;
use hearth::provider::credentials::{CredentialBook, SystemClock};
use hearth::provider::{anthropic, gemini, openai, run_chain, ChatRequest, Providers};
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn failover(runs: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeCloud::start());
    let port = free_port();
    let text = format!(
        "[providers.down]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{port}\"\napi_key = \"k\"\n\
         [providers.up]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"k\"\n\
         [agents.defaults]\nmodel = {{ primary = \"down/a\", fallbacks = [\"up/b\"] }}\n",
        fake.url
    );
    let cfg = Config::from_str(&text, None, &|_| None).expect("config");
    let chain = cfg.agents[0].model.clone().unwrap();
    let req = ChatRequest {
        system: "bench",
        transcript: &[],
        tools: &[],
    };
    let mut times = Vec::new();
    for _ in 0..runs {
        let ps = Providers::from_config(&cfg, Arc::new(CredentialBook::new(Arc::new(SystemClock))));
        let t = Instant::now();
        let r = run_chain(
            &ps,
            &chain,
            "s",
            &req,
            &mut |_| {},
            &mut || {},
            &AtomicBool::new(false),
        )
        .expect("fallback answers");
        times.push(t.elapsed());
        assert_eq!(r.model_ref, "up/b");
    }
    times.sort();
    println!(
        "failover (connection refused → fallback reply, {runs} runs): median {:.0} ms, p95 {:.0} ms, max {:.0} ms (target ≤ 1500 ms)",
        pct(&times, 0.5).as_secs_f64() * 1e3,
        pct(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
}

fn per_token(tokens: usize) {
    let openai_ev = |t: &str| {
        let v = json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                       "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
        format!("data: {v}\n\n")
    };
    let anthropic_ev = |t: &str| {
        let v = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
        format!("event: content_block_delta\ndata: {v}\n\n")
    };
    let gemini_ev = |t: &str| {
        let v = json!({"candidates": [{"content": {"parts": [{"text": t}], "role": "model"}, "index": 0}]});
        format!("data: {v}\r\n\r\n")
    };
    let words = ["the ", "kitchen ", "light ", "is ", "on", ". "];
    let build = |ev: &dyn Fn(&str) -> String, head: &str, tail: &str| {
        let mut s = String::from(head);
        for i in 0..tokens {
            s.push_str(&ev(words[i % words.len()]));
        }
        s.push_str(tail);
        s
    };
    let streams = [
        (
            "openai",
            build(
                &openai_ev,
                "",
                &format!(
                    "data: {}\n\ndata: [DONE]\n\n",
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                ),
            ),
        ),
        (
            "anthropic",
            build(
                &anthropic_ev,
                &format!(
                    "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {}\n\n",
                    json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                ),
                &format!(
                    "event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n",
                    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
                    json!({"type": "message_stop"})
                ),
            ),
        ),
        (
            "gemini",
            build(
                &gemini_ev,
                "",
                &format!(
                    "data: {}\r\n\r\n",
                    json!({"candidates": [{"content": {"parts": [{"text": "."}]}, "finishReason": "STOP"}]})
                ),
            ),
        ),
    ];
    for (kind, s) in &streams {
        let cancel = AtomicBool::new(false);
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let mut n = 0usize;
            let t = Instant::now();
            let mut cb = |_: &str| n += 1;
            let r = match *kind {
                "openai" => openai::parse_sse(s.as_bytes(), &mut cb, &cancel),
                "anthropic" => anthropic::parse_sse(s.as_bytes(), &mut cb, &cancel),
                _ => gemini::parse_sse(s.as_bytes(), &mut cb, &cancel),
            }
            .expect("parses");
            best = best.min(t.elapsed());
            assert!(n >= tokens && !r.text.is_empty());
        }
        println!(
            "per streamed token, {kind}: {:.2} µs ({tokens} deltas, {:.1} MB of SSE; target ≤ 5 µs)",
            best.as_secs_f64() * 1e6 / tokens as f64,
            s.len() as f64 / 1e6
        );
    }
}

fn main() {
    failover(env_n("BENCH_FAILOVERS", 20));
    per_token(env_n("BENCH_TOKENS", 200_000));
}
