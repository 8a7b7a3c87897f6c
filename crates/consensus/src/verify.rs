//! Turns a decoded [`Message`] from a peer into a [`VerifiedMessage`] the engine accepts.
//!
//! All the cryptography of a message happens here, off the engine's thread: the outer
//! signature against the replica that must have signed it, every certificate inside it,
//! every tx signature in a body (batched), and body-to-digest matches. What the engine
//! gets can only have come through this module.

use std::collections::HashSet;

use stele_crypto::{Scheme, Signed, Verified};
use stele_types::certs::CertError;
use stele_types::{
    Block, CommittedBlock, FetchBlocks, FetchBodies, Genesis, Height, Message, NewView, PrePrepare,
    ReplicaId, Transaction, TxBody, ValidatorSet, ViewChange,
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
}

impl Reject {
    /// Every label, for metrics series created at start.
    pub const LABELS: [&'static str; 17] = [
        "bad_signature",
        "bad_certificate",
        "body_mismatch",
        "bad_block",
        "bad_tx_signature",
        "wrong_sender",
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
        let p = &self.genesis.params;
        body.check_content(
            self.validators.chain_id(),
            p.max_block_txs as usize,
            p.max_block_bytes as usize,
        )
        .map_err(|e| Reject::BadBlock(e.to_string()))?;
        self.check_txs(&body.txs).map(|_| ())
    }

    /// Verifies tx signatures, batched; the first bad one refuses the lot.
    pub fn check_txs(&self, txs: &[Transaction]) -> Result<Vec<Verified<TxBody>>, Reject> {
        self.check_txs_each(txs).into_iter().collect()
    }

    /// [`Verifier::check_txs`] with a verdict per tx, so a caller that takes the good
    /// ones of a batch (the HTTP API) never verifies a batch twice: refusing the first
    /// bad tx and retrying the rest would make a batch of bad txs cost n²/2 checks.
    pub fn check_txs_each(&self, txs: &[Transaction]) -> Vec<Result<Verified<TxBody>, Reject>> {
        let Some(known) = self.known else {
            let items: Vec<_> = txs.iter().map(|t| (t.clone(), t.sender)).collect();
            return Signed::verify_batch(items, self.validators.chain(), self.scheme)
                .into_iter()
                .enumerate()
                .map(|(index, r)| r.map_err(|_| Reject::BadTxSignature { index }))
                .collect();
        };
        // Only the txs not verified before go through the batch.
        let mut out: Vec<Option<Result<Verified<TxBody>, Reject>>> = txs
            .iter()
            .map(|t| known.verified(&stele_types::tx_hash(t)).map(Ok))
            .collect();
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

    fn view_change(&self, vc: Signed<ViewChange>) -> Result<Verified<ViewChange>, Reject> {
        let vc = self.signed(vc)?;
        let l = self.genesis.params.window;
        if let Some(c) = &vc.checkpoint {
            c.verify(self.validators, self.scheme)?;
        }
        let low = vc.checkpoint_height();
        if vc.prepared.len() as u64 > l {
            return Err(Reject::Malformed {
                what: "VIEW-CHANGE",
                why: format!("{} prepared certificates, window is {l}", vc.prepared.len()),
            });
        }
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
            c.verify(self.validators, self.scheme)?;
        }
        Ok(vc)
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
        let inbound = match msg {
            Message::Proposal(p) => {
                let pre_prepare = self.signed(p.pre_prepare)?;
                if !p.body.matches(pre_prepare.height, &pre_prepare.digest) {
                    return Err(Reject::BodyMismatch {
                        height: pre_prepare.height,
                    });
                }
                self.check_body(&p.body)?;
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
            Message::ViewChange(vc) => Inbound::ViewChange(self.view_change(vc)?),
            Message::NewView(nv) => {
                let nv = self.signed(nv)?;
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
                    self.view_change(vc.clone())?;
                }
                if senders.len() < self.validators.quorum() {
                    return Err(Reject::BadNewView(format!(
                        "{} VIEW-CHANGEs, {} needed",
                        senders.len(),
                        self.validators.quorum()
                    )));
                }
                for pp in &nv.pre_prepares {
                    if pp.view != nv.view {
                        return Err(Reject::BadNewView(format!("O entry in view {}", pp.view)));
                    }
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
                    self.check_body(body)?;
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
                    self.check_txs(&cb.block.txs)?;
                }
                Inbound::Blocks(b.blocks)
            }
            Message::Relay(r) => {
                if r.txs.len() > self.genesis.params.relay_batch_txs as usize {
                    return Err(Reject::Malformed {
                        what: "RELAY",
                        why: format!("{} txs", r.txs.len()),
                    });
                }
                for (index, tx) in r.txs.iter().enumerate() {
                    stele_types::tx::check_well_formed(tx, self.validators.chain_id())
                        .map_err(|e| Reject::BadBlock(format!("relayed tx {index}: {e}")))?;
                }
                Inbound::Relay(self.check_txs(&r.txs)?)
            }
        };
        Ok(VerifiedMessage(inbound))
    }
}
