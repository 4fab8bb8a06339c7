//! The queue: one run at a time per session, at most `max_concurrent` runs
//! over the gateway, and the four modes for messages that arrive while their
//! session is busy (SPEC §4).
//!
//! - **collect**: wait `debounce` after the last arrival, then merge all
//!   pending messages into one turn.
//! - **followup**: each pending message is its own turn, in order.
//! - **steer**: pending messages join the running turn at its next tool
//!   boundary; those left when it ends run as a follow-up.
//! - **interrupt**: abort the running turn; the pending ones run next, merged.
//!
//! Durability: `submit` returns only after the message is committed to the
//! inbox. On start, [`Queue::resume`] rolls back the transcript of runs that
//! were cut off and queues every inbox item again. A run's end is committed
//! with the removal of its items in one transaction, so a message is answered
//! exactly once. On shutdown, runs cut off at the deadline are *not*
//! committed: they stay in the inbox and run again on the next start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{self, AgentCtx, RunEnd};
use crate::config::{DropPolicy, QueueConfig, QueueMode, ResetMode, ResetPolicy};
use crate::events::{EventBus, RunEvents};
use crate::store::{
    now_ms, Entry, IdemRecord, InboxItem, OutboxItem, Role, RunCommit, RunRecord, RunStatus, Store,
    StoreError,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    #[error(
        "this conversation already has {0} messages waiting; try again when Hearth has answered"
    )]
    Full(usize),
    #[error("Hearth is shutting down and does not accept new messages")]
    ShuttingDown,
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Running {
    run_id: String,
    cancel: CancellationToken,
    /// Who the running turn is for (`None`: a compaction by hand).
    origin: Option<crate::inbound::Origin>,
}

#[derive(Default)]
struct SessionQ {
    pending: VecDeque<InboxItem>,
    running: Option<Running>,
    /// Messages of a batch taken from `pending` that waits for a run slot.
    waiting: usize,
    worker: bool,
    last_arrival: Option<Instant>,
}

struct Inner {
    cfg: QueueConfig,
    reset: ResetPolicy,
    store: Store,
    bus: EventBus,
    agents: HashMap<String, AgentCtx>,
    sessions: Mutex<HashMap<String, SessionQ>>,
    sem: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Stop taking new batches.
    intake_closed: CancellationToken,
    /// Cut running turns (shutdown deadline passed); they are not committed.
    hard_stop: CancellationToken,
    /// Run ids that reached a final state (for `agent.wait`).
    done: broadcast::Sender<Arc<str>>,
    /// Each channel's wake-up, rung when a committed run left it a reply.
    wakers: crate::channel::Wakers,
}

