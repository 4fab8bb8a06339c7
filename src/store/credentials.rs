//! Provider credential health, for `provider::credentials`. Reached through [`Store::credentials`].

use redb::{ReadableDatabase, ReadableTable};

use super::*;

pub struct Credentials<'a>(&'a Store);

impl Store {
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials(self)
    }
}

impl Credentials<'_> {
    /// Saved credential states (raw JSON), for the provider layer.
    pub fn list(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(CREDENTIALS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Saves one credential state durably (failures are rare; a restart
    /// right after must still see the cooldown).
    pub fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_string();
        self.0.write(true, move |w| {
            let mut t = w.open_table(CREDENTIALS).map_err(db)?;
            t.insert(key.as_str(), value.as_slice()).map_err(db)?;
            Ok(())
        })
    }
}
