//! A Byzantine peer cannot wear down an honest one (issue 22): one engine driven by hand,
//! fed what a faulty peer may send as often as it likes. Whatever it sends, the work and
//! the writes it draws from this replica stay bounded.

use std::sync::Arc;

use stele_consensus::{Action, Config, Engine, Evidence, Verifier};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{ChainId, Digest, Signed, Signer};
use stele_types::certs::SignatureEntry;
use stele_types::genesis::Params;
use stele_types::{
    Block, Checkpoint, CheckpointCertificate, Commit, Genesis, Height, Message, PrePrepare,
    Prepare, Proposal, ReplicaId, ValidatorInfo, ViewNumber,
};

const T: u64 = 1000;

/// Replica `me` of four, with the keys of all four at hand to forge what the others send.
struct One {
    signers: Vec<MacSigner>,
    genesis: Genesis,
    scheme: MacScheme,
    engine: Engine,
    now: u64,
    /// Everything the engine asked for so far.
    actions: Vec<Action>,
}

impl One {
    fn new(me: u16) -> One {
        let signers: Vec<MacSigner> = (0..4u8).map(|i| MacSigner::new([i; 32])).collect();
        let genesis = Genesis {
            chain_id: ChainId::new("wear-test").expect("chain id"),
            genesis_time_ms: 0,
            validators: signers
                .iter()
                .enumerate()
                .map(|(i, s)| ValidatorInfo {
                    key: s.public_key(),
                    p2p_addr: format!("10.0.0.{i}:1"),
                    api_addr: format!("10.0.0.{i}:2"),
                })
                .collect(),
            accounts: vec![],
            params: Params {
                checkpoint_interval: 8,
                window: 16,
                max_in_flight: 4,
                view_timeout_ms: T,
                max_view_timeout_ms: 8 * T,
                transfer_batch_blocks: 8,
                ..Params::default()
            },
        };
        let scheme = MacScheme::new(signers.iter());
        let config = Config {
            id: ReplicaId(me),
            genesis: genesis.clone(),
            signer: Arc::new(signers[me as usize].clone()),
            genesis_state: Digest::ZERO,
        };
        let engine = Engine::new(config, 0);
        One {
            signers,
            genesis,
            scheme,
            engine,
            now: 0,
            actions: Vec::new(),
        }
    }

    fn unix(&self) -> u64 {
        self.genesis.genesis_time_ms + self.now
    }

    /// Verifies `m` as from `from` and hands it to the engine.
    fn receive(&mut self, from: u16, m: Message) {
        let vs = self.genesis.validator_set();
        let verifier = Verifier {
            validators: &vs,
            genesis: &self.genesis,
            scheme: &self.scheme,
            known: None,
        };
        let v = verifier
            .verify(ReplicaId(from), m)
            .unwrap_or_else(|e| panic!("test message from {from} refused: {e:?}"));
        let unix = self.unix();
        self.engine
            .on_message(self.now, unix, ReplicaId(from), unix, v);
        self.actions.extend(self.engine.drain());
    }

