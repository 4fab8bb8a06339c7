//! Session metadata: the list, one session, reset and delete. Reached through [`Store::sessions`].

use redb::{ReadableDatabase, ReadableTable};

use super::*;

pub struct Sessions<'a>(&'a Store);

impl Store {
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions(self)
    }
}

impl Sessions<'_> {
    pub fn list(&self) -> Result<Vec<SessionMeta>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(SESSIONS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            out.push(dec(row.map_err(db)?.1.value())?);
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Result<Option<SessionMeta>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(SESSIONS).map_err(db)?;
        t.get(key).map_err(db)?.map(|v| dec(v.value())).transpose()
    }

    /// Starts a new session id; the old transcript stays on disk but leaves
    /// the context.
    pub fn reset(&self, key: &str) -> Result<Option<SessionMeta>, StoreError> {
        let key = key.to_string();
        self.0.write(true, move |w| {
            let mut s = w.open_table(SESSIONS).map_err(db)?;
            let meta = s
                .get(key.as_str())
                .map_err(db)?
                .map(|v| dec::<SessionMeta>(v.value()));
            match meta {
                None => Ok(None),
                Some(m) => {
                    let mut m = m?;
                    m.first_index = m.next_index;
                    m.session_id = new_id();
                    m.compaction = None;
                    m.updated_ms = now_ms();
                    s.insert(key.as_str(), enc(&m).as_slice()).map_err(db)?;
                    Ok(Some(m))
                }
            }
        })
    }

    /// Deletes the session and its whole transcript.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.0.write(true, move |w| {
            let key = key.as_str();
            let existed = w
                .open_table(SESSIONS)
                .map_err(db)?
                .remove(key)
                .map_err(db)?
                .is_some();
            let mut t = w.open_table(TRANSCRIPT).map_err(db)?;
            t.retain_in((key, 0)..=(key, u64::MAX), |_, _| false)
                .map_err(db)?;
            Ok(existed)
        })
    }
}
