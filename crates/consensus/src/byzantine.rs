//! Byzantine behaviours for tests (cargo feature `byzantine`, never in a release build).
//!
//! A Byzantine replica runs the honest engine unchanged; its driver passes every message
//! the engine wants to send through [`outgoing`], which says what actually leaves and to
//! whom. Sans-IO and deterministic like the engine: every forged value derives from the
//! message itself, so a simulator seed replays exactly. The simulator and a node built
//! with `--features byzantine` and run with `--byzantine NAME` share this module.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use stele_crypto::{Digest, PublicKey, Signature, Signed, Signer};
use stele_types::{
    codec, Block, Checkpoint, Commit, FetchBlocks, FetchBodies, Height, Message, NewView,
    PrePrepare, Prepare, Proposal, ReplicaId, Status, TxRelay, ValidatorSet, ViewChange,
    ViewNumber,
};

/// How far above its height a BadVotes replica places an out-of-window vote.
const FAR_HEIGHT: u64 = 1 << 40;

/// Most equivocated (view, height)s a [`Collusion`] remembers; the oldest go first.
pub const MAX_SPLITS: usize = 1024;

/// How many extra messages a flooding replica sends to each peer for each message of
/// the kinds it floods on.
pub const FLOOD: u64 = 32;

/// What a Byzantine replica does instead of following the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Sends nothing at all, not even STATUS: to its peers it is a crashed replica that
    /// still counts in the validator set (a silent primary must be replaced by the timer).
    Silent,
    /// As primary, sends conflicting PRE-PREPAREs for one (view, height): its engine's
    /// block to even replica ids, a twin (one tx fewer, timestamp + 1, so another digest)
    /// to odd ids, each with a PREPARE of its own for that block (which honest replicas
    /// must not count: a primary does not prepare). Everything else as the engine says.
    Equivocate,
    /// Replaces every PREPARE, COMMIT and CHECKPOINT by one for a wrong digest (which
    /// honest replicas hold as its vote, so it counts against every quorum) plus a forged
    /// one they must refuse: an inflated view, a height far above the window, a claim to
    /// be another replica, or a broken signature. As primary it also sends a PREPARE for
    /// its own proposal (refused: primaries do not prepare). Each VIEW-CHANGE goes with
    /// one for view `u64::MAX`, each relay after a copy with garbled tx signatures.
    BadVotes,
    /// As the new primary, sends a NEW-VIEW whose O differs from what V implies (an entry
    /// too many, or a wrong digest); every honest replica must refuse it.
    BadNewView,
    /// As primary, leaves the victim's txs out of every block while proposing everyone
    /// else's, and withholds its own votes in the views it leads (its engine voted for the
    /// uncensored block). Only the timer that follows the oldest request replaces it.
    Censor { victim: PublicKey },
    /// As primary, sends its proposals (fresh ones and retransmissions) only to the
    /// replicas in `peers`, a bit set of replica ids (bit i: replica i; ids below 64).
    /// Everything else as the engine says. Several of them, each leading a view in turn,
    /// leave one height with a different body in every view at the replicas they chose.
    ProposeToSome { peers: u64 },
    /// Alone, honest. With a [`Collusion`] shared with an equivocating primary (see
    /// [`outgoing_colluding`]), votes at every equivocated (view, height) for the block
    /// each recipient got: with the primary that is f+1 colluders, beyond what PBFT
    /// tolerates, and the simulator's agreement checker must catch it. The collusion
    /// is a back channel the simulator provides; a node running `accomplice` with plain
    /// [`outgoing`] never learns its partner's other block and behaves honestly.
    Accomplice,
    /// Follows the protocol, but every STATUS it sends claims the highest view, executed
    /// height and stable checkpoint there are (`u64::MAX`), active. A STATUS is unproven:
    /// an honest replica may take its claims as hints, never as bounds it waits on.
    LyingStatus,
    /// As primary, moves the timestamp of each proposal at an even height by `shift_ms`
    /// (the block and PRE-PREPARE re-signed): backwards, below the height before it; or
    /// ahead, as far as the skew bound lets it pass. Everything else as the engine says.
    Redate { shift_ms: i64 },
    /// Follows the protocol but never sends a CHECKPOINT vote (nor repeats one in a STATUS
    /// answer): the honest replicas must make their checkpoints stable without it.
    WithholdCheckpoints,
    /// Sends VIEW-CHANGEs that hide what it prepared: for odd views none of its prepared
    /// certificates, for even views only the lower half (as if sent before the rest
    /// prepared). Honest primaries must still carry every committed height into O, from
    /// the other VIEW-CHANGEs of the quorum.
    StaleViewChange,
    /// Answers state transfer with wrong bodies, truncated and reordered batches: an
    /// honest replica must check each block and body against its certificate or wanted
    /// digest, and fetch again elsewhere.
    BadTransfer,
    /// Sends every message (not only proposals) to the replicas in `peers` only, a bit set
    /// of replica ids (bit i: replica i; ids below 64): a replica the rest sees in part.
    SendToSome { peers: u64 },
    /// Follows the protocol, and asks every peer for blocks and bodies [`FLOOD`] times
    /// over at every turn: with each STATUS, FetchBlocks from the first heights of the
    /// chain; with each PREPARE and COMMIT, FetchBodies for the block it voted for, a
    /// body every honest replica holds. An honest replica answers within its per-peer
    /// serving budget only.
    FloodFetches,
    /// Follows the protocol, and after each PREPARE and COMMIT it sends [`FLOOD`] more for
    /// the same (view, height), each for another digest; as primary, after each proposal
    /// [`FLOOD`] more for the same (view, height), each another block. Each one proves
    /// the equivocation again: an honest replica records it once per slot.
    FloodEvidence,
}

impl Behaviour {
    /// The names [`FromStr`] accepts (`censor` takes `:HEX-KEY`, `propose-to-some`
    /// `:HEX-BITS`, `redate` `:MS`).
    pub const NAMES: [&'static str; 15] = [
        "silent",
        "equivocate",
        "bad-votes",
        "bad-new-view",
        "censor:<victim public key, hex>",
        "accomplice",
        "lying-status",
        "propose-to-some:<bit set of replica ids, hex>",
        "redate:<milliseconds, signed>",
        "withhold-checkpoints",
        "stale-view-change",
        "bad-transfer",
        "send-to-some:<bit set of replica ids, hex>",
        "flood-fetches",
        "flood-evidence",
    ];

