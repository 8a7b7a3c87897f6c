//! Client transactions: what a sender signs, and the hash that names a signed tx.
//!
//! The tx hash covers the whole signed tx, signature included: dedup, the verified
//! cache, the tx index and "no tx twice in a block" all use it, so a relayed copy with a
//! garbled signature can never shadow the real one.
//!
//! A tx does not name its chain: its signature covers the chain id and the genesis
//! digest (see [`Signed::sign`]), so a tx signed for another chain, or for another
//! genesis under the same id, fails its signature check here and is never applied. Each
//! tx is the shorter for it, and there is nothing left to compare per tx.

use serde::{Deserialize, Serialize};
use stele_crypto::{ChainBinding, Digest, PublicKey, Signable, Signed, Signer};

use crate::bounded::BoundedBytes;
use crate::codec;
use crate::ids::{Amount, Nonce};

/// Longest record key of a `Put`.
pub const MAX_RECORD_KEY_LEN: usize = 64;
/// Longest record value of a `Put`.
pub const MAX_RECORD_VALUE_LEN: usize = 1024;
/// Longest encoded signed transaction; anything longer is refused before it is verified.
pub const MAX_TX_LEN: usize = 1400;

/// A record key (at most [`MAX_RECORD_KEY_LEN`] bytes).
pub type RecordKey = BoundedBytes<MAX_RECORD_KEY_LEN>;
/// A record value (at most [`MAX_RECORD_VALUE_LEN`] bytes).
pub type RecordValue = BoundedBytes<MAX_RECORD_VALUE_LEN>;
/// The hash of a signed transaction.
pub type TxHash = Digest;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Moves `amount` from the sender to `to`, creating `to`'s account if the amount is at
    /// least the genesis minimum.
    Transfer { to: PublicKey, amount: Amount },
    /// Stores `value` under `key` in the sender's namespace.
    Put { key: RecordKey, value: RecordValue },
}

/// The signed part of a transaction. The chain is not a field: the signature binds it.
/// Unknown fields are refused, so a JSON tx of the format that named its chain is
/// answered as malformed, not accepted with the name ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxBody {
    pub sender: PublicKey,
    pub nonce: Nonce,
    pub op: Op,
}

impl Signable for TxBody {
    const DOMAIN: &'static str = "stele/tx";
    fn signing_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// A signed transaction: `sender`, `nonce`, `op` and `signature`.
pub type Transaction = Signed<TxBody>;

/// Signs a transaction body with the sender's key for `chain`: the signature covers the
/// chain's id and genesis digest, so the tx verifies on that chain only.
pub fn sign_tx(body: TxBody, chain: &ChainBinding, signer: &dyn Signer) -> Transaction {
    Signed::sign(body, chain, signer)
}

/// The tx hash: SHA-256 of the canonical bytes of the whole signed tx.
pub fn tx_hash(tx: &Transaction) -> TxHash {
    codec::with_encoding(tx, Digest::of)
}

/// The tx hash and the length of the tx's encoding, from one encoding.
pub fn tx_hash_and_len(tx: &Transaction) -> (TxHash, usize) {
    codec::with_encoding(tx, |bytes| (Digest::of(bytes), bytes.len()))
}

/// Why a transaction is not well-formed (checked before its signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction encodes to {len} bytes, the maximum is {MAX_TX_LEN}")]
    TooLarge { len: usize },
    #[error("transfer of amount 0")]
    ZeroAmount,
    #[error("sender signs its own key as the recipient of a transfer")]
    SelfTransfer,
    #[error("transfer to {to}, a small-order key that anyone can sign for")]
    SmallOrderRecipient { to: PublicKey },
}

/// Checks what can be checked without state or signature: size and op sanity. The
/// chain is checked by the signature.
pub fn check_well_formed(tx: &Transaction) -> Result<(), TxError> {
    check_well_formed_sized(tx, codec::encoded_len(tx))
}

