//! Memory search with the real embedding model: recall on a fixed note set,
//! incremental reindexing, consistency after kill -9, and the CLI contract.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hearth::config::MemoryConfig;
use hearth::memory::index::{MemoryIndex, Mode};
use hearth::models::embed::{BertEmbedder, Embedder};
use serde_json::Value;

fn embedder() -> Arc<dyn Embedder> {
    Arc::new(BertEmbedder::load(&common::models_dir().join(hearth::models::EMBED_DIR), 2).unwrap())
}

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/memory_recall.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_notes(ws: &Path, fx: &Value) {
    for n in fx["notes"].as_array().unwrap() {
        let p = ws.join(n["path"].as_str().unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, n["text"].as_str().unwrap()).unwrap();
    }
}

/// recall@6 over the fixture's queries, and the queries it missed.
fn recall(idx: &MemoryIndex, fx: &Value, today: i64) -> (f32, Vec<String>) {
    let qs = fx["queries"].as_array().unwrap();
    let mut missed = Vec::new();
    for q in qs {
        let hits = idx
            .search_on(q["query"].as_str().unwrap(), Some(6), today)
            .unwrap();
        if !hits.iter().any(|h| h.path == q["answer"].as_str().unwrap()) {
            missed.push(q["query"].as_str().unwrap().to_string());
        }
    }
    (1.0 - missed.len() as f32 / qs.len() as f32, missed)
}

#[test]
fn hybrid_recall_beats_bm25_and_vectors_alone() {
    let fx = fixture();
    assert!(fx["notes"].as_array().unwrap().len() >= 50);
    assert!(fx["queries"].as_array().unwrap().len() >= 30);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    write_notes(&ws, &fx);
    let today = hearth::util::days_from_civil(2026, 11, 22);
    let e = embedder();

    let mut hybrid = MemoryIndex::open(
        &dir.path().join("hybrid"),
        Some(e.clone()),
        MemoryConfig::default(),
    )
    .unwrap();
    let s = hybrid.reindex(&ws).unwrap();
    assert_eq!(s.files, 50);
    assert_eq!(s.embedded, s.chunks_added);
    assert_eq!(hybrid.mode(), Mode::Hybrid);
    // baselines get min_score 0, the most generous setting for them
    let lenient = MemoryConfig {
        min_score: 0.0,
        ..MemoryConfig::default()
    };
    let mut bm25 = MemoryIndex::open(&dir.path().join("bm25"), None, lenient.clone()).unwrap();
    bm25.reindex(&ws).unwrap();
    assert_eq!(bm25.mode(), Mode::Bm25Only);
    let vec_cfg = MemoryConfig {
        vector_weight: 1.0,
        text_weight: 0.0,
        ..lenient
    };
    let mut vectors = MemoryIndex::open(&dir.path().join("vec"), Some(e), vec_cfg).unwrap();
    vectors.reindex(&ws).unwrap();

    let (h, h_missed) = recall(&hybrid, &fx, today);
    let (b, b_missed) = recall(&bm25, &fx, today);
    let (v, v_missed) = recall(&vectors, &fx, today);
    eprintln!("recall@6: hybrid {h:.3} {h_missed:?}\n  bm25 {b:.3} {b_missed:?}\n  vectors {v:.3} {v_missed:?}");
    assert!(h >= 0.9, "hybrid recall@6 {h}");
    assert!(h > b, "hybrid {h} vs BM25 only {b}");
    assert!(h > v, "hybrid {h} vs vectors only {v}");
    // the first result of a code lookup is its note
    let hits = hybrid.search_on("HV-2231-77", None, today).unwrap();
    assert!(hits[0].path.ends_with(".md") && hits[0].snippet.contains("HV-2231-77"));
    assert!(hits.len() <= 6);
}

