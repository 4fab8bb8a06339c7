//! Durable state in one redb file: the inbox (accepted, unanswered messages),
//! session transcripts, session metadata, run records and idempotency keys.
//!
//! Invariants this module keeps:
//! - A message is in `INBOX` (one committed write transaction) before anyone
//!   is told it was accepted.
//! - A run's completion is one transaction: reply appended to the transcript,
//!   its inbox items removed, its run and idempotency records updated. So after
//!   a crash a message is either finished (and never runs again) or still in
//!   the inbox (and runs again from a clean transcript, see
//!   [`Store::rollback_partial`]).
//! - All calls block on disk: async code calls them through `spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
const TRANSCRIPT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("transcript");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const IDEM: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Provider credential health (`provider/credential` → JSON), see
/// `provider::credentials`.
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
/// Replies waiting to be delivered to a channel, by sequence number.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

mod credentials;
pub mod devices;
mod inbox;
mod outbox;
mod pairing;
mod sessions;
mod transcripts;
pub use credentials::Credentials;
pub use inbox::Inbox;
pub use outbox::Outbox;
pub use pairing::{Approved, Pairing, Request as PairingRequest};
pub use sessions::Sessions;
pub use transcripts::Transcripts;

/// The layout version written to `META["schema"]` and checked at open:
/// 1 = before it was written, 2 = pairing tables, senders on inbox items.
pub const SCHEMA: u64 = 2;

/// The most transcript entries after the latest compaction cut that go
/// into a run's context (compaction keeps the context within the window;
/// this bounds the read).
pub const CONTEXT_ENTRIES: usize = 500;

/// Page cache of the state database.
pub const CACHE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed; the error is kept as the source.
    #[error("state database: {0}")]
    Db(#[source] Arc<redb::Error>),
    /// Reading the file, the writer thread, or a blocking task failed.
    #[error("state database: {0}")]
    Io(String),
    #[error("state database record is corrupt: {0}")]
    Corrupt(String),
    /// The file is not a database redb can open (empty, cut off, garbage).
    #[error("state database file is damaged: {0}")]
    Damaged(String),
    #[error("duplicate idempotency key")]
    Duplicate(Box<IdemRecord>),
    /// Written by a newer Hearth: opening it could lose what it stores.
    #[error("the state database has layout version {found}; this Hearth knows up to {known}: update Hearth, or move the file aside to start empty")]
    TooNew { found: u64, known: u64 },
}

/// An existing file must start with redb's magic number: redb itself
/// would take an empty file as a new database (a power cut on an SD card
/// can leave one), and may panic on garbage.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut head = [0u8; 9];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        }
    }
    match n {
        0 => Err(StoreError::Damaged("the file is empty".into())),
        _ if head[..n] != MAGIC[..n] || n < MAGIC.len() => Err(StoreError::Damaged(
            "the file is not a redb database".into(),
        )),
        _ => Ok(()),
    }
}

fn open_err(e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::Storage(S::Corrupted(m)) => StoreError::Damaged(m),
        D::RepairAborted => StoreError::Damaged("redb could not repair it".into()),
        D::Storage(S::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Damaged(e.to_string())
        }
        e => db(e),
    }
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Arc::new(e.into()))
}

