//! Valid inputs for every decoder: one or more instances of each message kind, submit
//! bodies, genesis files, node.toml files and frame streams. The fuzzer mutates these.
//!
//! Signatures are real for txs and fixed bytes elsewhere: no decoder checks one.

use stele_crypto::{ChainId, Digest, KeyPair, Signature, Signed};
use stele_types::certs::{
    CheckpointCertificate, CommitCertificate, PreparedCertificate, SignatureEntry,
};
use stele_types::genesis::{Genesis, GenesisAccount, Params};
use stele_types::messages::*;
use stele_types::tx::{sign_tx, RecordKey, RecordValue};
use stele_types::{codec, Amount, Block, Height, Nonce, Op, ReplicaId, Transaction, TxBody};
use stele_types::{ValidatorInfo, ViewNumber};

fn chain() -> ChainId {
    ChainId::new("stele-fuzz").expect("a valid chain id")
}

/// The `i`th key the fuzzer uses (distinct for every `i`).
pub fn key(i: u16) -> KeyPair {
    let mut seed = [0x5a; 32];
    seed[..2].copy_from_slice(&i.to_le_bytes());
    KeyPair::from_seed(seed)
}

/// The chain the fuzzer decodes for: four validators, default parameters.
pub fn genesis() -> Genesis {
    Genesis {
        chain_id: chain(),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..4u16)
            .map(|i| ValidatorInfo {
                key: key(i).public(),
                p2p_addr: format!("127.0.0.1:{}", 7100 + i),
                api_addr: format!("127.0.0.1:{}", 8100 + i),
            })
            .collect(),
        accounts: (0..4u16)
            .map(|i| GenesisAccount {
                key: key(100 + i).public(),
                balance: Amount(1_000_000),
            })
            .collect(),
        params: Params::default(),
    }
}

/// Client txs of both kinds, validly signed for [`genesis`].
pub fn txs() -> Vec<Transaction> {
    let sender = key(100);
    let chain = genesis().chain_binding();
    let ops = [
        Op::Transfer {
            to: key(101).public(),
            amount: Amount(25),
        },
        Op::Put {
            key: RecordKey::new(b"colour".to_vec()).unwrap_or_default(),
            value: RecordValue::new(b"teal".to_vec()).unwrap_or_default(),
        },
        Op::Put {
            key: RecordKey::new(vec![0xfe; 64]).unwrap_or_default(),
            value: RecordValue::new(vec![0x01; 300]).unwrap_or_default(),
        },
    ];
    ops.into_iter()
        .enumerate()
        .map(|(n, op)| {
            let body = TxBody {
                sender: sender.public(),
                nonce: Nonce(n as u64),
                op,
            };
            sign_tx(body, &chain, &sender)
        })
        .collect()
}

fn sig(i: u8) -> Signature {
    Signature([i; 64])
}

fn signed<T>(value: T, i: u8) -> Signed<T> {
    Signed {
        value,
        signature: sig(i),
    }
}

fn entries(n: u16) -> Vec<SignatureEntry> {
    (0..n)
        .map(|r| SignatureEntry {
            replica: ReplicaId(r),
            signature: sig(r as u8 + 10),
        })
        .collect()
}

fn pre_prepare(view: u64, height: u64) -> Signed<PrePrepare> {
    signed(
        PrePrepare {
            view: ViewNumber(view),
            height: Height(height),
            digest: Digest::of(&height.to_le_bytes()),
        },
        1,
    )
}

fn block(height: u64, txs: Vec<Transaction>) -> Block {
    Block::new(Height(height), 1_700_000_000_123 + height, txs)
}

fn checkpoint_cert(height: u64) -> CheckpointCertificate {
    CheckpointCertificate {
        height: Height(height),
        state_digest: Digest::of(b"state"),
        signatures: entries(3),
    }
}

fn view_change(replica: u16) -> Signed<ViewChange> {
    signed(
        ViewChange {
            new_view: ViewNumber(3),
            replica: ReplicaId(replica),
            checkpoint: Some(checkpoint_cert(128)),
            prepared: vec![
                PreparedCertificate {
                    pre_prepare: pre_prepare(2, 129),
                    prepares: entries(3),
                },
                PreparedCertificate {
                    pre_prepare: pre_prepare(2, 130),
                    prepares: entries(2),
                },
            ],
        },
        2,
    )
}

fn committed(height: u64, txs: Vec<Transaction>) -> CommittedBlock {
    let block = block(height, txs);
    CommittedBlock {
        certificate: CommitCertificate {
            view: ViewNumber(1),
            height: Height(height),
            digest: block.digest(),
            commits: entries(3),
        },
        block,
    }
}

