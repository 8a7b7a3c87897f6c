//! Blocks: a header {height, timestamp_ms, tx_root} and the transactions.
//!
//! The digest is H(header). View and proposer are not in the header: they live in the
//! signed PRE-PREPARE, so a block prepared in view v and re-proposed in view v' keeps its
//! digest. Heights are pipelined, so blocks are chained by the state digest, not by a
//! parent hash.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stele_crypto::{merkle, Digest};

use crate::codec;
use crate::ids::Height;
use crate::tx::{check_well_formed_sized, tx_hash_and_len, Transaction, TxError, TxHash};

/// The part of a block that its digest covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub height: Height,
    /// Proposer's clock, made monotonic over non-null blocks; 0 for a null block.
    pub timestamp_ms: u64,
    /// Merkle root over the tx hashes, in block order.
    pub tx_root: Digest,
}

impl BlockHeader {
    /// The block digest d = H(header).
    pub fn digest(&self) -> Digest {
        Digest::of_parts("stele/block-header", &[&codec::encode(self)])
    }
}

/// A block: header and transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Txs,
}

/// A block's transactions, shared: a body is held by its slot, its PREPARE record, its
/// delivery, the store's write and the messages that carry it, and a clone of 1,000 txs
/// was 1,000 allocations and about 200 KB copied each time. Encodes as a plain sequence.
///
/// Each tx's hash and encoded length are computed once, the first time they are needed,
/// and shared by every holder of the list: the Merkle root, the content checks,
/// execution, the store's indexes, the receipts and the pool's removal all read them
/// here. Hashed again at each of those steps, a tx cost a backup about seven encodings
/// and SHA-256s.
#[derive(Clone, Debug, Default)]
pub struct Txs(Arc<TxList>);

#[derive(Debug, Default)]
struct TxList {
    /// Never changed once the list is made: the hashes below stay theirs.
    txs: Vec<Transaction>,
    /// `tx_hash` and encoded length of each tx, in order: computed the first time they
    /// are asked for, so a block read from the store only for its header or one tx does
    /// not hash every tx.
    hashed: OnceLock<(Vec<TxHash>, Vec<usize>)>,
}

impl TxList {
    fn new(txs: Vec<Transaction>) -> TxList {
        TxList {
            txs,
            hashed: OnceLock::new(),
        }
    }

    fn hashed(&self) -> &(Vec<TxHash>, Vec<usize>) {
        self.hashed
            .get_or_init(|| self.txs.iter().map(tx_hash_and_len).unzip())
    }
}

impl Txs {
    /// The txs, owned: without a copy when this is the last holder.
    pub fn into_vec(self) -> Vec<Transaction> {
        Arc::try_unwrap(self.0).map_or_else(|shared| shared.txs.clone(), |list| list.txs)
    }

    /// Changes a copy of the txs, which then replaces this list (hashed anew when
    /// asked): for tests and forgeries.
    pub fn modify(&mut self, f: impl FnOnce(&mut Vec<Transaction>)) {
        let mut txs = self.0.txs.clone();
        f(&mut txs);
        *self = Txs::from(txs);
    }

    /// The tx hashes, in block order.
    pub fn hashes(&self) -> &[TxHash] {
        &self.0.hashed().0
    }

    /// Each tx with its hash, in block order.
    pub fn with_hashes(&self) -> impl ExactSizeIterator<Item = (&Transaction, TxHash)> {
        self.0.txs.iter().zip(self.hashes().iter().copied())
    }

    /// The length of each tx's encoding, in block order.
    pub fn lens(&self) -> &[usize] {
        &self.0.hashed().1
    }

    /// Whether the cached hashes and lengths are those of the txs. Not a debug
    /// assertion on the hot path: it would hash every tx again, which is what the cache
    /// saves; the fields are private and every constructor computes them.
    #[cfg(test)]
    fn is_consistent(&self) -> bool {
        let (hashes, lens) = self.0.hashed();
        let txs = &self.0.txs;
        hashes.len() == txs.len()
            && lens.len() == txs.len()
            && txs
                .iter()
                .zip(hashes.iter().zip(lens))
                .all(|(t, (h, n))| tx_hash_and_len(t) == (*h, *n))
    }
}

// The hashes and lengths follow from the txs.
impl PartialEq for Txs {
    fn eq(&self, other: &Txs) -> bool {
        self.0.txs == other.0.txs
    }
}
impl Eq for Txs {}

impl Deref for Txs {
    type Target = [Transaction];
    fn deref(&self) -> &[Transaction] {
        &self.0.txs
    }
}