fn push_outbox(w: &redb::WriteTransaction, outbox: &[OutboxItem]) -> Result<(), StoreError> {
    if outbox.is_empty() {
        return Ok(());
    }
    let mut m = w.open_table(META).map_err(db)?;
    let mut seq = m
        .get("outbox_seq")
        .map_err(db)?
        .map(|v| v.value())
        .unwrap_or(0);
    let mut t = w.open_table(OUTBOX).map_err(db)?;
    for o in outbox {
        seq += 1;
        t.insert(seq, enc(o).as_slice()).map_err(db)?;
    }
    m.insert("outbox_seq", seq).map_err(db)?;
    Ok(())
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn dec<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An accepted message waiting for (or in) a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxItem {
    pub seq: u64,
    pub session_key: String,
    pub agent_id: String,
    pub text: String,
    /// The run id the submitter was told (events and `agent.wait` use it).
    pub run_id: String,
    pub channel: String,
    pub received_ms: u64,
    /// Texts of messages dropped by `drop = "summarize"`, folded into this one.
    #[serde(default)]
    pub dropped: Vec<String>,
    /// Set when a run picked the item up: the run id and the transcript index
    /// it started writing at (rolled back if the process dies mid-run).
    #[serde(default)]
    pub started: Option<(String, u64)>,
    /// Where the reply goes besides the chat events: `<channel>:<address>`
    /// (e.g. `mqtt:kitchen-panel`), through the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Who sent it, as the gateway classified them. `None` in items
    /// written before senders were recorded: see [`InboxItem::origin`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::inbound::Origin>,
}

impl InboxItem {
    /// The sender; items from before senders were recorded count as the
    /// owner on the web chat and as a device elsewhere.
    pub fn origin(&self) -> crate::inbound::Origin {
        use crate::inbound::{ChatKind, Origin, Sender, Trust};
        match &self.from {
            Some(o) => o.clone(),
            None if self.channel == "webchat" => Origin::owner("webchat"),
            None => Origin {
                channel: self.channel.clone(),
                chat: ChatKind::Device,
                sender: Sender {
                    id: self.channel.clone(),
                    name: None,
                },
                trust: Trust::Device,
                binding: None,
            },
        }
    }
}

/// A reply to deliver to a channel; removed once the channel has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// `<channel>:<address>`, as in [`InboxItem::reply_to`].
    pub to: String,
    pub text: String,
    pub run_id: String,
    pub created_ms: u64,
    /// How far the channel got with it, written before each step on the
    /// wire (MQTT: the packet id, then "released"), so a restart repeats
    /// the step instead of sending the reply as a new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<Wire>,
}

