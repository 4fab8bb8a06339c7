//! The daemon's memory: one lazily opened index per agent, one shared
//! embedder (loaded on first use), the `memory_search` / `memory_get` tools.
//!
//! Every call is blocking (redb, tantivy, candle): callers run it on the
//! blocking pool. A search first brings the index up to date with a cheap
//! scan (size and mtime of each memory file), so edits made outside Hearth
//! are found without a file watcher.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use super::index::{MemoryIndex, Mode, ReindexStats};
use super::sessions::StoreTranscripts;
use super::{Hit, MemoryError};
use crate::config::{MemoryConfig, ModelsConfig};
use crate::models::embed::{BertEmbedder, Embedder};
use crate::store::Store;
use crate::tool::{Tool, ToolCx, ToolFuture, ToolSpec};

/// Lines `memory_get` returns when not told.
const GET_LINES: usize = 40;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "memory_search".into(),
            description: "Search your long-term memory (MEMORY.md, the daily notes in memory/ and \
                          past conversations under sessions/) by meaning and keywords. Returns ranked snippets with path and line range."
                .into(),
            parameters: json!({"type":"object","properties":{
                "query":{"type":"string"},
                "max_results":{"type":"integer","minimum":1,"maximum":20}},
                "required":["query"],"additionalProperties":false}),
        },
        ToolSpec {
            name: "memory_get".into(),
            description: "Read lines of a memory file (MEMORY.md, memory/*.md, or a past \
                          conversation sessions/<key>), e.g. around a \
                          memory_search result. from is 1-based; lines defaults to 40."
                .into(),
            parameters: json!({"type":"object","properties":{
                "path":{"type":"string"},
                "from":{"type":"integer","minimum":1},
                "lines":{"type":"integer","minimum":1,"maximum":400}},
                "required":["path"],"additionalProperties":false}),
        },
    ]
}

/// One memory tool for the registry (group `memory`).
pub struct MemoryTool {
    spec: ToolSpec,
    memory: Memory,
}

/// `memory_search` and `memory_get` over this memory.
pub fn tools(memory: &Memory) -> Vec<Arc<dyn Tool>> {
    specs()
        .into_iter()
        .map(|spec| {
            Arc::new(MemoryTool {
                spec,
                memory: memory.clone(),
            }) as Arc<dyn Tool>
        })
        .collect()
}

impl Tool for MemoryTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn group(&self) -> &'static str {
        "memory"
    }
    fn call<'a>(&'a self, cx: &'a ToolCx, args: Value) -> ToolFuture<'a> {
        let (mem, name) = (self.memory.clone(), self.spec.name.clone());
        let (aid, ws, key) = (
            cx.agent_id.clone(),
            cx.workspace.clone(),
            cx.session_key.clone(),
        );
        Box::pin(crate::tool::blocking(move || {
            mem.tool(&aid, &ws, Some(&key), &name, &args.to_string())
        }))
    }
}

/// Loads the embedding model memory search uses (the `[models]` dir
/// search order); the error says why there is none.
pub fn load_embedder(models: &ModelsConfig, state_dir: &Path) -> Result<Arc<dyn Embedder>, String> {
    let dir = crate::models::find_dir(models.dir.as_deref(), state_dir)
        .ok_or("no models directory found")?;
    BertEmbedder::load(&dir.join(crate::models::EMBED_DIR), models.threads)
        .map(|e| Arc::new(e) as Arc<dyn Embedder>)
        .map_err(|e| e.to_string())
}

struct Inner {
    state_dir: PathBuf,
    cfg: MemoryConfig,
    models: ModelsConfig,
    embedder: OnceLock<Option<Arc<dyn Embedder>>>,
    indexes: Mutex<HashMap<String, Arc<Mutex<MemoryIndex>>>>,
    /// Session transcripts are indexed from here (`[memory] index_sessions`).
    store: Option<Store>,
}

/// Shared handle (cheap to clone).
#[derive(Clone)]
pub struct Memory(Arc<Inner>);

impl Memory {
    pub fn config(&self) -> &MemoryConfig {
        &self.0.cfg
    }

    /// `store`: the state database, whose session transcripts are indexed
    /// too (unless `index_sessions` is off).
    pub fn new(
        state_dir: &Path,
        cfg: MemoryConfig,
        models: ModelsConfig,
        store: Option<Store>,
    ) -> Memory {
        let store = store.filter(|_| cfg.index_sessions);
        Memory(Arc::new(Inner {
            state_dir: state_dir.to_path_buf(),
            cfg,
            models,
            embedder: OnceLock::new(),
            indexes: Mutex::new(HashMap::new()),
            store,
        }))
    }

    /// Reindex of one locked index: workspace files, and this agent's
    /// transcripts when there is a store.
    fn update(
        &self,
        idx: &mut MemoryIndex,
        agent: &str,
        workspace: &Path,
    ) -> Result<ReindexStats, MemoryError> {
        match &self.0.store {
            Some(store) => idx.reindex_with(workspace, Some(&StoreTranscripts { store, agent })),
            None => idx.reindex(workspace),
        }
    }

    fn embedder(&self) -> Option<Arc<dyn Embedder>> {
        self.0
            .embedder
            .get_or_init(|| {
                load_embedder(&self.0.models, &self.0.state_dir)
                    .map_err(|why| tracing::warn!("memory: {why}; memory search is BM25 only"))
                    .ok()
            })
            .clone()
    }

