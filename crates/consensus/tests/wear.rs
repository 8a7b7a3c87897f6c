//! A Byzantine peer cannot wear down an honest one (issue 22): one engine driven by hand,
//! fed what a faulty peer may send as often as it likes. Whatever it sends, the work and
//! the writes it draws from this replica stay bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use stele_consensus::verify::FRAME_VERDICTS_CAP;
use stele_consensus::{
    Action, ChainState, Config, Engine, Evidence, FrameVerdicts, Reject, VerifiedMessage, Verifier,
};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{
    ChainBinding, ChainId, Digest, PublicKey, Scheme, Signature, SignatureError, Signed, Signer,
};
use stele_types::certs::{PreparedCertificate, SignatureEntry};
use stele_types::genesis::Params;
use stele_types::tx::sign_tx;
use stele_types::{
    codec, Amount, Block, BlockBatch, Bodies, Checkpoint, CheckpointCertificate, Commit,
    CommitCertificate, CommittedBlock, FetchBlocks, FetchBodies, Genesis, Height, Message, NewView,
    Nonce, Op, PrePrepare, Prepare, Proposal, ReplicaId, Transaction, TxBody, TxRelay,
    ValidatorInfo, ViewChange, ViewNumber,
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
        One::restored(me, ChainState::default())
    }

    /// Replica `me` restarted over a committed chain (its store), nothing else durable.
    fn restored(me: u16, chain: ChainState) -> One {
        let signers: Vec<MacSigner> = (0..4u8).map(|i| MacSigner::new([i; 32])).collect();
        let genesis = test_genesis(&signers);
        let scheme = MacScheme::new(signers.iter());
        let config = Config {
            id: ReplicaId(me),
            genesis: genesis.clone(),
            signer: Arc::new(signers[me as usize].clone()),
            genesis_state: Digest::ZERO,
        };
        let engine = Engine::restore(config, Vec::new(), chain, 0);
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

/// The genesis every test here runs: four MAC-signed validators, a small window.
fn test_genesis(signers: &[MacSigner]) -> Genesis {
    Genesis {
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
            max_block_bytes: 32 * 1024,
            max_block_txs: 50,
            ..Params::default()
        },
    }
}

