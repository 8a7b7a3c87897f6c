//! Every message type round-trips through the codec; arbitrary bytes never panic the
//! decoder; hostile length prefixes are refused without a large allocation.

#![allow(clippy::unwrap_used)]

mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use stele_crypto::{Digest, PublicKey, Signature, Signed};
use stele_types::certs::{
    CheckpointCertificate, CommitCertificate, PreparedCertificate, SignatureEntry,
};
use stele_types::codec::{self, CodecError};
use stele_types::messages::*;
use stele_types::tx::{RecordKey, RecordValue};
use stele_types::*;

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}
fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}
fn sig() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}
fn signed<T: std::fmt::Debug + Clone>(
    v: impl Strategy<Value = T>,
) -> impl Strategy<Value = Signed<T>> {
    (v, sig()).prop_map(|(value, signature)| Signed { value, signature })
}
fn view() -> impl Strategy<Value = ViewNumber> {
    any::<u64>().prop_map(ViewNumber)
}
fn height() -> impl Strategy<Value = Height> {
    any::<u64>().prop_map(Height)
}
fn replica() -> impl Strategy<Value = ReplicaId> {
    any::<u16>().prop_map(ReplicaId)
}
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), any::<u64>()).prop_map(|(to, a)| Op::Transfer {
            to,
            amount: Amount(a)
        }),
        (vec(any::<u8>(), 0..=64), vec(any::<u8>(), 0..=1024)).prop_map(|(k, v)| Op::Put {
            key: RecordKey::new(k).unwrap(),
            value: RecordValue::new(v).unwrap()
        }),
    ]
}
fn tx() -> impl Strategy<Value = Transaction> {
    signed(
        (key(), any::<u64>(), op()).prop_map(|(sender, n, op)| TxBody {
            sender,
            nonce: Nonce(n),
            op,
        }),
    )
}
fn block() -> impl Strategy<Value = Block> {
    (height(), any::<u64>(), digest(), vec(tx(), 0..4)).prop_map(
        |(height, timestamp_ms, tx_root, txs)| Block {
            header: BlockHeader {
                height,
                timestamp_ms,
                tx_root,
            },
            txs: txs.into(),
        },
    )
}
fn entries() -> impl Strategy<Value = Vec<SignatureEntry>> {
    vec(
        (replica(), sig()).prop_map(|(replica, signature)| SignatureEntry { replica, signature }),
        0..5,
    )
}
fn pre_prepare() -> impl Strategy<Value = PrePrepare> {
    (view(), height(), digest()).prop_map(|(view, height, digest)| PrePrepare {
        view,
        height,
        digest,
    })
}
fn prepared() -> impl Strategy<Value = PreparedCertificate> {
    (signed(pre_prepare()), entries()).prop_map(|(pre_prepare, prepares)| PreparedCertificate {
        pre_prepare,
        prepares,
    })
}
fn checkpoint_cert() -> impl Strategy<Value = CheckpointCertificate> {
    (height(), digest(), entries()).prop_map(|(height, state_digest, signatures)| {
        CheckpointCertificate {
            height,
            state_digest,
            signatures,
        }
    })
}
fn commit_cert() -> impl Strategy<Value = CommitCertificate> {
    (view(), height(), digest(), entries()).prop_map(|(view, height, digest, commits)| {
        CommitCertificate {
            view,
            height,
            digest,
            commits,
        }
    })
}
fn view_change() -> impl Strategy<Value = ViewChange> {
    (
        view(),
        replica(),
        proptest::option::of(checkpoint_cert()),
        vec(prepared(), 0..3),
    )
        .prop_map(|(new_view, replica, checkpoint, prepared)| ViewChange {
            new_view,
            replica,
            checkpoint,
            prepared,
        })
}
fn tx_result() -> impl Strategy<Value = TxResult> {
    proptest::sample::select(TxResult::ALL.to_vec())
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (signed(pre_prepare()), block())
            .prop_map(|(pre_prepare, body)| Message::Proposal(Proposal { pre_prepare, body })),
        signed((view(), height(), digest(), replica()).prop_map(
            |(view, height, digest, replica)| Prepare {
                view,
                height,
                digest,
                replica
            }
        ))
        .prop_map(Message::Prepare),
        signed((view(), height(), digest(), replica()).prop_map(
            |(view, height, digest, replica)| Commit {
                view,
                height,
                digest,
                replica
            }
        ))
        .prop_map(Message::Commit),
        signed(
            (height(), digest(), replica()).prop_map(|(height, state_digest, replica)| {
                Checkpoint {
                    height,
                    state_digest,
                    replica,
                }
            })
        )
        .prop_map(Message::Checkpoint),
        checkpoint_cert().prop_map(Message::CheckpointCertificate),
        signed(view_change()).prop_map(Message::ViewChange),
        signed(
            (
                view(),
                vec(signed(view_change()), 0..3),
                vec(signed(pre_prepare()), 0..4)
            )
                .prop_map(|(view, view_changes, pre_prepares)| NewView {
                    view,
                    view_changes,
                    pre_prepares
                })
        )
        .prop_map(Message::NewView),
        signed(
            (replica(), view(), any::<bool>(), height(), height()).prop_map(
                |(replica, view, active, executed, stable_checkpoint)| Status {
                    replica,
                    view,
                    active,
                    executed,
                    stable_checkpoint
                }
            )
        )
        .prop_map(Message::Status),
        vec((height(), digest()), 0..5)
            .prop_map(|wanted| Message::FetchBodies(FetchBodies { wanted })),
        vec(block(), 0..3).prop_map(|blocks| Message::Bodies(Bodies { blocks })),
        (height(), height()).prop_map(|(from, to)| Message::FetchBlocks(FetchBlocks { from, to })),
        vec(
            (block(), commit_cert())
                .prop_map(|(block, certificate)| CommittedBlock { block, certificate }),
            0..3
        )
        .prop_map(|blocks| Message::Blocks(BlockBatch { blocks })),
        vec(tx(), 0..5).prop_map(|txs| Message::Relay(TxRelay { txs })),
    ]
}

