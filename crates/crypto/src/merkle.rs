//! Merkle trees over transaction hashes, RFC 6962 (RFC 9162 §2.1) style.
//!
//! Leaves and inner nodes hash under different one-byte prefixes, so an inner node can
//! never pose as a leaf (the second-preimage attack on naive trees); the root of no
//! leaves is SHA-256 of the empty string, a fixed constant.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Digest;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Deepest proof possible: a tree has fewer than 2^64 leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// The root of a tree with no leaves: SHA-256 of the empty string.
pub fn empty_root() -> Digest {
    Digest(Sha256::digest([]).into())
}

/// Hash of one leaf's data.
pub fn leaf_hash(data: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    Digest(h.finalize().into())
}

/// Hash of an inner node over its two children.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left.0);
    h.update(right.0);
    Digest(h.finalize().into())
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn subtree_root<L: AsRef<[u8]>>(leaves: &[L]) -> Digest {
    match leaves.len() {
        0 => empty_root(),
        1 => leaf_hash(leaves[0].as_ref()),
        n => {
            let k = split(n);
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The Merkle tree hash of `leaves` (each leaf's data, e.g. a tx hash).
pub fn root<L: AsRef<[u8]>>(leaves: &[L]) -> Digest {
    subtree_root(leaves)
}

/// An inclusion proof: the audit path of leaf `index` in a tree of `leaf_count` leaves.
///
/// The root binds the leaf and its position, not `leaf_count`: as in RFC 6962 a proof may
/// also verify under some other counts, so a verifier that needs the count (a block's tx
/// count) takes it from the block itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub index: u64,
    pub leaf_count: u64,
    pub path: Vec<Digest>,
}

/// The proof that leaf `index` is in the tree of `leaves`; `None` when out of range.
pub fn prove<L: AsRef<[u8]>>(leaves: &[L], index: usize) -> Option<Proof> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0usize, leaves.len(), index);
    // Walk down from the root, collecting sibling subtree roots; the path is leaf-first.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(subtree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(subtree_root(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(Proof {
        index: index as u64,
        leaf_count: leaves.len() as u64,
        path,
    })
}

/// The root that `node`, the `index`-th of `count` nodes on one level of a tree (leaf
/// hashes, or the roots of aligned runs of 2^k leaves), reaches along the audit path
/// `path` (RFC 9162 §2.1.3.2); `None` when the path cannot be one for that position.
pub fn fold_path(index: u64, count: u64, node: Digest, path: &[Digest]) -> Option<Digest> {
    if index >= count || path.len() > MAX_PROOF_LEN {
        return None;
    }
    let (mut fnode, mut snode) = (index, count - 1);
    let mut r = node;
    for p in path {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// A whole tree kept in memory, every level of it, so any leaf's proof is O(log n) to
/// read out (`prove` recomputes subtrees: O(n) per proof). The levels are built bottom
/// up, pairing neighbours and carrying a level's odd last node up unchanged; that gives
/// exactly RFC 6962's left-balanced tree, whose split is the largest power of two below
/// the leaf count (the tests check the two agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// `levels[0]`: the leaf hashes; the last level holds the root alone.
    levels: Vec<Vec<Digest>>,
}

impl Tree {
    /// The tree over `leaves` (each leaf's data).
    pub fn new<L: AsRef<[u8]>>(leaves: &[L]) -> Tree {
        Tree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// The tree whose leaves hash to `hashes` (each already [`leaf_hash`]ed).
    pub fn from_leaf_hashes(hashes: Vec<Digest>) -> Tree {
        let mut levels = vec![hashes];
        while let Some(below) = levels.last().filter(|l| l.len() > 1) {
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [odd] => *odd,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(above);
        }
        Tree { levels }
    }

    /// How many leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root: [`root`] of the same leaves.
    pub fn root(&self) -> Digest {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) if !self.is_empty() => *r,
            _ => empty_root(),
        }
    }

    /// The proof for leaf `index`, the same as [`prove`] gives; `None` when out of range.
    pub fn prove(&self, index: usize) -> Option<Proof> {
        if index >= self.len() {
            return None;
        }
        let mut path = Vec::with_capacity(self.levels.len());
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            // A node without a right neighbour was carried up: no sibling at this level.
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i >>= 1;
        }
        Some(Proof {
            index: index as u64,
            leaf_count: self.len() as u64,
            path,
        })
    }
}

impl Proof {
    /// Whether `leaf` is at `self.index` in the tree whose root is `root` (RFC 9162 §2.1.3.2).
    pub fn verify(&self, root: &Digest, leaf: &[u8]) -> bool {
        fold_path(self.index, self.leaf_count, leaf_hash(leaf), &self.path) == Some(*root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf-{i}").into_bytes()).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root::<&[u8]>(&[]), empty_root());
    }

    #[test]
    fn inner_node_cannot_pose_as_a_leaf() {
        let l = leaves(2);
        let r = root(&l);
        // The concatenation of the two leaf hashes, offered as one leaf, gives another root.
        let mut fake = leaf_hash(&l[0]).0.to_vec();
        fake.extend_from_slice(&leaf_hash(&l[1]).0);
        assert_ne!(root(&[fake]), r);
    }

    #[test]
    fn every_leaf_proves_in_trees_of_1_to_1000() {
        let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut sizes: Vec<usize> = (1..=70).collect();
        for _ in 0..20 {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            sizes.push(1 + (rng_state >> 33) as usize % 1000);
        }
        sizes.push(1000);
        for n in sizes {
            let l = leaves(n);
            let r = root(&l);
            for (i, leaf) in l.iter().enumerate() {
                let p = prove(&l, i).unwrap();
                assert!(p.verify(&r, leaf), "n={n} i={i}");
                assert!(!p.verify(&r, b"other"), "n={n} i={i}");
            }
            assert!(prove(&l, n).is_none());
        }
    }

    #[test]
    fn a_kept_tree_gives_the_same_root_and_proofs_as_rfc_6962() {
        for n in 0..70 {
            let l = leaves(n);
            let t = Tree::new(&l);
            assert_eq!(t.root(), root(&l), "n={n}");
            assert_eq!(t.len(), n);
            for i in 0..=n {
                assert_eq!(t.prove(i), prove(&l, i), "n={n} i={i}");
            }
        }
        let l = leaves(2000);
        let t = Tree::new(&l);
        assert_eq!(t.root(), root(&l));
        for i in [0, 1, 1023, 1024, 1998, 1999] {
            let p = t.prove(i).unwrap();
            assert_eq!(Some(&p), prove(&l, i).as_ref());
            assert!(p.verify(&t.root(), &l[i]));
        }
    }

    proptest! {
        #[test]
        fn any_tampered_proof_fails(n in 1usize..300, i in 0usize..300, which in 0usize..64, bit in 0u8..8, field in 0u8..3) {
            let i = i % n;
            let l = leaves(n);
            let r = root(&l);
            let mut p = prove(&l, i).unwrap();
            prop_assert!(p.verify(&r, &l[i]));
            match field {
                0 if !p.path.is_empty() => {
                    let j = which % p.path.len();
                    p.path[j].0[which % 32] ^= 1 << bit;
                }
                // i+1 ..= i+n modulo n+1: never i itself, sometimes out of range.
                0 | 1 => p.index = (p.index + 1 + (which % n) as u64) % (n as u64 + 1),
                _ => p.path.push(Digest::of(&[bit])),
            }
            prop_assert!(!p.verify(&r, &l[i]));
        }
    }
}
