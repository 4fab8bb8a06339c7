//! Memory index benchmark on a synthetic corpus (`hearth memory bench`,
//! run by `scripts/bench-memory`): build rate, search latency, RSS, disk.
//!
//! Chunks are ~100-token paragraphs of words drawn from a Zipf-distributed
//! 20,000-word vocabulary; vectors come from [`SyntheticEmbedder`]
//! (deterministic pseudo-random unit vectors), so the numbers are the index
//! itself. The real model's cost per query is measured separately when its
//! files are present.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::index::MemoryIndex;
use crate::config::MemoryConfig;
use crate::models::embed::Embedder;
use crate::models::ModelError;

/// Deterministic unit vectors from a text hash (no model).
pub struct SyntheticEmbedder {
    pub dim: usize,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl Embedder for SyntheticEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(texts
            .iter()
            .map(|t| {
                let seed = t.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
                });
                let mut r = Rng(seed | 1);
                let v: Vec<f32> = (0..self.dim).map(|_| r.unit() - 0.5).collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

fn vocab() -> Vec<String> {
    let syll = [
        "ka", "lo", "mi", "ne", "tu", "ra", "sei", "vo", "dan", "pel", "gri", "hom",
    ];
    (0..20_000)
        .map(|i| {
            let mut w = String::new();
            let mut x = i + 1;
            while x > 0 {
                w.push_str(syll[x % syll.len()]);
                x /= syll.len();
            }
            w
        })
        .collect()
}

/// A Zipf-ish word index (rank ~ 1/u).
fn word(r: &mut Rng, n: usize) -> usize {
    let u = r.unit().max(1e-6);
    ((1.0 / u) as usize).min(n) - 1
}

/// A `/proc/self/status` field in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            n += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    n
}

/// With `build`: writes the synthetic workspace and indexes about `chunks`
/// chunks under `dir`, reporting the build rate. Without: opens that index
/// in this fresh process and measures `queries` searches, the RSS the index
/// adds and its disk use.
pub fn run(chunks: usize, dir: &Path, queries: usize, build: bool) -> anyhow::Result<Value> {
    let ws = dir.join(format!("ws-{chunks}"));
    let idx_dir = dir.join(format!("idx-{chunks}"));
    let cfg = MemoryConfig {
        chunk_tokens: 100,
        chunk_overlap: 0,
        min_score: 0.0,
        ..MemoryConfig::default()
    };
    let vocab = vocab();
    let per_file = 200;
    if !ws.exists() {
        let mut r = Rng(42);
        for f in 0..chunks.div_ceil(per_file) {
            let mut text = String::new();
            for _ in 0..per_file {
                // one ~390-character line per chunk (chunk_tokens 100 = 400 chars)
                let mut line = String::new();
                while line.len() < 380 {
                    line.push_str(&vocab[word(&mut r, vocab.len())]);
                    line.push(' ');
                }
                text.push_str(line.trim_end());
                text.push('\n');
            }
            let p = ws.join(format!("memory/bench/{:03}/f{f}.md", f / 1000));
            std::fs::create_dir_all(p.parent().expect("has a parent"))?;
            std::fs::write(p, text)?;
        }
    }
    let embedder: Arc<dyn Embedder> = Arc::new(SyntheticEmbedder { dim: 384 });
    if build {
        let t = Instant::now();
        let mut idx = MemoryIndex::open(&idx_dir, Some(embedder.clone()), cfg.clone())?;
        let s = idx.reindex(&ws)?;
        let build_s = t.elapsed().as_secs_f64();
        return Ok(json!({
            "chunks": idx.len()?,
            "build_s": build_s,
            "build_chunks_per_s": s.chunks_added as f64 / build_s,
            "build_peak_rss_mb": status_kb("VmHWM:") as f64 / 1024.0,
        }));
    }
    let rss_before = status_kb("VmRSS:");
    let t = Instant::now();
    let idx = MemoryIndex::open(&idx_dir, Some(embedder), cfg)?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let n = idx.len()?;
    let mut r = Rng(7);
    let mut lat = Vec::with_capacity(queries);
    for _ in 0..queries {
        let q: Vec<&str> = (0..3).map(|_| vocab[word(&mut r, 2000)].as_str()).collect();
        let q = q.join(" ");
        let t = Instant::now();
        let hits = idx.search(&q, None)?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(hits);
    }
    let rss_after = status_kb("VmRSS:");
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let disk = dir_bytes(&idx_dir);
    Ok(json!({
        "chunks": n,
        "open_ms": open_ms,
        "search_p50_ms": pct(0.5),
        "search_p95_ms": pct(0.95),
        "search_max_ms": lat[lat.len() - 1],
        "index_rss_mb": (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        "disk_bytes_per_chunk": disk as f64 / n.max(1) as f64,
        "queries": queries,
    }))
}