/// The chain binding of [`test_genesis`], which every signature here covers.
fn chain_binding() -> ChainBinding {
    let signers: Vec<MacSigner> = (0..4u8).map(|i| MacSigner::new([i; 32])).collect();
    test_genesis(&signers).chain_binding()
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

/// What one interval of serving may cost a replica per peer, as DESIGN.md sizes it.
struct Budget {
    /// The interval: T.
    interval: u64,
    /// What a block of a state-transfer batch is charged: its largest encoding, as the
    /// engine cannot see the store (`max_block_bytes`, its header and a commit
    /// certificate of n signatures).
    block: u64,
    /// Bytes per peer and interval.
    bytes: u64,
}

/// A peer catching up must outrun the chain, which grows at most one block per
/// `max_batch_delay_ms` (blocks fill by the batch delay long before by
/// `max_block_txs`): twice that in state-transfer batches per T, plus the batches a
/// STATUS every T/4 may draw (body fetches, blocks for a stuck peer).
fn budget(p: &Params, n: usize) -> Budget {
    let t = p.view_timeout_ms;
    let batch = u64::from(p.transfer_batch_blocks);
    let status = (t / 4).clamp(50, 1000);
    let batches = 2 * t.div_ceil(p.max_batch_delay_ms * batch) + 2 * t.div_ceil(status);
    let cert = CommitCertificate {
        view: ViewNumber(0),
        height: Height(0),
        digest: Digest::ZERO,
        commits: (0..n)
            .map(|r| SignatureEntry {
                replica: ReplicaId(r as u16),
                signature: stele_crypto::Signature([0; 64]),
            })
            .collect(),
    };
    let block = u64::from(p.max_block_bytes)
        + codec::encoded_len(&Block::null(Height(0))) as u64
        + codec::encoded_len(&cert) as u64;
    Budget {
        interval: t,
        block,
        bytes: batches * batch * block,
    }
}

impl One {
    /// Bytes answered to each peer by the actions so far, charged as `budget` charges
    /// them (blocks at their largest, bodies as encoded), and the fetches refused with
    /// `rate_limited`; forgets every action.
    fn served(&mut self) -> (BTreeMap<u16, u64>, u64) {
        let block = budget(&self.genesis.params, 4).block;
        let mut bytes = BTreeMap::new();
        let mut limited = 0;
        for a in std::mem::take(&mut self.actions) {
            match a {
                Action::ServeBlocks {
                    to,
                    from,
                    to_height,
                } => {
                    let blocks = to_height.0.saturating_sub(from.0) + 1;
                    *bytes.entry(to.0).or_default() += blocks * block;
                }
                Action::Send(to, Message::Bodies(b)) => {
                    let len: usize = b.blocks.iter().map(codec::encoded_len).sum();
                    *bytes.entry(to.0).or_default() += len as u64;
                }
                Action::Rejected { reason, .. } if reason.label() == "rate_limited" => limited += 1,
                _ => {}
            }
        }
        (bytes, limited)
    }
}

/// A committed chain of `heights` blocks of 40 transfers each (certificates unchecked:
/// a restart trusts its own store).
fn chain(heights: u64) -> ChainState {
    let client = MacSigner::new([100; 32]);
    let chain = chain_binding();
    let to = MacSigner::new([101; 32]).public_key();
    let recent = (1..=heights)
        .map(|h| {
            let txs = (0..40)
                .map(|i| {
                    sign_tx(
                        TxBody {
                            sender: client.public_key(),
                            nonce: Nonce(h * 40 + i),
                            op: Op::Transfer {
                                to,
                                amount: Amount(1),
                            },
                        },
                        &chain,
                        &client,
                    )
                })
                .collect();
            let block = Block::new(Height(h), 1_000 + h, txs);
            let certificate = CommitCertificate {
                view: ViewNumber(0),
                height: Height(h),
                digest: block.digest(),
                commits: vec![],
            };
            CommittedBlock { block, certificate }
        })
        .collect();
    ChainState {
        executed: Height(heights),
        state_digest: Digest::ZERO,
        recent,
        checkpoint_digests: vec![],
    }
}

fn fetch_blocks(from: u64, to: u64) -> Message {
    Message::FetchBlocks(FetchBlocks {
        from: Height(from),
        to: Height(to),
    })
}

/// Replica 3 asks for the same eight blocks a thousand times at once, and for every
/// body in the window a thousand times. Today each FetchBlocks makes the node read and
/// encode a full batch from its store (up to 16 MiB with the default parameters), and
/// each FetchBodies re-encodes the bodies: the asker sets the pace. Per peer, one
/// interval's answers stay within the budget; the rest are refused and counted; the
/// other peers are served as before, and replica 3 again in the next interval.
#[test]
fn fetches_are_answered_within_a_byte_budget_per_peer_and_interval() {
    let mut one = One::restored(1, chain(16));
    one.run_until(10);
    let b = budget(&one.genesis.params, 4);
    assert_eq!(one.engine.serve_budget(), (b.interval, b.bytes, b.block));
    let wanted: Vec<(Height, Digest)> = chain(16)
        .recent
        .iter()
        .map(|cb| (cb.block.height(), cb.block.digest()))
        .collect();
    let mut answered = 0u64;
    for _ in 0..1000 {
        one.receive(3, fetch_blocks(1, 8));
        let f = Message::FetchBodies(FetchBodies {
            wanted: wanted.clone(),
        });
        one.receive(3, f);
        let (bytes, _) = one.served();
        answered += bytes.get(&3).copied().unwrap_or(0);
    }
    assert!(
        answered <= b.bytes,
        "replica 3 drew {answered} bytes of answers in one interval, the budget is {}",
        b.bytes
    );
    assert!(answered > 0, "replica 3 got nothing at all");
    one.receive(3, fetch_blocks(1, 8));
    let (bytes, limited) = one.served();
    assert_eq!(bytes.get(&3), None, "over budget, yet answered");
    assert_eq!(limited, 1, "an unanswered fetch is counted, by reason");
    // Another peer's budget is its own.
    one.receive(2, fetch_blocks(1, 8));
    let (bytes, _) = one.served();
    assert!(bytes.get(&2).is_some_and(|b| *b > 0), "replica 2 unserved");
    // The next interval answers replica 3 again.
    one.run_until(10 + b.interval);
    one.receive(3, fetch_blocks(1, 8));
    let (bytes, _) = one.served();
    assert!(
        bytes.get(&3).is_some_and(|b| *b > 0),
        "replica 3 unserved later"
    );
}

/// A peer catching up asks one batch after another as fast as answers come. Within one
/// interval it gets twice the blocks the chain can grow by in that time without a
/// refusal, so an honest laggard outruns the chain even when it asks one peer only.
#[test]
fn a_laggard_fetching_batch_after_batch_outruns_the_chain() {
    let mut one = One::restored(1, chain(16));
    one.run_until(10);
    let p = one.genesis.params.clone();
    let b = budget(&p, 4);
    let growth = p.view_timeout_ms / p.max_batch_delay_ms;
    let batch = u64::from(p.transfer_batch_blocks);
    let mut got = 0;
    for _ in 0..(2 * growth).div_ceil(batch) {
        one.receive(0, fetch_blocks(1, 8));
        let (bytes, limited) = one.served();
        assert_eq!(
            limited, 0,
            "an honest laggard was refused after {got} bytes"
        );
        got += bytes.get(&0).copied().unwrap_or(0);
    }
    assert!(got >= 2 * growth * b.block, "{got} bytes");
}

/// The simulator's keyed signatures, counting every signature checked.
#[derive(Debug)]
struct Counting {
    inner: MacScheme,
    checks: AtomicUsize,
}

impl Counting {
    fn new(one: &One) -> Counting {
        let clients = [MacSigner::new([100; 32]), MacSigner::new([101; 32])];
        Counting {
            inner: MacScheme::new(one.signers.iter().chain(clients.iter())),
            checks: AtomicUsize::new(0),
        }
    }

    fn checks(&self) -> usize {
        self.checks.load(Ordering::Relaxed)
    }
}

impl Scheme for Counting {
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.inner.verify(key, message, sig)
    }
}