/// [`check_well_formed`] of a tx whose encoding is `len` bytes long, known already.
pub fn check_well_formed_sized(tx: &Transaction, len: usize) -> Result<(), TxError> {
    if len > MAX_TX_LEN {
        return Err(TxError::TooLarge { len });
    }
    if let Op::Transfer { to, amount } = &tx.op {
        if amount.0 == 0 {
            return Err(TxError::ZeroAmount);
        }
        if *to == tx.sender {
            return Err(TxError::SelfTransfer);
        }
        // Under ZIP-215 anyone can sign for a small-order key, so funds sent there could
        // be taken by anyone: no such account is ever made.
        if to.is_small_order() {
            return Err(TxError::SmallOrderRecipient { to: *to });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{ChainId, KeyPair};

    /// Chain "t"; no genesis is built here, any digest names one.
    fn chain() -> ChainBinding {
        ChainBinding::new(ChainId::new("t").unwrap(), Digest::of(b"genesis of t"))
    }

    fn tx(nonce: u64) -> (Transaction, KeyPair) {
        let k = KeyPair::from_seed([1; 32]);
        let body = TxBody {
            sender: k.public(),
            nonce: Nonce(nonce),
            op: Op::Transfer {
                to: KeyPair::from_seed([2; 32]).public(),
                amount: Amount(5),
            },
        };
        (sign_tx(body, &chain(), &k), k)
    }

    #[test]
    fn a_changed_signature_changes_the_hash() {
        let (t, _) = tx(0);
        let mut garbled = t.clone();
        garbled.signature.0[10] ^= 1;
        assert_ne!(tx_hash(&t), tx_hash(&garbled));
        assert_eq!(tx_hash(&t), tx_hash(&t.clone()));
    }

    #[test]
    fn a_tx_carries_no_chain_id_and_verifies_only_on_its_own_chain() {
        let long = ChainBinding::new(ChainId::new(&"c".repeat(64)).unwrap(), Digest::ZERO);
        let k = KeyPair::from_seed([1; 32]);
        let t = sign_tx(tx(7).0.value, &long, &k);
        let bytes = codec::encode(&t);
        assert!(
            !bytes.windows(8).any(|w| w == b"cccccccc"),
            "the chain id is not in the tx's bytes"
        );
        // sender 32, nonce 8, op tag 4, recipient 32, amount 8, signature 64.
        assert_eq!(bytes.len(), 32 + 8 + 4 + 32 + 8 + 64);
        let scheme = stele_crypto::Ed25519;
        assert!(t.clone().verify(&long, &k.public(), &scheme).is_ok());
        let other_id = ChainBinding::new(ChainId::new("d").unwrap(), *long.genesis());
        assert!(t.clone().verify(&other_id, &k.public(), &scheme).is_err());
        let other_genesis = ChainBinding::new(long.id().clone(), Digest::of(b"another"));
        assert!(t.verify(&other_genesis, &k.public(), &scheme).is_err());
    }

    #[test]
    fn largest_put_fits_in_max_tx_len() {
        let k = KeyPair::from_seed([1; 32]);
        let body = TxBody {
            sender: k.public(),
            nonce: Nonce(u64::MAX),
            op: Op::Put {
                key: RecordKey::new(vec![0; MAX_RECORD_KEY_LEN]).unwrap(),
                value: RecordValue::new(vec![0; MAX_RECORD_VALUE_LEN]).unwrap(),
            },
        };
        let t = sign_tx(body, &chain(), &k);
        assert!(
            codec::encoded_len(&t) <= MAX_TX_LEN,
            "{}",
            codec::encoded_len(&t)
        );
        assert_eq!(check_well_formed(&t), Ok(()));
    }

    #[test]
    fn a_transfer_to_a_small_order_key_is_not_well_formed() {
        let (t, k) = tx(0);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut body = t.value.clone();
        body.op = Op::Transfer {
            to: PublicKey(identity),
            amount: Amount(5),
        };
        assert_eq!(
            check_well_formed(&sign_tx(body, &chain(), &k)),
            Err(TxError::SmallOrderRecipient {
                to: PublicKey(identity)
            })
        );
    }

    #[test]
    fn zero_amount_and_self_transfer_are_not_well_formed() {
        let (t, k) = tx(0);
        assert_eq!(check_well_formed(&t), Ok(()));
        let mut body = t.value.clone();
        body.op = Op::Transfer {
            to: KeyPair::from_seed([2; 32]).public(),
            amount: Amount(0),
        };
        assert_eq!(
            check_well_formed(&sign_tx(body, &chain(), &k)),
            Err(TxError::ZeroAmount)
        );
        let mut body = t.value.clone();
        body.op = Op::Transfer {
            to: k.public(),
            amount: Amount(1),
        };
        assert_eq!(
            check_well_formed(&sign_tx(body, &chain(), &k)),
            Err(TxError::SelfTransfer)
        );
    }
}