    /// The behaviour's name, as [`FromStr`] reads it (without the victim).
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::Equivocate => "equivocate",
            Behaviour::BadVotes => "bad-votes",
            Behaviour::BadNewView => "bad-new-view",
            Behaviour::Censor { .. } => "censor",
            Behaviour::Accomplice => "accomplice",
            Behaviour::LyingStatus => "lying-status",
            Behaviour::ProposeToSome { .. } => "propose-to-some",
            Behaviour::Redate { .. } => "redate",
            Behaviour::WithholdCheckpoints => "withhold-checkpoints",
            Behaviour::StaleViewChange => "stale-view-change",
            Behaviour::BadTransfer => "bad-transfer",
            Behaviour::SendToSome { .. } => "send-to-some",
            Behaviour::FloodFetches => "flood-fetches",
            Behaviour::FloodEvidence => "flood-evidence",
        }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Censor { victim } => write!(f, "censor:{}", victim.to_hex()),
            Behaviour::ProposeToSome { peers } => write!(f, "propose-to-some:{peers:x}"),
            Behaviour::Redate { shift_ms } => write!(f, "redate:{shift_ms}"),
            Behaviour::SendToSome { peers } => write!(f, "send-to-some:{peers:x}"),
            b => f.write_str(b.name()),
        }
    }
}

/// A `--byzantine` argument that names no behaviour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseBehaviourError {
    #[error("unknown Byzantine behaviour {found:?}; expected one of {}", Behaviour::NAMES.join(", "))]
    Unknown { found: String },
    #[error("censor needs the victim's public key as censor:HEX, found {found:?}")]
    BadVictim { found: String },
    #[error(
        "propose-to-some and send-to-some need a bit set of replica ids as NAME:HEX, found {found:?}"
    )]
    BadPeers { found: String },
    #[error("redate needs a shift in milliseconds as redate:MS, found {found:?}")]
    BadShift { found: String },
}

impl FromStr for Behaviour {
    type Err = ParseBehaviourError;

    fn from_str(s: &str) -> Result<Behaviour, ParseBehaviourError> {
        let s = s.trim();
        if let Some(key) = s.strip_prefix("censor:") {
            return key
                .parse::<PublicKey>()
                .map(|victim| Behaviour::Censor { victim })
                .map_err(|_| ParseBehaviourError::BadVictim { found: s.into() });
        }
        if let Some(bits) = s.strip_prefix("propose-to-some:") {
            return u64::from_str_radix(bits, 16)
                .map(|peers| Behaviour::ProposeToSome { peers })
                .map_err(|_| ParseBehaviourError::BadPeers { found: s.into() });
        }
        if let Some(bits) = s.strip_prefix("send-to-some:") {
            return u64::from_str_radix(bits, 16)
                .map(|peers| Behaviour::SendToSome { peers })
                .map_err(|_| ParseBehaviourError::BadPeers { found: s.into() });
        }
        if let Some(ms) = s.strip_prefix("redate:") {
            return ms
                .parse::<i64>()
                .map(|shift_ms| Behaviour::Redate { shift_ms })
                .map_err(|_| ParseBehaviourError::BadShift { found: s.into() });
        }
        Ok(match s {
            "silent" => Behaviour::Silent,
            "equivocate" => Behaviour::Equivocate,
            "bad-votes" => Behaviour::BadVotes,
            "bad-new-view" => Behaviour::BadNewView,
            "accomplice" => Behaviour::Accomplice,
            "lying-status" => Behaviour::LyingStatus,
            "withhold-checkpoints" => Behaviour::WithholdCheckpoints,
            "stale-view-change" => Behaviour::StaleViewChange,
            "bad-transfer" => Behaviour::BadTransfer,
            "flood-fetches" => Behaviour::FloodFetches,
            "flood-evidence" => Behaviour::FloodEvidence,
            "send-to-some" => return Err(ParseBehaviourError::BadPeers { found: s.into() }),
            "censor" => return Err(ParseBehaviourError::BadVictim { found: s.into() }),
            "propose-to-some" => return Err(ParseBehaviourError::BadPeers { found: s.into() }),
            "redate" => return Err(ParseBehaviourError::BadShift { found: s.into() }),
            _ => return Err(ParseBehaviourError::Unknown { found: s.into() }),
        })
    }
}

/// What replica `me` playing `b` sends instead of the engine's `m` addressed to `to`
/// (`None`: a broadcast to every other validator). Empty: the message is dropped.
/// Never addresses `me`.
pub fn outgoing(
    b: &Behaviour,
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    to: Option<ReplicaId>,
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let recipients = recipients(me, vs, to);
    let out = match b {
        Behaviour::Silent => Vec::new(),
        Behaviour::Equivocate => equivocate(me, signer, vs, &recipients, m),
        Behaviour::BadVotes => bad_votes(me, signer, vs, &recipients, m),
        Behaviour::BadNewView => bad_new_view(me, signer, vs, &recipients, m),
        Behaviour::Censor { victim } => censor(victim, me, signer, vs, &recipients, m),
        Behaviour::Accomplice => to_all(&recipients, &m),
        Behaviour::LyingStatus => lying_status(signer, vs, &recipients, m),
        Behaviour::ProposeToSome { peers } => propose_to_some(*peers, me, vs, &recipients, m),
        Behaviour::Redate { shift_ms } => redate(*shift_ms, me, signer, vs, &recipients, m),
        Behaviour::WithholdCheckpoints => match m {
            Message::Checkpoint(_) => Vec::new(),
            m => to_all(&recipients, &m),
        },
        Behaviour::StaleViewChange => stale_view_change(signer, vs, &recipients, m),
        Behaviour::BadTransfer => bad_transfer(&recipients, m),
        Behaviour::SendToSome { peers } => recipients
            .iter()
            .filter(|r| in_set(*peers, **r))
            .map(|r| (*r, m.clone()))
            .collect(),
        Behaviour::FloodFetches => flood_fetches(&recipients, m),
        Behaviour::FloodEvidence => flood_evidence(me, signer, vs, &recipients, m),
    };
    debug_assert!(out.iter().all(|(r, _)| *r != me && vs.contains(*r)));
    out
}

/// Like [`outgoing`], for colluders sharing `collusion`: a PREPARE or COMMIT at a
/// (view, height) where a colluding primary equivocated goes, to each recipient, for the
/// block that recipient got; the proposals `b` sends are recorded in `collusion`.
pub fn outgoing_colluding(
    b: &Behaviour,
    collusion: &mut Collusion,
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    to: Option<ReplicaId>,
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    if *b != Behaviour::Silent {
        if let Some(votes) = collusion.split_votes(me, signer, vs, to, &m) {
            return votes;
        }
    }
    let out = outgoing(b, me, signer, vs, to, m);
    for (_, m) in &out {
        collusion.observe(m);
    }
    out
}

