//! Genesis validation names the field and the problem; `max_frame_len` really bounds the
//! largest messages.

#![allow(clippy::unwrap_used)]

mod common;

use common::{genesis, genesis_with, keys, sign};
use stele_crypto::{Digest, KeyPair, Signature, Signed};
use stele_types::certs::{CheckpointCertificate, PreparedCertificate, SignatureEntry};
use stele_types::codec;
use stele_types::genesis::{max_frame_len, Genesis, GenesisError, Params};
use stele_types::messages::*;
use stele_types::tx::{
    sign_tx, RecordKey, RecordValue, MAX_RECORD_KEY_LEN, MAX_RECORD_VALUE_LEN, MAX_TX_LEN,
};
use stele_types::*;

fn invalid(g: &Genesis) -> (String, String) {
    match Genesis::from_json(&g.to_json(), "g.json") {
        Err(GenesisError::Invalid {
            field,
            problem,
            path,
        }) => {
            assert_eq!(path, "g.json");
            (field, problem)
        }
        other => panic!("expected an invalid genesis, got {other:?}"),
    }
}

#[test]
fn a_good_genesis_round_trips_through_json() {
    let g = genesis(4);
    let back = Genesis::from_json(&g.to_json(), "g.json").unwrap();
    assert_eq!(back, g);
    assert_eq!(back.digest(), g.digest());
    // Validators and clients that load the same file sign for the same chain.
    assert_eq!(back.chain_binding(), g.chain_binding());
    let vs = back.validator_set();
    assert_eq!((vs.n(), vs.f(), vs.quorum()), (4, 1, 3));
    assert_eq!(vs.chain(), &g.chain_binding());
}

#[test]
fn the_chain_binding_is_the_id_and_the_whole_genesis() {
    let g = genesis(4);
    let b = g.chain_binding();
    assert_eq!((b.id(), b.genesis()), (&g.chain_id, &g.digest()));
    // Written again under the same id, with any one field changed, it is another chain.
    let mut more = g.clone();
    more.accounts.push(GenesisAccount {
        key: KeyPair::from_seed([250; 32]).public(),
        balance: Amount(1),
    });
    let mut later = g.clone();
    later.genesis_time_ms += 1;
    let mut moved = g.clone();
    moved.validators[0].api_addr = "127.0.0.1:9999".into();
    for other in [more, later, moved] {
        assert_eq!(other.chain_binding().id(), b.id());
        assert_ne!(other.chain_binding(), b);
    }
}

#[test]
fn fewer_than_four_validators_is_refused() {
    let (field, problem) = invalid(&genesis(3));
    assert_eq!(field, "validators");
    assert!(problem.contains("at least 4"), "{problem}");
}

#[test]
fn small_order_validator_and_account_keys_are_refused() {
    // Under ZIP-215 anyone can sign for a small-order key: the identity (y = 1) and the
    // same point encoded with y + p.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_plus_p = [0xffu8; 32];
    identity_plus_p[0] = 0xee;
    identity_plus_p[31] = 0x7f;
    for enc in [identity, identity_plus_p] {
        let mut g = genesis(4);
        g.validators[1].key = stele_crypto::PublicKey(enc);
        let (field, problem) = invalid(&g);
        assert_eq!(field, "validators[1].key");
        assert!(problem.contains("small-order"), "{problem}");

        let mut g = genesis(4);
        g.accounts.push(GenesisAccount {
            key: stele_crypto::PublicKey(enc),
            balance: Amount(1),
        });
        let i = g.accounts.len() - 1;
        let (field, problem) = invalid(&g);
        assert_eq!(field, format!("accounts[{i}].key"));
        assert!(problem.contains("small-order"), "{problem}");
    }
}

#[test]
fn duplicate_keys_and_addresses_are_refused() {
    let mut g = genesis(4);
    g.validators[2].key = g.validators[0].key;
    assert_eq!(invalid(&g).0, "validators[2].key");

    let mut g = genesis(4);
    g.validators[3].p2p_addr = g.validators[1].p2p_addr.clone();
    assert_eq!(invalid(&g).0, "validators[3].p2p_addr");

    let mut g = genesis(4);
    g.validators[1].api_addr = g.validators[0].p2p_addr.clone();
    assert_eq!(invalid(&g).0, "validators[1].api_addr");

    let mut g = genesis(4);
    g.validators[0].api_addr = "localhost".into();
    let (field, problem) = invalid(&g);
    assert_eq!(field, "validators[0].api_addr");
    assert!(problem.contains("host:port"), "{problem}");

    let mut g = genesis(4);
    g.accounts.push(g.accounts[0].clone());
    assert_eq!(invalid(&g).0, "accounts[4].key");
}

#[test]
fn window_must_be_twice_the_checkpoint_interval() {
    let g = genesis_with(
        4,
        Params {
            window: 200,
            ..Params::default()
        },
    );
    let (field, problem) = invalid(&g);
    assert_eq!(field, "params.window");
    assert!(
        problem.contains("256") && problem.contains("200"),
        "{problem}"
    );
}

