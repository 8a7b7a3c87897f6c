//! The state root: a Merkle root over every state entry, which a snapshot is checked
//! against (issue 24).
//!
//! Entries (accounts, then records) fall into 2^16 buckets by the first two bytes of
//! their owner's key, so a bucket is one key range in the store. A bucket's root hashes
//! its entry count with the RFC 6962 root of its entries' encodings in key order
//! ([`bucket_root`]); the state root is the root of
//! the perfect tree over the 65,536 bucket roots in bucket order. A run of 2^m aligned
//! buckets is one subtree, so a snapshot chunk of them is checked with one audit path.
//!
//! Only non-empty buckets are ever hashed: the root of an empty subtree of each height
//! is a constant, so the root costs about 16 hashes per non-empty bucket (a millisecond
//! for a few hundred accounts, about 30 ms at a million).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use stele_crypto::{merkle, Digest, PublicKey, Scheme};

use crate::certs::{CertError, CheckpointCertificate};
use crate::ids::Height;
use crate::validators::ValidatorSet;

use crate::codec;
use crate::exec::Account;
use crate::tx::{RecordKey, RecordValue};

/// log2 of the number of buckets.
pub const BUCKET_BITS: u32 = 16;
/// How many buckets the state is split into.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// The bucket of every entry `owner` owns: its account and its records.
pub fn bucket_of(owner: &PublicKey) -> u16 {
    u16::from_be_bytes([owner.0[0], owner.0[1]])
}

/// An account's leaf. The leading tag keeps an account from ever encoding as a record.
pub fn account_leaf(key: &PublicKey, account: &Account) -> Vec<u8> {
    codec::encode(&(0u8, key, account))
}

/// A record's leaf.
pub fn record_leaf(owner: &PublicKey, key: &RecordKey, value: &RecordValue) -> Vec<u8> {
    codec::encode(&(1u8, owner, key, value))
}

/// One bucket's entries, each in key order: its accounts, then its records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub accounts: Vec<(PublicKey, Account)>,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub records: Vec<((PublicKey, RecordKey), RecordValue)>,
}

impl Bucket {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.records.is_empty()
    }

    /// How many entries (leaves) it holds.
    pub fn len(&self) -> u64 {
        (self.accounts.len() + self.records.len()) as u64
    }

    /// Whether every entry is owned by a key of bucket `b` and each list is in key order
    /// without repeats: what a peer's entries are checked for before they are hashed.
    pub fn is_sorted_in(&self, b: u16) -> bool {
        self.accounts.iter().all(|(k, _)| bucket_of(k) == b)
            && self.accounts.windows(2).all(|w| w[0].0 < w[1].0)
            && self.records.iter().all(|((o, _), _)| bucket_of(o) == b)
            && self.records.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Its leaves in order: accounts, then records.
    pub fn leaves(&self) -> Vec<Vec<u8>> {
        self.accounts
            .iter()
            .map(|(k, a)| account_leaf(k, a))
            .chain(self.records.iter().map(|((o, k), v)| record_leaf(o, k, v)))
            .collect()
    }

    /// The bucket's root: [`bucket_root`] of its leaves in order.
    pub fn root(&self) -> Digest {
        debug_assert!(self.accounts.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(self.records.windows(2).all(|w| w[0].0 < w[1].0));
        bucket_root(self.len(), &merkle::root(&self.leaves()))
    }
}

/// A bucket's root from its entry count and the RFC 6962 root of its leaves; an empty
/// bucket's is the root of no leaves, as in the tree over the buckets.
///
/// The count is hashed in because an audit path alone does not fix the number of leaves
/// (RFC 6962 paths verify under several counts): a bucket too large for one chunk is
/// served in pieces, and a syncing validator must learn from the first piece, without
/// trusting its sender, how many pieces there are.
pub fn bucket_root(leaves: u64, entries_root: &Digest) -> Digest {
    if leaves == 0 {
        return merkle::empty_root();
    }
    let mut count = Vec::with_capacity(BUCKET_COUNT_DOMAIN.len() + 8);
    count.extend_from_slice(BUCKET_COUNT_DOMAIN.as_bytes());
    count.extend_from_slice(&leaves.to_be_bytes());
    merkle::node_hash(&merkle::leaf_hash(&count), entries_root)
}

/// Domain of the entry count hashed into a bucket's root.
const BUCKET_COUNT_DOMAIN: &str = "stele/state/bucket-count";

/// Roots of the empty subtrees: `[0]` an empty bucket's leaf, `[BUCKET_BITS]` the root
/// of an empty state.
fn empty_subtrees() -> &'static [Digest; BUCKET_BITS as usize + 1] {
    static EMPTY: OnceLock<[Digest; BUCKET_BITS as usize + 1]> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let mut e = [merkle::leaf_hash(merkle::empty_root().as_bytes()); BUCKET_BITS as usize + 1];
        for level in 1..e.len() {
            e[level] = merkle::node_hash(&e[level - 1], &e[level - 1]);
        }
        e
    })
}