    fn index(&self, agent: &str) -> Result<Arc<Mutex<MemoryIndex>>, MemoryError> {
        let mut map = self.0.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = map.get(agent) {
            return Ok(i.clone());
        }
        let dir = self.0.state_dir.join("memory").join(agent);
        let idx = Arc::new(Mutex::new(MemoryIndex::open(
            &dir,
            self.embedder(),
            self.0.cfg.clone(),
        )?));
        map.insert(agent.to_string(), idx.clone());
        Ok(idx)
    }

    /// Brings `agent`'s index up to date with its workspace.
    pub fn reindex(&self, agent: &str, workspace: &Path) -> Result<ReindexStats, MemoryError> {
        let idx = self.index(agent)?;
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        self.update(&mut idx, agent, workspace)
    }

    /// Reindexes (cheap when nothing changed), then searches.
    pub fn search(
        &self,
        agent: &str,
        workspace: &Path,
        query: &str,
        max_results: Option<usize>,
    ) -> Result<Vec<Hit>, MemoryError> {
        let idx = self.index(agent)?;
        let mut idx = idx.lock().unwrap_or_else(|p| p.into_inner());
        self.update(&mut idx, agent, workspace)?;
        idx.search(query, max_results)
    }

    /// [`search`](Self::search) for a session's agent: hits in the part of
    /// that session's own transcript that is still in its context (the
    /// question just asked, the turns the model sees anyway) are left out.
    pub fn search_from(
        &self,
        agent: &str,
        workspace: &Path,
        session: Option<&str>,
        query: &str,
        max_results: Option<usize>,
    ) -> Result<Vec<Hit>, MemoryError> {
        let (Some(key), Some(store)) = (session, &self.0.store) else {
            return self.search(agent, workspace, query, max_results);
        };
        let max = max_results.unwrap_or(self.0.cfg.max_results);
        // the first line of the transcript's rendering that is in context
        // (an empty context, after a reset: everything is before it)
        let start = match store
            .transcripts()
            .context(key, crate::store::CONTEXT_ENTRIES)
        {
            Ok(c) => match c.entries.first() {
                Some((i, _)) => *i,
                None => u64::MAX,
            },
            Err(_) => 0,
        };
        let cut = store
            .transcripts()
            .before(key, start)
            .map_or(0, |e| super::sessions::render(&e).lines().count());
        let own = format!("{}{key}", super::SESSIONS_DIR);
        let hits = self.search(agent, workspace, query, Some((max * 3).min(50)))?;
        Ok(hits
            .into_iter()
            .filter(|h| h.path != own || h.from <= cut)
            .take(max)
            .collect())
    }

    /// "hybrid", "bm25_only", or "not loaded" (nothing searched yet).
    pub fn mode(&self) -> &'static str {
        match self.0.embedder.get() {
            None => "not loaded",
            Some(Some(_)) => "hybrid",
            Some(None) => "bm25_only",
        }
    }

    /// For `status`: the search mode, and why.
    pub fn describe(&self) -> Value {
        match self.0.embedder.get() {
            Some(Some(_)) => json!({"mode": "hybrid"}),
            Some(None) => {
                json!({"mode": "bm25_only", "reason": "the embedding model could not be loaded (see the log)"})
            }
            None => {
                let dir = crate::models::find_dir(self.0.models.dir.as_deref(), &self.0.state_dir);
                let present = dir.is_some_and(|d| {
                    d.join(crate::models::EMBED_DIR)
                        .join("model.safetensors")
                        .is_file()
                });
                if present {
                    json!({"mode": "hybrid", "note": "the embedding model loads on the first search"})
                } else {
                    json!({"mode": "bm25_only", "reason": "embedding model not found (scripts/fetch-models, or install hearth-models)"})
                }
            }
        }
    }

    /// Runs a memory tool; the result is what the model sees.
    /// `session`: the calling session, whose current context is left out of
    /// `memory_search` results (see [`search_from`](Self::search_from)).
    pub fn tool(
        &self,
        agent: &str,
        workspace: &Path,
        session: Option<&str>,
        name: &str,
        args: &str,
    ) -> Result<String, String> {
        let v: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
            .map_err(|e| format!("invalid arguments: {e}"))?;
        match name {
            "memory_search" => {
                let q = v["query"]
                    .as_str()
                    .ok_or("invalid arguments: query is required")?;
                let max = v["max_results"].as_u64().map(|n| n as usize);
                let hits = self
                    .search_from(agent, workspace, session, q, max)
                    .map_err(|e| e.to_string())?;
                if hits.is_empty() {
                    return Ok("No matching memories.".into());
                }
                Ok(serde_json::to_string(&hits).expect("hits serialize"))
            }
            "memory_get" => {
                let p = v["path"]
                    .as_str()
                    .ok_or("invalid arguments: path is required")?;
                let from = v["from"].as_u64().unwrap_or(1) as usize;
                let lines = v["lines"].as_u64().map_or(GET_LINES, |n| n as usize);
                if let Some(key) = p.strip_prefix(super::SESSIONS_DIR) {
                    // only this agent's own conversations
                    let store = self
                        .0
                        .store
                        .as_ref()
                        .ok_or("session transcripts are not indexed")?;
                    let owner = store.sessions().get(key).ok().flatten().map(|m| m.agent_id);
                    if owner.as_deref() != Some(agent) {
                        return Err(format!("no session {key:?}"));
                    }
                    return super::sessions::get(store, p, from, lines).map_err(|e| e.to_string());
                }
                super::get(workspace, p, from, lines).map_err(|e| e.to_string())
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    }
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Bm25Only => "bm25_only",
        }
    }
}