/// At least one valid instance of every message kind, in [`Message::KINDS`] order.
pub fn messages() -> Vec<Message> {
    let txs = txs();
    let msgs = vec![
        Message::Proposal(Proposal {
            pre_prepare: pre_prepare(1, 7),
            body: block(7, txs.clone()),
        }),
        Message::Prepare(signed(
            Prepare {
                view: ViewNumber(1),
                height: Height(7),
                digest: Digest::of(b"b"),
                replica: ReplicaId(2),
            },
            3,
        )),
        Message::Commit(signed(
            Commit {
                view: ViewNumber(1),
                height: Height(7),
                digest: Digest::of(b"b"),
                replica: ReplicaId(3),
            },
            4,
        )),
        Message::Checkpoint(signed(
            Checkpoint {
                height: Height(128),
                state_digest: Digest::of(b"state"),
                replica: ReplicaId(1),
            },
            5,
        )),
        Message::CheckpointCertificate(checkpoint_cert(256)),
        Message::ViewChange(view_change(1)),
        Message::NewView(signed(
            NewView {
                view: ViewNumber(3),
                view_changes: vec![view_change(0), view_change(2), view_change(3)],
                pre_prepares: vec![pre_prepare(3, 129), pre_prepare(3, 130)],
            },
            6,
        )),
        Message::Status(signed(
            Status {
                replica: ReplicaId(0),
                view: ViewNumber(1),
                active: true,
                executed: Height(9),
                stable_checkpoint: Height(0),
            },
            7,
        )),
        Message::FetchBodies(FetchBodies {
            wanted: vec![(Height(129), Digest::of(b"x")), (Height(130), Digest::ZERO)],
        }),
        Message::Bodies(Bodies {
            blocks: vec![block(129, txs[..1].to_vec()), Block::null(Height(130))],
        }),
        Message::FetchBlocks(FetchBlocks {
            from: Height(1),
            to: Height(16),
        }),
        Message::Blocks(BlockBatch {
            blocks: vec![committed(1, txs[1..].to_vec()), committed(2, vec![])],
        }),
        Message::Relay(TxRelay { txs }),
    ];
    debug_assert!(msgs
        .iter()
        .zip(Message::KINDS)
        .all(|(m, kind)| m.kind() == kind));
    msgs
}

/// A stream of frames (big-endian u32 length, then the payload) carrying `msgs`.
pub fn frames(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let payload = codec::encode(m);
        out.extend_from_slice(&stele_transport::frame::header(payload.len()));
        out.extend_from_slice(&payload);
    }
    out
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

/// `POST /txs` JSON bodies: one tx, arrays, with and without whitespace.
pub fn submit_json() -> Vec<Vec<u8>> {
    let txs = txs();
    vec![
        json(&txs[0]),
        json(&txs[2]),
        json(&txs),
        serde_json::to_vec_pretty(&txs[..2]).expect("txs serialise"),
        [b"\n \t".as_slice(), &json(&txs[1]), b"\r\n"].concat(),
    ]
}

/// `POST /txs` binary bodies: the codec encoding of a `Vec<Transaction>`.
pub fn submit_binary() -> Vec<Vec<u8>> {
    let txs = txs();
    vec![
        codec::encode(&txs[..1].to_vec()),
        codec::encode(&txs),
        codec::encode(&[txs[1].clone(), txs[0].clone()].to_vec()),
    ]
}

/// Genesis files: as `testnet init` writes them, compact, and without `params`.
pub fn genesis_json() -> Vec<Vec<u8>> {
    let g = genesis();
    let mut no_params = serde_json::to_value(&g).expect("genesis serialises");
    if let Some(o) = no_params.as_object_mut() {
        o.remove("params");
    }
    vec![g.to_json().into_bytes(), json(&g), json(&no_params)]
}

/// node.toml files: the shortest, every field, and as `testnet init` writes one.
pub fn node_toml() -> Vec<Vec<u8>> {
    [
        "genesis = \"genesis.json\"\nkey = \"validator.pem\"\ndata_dir = \"data\"\n",
        "# Validator 0 of testnet stele-fuzz. See `stele-node run --help`.\n\
         genesis = \"../genesis.json\"\n\
         key = \"validator.pem\"\n\
         data_dir = \"data\"\n\
         p2p_listen = \"127.0.0.1:7100\"\n\
         api_listen = \"127.0.0.1:7200\"\n\
         sync = true\n\
         log = \"stele_node=debug,info\"\n",
        "genesis = '/etc/stele/genesis.json'   # shared\n\
         key = \"\"\"/etc/stele/v.pem\"\"\"\n\
         data_dir = \"/var/lib/stele\"\n\
         sync = false\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