/// The state root over the non-empty buckets' roots (`bucket → root`; a bucket whose root
/// is that of no entries may be left out or listed, alike).
pub fn root(buckets: &BTreeMap<u16, Digest>) -> Digest {
    let entries: Vec<(u16, Digest)> = buckets.iter().map(|(b, r)| (*b, *r)).collect();
    subtree(BUCKET_BITS, 0, &entries)
}

/// The root of the subtree of height `level` whose first bucket is `first`, over the
/// roots of its non-empty buckets (sorted by bucket, all inside it): what a snapshot
/// chunk of those buckets is checked with.
pub fn subtree_root(level: u32, first: u16, buckets: &[(u16, Digest)]) -> Digest {
    debug_assert!(level <= BUCKET_BITS);
    subtree(level, u32::from(first), buckets)
}

/// The root of the subtree of height `level` whose first bucket is `first`, over the
/// entries (sorted, all inside it).
fn subtree(level: u32, first: u32, entries: &[(u16, Digest)]) -> Digest {
    if entries.is_empty() {
        return empty_subtrees()[level as usize];
    }
    if level == 0 {
        debug_assert_eq!(entries.len(), 1);
        return merkle::leaf_hash(entries[0].1.as_bytes());
    }
    let mid = first + (1 << (level - 1));
    let split = entries.partition_point(|(b, _)| u32::from(*b) < mid);
    merkle::node_hash(
        &subtree(level - 1, first, &entries[..split]),
        &subtree(level - 1, mid, &entries[split..]),
    )
}

/// The whole tree over the 65,536 bucket roots, kept so that changing one bucket costs
/// its 17 hashes on the way up instead of the whole tree's (about 130,000 at a million
/// accounts, when every bucket is non-empty). 4 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTree {
    /// `levels[0]`: the buckets' leaf hashes; `levels[BUCKET_BITS]`: the root alone.
    levels: Vec<Vec<Digest>>,
}

impl BucketTree {
    /// The tree over `buckets` (non-empty buckets' roots; the others are empty).
    pub fn new(buckets: &BTreeMap<u16, Digest>) -> BucketTree {
        let empty = empty_subtrees();
        if buckets.is_empty() {
            // Every node is an empty subtree's constant: nothing to hash.
            let levels = (0..=BUCKET_BITS)
                .map(|level| vec![empty[level as usize]; BUCKETS >> level])
                .collect();
            return BucketTree { levels };
        }
        let mut leaves = vec![empty[0]; BUCKETS];
        for (b, r) in buckets {
            leaves[usize::from(*b)] = merkle::leaf_hash(r.as_bytes());
        }
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks_exact(2)
                .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        debug_assert_eq!(levels.len(), BUCKET_BITS as usize + 1);
        BucketTree { levels }
    }

    /// Sets bucket `b`'s root (`None`: the bucket is empty) and rehashes its path.
    pub fn set(&mut self, b: u16, root: Option<Digest>) {
        let mut i = usize::from(b);
        self.levels[0][i] = match root {
            Some(r) => merkle::leaf_hash(r.as_bytes()),
            None => empty_subtrees()[0],
        };
        for level in 1..self.levels.len() {
            let (l, r) = (
                self.levels[level - 1][i & !1],
                self.levels[level - 1][i | 1],
            );
            i >>= 1;
            self.levels[level][i] = merkle::node_hash(&l, &r);
        }
    }