/// A reply's place in a channel's delivery protocol (see [`OutboxItem`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wire {
    /// The MQTT packet id it is published with.
    #[serde(default)]
    pub id: u16,
    /// The broker has it (PUBREC); only the release (PUBREL) is left.
    #[serde(default)]
    pub released: bool,
    /// A reply sent in parts (Telegram): the parts before this one are
    /// delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// Part `part` is on the wire: its request went out and no answer was
    /// recorded yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sending: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl OutboxItem {
    pub fn channel(&self) -> &str {
        self.to.split_once(':').map_or("", |(c, _)| c)
    }
    pub fn address(&self) -> &str {
        self.to.split_once(':').map_or("", |(_, a)| a)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Tool,
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text as the model produced it.
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub role: Role,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `aborted` / `error` for replies that did not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub ts: u64,
    /// The model that wrote a reply (`provider/model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A user turn from someone other than the owner: who (the model sees
    /// it marked as untrusted content from this source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Entry {
    pub fn new(role: Role, text: impl Into<String>, run_id: Option<&str>) -> Entry {
        Entry {
            role,
            text: text.into(),
            tool_calls: vec![],
            tool_call_id: None,
            run_id: run_id.map(str::to_string),
            state: None,
            ts: now_ms(),
            source: None,
            model: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionMeta {
    pub key: String,
    pub agent_id: String,
    pub session_id: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Index the next transcript entry gets.
    pub next_index: u64,
    /// First index that belongs to the current session id (older = before reset).
    pub first_index: u64,
    #[serde(default)]
    pub last_channel: Option<String>,
    /// The latest compaction of the current session id, if any.
    #[serde(default)]
    pub compaction: Option<Compaction>,
}

/// Where a session was compacted: the summary entry (role system, state
/// `compaction`) replaces everything before `keep_from` in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    pub summary_index: u64,
    pub keep_from: u64,
}

/// State of an entry that holds a compaction summary.
pub const COMPACTION_STATE: &str = "compaction";

/// What the next model call sees of a session: the latest compaction
/// summary and the entries after the cut, with their transcript indexes.
#[derive(Debug, Clone, Default)]
pub struct SessionContext {
    pub summary: Option<String>,
    pub entries: Vec<(u64, Entry)>,
}

impl SessionContext {
    pub fn transcript(&self) -> Vec<Entry> {
        self.entries.iter().map(|(_, e)| e.clone()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Ok,
    Error,
    Aborted,
    Dropped,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub session_key: String,
    pub status: RunStatus,
    pub created_ms: u64,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdemRecord {
    pub method: String,
    pub run_id: String,
    /// The response payload the first request got.
    pub response: Value,
    /// When the key was first seen (for retention).
    #[serde(default)]
    pub ts: u64,
}

/// What a finished run commits in one transaction.
pub struct RunCommit<'a> {
    pub session_key: &'a str,
    pub entries: Vec<Entry>,
    pub remove_inbox: Vec<u64>,
    pub runs: Vec<RunRecord>,
    /// Replies for channels (see [`OutboxItem`]).
    pub outbox: Vec<OutboxItem>,
}

/// A write job: runs inside the shared transaction and returns how to tell
/// its caller the outcome once the commit is known.
type Job = Box<dyn FnOnce(&redb::WriteTransaction) -> JobDone + Send>;
type JobDone = (
    Result<(), ()>,
    Box<dyn FnOnce(Result<(), StoreError>) + Send>,
);

struct WriteReq {
    durable: bool,
    job: Job,
}

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 64;

/// Handle to the state database. Reads go straight to redb; writes go to
/// one writer thread that commits every job waiting at that moment in one
/// transaction (group commit): one fsync and one copy of each touched page
/// for many messages. The batch is durable if any job in it needs that.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// The writer thread's handle. When the last `Store` goes, its drop closes
/// the queue and waits for the thread, so every accepted write is committed
/// and the database file is closed before the process moves on.
struct Writer {
    tx: Option<std::sync::mpsc::Sender<WriteReq>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, false)
    }

    /// Opens the database; `check` runs redb's full integrity check (after
    /// an unclean shutdown). A file that is not a redb database is
    /// [`StoreError::Damaged`], never silently replaced.
    pub fn open_with(path: &Path, check: bool) -> Result<Store, StoreError> {
        check_header(path)?;
        // redb's default cache (1 GiB) would grow with the file; a 512 MB
        // board needs a bound. Hot data (inbox, recent transcripts) is small.
        let d = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(check)
            .create(path)
            .map_err(open_err)?;
        let w = d.begin_write().map_err(db)?;
        {
            w.open_table(INBOX).map_err(db)?;
            w.open_table(TRANSCRIPT).map_err(db)?;
            w.open_table(SESSIONS).map_err(db)?;
            w.open_table(RUNS).map_err(db)?;
            w.open_table(IDEM).map_err(db)?;
            w.open_table(META).map_err(db)?;
            w.open_table(CREDENTIALS).map_err(db)?;
            w.open_table(OUTBOX).map_err(db)?;
            pairing::create_tables(&w)?;
            let mut meta = w.open_table(META).map_err(db)?;
            let found = meta.get("schema").map_err(db)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA => {
                    return Err(StoreError::TooNew {
                        found: v,
                        known: SCHEMA,
                    })
                }
                // 1 → 2: new tables only (created above); new record
                // fields have serde defaults
                Some(SCHEMA) => {}
                _ => {
                    meta.insert("schema", SCHEMA).map_err(db)?;
                }
            }
        }
        w.commit().map_err(db)?;
        let d = Arc::new(d);
        let (tx, rx) = std::sync::mpsc::channel::<WriteReq>();
        let wdb = d.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-store".into())
            .spawn(move || writer_loop(&wdb, rx))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            db: d,
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
            }),
        })
    }

    /// Runs `f` in the next group transaction and waits for its commit. A
    /// job that fails must not have written anything (check first, then
    /// write), except on storage errors, which abort the whole batch.
    fn write<R: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<R, StoreError>>(1);
        let job: Job = Box::new(move |w| {
            let r = f(w);
            let clean = match &r {
                Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
                Err(_) => Err(()),
            };
            let done = Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(r));
            });
            (clean, done)
        });
        self.writer
            .tx
            .as_ref()
            .expect("open until the last handle drops")
            .send(WriteReq { durable, job })
            .map_err(|_| StoreError::Io("the writer thread stopped".into()))?;
        rx.recv().map_err(|_| {
            StoreError::Io("the state database did not take the write (see the log)".into())
        })?
    }

    /// Accepts a message: idempotency check, inbox insert and a queued run
    /// record, committed durably. Returns the item with its sequence number,
    /// or `Duplicate` with the first request's record.
    pub fn enqueue(
        &self,
        mut item: InboxItem,
        idem: Option<(&str, IdemRecord)>,
    ) -> Result<InboxItem, StoreError> {
        let idem = idem.map(|(k, r)| (k.to_string(), r));
        self.write(true, move |w| {
            if let Some((key, rec)) = &idem {
                let mut t = w.open_table(IDEM).map_err(db)?;
                if let Some(old) = t.get(key.as_str()).map_err(db)? {
                    return Err(StoreError::Duplicate(Box::new(dec(old.value())?)));
                }
                t.insert(key.as_str(), enc(rec).as_slice()).map_err(db)?;
            }
            let mut meta = w.open_table(META).map_err(db)?;
            let seq = meta
                .get("inbox_seq")
                .map_err(db)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            meta.insert("inbox_seq", seq).map_err(db)?;
            item.seq = seq;
            w.open_table(INBOX)
                .map_err(db)?
                .insert(seq, enc(&item).as_slice())
                .map_err(db)?;
            let run = RunRecord {
                run_id: item.run_id.clone(),
                session_key: item.session_key.clone(),
                status: RunStatus::Queued,
                created_ms: now_ms(),
                started_ms: None,
                ended_ms: None,
                reply: None,
                error: None,
            };
            w.open_table(RUNS)
                .map_err(db)?
                .insert(item.run_id.as_str(), enc(&run).as_slice())
                .map_err(db)?;
            Ok(item)
        })
    }

    /// An outbound message without a run (`send`): idempotency record and
    /// transcript entry, committed durably together.
    pub fn record_outbound(
        &self,
        idem_key: &str,
        rec: &IdemRecord,
        session: &str,
        agent_id: &str,
        entry: Entry,
    ) -> Result<(), StoreError> {
        let (key, rec, session, agent_id) = (
            idem_key.to_string(),
            rec.clone(),
            session.to_string(),
            agent_id.to_string(),
        );
        self.write(true, move |w| {
            let mut t = w.open_table(IDEM).map_err(db)?;
            if let Some(old) = t.get(key.as_str()).map_err(db)? {
                return Err(StoreError::Duplicate(Box::new(dec(old.value())?)));
            }
            t.insert(key.as_str(), enc(&rec).as_slice()).map_err(db)?;
            let mut meta = session_meta_mut(w, &session, &agent_id)?;
            append(w, &mut meta, &[entry])?;
            put_meta(w, &meta)
        })
    }

    pub fn get_idem(&self, key: &str) -> Result<Option<IdemRecord>, StoreError> {
        let r = self.db.begin_read().map_err(db)?;
        let t = r.open_table(IDEM).map_err(db)?;
        t.get(key).map_err(db)?.map(|v| dec(v.value())).transpose()
    }

    pub fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let r = self.db.begin_read().map_err(db)?;
        let t = r.open_table(RUNS).map_err(db)?;
        t.get(run_id)
            .map_err(db)?
            .map(|v| dec(v.value()))
            .transpose()
    }

    /// Marks items as picked up by `run_id`, starting at transcript `from`,
    /// and appends `entries` (the user turn) in the same transaction.
    /// Not durable by itself: see [`lazy`].
    pub fn start_run(
        &self,
        items: &mut [InboxItem],
        run_id: &str,
        agent_id: &str,
        entries: &[Entry],
    ) -> Result<u64, StoreError> {
        let (mut its, run_id, agent_id, entries) = (
            items.to_vec(),
            run_id.to_string(),
            agent_id.to_string(),
            entries.to_vec(),
        );
        let (from, its) = self.write(false, move |w| {
            let key = its[0].session_key.clone();
            let mut meta = session_meta_mut(w, &key, &agent_id)?;
            let from = meta.next_index;
            let mut inbox = w.open_table(INBOX).map_err(db)?;
            let mut runs = w.open_table(RUNS).map_err(db)?;
            for it in its.iter_mut() {
                it.started = Some((run_id.clone(), from));
                inbox.insert(it.seq, enc(&*it).as_slice()).map_err(db)?;
                let mut rec: RunRecord = match runs.get(it.run_id.as_str()).map_err(db)? {
                    Some(v) => dec(v.value())?,
                    None => continue,
                };
                rec.status = RunStatus::Running;
                rec.started_ms = Some(now_ms());
                runs.insert(it.run_id.as_str(), enc(&rec).as_slice())
                    .map_err(db)?;
            }
            meta.last_channel = Some(its[0].channel.clone());
            append(w, &mut meta, &entries)?;
            put_meta(w, &meta)?;
            Ok((from, its))
        })?;
        items.clone_from_slice(&its);
        Ok(from)
    }

    /// Commits a finished run durably (see the module invariants).
    /// Returns the transcript index of the first entry it appended.
    pub fn finish_run(&self, c: RunCommit<'_>, agent_id: &str) -> Result<u64, StoreError> {
        let (session, agent_id) = (c.session_key.to_string(), agent_id.to_string());
        let (entries, remove, runs_in, outbox) = (c.entries, c.remove_inbox, c.runs, c.outbox);
        self.write(true, move |w| {
            let mut meta = session_meta_mut(w, &session, &agent_id)?;
            let first = meta.next_index;
            append(w, &mut meta, &entries)?;
            put_meta(w, &meta)?;
            push_outbox(w, &outbox)?;
            let mut inbox = w.open_table(INBOX).map_err(db)?;
            for s in &remove {
                inbox.remove(*s).map_err(db)?;
            }
            let mut runs = w.open_table(RUNS).map_err(db)?;
            for r in &runs_in {
                runs.insert(r.run_id.as_str(), enc(r).as_slice())
                    .map_err(db)?;
            }
            Ok(first)
        })
    }

    /// Deletes final run records and idempotency keys older than
    /// `cutoff_ms`, at most `batch` of each per call (short write
    /// transactions). Returns how many rows went. Inbox items and
    /// transcripts are never touched.
    pub fn prune(&self, cutoff_ms: u64, batch: usize) -> Result<usize, StoreError> {
        self.write(true, move |w| {
            let mut runs = w.open_table(RUNS).map_err(db)?;
            let mut idem = w.open_table(IDEM).map_err(db)?;
            Ok(prune_table(&mut runs, batch, |r: &RunRecord| {
                r.status.is_final() && r.ended_ms.unwrap_or(r.created_ms) < cutoff_ms
            })? + prune_table(&mut idem, batch, |r: &IdemRecord| r.ts < cutoff_ms)?)
        })
    }
}