#[test]
fn reindex_touches_only_changed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("memory")).unwrap();
    let long: String = (1..=300)
        .map(|i| {
            format!(
                "- note {i}: the item number {i} is kept in box {}\n",
                i % 17
            )
        })
        .collect();
    std::fs::write(ws.join("MEMORY.md"), &long).unwrap();
    std::fs::write(ws.join("memory/2026-11-20.md"), "Bought a new kettle.\n").unwrap();
    std::fs::write(
        ws.join("memory/2026-11-21.md"),
        "The plumber comes Monday.\n",
    )
    .unwrap();
    let mut idx = MemoryIndex::open(
        &dir.path().join("idx"),
        Some(embedder()),
        MemoryConfig::default(),
    )
    .unwrap();
    let first = idx.reindex(&ws).unwrap();
    assert_eq!(first.files, 3);
    assert!(first.chunks_added >= 6, "{first:?}");
    assert_eq!(first.embedded, first.chunks_added);

    let again = idx.reindex(&ws).unwrap();
    assert_eq!(
        (again.files_changed, again.chunks_added, again.embedded),
        (0, 0, 0)
    );

    // change one line near the end of the long file: only its chunk(s) are new
    let edited = long.replace("note 290:", "note 290 (moved to the attic):");
    std::fs::write(ws.join("MEMORY.md"), edited).unwrap();
    let s = idx.reindex(&ws).unwrap();
    assert_eq!(s.files_changed, 1, "{s:?}");
    assert!(s.chunks_added >= 1 && s.chunks_added <= 2, "{s:?}");
    assert_eq!(s.chunks_removed, s.chunks_added, "{s:?}");
    assert_eq!(
        s.embedded, s.chunks_added,
        "only new chunks are embedded: {s:?}"
    );
    assert!(s.chunks_kept >= first.chunks_added - 2, "{s:?}");
    let hits = idx.search("what was moved to the attic", None).unwrap();
    assert_eq!(hits[0].path, "MEMORY.md");
    assert!(hits[0].snippet.contains("attic"));

    // inserting lines at the top shifts line ranges without re-embedding
    std::fs::write(
        ws.join("MEMORY.md"),
        format!(
            "# Memory\n\n{}",
            std::fs::read_to_string(ws.join("MEMORY.md")).unwrap()
        ),
    )
    .unwrap();
    let s = idx.reindex(&ws).unwrap();
    assert!(s.chunks_added <= 2, "{s:?}");

    // a removed file takes its chunks along
    std::fs::remove_file(ws.join("memory/2026-11-20.md")).unwrap();
    let s = idx.reindex(&ws).unwrap();
    assert_eq!((s.files_removed, s.chunks_removed), (1, 1), "{s:?}");
    assert!(idx
        .search("kettle", None)
        .unwrap()
        .iter()
        .all(|h| h.path != "memory/2026-11-20.md"));

    // reopening keeps everything (no rebuild needed)
    drop(idx);
    let idx = MemoryIndex::open(
        &dir.path().join("idx"),
        Some(embedder()),
        MemoryConfig::default(),
    )
    .unwrap();
    assert!(idx.search("plumber", None).unwrap()[0].path == "memory/2026-11-21.md");
}

#[test]
fn a_lost_bm25_index_is_rebuilt_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(
        ws.join("MEMORY.md"),
        "The spare key is under the blue flower pot.\n",
    )
    .unwrap();
    let mut idx =
        MemoryIndex::open(&dir.path().join("idx"), None, MemoryConfig::default()).unwrap();
    idx.reindex(&ws).unwrap();
    drop(idx);
    std::fs::remove_dir_all(dir.path().join("idx/bm25")).unwrap();
    let idx = MemoryIndex::open(&dir.path().join("idx"), None, MemoryConfig::default()).unwrap();
    let hits = idx.search("flower pot", None).unwrap();
    assert_eq!(hits.len(), 1);
    let long = "pot ".repeat(1000);
    assert!(matches!(
        idx.search(&long, None),
        Err(hearth::memory::MemoryError::BadRequest(_))
    ));
    assert_eq!((hits[0].from, hits[0].to), (1, 1));
}

/// A config file whose default agent's workspace is `ws`.
fn config_for(dir: &Path, ws: &Path) -> PathBuf {
    let config = dir.join("hearth.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.defaults]\nworkspace = {:?}\n",
            ws.to_str().unwrap()
        ),
    )
    .unwrap();
    config
}

fn cli(args: &[&str], config: &Path, state: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .env("HEARTH_MODELS_DIR", common::models_dir())
        .output()
        .unwrap()
}