/// What colluding replicas know: at which (view, height) their primary equivocated, and
/// which digest went to even and which to odd replica ids. Bounded by [`MAX_SPLITS`].
#[derive(Debug, Clone, Default)]
pub struct Collusion {
    /// (view, height) → up to two (timestamp, digest) proposed there.
    seen: BTreeMap<(ViewNumber, Height), Vec<(u64, Digest)>>,
}

impl Collusion {
    /// An empty collusion.
    pub fn new() -> Collusion {
        Collusion::default()
    }

    /// Records a proposal (sent by a colluding primary, or received from it).
    pub fn observe(&mut self, m: &Message) {
        let Message::Proposal(p) = m else {
            return;
        };
        let key = (p.pre_prepare.view, p.pre_prepare.height);
        let entry = (p.body.header.timestamp_ms, p.pre_prepare.digest);
        let known = self.seen.entry(key).or_default();
        if known.len() < 2 && !known.iter().any(|(_, d)| *d == entry.1) {
            known.push(entry);
            known.sort();
        }
        while self.seen.len() > MAX_SPLITS {
            self.seen.pop_first();
        }
        debug_assert!(self.seen.values().all(|v| v.len() <= 2));
    }

    /// The digests sent to even and to odd replica ids at an equivocated (view, height).
    /// The engine's block has the lower timestamp (the twin is one millisecond later).
    pub fn split(&self, view: ViewNumber, height: Height) -> Option<(Digest, Digest)> {
        match self.seen.get(&(view, height))?.as_slice() {
            [(_, even), (_, odd)] => Some((*even, *odd)),
            _ => None,
        }
    }

    /// A vote of `me` at a split (view, height), fanned out: for each recipient, a vote
    /// for the digest it got. `None` if `m` is no vote of `me` at a split.
    pub fn split_votes(
        &self,
        me: ReplicaId,
        signer: &dyn Signer,
        vs: &ValidatorSet,
        to: Option<ReplicaId>,
        m: &Message,
    ) -> Option<Vec<(ReplicaId, Message)>> {
        let (view, height) = match m {
            Message::Prepare(p) if p.replica == me => (p.view, p.height),
            Message::Commit(c) if c.replica == me => (c.view, c.height),
            _ => return None,
        };
        let (even, odd) = self.split(view, height)?;
        let out = recipients(me, vs, to)
            .into_iter()
            .map(|r| {
                let digest = if r.0 % 2 == 0 { even } else { odd };
                (r, with_digest(m, digest, vs, signer))
            })
            .collect();
        Some(out)
    }
}

/// Who a send reaches: `to`, or every validator but `me`.
fn recipients(me: ReplicaId, vs: &ValidatorSet, to: Option<ReplicaId>) -> Vec<ReplicaId> {
    match to {
        Some(r) if r != me => vec![r],
        Some(_) => Vec::new(),
        None => vs.ids().filter(|r| *r != me).collect(),
    }
}

fn to_all(recipients: &[ReplicaId], m: &Message) -> Vec<(ReplicaId, Message)> {
    recipients.iter().map(|r| (*r, m.clone())).collect()
}

fn sign<T: stele_crypto::Signable>(v: T, vs: &ValidatorSet, signer: &dyn Signer) -> Signed<T> {
    Signed::sign(v, vs.chain(), signer)
}

/// A value that looks random but is a function of the message: forged digests and
/// the choice of forgery.
fn garbage(m: &Message) -> Digest {
    Digest::of_parts("stele/byzantine/garbage", &[&codec::encode(m)])
}

/// The same vote (PREPARE or COMMIT) for another digest, re-signed.
fn with_digest(m: &Message, digest: Digest, vs: &ValidatorSet, signer: &dyn Signer) -> Message {
    match m {
        Message::Prepare(p) => Message::Prepare(sign(
            Prepare {
                digest,
                ..p.value.clone()
            },
            vs,
            signer,
        )),
        Message::Commit(c) => Message::Commit(sign(
            Commit {
                digest,
                ..c.value.clone()
            },
            vs,
            signer,
        )),
        other => other.clone(),
    }
}

/// The conflicting block an equivocating primary sends beside its engine's: one tx
/// fewer and one millisecond later, so its digest always differs.
pub fn twin(body: &Block) -> Block {
    let mut txs = body.txs.to_vec();
    txs.pop();
    let twin = Block::new(
        body.height(),
        body.header.timestamp_ms.saturating_add(1),
        txs,
    );
    debug_assert_ne!(twin.digest(), body.digest());
    twin
}

fn equivocate(
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let Message::Proposal(p) = &m else {
        return to_all(recipients, &m);
    };
    if vs.primary(p.pre_prepare.view) != me {
        return to_all(recipients, &m);
    }
    let body = twin(&p.body);
    let pre_prepare = sign(
        PrePrepare {
            digest: body.digest(),
            ..p.pre_prepare.value.clone()
        },
        vs,
        signer,
    );
    let other = Message::Proposal(Proposal { pre_prepare, body });
    let prepare = |p: &Message| match p {
        Message::Proposal(p) => Message::Prepare(sign(
            Prepare {
                view: p.pre_prepare.view,
                height: p.pre_prepare.height,
                digest: p.pre_prepare.digest,
                replica: me,
            },
            vs,
            signer,
        )),
        other => other.clone(),
    };
    let (prepare_even, prepare_odd) = (prepare(&m), prepare(&other));
    recipients
        .iter()
        .flat_map(|r| {
            let (p, v) = if r.0 % 2 == 0 {
                (&m, &prepare_even)
            } else {
                (&other, &prepare_odd)
            };
            [(*r, p.clone()), (*r, v.clone())]
        })
        .collect()
}

