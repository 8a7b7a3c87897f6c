//! Quorum certificates: commit, prepared and checkpoint.
//!
//! Each carries the digest it certifies and the signers' signatures over exact
//! (chain id, kind, view, height, digest) — no view for checkpoints. `verify` checks them
//! against the validator set and nothing else, so a certificate from any peer can be
//! trusted exactly as far as its signatures go.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use stele_crypto::{signing_message, Digest, Scheme, Signable, Signature, Signed};

use crate::ids::{Height, ReplicaId, ViewNumber};
use crate::messages::{Checkpoint, Commit, PrePrepare, Prepare};
use crate::validators::ValidatorSet;

/// One signer's signature inside a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    pub replica: ReplicaId,
    pub signature: Signature,
}

/// Why a certificate does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{have} distinct valid signers, {need} needed")]
    TooFewSigners { have: usize, need: usize },
    #[error("{have} signatures, more than the {n} validators")]
    TooManySignatures { have: usize, n: usize },
    #[error("replica {0} signs twice")]
    DuplicateSigner(ReplicaId),
    #[error("replica {0} is not in the validator set")]
    UnknownSigner(ReplicaId),
    #[error("the primary's PREPARE ({0}) does not count toward a prepared certificate")]
    PrimaryPrepare(ReplicaId),
    #[error("signature of replica {0} does not verify")]
    BadSignature(ReplicaId),
    #[error("the PRE-PREPARE is not signed by primary({0})")]
    BadPrePrepare(ViewNumber),
}

/// Checks `entries`: at most n, distinct, members, none of `excluded`, at least `need`,
/// and every signature valid over `make(replica)` with the kind tag of `T`.
fn verify_entries<T: Signable>(
    vs: &ValidatorSet,
    scheme: &dyn Scheme,
    entries: &[SignatureEntry],
    need: usize,
    excluded: Option<ReplicaId>,
    make: impl Fn(ReplicaId) -> T,
) -> Result<(), CertError> {
    if entries.len() > vs.n() {
        return Err(CertError::TooManySignatures {
            have: entries.len(),
            n: vs.n(),
        });
    }
    let mut seen = HashSet::with_capacity(entries.len());
    for e in entries {
        if !vs.contains(e.replica) {
            return Err(CertError::UnknownSigner(e.replica));
        }
        if Some(e.replica) == excluded {
            return Err(CertError::PrimaryPrepare(e.replica));
        }
        if !seen.insert(e.replica) {
            return Err(CertError::DuplicateSigner(e.replica));
        }
    }
    if entries.len() < need {
        return Err(CertError::TooFewSigners {
            have: entries.len(),
            need,
        });
    }
    let msgs: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| signing_message(vs.chain(), T::DOMAIN, &make(e.replica).signing_bytes()))
        .collect();
    let items: Vec<_> = entries
        .iter()
        .zip(&msgs)
        .filter_map(|(e, m)| vs.key(e.replica).map(|k| (k, m.as_slice(), &e.signature)))
        .collect();
    debug_assert_eq!(items.len(), entries.len(), "membership checked above");
    for (e, verdict) in entries.iter().zip(scheme.verify_batch(&items)) {
        if verdict.is_err() {
            return Err(CertError::BadSignature(e.replica));
        }
    }
    Ok(())
}

/// q signed COMMITs for (v, n, d): proof that height n holds block d. Stored with the
/// block; anyone with the genesis file can check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    pub view: ViewNumber,
    pub height: Height,
    pub digest: Digest,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub commits: Vec<SignatureEntry>,
}

impl CommitCertificate {
    /// Checks q distinct members' COMMITs over exactly (view, height, digest).
    pub fn verify(&self, vs: &ValidatorSet, scheme: &dyn Scheme) -> Result<(), CertError> {
        verify_entries(vs, scheme, &self.commits, vs.quorum(), None, |replica| {
            Commit {
                view: self.view,
                height: self.height,
                digest: self.digest,
                replica,
            }
        })
    }
}

/// A PRE-PREPARE by primary(v) plus q−1 matching PREPAREs from distinct backups:
/// prepared(v, n, d). A PREPARE from the primary does not count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCertificate {
    pub pre_prepare: Signed<PrePrepare>,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub prepares: Vec<SignatureEntry>,
}

impl PreparedCertificate {
    /// The view it was prepared in.
    pub fn view(&self) -> ViewNumber {
        self.pre_prepare.view
    }
    /// The height.
    pub fn height(&self) -> Height {
        self.pre_prepare.height
    }
    /// The prepared digest.
    pub fn digest(&self) -> Digest {
        self.pre_prepare.digest
    }

    /// Checks the PRE-PREPARE against primary(v) and q−1 backups' PREPAREs.
    pub fn verify(&self, vs: &ValidatorSet, scheme: &dyn Scheme) -> Result<(), CertError> {
        let primary = vs.primary(self.view());
        vs.verify(self.pre_prepare.clone(), scheme)
            .map_err(|_| CertError::BadPrePrepare(self.view()))?;
        verify_entries(
            vs,
            scheme,
            &self.prepares,
            vs.quorum() - 1,
            Some(primary),
            |replica| Prepare {
                view: self.view(),
                height: self.height(),
                digest: self.digest(),
                replica,
            },
        )
    }
}

/// q matching CHECKPOINTs on one state digest at one height: the checkpoint is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCertificate {
    pub height: Height,
    pub state_digest: Digest,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub signatures: Vec<SignatureEntry>,
}

impl CheckpointCertificate {
    /// Checks q distinct members' CHECKPOINTs over exactly (height, state digest).
    pub fn verify(&self, vs: &ValidatorSet, scheme: &dyn Scheme) -> Result<(), CertError> {
        verify_entries(vs, scheme, &self.signatures, vs.quorum(), None, |replica| {
            Checkpoint {
                height: self.height,
                state_digest: self.state_digest,
                replica,
            }
        })
    }
}
