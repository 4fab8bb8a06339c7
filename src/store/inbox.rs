//! Accepted, unanswered messages (the INBOX table). Reached through [`Store::inbox`].

use redb::{ReadableDatabase, ReadableTable};

use super::*;

pub struct Inbox<'a>(&'a Store);

impl Store {
    pub fn inbox(&self) -> Inbox<'_> {
        Inbox(self)
    }
}

impl Inbox<'_> {
    pub fn list(&self) -> Result<Vec<InboxItem>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(INBOX).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(dec(v.value())?);
        }
        Ok(out)
    }

    pub fn update(&self, items: &[InboxItem]) -> Result<(), StoreError> {
        let items = items.to_vec();
        self.0.write(true, move |w| {
            let mut t = w.open_table(INBOX).map_err(db)?;
            for it in &items {
                t.insert(it.seq, enc(it).as_slice()).map_err(db)?;
            }
            Ok(())
        })
    }

    /// Removes dropped items and marks their runs `dropped`.
    pub fn discard(&self, items: &[InboxItem], why: &str) -> Result<(), StoreError> {
        let (items, why) = (items.to_vec(), why.to_string());
        self.0.write(true, move |w| {
            let mut t = w.open_table(INBOX).map_err(db)?;
            let mut runs = w.open_table(RUNS).map_err(db)?;
            for it in &items {
                t.remove(it.seq).map_err(db)?;
                let rec = RunRecord {
                    run_id: it.run_id.clone(),
                    session_key: it.session_key.clone(),
                    status: RunStatus::Dropped,
                    created_ms: it.received_ms,
                    started_ms: None,
                    ended_ms: Some(now_ms()),
                    reply: None,
                    error: Some(why.clone()),
                };
                runs.insert(it.run_id.as_str(), enc(&rec).as_slice())
                    .map_err(db)?;
            }
            Ok(())
        })
    }
}