    /// The state root: [`root`] of the same buckets.
    pub fn root(&self) -> Digest {
        self.levels[BUCKET_BITS as usize][0]
    }

    /// The audit path of the aligned subtree of height `level` that starts at bucket
    /// `first`: its sibling at each height from `level` up to the root, lowest first.
    /// `None` if `level` is above the root or `first` is not aligned to it.
    pub fn prove(&self, level: u32, first: u16) -> Option<Vec<Digest>> {
        if level > BUCKET_BITS || u32::from(first) % (1u32 << level) != 0 {
            return None;
        }
        let mut i = usize::from(first) >> level;
        let mut path = Vec::with_capacity((BUCKET_BITS - level) as usize);
        for l in level as usize..BUCKET_BITS as usize {
            path.push(self.levels[l][i ^ 1]);
            i >>= 1;
        }
        Some(path)
    }
}

/// Folds an aligned subtree's root up its audit path ([`BucketTree::prove`]) to the
/// state root it proves.
pub fn fold_path(level: u32, first: u16, subtree: Digest, path: &[Digest]) -> Digest {
    let mut i = usize::from(first) >> level.min(BUCKET_BITS);
    let mut node = subtree;
    for sibling in path {
        node = if i & 1 == 0 {
            merkle::node_hash(&node, sibling)
        } else {
            merkle::node_hash(sibling, &node)
        };
        i >>= 1;
    }
    node
}

/// Domain of the state digest at checkpoint heights, which also covers the state root.
pub const CHECKPOINT_STATE_DOMAIN: &str = "stele/state/checkpoint";

/// What a checkpoint height's state digest is the hash of. With a checkpoint certificate
/// over that digest it proves the state root to anyone holding the genesis file: what a
/// validator syncing from a snapshot trusts, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateOpening {
    pub height: Height,
    /// The state digest after the height before.
    pub previous: Digest,
    pub block_digest: Digest,
    pub results_root: Digest,
    pub changes_hash: Digest,
    pub state_root: Digest,
}

/// Why an opening does not prove a state root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpeningError {
    #[error("the opening is for height {opening}, the certificate for height {cert}")]
    Height { cert: Height, opening: Height },
    #[error("the opening hashes to {opening}, the certificate signs state digest {cert}")]
    Digest { cert: Digest, opening: Digest },
    #[error("the checkpoint certificate does not verify: {0}")]
    Certificate(CertError),
}

impl StateOpening {
    /// H(previous, block digest, results root, changes hash, state root) under
    /// [`CHECKPOINT_STATE_DOMAIN`]: the state digest at a checkpoint height.
    pub fn digest(&self) -> Digest {
        Digest::of_parts(
            CHECKPOINT_STATE_DOMAIN,
            &[
                self.previous.as_bytes(),
                self.block_digest.as_bytes(),
                self.results_root.as_bytes(),
                self.changes_hash.as_bytes(),
                self.state_root.as_bytes(),
            ],
        )
    }

    /// The state root at this height, if `cert` holds q valid CHECKPOINTs of
    /// `validators` over exactly this height and this opening's digest.
    pub fn verify(
        &self,
        cert: &CheckpointCertificate,
        validators: &ValidatorSet,
        scheme: &dyn Scheme,
    ) -> Result<Digest, OpeningError> {
        if cert.height != self.height {
            return Err(OpeningError::Height {
                cert: cert.height,
                opening: self.height,
            });
        }
        let digest = self.digest();
        if cert.state_digest != digest {
            return Err(OpeningError::Digest {
                cert: cert.state_digest,
                opening: digest,
            });
        }
        cert.verify(validators, scheme)
            .map_err(OpeningError::Certificate)?;
        Ok(self.state_root)
    }
}

/// Splits whole state, in key order, into buckets.
pub fn buckets<'a>(
    accounts: impl IntoIterator<Item = (&'a PublicKey, &'a Account)>,
    records: impl IntoIterator<Item = (&'a (PublicKey, RecordKey), &'a RecordValue)>,
) -> BTreeMap<u16, Bucket> {
    let mut out: BTreeMap<u16, Bucket> = BTreeMap::new();
    for (k, a) in accounts {
        out.entry(bucket_of(k)).or_default().accounts.push((*k, *a));
    }
    for (k, v) in records {
        out.entry(bucket_of(&k.0))
            .or_default()
            .records
            .push((k.clone(), v.clone()));
    }
    out
}