impl From<Vec<Transaction>> for Txs {
    fn from(txs: Vec<Transaction>) -> Txs {
        Txs(Arc::new(TxList::new(txs)))
    }
}

impl<'a> IntoIterator for &'a Txs {
    type Item = &'a Transaction;
    type IntoIter = std::slice::Iter<'a, Transaction>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.txs.iter()
    }
}

impl Serialize for Txs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.txs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Txs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Txs, D::Error> {
        codec::grown_vec(d).map(Txs::from)
    }
}

/// Why a block body is unacceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block has {count} txs, the maximum is {max}")]
    TooManyTxs { count: usize, max: usize },
    #[error("block txs encode to {len} bytes, the maximum is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("tx {hash} appears twice in the block")]
    DuplicateTx { hash: TxHash },
    #[error("tx {index} of the block: {source}")]
    BadTx { index: usize, source: TxError },
    #[error("block does not match height {height} digest {digest}")]
    Mismatch { height: Height, digest: Digest },
}

impl Block {
    /// A block of `txs` at `height`.
    pub fn new(height: Height, timestamp_ms: u64, txs: Vec<Transaction>) -> Block {
        let txs = Txs::from(txs);
        let tx_root = merkle::root(txs.hashes());
        Block {
            header: BlockHeader {
                height,
                timestamp_ms,
                tx_root,
            },
            txs,
        }
    }

    /// The null block that fills a view-change gap at `height`: {height, 0, root of no txs}.
    pub fn null(height: Height) -> Block {
        Block::new(height, 0, Vec::new())
    }

    /// The null block's digest at `height`, without building it.
    pub fn null_digest(height: Height) -> Digest {
        Block::null(height).digest()
    }

    /// Whether this is a null block.
    pub fn is_null(&self) -> bool {
        self.txs.is_empty() && self.header.timestamp_ms == 0
    }

    /// The block digest, H(header).
    pub fn digest(&self) -> Digest {
        self.header.digest()
    }

    /// The height.
    pub fn height(&self) -> Height {
        self.header.height
    }

    /// The tx hashes in block order.
    pub fn tx_hashes(&self) -> &[TxHash] {
        self.txs.hashes()
    }

    /// Whether this body is the block named by (height, digest): the header hashes to
    /// `digest`, the txs' Merkle root is the header's, and the header's height is `height`.
    pub fn matches(&self, height: Height, digest: &Digest) -> bool {
        self.header.height == height
            && self.header.digest() == *digest
            && merkle::root(self.txs.hashes()) == self.header.tx_root
    }

    /// Like [`Block::matches`], as a `Result`.
    pub fn check_matches(&self, height: Height, digest: &Digest) -> Result<(), BlockError> {
        if self.matches(height, digest) {
            Ok(())
        } else {
            Err(BlockError::Mismatch {
                height,
                digest: *digest,
            })
        }
    }

    /// The content checks of a proposed body: count and size limits, every tx
    /// well-formed, no tx twice. Signatures (which bind the chain) are checked
    /// elsewhere, batched.
    pub fn check_content(&self, max_txs: usize, max_bytes: usize) -> Result<(), BlockError> {
        if self.txs.len() > max_txs {
            return Err(BlockError::TooManyTxs {
                count: self.txs.len(),
                max: max_txs,
            });
        }
        let mut seen = HashSet::with_capacity(self.txs.len());
        let mut total = 0usize;
        for (index, ((tx, hash), len)) in self.txs.with_hashes().zip(self.txs.lens()).enumerate() {
            check_well_formed_sized(tx, *len)
                .map_err(|source| BlockError::BadTx { index, source })?;
            total += len;
            if !seen.insert(hash) {
                return Err(BlockError::DuplicateTx { hash });
            }
        }
        if total > max_bytes {
            return Err(BlockError::TooLarge {
                len: total,
                max: max_bytes,
            });
        }
        Ok(())
    }

