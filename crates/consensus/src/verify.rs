//! Turns a decoded [`Message`] from a peer into a [`VerifiedMessage`] the engine accepts.
//!
//! All the cryptography of a message happens here, off the engine's thread: the outer
//! signature against the replica that must have signed it, every certificate inside it,
//! every tx signature in a body (batched), and body-to-digest matches. What the engine
//! gets can only have come through this module.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use stele_crypto::{Digest, Scheme, Signed, Verified};
use stele_types::certs::CertError;
use stele_types::{
    codec, Block, CommittedBlock, FetchBlocks, FetchBodies, Genesis, Height, Message, NewView,
    PrePrepare, ReplicaId, Transaction, TxBody, TxHash, Txs, ValidatorSet, ViewChange,
};

/// Why a message was refused before reaching the engine; `label()` is its metrics reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("bad certificate: {0}")]
    BadCertificate(#[from] CertError),
    #[error("block body does not match height {height}")]
    BodyMismatch { height: Height },
    #[error("bad block content: {0}")]
    BadBlock(String),
    #[error("bad tx signature in tx {index}")]
    BadTxSignature { index: usize },
    #[error("message claims replica {claimed} but came from {from}")]
    WrongSender { claimed: ReplicaId, from: ReplicaId },
    #[error("message from {0}, which is no validator")]
    UnknownSender(ReplicaId),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("wrong view: {0}")]
    WrongView(String),
    #[error("height out of window: {0}")]
    OutOfWindow(String),
    #[error("duplicate vote from {0}")]
    Duplicate(ReplicaId),
    #[error("equivocation by {0}")]
    Equivocation(ReplicaId),
    #[error("PREPARE from the primary {0}")]
    PrimaryPrepare(ReplicaId),
    #[error("NEW-VIEW does not match what V implies: {0}")]
    BadNewView(String),
    #[error("timestamp {timestamp_ms} too far from arrival {arrival_ms}")]
    Skew { timestamp_ms: u64, arrival_ms: u64 },
    #[error("timestamp {timestamp_ms} not between the known blocks around it ({below}, {above})")]
    Timestamp {
        timestamp_ms: u64,
        below: u64,
        above: u64,
    },
    #[error("not accepted while recovering")]
    Recovering,
    /// A fetch from a peer that used up its serving budget for the interval.
    #[error("{what} over the peer's serving budget for this interval")]
    RateLimited { what: &'static str },
}

impl Reject {
    /// Every label, for metrics series created at start.
    pub const LABELS: [&'static str; 19] = [
        "bad_signature",
        "bad_certificate",
        "body_mismatch",
        "bad_block",
        "bad_tx_signature",
        "wrong_sender",
        "unknown_sender",
        "malformed",
        "wrong_view",
        "out_of_window",
        "duplicate",
        "equivocation",
        "primary_prepare",
        "bad_new_view",
        "skew",
        "timestamp",
        "recovering",
        "rate_limited",
        "decode",
    ];

    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::BadSignature(_) => "bad_signature",
            Reject::BadCertificate(_) => "bad_certificate",
            Reject::BodyMismatch { .. } => "body_mismatch",
            Reject::BadBlock(_) => "bad_block",
            Reject::BadTxSignature { .. } => "bad_tx_signature",
            Reject::WrongSender { .. } => "wrong_sender",
            Reject::UnknownSender(_) => "unknown_sender",
            Reject::Malformed { .. } => "malformed",
            Reject::WrongView(_) => "wrong_view",
            Reject::OutOfWindow(_) => "out_of_window",
            Reject::Duplicate(_) => "duplicate",
            Reject::Equivocation(_) => "equivocation",
            Reject::PrimaryPrepare(_) => "primary_prepare",
            Reject::BadNewView(_) => "bad_new_view",
            Reject::Skew { .. } => "skew",
            Reject::Timestamp { .. } => "timestamp",
            Reject::Recovering => "recovering",
            Reject::RateLimited { .. } => "rate_limited",
        }
    }
}