/// The writer thread: takes every job waiting, runs them in one
/// transaction, commits once, then answers each. Ends when every `Store`
/// handle is gone.
fn writer_loop(d: &Database, rx: std::sync::mpsc::Receiver<WriteReq>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|r| r.durable);
        let mut w = match d.begin_write() {
            Ok(w) => w,
            Err(e) => {
                // Dropping the batch drops each job's reply channel: every
                // caller gets an error.
                tracing::error!("state database: cannot start a write: {}", db(e));
                continue;
            }
        };
        if !durable {
            lazy(&mut w);
        }
        let mut dones = Vec::with_capacity(batch.len());
        let mut broken = false;
        for r in batch {
            let (clean, done) = (r.job)(&w);
            broken |= clean.is_err();
            dones.push(done);
        }
        let outcome = if broken {
            // A job failed half-way: its writes must not land, and redb has
            // no per-job rollback, so the whole batch is dropped.
            drop(w);
            Err(None)
        } else {
            w.commit().map_err(|e| Some(Arc::new(redb::Error::from(e))))
        };
        for done in dones {
            done(outcome.clone().map_err(|e| match e {
                Some(e) => StoreError::Db(e),
                None => {
                    StoreError::Io("a write in this batch failed; nothing was committed".into())
                }
            }));
        }
    }
}