#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    pub fn new(
        cfg: QueueConfig,
        reset: ResetPolicy,
        max_concurrent: usize,
        store: Store,
        bus: EventBus,
        agents: HashMap<String, AgentCtx>,
        wakers: crate::channel::Wakers,
    ) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                cfg,
                reset,
                store,
                bus,
                agents,
                sessions: Mutex::new(HashMap::new()),
                sem: Arc::new(Semaphore::new(max_concurrent)),
                tracker: TaskTracker::new(),
                intake_closed: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                done: broadcast::channel(4096).0,
                wakers,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The channels' wake-ups (a reply put in the outbox outside a run,
    /// such as a command's answer, rings them too).
    pub fn wakers(&self) -> &crate::channel::Wakers {
        &self.inner.wakers
    }

    /// An agent's context (its tool registry, workspace), for `/context`.
    pub fn agent(&self, id: &str) -> Option<&AgentCtx> {
        self.inner.agents.get(id)
    }

    /// Run ids as they reach a final state (for `agent.wait`). Subscribe
    /// before checking the store so no completion is missed.
    pub fn completions(&self) -> broadcast::Receiver<Arc<str>> {
        self.inner.done.subscribe()
    }

    fn finished(&self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            let _ = self.inner.done.send(id.into());
        }
    }

    /// Queues every message left in the inbox by a previous process.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let store = self.inner.store.clone();
        let items = tokio::task::spawn_blocking(move || -> Result<Vec<InboxItem>, StoreError> {
            let mut items = store.inbox().list()?;
            let mut from: HashMap<String, u64> = HashMap::new();
            for it in &items {
                if let Some((_, f)) = &it.started {
                    let e = from.entry(it.session_key.clone()).or_insert(*f);
                    *e = (*e).min(*f);
                }
            }
            for (k, f) in &from {
                let n = store.transcripts().rollback_partial(k, *f)?;
                tracing::warn!(session = %k, entries = n, "rolled back a run cut off by a restart");
            }
            let touched: Vec<InboxItem> = items
                .iter_mut()
                .filter(|i| i.started.is_some())
                .map(|i| {
                    i.started = None;
                    i.clone()
                })
                .collect();
            store.inbox().update(&touched)?;
            Ok(items)
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))??;
        let n = items.len();
        let mut kick = Vec::new();
        {
            let mut s = self.inner.sessions.lock().unwrap();
            for it in items {
                if !self.inner.agents.contains_key(&it.agent_id) {
                    tracing::error!(agent = %it.agent_id, seq = it.seq, "queued message for an agent that no longer exists; it stays in the inbox");
                    continue;
                }
                let q = s.entry(it.session_key.clone()).or_default();
                q.pending.push_back(it.clone());
                if !q.worker {
                    q.worker = true;
                    kick.push(it.session_key.clone());
                }
            }
        }
        for k in kick {
            self.spawn_worker(k);
        }
        Ok(n)
    }

    /// Accepts a message (durably) and schedules it.
    pub async fn submit(
        &self,
        item: InboxItem,
        idem: Option<(String, IdemRecord)>,
    ) -> Result<InboxItem, QueueError> {
        if self.inner.intake_closed.is_cancelled() {
            return Err(QueueError::ShuttingDown);
        }
        if !self.inner.agents.contains_key(&item.agent_id) {
            return Err(QueueError::UnknownAgent(item.agent_id));
        }
        if self.inner.cfg.drop == DropPolicy::New {
            let s = self.inner.sessions.lock().unwrap();
            if let Some(q) = s.get(&item.session_key) {
                if q.pending.len() >= self.inner.cfg.cap {
                    return Err(QueueError::Full(q.pending.len()));
                }
            }
        }
        let store = self.inner.store.clone();
        let item = tokio::task::spawn_blocking(move || {
            store.enqueue(item, idem.as_ref().map(|(k, r)| (k.as_str(), r.clone())))
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))??;

        let (start, dropped, updated) = {
            let mut s = self.inner.sessions.lock().unwrap();
            let q = s.entry(item.session_key.clone()).or_default();
            q.pending.push_back(item.clone());
            q.last_arrival = Some(Instant::now());
            let mut dropped = Vec::new();
            let mut updated = Vec::new();
            while q.pending.len() > self.inner.cfg.cap {
                let old = q.pending.pop_front().expect("non-empty");
                if self.inner.cfg.drop == DropPolicy::Summarize {
                    // folded only into the same sender's next message: it
                    // is shown as theirs
                    if let Some(next) = q.pending.front_mut().filter(|n| n.origin() == old.origin())
                    {
                        let mut d = old.dropped.clone();
                        d.push(old.text.clone());
                        d.append(&mut next.dropped);
                        next.dropped = d;
                        updated.push(next.clone());
                    }
                }
                dropped.push(old);
            }
            if let Some(r) = &q.running {
                // a sender interrupts only their own turn, or a less
                // trusted one (the owner may cut a guest's reply)
                let o = item.origin();
                if self.inner.cfg.mode == QueueMode::Interrupt
                    && (r
                        .origin
                        .as_ref()
                        .is_none_or(|ro| *ro == o || ro.trust < o.trust))
                {
                    tracing::info!(run_id = %r.run_id, "interrupting the running turn for a new message");
                    r.cancel.cancel();
                }
            }
            let start = !q.worker;
            q.worker = true;
            (start, dropped, updated)
        };
        if !dropped.is_empty() {
            let store = self.inner.store.clone();
            let ids: Vec<String> = dropped.iter().map(|d| d.run_id.clone()).collect();
            tracing::warn!(session = %item.session_key, dropped = dropped.len(), "queue cap reached; dropped the oldest message(s)");
            let why = "dropped: the queue for this conversation was full";
            let res = tokio::task::spawn_blocking(move || {
                store.inbox().discard(&dropped, why)?;
                store.inbox().update(&updated)
            })
            .await;
            if let Ok(Err(e)) = res {
                tracing::error!("recording dropped messages failed: {e}");
            }
            let ev = RunEvents::new(self.inner.bus.clone(), &ids[0], &item.session_key);
            ev.chat_error(why, &ids[1..]);
            self.finished(ids);
        }
        if start {
            self.spawn_worker(item.session_key.clone());
        }
        Ok(item)
    }

    /// Aborts the running turn of a session (optionally only if it is `run_id`).
    pub fn abort(&self, session_key: &str, run_id: Option<&str>) -> Option<String> {
        let s = self.inner.sessions.lock().unwrap();
        let r = s.get(session_key)?.running.as_ref()?;
        if run_id.is_some_and(|id| id != r.run_id) {
            return None;
        }
        r.cancel.cancel();
        Some(r.run_id.clone())
    }

    /// Compacts a session by hand (`sessions.compact`). The session's slot
    /// is taken for the duration like a run's: messages that arrive
    /// meanwhile wait and run after it. Refused while the session is busy.
    pub async fn compact(
        &self,
        key: &str,
        by: &crate::inbound::Origin,
    ) -> Result<crate::agent::compact::Outcome, CompactRefused> {
        let store = self.inner.store.clone();
        let k = key.to_string();
        let meta = tokio::task::spawn_blocking(move || store.sessions().get(&k))
            .await
            .map_err(|e| CompactRefused::Failed(e.to_string()))?
            .map_err(|e| CompactRefused::Failed(e.to_string()))?
            .ok_or(CompactRefused::NoSession)?;
        let ctx = self
            .inner
            .agents
            .get(&meta.agent_id)
            .cloned()
            .ok_or_else(|| CompactRefused::Failed(format!("unknown agent {:?}", meta.agent_id)))?;
        let cancel = CancellationToken::new();
        {
            let mut s = self.inner.sessions.lock().unwrap();
            let q = s.entry(key.to_string()).or_default();
            if q.worker || q.running.is_some() || !q.pending.is_empty() {
                return Err(CompactRefused::Busy);
            }
            q.worker = true;
            q.running = Some(Running {
                run_id: format!("compact-{}", crate::store::new_id()),
                cancel: cancel.clone(),
                origin: None,
            });
        }
        // Released however this ends: also when the caller goes away
        // mid-compaction (its future is dropped), which cancels the model
        // call too.
        let mut slot = SessionSlot {
            queue: self.clone(),
            key: key.to_string(),
            cancel: cancel.clone(),
            done: false,
        };
        // the flush turn runs for the one who asked, and only on
        // conversations the owner alone wrote (see `compact::flush`)
        let res = crate::agent::compact::compact(&ctx, key, by, &cancel, None).await;
        slot.done = true;
        drop(slot);
        if res.is_ok() {
            self.inner.bus.emit(
                "sessions.changed",
                serde_json::json!({"sessionKey": key, "reason": "compact"}),
            );
        }
        res.map_err(CompactRefused::Compact)
    }

    /// Number of (running, pending) over all sessions.
    pub fn load(&self) -> (usize, usize) {
        let s = self.inner.sessions.lock().unwrap();
        s.values().fold((0, 0), |(r, p), q| {
            (
                r + q.running.is_some() as usize,
                p + q.pending.len() + q.waiting,
            )
        })
    }

    /// The run id of the session's running turn, if any.
    pub fn active_run(&self, session_key: &str) -> Option<String> {
        let s = self.inner.sessions.lock().unwrap();
        s.get(session_key)
            .and_then(|q| q.running.as_ref().map(|r| r.run_id.clone()))
    }

    pub fn is_busy(&self, session_key: &str) -> bool {
        let s = self.inner.sessions.lock().unwrap();
        s.get(session_key)
            .is_some_and(|q| q.running.is_some() || q.waiting > 0 || !q.pending.is_empty())
    }

    /// Ordered shutdown: stop intake, let runs finish until `deadline`, then
    /// cut them (uncommitted, so they run again on the next start) and give
    /// them `cut_wait` to stop.
    pub async fn shutdown(&self, deadline: Duration, cut_wait: Duration) {
        self.inner.intake_closed.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(deadline, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "runs still going at the shutdown deadline; they will run again on the next start"
            );
            self.inner.hard_stop.cancel();
            {
                let s = self.inner.sessions.lock().unwrap();
                for q in s.values() {
                    if let Some(r) = &q.running {
                        r.cancel.cancel();
                    }
                }
            }
            let _ = tokio::time::timeout(cut_wait, self.inner.tracker.wait()).await;
        }
    }

    fn spawn_worker(&self, key: String) {
        let q = self.clone();
        self.inner.tracker.spawn(async move { q.worker(key).await });
    }

    /// Takes the next batch, or `None` when the worker should exit.
    async fn next_batch(&self, key: &str, followup: bool) -> Option<Vec<InboxItem>> {
        loop {
            let wait = {
                let mut s = self.inner.sessions.lock().unwrap();
                let q = s.get_mut(key)?;
                if self.inner.intake_closed.is_cancelled() || q.pending.is_empty() {
                    q.worker = false;
                    if q.pending.is_empty() && q.running.is_none() {
                        s.remove(key);
                    }
                    return None;
                }
                let mode = self.inner.cfg.mode;
                let wait = match (mode, followup, q.last_arrival) {
                    (QueueMode::Collect, true, Some(t)) => {
                        (t + self.inner.cfg.debounce).checked_duration_since(Instant::now())
                    }
                    _ => None,
                };
                match wait {
                    Some(w) if !w.is_zero() => w,
                    _ => {
                        let batch: Vec<InboxItem> = match mode {
                            QueueMode::Collect | QueueMode::Interrupt => {
                                take_same_sender(&mut q.pending, None)
                            }
                            QueueMode::Followup | QueueMode::Steer => {
                                q.pending.pop_front().into_iter().collect()
                            }
                        };
                        return Some(batch);
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.intake_closed.cancelled() => {}
            }
        }
    }

    async fn worker(self, key: String) {
        let mut followup = false;
        while let Some(batch) = self.next_batch(&key, followup).await {
            followup = true;
            self.set_waiting(&key, batch.len());
            let permit = tokio::select! {
                p = self.inner.sem.clone().acquire_owned() => p.expect("semaphore open"),
                _ = self.inner.hard_stop.cancelled() => { self.requeue(&key, batch); return; }
            };
            self.run_batch(&key, batch).await;
            drop(permit);
        }
    }

    fn set_waiting(&self, key: &str, n: usize) {
        if let Some(q) = self.inner.sessions.lock().unwrap().get_mut(key) {
            q.waiting = n;
        }
    }

    fn requeue(&self, key: &str, batch: Vec<InboxItem>) {
        let mut s = self.inner.sessions.lock().unwrap();
        let q = s.entry(key.to_string()).or_default();
        q.waiting = 0;
        for it in batch.into_iter().rev() {
            q.pending.push_front(it);
        }
        q.worker = false;
    }

    async fn run_batch(&self, key: &str, batch: Vec<InboxItem>) {
        let agent_id = batch[0].agent_id.clone();
        let ctx = self.inner.agents[&agent_id].clone();
        self.apply_reset_policy(key).await;
        let run_id = batch[0].run_id.clone();
        let cancel = CancellationToken::new();
        {
            let mut s = self.inner.sessions.lock().unwrap();
            let q = s.entry(key.to_string()).or_default();
            q.waiting = 0;
            q.running = Some(Running {
                run_id: run_id.clone(),
                cancel: cancel.clone(),
                origin: Some(batch[0].origin()),
            });
        }
        let ev = Arc::new(RunEvents::new(self.inner.bus.clone(), &run_id, key));
        let steer: agent::SteerFn = if self.inner.cfg.mode == QueueMode::Steer {
            let inner = self.inner.clone();
            let k = key.to_string();
            let first = batch[0].origin();
            Box::new(move || {
                let mut s = inner.sessions.lock().unwrap();
                s.get_mut(&k)
                    .map(|q| take_same_sender(&mut q.pending, Some(&first)))
                    .unwrap_or_default()
            })
        } else {
            Box::new(Vec::new)
        };

        let result = agent::run(ctx, batch, ev.clone(), cancel, steer).await;

        {
            let mut s = self.inner.sessions.lock().unwrap();
            if let Some(q) = s.get_mut(key) {
                q.running = None;
            }
        }
        if self.inner.hard_stop.is_cancelled() && matches!(result.end, RunEnd::Aborted(_)) {
            tracing::info!(run_id = %run_id, "run cut by shutdown; left in the inbox to run again");
            return;
        }
        let (status, text, state) = match &result.end {
            RunEnd::Ok(t) => (RunStatus::Ok, t.clone(), None),
            RunEnd::Error(m) => (RunStatus::Error, m.clone(), Some("error")),
            RunEnd::Aborted(p) => (RunStatus::Aborted, p.clone(), Some("aborted")),
        };
        let mut entry = Entry::new(Role::Assistant, text.clone(), Some(&run_id));
        entry.state = state.map(str::to_string);
        entry.model = result.model.as_ref().map(|m| m.0.clone());
        let final_msg =
            crate::events::stored_message(&entry, result.model.as_ref().is_some_and(|m| m.1));
        let now = now_ms();
        let runs: Vec<RunRecord> = result
            .items
            .iter()
            .map(|it| RunRecord {
                run_id: it.run_id.clone(),
                session_key: key.to_string(),
                status,
                created_ms: it.received_ms,
                started_ms: Some(result.started_ms),
                ended_ms: Some(now),
                reply: (status == RunStatus::Ok).then(|| text.clone()),
                error: (status != RunStatus::Ok).then(|| text.clone()),
            })
            .collect();
        let seqs: Vec<u64> = result.items.iter().map(|i| i.seq).collect();
        // replies for channels that want them (an aborted turn sends none)
        let mut outbox: Vec<OutboxItem> = Vec::new();
        if !matches!(result.end, RunEnd::Aborted(_)) {
            for it in &result.items {
                if let Some(to) = &it.reply_to {
                    if !outbox.iter().any(|o| &o.to == to) {
                        outbox.push(OutboxItem {
                            to: to.clone(),
                            text: text.clone(),
                            run_id: it.run_id.clone(),
                            created_ms: now,
                            wire: None,
                        });
                    }
                }
            }
        }
        let wake: Vec<String> = outbox.iter().map(|o| o.to.clone()).collect();
        let store = self.inner.store.clone();
        let k = key.to_string();
        let commit = tokio::task::spawn_blocking(move || {
            store.finish_run(
                RunCommit {
                    session_key: &k,
                    entries: vec![entry],
                    remove_inbox: seqs,
                    runs,
                    outbox,
                },
                &agent_id,
            )
        })
        .await;
        let index = match commit {
            Ok(Ok(i)) => i,
            other => {
                tracing::error!(run_id = %run_id, "could not commit the run: {other:?}; it will run again on restart");
                return;
            }
        };
        for to in &wake {
            self.inner.wakers.wake(to);
        }
        // Merged and steered-in messages are answered by this run too.
        let also: Vec<String> = result.items[1..].iter().map(|i| i.run_id.clone()).collect();
        match &result.end {
            RunEnd::Ok(_) => {
                let mut m = final_msg;
                m["__openclaw"] = crate::events::message_identity(index, None);
                ev.chat_final_message(m, &also)
            }
            RunEnd::Error(m) => ev.chat_error(m, &also),
            RunEnd::Aborted(p) => ev.chat_aborted(p, &also),
        }
        // (OpenClaw's shape; `activeRunIds`: the session's runs still going)
        let active: Vec<String> = self.active_run(key).into_iter().collect();
        self.inner.bus.emit(
            "sessions.changed",
            serde_json::json!({"sessionKey": key, "reason": "run", "phase": "end",
                               "runId": run_id, "clientRunId": run_id, "updatedAt": now_ms(),
                               "agentId": crate::routing::agent_of(key), "activeRunIds": active}),
        );
        self.finished(result.items.iter().map(|i| i.run_id.clone()));
    }

    async fn apply_reset_policy(&self, key: &str) {
        let policy = self.inner.reset;
        if policy.mode == ResetMode::None {
            return;
        }
        let store = self.inner.store.clone();
        let k = key.to_string();
        let _ = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let Some(meta) = store.sessions().get(&k)? else {
                return Ok(());
            };
            if due_for_reset(policy, meta.updated_ms, now_ms()) {
                tracing::info!(session = %k, "session reset by policy");
                store.sessions().reset(&k)?;
            }
            Ok(())
        })
        .await;
    }
}