#[test]
fn other_parameter_errors_name_their_field() {
    let cases: Vec<(Params, &str)> = vec![
        (
            Params {
                checkpoint_interval: 0,
                window: 0,
                ..Params::default()
            },
            "params.checkpoint_interval",
        ),
        (
            Params {
                max_view_timeout_ms: 10,
                ..Params::default()
            },
            "params.max_view_timeout_ms",
        ),
        (
            Params {
                max_block_bytes: 100,
                ..Params::default()
            },
            "params.max_block_bytes",
        ),
        (
            Params {
                nonce_window: 0,
                ..Params::default()
            },
            "params.nonce_window",
        ),
        (
            Params {
                max_in_flight: 1000,
                ..Params::default()
            },
            "params.max_in_flight",
        ),
        (
            Params {
                transfer_batch_blocks: 100_000,
                ..Params::default()
            },
            "params",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(invalid(&genesis_with(4, p)).0, want);
    }
}

#[test]
fn parameters_whose_largest_frame_overflows_are_refused() {
    // Found by stele-fuzz's genesis target: a state-transfer batch of u32::MAX blocks of
    // u32::MAX bytes is more than 2^64 bytes.
    let p = Params {
        max_block_bytes: u32::MAX,
        transfer_batch_blocks: u32::MAX,
        ..Params::default()
    };
    let g = genesis_with(4, p);
    assert_eq!(max_frame_len(&g), usize::MAX, "saturates, never wraps");
    let (field, problem) = invalid(&g);
    assert_eq!(field, "params");
    assert!(problem.contains("above the"), "{problem}");
}

#[test]
fn json_errors_and_unknown_fields_name_the_file() {
    let err = Genesis::from_json("{", "bad.json").unwrap_err();
    assert!(err.to_string().contains("bad.json"), "{err}");
    let text = genesis(4)
        .to_json()
        .replacen("\"chain_id\"", "\"chain\"", 1);
    let err = Genesis::from_json(&text, "typo.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("typo.json") && err.contains("chain"), "{err}");
    let err = Genesis::load(std::path::Path::new("/nonexistent/genesis.json")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/genesis.json"));
}

/// Builds the worst-case messages for small parameters and checks each fits the limit.
#[test]
fn max_frame_len_bounds_the_largest_messages() {
    for n in [4usize, 7] {
        let params = Params {
            checkpoint_interval: 4,
            window: 8,
            max_block_txs: 40,
            max_block_bytes: 40 * MAX_TX_LEN as u32,
            relay_batch_txs: 10,
            transfer_batch_blocks: 2,
            ..Params::default()
        };
        let g = genesis_with(n, params.clone());
        let limit = max_frame_len(&g);
        let k = keys(n);
        let sig = Signature([9; 64]);
        let entries = |count: usize| -> Vec<SignatureEntry> {
            (0..count)
                .map(|i| SignatureEntry {
                    replica: ReplicaId(i as u16),
                    signature: sig,
                })
                .collect()
        };
        let pp = |h: u64| {
            sign(
                PrePrepare {
                    view: ViewNumber(u64::MAX),
                    height: Height(h),
                    digest: Digest::ZERO,
                },
                &k[0],
            )
        };

        // Largest txs: a Put with the longest key and value.
        let sender = KeyPair::from_seed([99; 32]);
        let chain = g.chain_binding();
        let big_tx = |nonce: u64| {
            sign_tx(
                TxBody {
                    sender: sender.public(),
                    nonce: Nonce(nonce),
                    op: Op::Put {
                        key: RecordKey::new(vec![1; MAX_RECORD_KEY_LEN]).unwrap(),
                        value: RecordValue::new(vec![2; MAX_RECORD_VALUE_LEN]).unwrap(),
                    },
                },
                &chain,
                &sender,
            )
        };
        let mut txs = Vec::new();
        let mut bytes = 0;
        while bytes + codec::encoded_len(&big_tx(0)) <= params.max_block_bytes as usize {
            bytes += codec::encoded_len(&big_tx(0));
            txs.push(big_tx(txs.len() as u64));
        }
        let block = Block::new(Height(u64::MAX), u64::MAX, txs);
        let proposal = Message::Proposal(Proposal {
            pre_prepare: pp(1),
            body: block.clone(),
        });
        assert!(codec::encoded_len(&proposal) <= limit);

        let vc = Signed {
            value: ViewChange {
                new_view: ViewNumber(u64::MAX),
                replica: ReplicaId(0),
                checkpoint: Some(CheckpointCertificate {
                    height: Height(1),
                    state_digest: Digest::ZERO,
                    signatures: entries(n),
                }),
                prepared: (0..params.window)
                    .map(|h| PreparedCertificate {
                        pre_prepare: pp(h),
                        prepares: entries(n),
                    })
                    .collect(),
            },
            signature: sig,
        };
        let nv = Message::NewView(Signed {
            value: NewView {
                view: ViewNumber(u64::MAX),
                view_changes: vec![vc; n],
                pre_prepares: (0..params.window).map(pp).collect(),
            },
            signature: sig,
        });
        let nv_len = codec::encoded_len(&nv);
        assert!(nv_len <= limit, "n={n}: NEW-VIEW {nv_len} > {limit}");

        let batch = Message::Blocks(BlockBatch {
            blocks: (0..params.transfer_batch_blocks)
                .map(|_| CommittedBlock {
                    block: block.clone(),
                    certificate: stele_types::CommitCertificate {
                        view: ViewNumber(0),
                        height: Height(0),
                        digest: Digest::ZERO,
                        commits: entries(n),
                    },
                })
                .collect(),
        });
        assert!(codec::encoded_len(&batch) <= limit);
        let relay = Message::Relay(TxRelay {
            txs: (0..params.relay_batch_txs as u64).map(big_tx).collect(),
        });
        assert!(codec::encoded_len(&relay) <= limit);
        // The bound is not wildly loose either: the largest of these is within 10% of it.
        let largest = [
            nv_len,
            codec::encoded_len(&batch),
            codec::encoded_len(&relay),
            codec::encoded_len(&proposal),
        ]
        .into_iter()
        .max()
        .unwrap();
        assert!(
            largest * 10 >= limit * 9,
            "n={n}: largest {largest}, limit {limit}"
        );
    }
}
