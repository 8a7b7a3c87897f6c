//! Offline proof: what a block file and some receipts show, with only the genesis file.
//!
//! A block whose commit certificate carries q valid COMMITs for its (height, digest),
//! whose body matches that digest, and whose tx root holds the tx (Merkle proof) shows
//! the tx was *included* at that height. Only f+1 valid receipts agreeing on this block
//! and position show it was *applied* and with which result; without them the verdict
//! stays "included", never "applied".

use serde::Serialize;
use stele_crypto::{Digest, Ed25519};
use stele_types::api::BlockResponse;
use stele_types::{tx_hash, CertError, Genesis, Height, Receipt, TxHash, TxResult, ValidatorSet};

use crate::quorum::{Outcome, ReceiptChecker, ReceiptTally, TxId};

/// Why a block file does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the file says height {claimed}, but the block header says height {header}")]
    HeightMismatch { claimed: Height, header: Height },
    #[error(
        "the commit certificate is for height {cert_height} digest {cert_digest}, but the block \
         is height {height} digest {digest}"
    )]
    CertificateMismatch {
        cert_height: Height,
        cert_digest: Digest,
        height: Height,
        digest: Digest,
    },
    #[error(
        "the block body does not match height {height} digest {digest}: its header hashes to \
         {header_digest}, and its txs' Merkle root {}",
        root_word(.root_ok)
    )]
    BodyMismatch {
        height: Height,
        digest: Digest,
        header_digest: Digest,
        root_ok: bool,
    },
    #[error("the commit certificate does not verify against the genesis validators: {0}")]
    Certificate(CertError),
    #[error("tx {hash} is not in block {height} ({count} txs)")]
    TxNotInBlock {
        hash: TxHash,
        height: Height,
        count: usize,
    },
    #[error("the Merkle proof of tx {hash} at index {index} does not verify against tx_root")]
    BadProof { hash: TxHash, index: usize },
}

fn root_word(root_ok: &bool) -> &'static str {
    if *root_ok {
        "is the header's tx_root"
    } else {
        "is not the header's tx_root"
    }
}

/// What was shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The tx is in the committed block at `height`, position `index`. Whether and how
    /// it was applied is not shown (too few matching receipts, or none given).
    Included {
        height: Height,
        index: u32,
        /// Valid receipts that agree on an applied result at this block (fewer than f+1).
        matching_receipts: usize,
    },
    /// Included, and f+1 validators signed that it was applied there with `result`.
    Applied {
        height: Height,
        index: u32,
        result: TxResult,
        receipts: usize,
    },
}

/// Checks that `block` is the committed block at its height: body matches the digest,
/// and the certificate holds q valid COMMITs for exactly that height and digest.
pub fn verify_certified(
    validators: &ValidatorSet,
    block: &BlockResponse,
) -> Result<(), VerifyError> {
    let height = block.height;
    let digest = block.digest;
    if block.block.header.height != height {
        return Err(VerifyError::HeightMismatch {
            claimed: height,
            header: block.block.header.height,
        });
    }
    let cert = &block.certificate;
    if cert.height != height || cert.digest != digest {
        return Err(VerifyError::CertificateMismatch {
            cert_height: cert.height,
            cert_digest: cert.digest,
            height,
            digest,
        });
    }
    if block.block.check_matches(height, &digest).is_err() {
        let root_ok =
            stele_crypto::merkle::root(block.block.tx_hashes()) == block.block.header.tx_root;
        return Err(VerifyError::BodyMismatch {
            height,
            digest,
            header_digest: block.block.digest(),
            root_ok,
        });
    }
    cert.verify(validators, &Ed25519)
        .map_err(VerifyError::Certificate)?;
    debug_assert!(block.block.matches(height, &digest));
    Ok(())
}

