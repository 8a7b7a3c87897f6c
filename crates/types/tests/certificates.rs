//! Every certificate kind fails `verify` with q−1 signatures, a duplicated signer, an
//! unknown signer, or a signature over another digest; a prepared certificate counting the
//! primary's PREPARE fails. For n = 4, 5, 7 and 10.

#![allow(clippy::unwrap_used)]

mod common;

use common::{keys, set, sign};
use stele_crypto::{Digest, Ed25519, KeyPair, Signable, Signature};
use stele_types::certs::{
    CertError, CheckpointCertificate, CommitCertificate, PreparedCertificate, SignatureEntry,
};
use stele_types::messages::{Checkpoint, Commit, PrePrepare, Prepare};
use stele_types::{Height, ReplicaId, ValidatorSet, ViewNumber};

const SIZES: [usize; 4] = [4, 5, 7, 10];

fn entry<T: Signable>(value: T, id: usize, k: &[KeyPair]) -> SignatureEntry {
    SignatureEntry {
        replica: ReplicaId(id as u16),
        signature: sign(value, &k[id]).signature,
    }
}

/// The four standard attacks on a list of entries built by `make(ids, digest)`.
fn attacks(
    vs: &ValidatorSet,
    need: usize,
    make: &dyn Fn(&[usize], Digest) -> Vec<SignatureEntry>,
    check: &dyn Fn(Vec<SignatureEntry>) -> Result<(), CertError>,
    ids: &[usize],
) {
    let d = Digest::of(b"block");
    let good = make(&ids[..need], d);
    assert_eq!(check(good.clone()), Ok(()), "n={}", vs.n());
    // q−1 signatures
    assert_eq!(
        check(good[..need - 1].to_vec()),
        Err(CertError::TooFewSigners {
            have: need - 1,
            need
        }),
        "n={}",
        vs.n()
    );
    // a duplicated signer making up the count
    let mut dup = good[..need - 1].to_vec();
    dup.push(good[0].clone());
    assert_eq!(check(dup), Err(CertError::DuplicateSigner(good[0].replica)));
    // an unknown signer (id n) making up the count, signing with some key
    let mut unknown = good[..need - 1].to_vec();
    unknown.push(SignatureEntry {
        replica: ReplicaId(vs.n() as u16),
        signature: good[0].signature,
    });
    assert_eq!(
        check(unknown),
        Err(CertError::UnknownSigner(ReplicaId(vs.n() as u16)))
    );
    // one signature over another digest
    let mut other = good.clone();
    let last = other.len() - 1;
    other[last] = make(&ids[last..last + 1], Digest::of(b"other"))[0].clone();
    assert_eq!(
        check(other),
        Err(CertError::BadSignature(good[last].replica))
    );
    // a garbled signature
    let mut garbled = good.clone();
    garbled[0].signature = Signature([7; 64]);
    assert!(matches!(check(garbled), Err(CertError::BadSignature(_))));
    // more entries than validators
    let mut many = good.clone();
    while many.len() <= vs.n() {
        many.push(good[0].clone());
    }
    assert!(matches!(
        check(many),
        Err(CertError::TooManySignatures { .. })
    ));
}

#[test]
fn commit_certificates() {
    for n in SIZES {
        let vs = set(n);
        let k = keys(n);
        let (view, height) = (ViewNumber(3), Height(17));
        let make = |ids: &[usize], digest: Digest| {
            ids.iter()
                .map(|&i| {
                    entry(
                        Commit {
                            view,
                            height,
                            digest,
                            replica: ReplicaId(i as u16),
                        },
                        i,
                        &k,
                    )
                })
                .collect()
        };
        let check = |commits: Vec<SignatureEntry>| {
            CommitCertificate {
                view,
                height,
                digest: Digest::of(b"block"),
                commits,
            }
            .verify(&vs, &Ed25519)
        };
        let ids: Vec<usize> = (0..n).collect();
        attacks(&vs, vs.quorum(), &make, &check, &ids);
        // The same signatures do not verify for another view or height.
        let good = make(&ids[..vs.quorum()], Digest::of(b"block"));
        let c = CommitCertificate {
            view: ViewNumber(4),
            height,
            digest: Digest::of(b"block"),
            commits: good.clone(),
        };
        assert!(c.verify(&vs, &Ed25519).is_err());
        let c = CommitCertificate {
            view,
            height: Height(18),
            digest: Digest::of(b"block"),
            commits: good,
        };
        assert!(c.verify(&vs, &Ed25519).is_err());
    }
}