fn broken<T>(mut s: Signed<T>) -> Signed<T> {
    s.signature.0[0] ^= 1;
    s
}

impl One {
    fn verifier<'a>(
        &'a self,
        scheme: &'a Counting,
        vs: &'a stele_types::ValidatorSet,
    ) -> Verifier<'a> {
        Verifier {
            validators: vs,
            genesis: &self.genesis,
            scheme,
            known: None,
        }
    }

    /// VIEW-CHANGE(1) of `by`, with nothing prepared.
    fn view_change(&self, by: u16) -> Signed<ViewChange> {
        self.sign(
            by,
            ViewChange {
                new_view: ViewNumber(1),
                replica: ReplicaId(by),
                checkpoint: None,
                prepared: vec![],
            },
        )
    }

    /// NEW-VIEW(1) from its primary, replica 1, over the VIEW-CHANGEs of 0, 2 and 3; with
    /// `o_entry`, its O holds one PRE-PREPARE whose signature is broken: refused only
    /// after every other signature in it was checked.
    fn new_view(&self, o_entry: Option<u64>) -> Message {
        let pre_prepares = o_entry
            .map(|h| {
                broken(self.sign(
                    1,
                    PrePrepare {
                        view: ViewNumber(1),
                        height: Height(h),
                        digest: Digest::ZERO,
                    },
                ))
            })
            .into_iter()
            .collect();
        Message::NewView(self.sign(
            1,
            NewView {
                view: ViewNumber(1),
                view_changes: [0, 2, 3].iter().map(|r| self.view_change(*r)).collect(),
                pre_prepares,
            },
        ))
    }
}

fn verdict(v: &Result<VerifiedMessage, Reject>) -> Result<&'static str, Reject> {
    v.as_ref()
        .map(|m| match m.inbound() {
            stele_consensus::Inbound::NewView(_) => "new_view",
            stele_consensus::Inbound::ViewChange(_) => "view_change",
            _ => "other",
        })
        .map_err(Clone::clone)
}