/// A session held by a hand-started compaction: on drop the session is
/// free again (and its pending messages run), and the compaction's model
/// call is cancelled if it is still going.
struct SessionSlot {
    queue: Queue,
    key: String,
    cancel: CancellationToken,
    /// The compaction ended (else its caller went away mid-way).
    done: bool,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if !self.done {
            tracing::info!(session = %self.key, "compaction abandoned: the client that asked for it went away");
        }
        self.cancel.cancel();
        let restart = {
            let mut s = self.queue.inner.sessions.lock().unwrap();
            let q = s.entry(self.key.clone()).or_default();
            q.running = None;
            let pending = !q.pending.is_empty();
            q.worker = pending;
            if !pending {
                s.remove(&self.key);
            }
            pending
        };
        if restart {
            self.queue.spawn_worker(self.key.clone());
        }
    }
}

/// Why `sessions.compact` did not compact.
#[derive(Debug, thiserror::Error)]
pub enum CompactRefused {
    #[error("no such session")]
    NoSession,
    #[error("the session has a run in progress or queued messages; try again when it is idle")]
    Busy,
    #[error(transparent)]
    Compact(crate::agent::compact::CompactError),
    #[error("{0}")]
    Failed(String),
}

/// The pending messages from the front that come from the same sender
/// with the same trust as `like` (or as the first one): a turn never mixes
/// senders, so one sender's message never runs with another's tools.
fn take_same_sender(
    pending: &mut VecDeque<InboxItem>,
    like: Option<&crate::inbound::Origin>,
) -> Vec<InboxItem> {
    let Some(first) = like
        .cloned()
        .or_else(|| pending.front().map(|i| i.origin()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(it) = pending.front() {
        let o = it.origin();
        if o != first {
            break;
        }
        out.extend(pending.pop_front());
    }
    out
}

/// Whether a session last active at `last_ms` should be reset at `now_ms`.
pub fn due_for_reset(p: ResetPolicy, last_ms: u64, now_ms: u64) -> bool {
    match p.mode {
        ResetMode::None => false,
        ResetMode::Idle => now_ms.saturating_sub(last_ms) >= p.idle_minutes * 60_000,
        ResetMode::Daily => {
            // Most recent boundary at `at_hour` UTC not after now.
            let day = 86_400_000;
            let off = p.at_hour as u64 * 3_600_000;
            let boundary = (now_ms.saturating_sub(off) / day) * day + off;
            last_ms < boundary && boundary <= now_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_policy() {
        let idle = ResetPolicy {
            mode: ResetMode::Idle,
            at_hour: 4,
            idle_minutes: 30,
        };
        assert!(!due_for_reset(idle, 0, 29 * 60_000));
        assert!(due_for_reset(idle, 0, 30 * 60_000));
        let daily = ResetPolicy {
            mode: ResetMode::Daily,
            at_hour: 4,
            idle_minutes: 0,
        };
        let h = 3_600_000;
        assert!(!due_for_reset(
            daily,
            86_400_000 + 5 * h,
            86_400_000 + 6 * h
        ));
        assert!(due_for_reset(daily, 86_400_000 + 3 * h, 86_400_000 + 5 * h));
        assert!(due_for_reset(daily, 3 * h, 86_400_000 + 5 * h));
    }

    #[test]
    fn a_batch_never_mixes_senders() {
        use crate::inbound::{Origin, Trust};
        let item = |who: &str, trust: Trust| {
            let mut o = Origin::owner("testchat");
            o.sender.id = who.into();
            o.trust = trust;
            InboxItem {
                seq: 0,
                session_key: "s".into(),
                agent_id: "main".into(),
                text: who.into(),
                run_id: who.into(),
                channel: "testchat".into(),
                received_ms: 0,
                dropped: vec![],
                started: None,
                reply_to: None,
                from: Some(o),
            }
        };
        let mut q: VecDeque<InboxItem> = [
            item("owner", Trust::Owner),
            item("owner", Trust::Owner),
            item("kid", Trust::Member),
            item("owner", Trust::Owner),
        ]
        .into();
        assert_eq!(take_same_sender(&mut q, None).len(), 2);
        let kid = q.front().unwrap().origin();
        assert_eq!(take_same_sender(&mut q, Some(&kid)).len(), 1);
        // steering for the kid's turn takes none of the owner's messages
        assert!(take_same_sender(&mut q, Some(&kid)).is_empty());
        assert_eq!(q.len(), 1);
    }
}