    /// The Merkle proof that tx `index` is in this block.
    pub fn prove_tx(&self, index: usize) -> Option<merkle::Proof> {
        merkle::prove(self.tx_hashes(), index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Amount, Nonce};
    use crate::tx::{sign_tx, Op, TxBody};
    use stele_crypto::{ChainBinding, ChainId, KeyPair};

    fn txs(n: u64) -> Vec<Transaction> {
        let k = KeyPair::from_seed([3; 32]);
        let chain = ChainBinding::new(ChainId::new("t").unwrap(), Digest::ZERO);
        (0..n)
            .map(|i| {
                sign_tx(
                    TxBody {
                        sender: k.public(),
                        nonce: Nonce(i),
                        op: Op::Transfer {
                            to: KeyPair::from_seed([4; 32]).public(),
                            amount: Amount(1 + i),
                        },
                    },
                    &chain,
                    &k,
                )
            })
            .collect()
    }

    #[test]
    fn shared_txs_encode_as_a_plain_sequence_and_clones_share_them() {
        let b = Block::new(Height(5), 1000, txs(3));
        let plain = codec::encode(&(&b.header, b.txs.to_vec()));
        assert_eq!(codec::encode(&b), plain);
        let back: Block = codec::decode(&plain, plain.len()).expect("decodes");
        assert_eq!(back, b);
        let c = b.clone();
        assert!(
            std::ptr::eq(b.txs.as_ptr(), c.txs.as_ptr()),
            "a clone shares the txs"
        );
        let mut d = b.clone();
        d.txs.modify(|t| {
            t.pop();
        });
        assert_eq!(b.txs.len(), 3, "changing a clone leaves the original");
        assert_eq!(d.txs.len(), 2);
    }

    #[test]
    fn hashes_and_lengths_follow_the_txs_when_made_decoded_or_changed() {
        let b = Block::new(Height(5), 1000, txs(4));
        assert!(b.txs.is_consistent());
        assert_eq!(b.tx_hashes()[2], crate::tx::tx_hash(&b.txs[2]));
        assert_eq!(b.txs.lens()[1], codec::encoded_len(&b.txs[1]));
        let bytes = codec::encode(&b);
        let back: Block = codec::decode(&bytes, bytes.len()).expect("decodes");
        assert!(back.txs.is_consistent());
        assert_eq!(back.tx_hashes(), b.tx_hashes());
        let mut changed = b.clone();
        changed.txs.modify(|t| t.swap(0, 3));
        assert!(changed.txs.is_consistent());
        assert_eq!(changed.tx_hashes()[0], b.tx_hashes()[3]);
        assert_eq!(
            b.tx_hashes()[0],
            crate::tx::tx_hash(&b.txs[0]),
            "the original kept"
        );
    }

    #[test]
    fn a_block_matches_its_own_height_and_digest() {
        let b = Block::new(Height(5), 1000, txs(3));
        assert!(b.matches(Height(5), &b.digest()));
        assert!(!b.matches(Height(6), &b.digest()));
    }

    #[test]
    fn header_matching_but_txs_not_does_not_match() {
        let b = Block::new(Height(5), 1000, txs(3));
        let d = b.digest();
        let mut swapped = b.clone();
        swapped.txs.modify(|t| t.swap(0, 1));
        assert!(!swapped.matches(Height(5), &d));
        let mut fewer = b.clone();
        fewer.txs.modify(|t| {
            t.pop();
        });
        assert!(!fewer.matches(Height(5), &d));
        // The reverse: the txs are right but the header is another.
        let mut other_header = b.clone();
        other_header.header.timestamp_ms += 1;
        assert!(!other_header.matches(Height(5), &d));
    }

    #[test]
    fn header_height_must_be_the_height_asked_for() {
        let mut b = Block::new(Height(5), 1000, txs(1));
        b.header.height = Height(6);
        let d = b.digest();
        assert!(b.matches(Height(6), &d));
        assert!(!b.matches(Height(5), &d));
    }

    #[test]
    fn null_blocks_are_recognised_and_distinct_per_height() {
        let n = Block::null(Height(3));
        assert!(n.is_null());
        assert_eq!(n.header.tx_root, merkle::empty_root());
        assert_ne!(Block::null_digest(Height(3)), Block::null_digest(Height(4)));
        assert!(!Block::new(Height(3), 1, vec![]).is_null());
    }

    #[test]
    fn a_tx_twice_is_refused() {
        let mut t = txs(2);
        t.push(t[0].clone());
        let b = Block::new(Height(1), 1, t);
        assert!(matches!(
            b.check_content(10, 1 << 20),
            Err(BlockError::DuplicateTx { .. })
        ));
        let ok = Block::new(Height(1), 1, txs(2));
        assert_eq!(ok.check_content(10, 1 << 20), Ok(()));
        assert!(matches!(
            ok.check_content(1, 1 << 20),
            Err(BlockError::TooManyTxs { .. })
        ));
        assert!(matches!(
            ok.check_content(10, 10),
            Err(BlockError::TooLarge { .. })
        ));
    }

    #[test]
    fn every_tx_proves_against_the_header_root() {
        let b = Block::new(Height(1), 1, txs(7));
        for (i, h) in b.tx_hashes().iter().enumerate() {
            assert!(b
                .prove_tx(i)
                .unwrap()
                .verify(&b.header.tx_root, h.as_bytes()));
        }
    }
}