    /// Runs the engine's timers until `until` (virtual ms).
    fn run_until(&mut self, until: u64) {
        while let Some(t) = self.engine.next_deadline() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            let unix = self.unix();
            self.engine.on_tick(self.now, unix);
            self.actions.extend(self.engine.drain());
        }
        self.now = self.now.max(until);
    }

    fn sign<T: stele_crypto::Signable>(&self, by: u16, v: T) -> Signed<T> {
        Signed::sign(v, &self.genesis.chain_id, &self.signers[by as usize])
    }

    fn prepare(&self, by: u16, height: u64, digest: Digest) -> Message {
        Message::Prepare(self.sign(
            by,
            Prepare {
                view: ViewNumber(0),
                height: Height(height),
                digest,
                replica: ReplicaId(by),
            },
        ))
    }

    fn commit(&self, by: u16, height: u64, digest: Digest) -> Message {
        Message::Commit(self.sign(
            by,
            Commit {
                view: ViewNumber(0),
                height: Height(height),
                digest,
                replica: ReplicaId(by),
            },
        ))
    }

    /// The primary of view 0's proposal of an empty block at `height`, dated `ts`.
    fn proposal(&self, height: u64, ts: u64) -> Message {
        let body = Block::new(Height(height), ts, vec![]);
        let pre_prepare = self.sign(
            0,
            PrePrepare {
                view: ViewNumber(0),
                height: Height(height),
                digest: body.digest(),
            },
        );
        Message::Proposal(Proposal { pre_prepare, body })
    }

    /// A checkpoint certificate at `height`, signed by `by`.
    fn certificate(&self, height: u64, by: &[u16]) -> Message {
        let state_digest = Digest::of(&height.to_le_bytes());
        let signatures = by
            .iter()
            .map(|r| SignatureEntry {
                replica: ReplicaId(*r),
                signature: self
                    .sign(
                        *r,
                        Checkpoint {
                            height: Height(height),
                            state_digest,
                            replica: ReplicaId(*r),
                        },
                    )
                    .signature,
            })
            .collect();
        Message::CheckpointCertificate(CheckpointCertificate {
            height: Height(height),
            state_digest,
            signatures,
        })
    }

    /// The evidence emitted so far (and forgets every action).
    fn evidence(&mut self) -> Vec<Evidence> {
        std::mem::take(&mut self.actions)
            .into_iter()
            .filter_map(|a| match a {
                Action::Evidence(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

fn digest(i: u64) -> Digest {
    Digest::of(&i.to_le_bytes())
}

/// A peer that signs a PREPARE and a COMMIT for (view 0, height 1), then a hundred more
/// of each for other digests. One conflict proves all there is to prove about that slot;
/// each further Evidence action is a synced write in the node (and a log line), at the
/// peer's will. One per (peer, kind, view, height).
#[test]
fn conflicting_votes_make_one_evidence_per_peer_kind_view_and_height() {
    let mut one = One::new(1);
    one.run_until(10);
    for height in [1, 2] {
        for i in 0..=100 {
            let p = one.prepare(2, height, digest(i));
            one.receive(2, p);
            let c = one.commit(2, height, digest(i));
            one.receive(2, c);
        }
    }
    // Another peer's conflicts are its own evidence.
    for i in 0..=10 {
        let p = one.prepare(3, 1, digest(1000 + i));
        one.receive(3, p);
    }
    let ev = one.evidence();
    let count = |replica: u16, kind: &str, height: u64| {
        ev.iter()
            .filter(|e| {
                matches!(e, Evidence::ConflictingVotes { replica: r, kind: k, height: h, .. }
                    if *r == ReplicaId(replica) && *k == kind && *h == Height(height))
            })
            .count()
    };
    for height in [1, 2] {
        assert_eq!(count(2, "prepare", height), 1, "PREPAREs at {height}");
        assert_eq!(count(2, "commit", height), 1, "COMMITs at {height}");
    }
    assert_eq!(count(3, "prepare", 1), 1, "replica 3's PREPAREs");
    assert_eq!(ev.len(), 5, "{} Evidence actions", ev.len());
    // What it remembers to tell them apart goes with the log at the stable checkpoint.
    let (slots, cap) = one.engine.evidence_footprint();
    assert_eq!(slots, 5);
    assert!(slots <= cap);
    let cert = one.certificate(8, &[0, 2, 3]);
    one.receive(0, cert);
    assert_eq!(one.engine.low_watermark(), Height(8));
    assert_eq!(one.engine.evidence_footprint().0, 0);
}

/// The primary of view 0 proposes fifty different blocks for height 1: the first is
/// accepted, each other one proves the same equivocation again.
#[test]
fn an_equivocating_primary_makes_one_evidence_per_view_and_height() {
    let mut one = One::new(1);
    one.run_until(10);
    let unix = one.unix();
    for i in 0..50 {
        let p = one.proposal(1, unix + i);
        one.receive(0, p);
    }
    let ev = one.evidence();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Evidence::EquivocatingPrimary { .. }))
            .count(),
        1,
        "{} Evidence actions: {:?}",
        ev.len(),
        ev.first()
    );
}
