//! Catch-up rules of one engine, driven by hand (DESIGN.md, "Retransmission and
//! catch-up"): what a peer's STATUS claims may start, and what a stable checkpoint does.

use std::sync::Arc;

use stele_consensus::{Action, Config, Engine, Verifier};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{ChainId, Digest, Signed, Signer};
use stele_types::certs::SignatureEntry;
use stele_types::genesis::Params;
use stele_types::{
    Block, Checkpoint, CheckpointCertificate, FetchBlocks, Genesis, Height, Message, PrePrepare,
    Proposal, ReplicaId, Status, ValidatorInfo, ViewNumber,
};

const T: u64 = 1000;

/// Replica `me` of four, at genesis, with the messages of the other three at hand.
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
            chain_id: ChainId::new("catchup-test").expect("chain id"),
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
        Signed::sign(v, &self.genesis.chain_binding(), &self.signers[by as usize])
    }

    fn status(&self, by: u16, executed: u64, stable: u64) -> Message {
        Message::Status(self.sign(
            by,
            Status {
                replica: ReplicaId(by),
                view: ViewNumber(0),
                active: true,
                executed: Height(executed),
                stable_checkpoint: Height(stable),
            },
        ))
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

    /// The FetchBlocks sent so far (and forgets them).
    fn fetches(&mut self) -> Vec<(ReplicaId, FetchBlocks)> {
        let mut out = Vec::new();
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::Send(to, Message::FetchBlocks(f)) => out.push((to, f)),
                Action::Broadcast(Message::FetchBlocks(f)) => out.push((ReplicaId(u16::MAX), f)),
                _ => {}
            }
        }
        out
    }
}

/// One peer's STATUS claims, every T/4 as STATUS goes, that it executed `u64::MAX`.
/// Nothing backs it: it must not become a target only a proof could clear, with
/// FetchBlocks going out every T for ever, nor shadow the real catch-up a checkpoint
/// certificate starts.
#[test]
fn an_unproven_status_claim_pins_no_fetch_target() {
    let mut one = One::new(1);
    for k in 0..80 {
        one.run_until(10 + k * T / 4);
        let lie = one.status(2, u64::MAX, u64::MAX);
        one.receive(2, lie);
    }
    let fetches = one.fetches();
    assert!(
        fetches.len() <= 1,
        "one peer's claim drew {} FetchBlocks in 20 T: {:?}",
        fetches.len(),
        &fetches[..fetches.len().min(4)]
    );
    // A real stable checkpoint at 8 (q = 3 signatures) right after another lie: the
    // blocks up to it are fetched at once.
    let lie = one.status(2, u64::MAX, u64::MAX);
    one.receive(2, lie);
    let cert = one.certificate(8, &[0, 2, 3]);
    one.receive(0, cert);
    assert_eq!(one.engine.low_watermark(), Height(8));
    let fetches = one.fetches();
    assert!(
        fetches
            .iter()
            .any(|(_, f)| f.from == Height(1) && f.to >= Height(8)),
        "a proven checkpoint must start its catch-up at once: {fetches:?}"
    );
}

/// f+1 peers claim heights far ahead: at least one honest replica is there, so the
/// replica fetches up to the (f+1)-th highest claim.
#[test]
fn claims_of_f_plus_one_peers_start_a_fetch() {
    let mut one = One::new(1);
    one.run_until(10);
    let a = one.status(0, 40, 32);
    one.receive(0, a);
    let lie = one.status(2, u64::MAX, u64::MAX);
    one.receive(2, lie);
    let fetches = one.fetches();
    assert!(
        fetches.iter().any(|(_, f)| f.from == Height(1)),
        "two peers far ahead: {fetches:?}"
    );
}

/// A PRE-PREPARE just above the window (h + L < n ≤ h + 2L) waits in the buffer; once a
/// stable checkpoint moves the window over its height it must be replayed, as on a
/// NEW-VIEW. Otherwise it is lost until the primary happens to re-send it.
#[test]
fn a_proposal_buffered_above_the_window_is_replayed_when_the_window_advances() {
    let mut one = One::new(1);
    one.run_until(10);
    let body = Block::new(Height(17), one.unix(), vec![]);
    let pre_prepare = one.sign(
        0,
        PrePrepare {
            view: ViewNumber(0),
            height: Height(17),
            digest: body.digest(),
        },
    );
    one.receive(0, Message::Proposal(Proposal { pre_prepare, body }));
    let prepared_17 = |actions: &[Action]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::Broadcast(Message::Prepare(p)) if p.height == Height(17)))
    };
    assert!(
        !prepared_17(&one.actions),
        "17 is above the window (0, 16]: buffered, not voted on"
    );
    // The window moves to (8, 24].
    let cert = one.certificate(8, &[0, 2, 3]);
    one.receive(0, cert);
    assert_eq!(one.engine.low_watermark(), Height(8));
    assert!(
        prepared_17(&one.actions),
        "the buffered PRE-PREPARE for 17 was not replayed when the window advanced"
    );
}
