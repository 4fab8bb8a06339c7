//! Replies waiting to be delivered, per channel (the OUTBOX table). Reached through [`Store::outbox`].

use redb::{ReadableDatabase, ReadableTable};

use super::*;

pub struct Outbox<'a>(&'a Store);

impl Store {
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox(self)
    }
}

impl Outbox<'_> {
    /// Replies waiting for `channel`, oldest first.
    pub fn pending(&self, channel: &str) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let r = self.0.db.begin_read().map_err(db)?;
        let t = r.open_table(OUTBOX).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            let o: OutboxItem = dec(v.value())?;
            if o.channel() == channel {
                out.push((k.value(), o));
            }
        }
        Ok(out)
    }

    /// Records a reply's delivery step. Durable; a row already gone is
    /// left gone.
    pub fn set_wire(&self, seq: u64, wire: Wire) -> Result<(), StoreError> {
        self.0.write(true, move |w| {
            let mut t = w.open_table(OUTBOX).map_err(db)?;
            let row = t
                .get(seq)
                .map_err(db)?
                .map(|v| dec::<OutboxItem>(v.value()));
            if let Some(o) = row {
                let mut o = o?;
                o.wire = Some(wire);
                t.insert(seq, enc(&o).as_slice()).map_err(db)?;
            }
            Ok(())
        })
    }

    /// Queues a reply that is no run's (a command's answer). Durable.
    pub fn push(&self, item: OutboxItem) -> Result<(), StoreError> {
        self.0.write(true, move |w| push_outbox(w, &[item]))
    }

    /// Queues a message once per idempotency key (`send` to a channel):
    /// `Duplicate` with the first record when the key was used.
    pub fn push_once(
        &self,
        item: OutboxItem,
        key: &str,
        rec: &IdemRecord,
    ) -> Result<(), StoreError> {
        let (key, rec) = (key.to_string(), rec.clone());
        self.0.write(true, move |w| {
            let mut t = w.open_table(IDEM).map_err(db)?;
            if let Some(old) = t.get(key.as_str()).map_err(db)? {
                return Err(StoreError::Duplicate(Box::new(dec(old.value())?)));
            }
            t.insert(key.as_str(), enc(&rec).as_slice()).map_err(db)?;
            push_outbox(w, &[item])
        })
    }

    /// Removes delivered replies. Durable.
    pub fn done(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.remove(seqs, true)
    }

    /// Removes delivered replies without waiting for the disk: for a step
    /// whose loss in a crash is harmless (MQTT QoS 2 after PUBCOMP: the row
    /// comes back as "released" and only its PUBREL is sent again).
    pub fn done_lazy(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.remove(seqs, false)
    }

    fn remove(&self, seqs: &[u64], durable: bool) -> Result<(), StoreError> {
        let seqs = seqs.to_vec();
        self.0.write(durable, move |w| {
            let mut t = w.open_table(OUTBOX).map_err(db)?;
            for s in &seqs {
                t.remove(*s).map_err(db)?;
            }
            Ok(())
        })
    }

    /// Drops replies for channels not in `keep` (a channel removed from the
    /// config); returns how many.
    pub fn drop_except(&self, keep: &[&str]) -> Result<usize, StoreError> {
        let keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        self.0.write(true, move |w| {
            let mut t = w.open_table(OUTBOX).map_err(db)?;
            let mut n = 0;
            t.retain(|_, v| {
                let keep_it = serde_json::from_slice::<OutboxItem>(v)
                    .is_ok_and(|o| keep.iter().any(|k| k == o.channel()));
                n += usize::from(!keep_it);
                keep_it
            })
            .map_err(db)?;
            Ok(n)
        })
    }
}