/// A message whose every signature, certificate and body match has been checked.
#[derive(Debug, Clone)]
pub enum Inbound {
    Proposal {
        pre_prepare: Verified<PrePrepare>,
        body: Block,
    },
    Prepare(Verified<stele_types::Prepare>),
    Commit(Verified<stele_types::Commit>),
    Checkpoint(Verified<stele_types::Checkpoint>),
    /// A stable checkpoint certificate (q signatures checked).
    CheckpointCertificate(stele_types::CheckpointCertificate),
    /// A VIEW-CHANGE whose checkpoint proof and prepared certificates all verify.
    ViewChange(Verified<ViewChange>),
    /// A NEW-VIEW whose every VIEW-CHANGE and O entry verifies (O is recomputed by the engine).
    NewView(Verified<NewView>),
    Status(Verified<stele_types::Status>),
    FetchBodies(FetchBodies),
    /// Bodies whose txs are well-formed and signed; matched against wanted digests by the engine.
    Bodies(Vec<Block>),
    FetchBlocks(FetchBlocks),
    /// Committed blocks whose certificates verify and whose bodies match them.
    Blocks(Vec<CommittedBlock>),
    /// Relayed txs whose signatures verify (the node admits them, then calls `on_request`).
    Relay(Vec<Verified<TxBody>>),
}

/// Checked input for [`crate::Engine::on_message`]. Only [`Verifier::verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedMessage(pub(crate) Inbound);

impl VerifiedMessage {
    /// What it holds.
    pub fn inbound(&self) -> &Inbound {
        &self.0
    }

    /// Takes it apart (the node routes relays itself).
    pub fn into_inbound(self) -> Inbound {
        self.0
    }
}

/// Most verdicts [`FrameVerdicts`] remembers of each kind (verified, refused).
pub const FRAME_VERDICTS_CAP: usize = 32;

/// Heavy consensus messages (VIEW-CHANGE, NEW-VIEW, checkpoint certificate) already
/// verified here, by the digest of their encoding.
///
/// A VIEW-CHANGE with a full window carries hundreds of signatures, and it comes again
/// every T/2 while its sender is inactive (DESIGN.md: re-broadcast), as do NEW-VIEWs in
/// STATUS answers. Verifying each copy anew starves the verification workers under
/// load: the messages that would end a view change queue behind copies of themselves.
/// The same bytes verify the same way (the validator set and parameters are fixed, and
/// the check of these kinds does not look at the sending peer), so a copy is answered
/// as the first was. Shared by the verification workers (hence the lock).
///
/// Refusals are remembered too: a Byzantine primary resending one bad NEW-VIEW would
/// otherwise cost every signature in it on every copy. They have their own queue, so
/// that a peer sending many bad frames pushes out its own refusals, never the good
/// frames an honest peer resends.
#[derive(Debug, Default)]
pub struct FrameVerdicts {
    inner: Mutex<Verdicts>,
}

#[derive(Debug, Default)]
struct Verdicts {
    verified: VecDeque<(Digest, VerifiedMessage)>,
    refused: VecDeque<(Digest, Reject)>,
}

/// Appends to a bounded queue, the oldest forgotten first.
fn remember<T>(q: &mut VecDeque<(Digest, T)>, d: Digest, v: T) {
    if q.iter().any(|(k, _)| *k == d) {
        return;
    }
    q.push_back((d, v));
    while q.len() > FRAME_VERDICTS_CAP {
        q.pop_front();
    }
    debug_assert!(q.len() <= FRAME_VERDICTS_CAP);
}