/// Replica 1 (the primary of view 1, Byzantine) sends one NEW-VIEW whose last signature
/// is broken a hundred times, and one VIEW-CHANGE with a broken signature a hundred
/// times. Verified NEW-VIEWs and VIEW-CHANGEs are remembered by digest, so a resent
/// good one costs nothing; a bad one must cost its signature checks once too, not once
/// per copy.
#[test]
fn a_bad_new_view_or_view_change_sent_again_is_verified_once() {
    let one = One::new(2);
    let vs = one.genesis.validator_set();
    let counting = Counting::new(&one);
    let verifier = one.verifier(&counting, &vs);
    let verdicts = FrameVerdicts::default();
    let good = one.new_view(None);
    let bad = one.new_view(Some(1));
    let bad_vc = Message::ViewChange(broken(one.view_change(1)));
    for (what, m, ok) in [
        ("good NEW-VIEW", good, true),
        ("bad NEW-VIEW", bad, false),
        ("bad VIEW-CHANGE", bad_vc, false),
    ] {
        let before = counting.checks();
        let first = verdict(&verifier.verify_remembered(ReplicaId(1), m.clone(), &verdicts));
        assert_eq!(first.is_ok(), ok, "{what}: {first:?}");
        let cost = counting.checks() - before;
        assert!(cost >= 1, "{what} cost no check");
        for _ in 0..100 {
            let again = verdict(&verifier.verify_remembered(ReplicaId(1), m.clone(), &verdicts));
            assert_eq!(again, first, "{what}: another verdict");
        }
        assert_eq!(
            counting.checks() - before,
            cost,
            "{what} sent 101 times: {} signature checks, {cost} for the first copy",
            counting.checks() - before
        );
    }
}

/// Bad NEW-VIEWs, each another, as many as a Byzantine primary likes: each costs its
/// checks once, the verdicts stay bounded, and the good NEW-VIEW remembered before them
/// is still answered without a check.
#[test]
fn refusals_are_bounded_and_never_push_out_a_good_verdict() {
    let one = One::new(2);
    let vs = one.genesis.validator_set();
    let counting = Counting::new(&one);
    let verifier = one.verifier(&counting, &vs);
    let verdicts = FrameVerdicts::default();
    let good = one.new_view(None);
    assert!(verifier
        .verify_remembered(ReplicaId(1), good.clone(), &verdicts)
        .is_ok());
    for h in 1..=200 {
        let bad = one.new_view(Some(h));
        assert!(verifier
            .verify_remembered(ReplicaId(1), bad, &verdicts)
            .is_err());
        assert!(verdicts.len() <= 2 * FRAME_VERDICTS_CAP);
    }
    let before = counting.checks();
    assert!(verifier
        .verify_remembered(ReplicaId(1), good, &verdicts)
        .is_ok());
    assert_eq!(
        counting.checks(),
        before,
        "the good NEW-VIEW was verified again"
    );
}

/// Client 100's tx `nonce`: a transfer, or with `record` a record of 1,024 bytes.
fn tx(nonce: u64, record: bool) -> Transaction {
    let client = MacSigner::new([100; 32]);
    let op = if record {
        Op::Put {
            key: stele_types::tx::RecordKey::new(nonce.to_le_bytes().to_vec()).expect("key"),
            value: stele_types::tx::RecordValue::new(vec![7; 1024]).expect("value"),
        }
    } else {
        Op::Transfer {
            to: MacSigner::new([101; 32]).public_key(),
            amount: Amount(1),
        }
    };
    sign_tx(
        TxBody {
            sender: client.public_key(),
            nonce: Nonce(nonce),
            op,
        },
        &chain_binding(),
        &client,
    )
}

impl One {
    /// A proposal for height 1 in view `view`, signed by that view's primary.
    fn proposal_of(&self, view: u64, txs: Vec<Transaction>) -> Message {
        let body = Block::new(Height(1), self.unix(), txs);
        let pre_prepare = self.sign(
            self.genesis.validator_set().primary(ViewNumber(view)).0,
            PrePrepare {
                view: ViewNumber(view),
                height: Height(1),
                digest: body.digest(),
            },
        );
        Message::Proposal(Proposal { pre_prepare, body })
    }
}