/// Removes up to `batch` rows of a JSON-valued table for which `old` holds.
fn prune_table<T: for<'a> Deserialize<'a>>(
    t: &mut redb::Table<&str, &[u8]>,
    batch: usize,
    old: impl Fn(&T) -> bool,
) -> Result<usize, StoreError> {
    let mut keys = Vec::new();
    for row in t.iter().map_err(db)? {
        let (k, v) = row.map_err(db)?;
        if old(&dec(v.value())?) {
            keys.push(k.value().to_string());
            if keys.len() >= batch {
                break;
            }
        }
    }
    for k in &keys {
        t.remove(k.as_str()).map_err(db)?;
    }
    Ok(keys.len())
}

/// Mid-run writes skip the fsync: a crash loses them as a unit, together
/// with the `started` mark, so the message simply runs again from a clean
/// transcript. They become durable with the next immediate commit (a new
/// message or the run's end, which is always `Immediate`).
fn lazy(w: &mut redb::WriteTransaction) {
    let _ = w.set_durability(Durability::None);
}

fn session_meta_mut(
    w: &redb::WriteTransaction,
    key: &str,
    agent_id: &str,
) -> Result<SessionMeta, StoreError> {
    let s = w.open_table(SESSIONS).map_err(db)?;
    let got = s
        .get(key)
        .map_err(db)?
        .map(|v| dec::<SessionMeta>(v.value()));
    match got {
        Some(m) => m,
        None => Ok(SessionMeta {
            key: key.to_string(),
            agent_id: agent_id.to_string(),
            session_id: new_id(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
            next_index: 0,
            first_index: 0,
            last_channel: None,
            compaction: None,
        }),
    }
}

fn put_meta(w: &redb::WriteTransaction, m: &SessionMeta) -> Result<(), StoreError> {
    w.open_table(SESSIONS)
        .map_err(db)?
        .insert(m.key.as_str(), enc(m).as_slice())
        .map_err(db)?;
    Ok(())
}

fn append(
    w: &redb::WriteTransaction,
    meta: &mut SessionMeta,
    entries: &[Entry],
) -> Result<(), StoreError> {
    let mut t = w.open_table(TRANSCRIPT).map_err(db)?;
    for e in entries {
        t.insert((meta.key.as_str(), meta.next_index), enc(e).as_slice())
            .map_err(db)?;
        meta.next_index += 1;
    }
    meta.updated_ms = now_ms();
    Ok(())
}

/// A random 128-bit id as 32 hex chars.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(session: &str, run: &str) -> InboxItem {
        InboxItem {
            seq: 0,
            session_key: session.into(),
            agent_id: "main".into(),
            text: "hello".into(),
            run_id: run.into(),
            channel: "webchat".into(),
            received_ms: now_ms(),
            dropped: vec![],
            started: None,
            reply_to: None,
            from: None,
        }
    }

    #[test]
    fn the_schema_version_is_written_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        drop(Store::open(&p).unwrap());
        {
            let d = Database::create(&p).unwrap();
            let r = d.begin_read().unwrap();
            let t = r.open_table(META).unwrap();
            assert_eq!(t.get("schema").unwrap().unwrap().value(), SCHEMA);
            drop((t, r));
            let w = d.begin_write().unwrap();
            w.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA + 1)
                .unwrap();
            w.commit().unwrap();
        }
        match Store::open(&p) {
            Err(StoreError::TooNew { found, known }) => {
                assert_eq!((found, known), (SCHEMA + 1, SCHEMA))
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn enqueue_idempotent_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            let rec = IdemRecord {
                method: "chat.send".into(),
                run_id: "r1".into(),
                response: serde_json::json!({"runId": "r1"}),
                ts: now_ms(),
            };
            let it = s
                .enqueue(item("agent:main:a", "r1"), Some(("k1", rec.clone())))
                .unwrap();
            assert_eq!(it.seq, 1);
            match s.enqueue(item("agent:main:a", "r2"), Some(("k1", rec))) {
                Err(StoreError::Duplicate(r)) => assert_eq!(r.run_id, "r1"),
                other => panic!("{other:?}"),
            }
        }
        let s = Store::open(&path).unwrap();
        let inbox = s.inbox().list().unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(s.get_run("r1").unwrap().unwrap().status, RunStatus::Queued);
    }

    #[test]
    fn prune_keeps_recent_and_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let rec = |run: &str, ts| IdemRecord {
            method: "chat.send".into(),
            run_id: run.into(),
            response: serde_json::json!({}),
            ts,
        };
        let a = s
            .enqueue(
                item("agent:main:a", "old"),
                Some(("k-old", rec("old", 1000))),
            )
            .unwrap();
        s.enqueue(
            item("agent:main:a", "new"),
            Some(("k-new", rec("new", now_ms()))),
        )
        .unwrap();
        s.enqueue(item("agent:main:a", "queued"), None).unwrap();
        let mut done = s.get_run("old").unwrap().unwrap();
        done.status = RunStatus::Ok;
        done.ended_ms = Some(1000);
        s.finish_run(
            RunCommit {
                session_key: "agent:main:a",
                entries: vec![],
                remove_inbox: vec![a.seq],
                runs: vec![done],
                outbox: vec![],
            },
            "main",
        )
        .unwrap();
        assert_eq!(s.prune(now_ms() - 60_000, 100).unwrap(), 2);
        assert!(s.get_run("old").unwrap().is_none());
        assert!(s.get_idem("k-old").unwrap().is_none());
        assert!(s.get_idem("k-new").unwrap().is_some());
        assert!(
            s.get_run("queued").unwrap().is_some(),
            "unfinished runs stay"
        );
        assert_eq!(s.prune(now_ms() - 60_000, 100).unwrap(), 0);
    }

    #[test]
    fn group_commit_under_concurrency_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let mut dups = 0;
                        for i in 0..50 {
                            // Every thread also tries thread 0's keys: duplicates
                            // land in batches next to good writes.
                            let key = format!("k{}-{i}", if i % 5 == 0 { 0 } else { t });
                            let rec = IdemRecord {
                                method: "chat.send".into(),
                                run_id: key.clone(),
                                response: serde_json::json!({}),
                                ts: now_ms(),
                            };
                            match s.enqueue(
                                item("agent:main:a", &format!("r{t}-{i}")),
                                Some((&key, rec)),
                            ) {
                                Ok(_) => {}
                                Err(StoreError::Duplicate(_)) => dups += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                        dups
                    })
                })
                .collect();
            let dups: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            // 10 keys per thread are shared with thread 0; 7 threads lose each race.
            assert_eq!(dups, 70);
        }
        let s = Store::open(&path).unwrap();
        let inbox = s.inbox().list().unwrap();
        assert_eq!(inbox.len(), 8 * 50 - 70);
        let mut seqs: Vec<u64> = inbox.iter().map(|i| i.seq).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), inbox.len(), "sequence numbers are unique");
    }

    #[test]
    fn rollback_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let k = "agent:main:a";
        s.transcripts()
            .append(k, "main", &[Entry::new(Role::User, "old", None)])
            .unwrap();
        let mut items = vec![s.enqueue(item(k, "r1"), None).unwrap()];
        let from = s
            .start_run(
                &mut items,
                "r1",
                "main",
                &[Entry::new(Role::User, "hello", Some("r1"))],
            )
            .unwrap();
        assert_eq!(from, 1);
        assert_eq!(s.transcripts().tail(k, 10).unwrap().len(), 2);
        // crash: roll back the partial turn
        assert_eq!(s.transcripts().rollback_partial(k, from).unwrap(), 1);
        assert_eq!(s.transcripts().tail(k, 10).unwrap().len(), 1);
        s.finish_run(
            RunCommit {
                session_key: k,
                entries: vec![Entry::new(Role::Assistant, "hi", Some("r1"))],
                remove_inbox: vec![items[0].seq],
                runs: vec![],
                outbox: vec![],
            },
            "main",
        )
        .unwrap();
        assert!(s.inbox().list().unwrap().is_empty());
        let t = s.transcripts().tail(k, 1).unwrap();
        assert_eq!(t[0].text, "hi");
        s.sessions().reset(k).unwrap();
        assert!(s.transcripts().tail(k, 10).unwrap().is_empty());
        assert!(s.sessions().delete(k).unwrap());
        assert!(s.sessions().get(k).unwrap().is_none());
    }

    #[test]
    fn compaction_moves_the_context_cut() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb")).unwrap();
        let k = "agent:main:c";
        let e = |r, t: &str| Entry::new(r, t, None);
        s.transcripts()
            .append(
                k,
                "main",
                &[
                    e(Role::User, "u0"),
                    e(Role::Assistant, "a0"),
                    e(Role::User, "u1"),
                    e(Role::Assistant, "a1"),
                ],
            )
            .unwrap();
        let at = s
            .transcripts()
            .compact(k, "main", e(Role::System, "sum"), 2)
            .unwrap();
        assert_eq!(at, 4);
        s.transcripts()
            .append(k, "main", &[e(Role::User, "u2")])
            .unwrap();
        let c = s.transcripts().context(k, 100).unwrap();
        assert_eq!(c.summary.as_deref(), Some("sum"));
        let idx: Vec<u64> = c.entries.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            idx,
            vec![2, 3, 5],
            "from the cut, without the summary entry"
        );
        // the transcript itself keeps everything
        assert_eq!(s.transcripts().tail(k, 100).unwrap().len(), 6);
        assert_eq!(s.transcripts().all(k).unwrap().len(), 6);
        // a crashed run that compacted rolls the compaction back too
        let mut items = vec![s.enqueue(item(k, "r9"), None).unwrap()];
        let from = s
            .start_run(&mut items, "r9", "main", &[e(Role::User, "u3")])
            .unwrap();
        s.transcripts()
            .compact(k, "main", e(Role::System, "sum2"), from)
            .unwrap();
        assert_eq!(
            s.transcripts().context(k, 100).unwrap().summary.as_deref(),
            Some("sum2")
        );
        s.transcripts().rollback_partial(k, from).unwrap();
        // (the whole transcript is the context again; the next run
        // compacts it anew if it is still too long)
        let c = s.transcripts().context(k, 100).unwrap();
        assert!(c.summary.is_none());
        assert_eq!(c.entries.len(), 6);
        // a limit that cuts a tool round drops the orphaned result
        s.transcripts()
            .append(
                k,
                "main",
                &[
                    Entry {
                        tool_calls: vec![ToolCall {
                            id: "c".into(),
                            name: "ls".into(),
                            arguments: "{}".into(),
                        }],
                        ..e(Role::Assistant, "")
                    },
                    e(Role::Tool, "[]"),
                    e(Role::Assistant, "done"),
                ],
            )
            .unwrap();
        let c = s.transcripts().context(k, 2).unwrap();
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].1.text, "done");
        // a reset starts without a summary
        s.sessions().reset(k).unwrap();
        let c = s.transcripts().context(k, 100).unwrap();
        assert!(c.summary.is_none() && c.entries.is_empty());
    }

    #[test]
    fn outbox_is_committed_with_the_run_and_kept_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = Store::open(&path).unwrap();
        let o = |to: &str| OutboxItem {
            to: to.into(),
            text: "hi".into(),
            run_id: "r".into(),
            created_ms: 1,
            wire: None,
        };
        s.finish_run(
            RunCommit {
                session_key: "agent:main:x",
                entries: vec![Entry::new(Role::Assistant, "hi", None)],
                remove_inbox: vec![],
                runs: vec![],
                outbox: vec![o("mqtt:panel"), o("telegram:42")],
            },
            "main",
        )
        .unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let m = s.outbox().pending("mqtt").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].1.channel(), m[0].1.address()), ("mqtt", "panel"));
        s.outbox().done(&[m[0].0]).unwrap();
        assert!(s.outbox().pending("mqtt").unwrap().is_empty());
        assert_eq!(s.outbox().drop_except(&["mqtt"]).unwrap(), 1);
        assert!(s.outbox().pending("telegram").unwrap().is_empty());
    }
}
