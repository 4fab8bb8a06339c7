//! One agent's memory index: chunk records and embeddings in redb, BM25 in
//! tantivy.
//!
//! redb (`index.redb`) is the index's own source of truth: chunk records
//! (path, lines, content hash, text), their int8 embeddings, per-file
//! fingerprints, and a generation counter bumped by every change. tantivy
//! (`bm25/`) is derived from it: after each tantivy commit a marker file
//! (`bm25/hearth-generation`) records the redb generation it matches. Writes go redb first, then tantivy;
//! a kill between the two leaves tantivy behind, which [`MemoryIndex::open`]
//! notices (marker != generation) and repairs by rebuilding tantivy from
//! the chunk texts in redb (no re-embedding).
//!
//! Incremental: a file whose size and mtime are unchanged is skipped; a
//! changed file is re-chunked and only chunks whose content hash is new are
//! embedded and added, chunks no longer present are removed, the rest keep
//! their ids (their line range is updated).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::chunk::chunk;
use super::rank::{self, Candidate};
use super::{memory_files, Hit, MemoryError, Transcripts, SESSIONS_DIR};
use crate::config::MemoryConfig;
use crate::models::embed::Embedder;

const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
const VECTORS: TableDefinition<u64, &[u8]> = TableDefinition::new("vectors");
const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Candidates taken from each of BM25 and vector search before ranking.
const POOL: usize = 50;
/// Texts embedded per call while indexing.
const EMBED_BATCH: usize = 32;
/// Marker file in `bm25/`: the redb generation the index matches.
const GEN_FILE: &str = "hearth-generation";
/// Longest query accepted (a question, not a document).
const MAX_QUERY: usize = 2_000;
/// Characters of a chunk shown as a result's snippet.
const SNIPPET: usize = 700;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkRec {
    path: String,
    from: usize,
    to: usize,
    hash: u64,
    text: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileRec {
    size: u64,
    mtime_ns: u128,
    chunks: Vec<u64>,
}

/// Chunks written per redb transaction / tantivy commit while indexing.
const BATCH: usize = 2000;

/// A reindex batch not written yet.
#[derive(Default)]
struct Pending {
    next_id: u64,
    /// (path, Some(new file record) | None = file removed)
    files: Vec<(String, Option<FileRec>)>,
    /// kept chunks (line range may have moved)
    put: Vec<(u64, ChunkRec)>,
    new: Vec<(u64, ChunkRec)>,
    removed: Vec<u64>,
    /// chunks without a vector, embedded a batch per flush
    unembedded: Vec<u64>,
}

/// What a reindex did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct ReindexStats {
    pub files: usize,
    pub files_changed: usize,
    pub files_removed: usize,
    pub chunks_added: usize,
    pub chunks_removed: usize,
    pub chunks_kept: usize,
    /// Chunks that got an embedding (new ones, or old ones indexed while the
    /// model was missing).
    pub embedded: usize,
}

/// Hybrid (BM25 + vectors) or BM25 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Hybrid,
    Bm25Only,
}

/// In-memory copy of the int8 vectors for brute-force search.
#[derive(Default)]
struct Vectors {
    dim: usize,
    ids: Vec<u64>,
    scales: Vec<f32>,
    data: Vec<i8>,
    pos: HashMap<u64, usize>,
}

impl Vectors {
    fn insert(&mut self, id: u64, scale: f32, q: &[i8]) {
        if self.dim == 0 {
            self.dim = q.len();
        }
        if q.len() != self.dim {
            return;
        }
        if let Some(&p) = self.pos.get(&id) {
            self.scales[p] = scale;
            self.data[p * self.dim..(p + 1) * self.dim].copy_from_slice(q);
            return;
        }
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        self.scales.push(scale);
        self.data.extend_from_slice(q);
    }

    fn remove(&mut self, id: u64) {
        let Some(p) = self.pos.remove(&id) else {
            return;
        };
        let last = self.ids.len() - 1;
        if p != last {
            let moved = self.ids[last];
            self.ids[p] = moved;
            self.scales[p] = self.scales[last];
            self.data
                .copy_within(last * self.dim..(last + 1) * self.dim, p * self.dim);
            self.pos.insert(moved, p);
        }
        self.ids.pop();
        self.scales.pop();
        self.data.truncate(last * self.dim);
    }