/// One of four forgeries of a vote, chosen by `pick`: each must be refused (or only
/// buffered) by an honest replica, never counted.
fn forged_vote(
    m: &Message,
    pick: u8,
    me: ReplicaId,
    vs: &ValidatorSet,
    signer: &dyn Signer,
) -> Message {
    let other = ReplicaId((me.0 + 1) % vs.n() as u16);
    match m {
        Message::Prepare(p) => {
            let v = &p.value;
            let forged = match pick % 4 {
                0 => Prepare {
                    view: ViewNumber(u64::MAX - u64::from(pick)),
                    ..v.clone()
                },
                1 => Prepare {
                    height: v.height.plus(FAR_HEIGHT),
                    ..v.clone()
                },
                2 => Prepare {
                    replica: other,
                    ..v.clone()
                },
                _ => return Message::Prepare(broken(sign(v.clone(), vs, signer))),
            };
            Message::Prepare(sign(forged, vs, signer))
        }
        Message::Commit(c) => {
            let v = &c.value;
            let forged = match pick % 4 {
                0 => Commit {
                    view: ViewNumber(u64::MAX - u64::from(pick)),
                    ..v.clone()
                },
                1 => Commit {
                    height: v.height.plus(FAR_HEIGHT),
                    ..v.clone()
                },
                2 => Commit {
                    replica: other,
                    ..v.clone()
                },
                _ => return Message::Commit(broken(sign(v.clone(), vs, signer))),
            };
            Message::Commit(sign(forged, vs, signer))
        }
        Message::Checkpoint(c) => {
            let v = &c.value;
            let forged = match pick % 3 {
                0 => Checkpoint {
                    height: v.height.plus(FAR_HEIGHT),
                    ..v.clone()
                },
                1 => Checkpoint {
                    replica: other,
                    ..v.clone()
                },
                _ => return Message::Checkpoint(broken(sign(v.clone(), vs, signer))),
            };
            Message::Checkpoint(sign(forged, vs, signer))
        }
        other => other.clone(),
    }
}

/// A signature with its bits flipped.
fn broken<T>(mut s: Signed<T>) -> Signed<T> {
    s.signature = Signature(s.signature.0.map(|b| !b));
    s
}

fn bad_votes(
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let g = garbage(&m);
    let pick = g.as_bytes()[0];
    let mut out = Vec::new();
    match &m {
        Message::Prepare(_) | Message::Commit(_) => {
            let wrong = with_digest(&m, g, vs, signer);
            out.extend(to_all(recipients, &wrong));
            out.extend(to_all(recipients, &forged_vote(&m, pick, me, vs, signer)));
        }
        Message::Checkpoint(c) => {
            let wrong = Message::Checkpoint(sign(
                Checkpoint {
                    state_digest: g,
                    ..c.value.clone()
                },
                vs,
                signer,
            ));
            out.extend(to_all(recipients, &wrong));
            out.extend(to_all(recipients, &forged_vote(&m, pick, me, vs, signer)));
        }
        Message::Proposal(p) if vs.primary(p.pre_prepare.view) == me => {
            out.extend(to_all(recipients, &m));
            let own = Message::Prepare(sign(
                Prepare {
                    view: p.pre_prepare.view,
                    height: p.pre_prepare.height,
                    digest: p.pre_prepare.digest,
                    replica: me,
                },
                vs,
                signer,
            ));
            out.extend(to_all(recipients, &own));
        }
        Message::ViewChange(_) => {
            let inflated = Message::ViewChange(sign(
                ViewChange {
                    new_view: ViewNumber(u64::MAX),
                    replica: me,
                    checkpoint: None,
                    prepared: Vec::new(),
                },
                vs,
                signer,
            ));
            // The real one, then the inflated one: an honest replica keeps the latest
            // VIEW-CHANGE of each peer, so it shadows every later real one of ours.
            out.extend(to_all(recipients, &m));
            out.extend(to_all(recipients, &inflated));
        }
        Message::Relay(r) => {
            let garbled = Message::Relay(TxRelay {
                txs: r.txs.iter().cloned().map(broken).collect(),
            });
            out.extend(to_all(recipients, &garbled));
            out.extend(to_all(recipients, &m));
        }
        _ => out.extend(to_all(recipients, &m)),
    }
    out
}

fn bad_new_view(
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let Message::NewView(nv) = &m else {
        return to_all(recipients, &m);
    };
    if vs.primary(nv.view) != me {
        return to_all(recipients, &m);
    }
    let mut bad: NewView = nv.value.clone();
    let forged = Digest::of_parts("stele/byzantine/forged-block", &[&codec::encode(&bad.view)]);
    if bad.view.0 % 2 == 1 || bad.pre_prepares.is_empty() {
        // One entry more than V implies, for a block nobody prepared.
        let height = bad
            .pre_prepares
            .last()
            .map_or(Height(1), |p| p.height.next());
        bad.pre_prepares.push(sign(
            PrePrepare {
                view: bad.view,
                height,
                digest: forged,
            },
            vs,
            signer,
        ));
    } else {
        // As many entries as V implies, one of them for another block.
        let first = bad.pre_prepares[0].value.clone();
        bad.pre_prepares[0] = sign(
            PrePrepare {
                digest: forged,
                ..first
            },
            vs,
            signer,
        );
    }
    to_all(recipients, &Message::NewView(sign(bad, vs, signer)))
}

fn propose_to_some(
    peers: u64,
    me: ReplicaId,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    match &m {
        Message::Proposal(p) if vs.primary(p.pre_prepare.view) == me => recipients
            .iter()
            .filter(|r| in_set(peers, **r))
            .map(|r| (*r, m.clone()))
            .collect(),
        _ => to_all(recipients, &m),
    }
}

/// Whether replica `r` is in the bit set `peers` (ids from 64 up never are).
fn in_set(peers: u64, r: ReplicaId) -> bool {
    r.0 < 64 && peers & (1 << r.0) != 0
}

/// A VIEW-CHANGE with fewer prepared certificates than its engine holds, re-signed.
fn stale_view_change(
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let Message::ViewChange(vc) = &m else {
        return to_all(recipients, &m);
    };
    let mut stale = vc.value.clone();
    if stale.new_view.0 % 2 == 1 {
        stale.prepared.clear();
    } else {
        stale.prepared.truncate(stale.prepared.len() / 2);
    }
    to_all(recipients, &Message::ViewChange(sign(stale, vs, signer)))
}

/// State-transfer answers spoiled one of three ways, chosen by the message itself:
/// a body swapped for its twin (it no longer matches its certificate or the wanted
/// digest), the batch reversed, or cut to its first block.
fn bad_transfer(recipients: &[ReplicaId], m: Message) -> Vec<(ReplicaId, Message)> {
    let pick = garbage(&m).as_bytes()[0] % 3;
    let spoiled = match m {
        Message::Blocks(mut b) => {
            match pick {
                0 => {
                    if let Some(cb) = b.blocks.last_mut() {
                        cb.block = twin(&cb.block);
                    }
                }
                1 => b.blocks.reverse(),
                _ => b.blocks.truncate(1),
            }
            Message::Blocks(b)
        }
        Message::Bodies(mut b) => {
            match pick {
                0 => b.blocks = b.blocks.iter().map(twin).collect(),
                1 => b.blocks.reverse(),
                _ => b.blocks.truncate(1),
            }
            Message::Bodies(b)
        }
        m => m,
    };
    to_all(recipients, &spoiled)
}