impl FrameVerdicts {
    /// Whether verdicts on messages of this kind are remembered.
    pub fn keeps(msg: &Message) -> bool {
        matches!(
            msg,
            Message::ViewChange(_) | Message::NewView(_) | Message::CheckpointCertificate(_)
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, d: &Digest) -> Option<Result<VerifiedMessage, Reject>> {
        let v = self.lock();
        if let Some((_, m)) = v.verified.iter().find(|(k, _)| k == d) {
            return Some(Ok(m.clone()));
        }
        v.refused
            .iter()
            .find(|(k, _)| k == d)
            .map(|(_, r)| Err(r.clone()))
    }

    fn insert(&self, d: Digest, verdict: &Result<VerifiedMessage, Reject>) {
        let mut v = self.lock();
        match verdict {
            Ok(m) => remember(&mut v.verified, d, m.clone()),
            Err(r) => remember(&mut v.refused, d, r.clone()),
        }
    }

    /// How many verdicts it holds (verified and refused).
    pub fn len(&self) -> usize {
        let v = self.lock();
        v.verified.len() + v.refused.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What verification needs: the validator set, the parameters, and the signature scheme.
#[derive(Debug)]
pub struct Verifier<'a> {
    pub validators: &'a ValidatorSet,
    pub genesis: &'a Genesis,
    pub scheme: &'a dyn Scheme,
    /// Txs this validator verified before, by tx hash. The hash covers the signature, so
    /// a tx whose hash is known verified is the very tx that was checked: its signature
    /// is not checked again (each tx is verified once per validator).
    pub known: Option<&'a dyn KnownTxs>,
}

/// A validator's verified-tx cache, as the verifier sees it.
pub trait KnownTxs: Sync + std::fmt::Debug {
    /// The tx with this hash, if its signature was verified here.
    fn verified(&self, hash: &stele_types::TxHash) -> Option<Verified<TxBody>>;
}

impl Verifier<'_> {
    fn signed<T>(&self, s: Signed<T>) -> Result<Verified<T>, Reject>
    where
        T: stele_crypto::Signable + stele_types::ReplicaSigned,
    {
        self.validators
            .verify(s, self.scheme)
            .map_err(|e| Reject::BadSignature(e.to_string()))
    }

    /// Checks a body's content and every tx signature (batched).
    pub fn check_body(&self, body: &Block) -> Result<(), Reject> {
        self.check_content(body)?;
        self.check_block_txs(&body.txs).map(|_| ())
    }

    /// A body's content, no signature: tx count, each tx well-formed, no tx twice, bytes.
    fn check_content(&self, body: &Block) -> Result<(), Reject> {
        let p = &self.genesis.params;
        body.check_content(p.max_block_txs as usize, p.max_block_bytes as usize)
            .map_err(|e| Reject::BadBlock(e.to_string()))
    }

    /// What can be refused without checking a signature: who may send the message, how
    /// much it may hold, and the shape of a VIEW-CHANGE or NEW-VIEW. [`Verifier::verify`] runs it first; a caller that verifies
    /// the txs inside a message before `verify` (to cache them) runs it before that: a
    /// Byzantine peer makes fresh txs at will, and each one not seen before is a
    /// signature check.
    pub fn precheck(&self, from: ReplicaId, msg: &Message) -> Result<(), Reject> {
        if !self.validators.contains(from) {
            return Err(Reject::UnknownSender(from));
        }
        let p = &self.genesis.params;
        match msg {
            Message::Proposal(prop) => {
                // Only the primary sends its proposals (retransmissions too); O entries
                // travel inside a NEW-VIEW.
                let primary = self.validators.primary(prop.pre_prepare.view);
                if from != primary {
                    return Err(Reject::WrongSender {
                        claimed: primary,
                        from,
                    });
                }
                self.check_content(&prop.body)
            }
            Message::Relay(r) => {
                if r.txs.len() > p.relay_batch_txs as usize {
                    return Err(Reject::Malformed {
                        what: "RELAY",
                        why: format!("{} txs", r.txs.len()),
                    });
                }
                for (index, tx) in r.txs.iter().enumerate() {
                    stele_types::tx::check_well_formed(tx)
                        .map_err(|e| Reject::BadBlock(format!("relayed tx {index}: {e}")))?;
                }
                Ok(())
            }
            Message::Bodies(b) => {
                // An answer to a FETCH-BODIES, which wants at most L bodies.
                if b.blocks.len() as u64 > p.window {
                    return Err(Reject::Malformed {
                        what: "BODIES",
                        why: format!("{} bodies, window is {}", b.blocks.len(), p.window),
                    });
                }
                b.blocks
                    .iter()
                    .try_for_each(|body| self.check_content(body))
            }
            Message::ViewChange(vc) => self.view_change_shape(vc),
            Message::NewView(nv) => self.new_view_shape(nv),
            Message::Blocks(b) => {
                let most = p.transfer_batch_blocks as usize;
                if b.blocks.len() > most {
                    return Err(Reject::Malformed {
                        what: "BLOCKS",
                        why: format!("{} blocks, a batch holds {most}", b.blocks.len()),
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Verifies tx signatures, batched; the first bad one refuses the lot.
    pub fn check_txs(&self, txs: &[Transaction]) -> Result<Vec<Verified<TxBody>>, Reject> {
        self.check_txs_each(txs).into_iter().collect()
    }

    /// [`Verifier::check_txs`] with a verdict per tx, so a caller that takes the good
    /// ones of a batch (the HTTP API) never verifies a batch twice: refusing the first
    /// bad tx and retrying the rest would make a batch of bad txs cost n²/2 checks.
    pub fn check_txs_each(&self, txs: &[Transaction]) -> Vec<Result<Verified<TxBody>, Reject>> {
        if self.known.is_none() {
            return self.check_hashed(txs, &[]);
        }
        let hashes: Vec<TxHash> = txs.iter().map(stele_types::tx_hash).collect();
        self.check_hashed(txs, &hashes)
    }

    /// [`Verifier::check_txs`] of a block's txs, with the hashes the block keeps.
    pub fn check_block_txs(&self, txs: &Txs) -> Result<Vec<Verified<TxBody>>, Reject> {
        self.check_hashed(txs, txs.hashes()).into_iter().collect()
    }

    /// `hashes` are the txs' hashes, or empty when there is no cache of verified txs to
    /// look them up in.
    fn check_hashed(
        &self,
        txs: &[Transaction],
        hashes: &[TxHash],
    ) -> Vec<Result<Verified<TxBody>, Reject>> {
        let Some(known) = self.known else {
            let items: Vec<_> = txs.iter().map(|t| (t.clone(), t.sender)).collect();
            return Signed::verify_batch(items, self.validators.chain(), self.scheme)
                .into_iter()
                .enumerate()
                .map(|(index, r)| r.map_err(|_| Reject::BadTxSignature { index }))
                .collect();
        };
        // Only the txs not verified before go through the batch.
        debug_assert_eq!(hashes.len(), txs.len());
        let mut out: Vec<Option<Result<Verified<TxBody>, Reject>>> =
            hashes.iter().map(|h| known.verified(h).map(Ok)).collect();
        let fresh: Vec<usize> = (0..txs.len()).filter(|&i| out[i].is_none()).collect();
        let items: Vec<_> = fresh
            .iter()
            .map(|&i| (txs[i].clone(), txs[i].sender))
            .collect();
        let verdicts = Signed::verify_batch(items, self.validators.chain(), self.scheme);
        for (&index, v) in fresh.iter().zip(verdicts) {
            out[index] = Some(v.map_err(|_| Reject::BadTxSignature { index }));
        }
        let result: Vec<_> = out.into_iter().flatten().collect();
        debug_assert_eq!(result.len(), txs.len());
        result
    }

    /// A VIEW-CHANGE's shape, no signature: at most L prepared certificates, each at a
    /// height in the window above its checkpoint, of a view below the one it changes
    /// to, one per height.
    fn view_change_shape(&self, vc: &ViewChange) -> Result<(), Reject> {
        let l = self.genesis.params.window;
        if vc.prepared.len() as u64 > l {
            return Err(Reject::Malformed {
                what: "VIEW-CHANGE",
                why: format!("{} prepared certificates, window is {l}", vc.prepared.len()),
            });
        }
        let low = vc.checkpoint_height();
        let mut heights = HashSet::new();
        for c in &vc.prepared {
            if c.height() <= low || c.height().0 > low.0.saturating_add(l) {
                return Err(Reject::OutOfWindow(format!(
                    "prepared certificate at {} outside ({low}, {low}+{l}]",
                    c.height()
                )));
            }
            if c.view() >= vc.new_view {
                return Err(Reject::WrongView(format!(
                    "prepared in view {} for VIEW-CHANGE({})",
                    c.view(),
                    vc.new_view
                )));
            }
            if !heights.insert(c.height()) {
                return Err(Reject::Malformed {
                    what: "VIEW-CHANGE",
                    why: format!("two certificates for height {}", c.height()),
                });
            }
        }
        Ok(())
    }

    /// A NEW-VIEW's shape, no signature: q VIEW-CHANGEs for its view from distinct
    /// replicas, each of a good shape; at most L O entries (O spans (min-s, max-s], and
    /// no prepared certificate in V is more than L above min-s), all in its view.
    fn new_view_shape(&self, nv: &NewView) -> Result<(), Reject> {
        let mut senders = HashSet::new();
        for vc in &nv.view_changes {
            if vc.new_view != nv.view {
                return Err(Reject::BadNewView(format!(
                    "VIEW-CHANGE for {} inside NEW-VIEW({})",
                    vc.new_view, nv.view
                )));
            }
            if !senders.insert(vc.replica) {
                return Err(Reject::BadNewView(format!(
                    "two VIEW-CHANGEs from {}",
                    vc.replica
                )));
            }
        }
        if senders.len() < self.validators.quorum() {
            return Err(Reject::BadNewView(format!(
                "{} VIEW-CHANGEs, {} needed",
                senders.len(),
                self.validators.quorum()
            )));
        }
        let l = self.genesis.params.window;
        if nv.pre_prepares.len() as u64 > l {
            return Err(Reject::Malformed {
                what: "NEW-VIEW",
                why: format!("{} O entries, window is {l}", nv.pre_prepares.len()),
            });
        }
        if let Some(pp) = nv.pre_prepares.iter().find(|pp| pp.view != nv.view) {
            return Err(Reject::BadNewView(format!("O entry in view {}", pp.view)));
        }
        nv.view_changes
            .iter()
            .try_for_each(|vc| self.view_change_shape(vc))
    }

    /// A VIEW-CHANGE's signatures: its own, its checkpoint proof's, its certificates'
    /// (its shape was checked first).
    fn view_change(&self, vc: Signed<ViewChange>) -> Result<Verified<ViewChange>, Reject> {
        let vc = self.signed(vc)?;
        if let Some(c) = &vc.checkpoint {
            c.verify(self.validators, self.scheme)?;
        }
        for c in &vc.prepared {
            c.verify(self.validators, self.scheme)?;
        }
        Ok(vc)
    }

    /// [`Verifier::verify`], answered from `verdicts` for a heavy message verified here
    /// before (see [`FrameVerdicts`]).
    pub fn verify_remembered(
        &self,
        from: ReplicaId,
        msg: Message,
        verdicts: &FrameVerdicts,
    ) -> Result<VerifiedMessage, Reject> {
        if !FrameVerdicts::keeps(&msg) {
            return self.verify(from, msg);
        }
        // Not keyed by sender: a copy of a NEW-VIEW from every peer (STATUS answers) is
        // verified once. Sound only while these kinds' verdicts do not depend on the
        // sending peer beyond its being a validator (`precheck`); `keeps` lists them.
        let d = Digest::of_parts("stele/frame", &[&codec::encode(&msg)]);
        if let Some(v) = verdicts.get(&d) {
            return v;
        }
        let v = self.verify(from, msg);
        verdicts.insert(d, &v);
        v
    }

    /// Verifies a message that arrived from `from` (the transport's authenticated peer).
    pub fn verify(&self, from: ReplicaId, msg: Message) -> Result<VerifiedMessage, Reject> {
        let claimed = |c: ReplicaId| {
            if c == from {
                Ok(())
            } else {
                Err(Reject::WrongSender { claimed: c, from })
            }
        };
        self.precheck(from, &msg)?;
        let inbound = match msg {
            Message::Proposal(p) => {
                let pre_prepare = self.signed(p.pre_prepare)?;
                if !p.body.matches(pre_prepare.height, &pre_prepare.digest) {
                    return Err(Reject::BodyMismatch {
                        height: pre_prepare.height,
                    });
                }
                // The content was checked first (`precheck`).
                self.check_block_txs(&p.body.txs)?;
                Inbound::Proposal {
                    pre_prepare,
                    body: p.body,
                }
            }
            Message::Prepare(p) => {
                claimed(p.replica)?;
                Inbound::Prepare(self.signed(p)?)
            }
            Message::Commit(c) => {
                claimed(c.replica)?;
                Inbound::Commit(self.signed(c)?)
            }
            Message::Checkpoint(c) => {
                claimed(c.replica)?;
                Inbound::Checkpoint(self.signed(c)?)
            }
            Message::CheckpointCertificate(c) => {
                c.verify(self.validators, self.scheme)?;
                Inbound::CheckpointCertificate(c)
            }
            // Its shape was checked first (`precheck`).
            Message::ViewChange(vc) => Inbound::ViewChange(self.view_change(vc)?),
            // Its shape, and each VIEW-CHANGE's, was checked first (`precheck`).
            Message::NewView(nv) => {
                let nv = self.signed(nv)?;
                for vc in &nv.view_changes {
                    self.view_change(vc.clone())?;
                }
                for pp in &nv.pre_prepares {
                    self.signed(pp.clone())?;
                }
                Inbound::NewView(nv)
            }
            Message::Status(s) => {
                claimed(s.replica)?;
                Inbound::Status(self.signed(s)?)
            }
            Message::FetchBodies(f) => {
                if f.wanted.len() as u64 > self.genesis.params.window {
                    return Err(Reject::Malformed {
                        what: "FETCH-BODIES",
                        why: format!("{} wanted", f.wanted.len()),
                    });
                }
                Inbound::FetchBodies(f)
            }
            Message::Bodies(b) => {
                for body in &b.blocks {
                    self.check_block_txs(&body.txs)?;
                }
                Inbound::Bodies(b.blocks)
            }
            Message::FetchBlocks(f) => Inbound::FetchBlocks(f),
            Message::Blocks(b) => {
                for cb in &b.blocks {
                    if cb.block.height() != cb.certificate.height
                        || !cb
                            .block
                            .matches(cb.certificate.height, &cb.certificate.digest)
                    {
                        return Err(Reject::BodyMismatch {
                            height: cb.certificate.height,
                        });
                    }
                    cb.certificate.verify(self.validators, self.scheme)?;
                    // No content or skew checks: a committed block is what it is.
                    self.check_block_txs(&cb.block.txs)?;
                }
                Inbound::Blocks(b.blocks)
            }
            // Count and form were checked first (`precheck`).
            Message::Relay(r) => Inbound::Relay(self.check_txs(&r.txs)?),
        };
        Ok(VerifiedMessage(inbound))
    }
}