#[test]
fn kill_9_during_reindex_leaves_a_consistent_index() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let state = dir.path().join("state");
    std::fs::create_dir_all(ws.join("memory")).unwrap();
    for d in 1..=28 {
        let body: String = (0..60)
            .map(|i| {
                format!(
                    "Day {d} entry {i}: the hallway sensor read {}.{} degrees.\n",
                    15 + i % 7,
                    d % 10
                )
            })
            .collect();
        std::fs::write(ws.join(format!("memory/2026-02-{d:02}.md")), body).unwrap();
    }
    std::fs::write(
        ws.join("MEMORY.md"),
        "Lena's bike lock key is on the red ring.\n",
    )
    .unwrap();
    let config = config_for(dir.path(), &ws);

    for delay_ms in [150u64, 700, 1500, 3000] {
        let _ = std::fs::remove_dir_all(&state);
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["memory", "reindex", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("HEARTH_MODELS_DIR", common::models_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // the next run completes, and search agrees with the files
        let out = cli(&["memory", "reindex"], &config, &state);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cli(
            &["memory", "search", "bike lock key", "--json"],
            &config,
            &state,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hits: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            hits[0]["path"], "MEMORY.md",
            "after a kill at {delay_ms} ms: {hits}"
        );
        let idx =
            MemoryIndex::open(&state.join("memory/main"), None, MemoryConfig::default()).unwrap();
        let n = idx.len().unwrap();
        let mut fresh = MemoryIndex::open(
            &dir.path().join(format!("fresh{delay_ms}")),
            None,
            MemoryConfig::default(),
        )
        .unwrap();
        fresh.reindex(&ws).unwrap();
        assert_eq!(
            n,
            fresh.len().unwrap(),
            "chunk count after a kill at {delay_ms} ms"
        );
        assert_eq!(
            idx.bm25_len(),
            n,
            "BM25 documents after a kill at {delay_ms} ms"
        );
    }
}

#[test]
fn cli_search_prints_results_and_rejects_an_empty_query() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("memory")).unwrap();
    std::fs::write(
        ws.join("memory/2026-11-02.md"),
        "# 2 Nov\n\nThe boiler was serviced; next service in November 2027.\n",
    )
    .unwrap();
    let config = config_for(dir.path(), &ws);
    let state = dir.path().join("state");
    let out = cli(
        &["memory", "search", "when is the heating maintenance due"],
        &config,
        &state,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("memory/2026-11-02.md (lines 1-3)"), "{text}");
    assert!(text.contains("serviced"), "{text}");
    let out = cli(&["memory", "search", "  "], &config, &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = cli(
        &["memory", "search", "boiler", "--agent", "nobody"],
        &config,
        &state,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_searches_memory_and_the_cli_goes_through_the_daemon() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("memory")).unwrap();
    std::fs::write(
        ws.join("MEMORY.md"),
        "# Memory\n\nThe family name is Hartmann.\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("memory/2026-11-20.md"),
        "# 20 Nov\n\nThe spare house key is hidden under the blue flower pot by the shed.\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.join("skills/plants")).unwrap();
    std::fs::write(
        ws.join("skills/plants/SKILL.md"),
        "---\nname: plant-care\ndescription: Watering and repotting the house plants\n---\nWater the orchids with rainwater every ten days.\n",
    )
    .unwrap();
    let cfg = common::config_with(
        &fake.url,
        &format!("workspace = {:?}\n", ws.to_str().unwrap()),
    );
    // config_with ends [agents.defaults] with the extra lines: workspace belongs there
    let models = common::models_dir();
    let d = common::Daemon::start_env(
        dir.path(),
        &cfg,
        &[("HEARTH_MODELS_DIR", models.to_str().unwrap())],
    );
    let c = d.client().await;
    let st = c.request("status", serde_json::json!({})).await.unwrap();
    assert_eq!(st["memory"]["mode"], "hybrid", "{st}");

    // a tool call from the model
    let r = common::send(
        &c,
        "main",
        "[tool:memory_search:where can I find a key to get in]",
        "m1",
    )
    .await;
    let done = common::terminal(&c, r["runId"].as_str().unwrap()).await;
    let text = common::text_of(&done);
    assert!(
        text.contains("memory/2026-11-20.md") && text.contains("flower pot"),
        "{text}"
    );
    assert!(
        !text.contains("sessions/"),
        "the question just asked is not a memory: {text}"
    );

    // only the skills index is in the prompt; the model reads a skill on demand
    let reqs = fake.log.all();
    let system = reqs[0]["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        system.contains(
            "plant-care: Watering and repotting the house plants (skills/plants/SKILL.md)"
        ),
        "{system}"
    );
    assert!(!system.contains("rainwater"));
    let r = common::send(&c, "main", "[tool:read:skills/plants/SKILL.md]", "m2").await;
    let done = common::terminal(&c, r["runId"].as_str().unwrap()).await;
    assert!(common::text_of(&done).contains("rainwater"), "{done}");

    // /context sizes each part of the next call
    let r = common::send(&c, "main", "/context detail", "m3").await;
    let report = r["context"].as_str().unwrap_or("").to_string();
    assert!(
        report.contains("- workspace files:") && report.contains("- skills index:"),
        "{r}"
    );
    assert!(
        report.contains("- memory_search: ") && report.contains("- MEMORY.md: "),
        "{report}"
    );
    assert!(report.contains("- conversation: "), "{report}");

    // the gateway method
    let r = c
        .request(
            "memory.search",
            serde_json::json!({"query": "what is our surname", "maxResults": 2}),
        )
        .await
        .unwrap();
    assert_eq!(r["mode"], "hybrid");
    assert_eq!(r["results"][0]["path"], "MEMORY.md", "{r}");
    let bad = c
        .request("memory.search", serde_json::json!({"query": ""}))
        .await;
    assert!(bad.is_err());

    // the CLI while the daemon holds the index: answered through the gateway
    let hits = common::cli_json(
        &d,
        &["memory", "search", "spare key", "--json"],
        &[("HEARTH_MODELS_DIR", &models)],
    );
    assert_eq!(hits[0]["path"], "memory/2026-11-20.md", "{hits}");
    let mut d = d;
    assert_eq!(d.term(), Some(0));
    drop(fake);
}