    /// Cosine of row `p` with a query quantized by [`quantize`].
    fn cosine(&self, p: usize, q: &(f32, Vec<i8>)) -> f32 {
        let row = &self.data[p * self.dim..(p + 1) * self.dim];
        hearth_kernels::dot_i8(row, &q.1) as f32 * self.scales[p] * q.0
    }

    /// Cosine of every row with the quantized query (one pass over memory).
    fn cosines(&self, q: &(f32, Vec<i8>)) -> Vec<f32> {
        let mut dots = Vec::with_capacity(self.ids.len());
        hearth_kernels::dots_i8(&self.data, &q.1, &mut dots);
        dots.iter()
            .zip(&self.scales)
            .map(|(&d, &s)| d as f32 * s * q.0)
            .collect()
    }

    fn unit(&self, p: usize) -> Vec<f32> {
        let s = self.scales[p];
        self.data[p * self.dim..(p + 1) * self.dim]
            .iter()
            .map(|&a| a as f32 * s)
            .collect()
    }
}

/// int8 with one scale per vector: 384 dims → 388 bytes instead of 1,536.
fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    let scale = max / 127.0;
    (scale, v.iter().map(|x| (x / scale).round() as i8).collect())
}

fn enc_vec(scale: f32, q: &[i8]) -> Vec<u8> {
    let mut b = scale.to_le_bytes().to_vec();
    b.extend(q.iter().map(|&x| x as u8));
    b
}

fn dec_vec(b: &[u8]) -> Option<(f32, Vec<i8>)> {
    if b.len() < 4 {
        return None;
    }
    let scale = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    Some((scale, b[4..].iter().map(|&x| x as i8).collect()))
}