#[test]
fn checkpoint_certificates() {
    for n in SIZES {
        let vs = set(n);
        let k = keys(n);
        let height = Height(256);
        let make = |ids: &[usize], state_digest: Digest| {
            ids.iter()
                .map(|&i| {
                    entry(
                        Checkpoint {
                            height,
                            state_digest,
                            replica: ReplicaId(i as u16),
                        },
                        i,
                        &k,
                    )
                })
                .collect()
        };
        let check = |signatures: Vec<SignatureEntry>| {
            CheckpointCertificate {
                height,
                state_digest: Digest::of(b"block"),
                signatures,
            }
            .verify(&vs, &Ed25519)
        };
        let ids: Vec<usize> = (0..n).rev().collect();
        attacks(&vs, vs.quorum(), &make, &check, &ids);
    }
}

#[test]
fn prepared_certificates() {
    for n in SIZES {
        let vs = set(n);
        let k = keys(n);
        let (view, height) = (ViewNumber(n as u64 + 2), Height(9));
        let primary = vs.primary(view).index();
        let pp = sign(
            PrePrepare {
                view,
                height,
                digest: Digest::of(b"block"),
            },
            &k[primary],
        );
        let make = |ids: &[usize], digest: Digest| {
            ids.iter()
                .map(|&i| {
                    entry(
                        Prepare {
                            view,
                            height,
                            digest,
                            replica: ReplicaId(i as u16),
                        },
                        i,
                        &k,
                    )
                })
                .collect()
        };
        let check = |prepares: Vec<SignatureEntry>| {
            PreparedCertificate {
                pre_prepare: pp.clone(),
                prepares,
            }
            .verify(&vs, &Ed25519)
        };
        let backups: Vec<usize> = (0..n).filter(|&i| i != primary).collect();
        attacks(&vs, vs.quorum() - 1, &make, &check, &backups);

        // Counting the primary's PREPARE: q−2 backups plus the primary is refused, and so is
        // q−1 backups plus the primary.
        let mut with_primary: Vec<SignatureEntry> =
            make(&backups[..vs.quorum() - 2], Digest::of(b"block"));
        with_primary.push(make(&[primary], Digest::of(b"block"))[0].clone());
        assert_eq!(
            check(with_primary),
            Err(CertError::PrimaryPrepare(ReplicaId(primary as u16)))
        );
        let mut extra: Vec<SignatureEntry> =
            make(&backups[..vs.quorum() - 1], Digest::of(b"block"));
        extra.push(make(&[primary], Digest::of(b"block"))[0].clone());
        assert_eq!(
            check(extra),
            Err(CertError::PrimaryPrepare(ReplicaId(primary as u16)))
        );

        // A PRE-PREPARE signed by someone other than primary(v).
        let not_primary = backups[0];
        let forged = sign(
            PrePrepare {
                view,
                height,
                digest: Digest::of(b"block"),
            },
            &k[not_primary],
        );
        let c = PreparedCertificate {
            pre_prepare: forged,
            prepares: make(&backups[..vs.quorum() - 1], Digest::of(b"block")),
        };
        assert_eq!(c.verify(&vs, &Ed25519), Err(CertError::BadPrePrepare(view)));
    }
}

/// A state opening proves its state root only with a checkpoint certificate over exactly
/// its height and digest: a changed root, a changed part of the digest, another height or
/// too few signers all fail.
#[test]
fn a_state_opening_proves_its_root_only_with_a_matching_checkpoint_certificate() {
    use stele_types::state_root::{OpeningError, StateOpening};
    let vs = set(4);
    let k = keys(4);
    let opening = StateOpening {
        height: Height(128),
        previous: Digest::of(b"previous"),
        block_digest: Digest::of(b"block"),
        results_root: Digest::of(b"results"),
        changes_hash: Digest::of(b"changes"),
        state_root: Digest::of(b"root"),
    };
    let cert = |o: &StateOpening, signers: usize| CheckpointCertificate {
        height: o.height,
        state_digest: o.digest(),
        signatures: (0..signers)
            .map(|i| {
                entry(
                    Checkpoint {
                        height: o.height,
                        state_digest: o.digest(),
                        replica: ReplicaId(i as u16),
                    },
                    i,
                    &k,
                )
            })
            .collect(),
    };
    let good = cert(&opening, vs.quorum());
    assert_eq!(opening.verify(&good, &vs, &Ed25519), Ok(opening.state_root));
    // Any part changed: the digest no longer matches what the validators signed.
    let mut tampered = Vec::new();
    for i in 0..5 {
        let mut o = opening.clone();
        let d = Digest::of(&[i]);
        match i {
            0 => o.previous = d,
            1 => o.block_digest = d,
            2 => o.results_root = d,
            3 => o.changes_hash = d,
            _ => o.state_root = d,
        }
        tampered.push(o);
    }
    for o in &tampered {
        assert!(matches!(
            o.verify(&good, &vs, &Ed25519),
            Err(OpeningError::Digest { .. })
        ));
    }
    let elsewhere = StateOpening {
        height: Height(256),
        ..opening.clone()
    };
    assert!(matches!(
        elsewhere.verify(&good, &vs, &Ed25519),
        Err(OpeningError::Height { .. })
    ));
    assert!(matches!(
        opening.verify(&cert(&opening, vs.quorum() - 1), &vs, &Ed25519),
        Err(OpeningError::Certificate(CertError::TooFewSigners { .. }))
    ));
}