/// Verifies offline that tx `hash` is in the committed `block`, and with `receipts`
/// whether f+1 validators signed that it was applied there.
pub fn verify_block(
    genesis: &Genesis,
    block: &BlockResponse,
    hash: &TxHash,
    receipts: Option<&[Receipt]>,
) -> Result<Verdict, VerifyError> {
    let validators = genesis.validator_set();
    verify_certified(&validators, block)?;
    let b = &block.block;
    let Some(index) = b.txs.iter().position(|t| tx_hash(t) == *hash) else {
        return Err(VerifyError::TxNotInBlock {
            hash: *hash,
            height: block.height,
            count: b.txs.len(),
        });
    };
    // The proof is rebuilt and checked rather than trusted: it ties the tx to tx_root,
    // which the certified digest covers. The leaf is the tx hash, as in Block::root_of.
    let proof_ok = b.prove_tx(index).is_some_and(|p| {
        p.leaf_count == b.txs.len() as u64 && p.verify(&b.header.tx_root, hash.as_bytes())
    });
    if !proof_ok {
        return Err(VerifyError::BadProof { hash: *hash, index });
    }
    // Blocks hold at most max_block_txs (a u32) txs.
    let index = u32::try_from(index).map_err(|_| VerifyError::BadProof { hash: *hash, index })?;

    let checker = ReceiptChecker::new(validators);
    let mut tally = ReceiptTally::new(TxId::hash(*hash), &checker);
    for r in receipts.unwrap_or_default() {
        // Bad or foreign receipts do not count; they cannot make anything worse.
        let _ = tally.offer(&checker, r.clone(), None);
    }
    // Only an applied result at exactly this block and position is about this
    // inclusion; a stale_nonce receipt names where *another* tx used the nonce.
    let best = tally
        .groups()
        .into_iter()
        .filter(|(o, _)| at_this_block(o, block, index) && o.result.is_applied())
        .max_by_key(|(_, count)| *count);
    Ok(match best {
        Some((o, count)) if count >= tally.need() => Verdict::Applied {
            height: block.height,
            index,
            result: o.result,
            receipts: count,
        },
        other => Verdict::Included {
            height: block.height,
            index,
            matching_receipts: other.map_or(0, |(_, c)| c),
        },
    })
}

