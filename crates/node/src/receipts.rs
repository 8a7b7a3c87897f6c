//! Block receipts (DESIGN.md "Receipts and clients"): this validator signs one receipt
//! per executed block and keeps the results trees of the latest blocks, so a tx's receipt
//! costs a lookup and an O(log n) Merkle path, not a signature.
//!
//! Older heights are rebuilt from the store (block, results, state digest) when asked;
//! ed25519 signing is deterministic, so a rebuilt block receipt is the one signed before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use stele_crypto::{merkle, ChainBinding, Digest, KeyPair, Signed};
use stele_store::{FinalLeaf, Store, StoreError};
use stele_types::{BlockReceipt, Height, Receipt, ReplicaId};

/// How many of the latest heights keep their results tree in memory (a full block's tree
/// is about 128 KiB). Clients ask for receipts within seconds of a commit.
pub const KEPT_HEIGHTS: usize = 128;

/// One executed block's signed receipt and results tree.
#[derive(Debug)]
pub struct BlockEntry {
    pub signed: Signed<BlockReceipt>,
    pub tree: merkle::Tree,
}

/// This validator's block receipts.
#[derive(Debug)]
pub struct BlockReceipts {
    id: ReplicaId,
    key: Arc<KeyPair>,
    chain: ChainBinding,
    recent: Mutex<BTreeMap<Height, Arc<BlockEntry>>>,
}

impl BlockReceipts {
    /// Receipts signed by `key` as validator `id` of `chain`.
    pub fn new(id: ReplicaId, key: Arc<KeyPair>, chain: ChainBinding) -> BlockReceipts {
        BlockReceipts {
            id,
            key,
            chain,
            recent: Mutex::new(BTreeMap::new()),
        }
    }

    /// Signs and keeps the receipt of a block just executed.
    pub fn executed(
        &self,
        height: Height,
        block_digest: Digest,
        state_digest: Digest,
        tree: merkle::Tree,
    ) -> Arc<BlockEntry> {
        let entry = Arc::new(self.sign(height, block_digest, state_digest, tree));
        self.keep(height, entry.clone());
        entry
    }

    fn sign(
        &self,
        height: Height,
        block_digest: Digest,
        state_digest: Digest,
        tree: merkle::Tree,
    ) -> BlockEntry {
        let receipt = BlockReceipt {
            replica: self.id,
            height,
            block_digest,
            results_root: tree.root(),
            state_digest,
        };
        BlockEntry {
            signed: Signed::sign(receipt, &self.chain, &*self.key),
            tree,
        }
    }

    fn keep(&self, height: Height, entry: Arc<BlockEntry>) {
        // A panic while holding the lock leaves a map of whole entries: still right.
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(height, entry);
        while recent.len() > KEPT_HEIGHTS {
            recent.pop_first();
        }
    }

    /// The entry of committed `height`: kept, or rebuilt from `store`.
    pub fn entry(&self, store: &Store, height: Height) -> Result<Arc<BlockEntry>, StoreError> {
        if let Some(e) = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&height)
        {
            return Ok(e.clone());
        }
        let missing = |what: &str| StoreError::Inconsistent {
            path: store.path().to_owned(),
            problem: format!("a receipt is asked for height {height}, which has no {what}"),
        };
        let block = store.block(height)?.ok_or_else(|| missing("block"))?;
        let results = store.results(height)?.ok_or_else(|| missing("results"))?;
        let state_digest = store
            .state_digest(height)?
            .ok_or_else(|| missing("state digest"))?;
        if results.len() != block.txs.len() {
            return Err(missing("result for each tx"));
        }
        let tree = stele_ledger::results_tree(block.tx_hashes(), &results);
        let entry = Arc::new(self.sign(height, block.digest(), state_digest, tree));
        self.keep(height, entry.clone());
        Ok(entry)
    }

    /// This validator's receipt for `leaf`.
    pub fn receipt(&self, store: &Store, leaf: &FinalLeaf) -> Result<Receipt, StoreError> {
        let entry = self.entry(store, leaf.height)?;
        let proof =
            entry
                .tree
                .prove(leaf.index as usize)
                .ok_or_else(|| StoreError::Inconsistent {
                    path: store.path().to_owned(),
                    problem: format!(
                        "tx {} is indexed at height {} index {}, past the block's {} txs",
                        leaf.leaf_tx,
                        leaf.height,
                        leaf.index,
                        entry.tree.len()
                    ),
                })?;
        let receipt = Receipt {
            block: entry.signed.clone(),
            tx_hash: leaf.leaf_tx,
            result: leaf.leaf_result,
            proof,
        };
        debug_assert!(receipt.proves_leaf(), "a receipt proves its own leaf");
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::ChainId;
    use stele_types::{results_leaf, TxResult};

    fn book() -> BlockReceipts {
        let chain = ChainBinding::new(ChainId::new("t").unwrap(), Digest::of(b"genesis"));
        BlockReceipts::new(ReplicaId(1), Arc::new(KeyPair::generate()), chain)
    }

    fn tree(n: usize) -> merkle::Tree {
        let leaves: Vec<_> = (0..n)
            .map(|i| results_leaf(&Digest::of(&i.to_le_bytes()), TxResult::Ok))
            .collect();
        merkle::Tree::new(&leaves)
    }

    #[test]
    fn one_signature_per_block_covers_every_txs_proof() {
        let b = book();
        let e = b.executed(Height(3), Digest::of(b"b3"), Digest::of(b"s3"), tree(7));
        assert_eq!(e.signed.height, Height(3));
        assert_eq!(e.signed.replica, ReplicaId(1));
        assert_eq!(e.signed.results_root, tree(7).root());
        for i in 0..7usize {
            let r = Receipt {
                block: e.signed.clone(),
                tx_hash: Digest::of(&i.to_le_bytes()),
                result: TxResult::Ok,
                proof: e.tree.prove(i).unwrap(),
            };
            assert!(r.proves_leaf(), "leaf {i}");
        }
    }

    #[test]
    fn only_the_latest_heights_are_kept() {
        let b = book();
        for h in 1..=(KEPT_HEIGHTS as u64 + 10) {
            b.executed(
                Height(h),
                Digest::of(&h.to_le_bytes()),
                Digest::of(b"s"),
                tree(1),
            );
        }
        let kept = b.recent.lock().unwrap();
        assert_eq!(kept.len(), KEPT_HEIGHTS);
        assert_eq!(kept.keys().next(), Some(&Height(11)));
    }
}
