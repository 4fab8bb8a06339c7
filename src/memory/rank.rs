//! Hybrid ranking: vector cosine + normalized BM25, recency decay for dated
//! notes, then MMR diversification. Pure functions, so each rule is tested
//! on its own.

use crate::config::MemoryConfig;

/// A candidate chunk with what ranking needs.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: u64,
    pub path: String,
    /// Cosine to the query, if the chunk (and the query) have vectors.
    pub cosine: Option<f32>,
    /// Raw BM25 score, if the chunk matched the text query.
    pub bm25: Option<f32>,
    /// Unit vector for MMR (None without an embedder).
    pub vector: Option<Vec<f32>>,
    /// Lowercased words for MMR when there are no vectors.
    pub words: Vec<String>,
}

/// Date of a daily note `memory/YYYY-MM-DD.md` as days since 1970-01-01.
pub fn note_day(path: &str) -> Option<i64> {
    let name = path.strip_prefix("memory/")?.strip_suffix(".md")?;
    let b = name.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = name[0..4].parse().ok()?;
    let m: u32 = name[5..7].parse().ok()?;
    let d: u32 = name[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(crate::util::days_from_civil(y, m, d))
}

/// Multiplier for a note `age_days` old: 0.5 per half-life. Undated files
/// (MEMORY.md, transcripts) and `half_life_days = 0` do not decay; a note
/// dated in the future counts as today's.
pub fn decay(path: &str, today: i64, half_life_days: f32) -> f32 {
    match note_day(path) {
        Some(day) if half_life_days > 0.0 => {
            let age = (today - day).max(0) as f32;
            0.5f32.powf(age / half_life_days)
        }
        _ => 1.0,
    }
}

/// Hybrid relevance of each candidate (same order): weights over cosine and
/// BM25 divided by the best BM25 among the candidates. Without any cosine
/// (no embedder) it is the normalized BM25 alone.
pub fn relevance(cands: &[Candidate], cfg: &MemoryConfig) -> Vec<f32> {
    let best = cands
        .iter()
        .filter_map(|c| c.bm25)
        .fold(0f32, f32::max)
        .max(f32::MIN_POSITIVE);
    let hybrid = cands.iter().any(|c| c.cosine.is_some());
    cands
        .iter()
        .map(|c| {
            let text = c.bm25.map_or(0.0, |b| b / best);
            if hybrid {
                cfg.vector_weight * c.cosine.unwrap_or(0.0).max(0.0) + cfg.text_weight * text
            } else {
                text
            }
        })
        .collect()
}

/// Ranking score: relevance times the recency decay.
pub fn ranked(cands: &[Candidate], relevance: &[f32], cfg: &MemoryConfig, today: i64) -> Vec<f32> {
    cands
        .iter()
        .zip(relevance)
        .map(|(c, r)| r * decay(&c.path, today, cfg.half_life_days))
        .collect()
}

fn similarity(a: &Candidate, b: &Candidate) -> f32 {
    match (&a.vector, &b.vector) {
        (Some(x), Some(y)) => x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>().max(0.0),
        _ => {
            // Jaccard over words
            if a.words.is_empty() || b.words.is_empty() {
                return 0.0;
            }
            let inter = a.words.iter().filter(|w| b.words.contains(w)).count();
            inter as f32 / (a.words.len() + b.words.len() - inter) as f32
        }
    }
}

/// Maximal marginal relevance: picks up to `k` of the candidates whose
/// relevance is at least `min_score` (before decay: an old note that matches
/// well is ranked lower, not dropped), each time the one maximizing
/// `lambda * score - (1 - lambda) * (max similarity to those already picked)`.
/// Returns indices into `cands`, best first.
pub fn mmr(
    cands: &[Candidate],
    relevance: &[f32],
    scores: &[f32],
    k: usize,
    lambda: f32,
    min_score: f32,
) -> Vec<usize> {
    let mut left: Vec<usize> = (0..cands.len())
        .filter(|&i| relevance[i] >= min_score)
        .collect();
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < k && !left.is_empty() {
        let (pos, _) = left
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let red = picked
                    .iter()
                    .map(|&j| similarity(&cands[i], &cands[j]))
                    .fold(0f32, f32::max);
                (pos, lambda * scores[i] - (1.0 - lambda) * red)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("left is not empty");
        picked.push(left.swap_remove(pos));
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u64, path: &str, cosine: Option<f32>, bm25: Option<f32>) -> Candidate {
        Candidate {
            id,
            path: path.into(),
            cosine,
            bm25,
            vector: None,
            words: Vec::new(),
        }
    }

    #[test]
    fn dated_notes_halve_every_half_life_and_memory_md_does_not() {
        let today = note_day("memory/2026-11-22.md").unwrap();
        assert_eq!(note_day("memory/2026-10-23.md"), Some(today - 30));
        assert!((decay("memory/2026-11-22.md", today, 30.0) - 1.0).abs() < 1e-6);
        assert!((decay("memory/2026-10-23.md", today, 30.0) - 0.5).abs() < 1e-6);
        assert!((decay("memory/2026-09-23.md", today, 30.0) - 0.25).abs() < 1e-6);
        assert_eq!(decay("MEMORY.md", today, 30.0), 1.0);
        assert_eq!(decay("memory/projects.md", today, 30.0), 1.0);
        assert_eq!(decay("memory/2026-10-23.md", today, 0.0), 1.0);
        assert_eq!(decay("memory/2027-01-01.md", today, 30.0), 1.0);
        assert_eq!(note_day("memory/2026-13-01.md"), None);
    }

    #[test]
    fn hybrid_weights_and_bm25_normalization() {
        let cfg = MemoryConfig::default();
        let today = note_day("memory/2026-11-22.md").unwrap();
        let c = vec![
            cand(1, "MEMORY.md", Some(0.8), Some(10.0)),
            cand(2, "MEMORY.md", Some(0.5), Some(5.0)),
            cand(3, "MEMORY.md", Some(0.9), None),
            cand(4, "memory/2026-10-23.md", Some(0.8), Some(10.0)),
        ];
        let r = relevance(&c, &cfg);
        let s = ranked(&c, &r, &cfg, today);
        assert!((s[0] - (0.7 * 0.8 + 0.3)).abs() < 1e-6);
        assert!((s[1] - (0.7 * 0.5 + 0.15)).abs() < 1e-6);
        assert!((s[2] - 0.63).abs() < 1e-6);
        assert!((r[3] - r[0]).abs() < 1e-6);
        assert!((s[3] - s[0] / 2.0).abs() < 1e-6, "a 30-day-old note: half");
        // BM25 only: normalized text score
        let c = vec![
            cand(1, "MEMORY.md", None, Some(4.0)),
            cand(2, "MEMORY.md", None, Some(1.0)),
        ];
        assert_eq!(relevance(&c, &cfg), vec![1.0, 0.25]);
    }

    #[test]
    fn mmr_skips_near_duplicates_and_respects_min_score() {
        let v = |x: f32, y: f32| {
            let n = (x * x + y * y).sqrt();
            Some(vec![x / n, y / n])
        };
        let mut c = vec![
            cand(1, "a", None, None),
            cand(2, "b", None, None),
            cand(3, "c", None, None),
            cand(4, "d", None, None),
        ];
        c[0].vector = v(1.0, 0.0);
        c[1].vector = v(1.0, 0.01); // a near-copy of the first
        c[2].vector = v(0.0, 1.0);
        c[3].vector = v(0.5, 0.5);
        let s = [0.9, 0.89, 0.7, 0.2];
        let picked = mmr(&c, &s, &s, 3, 0.7, 0.35);
        assert_eq!(picked[0], 0);
        assert_eq!(picked[1], 2, "the diverse one before the duplicate");
        assert_eq!(picked.len(), 3);
        assert!(!picked.contains(&3), "below min_score");
        // lambda 1: plain relevance order
        assert_eq!(mmr(&c, &s, &s, 3, 1.0, 0.0), vec![0, 1, 2]);
        // min_score applies to relevance, not to the decayed score
        let decayed = [0.1, 0.1, 0.1, 0.1];
        assert_eq!(mmr(&c, &s, &decayed, 4, 1.0, 0.35).len(), 3);
    }
}