fn durable() -> impl Strategy<Value = DurableEntry> {
    prop_oneof![
        (signed(pre_prepare()), block())
            .prop_map(|(pre_prepare, body)| DurableEntry::PrePrepareSent { pre_prepare, body }),
        (
            signed(pre_prepare()),
            signed((view(), height(), digest(), replica()).prop_map(
                |(view, height, digest, replica)| Prepare {
                    view,
                    height,
                    digest,
                    replica
                }
            )),
            block()
        )
            .prop_map(|(pre_prepare, prepare, body)| DurableEntry::PrepareSent {
                pre_prepare,
                prepare,
                body
            }),
        prepared().prop_map(DurableEntry::Prepared),
        view().prop_map(|view| DurableEntry::ViewChangeSent { view }),
        signed(
            (
                view(),
                vec(signed(view_change()), 0..2),
                vec(signed(pre_prepare()), 0..3)
            )
                .prop_map(|(view, view_changes, pre_prepares)| NewView {
                    view,
                    view_changes,
                    pre_prepares
                })
        )
        .prop_map(DurableEntry::NewViewAccepted),
        checkpoint_cert().prop_map(DurableEntry::StableCheckpoint),
    ]
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &T,
) {
    let bytes = codec::encode(v);
    let back: T = codec::decode(&bytes, bytes.len()).unwrap();
    assert_eq!(&back, v);
    // Canonical: encoding again gives the same bytes.
    assert_eq!(codec::encode(&back), bytes);
    // One byte short is refused by the limit; a truncated input is malformed.
    if !bytes.is_empty() {
        assert!(matches!(
            codec::decode::<T>(&bytes, bytes.len() - 1),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(codec::decode::<T>(&bytes[..bytes.len() - 1], bytes.len()).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn messages_round_trip(m in message()) {
        round_trip(&m);
    }

    #[test]
    fn durable_entries_round_trip(e in durable()) {
        round_trip(&e);
    }

    #[test]
    fn receipts_and_txs_round_trip(
        r in signed((replica(), height(), digest(), digest(), digest()).prop_map(
            |(replica, height, block_digest, results_root, state_digest)| BlockReceipt { replica, height, block_digest, results_root, state_digest })),
        leaf in (digest(), tx_result(), any::<u64>(), any::<u64>(), vec(digest(), 0..20)),
        t in tx(),
        c in commit_cert(),
    ) {
        round_trip(&r);
        let (tx_hash, result, index, leaf_count, path) = leaf;
        let proof = stele_crypto::merkle::Proof { index, leaf_count, path };
        round_trip(&Receipt { block: r.clone(), tx_hash, result, proof });
        round_trip(&t);
        round_trip(&c);
    }

    /// Keys, signatures and digests are serialized as words (`stele_crypto`'s
    /// `fixed_bytes`) but must encode as exactly their bytes, as serde's byte tuples did:
    /// every tx hash, signature message and stored value depends on it.
    #[test]
    fn keys_signatures_and_digests_encode_as_exactly_their_bytes(
        k in key(), s in sig(), d in digest(), cut in 0usize..64,
    ) {
        prop_assert_eq!(codec::encode(&k), k.0.to_vec());
        prop_assert_eq!(codec::encode(&s), s.0.to_vec());
        prop_assert_eq!(codec::encode(&d), d.0.to_vec());
        prop_assert_eq!(codec::decode::<PublicKey>(&k.0, 32), Ok(k));
        prop_assert_eq!(codec::decode::<Signature>(&s.0, 64), Ok(s));
        prop_assert_eq!(codec::decode::<Digest>(&d.0, 32), Ok(d));
        // A value cut short anywhere, even inside a word, is refused.
        prop_assert!(codec::decode::<Signature>(&s.0[..cut], 64).is_err());
        prop_assert!(codec::decode::<PublicKey>(&k.0[..cut % 32], 32).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode::<Message>(&bytes, 1 << 20);
        let _ = codec::decode::<DurableEntry>(&bytes, 1 << 20);
        let _ = codec::decode::<Transaction>(&bytes, 1 << 20);
    }

    #[test]
    fn mutated_messages_never_panic_the_decoder(m in message(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = codec::encode(&m);
        if !bytes.is_empty() {
            let i = pos % bytes.len();
            bytes[i] = byte;
        }
        let _ = codec::decode::<Message>(&bytes, 1 << 20);
    }
}

#[test]
fn hostile_length_prefixes_are_refused_without_allocating() {
    // Each variant of Message whose first field is a sequence or byte string, with a length
    // prefix claiming 2^40 elements: allocating ahead of the input would abort the process.
    let huge = (1u64 << 40).to_le_bytes();
    for variant in [8u32, 9, 11, 12] {
        let mut b = variant.to_le_bytes().to_vec();
        b.extend_from_slice(&huge);
        b.extend_from_slice(&[0; 16]);
        assert!(
            matches!(
                codec::decode::<Message>(&b, 1 << 20),
                Err(CodecError::Malformed { .. })
            ),
            "variant {variant}"
        );
    }
    // A relay whose one tx claims a 2^40-byte chain id.
    let mut b = 12u32.to_le_bytes().to_vec();
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&huge);
    assert!(codec::decode::<Message>(&b, 1 << 20).is_err());
}

#[test]
fn unknown_variants_and_bad_bools_are_refused() {
    let b = 99u32.to_le_bytes();
    assert!(codec::decode::<Message>(&b, 100).is_err());
    let status = Message::Status(Signed {
        value: Status {
            replica: ReplicaId(1),
            view: ViewNumber(2),
            active: true,
            executed: Height(3),
            stable_checkpoint: Height(0),
        },
        signature: Signature([1; 64]),
    });
    let mut bytes = codec::encode(&status);
    // variant (4) + replica (2) + view (8), then the bool
    assert_eq!(bytes[14], 1);
    bytes[14] = 2;
    assert!(codec::decode::<Message>(&bytes, 1000).is_err());
}
