//! Device tokens: what the gateway hands a client that signed in with the
//! gateway token and proved a device key (OpenClaw's `auth.deviceToken` in
//! hello-ok), so that it can sign in again without the token. Reached
//! through [`Store::devices`].
//!
//! Only a SHA-256 of each token is kept, with the device id (the SHA-256
//! of its public key) and a fingerprint of the gateway token it was issued
//! under: rotating the gateway token invalidates every device token. At
//! most [`MAX_DEVICES`] are kept; the oldest goes.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{db, dec, enc, Store, StoreError};

/// device id → [`DeviceToken`].
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("device_tokens");

pub const MAX_DEVICES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    pub device: String,
    /// SHA-256 (hex) of the token.
    pub hash: String,
    /// [`crate::gateway::auth::Token::fingerprint`] at issue.
    pub under: String,
    pub client: String,
    pub issued_ms: u64,
}

pub struct Devices<'a>(&'a Store);

impl Store {
    pub fn devices(&self) -> Devices<'_> {
        Devices(self)
    }
}

impl Devices<'_> {
    pub fn get(&self, device: &str) -> Result<Option<DeviceToken>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = match r.open_table(DEVICES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db(e)),
        };
        match t.get(device).map_err(db)? {
            Some(v) => Ok(Some(dec(v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores (or replaces) the token of `d.device`, evicting the oldest
    /// device past [`MAX_DEVICES`].
    pub fn put(&self, d: DeviceToken) -> Result<(), StoreError> {
        self.0.write(true, move |w| {
            let mut t = w.open_table(DEVICES).map_err(db)?;
            t.insert(d.device.as_str(), enc(&d).as_slice())
                .map_err(db)?;
            let mut all: Vec<DeviceToken> = Vec::new();
            for row in t.iter().map_err(db)? {
                all.push(dec(row.map_err(db)?.1.value())?);
            }
            if all.len() > MAX_DEVICES {
                all.sort_by_key(|x| x.issued_ms);
                for old in &all[..all.len() - MAX_DEVICES] {
                    t.remove(old.device.as_str()).map_err(db)?;
                }
            }
            Ok(())
        })
    }

    pub fn list(&self) -> Result<Vec<DeviceToken>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = match r.open_table(DEVICES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(db(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            out.push(dec(row.map_err(db)?.1.value())?);
        }
        Ok(out)
    }

    pub fn revoke(&self, device: &str) -> Result<bool, StoreError> {
        let k = device.to_string();
        self.0.write(true, move |w| {
            let mut t = w.open_table(DEVICES).map_err(db)?;
            let had = t.remove(k.as_str()).map_err(db)?.is_some();
            Ok(had)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_replaced_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb")).unwrap();
        assert_eq!(s.devices().get("a").unwrap(), None);
        for i in 0..MAX_DEVICES + 5 {
            s.devices()
                .put(DeviceToken {
                    device: format!("d{i}"),
                    hash: "h".into(),
                    under: "u".into(),
                    client: "c".into(),
                    issued_ms: i as u64,
                })
                .unwrap();
        }
        assert_eq!(s.devices().list().unwrap().len(), MAX_DEVICES);
        assert_eq!(s.devices().get("d0").unwrap(), None, "the oldest went");
        assert!(s
            .devices()
            .get(&format!("d{}", MAX_DEVICES + 4))
            .unwrap()
            .is_some());
        assert!(s.devices().revoke("d10").unwrap());
        assert!(!s.devices().revoke("d10").unwrap());
    }
}
