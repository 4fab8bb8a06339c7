//! Session transcripts: reads for the context and the history, appends, compaction and crash rollback. Reached through [`Store::transcripts`].

use redb::{ReadableDatabase, ReadableTable};

use super::*;

pub struct Transcripts<'a>(&'a Store);

impl Store {
    pub fn transcripts(&self) -> Transcripts<'_> {
        Transcripts(self)
    }
}

impl Transcripts<'_> {
    /// The last `limit` entries of the session's current transcript.
    pub fn tail(&self, session: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .tail_indexed(session, limit)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// [`tail`](Self::tail) with each entry's index in the transcript.
    pub fn tail_indexed(
        &self,
        session: &str,
        limit: usize,
    ) -> Result<Vec<(u64, Entry)>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let first = match r
            .open_table(SESSIONS)
            .map_err(db)?
            .get(session)
            .map_err(db)?
        {
            Some(v) => dec::<SessionMeta>(v.value())?.first_index,
            None => return Ok(vec![]),
        };
        let t = r.open_table(TRANSCRIPT).map_err(db)?;
        let mut out = Vec::new();
        for row in t
            .range((session, first)..=(session, u64::MAX))
            .map_err(db)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(db)?;
            out.push((k.value().1, dec(v.value())?));
        }
        out.reverse();
        Ok(out)
    }

    /// The context of the session's next model call: the latest compaction
    /// summary, then at most `limit` entries from its cut on (the summary
    /// entry itself is not among them).
    pub fn context(&self, session: &str, limit: usize) -> Result<SessionContext, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let Some(meta) = r
            .open_table(SESSIONS)
            .map_err(db)?
            .get(session)
            .map_err(db)?
            .map(|v| dec::<SessionMeta>(v.value()))
            .transpose()?
        else {
            return Ok(SessionContext::default());
        };
        let t = r.open_table(TRANSCRIPT).map_err(db)?;
        let mut out = SessionContext::default();
        let mut start = meta.first_index;
        let mut skip = None;
        if let Some(c) = meta
            .compaction
            .filter(|c| c.summary_index >= meta.first_index)
        {
            if let Some(v) = t.get((session, c.summary_index)).map_err(db)? {
                out.summary = Some(dec::<Entry>(v.value())?.text);
                start = c.keep_from.max(meta.first_index);
                skip = Some(c.summary_index);
            }
        }
        for row in t
            .range((session, start)..=(session, u64::MAX))
            .map_err(db)?
            .rev()
        {
            if out.entries.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(db)?;
            let i = k.value().1;
            if Some(i) != skip {
                out.entries.push((i, dec(v.value())?));
            }
        }
        out.entries.reverse();
        // the limit may have cut a tool round: results without their call
        // are dropped (providers reject them)
        let orphans = out
            .entries
            .iter()
            .take_while(|(_, e)| e.role == Role::Tool)
            .count();
        out.entries.drain(..orphans);
        Ok(out)
    }

    /// Records a compaction: appends the summary entry and moves the
    /// context's cut to `keep_from`. Durable. Returns the summary's index.
    pub fn compact(
        &self,
        session: &str,
        agent_id: &str,
        summary: Entry,
        keep_from: u64,
    ) -> Result<u64, StoreError> {
        let (session, agent_id) = (session.to_string(), agent_id.to_string());
        self.0.write(true, move |w| {
            let mut meta = session_meta_mut(w, &session, &agent_id)?;
            let at = meta.next_index;
            append(w, &mut meta, &[summary])?;
            meta.compaction = Some(Compaction {
                summary_index: at,
                keep_from,
            });
            put_meta(w, &meta)?;
            Ok(at)
        })
    }

    /// Every stored entry of a session, older session ids (before a reset)
    /// included, for the memory index.
    pub fn all(&self, session: &str) -> Result<Vec<Entry>, StoreError> {
        self.before(session, u64::MAX)
    }

    /// The stored entries of a session with an index below `end`.
    pub fn before(&self, session: &str, end: u64) -> Result<Vec<Entry>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(TRANSCRIPT).map_err(db)?;
        let mut out = Vec::new();
        for row in t.range((session, 0)..(session, end)).map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(dec(v.value())?);
        }
        Ok(out)
    }

    /// Appends transcript entries of a running turn (tool calls, results).
    /// Not durable by itself: see [`lazy`].
    pub fn append(
        &self,
        session: &str,
        agent_id: &str,
        entries: &[Entry],
    ) -> Result<(), StoreError> {
        let (session, agent_id, entries) =
            (session.to_string(), agent_id.to_string(), entries.to_vec());
        self.0.write(false, move |w| {
            let mut meta = session_meta_mut(w, &session, &agent_id)?;
            append(w, &mut meta, &entries)?;
            put_meta(w, &meta)
        })
    }

    /// After a crash: deletes transcript entries a run wrote from `from` on,
    /// so the message runs again from a clean state.
    pub fn rollback_partial(&self, session: &str, from: u64) -> Result<u64, StoreError> {
        let session = session.to_string();
        self.0.write(true, move |w| {
            let session = session.as_str();
            let mut n = 0;
            let mut t = w.open_table(TRANSCRIPT).map_err(db)?;
            let keys: Vec<u64> = t
                .range((session, from)..=(session, u64::MAX))
                .map_err(db)?
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()
                .map_err(db)?;
            for k in keys {
                t.remove((session, k)).map_err(db)?;
                n += 1;
            }
            let mut s = w.open_table(SESSIONS).map_err(db)?;
            let meta = s
                .get(session)
                .map_err(db)?
                .map(|v| dec::<SessionMeta>(v.value()));
            if let Some(meta) = meta {
                let mut meta = meta?;
                meta.next_index = meta.next_index.min(from.max(meta.first_index));
                // a compaction the rolled-back run made is undone with it
                if meta
                    .compaction
                    .is_some_and(|c| c.summary_index >= meta.next_index)
                {
                    meta.compaction = None;
                }
                s.insert(session, enc(&meta).as_slice()).map_err(db)?;
            }
            Ok(n)
        })
    }
}
