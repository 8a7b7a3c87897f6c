//! Pruning (issue 24): a validator with `retain_blocks` set removes the blocks below a
//! horizon, with their certificates, results, openings, digest-index entries and the tx
//! and nonce index entries of their applied txs, in one synced batch, and compacts the
//! height-keyed families over that range so the space is actually freed. Execution never
//! reads what is removed (it reads accounts and records only), and a kept snapshot's
//! block stays, so peers can still start from it.

use rocksdb::WriteBatch;
use stele_types::Height;

use crate::error::StoreError;
use crate::keys::*;
use crate::store::Store;

impl Store {
    /// Removes every block below `target` (capped at the tip and at the lowest kept
    /// snapshot's height, or the one still being kept) and moves the horizon there.
    /// Returns the horizon after.
    pub fn prune_below(&self, target: Height) -> Result<Height, StoreError> {
        let horizon = self.horizon()?;
        let mut target = target.min(self.latest_height());
        // Commits go on while the background thread registers a snapshot, so the tip
        // can be past a snapshot that is not in the kept ones yet; its block stays too.
        // Pending first: a snapshot enters the kept ones before it stops being pending,
        // so read in this order it is seen in one or the other (in the other order, it
        // could move between the two reads and be in neither).
        let pending = self.pending_snapshot_height();
        let lowest = self.snapshot_heights().first().copied();
        if let Some(lowest) = lowest.into_iter().chain(pending).min() {
            target = target.min(lowest);
        }
        if target <= horizon {
            return Ok(horizon);
        }
        let mut batch = WriteBatch::default();
        self.delete_blocks(&mut batch, horizon, target)?;
        let (from, to) = (height_key(horizon), height_key(target));
        batch.put_cf(self.cf(META), HORIZON_KEY, to);
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.rocks(&format!("prune below height {target}"), BLOCKS, e))?;
        // Range tombstones free nothing until compaction drops what they cover.
        for cf in [BLOCKS, CERTS, RESULTS, OPENINGS] {
            self.db
                .compact_range_cf(self.cf(cf), Some(&from[..]), Some(&to[..]));
        }
        Ok(target)
    }

    /// Adds to `batch` the removal of blocks `from..to` with their certificates, results,
    /// openings, digest-index and tx/nonce index entries (pruning, and a store jumping to
    /// a snapshot).
    pub(crate) fn delete_blocks(
        &self,
        batch: &mut WriteBatch,
        from: Height,
        to: Height,
    ) -> Result<(), StoreError> {
        for h in from.0..to.0 {
            let h = Height(h);
            let Some(block) = self.block(h)? else {
                return Err(StoreError::Inconsistent {
                    path: self.path.clone(),
                    problem: format!("block {h} is missing above the horizon {from}"),
                });
            };
            let results = self.results(h)?.unwrap_or_default();
            for ((tx, hash), result) in block.txs.with_hashes().zip(&results) {
                if result.is_applied() {
                    batch.delete_cf(self.cf(TX_INDEX), hash.as_bytes());
                    batch.delete_cf(self.cf(NONCE_INDEX), nonce_key(&tx.sender, tx.nonce));
                }
            }
            batch.delete_cf(self.cf(BLOCK_INDEX), block.digest().as_bytes());
        }
        let (from, to) = (height_key(from), height_key(to));
        for cf in [BLOCKS, CERTS, RESULTS, OPENINGS] {
            batch.delete_range_cf(self.cf(cf), from, to);
        }
        Ok(())
    }
}
