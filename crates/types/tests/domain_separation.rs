//! A signature moved to another kind, chain id, genesis, view or height fails.

#![allow(clippy::unwrap_used)]

mod common;

use common::{binding, chain, keys, set, sign};
use stele_crypto::{ChainBinding, ChainId, Digest, Ed25519, Signed};
use stele_types::messages::{BlockReceipt, Checkpoint, Commit, Prepare, Status};
use stele_types::{Height, ReplicaId, ValidatorSet, ViewNumber};

fn prepare(view: u64, height: u64) -> Prepare {
    Prepare {
        view: ViewNumber(view),
        height: Height(height),
        digest: Digest::of(b"d"),
        replica: ReplicaId(1),
    }
}

#[test]
fn a_prepare_signature_is_not_a_commit_nor_another_view_height_chain_or_genesis() {
    let vs = set(4);
    let k = keys(4);
    let p = sign(prepare(2, 10), &k[1]);
    assert!(vs.verify(p.clone(), &Ed25519).is_ok());

    let as_commit = Signed {
        value: Commit {
            view: p.view,
            height: p.height,
            digest: p.digest,
            replica: p.replica,
        },
        signature: p.signature,
    };
    assert!(vs.verify(as_commit, &Ed25519).is_err());
    for moved in [prepare(3, 10), prepare(2, 11)] {
        assert!(vs
            .verify(
                Signed {
                    value: moved,
                    signature: p.signature
                },
                &Ed25519
            )
            .is_err());
    }
    // The same validators on another chain.
    let other = ValidatorSet::new(
        ChainBinding::new(ChainId::new("another-chain").unwrap(), *binding().genesis()),
        common::genesis(4).validators,
    );
    assert!(other.verify(p.clone(), &Ed25519).is_err());
    // The same validators on a chain with the same id but another genesis.
    let again = ValidatorSet::new(
        ChainBinding::new(chain(), Digest::of(b"another genesis")),
        common::genesis(4).validators,
    );
    assert!(again.verify(p.clone(), &Ed25519).is_err());
    // Claiming another replica's identity.
    let mut impostor = p.clone();
    impostor.value.replica = ReplicaId(2);
    assert!(vs.verify(impostor, &Ed25519).is_err());
    // A replica outside the set.
    let mut outsider = p;
    outsider.value.replica = ReplicaId(9);
    assert!(vs.verify(outsider, &Ed25519).is_err());
}

#[test]
fn checkpoint_status_and_receipt_signatures_do_not_cross() {
    let vs = set(4);
    let k = keys(4);
    let c = sign(
        Checkpoint {
            height: Height(5),
            state_digest: Digest::of(b"s"),
            replica: ReplicaId(0),
        },
        &k[0],
    );
    let s = Signed {
        value: Status {
            replica: ReplicaId(0),
            view: ViewNumber(0),
            active: true,
            executed: Height(5),
            stable_checkpoint: Height(5),
        },
        signature: c.signature,
    };
    assert!(vs.verify(c, &Ed25519).is_ok());
    assert!(vs.verify(s, &Ed25519).is_err());
    let r = sign(
        BlockReceipt {
            replica: ReplicaId(3),
            height: Height(1),
            block_digest: Digest::of(b"b"),
            results_root: Digest::of(b"r"),
            state_digest: Digest::of(b"s"),
        },
        &k[3],
    );
    assert!(vs.verify(r.clone(), &Ed25519).is_ok());
    let mut changed = r.clone();
    changed.value.results_root = Digest::of(b"other results");
    assert!(vs.verify(changed, &Ed25519).is_err());
    // A block receipt's signature does not pass for a checkpoint of the same replica.
    let as_checkpoint = Signed {
        value: Checkpoint {
            height: Height(1),
            state_digest: Digest::of(b"s"),
            replica: ReplicaId(3),
        },
        signature: r.signature,
    };
    assert!(vs.verify(as_checkpoint, &Ed25519).is_err());
}
