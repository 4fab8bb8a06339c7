//! The fuzz targets' checks (fuzz/checks.rs) over every seed in fuzz/seeds,
//! and over cuts of each seed (every prefix at 64 points, and the seed
//! with each of 64 bytes flipped), on every `cargo test`: what fuzzing
//! found stays fixed without building the fuzz targets. Real fuzzing:
//! `scripts/fuzz` (docs/reliability.md).

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds for {target}");
    v
}

/// The seed, its prefixes and single-byte changes.
fn variants(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let step = (seed.len() / 64).max(1);
    for cut in (0..seed.len()).step_by(step) {
        out.push(seed[..cut].to_vec());
        let mut flipped = seed.to_vec();
        flipped[cut] ^= 0x5a;
        out.push(flipped);
    }
    out
}

fn replay(target: &str, check: fn(&[u8])) {
    for (name, seed) in seeds(target) {
        for v in variants(&seed) {
            let r = std::panic::catch_unwind(|| check(&v));
            assert!(
                r.is_ok(),
                "{target}: {name} (variant of {} bytes) failed",
                v.len()
            );
        }
    }
}

#[test]
fn gateway_frames() {
    replay("gateway_frames", checks::gateway_frames);
}

#[test]
fn config_toml() {
    replay("config_toml", checks::config_toml);
}

#[test]
fn provider_streams() {
    replay("provider_streams", checks::provider_streams);
}

#[test]
fn mqtt_inbound() {
    replay("mqtt_inbound", checks::mqtt_inbound);
}

#[test]
fn discovery() {
    replay("discovery", checks::discovery);
}

#[test]
fn templates() {
    replay("templates", checks::templates);
}