/// A snapshot manifest is trusted only as a whole: the checkpoint certificate, the
/// opening, the block it names with that block's commit certificate, and its results.
#[test]
fn a_snapshot_manifest_verifies_only_when_every_part_matches() {
    use stele_types::snapshot::{ManifestError, SnapshotManifest};
    use stele_types::state_root::StateOpening;
    use stele_types::{results_leaf, tx_hash, Block, TxResult};
    let vs = set(4);
    let k = keys(4);
    let h = Height(128);
    let block = Block::new(h, 1_700_000_000_000, Vec::new());
    let results: Vec<TxResult> = Vec::new();
    let leaves: Vec<Vec<u8>> = block
        .txs
        .iter()
        .zip(&results)
        .map(|(t, r)| results_leaf(&tx_hash(t), *r))
        .collect();
    let opening = StateOpening {
        height: h,
        previous: Digest::of(b"previous"),
        block_digest: block.digest(),
        results_root: stele_crypto::merkle::root(&leaves),
        changes_hash: Digest::of(b"changes"),
        state_root: Digest::of(b"root"),
    };
    let checkpoint = |o: &StateOpening| CheckpointCertificate {
        height: o.height,
        state_digest: o.digest(),
        signatures: (0..vs.quorum())
            .map(|i| {
                entry(
                    Checkpoint {
                        height: o.height,
                        state_digest: o.digest(),
                        replica: ReplicaId(i as u16),
                    },
                    i,
                    &k,
                )
            })
            .collect(),
    };
    let commit = |b: &Block, signers: usize| CommitCertificate {
        view: ViewNumber(0),
        height: b.height(),
        digest: b.digest(),
        commits: (0..signers)
            .map(|i| {
                entry(
                    Commit {
                        view: ViewNumber(0),
                        height: b.height(),
                        digest: b.digest(),
                        replica: ReplicaId(i as u16),
                    },
                    i,
                    &k,
                )
            })
            .collect(),
    };
    let good = SnapshotManifest {
        checkpoint: checkpoint(&opening),
        opening: opening.clone(),
        block: block.clone(),
        commit: commit(&block, vs.quorum()),
        results: results.clone(),
    };
    assert_eq!(good.verify(&vs, &Ed25519), Ok((h, opening.state_root)));

    // Another block at that height, certified: not the one the opening names.
    let other = Block::new(h, 1_700_000_000_001, Vec::new());
    let m = SnapshotManifest {
        block: other.clone(),
        commit: commit(&other, vs.quorum()),
        ..good.clone()
    };
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::Block { .. })
    ));
    // The right block with another block's certificate, or too few commits.
    let m = SnapshotManifest {
        commit: commit(&other, vs.quorum()),
        ..good.clone()
    };
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::CommitFor { .. })
    ));
    let m = SnapshotManifest {
        commit: commit(&block, vs.quorum() - 1),
        ..good.clone()
    };
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::Commit(_))
    ));
    // Results that are not the block's.
    let m = SnapshotManifest {
        results: vec![TxResult::Ok],
        ..good.clone()
    };
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::Results { .. })
    ));
    // A forged root in the opening no longer hashes to what the validators signed.
    let mut m = good.clone();
    m.opening.state_root = Digest::of(b"forged");
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::Opening(_))
    ));
    // A block at another height.
    let low = Block::new(Height(64), 1_700_000_000_000, Vec::new());
    let m = SnapshotManifest {
        block: low.clone(),
        commit: commit(&low, vs.quorum()),
        ..good.clone()
    };
    assert!(matches!(
        m.verify(&vs, &Ed25519),
        Err(ManifestError::Height { .. })
    ));
}
