//! Pairing: senders the owner approved, and the codes unknown senders
//! were given (OpenClaw's DM pairing). Reached through [`Store::pairing`].
//!
//! A request is keyed by its code; a sender asking again gets the same
//! code while it is valid. Codes expire after [`CODE_TTL_MS`]; at most
//! [`MAX_PENDING`] wait per channel (the oldest goes), so a flood of
//! strangers cannot grow the table.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{db, dec, enc, now_ms, Store, StoreError};
use crate::inbound::Trust;

/// Approved senders: `<channel>:<account>:<sender>` → [`Approved`].
const APPROVED: TableDefinition<&str, &[u8]> = TableDefinition::new("pairing_approved");
/// Waiting requests: code → [`Request`].
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("pairing_requests");

/// A pairing code is valid this long.
pub const CODE_TTL_MS: u64 = 60 * 60 * 1000;
/// Requests waiting per channel.
pub const MAX_PENDING: usize = 3;
/// Code alphabet: no 0/O, 1/I/L.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    pub channel: String,
    pub account: String,
    pub sender: String,
    pub name: Option<String>,
    pub trust: Trust,
    pub approved_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub code: String,
    pub channel: String,
    pub account: String,
    pub sender: String,
    pub name: Option<String>,
    pub created_ms: u64,
}

pub(super) fn create_tables(w: &redb::WriteTransaction) -> Result<(), StoreError> {
    w.open_table(APPROVED).map_err(db)?;
    w.open_table(REQUESTS).map_err(db)?;
    Ok(())
}

fn key(channel: &str, account: &str, sender: &str) -> String {
    format!("{channel}:{account}:{sender}")
}

fn new_code() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("system random source");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// The pairing records.
pub struct Pairing<'a>(&'a Store);

impl Store {
    pub fn pairing(&self) -> Pairing<'_> {
        Pairing(self)
    }
}

impl Pairing<'_> {
    /// The trust the owner gave this sender, if any.
    pub fn approved(
        &self,
        channel: &str,
        account: &str,
        sender: &str,
    ) -> Result<Option<Trust>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(APPROVED).map_err(db)?;
        let k = key(channel, account, sender);
        match t.get(k.as_str()).map_err(db)? {
            Some(v) => Ok(Some(dec::<Approved>(v.value())?.trust)),
            None => Ok(None),
        }
    }

    /// The code for this sender: the one still valid, or a new one.
    pub fn request(
        &self,
        channel: &str,
        account: &str,
        sender: &str,
        name: Option<&str>,
    ) -> Result<String, StoreError> {
        let (c, a, s) = (channel.to_string(), account.to_string(), sender.to_string());
        // shown on the owner's terminal: no control characters
        let name = name.map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        });
        self.0.write(true, move |w| {
            let mut t = w.open_table(REQUESTS).map_err(db)?;
            let now = now_ms();
            let mut mine: Vec<Request> = Vec::new();
            let mut stale = Vec::new();
            for row in t.iter().map_err(db)? {
                let (k, v) = row.map_err(db)?;
                let r: Request = dec(v.value())?;
                if now.saturating_sub(r.created_ms) > CODE_TTL_MS {
                    stale.push(k.value().to_string());
                } else if r.channel == c {
                    mine.push(r);
                }
            }
            for k in stale {
                t.remove(k.as_str()).map_err(db)?;
            }
            if let Some(r) = mine.iter().find(|r| r.account == a && r.sender == s) {
                return Ok(r.code.clone());
            }
            mine.sort_by_key(|r| r.created_ms);
            while mine.len() >= MAX_PENDING {
                let old = mine.remove(0);
                t.remove(old.code.as_str()).map_err(db)?;
            }
            let r = Request {
                code: new_code(),
                channel: c,
                account: a,
                sender: s,
                name,
                created_ms: now,
            };
            t.insert(r.code.as_str(), enc(&r).as_slice()).map_err(db)?;
            Ok(r.code)
        })
    }

    /// Valid requests, oldest first.
    pub fn requests(&self) -> Result<Vec<Request>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(REQUESTS).map_err(db)?;
        let now = now_ms();
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let r: Request = dec(row.map_err(db)?.1.value())?;
            if now.saturating_sub(r.created_ms) <= CODE_TTL_MS {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.created_ms);
        Ok(out)
    }

    /// Approved senders.
    pub fn list(&self) -> Result<Vec<Approved>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(APPROVED).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            out.push(dec(row.map_err(db)?.1.value())?);
        }
        Ok(out)
    }

    /// Approves a code: the sender gets `trust` from now on. `None` when
    /// no valid request has this code.
    pub fn approve(&self, code: &str, trust: Trust) -> Result<Option<Approved>, StoreError> {
        let code = code.trim().to_ascii_uppercase();
        self.0.write(true, move |w| {
            let mut t = w.open_table(REQUESTS).map_err(db)?;
            let Some(r) = t
                .get(code.as_str())
                .map_err(db)?
                .map(|v| dec::<Request>(v.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            if now_ms().saturating_sub(r.created_ms) > CODE_TTL_MS {
                return Ok(None);
            }
            t.remove(code.as_str()).map_err(db)?;
            let a = Approved {
                channel: r.channel,
                account: r.account,
                sender: r.sender,
                name: r.name,
                trust,
                approved_ms: now_ms(),
            };
            w.open_table(APPROVED)
                .map_err(db)?
                .insert(
                    key(&a.channel, &a.account, &a.sender).as_str(),
                    enc(&a).as_slice(),
                )
                .map_err(db)?;
            Ok(Some(a))
        })
    }

    /// Takes an approval back. Returns whether there was one.
    pub fn revoke(&self, channel: &str, account: &str, sender: &str) -> Result<bool, StoreError> {
        let k = key(channel, account, sender);
        self.0.write(true, move |w| {
            let mut t = w.open_table(APPROVED).map_err(db)?;
            let had = t.remove(k.as_str()).map_err(db)?.is_some();
            Ok(had)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_reused_bounded_and_approved_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.redb")).unwrap();
        let p = s.pairing();
        let c1 = p.request("test", "", "alice", Some("Alice")).unwrap();
        assert_eq!(c1.len(), 8);
        assert_eq!(p.request("test", "", "alice", None).unwrap(), c1);
        for who in ["b", "c", "d"] {
            std::thread::sleep(std::time::Duration::from_millis(3));
            p.request("test", "", who, None).unwrap();
        }
        // at most MAX_PENDING per channel: alice's (the oldest) went
        let waiting = p.requests().unwrap();
        assert_eq!(waiting.len(), MAX_PENDING);
        assert!(waiting.iter().all(|r| r.code != c1));
        assert_eq!(p.approve(&c1, Trust::Owner).unwrap(), None);
        let code = waiting[0].code.clone();
        let a = p
            .approve(&code.to_lowercase(), Trust::Member)
            .unwrap()
            .unwrap();
        assert_eq!((a.sender.as_str(), a.trust), ("b", Trust::Member));
        assert_eq!(p.approve(&code, Trust::Owner).unwrap(), None, "used up");
        assert_eq!(p.approved("test", "", "b").unwrap(), Some(Trust::Member));
        assert_eq!(p.approved("other", "", "b").unwrap(), None);
        drop(s);
        // persisted
        let s = Store::open(&d.path().join("s.redb")).unwrap();
        assert_eq!(s.pairing().list().unwrap().len(), 1);
        assert!(s.pairing().revoke("test", "", "b").unwrap());
        assert_eq!(s.pairing().approved("test", "", "b").unwrap(), None);
    }
}
