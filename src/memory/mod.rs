//! Agent memory: the workspace's `MEMORY.md` and `memory/**/*.md` files are
//! the source of truth; this module keeps a search index over them.
//!
//! - [`chunk`]: line-aligned ~400-token chunks with 80 tokens of overlap.
//! - [`index`]: per agent, chunk records and int8 embeddings in a redb file
//!   and a tantivy BM25 index beside it, both under
//!   `<state>/memory/<agent>/`; incremental by chunk content hash; the
//!   tantivy index is derived from redb and rebuilt when they disagree
//!   (after a kill mid-write).
//! - [`rank`]: hybrid score, recency decay, MMR.
//! - [`service`]: the daemon's handle: lazy indexes and embedder, the
//!   `memory_search` / `memory_get` tools.
//! - [`sessions`]: session transcripts as a source (`sessions/<key>`),
//!   rendered from the state database as they grow.
//!
//! Without the embedding model the index is BM25 only and says so
//! ([`index::MemoryIndex::mode`]).

pub mod bench;
pub mod chunk;
pub mod index;
pub mod rank;
pub mod service;
pub mod sessions;

use std::path::{Path, PathBuf};

/// One search result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    /// Workspace-relative path.
    pub path: String,
    /// 1-based inclusive line range.
    pub from: usize,
    pub to: usize,
    pub score: f32,
    pub snippet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory index at {path}: {why}")]
    Index { path: PathBuf, why: String },
    #[error("the memory index at {0} is in use by another process (a running daemon?)")]
    Busy(PathBuf),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("{0}")]
    BadRequest(String),
}

/// Path prefix of indexed session transcripts (`sessions/<session key>`).
pub const SESSIONS_DIR: &str = "sessions/";

/// Session transcripts for the index, besides the workspace files.
pub trait Transcripts {
    /// (path under [`SESSIONS_DIR`], entry count, last update in ms) of
    /// each transcript the index should hold; a changed count or time
    /// reindexes it.
    fn list(&self) -> Vec<(String, u64, u64)>;
    /// The transcript as text (one line or more per message).
    fn text(&self, path: &str) -> Option<String>;
}

/// The memory files of a workspace: `MEMORY.md` (or `memory.md`) and every
/// `*.md` under `memory/`, as sorted workspace-relative paths. Symlinks are
/// not followed (the file tools' confinement rule).
pub fn memory_files(workspace: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["MEMORY.md", "memory.md"] {
        let p = workspace.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            out.push(name.to_string());
            break;
        }
    }
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>, depth: usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = format!("{rel}/{name}");
            if ft.is_dir() && depth < 8 {
                walk(&e.path(), &r, out, depth + 1);
            } else if ft.is_file() && name.ends_with(".md") {
                out.push(r);
            }
        }
    }
    let dir = workspace.join("memory");
    // a `memory` link is not followed either
    if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        walk(&dir, "memory", &mut out, 0);
    }
    out.sort();
    out
}

/// Lines `from..from+lines` (1-based) of a memory file, for `memory_get`.
/// Only memory files can be read this way.
pub fn get(workspace: &Path, path: &str, from: usize, lines: usize) -> Result<String, MemoryError> {
    let ok = path == "MEMORY.md"
        || path == "memory.md"
        || (path.starts_with("memory/") && path.ends_with(".md"));
    if !ok {
        return Err(MemoryError::BadRequest(format!(
            "{path:?} is not a memory file (MEMORY.md or memory/*.md)"
        )));
    }
    let bytes = crate::tool::fs::read_file(workspace, path)
        .map_err(|e| MemoryError::BadRequest(format!("cannot read {path}: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let from = from.max(1);
    Ok(text
        .lines()
        .skip(from - 1)
        .take(lines.max(1))
        .collect::<Vec<_>>()
        .join("\n"))
}
