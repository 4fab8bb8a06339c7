//! Measurements for `scripts/bench-models` (`hearth models bench embed|chat`):
//! CPU time over all threads and peak RSS of this process, as JSON.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::{json, Value};

use super::chat::{ChatModel, GenOptions, Msg, ToolMode};
use super::embed::{BertEmbedder, Embedder};
use super::{ChatSpec, EMBED_DIR};

/// CPU seconds used so far by all threads of this process.
fn cpu_s() -> f64 {
    let mut ns: u64 = 0;
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 / 1e9
}

/// Peak resident set size (VmHWM) in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The benchmark sentences, one per line; scripts/bench-models gives
/// PyTorch the same file.
const SENTENCES_TXT: &str = include_str!("../../benches/data/sentences.txt");

fn sentences() -> Vec<&'static str> {
    SENTENCES_TXT.lines().filter(|l| !l.is_empty()).collect()
}

pub fn run(what: &str, dir: &Path, chat: &ChatSpec, threads: usize) -> anyhow::Result<Value> {
    match what {
        "embed" => {
            let t = Instant::now();
            let e = BertEmbedder::load(&dir.join(EMBED_DIR), threads)?;
            let load_ms = t.elapsed().as_millis();
            let batch: Vec<&str> = sentences().into_iter().cycle().take(32).collect();
            e.embed(&batch)?; // warm-up
            let (c0, w0) = (cpu_s(), Instant::now());
            let rounds = 16;
            for _ in 0..rounds {
                e.embed(&batch)?;
            }
            let cpu = cpu_s() - c0;
            let n = rounds * batch.len();
            Ok(
                json!({"model": EMBED_DIR, "threads": threads, "load_ms": load_ms, "sentences": n,
                      "cpu_s": cpu, "wall_s": w0.elapsed().as_secs_f64(),
                      "sentences_per_cpu_s": n as f64 / cpu, "peak_rss_mb": peak_rss_mb()}),
            )
        }
        "chat" => {
            let t = Instant::now();
            let m = ChatModel::load(&chat.path(dir), threads, 1024, 2048)?;
            let load_ms = t.elapsed().as_millis();
            let load_peak = peak_rss_mb();
            let cancel = AtomicBool::new(false);
            let long = sentences().join(" ").repeat(4);
            let msgs = [Msg {
                role: "user",
                content: format!("{long}\nSummarise the above in one sentence."),
            }];
            // Prefill alone: one new token.
            let one = GenOptions {
                max_new_tokens: 1,
                temperature: 0.0,
                ..Default::default()
            };
            let c0 = cpu_s();
            let (_, n1) = m.generate(&msgs, &[], ToolMode::None, &one, &mut |_| {}, &cancel)?;
            let prefill_cpu = cpu_s() - c0;
            // Prefill plus decoding.
            let opts = GenOptions {
                max_new_tokens: 64,
                temperature: 0.0,
                ..Default::default()
            };
            let c1 = cpu_s();
            let (_, n2) = m.generate(&msgs, &[], ToolMode::None, &opts, &mut |_| {}, &cancel)?;
            let decode_cpu = (cpu_s() - c1 - prefill_cpu).max(1e-9);
            let decoded = n2.generated.saturating_sub(1).max(1);
            Ok(
                json!({"model": chat.id, "threads": threads, "load_ms": load_ms,
                      "prompt_tokens": n1.prompt, "prompt_tokens_per_cpu_s": n1.prompt as f64 / prefill_cpu,
                      "decode_tokens": decoded, "decode_tokens_per_cpu_s": decoded as f64 / decode_cpu,
                      "load_peak_rss_mb": load_peak, "peak_rss_mb": peak_rss_mb()}),
            )
        }
        other => anyhow::bail!("unknown benchmark {other:?} (embed or chat)"),
    }
}