fn hash(text: &str) -> u64 {
    // FNV-1a: stable across builds (std's hasher is not)
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Fields {
    id: Field,
    path: Field,
    text: Field,
}

/// One agent's memory index.
pub struct MemoryIndex {
    dir: PathBuf,
    db: Database,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    vectors: Vectors,
    embedder: Option<Arc<dyn Embedder>>,
    cfg: MemoryConfig,
}

impl MemoryIndex {
    /// Opens (or creates) the index in `dir`, repairing tantivy from redb
    /// when a kill left them apart.
    pub fn open(
        dir: &Path,
        embedder: Option<Arc<dyn Embedder>>,
        cfg: MemoryConfig,
    ) -> Result<MemoryIndex, MemoryError> {
        let err = |why: String| MemoryError::Index {
            path: dir.to_path_buf(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db_path = dir.join("index.redb");
        // small cache: searches read ~100 records; the vectors live in memory
        let create = || Database::builder().set_cache_size(2 << 20).create(&db_path);
        let db = match create() {
            Ok(d) => d,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(MemoryError::Busy(db_path))
            }
            // permissions, a full disk: not damage, so not a reason to rebuild
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(err(e.to_string()))
            }
            Err(e) => {
                // The index is derived from the workspace files: set the
                // damaged file aside (for a post-mortem) and start again;
                // the next reindex rebuilds it.
                let aside = dir.join(format!("index.redb.corrupt-{}", crate::util::today()));
                tracing::warn!(
                    "memory: index {} is unreadable ({e}); moved to {} and rebuilding",
                    db_path.display(),
                    aside.display()
                );
                std::fs::rename(&db_path, &aside).map_err(|e| err(e.to_string()))?;
                let _ = std::fs::remove_dir_all(dir.join("bm25"));
                create().map_err(|e| err(e.to_string()))?
            }
        };
        {
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            for t in [CHUNKS, VECTORS] {
                w.open_table(t).map_err(|e| err(e.to_string()))?;
            }
            w.open_table(FILES).map_err(|e| err(e.to_string()))?;
            w.open_table(META).map_err(|e| err(e.to_string()))?;
            w.commit().map_err(|e| err(e.to_string()))?;
        }
        let mut sb = Schema::builder();
        let id = sb.add_u64_field("id", INDEXED | STORED | FAST);
        let path = sb.add_text_field("path", tantivy::schema::STRING | STORED);
        let text = sb.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("en_stem")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            ),
        );
        let schema = sb.build();
        let bm25_dir = dir.join("bm25");
        let open_index = || -> tantivy::Result<Index> {
            std::fs::create_dir_all(&bm25_dir)?;
            let d = tantivy::directory::MmapDirectory::open(&bm25_dir)?;
            Index::open_or_create(d, schema.clone())
        };
        let index = match open_index() {
            Ok(i) => i,
            Err(e) => {
                // derived data: start it again from redb
                tracing::warn!(
                    "memory: BM25 index at {} unreadable ({e}); rebuilding",
                    bm25_dir.display()
                );
                let _ = std::fs::remove_dir_all(&bm25_dir);
                open_index().map_err(|e| err(e.to_string()))?
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e: tantivy::TantivyError| err(e.to_string()))?;
        let mut me = MemoryIndex {
            dir: dir.to_path_buf(),
            db,
            index,
            reader,
            fields: Fields { id, path, text },
            vectors: Vectors::default(),
            embedder,
            cfg,
        };
        me.load_vectors()?;
        let gen = me.generation()?;
        if me.bm25_generation() != Some(gen) {
            if gen > 0 {
                tracing::info!(
                    "memory: BM25 index behind its records in {}; rebuilding it",
                    dir.display()
                );
            }
            me.rebuild_bm25(gen)?;
        }
        Ok(me)
    }

    /// Attaches (or detaches) the embedder after opening, e.g. once it is
    /// known that the index is not held by a running daemon.
    pub fn set_embedder(&mut self, embedder: Option<Arc<dyn Embedder>>) {
        self.embedder = embedder;
    }

    pub fn mode(&self) -> Mode {
        if self.embedder.is_some() {
            Mode::Hybrid
        } else {
            Mode::Bm25Only
        }
    }

    /// Documents in the BM25 index (equal to [`len`](Self::len) when the
    /// two agree).
    pub fn bm25_len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Number of chunks indexed.
    pub fn len(&self) -> Result<u64, MemoryError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(CHUNKS).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    pub fn is_empty(&self) -> Result<bool, MemoryError> {
        Ok(self.len()? == 0)
    }

    fn err(&self, e: impl std::fmt::Display) -> MemoryError {
        MemoryError::Index {
            path: self.dir.clone(),
            why: e.to_string(),
        }
    }

    fn generation(&self) -> Result<u64, MemoryError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(META).map_err(|e| self.err(e))?;
        Ok(t.get("generation")
            .map_err(|e| self.err(e))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The redb generation the BM25 index was last committed at, from the
    /// marker file written after each tantivy commit (tantivy's own commit
    /// payload does not survive its background merges).
    fn bm25_generation(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("bm25").join(GEN_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn load_vectors(&mut self) -> Result<(), MemoryError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(VECTORS).map_err(|e| self.err(e))?;
        let mut v = Vectors::default();
        let n = t.len().map_err(|e| self.err(e))? as usize;
        v.ids.reserve_exact(n);
        v.scales.reserve_exact(n);
        v.pos.reserve(n);
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, b) = row.map_err(|e| self.err(e))?;
            if let Some((s, q)) = dec_vec(b.value()) {
                if v.data.capacity() == 0 {
                    v.data.reserve_exact(n * q.len());
                }
                v.insert(k.value(), s, &q);
            }
        }
        self.vectors = v;
        Ok(())
    }

    fn writer(&self) -> Result<IndexWriter, MemoryError> {
        self.index
            .writer_with_num_threads(1, 15_000_000)
            .map_err(|e| self.err(e))
    }

    fn rebuild_bm25(&mut self, gen: u64) -> Result<(), MemoryError> {
        let w = self.writer()?;
        w.delete_all_documents().map_err(|e| self.err(e))?;
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(CHUNKS).map_err(|e| self.err(e))?;
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, b) = row.map_err(|e| self.err(e))?;
            let Ok(c) = serde_json::from_slice::<ChunkRec>(b.value()) else {
                continue;
            };
            self.add_doc(&w, k.value(), &c)?;
        }
        self.commit_bm25(w, gen)
    }

    fn add_doc(&self, w: &IndexWriter, id: u64, c: &ChunkRec) -> Result<(), MemoryError> {
        let f = &self.fields;
        w.add_document(doc!(f.id => id, f.path => c.path.clone(), f.text => c.text.clone()))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn commit_bm25(&mut self, mut w: IndexWriter, gen: u64) -> Result<(), MemoryError> {
        w.commit().map_err(|e| self.err(e))?;
        w.wait_merging_threads().map_err(|e| self.err(e))?;
        // marker last: a kill before it means "rebuild", never "trust"
        let marker = self.dir.join("bm25").join(GEN_FILE);
        let tmp = marker.with_extension("tmp");
        std::fs::write(&tmp, gen.to_string())
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &marker))
            .map_err(|e| self.err(e))?;
        self.reader.reload().map_err(|e| self.err(e))
    }

    fn chunk_recs(&self, ids: &[u64]) -> Result<Vec<(u64, ChunkRec)>, MemoryError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(CHUNKS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for &id in ids {
            if let Some(v) = t.get(id).map_err(|e| self.err(e))? {
                if let Ok(c) = serde_json::from_slice::<ChunkRec>(v.value()) {
                    out.push((id, c));
                }
            }
        }
        Ok(out)
    }

    /// Brings the index up to date with the workspace's memory files
    /// (transcripts already indexed are left as they are).
    pub fn reindex(&mut self, workspace: &Path) -> Result<ReindexStats, MemoryError> {
        self.reindex_with(workspace, None)
    }

    /// [`reindex`](Self::reindex), plus the session transcripts of
    /// `transcripts` (under `sessions/`); transcripts no longer listed are
    /// removed.
    ///
    /// Work is written in batches of about [`BATCH`] chunks (each one redb
    /// transaction, then a tantivy commit), so a first index of a large
    /// workspace needs memory for one batch, not for all of it.
    pub fn reindex_with(
        &mut self,
        workspace: &Path,
        transcripts: Option<&dyn Transcripts>,
    ) -> Result<ReindexStats, MemoryError> {
        let mut stats = ReindexStats::default();
        // (path, size, stamp): a file's size and mtime, a transcript's
        // entry count and last update
        let mut sources: Vec<(String, u64, u128)> = Vec::new();
        for path in memory_files(workspace) {
            let Ok(md) = std::fs::metadata(workspace.join(&path)) else {
                continue;
            };
            let mtime_ns = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            sources.push((path, md.len(), mtime_ns));
        }
        if let Some(t) = transcripts {
            sources.extend(t.list().into_iter().map(|(p, n, ts)| (p, n, ts as u128)));
        }
        stats.files = sources.len();
        let (old_files, next_id) = {
            let r = self.db.begin_read().map_err(|e| self.err(e))?;
            let t = r.open_table(FILES).map_err(|e| self.err(e))?;
            let mut m: HashMap<String, FileRec> = HashMap::new();
            for row in t.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                m.insert(
                    k.value().to_string(),
                    serde_json::from_slice(v.value()).unwrap_or_default(),
                );
            }
            let meta = r.open_table(META).map_err(|e| self.err(e))?;
            let next = meta
                .get("next_id")
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(1);
            (m, next)
        };
        let mut p = Pending {
            next_id,
            ..Pending::default()
        };
        // chunks indexed while the embedding model was missing get vectors
        // now (the scan runs only when some chunk lacks one: every daemon
        // search reindexes first)
        if self.embedder.is_some() && self.vectors.ids.len() as u64 != self.len()? {
            let r = self.db.begin_read().map_err(|e| self.err(e))?;
            let t = r.open_table(CHUNKS).map_err(|e| self.err(e))?;
            for row in t.iter().map_err(|e| self.err(e))? {
                let (k, _) = row.map_err(|e| self.err(e))?;
                if !self.vectors.pos.contains_key(&k.value()) {
                    p.unembedded.push(k.value());
                }
            }
        }
        for (path, size, mtime_ns) in &sources {
            let (size, mtime_ns) = (*size, *mtime_ns);
            let old = old_files.get(path);
            if old.is_some_and(|o| o.size == size && o.mtime_ns == mtime_ns) {
                stats.chunks_kept += old.map_or(0, |o| o.chunks.len());
                continue;
            }
            let text = if path.starts_with(SESSIONS_DIR) {
                match transcripts.and_then(|t| t.text(path)) {
                    Some(t) => t,
                    None => continue,
                }
            } else {
                match crate::tool::fs::read_file(workspace, path) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => {
                        tracing::warn!("memory: cannot read {path}: {e}");
                        continue;
                    }
                }
            };
            stats.files_changed += 1;
            let mut by_hash: HashMap<u64, Vec<u64>> = HashMap::new();
            for (id, c) in self.chunk_recs(old.map_or(&[][..], |o| &o.chunks))? {
                by_hash.entry(c.hash).or_default().push(id);
            }
            let mut ids = Vec::new();
            for ch in chunk(&text, self.cfg.chunk_tokens, self.cfg.chunk_overlap) {
                let h = hash(&ch.text);
                let rec = ChunkRec {
                    path: path.clone(),
                    from: ch.from,
                    to: ch.to,
                    hash: h,
                    text: ch.text,
                };
                match by_hash.get_mut(&h).and_then(|v| v.pop()) {
                    Some(id) => {
                        stats.chunks_kept += 1;
                        p.put.push((id, rec)); // its line range may have moved
                        ids.push(id);
                    }
                    None => {
                        let id = p.next_id;
                        p.next_id += 1;
                        stats.chunks_added += 1;
                        p.new.push((id, rec));
                        ids.push(id);
                    }
                }
            }
            for left in by_hash.into_values().flatten() {
                stats.chunks_removed += 1;
                p.removed.push(left);
            }
            p.files.push((
                path.clone(),
                Some(FileRec {
                    size,
                    mtime_ns,
                    chunks: ids,
                }),
            ));
            if p.new.len() + p.put.len() >= BATCH {
                self.flush(&mut p, &mut stats)?;
            }
        }
        let listed: std::collections::HashSet<&str> =
            sources.iter().map(|(p, _, _)| p.as_str()).collect();
        for (path, rec) in &old_files {
            // without a transcript source, indexed transcripts stay
            let kept_aside = transcripts.is_none() && path.starts_with(SESSIONS_DIR);
            if !listed.contains(path.as_str()) && !kept_aside {
                stats.files_removed += 1;
                stats.chunks_removed += rec.chunks.len();
                p.removed.extend(rec.chunks.iter().copied());
                p.files.push((path.clone(), None));
            }
        }
        self.flush(&mut p, &mut stats)?;
        while !p.unembedded.is_empty() {
            self.flush(&mut p, &mut stats)?;
        }
        Ok(stats)
    }

    /// Writes one batch: embeddings for its new chunks (and up to a batch of
    /// chunks that have none), redb in one transaction, then tantivy.
    fn flush(&mut self, p: &mut Pending, stats: &mut ReindexStats) -> Result<(), MemoryError> {
        let mut to_embed: Vec<(u64, String)> =
            p.new.iter().map(|(id, c)| (*id, c.text.clone())).collect();
        if self.embedder.is_some() && !p.unembedded.is_empty() {
            let take = p.unembedded.len().min(BATCH);
            let ids: Vec<u64> = p.unembedded.drain(..take).collect();
            let removed: std::collections::HashSet<u64> = p.removed.iter().copied().collect();
            let ids: Vec<u64> = ids.into_iter().filter(|id| !removed.contains(id)).collect();
            to_embed.extend(
                self.chunk_recs(&ids)?
                    .into_iter()
                    .map(|(id, c)| (id, c.text)),
            );
        }
        let mut vecs: Vec<(u64, f32, Vec<i8>)> = Vec::new();
        if let Some(e) = &self.embedder {
            for batch in to_embed.chunks(EMBED_BATCH) {
                let texts: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
                let out = e
                    .embed(&texts)
                    .map_err(|e| MemoryError::Embed(e.to_string()))?;
                for ((id, _), v) in batch.iter().zip(out) {
                    let (s, q) = quantize(&v);
                    vecs.push((*id, s, q));
                }
            }
        }
        stats.embedded += vecs.len();
        if p.files.is_empty() && vecs.is_empty() && p.removed.is_empty() {
            return Ok(());
        }
        // redb first (one transaction), then tantivy with the new generation
        let gen = self.generation()? + 1;
        {
            let w = self.db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut c = w.open_table(CHUNKS).map_err(|e| self.err(e))?;
                let mut v = w.open_table(VECTORS).map_err(|e| self.err(e))?;
                for id in &p.removed {
                    c.remove(*id).map_err(|e| self.err(e))?;
                    v.remove(*id).map_err(|e| self.err(e))?;
                }
                for (id, rec) in p.put.iter().chain(&p.new) {
                    let b = serde_json::to_vec(rec).expect("chunk records serialize");
                    c.insert(*id, b.as_slice()).map_err(|e| self.err(e))?;
                }
                for (id, s, q) in &vecs {
                    v.insert(*id, enc_vec(*s, q).as_slice())
                        .map_err(|e| self.err(e))?;
                }
                let mut f = w.open_table(FILES).map_err(|e| self.err(e))?;
                for (path, rec) in &p.files {
                    match rec {
                        Some(r) => {
                            let b = serde_json::to_vec(r).expect("file records serialize");
                            f.insert(path.as_str(), b.as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        None => {
                            f.remove(path.as_str()).map_err(|e| self.err(e))?;
                        }
                    }
                }
                let mut m = w.open_table(META).map_err(|e| self.err(e))?;
                m.insert("next_id", p.next_id).map_err(|e| self.err(e))?;
                m.insert("generation", gen).map_err(|e| self.err(e))?;
            }
            w.commit().map_err(|e| self.err(e))?;
        }
        for id in &p.removed {
            self.vectors.remove(*id);
        }
        for (id, s, q) in &vecs {
            self.vectors.insert(*id, *s, q);
        }
        let w = self.writer()?;
        for id in &p.removed {
            w.delete_term(Term::from_field_u64(self.fields.id, *id));
        }
        for (id, rec) in &p.new {
            self.add_doc(&w, *id, rec)?;
        }
        self.commit_bm25(w, gen)?;
        p.files.clear();
        p.put.clear();
        p.new.clear();
        p.removed.clear();
        Ok(())
    }

    /// Hybrid search (BM25 only without an embedder).
    pub fn search(&self, query: &str, max_results: Option<usize>) -> Result<Vec<Hit>, MemoryError> {
        self.search_on(query, max_results, crate::util::today())
    }

    /// [`search`](Self::search) as of day `today` (days since 1970), for the
    /// decay.
    pub fn search_on(
        &self,
        query: &str,
        max_results: Option<usize>,
        today: i64,
    ) -> Result<Vec<Hit>, MemoryError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(MemoryError::BadRequest("the query is empty".into()));
        }
        if query.chars().count() > MAX_QUERY {
            return Err(MemoryError::BadRequest(format!(
                "the query is longer than {MAX_QUERY} characters"
            )));
        }
        let k = max_results.unwrap_or(self.cfg.max_results).clamp(1, 50);
        // BM25 candidates
        let mut bm25: HashMap<u64, f32> = HashMap::new();
        let searcher = self.reader.searcher();
        // any word may match (OR); BM25 ranks chunks with more of them first
        let qp = QueryParser::for_index(&self.index, vec![self.fields.text]);
        let (q, _errors) = qp.parse_query_lenient(query);
        let top = searcher
            .search(&q, &TopDocs::with_limit(POOL).order_by_score())
            .map_err(|e| self.err(e))?;
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr).map_err(|e| self.err(e))?;
            if let Some(id) = d.get_first(self.fields.id).and_then(|v| v.as_u64()) {
                bm25.insert(id, score);
            }
        }
        // vector candidates
        let mut cos: HashMap<u64, f32> = HashMap::new();
        let mut qv: Option<(f32, Vec<i8>)> = None;
        if let Some(e) = &self.embedder {
            if !self.vectors.ids.is_empty() {
                let v = e
                    .embed(&[query])
                    .map_err(|e| MemoryError::Embed(e.to_string()))?
                    .pop()
                    .unwrap_or_default();
                if v.len() == self.vectors.dim {
                    let v = quantize(&v);
                    let mut all: Vec<(f32, usize)> = self
                        .vectors
                        .cosines(&v)
                        .into_iter()
                        .enumerate()
                        .map(|(p, c)| (c, p))
                        .collect();
                    let n = POOL.min(all.len());
                    all.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0));
                    for &(c, p) in &all[..n] {
                        cos.insert(self.vectors.ids[p], c);
                    }
                    qv = Some(v);
                }
            }
        }
        let mut ids: Vec<u64> = bm25.keys().chain(cos.keys()).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(CHUNKS).map_err(|e| self.err(e))?;
        let mut cands = Vec::new();
        let mut recs = Vec::new();
        for id in ids {
            let Some(v) = t.get(id).map_err(|e| self.err(e))? else {
                continue;
            };
            let Ok(c) = serde_json::from_slice::<ChunkRec>(v.value()) else {
                continue;
            };
            let pos = self.vectors.pos.get(&id).copied();
            let cosine = match (&qv, pos) {
                (Some(q), Some(p)) => Some(
                    cos.get(&id)
                        .copied()
                        .unwrap_or_else(|| self.vectors.cosine(p, q)),
                ),
                _ => None,
            };
            cands.push(Candidate {
                id,
                path: c.path.clone(),
                cosine,
                bm25: bm25.get(&id).copied(),
                vector: pos.map(|p| self.vectors.unit(p)),
                words: if pos.is_none() {
                    words(&c.text)
                } else {
                    Vec::new()
                },
            });
            recs.push(c);
        }
        let relevance = rank::relevance(&cands, &self.cfg);
        let scores = rank::ranked(&cands, &relevance, &self.cfg, today);
        let picked = rank::mmr(
            &cands,
            &relevance,
            &scores,
            k,
            self.cfg.mmr_lambda,
            self.cfg.min_score,
        );
        Ok(picked
            .into_iter()
            .map(|i| {
                let c = &recs[i];
                Hit {
                    path: c.path.clone(),
                    from: c.from,
                    to: c.to,
                    score: scores[i],
                    snippet: snippet(&c.text, query),
                }
            })
            .collect())
    }
}