fn redate(
    shift_ms: i64,
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    match &m {
        Message::Proposal(p)
            if vs.primary(p.pre_prepare.view) == me
                && p.pre_prepare.height.0 % 2 == 0
                && !p.body.is_null() =>
        {
            let ts = p.body.header.timestamp_ms.saturating_add_signed(shift_ms);
            let body = Block::new(p.body.height(), ts.max(1), p.body.txs.to_vec());
            let pre_prepare = sign(
                PrePrepare {
                    digest: body.digest(),
                    ..p.pre_prepare.value.clone()
                },
                vs,
                signer,
            );
            to_all(
                recipients,
                &Message::Proposal(Proposal { pre_prepare, body }),
            )
        }
        _ => to_all(recipients, &m),
    }
}

fn censor(
    victim: &PublicKey,
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    match &m {
        Message::Proposal(p) if vs.primary(p.pre_prepare.view) == me => {
            if !p.body.txs.iter().any(|t| t.sender == *victim) {
                return to_all(recipients, &m);
            }
            let txs = p
                .body
                .txs
                .iter()
                .filter(|t| t.sender != *victim)
                .cloned()
                .collect();
            let body = Block::new(p.body.height(), p.body.header.timestamp_ms, txs);
            let pre_prepare = sign(
                PrePrepare {
                    digest: body.digest(),
                    ..p.pre_prepare.value.clone()
                },
                vs,
                signer,
            );
            to_all(
                recipients,
                &Message::Proposal(Proposal { pre_prepare, body }),
            )
        }
        // Its engine voted for the uncensored block: keep those votes to itself.
        Message::Prepare(p) if vs.primary(p.view) == me => Vec::new(),
        Message::Commit(c) if vs.primary(c.view) == me => Vec::new(),
        _ => to_all(recipients, &m),
    }
}

/// The message, then to each recipient [`FLOOD`] fetches: after a STATUS for blocks from
/// heights 1, 2, 3, ... on (each answer a full batch from the store), after a vote for
/// the body it voted for.
fn flood_fetches(recipients: &[ReplicaId], m: Message) -> Vec<(ReplicaId, Message)> {
    let fetches: Vec<Message> = match &m {
        Message::Status(_) => (1..=FLOOD)
            .map(|from| {
                Message::FetchBlocks(FetchBlocks {
                    from: Height(from),
                    to: Height(u64::MAX),
                })
            })
            .collect(),
        Message::Prepare(Signed {
            value: Prepare { height, digest, .. },
            ..
        })
        | Message::Commit(Signed {
            value: Commit { height, digest, .. },
            ..
        }) => {
            let f = Message::FetchBodies(FetchBodies {
                wanted: vec![(*height, *digest)],
            });
            (0..FLOOD).map(|_| f.clone()).collect()
        }
        _ => Vec::new(),
    };
    let mut out = to_all(recipients, &m);
    for f in &fetches {
        out.extend(to_all(recipients, f));
    }
    out
}