fn at_this_block(o: &Outcome, block: &BlockResponse, index: u32) -> bool {
    o.height == block.height && o.block_digest == block.digest && o.index == index
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stele_crypto::{ChainBinding, ChainId, KeyPair};
    use stele_types::{
        Amount, Block, Commit, CommitCertificate, GenesisAccount, Nonce, Op, Params, ReplicaId,
        SignatureEntry, Transaction, TxBody, ValidatorInfo, ViewNumber,
    };

    use crate::quorum::tests::{keys, receipt, Spot};

    pub(crate) fn genesis(keys: &[KeyPair]) -> Genesis {
        let g = Genesis {
            chain_id: ChainId::new("verify-test").unwrap(),
            genesis_time_ms: 1,
            validators: keys
                .iter()
                .enumerate()
                .map(|(i, k)| ValidatorInfo {
                    key: k.public(),
                    p2p_addr: format!("127.0.0.1:{}", 7100 + i),
                    api_addr: format!("127.0.0.1:{}", 7200 + i),
                })
                .collect(),
            accounts: vec![GenesisAccount {
                key: KeyPair::from_seed([9; 32]).public(),
                balance: Amount(1000),
            }],
            params: Params::default(),
        };
        g.validate().unwrap();
        g
    }

    fn txs(chain: &ChainBinding, count: u64) -> Vec<Transaction> {
        let k = KeyPair::from_seed([9; 32]);
        (0..count)
            .map(|i| {
                stele_types::tx::sign_tx(
                    TxBody {
                        sender: k.public(),
                        nonce: Nonce(i),
                        op: Op::Transfer {
                            to: KeyPair::generate().public(),
                            amount: Amount(10 + i),
                        },
                    },
                    chain,
                    &k,
                )
            })
            .collect()
    }

    /// A committed block at height 7 with 5 txs, its certificate signed by the first q
    /// validators in view 2.
    fn certified(g: &Genesis, keys: &[KeyPair]) -> BlockResponse {
        let vs = g.validator_set();
        let block = Block::new(Height(7), 1_700_000_000_000, txs(vs.chain(), 5));
        let digest = block.digest();
        let commits = (0..vs.quorum())
            .map(|i| {
                let replica = ReplicaId(i as u16);
                let c = stele_crypto::Signed::sign(
                    Commit {
                        view: ViewNumber(2),
                        height: Height(7),
                        digest,
                        replica,
                    },
                    vs.chain(),
                    &keys[i],
                );
                SignatureEntry {
                    replica,
                    signature: c.signature,
                }
            })
            .collect();
        BlockResponse {
            height: Height(7),
            digest,
            block,
            certificate: CommitCertificate {
                view: ViewNumber(2),
                height: Height(7),
                digest,
                commits,
            },
            state_digest: Digest::of(b"state"),
        }
    }

    fn applied(b: &BlockResponse, index: u32) -> Spot {
        Spot {
            height: b.height.0,
            index,
            block_digest: b.digest,
            result: TxResult::Ok,
        }
    }

    struct Fixture {
        keys: Vec<KeyPair>,
        g: Genesis,
        b: BlockResponse,
        tx: TxHash,
    }

    fn fixture() -> Fixture {
        let keys = keys(4);
        let g = genesis(&keys);
        let b = certified(&g, &keys);
        let tx = tx_hash(&b.block.txs[3]);
        Fixture { keys, g, b, tx }
    }

    #[test]
    fn a_certified_block_shows_its_tx_included() {
        let f = fixture();
        assert_eq!(
            verify_block(&f.g, &f.b, &f.tx, None),
            Ok(Verdict::Included {
                height: Height(7),
                index: 3,
                matching_receipts: 0
            })
        );
    }

    #[test]
    fn block_response_round_trips_through_json() {
        let f = fixture();
        let json = serde_json::to_string_pretty(&f.b).unwrap();
        let back: BlockResponse = serde_json::from_str(&json).unwrap();
        assert!(verify_block(&f.g, &back, &f.tx, None).is_ok());
    }

    /// `stele verify` with the genesis of a chain written again under the same id (one
    /// more account): the old chain's certificate proves nothing there.
    #[test]
    fn a_block_certified_for_another_genesis_under_the_same_id_is_rejected() {
        let f = fixture();
        let mut again = f.g.clone();
        again.accounts.push(GenesisAccount {
            key: KeyPair::from_seed([10; 32]).public(),
            balance: Amount(1),
        });
        assert_eq!(again.chain_id, f.g.chain_id);
        assert!(matches!(
            verify_block(&again, &f.b, &f.tx, None),
            Err(VerifyError::Certificate(CertError::BadSignature(_)))
        ));
    }

    #[test]
    fn one_altered_signature_byte_is_rejected() {
        let mut f = fixture();
        f.b.certificate.commits[1].signature.0[20] ^= 0x40;
        assert_eq!(
            verify_block(&f.g, &f.b, &f.tx, None),
            Err(VerifyError::Certificate(CertError::BadSignature(
                ReplicaId(1)
            )))
        );
    }

    #[test]
    fn too_few_commits_are_rejected() {
        let mut f = fixture();
        f.b.certificate.commits.pop();
        assert!(matches!(
            verify_block(&f.g, &f.b, &f.tx, None),
            Err(VerifyError::Certificate(CertError::TooFewSigners { .. }))
        ));
    }

    #[test]
    fn a_certificate_from_other_validators_is_rejected() {
        let f = fixture();
        let other = genesis(&keys(4));
        assert!(matches!(
            verify_block(&other, &f.b, &f.tx, None),
            Err(VerifyError::Certificate(CertError::BadSignature(_)))
        ));
    }

    #[test]
    fn a_tx_not_in_the_block_is_rejected() {
        let f = fixture();
        let stranger = tx_hash(&txs(&f.g.chain_binding(), 1)[0]);
        assert!(matches!(
            verify_block(&f.g, &f.b, &stranger, None),
            Err(VerifyError::TxNotInBlock { count: 5, .. })
        ));
    }

    #[test]
    fn altered_block_txs_are_rejected() {
        let f = fixture();
        let mut swapped = f.b.clone();
        swapped.block.txs.modify(|t| t.swap(0, 1));
        assert!(matches!(
            verify_block(&f.g, &swapped, &f.tx, None),
            Err(VerifyError::BodyMismatch { root_ok: false, .. })
        ));
        let mut replaced = f.b.clone();
        replaced
            .block
            .txs
            .modify(|t| t[4] = txs(&f.g.chain_binding(), 1).remove(0));
        assert!(matches!(
            verify_block(&f.g, &replaced, &f.tx, None),
            Err(VerifyError::BodyMismatch { .. })
        ));
        // Recomputing the header to fit the new txs changes the digest the
        // certificate signed.
        let mut rebuilt = replaced.clone();
        rebuilt.block = Block::new(
            Height(7),
            f.b.block.header.timestamp_ms,
            replaced.block.txs.into_vec(),
        );
        rebuilt.digest = rebuilt.block.digest();
        assert!(matches!(
            verify_block(&f.g, &rebuilt, &f.tx, None),
            Err(VerifyError::CertificateMismatch { .. })
        ));
        rebuilt.certificate.digest = rebuilt.digest;
        assert!(matches!(
            verify_block(&f.g, &rebuilt, &f.tx, None),
            Err(VerifyError::Certificate(CertError::BadSignature(_)))
        ));
    }

    #[test]
    fn a_height_that_is_not_the_headers_is_rejected() {
        let mut f = fixture();
        f.b.height = Height(8);
        assert!(matches!(
            verify_block(&f.g, &f.b, &f.tx, None),
            Err(VerifyError::HeightMismatch { .. })
        ));
    }

    #[test]
    fn f_receipts_show_included_only_and_f_plus_one_show_applied() {
        let f = fixture();
        let vs = f.g.validator_set();
        let o = applied(&f.b, 3);
        let rs: Vec<_> = (0..vs.f() + 1)
            .map(|i| receipt(&vs, &f.keys[i], i as u16, f.tx, o))
            .collect();
        assert_eq!(
            verify_block(&f.g, &f.b, &f.tx, Some(&rs[..vs.f()])),
            Ok(Verdict::Included {
                height: Height(7),
                index: 3,
                matching_receipts: vs.f()
            })
        );
        assert_eq!(
            verify_block(&f.g, &f.b, &f.tx, Some(&rs)),
            Ok(Verdict::Applied {
                height: Height(7),
                index: 3,
                result: TxResult::Ok,
                receipts: vs.f() + 1
            })
        );
    }

    #[test]
    fn receipts_for_another_block_or_position_do_not_show_applied() {
        let f = fixture();
        let vs = f.g.validator_set();
        let elsewhere = [
            Spot {
                index: 2,
                ..applied(&f.b, 3)
            },
            Spot {
                height: 8,
                ..applied(&f.b, 3)
            },
            Spot {
                block_digest: Digest::of(b"other"),
                ..applied(&f.b, 3)
            },
            Spot {
                result: TxResult::StaleNonce,
                ..applied(&f.b, 3)
            },
        ];
        for o in elsewhere {
            let rs: Vec<_> = (0..4)
                .map(|i| receipt(&vs, &f.keys[i], i as u16, f.tx, o))
                .collect();
            assert!(
                matches!(
                    verify_block(&f.g, &f.b, &f.tx, Some(&rs)),
                    Ok(Verdict::Included { .. })
                ),
                "{o:?}"
            );
        }
    }

    #[test]
    fn forged_receipts_do_not_show_applied() {
        let f = fixture();
        let vs = f.g.validator_set();
        let o = applied(&f.b, 3);
        let mut rs: Vec<_> = (0..2)
            .map(|i| receipt(&vs, &f.keys[i], i as u16, f.tx, o))
            .collect();
        rs[1].block.signature.0[0] ^= 1;
        assert!(matches!(
            verify_block(&f.g, &f.b, &f.tx, Some(&rs)),
            Ok(Verdict::Included {
                matching_receipts: 1,
                ..
            })
        ));
    }
}