#[test]
fn a_corrupt_index_file_is_set_aside_and_rebuilt_from_the_notes() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(
        ws.join("MEMORY.md"),
        "The bread maker recipe uses 500 g of flour.\n",
    )
    .unwrap();
    let idx_dir = dir.path().join("idx");
    let mut idx = MemoryIndex::open(&idx_dir, None, MemoryConfig::default()).unwrap();
    idx.reindex(&ws).unwrap();
    drop(idx);
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(idx_dir.join("index.redb"), garbage).unwrap();
    let mut idx = MemoryIndex::open(&idx_dir, None, MemoryConfig::default()).unwrap();
    assert_eq!(idx.len().unwrap(), 0);
    let s = idx.reindex(&ws).unwrap();
    assert_eq!(s.chunks_added, 1);
    assert_eq!(
        idx.search("bread flour", None).unwrap()[0].path,
        "MEMORY.md"
    );
    let aside = std::fs::read_dir(&idx_dir).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("index.redb.corrupt-")
    });
    assert!(aside, "the damaged file is kept beside the new one");
}

#[test]
fn chunks_indexed_without_the_model_get_vectors_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("memory")).unwrap();
    for d in 1..=5 {
        std::fs::write(
            ws.join(format!("memory/2026-11-0{d}.md")),
            format!("Note {d}: the recycling centre opens at {d} o'clock.\n"),
        )
        .unwrap();
    }
    let mut idx =
        MemoryIndex::open(&dir.path().join("idx"), None, MemoryConfig::default()).unwrap();
    let s = idx.reindex(&ws).unwrap();
    assert_eq!((s.chunks_added, s.embedded), (5, 0));
    drop(idx);
    let mut idx = MemoryIndex::open(
        &dir.path().join("idx"),
        Some(embedder()),
        MemoryConfig::default(),
    )
    .unwrap();
    let s = idx.reindex(&ws).unwrap();
    assert_eq!(
        (s.files_changed, s.chunks_added, s.embedded),
        (0, 0, 5),
        "{s:?}"
    );
    let s = idx.reindex(&ws).unwrap();
    assert_eq!(s.embedded, 0);
    assert_eq!(idx.mode(), Mode::Hybrid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_transcripts_are_searchable_as_they_grow() {
    let fake = common::FakeOpenAi::start().await;
    let dir = tempfile::tempdir().unwrap();
    // no models: BM25 only, which is enough to find exact words
    let mut d = common::Daemon::start(dir.path(), &common::config_with(&fake.url, ""));
    let c = d.client().await;
    let ask = |q: &'static str| {
        let c = &c;
        async move {
            c.request("memory.search", serde_json::json!({"query": q}))
                .await
                .unwrap()["results"]
                .clone()
        }
    };
    let r = common::send(&c, "main", "My bike lock combination is 3-1-4", "s1").await;
    common::terminal(&c, r["runId"].as_str().unwrap()).await;
    let hits = ask("bike lock combination").await;
    let path = hits[0]["path"].as_str().unwrap().to_string();
    assert!(path.starts_with("sessions/agent:main:"), "{hits}");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("user: My bike lock combination is 3-1-4"),
        "{hits}"
    );

    // the transcript grows: the next message is found too, and only the
    // transcript's new chunk is added
    let r = common::send(&c, "main", "The plumber comes on Friday at nine", "s2").await;
    common::terminal(&c, r["runId"].as_str().unwrap()).await;
    let stats = c
        .request("memory.reindex", serde_json::json!({}))
        .await
        .unwrap()["stats"]
        .clone();
    // (one small transcript: its single chunk is replaced)
    assert_eq!(
        (
            stats["files_changed"].as_u64(),
            stats["chunks_added"].as_u64()
        ),
        (Some(1), Some(1)),
        "{stats}"
    );
    let hits = ask("plumber friday").await;
    assert_eq!(hits[0]["path"], path.as_str(), "{hits}");
    assert!(
        hits[0]["snippet"].as_str().unwrap().contains("plumber"),
        "{hits}"
    );

    // a reset keeps the old conversation searchable
    let r = common::send(&c, "main", "/new", "s3").await;
    assert_eq!(r["reset"], true);
    assert_eq!(ask("bike lock").await[0]["path"], path.as_str());

    // and the CLI without a daemon reads the transcripts itself
    assert_eq!(d.term(), Some(0));
    let no_models = dir.path().join("no-models");
    let hits = common::cli_json(
        &d,
        &["memory", "search", "plumber", "--json"],
        &[("HEARTH_MODELS_DIR", &no_models)],
    );
    assert_eq!(hits[0]["path"], path.as_str(), "{hits}");
}