/// The message, then [`FLOOD`] conflicting ones for the same (view, height): votes for
/// other digests, or as primary proposals of other blocks (the same txs, each dated a
/// millisecond later than the one before).
fn flood_evidence(
    me: ReplicaId,
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let conflicting: Vec<Message> = match &m {
        Message::Prepare(Signed {
            value: Prepare { replica, .. },
            ..
        })
        | Message::Commit(Signed {
            value: Commit { replica, .. },
            ..
        }) if *replica == me => {
            let seed = codec::encode(&m);
            (0..FLOOD)
                .map(|i| {
                    let d = Digest::of_parts("stele/byzantine/flood", &[&seed, &i.to_le_bytes()]);
                    with_digest(&m, d, vs, signer)
                })
                .collect()
        }
        Message::Proposal(p) if vs.primary(p.pre_prepare.view) == me => (1..=FLOOD)
            .map(|i| {
                let ts = p.body.header.timestamp_ms.saturating_add(i);
                let body = Block::new(p.body.height(), ts, p.body.txs.to_vec());
                let pre_prepare = sign(
                    PrePrepare {
                        digest: body.digest(),
                        ..p.pre_prepare.value.clone()
                    },
                    vs,
                    signer,
                );
                Message::Proposal(Proposal { pre_prepare, body })
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut out = to_all(recipients, &m);
    for c in &conflicting {
        out.extend(to_all(recipients, c));
    }
    out
}

/// A STATUS claiming everything at its maximum, re-signed; other messages unchanged.
fn lying_status(
    signer: &dyn Signer,
    vs: &ValidatorSet,
    recipients: &[ReplicaId],
    m: Message,
) -> Vec<(ReplicaId, Message)> {
    let Message::Status(s) = &m else {
        return to_all(recipients, &m);
    };
    let lie = Message::Status(sign(
        Status {
            view: ViewNumber(u64::MAX),
            active: true,
            executed: Height(u64::MAX),
            stable_checkpoint: Height(u64::MAX),
            ..s.value.clone()
        },
        vs,
        signer,
    ));
    to_all(recipients, &lie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Inbound, Reject, Verifier};
    use stele_crypto::sim::{MacScheme, MacSigner};
    use stele_crypto::ChainId;
    use stele_types::genesis::{GenesisAccount, Params};
    use stele_types::tx::sign_tx;
    use stele_types::{Amount, Genesis, Nonce, Op, Transaction, TxBody, ValidatorInfo};

    struct Net {
        signers: Vec<MacSigner>,
        clients: Vec<MacSigner>,
        genesis: Genesis,
        vs: ValidatorSet,
        scheme: MacScheme,
    }

    fn net() -> Net {
        let signers: Vec<MacSigner> = (0..4u8).map(|i| MacSigner::new([i; 32])).collect();
        let clients: Vec<MacSigner> = (0..2u8).map(|i| MacSigner::new([100 + i; 32])).collect();
        let genesis = Genesis {
            chain_id: ChainId::new("byz-test").unwrap(),
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
            accounts: clients
                .iter()
                .map(|c| GenesisAccount {
                    key: c.public_key(),
                    balance: Amount(1000),
                })
                .collect(),
            params: Params {
                window: 16,
                checkpoint_interval: 8,
                ..Params::default()
            },
        };
        let scheme = MacScheme::new(signers.iter().chain(clients.iter()));
        Net {
            vs: genesis.validator_set(),
            signers,
            clients,
            genesis,
            scheme,
        }
    }

    impl Net {
        fn tx(&self, client: usize, nonce: u64) -> Transaction {
            let c = &self.clients[client];
            sign_tx(
                TxBody {
                    sender: c.public_key(),
                    nonce: Nonce(nonce),
                    op: Op::Transfer {
                        to: self.clients[1 - client].public_key(),
                        amount: Amount(1),
                    },
                },
                self.vs.chain(),
                c,
            )
        }

        fn proposal(&self, view: u64, txs: Vec<Transaction>) -> Message {
            let body = Block::new(Height(1), 5_000, txs);
            let pre_prepare = sign(
                PrePrepare {
                    view: ViewNumber(view),
                    height: Height(1),
                    digest: body.digest(),
                },
                &self.vs,
                &self.signers[self.vs.primary(ViewNumber(view)).index()],
            );
            Message::Proposal(Proposal { pre_prepare, body })
        }

        fn prepare(&self, r: u16) -> Message {
            Message::Prepare(sign(
                Prepare {
                    view: ViewNumber(0),
                    height: Height(1),
                    digest: Digest::of(b"block"),
                    replica: ReplicaId(r),
                },
                &self.vs,
                &self.signers[r as usize],
            ))
        }

        fn play(
            &self,
            b: Behaviour,
            me: u16,
            to: Option<u16>,
            m: Message,
        ) -> Vec<(ReplicaId, Message)> {
            outgoing(
                &b,
                ReplicaId(me),
                &self.signers[me as usize],
                &self.vs,
                to.map(ReplicaId),
                m,
            )
        }

        fn verify(&self, from: u16, m: Message) -> Result<Inbound, Reject> {
            let v = Verifier {
                validators: &self.vs,
                genesis: &self.genesis,
                scheme: &self.scheme,
                known: None,
            };
            v.verify(ReplicaId(from), m).map(|m| m.into_inbound())
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        let n = net();
        let victim = n.clients[0].public_key();
        for b in [
            Behaviour::Silent,
            Behaviour::Equivocate,
            Behaviour::BadVotes,
            Behaviour::BadNewView,
            Behaviour::Censor { victim },
            Behaviour::Accomplice,
            Behaviour::LyingStatus,
            Behaviour::ProposeToSome { peers: 0b1010 },
            Behaviour::Redate { shift_ms: -2000 },
            Behaviour::Redate { shift_ms: 4000 },
            Behaviour::WithholdCheckpoints,
            Behaviour::StaleViewChange,
            Behaviour::BadTransfer,
            Behaviour::SendToSome { peers: 0b110 },
            Behaviour::FloodFetches,
            Behaviour::FloodEvidence,
        ] {
            assert_eq!(b.to_string().parse::<Behaviour>(), Ok(b), "{b}");
        }
        assert_eq!("bad-votes".parse(), Ok(Behaviour::BadVotes));
        assert!(matches!(
            "loud".parse::<Behaviour>(),
            Err(ParseBehaviourError::Unknown { .. })
        ));
        assert!(matches!(
            "censor".parse::<Behaviour>(),
            Err(ParseBehaviourError::BadVictim { .. })
        ));
        assert!(matches!(
            "censor:zz".parse::<Behaviour>(),
            Err(ParseBehaviourError::BadVictim { .. })
        ));
        assert_eq!(
            "propose-to-some:6".parse(),
            Ok(Behaviour::ProposeToSome { peers: 0b110 })
        );
        assert!(matches!(
            "propose-to-some:xy".parse::<Behaviour>(),
            Err(ParseBehaviourError::BadPeers { .. })
        ));
        assert!(matches!(
            "redate".parse::<Behaviour>(),
            Err(ParseBehaviourError::BadShift { .. })
        ));
    }

    #[test]
    fn flood_fetches_asks_every_peer_many_times_and_sends_the_rest_unchanged() {
        let n = net();
        let b = Behaviour::FloodFetches;
        let status = Message::Status(sign(
            Status {
                replica: ReplicaId(1),
                view: ViewNumber(0),
                active: true,
                executed: Height(40),
                stable_checkpoint: Height(32),
            },
            &n.vs,
            &n.signers[1],
        ));
        let out = n.play(b, 1, None, status.clone());
        assert_eq!(out.len() as u64, 3 * (1 + FLOOD));
        assert_eq!(out.iter().filter(|(_, m)| *m == status).count(), 3);
        let blocks = out
            .iter()
            .filter(|(_, m)| matches!(m, Message::FetchBlocks(_)))
            .count() as u64;
        assert_eq!(blocks, 3 * FLOOD);
        let prepare = n.prepare(1);
        let out = n.play(b, 1, Some(2), prepare.clone());
        assert_eq!(out[0], (ReplicaId(2), prepare));
        assert!(out[1..].iter().all(|(r, m)| *r == ReplicaId(2)
            && matches!(m, Message::FetchBodies(f)
                if f.wanted == [(Height(1), Digest::of(b"block"))])));
        assert_eq!(out.len() as u64, 1 + FLOOD);
        for (_, m) in out {
            assert!(n.verify(1, m).is_ok());
        }
        let p = n.proposal(0, vec![n.tx(0, 0)]);
        assert_eq!(n.play(b, 0, None, p).len(), 3);
    }

    #[test]
    fn flood_evidence_signs_one_slot_many_ways() {
        let n = net();
        let b = Behaviour::FloodEvidence;
        let prepare = n.prepare(1);
        let out = n.play(b, 1, Some(2), prepare.clone());
        assert_eq!(out.len() as u64, 1 + FLOOD);
        assert_eq!(out[0].1, prepare);
        let mut digests = std::collections::HashSet::new();
        for (_, m) in &out {
            let Ok(Inbound::Prepare(p)) = n.verify(1, m.clone()) else {
                panic!("a flooded PREPARE must verify")
            };
            assert_eq!((p.view, p.height), (ViewNumber(0), Height(1)));
            digests.insert(p.digest);
        }
        assert_eq!(digests.len() as u64, 1 + FLOOD, "each for another digest");
        let proposal = n.proposal(0, vec![n.tx(0, 0)]);
        let out = n.play(b, 0, Some(1), proposal.clone());
        assert_eq!(out.len() as u64, 1 + FLOOD);
        assert_eq!(out[0].1, proposal);
        let mut digests = std::collections::HashSet::new();
        for (_, m) in &out {
            let Ok(Inbound::Proposal { pre_prepare, body }) = n.verify(0, m.clone()) else {
                panic!("a flooded proposal must verify")
            };
            assert!(body.matches(Height(1), &pre_prepare.digest));
            digests.insert(pre_prepare.digest);
        }
        assert_eq!(digests.len() as u64, 1 + FLOOD);
        // Another replica's votes and other kinds pass unchanged.
        assert_eq!(n.play(b, 1, Some(2), n.prepare(3)).len(), 1);
    }

    #[test]
    fn redate_moves_the_timestamps_of_even_heights_only() {
        let n = net();
        let b = Behaviour::Redate { shift_ms: -2000 };
        // `proposal` builds height 1 at 5,000 ms: odd, unchanged.
        let odd = n.proposal(0, vec![n.tx(0, 0)]);
        assert!(n
            .play(b, 0, None, odd.clone())
            .iter()
            .all(|(_, m)| *m == odd));
        let body = Block::new(Height(2), 5_000, vec![n.tx(0, 0)]);
        let pre_prepare = sign(
            PrePrepare {
                view: ViewNumber(0),
                height: Height(2),
                digest: body.digest(),
            },
            &n.vs,
            &n.signers[0],
        );
        let even = Message::Proposal(Proposal { pre_prepare, body });
        let out = n.play(b, 0, None, even);
        assert_eq!(out.len(), 3);
        for (_, m) in out {
            let Ok(Inbound::Proposal { pre_prepare, body }) = n.verify(0, m) else {
                panic!("a redated proposal must verify")
            };
            assert_eq!(body.header.timestamp_ms, 3_000);
            assert!(body.matches(Height(2), &pre_prepare.digest));
        }
    }

    #[test]
    fn propose_to_some_sends_its_proposals_to_the_chosen_peers_only() {
        let n = net();
        let b = Behaviour::ProposeToSome { peers: 0b1010 };
        let m = n.proposal(0, vec![n.tx(0, 0)]);
        let out = n.play(b, 0, None, m.clone());
        assert_eq!(out.iter().map(|(r, _)| r.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!(
            out.iter().all(|(_, sent)| *sent == m),
            "the proposal unchanged"
        );
        // A retransmission to a peer outside the set goes nowhere.
        assert!(n.play(b, 0, Some(2), m.clone()).is_empty());
        // Votes, and another primary's proposals, go where the engine sends them.
        assert_eq!(n.play(b, 1, None, n.prepare(1)).len(), 3);
        assert_eq!(
            n.play(b, 0, Some(2), n.proposal(1, vec![n.tx(0, 0)])).len(),
            1
        );
    }

    #[test]
    fn withhold_checkpoints_drops_checkpoint_votes_only() {
        let n = net();
        let b = Behaviour::WithholdCheckpoints;
        let ckpt = Message::Checkpoint(sign(
            Checkpoint {
                height: Height(8),
                state_digest: Digest::of(b"state"),
                replica: ReplicaId(1),
            },
            &n.vs,
            &n.signers[1],
        ));
        assert!(n.play(b, 1, None, ckpt.clone()).is_empty());
        assert!(n.play(b, 1, Some(2), ckpt).is_empty());
        assert_eq!(n.play(b, 1, None, n.prepare(1)).len(), 3);
    }

    #[test]
    fn send_to_some_sends_every_kind_to_the_chosen_peers_only() {
        let n = net();
        let b = Behaviour::SendToSome { peers: 0b0100 };
        let out = n.play(b, 1, None, n.prepare(1));
        assert_eq!(out.iter().map(|(r, _)| r.0).collect::<Vec<_>>(), vec![2]);
        assert!(n.play(b, 1, Some(3), n.prepare(1)).is_empty());
        let m = n.proposal(0, vec![n.tx(0, 0)]);
        assert_eq!(n.play(b, 0, None, m).len(), 1);
    }

    #[test]
    fn stale_view_change_hides_prepared_certificates_and_still_verifies() {
        let n = net();
        for view in [1u64, 2] {
            let vc = ViewChange {
                new_view: ViewNumber(view),
                replica: ReplicaId(2),
                checkpoint: None,
                prepared: Vec::new(),
            };
            let m = Message::ViewChange(sign(vc, &n.vs, &n.signers[2]));
            let out = n.play(Behaviour::StaleViewChange, 2, None, m);
            assert_eq!(out.len(), 3);
            for (_, m) in out {
                let Ok(Inbound::ViewChange(v)) = n.verify(2, m) else {
                    panic!("a stale VIEW-CHANGE is still validly signed")
                };
                assert!(v.prepared.is_empty());
            }
        }
    }

    #[test]
    fn bad_transfer_spoils_bodies_and_batches() {
        let n = net();
        let blocks: Vec<Block> = (0..3u64)
            .map(|i| Block::new(Height(i + 1), 5_000 + i, vec![n.tx(0, i)]))
            .collect();
        let mut changed = 0;
        for k in 0..3 {
            let m = Message::Bodies(stele_types::Bodies {
                blocks: blocks[..=k].to_vec(),
            });
            for (_, out) in n.play(Behaviour::BadTransfer, 1, Some(2), m.clone()) {
                let Message::Bodies(b) = &out else { panic!() };
                assert!(b.blocks.len() <= k + 1);
                changed += usize::from(out != m);
            }
        }
        assert!(changed > 0, "some answer must be spoiled");
        // Other messages pass unchanged.
        assert_eq!(
            n.play(Behaviour::BadTransfer, 1, Some(2), n.prepare(1)),
            vec![(ReplicaId(2), n.prepare(1))]
        );
    }

    #[test]
    fn silent_sends_nothing_not_even_status() {
        let n = net();
        assert!(n.play(Behaviour::Silent, 1, None, n.prepare(1)).is_empty());
        let status = Message::Status(sign(
            stele_types::Status {
                replica: ReplicaId(1),
                view: ViewNumber(0),
                active: true,
                executed: Height(0),
                stable_checkpoint: Height(0),
            },
            &n.vs,
            &n.signers[1],
        ));
        assert!(n.play(Behaviour::Silent, 1, Some(2), status).is_empty());
    }

    #[test]
    fn lying_status_claims_the_maximum_and_signs_it() {
        let n = net();
        let status = Message::Status(sign(
            stele_types::Status {
                replica: ReplicaId(1),
                view: ViewNumber(2),
                active: false,
                executed: Height(9),
                stable_checkpoint: Height(8),
            },
            &n.vs,
            &n.signers[1],
        ));
        let out = n.play(Behaviour::LyingStatus, 1, None, status);
        assert_eq!(out.len(), 3);
        for (to, m) in out {
            let Ok(Inbound::Status(s)) = n.verify(1, m) else {
                panic!("the lie to {to} must verify as replica 1's STATUS");
            };
            assert_eq!(s.replica, ReplicaId(1));
            assert_eq!(s.view, ViewNumber(u64::MAX));
            assert_eq!(s.executed, Height(u64::MAX));
            assert_eq!(s.stable_checkpoint, Height(u64::MAX));
        }
        let prepare = n.play(Behaviour::LyingStatus, 1, Some(2), n.prepare(1));
        assert_eq!(prepare.len(), 1, "everything else as the engine says");
    }

    #[test]
    fn equivocating_primary_sends_even_and_odd_backups_different_valid_blocks() {
        let n = net();
        let m = n.proposal(0, vec![n.tx(0, 0), n.tx(1, 0)]);
        let out = n.play(Behaviour::Equivocate, 0, None, m);
        assert_eq!(
            out.iter().map(|(r, _)| r.0).collect::<Vec<_>>(),
            vec![1, 1, 2, 2, 3, 3]
        );
        let mut digests = BTreeMap::new();
        let mut prepared = BTreeMap::new();
        for (r, m) in out {
            match n.verify(0, m) {
                Ok(Inbound::Proposal { pre_prepare, body }) => {
                    assert_eq!(
                        (pre_prepare.view, pre_prepare.height),
                        (ViewNumber(0), Height(1))
                    );
                    assert!(body.matches(Height(1), &pre_prepare.digest));
                    digests.insert(r.0, pre_prepare.digest);
                }
                Ok(Inbound::Prepare(p)) => {
                    assert_eq!(p.replica, ReplicaId(0), "the primary's own PREPARE");
                    prepared.insert(r.0, p.digest);
                }
                other => panic!("an equivocating primary's message must verify: {other:?}"),
            }
        }
        assert_ne!(digests[&1], digests[&2]);
        assert_eq!(digests[&1], digests[&3]);
        assert_eq!(
            digests, prepared,
            "each backup gets a PREPARE for its own block"
        );
        // Not the primary of view 1: it proposes nothing there, and passes others on.
        let p = n.proposal(1, vec![n.tx(0, 0)]);
        assert_eq!(
            n.play(Behaviour::Equivocate, 0, Some(2), p.clone())[0]
                .1
                .kind(),
            p.kind()
        );
    }

    #[test]
    fn bad_votes_count_against_quorums_and_forgeries_are_refused() {
        let n = net();
        let honest = Digest::of(b"block");
        let mut held = 0;
        for r in 1..4u16 {
            for (to, m) in n.play(Behaviour::BadVotes, r, None, n.prepare(r)) {
                assert_ne!(to.0, r);
                match n.verify(r, m) {
                    Ok(Inbound::Prepare(p)) => {
                        if p.view == ViewNumber(0) && p.height == Height(1) {
                            assert_ne!(p.digest, honest, "never the honest vote");
                            held += 1;
                        } else {
                            assert!(p.view.0 > 1 << 60 || p.height.0 > 1 << 30);
                        }
                    }
                    Ok(other) => panic!("a vote became {other:?}"),
                    Err(e) => assert!(
                        matches!(e, Reject::WrongSender { .. } | Reject::BadSignature(_)),
                        "{e}"
                    ),
                }
            }
        }
        assert_eq!(
            held, 9,
            "each recipient holds one wrong-digest vote per sender"
        );
        // As primary it also prepares its own proposal (honest replicas refuse that).
        let out = n.play(
            Behaviour::BadVotes,
            0,
            None,
            n.proposal(0, vec![n.tx(0, 0)]),
        );
        assert!(out
            .iter()
            .any(|(_, m)| matches!(m, Message::Prepare(p) if p.replica == ReplicaId(0))));
    }

    #[test]
    fn bad_new_view_changes_o() {
        let n = net();
        let nv = NewView {
            view: ViewNumber(1),
            view_changes: vec![],
            pre_prepares: vec![],
        };
        let m = Message::NewView(sign(nv.clone(), &n.vs, &n.signers[1]));
        let out = n.play(Behaviour::BadNewView, 1, None, m);
        assert_eq!(out.len(), 3);
        for (_, m) in out {
            let Message::NewView(bad) = m else { panic!() };
            assert_ne!(bad.value, nv);
            assert_eq!(bad.pre_prepares.len(), 1);
        }
    }

    #[test]
    fn censor_drops_the_victims_txs_and_keeps_the_others() {
        let n = net();
        let victim = n.clients[0].public_key();
        let m = n.proposal(0, vec![n.tx(0, 0), n.tx(1, 0)]);
        let out = n.play(Behaviour::Censor { victim }, 0, None, m);
        assert_eq!(out.len(), 3);
        for (_, m) in out {
            let Ok(Inbound::Proposal { body, .. }) = n.verify(0, m) else {
                panic!()
            };
            assert_eq!(body.txs.to_vec(), vec![n.tx(1, 0)]);
        }
        let own_commit = Message::Commit(sign(
            Commit {
                view: ViewNumber(0),
                height: Height(1),
                digest: honest_digest(),
                replica: ReplicaId(0),
            },
            &n.vs,
            &n.signers[0],
        ));
        assert!(n
            .play(Behaviour::Censor { victim }, 0, None, own_commit)
            .is_empty());
        assert_eq!(
            n.play(Behaviour::Censor { victim }, 1, None, n.prepare(1))
                .len(),
            3
        );
    }

    fn honest_digest() -> Digest {
        Digest::of(b"block")
    }

    #[test]
    fn colluders_vote_for_the_block_each_recipient_got() {
        let n = net();
        let mut c = Collusion::new();
        let m = n.proposal(0, vec![n.tx(0, 0), n.tx(1, 0)]);
        let sent = outgoing_colluding(
            &Behaviour::Equivocate,
            &mut c,
            ReplicaId(0),
            &n.signers[0],
            &n.vs,
            None,
            m,
        );
        let (even, odd) = c.split(ViewNumber(0), Height(1)).expect("a split");
        for (r, m) in &sent {
            let digest = match m {
                Message::Proposal(p) => p.pre_prepare.digest,
                Message::Prepare(p) => p.digest,
                other => panic!("{other:?}"),
            };
            assert_eq!(digest, if r.0 % 2 == 0 { even } else { odd });
        }
        let vote = Message::Prepare(sign(
            Prepare {
                view: ViewNumber(0),
                height: Height(1),
                digest: odd,
                replica: ReplicaId(3),
            },
            &n.vs,
            &n.signers[3],
        ));
        let out = outgoing_colluding(
            &Behaviour::Accomplice,
            &mut c,
            ReplicaId(3),
            &n.signers[3],
            &n.vs,
            None,
            vote,
        );
        for (r, m) in out {
            let Ok(Inbound::Prepare(p)) = n.verify(3, m) else {
                panic!()
            };
            assert_eq!(p.digest, if r.0 % 2 == 0 { even } else { odd });
        }
    }
}