/// Each message is refused with no signature checked: not one of its txs', not even its
/// own. A node verifies each tx it has not seen before, and a Byzantine peer makes
/// fresh ones at will: the cheap checks (who may send it, how many txs, how many bytes)
/// must come first.
#[test]
fn size_and_sender_are_checked_before_any_signature() {
    let one = One::new(1);
    let vs = one.genesis.validator_set();
    let counting = Counting::new(&one);
    let verifier = one.verifier(&counting, &vs);
    let p = one.genesis.params.clone();
    let transfers = |n: u64| (0..n).map(|i| tx(i, false)).collect::<Vec<_>>();
    let cert = |b: &Block| CommitCertificate {
        view: ViewNumber(0),
        height: b.height(),
        digest: b.digest(),
        commits: (0..3)
            .map(|r| SignatureEntry {
                replica: ReplicaId(r),
                signature: one
                    .sign(
                        r,
                        Commit {
                            view: ViewNumber(0),
                            height: b.height(),
                            digest: b.digest(),
                            replica: ReplicaId(r),
                        },
                    )
                    .signature,
            })
            .collect(),
    };
    let null_blocks = |n: u64| {
        (1..=n)
            .map(|h| {
                let block = Block::null(Height(h));
                let certificate = cert(&block);
                CommittedBlock { block, certificate }
            })
            .collect::<Vec<_>>()
    };
    let cases: Vec<(&str, u16, Message, &str)> = vec![
        (
            "a proposal of view 0 from replica 2, not its primary",
            2,
            one.proposal_of(0, transfers(40)),
            "wrong_sender",
        ),
        (
            "a proposal from the primary with one tx too many",
            0,
            one.proposal_of(0, transfers(u64::from(p.max_block_txs) + 1)),
            "bad_block",
        ),
        (
            "a proposal from the primary over max_block_bytes",
            0,
            one.proposal_of(0, (0..30).map(|i| tx(i, true)).collect()),
            "bad_block",
        ),
        (
            "a relay from replica 9, no validator",
            9,
            Message::Relay(TxRelay { txs: transfers(10) }),
            "unknown_sender",
        ),
        (
            "a state-transfer batch of more blocks than a batch holds",
            2,
            Message::Blocks(BlockBatch {
                blocks: null_blocks(u64::from(p.transfer_batch_blocks) + 1),
            }),
            "malformed",
        ),
        (
            "more bodies than a FETCH-BODIES may want",
            2,
            Message::Bodies(Bodies {
                blocks: (1..=p.window + 1)
                    .map(|h| Block::new(Height(h), 1, transfers(1)))
                    .collect(),
            }),
            "malformed",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, from, m, label) in cases {
        let before = counting.checks();
        let v = verifier.verify(ReplicaId(from), m);
        let checks = counting.checks() - before;
        let got = v.as_ref().err().map(Reject::label);
        if got != Some(label) || checks > 0 {
            wrong.push(format!(
                "{what}: {} after {checks} signature checks",
                got.unwrap_or("accepted")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}

/// Already so before issue 22: a relay of more txs than a batch holds, or with a tx of
/// another chain, is refused before any signature is checked.
#[test]
fn an_oversized_or_malformed_relay_is_refused_before_any_signature() {
    let one = One::new(1);
    let vs = one.genesis.validator_set();
    let counting = Counting::new(&one);
    let verifier = one.verifier(&counting, &vs);
    let many = (0..=u64::from(one.genesis.params.relay_batch_txs))
        .map(|i| tx(i, false))
        .collect();
    let v = verifier.verify(ReplicaId(2), Message::Relay(TxRelay { txs: many }));
    assert_eq!(v.err().as_ref().map(Reject::label), Some("malformed"));
    let mut other = tx(0, false);
    other.value.op = Op::Transfer {
        to: MacSigner::new([101; 32]).public_key(),
        amount: Amount(0),
    };
    let txs = vec![tx(1, false), other];
    let v = verifier.verify(ReplicaId(2), Message::Relay(TxRelay { txs }));
    assert_eq!(v.err().as_ref().map(Reject::label), Some("bad_block"));
    assert_eq!(counting.checks(), 0);
}

impl One {
    /// A prepared certificate for (view, height), signed by no one (its shape is all
    /// that matters where it is used).
    fn unsigned_certificate(view: u64, height: u64) -> PreparedCertificate {
        PreparedCertificate {
            pre_prepare: Signed {
                value: PrePrepare {
                    view: ViewNumber(view),
                    height: Height(height),
                    digest: Digest::ZERO,
                },
                signature: Signature([0; 64]),
            },
            prepares: (2..4)
                .map(|r| SignatureEntry {
                    replica: ReplicaId(r),
                    signature: Signature([0; 64]),
                })
                .collect(),
        }
    }

    /// NEW-VIEW(1) from replica 1 over these VIEW-CHANGEs, with these O entries (signed).
    fn new_view_of(&self, vcs: Vec<Signed<ViewChange>>, o: &[(u64, u64)]) -> Message {
        let pre_prepares = o
            .iter()
            .map(|(view, h)| {
                self.sign(
                    1,
                    PrePrepare {
                        view: ViewNumber(*view),
                        height: Height(*h),
                        digest: Digest::ZERO,
                    },
                )
            })
            .collect();
        Message::NewView(self.sign(
            1,
            NewView {
                view: ViewNumber(1),
                view_changes: vcs,
                pre_prepares,
            },
        ))
    }
}

/// A VIEW-CHANGE or NEW-VIEW whose shape is wrong (too few VIEW-CHANGEs, one for
/// another view, two from one replica, an O entry of another view or more than L of
/// them, more prepared certificates than L, one outside the window or of a view not
/// below the one changed to) is refused before any of its signatures is checked: the
/// verdict cache helps only against copies, and a Byzantine primary signs new shapes
/// at will.
#[test]

fn view_change_and_new_view_shapes_are_checked_before_any_signature() {
    let one = One::new(2);
    let vs = one.genesis.validator_set();
    let counting = Counting::new(&one);
    let verifier = one.verifier(&counting, &vs);
    let l = one.genesis.params.window;
    let vc = |by: u16| one.view_change(by);
    let vc_for = |by: u16, view: u64, prepared: Vec<PreparedCertificate>| {
        one.sign(
            by,
            ViewChange {
                new_view: ViewNumber(view),
                replica: ReplicaId(by),
                checkpoint: None,
                prepared,
            },
        )
    };
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "a NEW-VIEW with two VIEW-CHANGEs, three needed",
            one.new_view_of(vec![vc(0), vc(2)], &[]),
            "bad_new_view",
        ),
        (
            "a NEW-VIEW whose last VIEW-CHANGE is for view 2",
            one.new_view_of(vec![vc(0), vc(2), vc_for(3, 2, vec![])], &[]),
            "bad_new_view",
        ),
        (
            "a NEW-VIEW with two VIEW-CHANGEs from replica 2",
            one.new_view_of(vec![vc(0), vc(2), vc(2)], &[]),
            "bad_new_view",
        ),
        (
            "a NEW-VIEW whose last O entry is in view 0",
            one.new_view_of(vec![vc(0), vc(2), vc(3)], &[(1, 1), (0, 2)]),
            "bad_new_view",
        ),
        (
            "a NEW-VIEW with L + 1 O entries",
            one.new_view_of(
                vec![vc(0), vc(2), vc(3)],
                &(1..=l + 1).map(|h| (1, h)).collect::<Vec<_>>(),
            ),
            "malformed",
        ),
        (
            "a NEW-VIEW whose last VIEW-CHANGE holds L + 1 certificates",
            one.new_view_of(
                vec![
                    vc(0),
                    vc(2),
                    vc_for(
                        3,
                        1,
                        (1..=l + 1)
                            .map(|h| One::unsigned_certificate(0, h))
                            .collect(),
                    ),
                ],
                &[],
            ),
            "malformed",
        ),
        (
            "a VIEW-CHANGE holding L + 1 certificates",
            Message::ViewChange(vc_for(
                3,
                1,
                (1..=l + 1)
                    .map(|h| One::unsigned_certificate(0, h))
                    .collect(),
            )),
            "malformed",
        ),
        (
            "a VIEW-CHANGE whose last certificate is above the window",
            Message::ViewChange(vc_for(
                3,
                1,
                vec![
                    One::unsigned_certificate(0, 1),
                    One::unsigned_certificate(0, l + 1),
                ],
            )),
            "out_of_window",
        ),
        (
            "a VIEW-CHANGE(1) whose last certificate is of view 1",
            Message::ViewChange(vc_for(
                3,
                1,
                vec![
                    One::unsigned_certificate(0, 1),
                    One::unsigned_certificate(1, 2),
                ],
            )),
            "wrong_view",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, m, label) in cases {
        let before = counting.checks();
        let v = verifier.verify(ReplicaId(1), m);
        let checks = counting.checks() - before;
        let got = v.as_ref().err().map(Reject::label);
        if got != Some(label) || checks > 0 {
            wrong.push(format!(
                "{what}: {} after {checks} signature checks",
                got.unwrap_or("accepted")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}