/// The state root of a whole state given in key order (what the ledger's `MemState`
/// uses).
pub fn root_of<'a>(
    accounts: impl IntoIterator<Item = (&'a PublicKey, &'a Account)>,
    records: impl IntoIterator<Item = (&'a (PublicKey, RecordKey), &'a RecordValue)>,
) -> Digest {
    let roots = buckets(accounts, records)
        .into_iter()
        .map(|(b, bucket)| (b, bucket.root()))
        .collect();
    root(&roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Amount, Nonce};

    fn acct(balance: u64) -> Account {
        Account {
            balance: Amount(balance),
            nonce: Nonce(0),
        }
    }

    fn key(b0: u8, b1: u8, rest: u8) -> PublicKey {
        let mut k = [rest; 32];
        k[0] = b0;
        k[1] = b1;
        PublicKey(k)
    }

    #[test]
    fn the_sparse_root_is_the_rfc_6962_root_of_all_65536_bucket_roots() {
        let mut accounts = BTreeMap::new();
        for (i, b) in [(0u8, 0u8), (0, 1), (7, 200), (255, 255)]
            .iter()
            .enumerate()
        {
            accounts.insert(key(b.0, b.1, i as u8), acct(i as u64 + 1));
            accounts.insert(key(b.0, b.1, 100 + i as u8), acct(5));
        }
        let records = BTreeMap::new();
        let sparse = root_of(&accounts, &records);
        let by_bucket = buckets(&accounts, &records);
        let all: Vec<Vec<u8>> = (0..BUCKETS)
            .map(|b| {
                by_bucket
                    .get(&(b as u16))
                    .map_or_else(merkle::empty_root, Bucket::root)
                    .as_bytes()
                    .to_vec()
            })
            .collect();
        assert_eq!(sparse, merkle::root(&all));
        assert_eq!(
            root(&BTreeMap::new()),
            merkle::root(&vec![merkle::empty_root().as_bytes().to_vec(); BUCKETS])
        );
    }

    #[test]
    fn the_kept_bucket_tree_follows_every_change_as_the_sparse_root_does() {
        let mut roots = BTreeMap::new();
        let mut tree = BucketTree::new(&roots);
        assert_eq!(tree.root(), root(&roots));
        // The empty tree (built from constants) is the one hashed from empty leaves.
        let one = BTreeMap::from([(7u16, merkle::empty_root())]);
        assert_eq!(BucketTree::new(&one), tree);
        for i in 0u32..300 {
            let b = (i.wrapping_mul(2_654_435_761) >> 16) as u16;
            if i % 5 == 4 {
                roots.remove(&b);
                tree.set(b, None);
            } else {
                let r = Digest::of(&i.to_le_bytes());
                roots.insert(b, r);
                tree.set(b, Some(r));
            }
            assert_eq!(tree.root(), root(&roots), "after change {i}");
        }
        assert_eq!(BucketTree::new(&roots), tree);
    }

    #[test]
    fn any_change_of_any_entry_changes_the_root() {
        let mut accounts = BTreeMap::new();
        accounts.insert(key(1, 2, 3), acct(10));
        accounts.insert(key(9, 9, 9), acct(20));
        let mut records = BTreeMap::new();
        let rk = RecordKey::new(b"k".to_vec()).unwrap();
        records.insert(
            (key(9, 9, 9), rk.clone()),
            RecordValue::new(b"v".to_vec()).unwrap(),
        );
        let base = root_of(&accounts, &records);
        let mut a2 = accounts.clone();
        a2.insert(key(1, 2, 3), acct(11));
        assert_ne!(root_of(&a2, &records), base);
        let mut a3 = accounts.clone();
        a3.insert(key(1, 2, 4), acct(0));
        assert_ne!(root_of(&a3, &records), base);
        let mut r2 = records.clone();
        r2.insert((key(9, 9, 9), rk), RecordValue::new(b"w".to_vec()).unwrap());
        assert_ne!(root_of(&accounts, &r2), base);
        assert_ne!(root_of(&accounts, &BTreeMap::new()), base);
    }
}