fn words(text: &str) -> Vec<String> {
    let mut w: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(|w| w.to_lowercase())
        .collect();
    w.sort();
    w.dedup();
    w
}

/// Up to [`SNIPPET`] characters of whole lines of `text`, around the line
/// that shares the most words with the query (the chunk's start when none
/// does).
fn snippet(text: &str, query: &str) -> String {
    if text.chars().count() <= SNIPPET {
        return text.to_string();
    }
    let q = words(query);
    let lines: Vec<&str> = text.lines().collect();
    let best = lines
        .iter()
        .enumerate()
        .max_by_key(|(i, l)| {
            let w = words(l);
            (
                q.iter().filter(|x| w.contains(x)).count(),
                std::cmp::Reverse(*i),
            )
        })
        .map_or(0, |(i, _)| i);
    let len = |i: usize| lines[i].chars().count() + 1;
    let (mut a, mut b) = (best, best + 1);
    let mut used = len(best);
    // grow below first (context after a heading), then above
    loop {
        let grew_down = b < lines.len() && used + len(b) <= SNIPPET;
        if grew_down {
            used += len(b);
            b += 1;
        }
        let grew_up = a > 0 && used + len(a - 1) <= SNIPPET;
        if grew_up {
            a -= 1;
            used += len(a);
        }
        if !grew_down && !grew_up {
            break;
        }
    }
    let mut s: String = lines[a..b].join("\n").chars().take(SNIPPET).collect();
    if a > 0 {
        s.insert_str(0, "…\n");
    }
    if b < lines.len() {
        s.push_str("\n…");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_vectors_keep_the_cosine() {
        let a: Vec<f32> = (0..384)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 40.0)
            .collect();
        let n = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let a: Vec<f32> = a.iter().map(|x| x / n).collect();
        let (s, q) = quantize(&a);
        let (s2, q2) = dec_vec(&enc_vec(s, &q)).unwrap();
        assert_eq!((s, &q), (s2, &q2));
        let mut v = Vectors::default();
        v.insert(7, s, &q);
        assert!((v.cosine(0, &quantize(&a)) - 1.0).abs() < 0.01);
        assert!((v.cosines(&quantize(&a))[0] - 1.0).abs() < 0.01);
        v.insert(8, s, &q);
        v.remove(7);
        assert_eq!(v.ids, vec![8]);
        assert_eq!(v.pos[&8], 0);
    }
}
