//! The engine's durable consensus state (`Persist`): sent PRE-PREPAREs and PREPAREs with
//! their bodies, prepared certificates, the VIEW-CHANGE view, the accepted NEW-VIEW and
//! the stable checkpoint, each under its `DurableKey` in the `consensus` family.
//!
//! Each `persist` is one synced write. A stable checkpoint is written in the same batch
//! as the range deletes that discard the consensus log at or below it, so a restart sees
//! either the old checkpoint with its log or the new one without it, never a mix. The
//! committed `blocks` and `certs` are never touched here.

use rocksdb::{IteratorMode, WriteBatch};
use stele_types::codec::{self, MAX_DECODE_LEN};
use stele_types::{CheckpointCertificate, DurableEntry, DurableKey, Height};

use crate::error::StoreError;
use crate::keys::CONSENSUS;
use crate::store::Store;

impl Store {
    /// Writes `entries` in one synced batch; an entry replaces any earlier one with the
    /// same key. A `StableCheckpoint` among them also discards, in the same batch, every
    /// PRE-PREPARE, PREPARE and prepared certificate at or below its height; a
    /// checkpoint below the stored one is refused and nothing is written.
    pub fn persist(&self, entries: &[DurableEntry]) -> Result<(), StoreError> {
        let _serial = self.durable_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut stored = self.stable_checkpoint()?.map(|c| c.height);
        let mut gc_height: Option<Height> = None;
        for e in entries {
            if let DurableEntry::StableCheckpoint(cert) = e {
                if let Some(s) = stored {
                    if cert.height < s {
                        return Err(StoreError::CheckpointRegression {
                            stored: s,
                            found: cert.height,
                        });
                    }
                }
                stored = Some(cert.height);
                gc_height = gc_height.max(Some(cert.height));
            }
        }
        let cf = self.cf(CONSENSUS);
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put_cf(cf, e.key().to_bytes(), codec::encode(e));
        }
        // After the puts, so a PREPARE persisted in the same batch below the checkpoint
        // is discarded too.
        // A kept snapshot's height became stable: its certificate is what lets a peer
        // trust it, kept as long as the snapshot (the stable one moves on).
        for e in entries {
            if let DurableEntry::StableCheckpoint(c) = e {
                if self.keeps_snapshot(c.height) {
                    batch.put_cf(
                        self.cf(crate::keys::META),
                        crate::keys::snapshot_cert_key(c.height),
                        codec::encode(c),
                    );
                }
            }
        }
        if let Some(h) = gc_height {
            for tag in DurableKey::GC_TAGS {
                batch.delete_range_cf(cf, vec![tag], DurableKey::gc_bound(tag, h));
            }
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| self.rocks("persist consensus state", CONSENSUS, e))?;
        debug_assert!(gc_height.is_none() || self.stable_checkpoint().ok().flatten().is_some());
        if gc_height.is_some() {
            self.prune_kept_snapshots()?;
        }
        Ok(())
    }

    /// Writes a new stable checkpoint certificate and discards the consensus log at or
    /// below it, in one synced write.
    pub fn persist_stable_checkpoint(
        &self,
        cert: &CheckpointCertificate,
    ) -> Result<(), StoreError> {
        self.persist(&[DurableEntry::StableCheckpoint(cert.clone())])
    }

    /// Every durable consensus entry, in key order (kind, height, view): what the engine
    /// rebuilds itself from after a restart.
    pub fn durable_entries(&self) -> Result<Vec<DurableEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CONSENSUS), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.rocks("scan", CONSENSUS, e))?;
            out.push(self.decode_durable(&key, &value)?);
        }
        Ok(out)
    }

    /// The stored stable checkpoint certificate, if any.
    pub fn stable_checkpoint(&self) -> Result<Option<CheckpointCertificate>, StoreError> {
        let key = DurableKey::StableCheckpoint.to_bytes();
        let Some(raw) = self.get_raw(CONSENSUS, &key)? else {
            return Ok(None);
        };
        match self.decode_durable(&key, &raw)? {
            DurableEntry::StableCheckpoint(c) => Ok(Some(c)),
            other => Err(self.corrupt(
                CONSENSUS,
                &key,
                format!("expected a stable checkpoint, found {:?}", other.key()),
            )),
        }
    }

    /// Decodes a consensus entry and checks it sits under its own key.
    pub(crate) fn decode_durable(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<DurableEntry, StoreError> {
        let entry: DurableEntry = codec::decode(value, MAX_DECODE_LEN)
            .map_err(|e| self.corrupt(CONSENSUS, key, e.to_string()))?;
        if entry.key().to_bytes() != key {
            return Err(self.corrupt(
                CONSENSUS,
                key,
                format!("holds an entry whose key is {:?}", entry.key()),
            ));
        }
        Ok(entry)
    }
}
