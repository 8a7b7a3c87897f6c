//! The genesis file: chain id, validators, funded accounts and protocol parameters.
//!
//! Loaded from JSON and checked whole before anything runs; every error names the
//! field and the problem. [`max_frame_len`] derives the transport's hard frame limit
//! from it.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use stele_crypto::{ChainBinding, ChainId, Digest, PublicKey, Signature, Signed};

use crate::block::{Block, BlockHeader};
use crate::certs::{CheckpointCertificate, CommitCertificate, PreparedCertificate, SignatureEntry};
use crate::codec;
use crate::ids::{Amount, Height, ReplicaId, ViewNumber};
use crate::messages::PrePrepare;
use crate::tx::MAX_TX_LEN;
use crate::validators::{ValidatorInfo, ValidatorSet, MAX_VALIDATORS};

/// The protocol parameters every validator must share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// K: a checkpoint every K heights.
    pub checkpoint_interval: u64,
    /// L = 2K: heights accepted above the low watermark h are (h, h + L].
    pub window: u64,
    /// Most txs in a block.
    pub max_block_txs: u32,
    /// Most encoded tx bytes in a block.
    pub max_block_bytes: u32,
    /// Longest a primary waits to fill a block while blocks of its own are in flight;
    /// with none in flight it proposes at once, and a full block goes at once.
    pub max_batch_delay_ms: u64,
    /// Heights a primary may have proposed but not yet committed.
    pub max_in_flight: u32,
    /// T: the view-change timer's base.
    pub view_timeout_ms: u64,
    /// T_max: the cap of the doubling view-change timer.
    pub max_view_timeout_ms: u64,
    /// Largest accepted difference between a fresh proposal's timestamp and its arrival.
    pub clock_skew_ms: u64,
    /// G: nonces admitted are [account nonce, account nonce + G).
    pub nonce_window: u64,
    /// P: most pending txs per sender.
    pub max_pending_per_sender: u32,
    /// Most pending txs in a validator's mempool.
    pub mempool_size: u32,
    /// How long a gapped tx waits for the txs before it.
    pub gapped_ttl_ms: u64,
    /// Smallest transfer that may create an account.
    pub min_new_account: Amount,
    /// Most txs in one relay batch.
    pub relay_batch_txs: u32,
    /// Most blocks in one state-transfer batch.
    pub transfer_batch_blocks: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            checkpoint_interval: 128,
            window: 256,
            max_block_txs: 2000,
            max_block_bytes: 1 << 20,
            max_batch_delay_ms: 20,
            max_in_flight: 8,
            view_timeout_ms: 2000,
            max_view_timeout_ms: 16_000,
            clock_skew_ms: 5000,
            nonce_window: 64,
            max_pending_per_sender: 64,
            mempool_size: 100_000,
            gapped_ttl_ms: 60_000,
            min_new_account: Amount(10),
            relay_batch_txs: 256,
            transfer_batch_blocks: 16,
        }
    }
}

/// A funded account at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub key: PublicKey,
    pub balance: Amount,
}

/// The genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: ChainId,
    /// Wall-clock time the chain starts (ms since the Unix epoch).
    pub genesis_time_ms: u64,
    /// Validators in id order.
    pub validators: Vec<ValidatorInfo>,
    pub accounts: Vec<GenesisAccount>,
    #[serde(default)]
    pub params: Params,
}

/// A genesis file that cannot be used; each names the file and field.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("cannot read genesis file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("genesis file {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("genesis file {path}: {field}: {problem}")]
    Invalid {
        path: String,
        field: String,
        problem: String,
    },
}

fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("expected host:port, found {addr:?}"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "expected host:port with a port in 1..65535, found {addr:?}"
        ));
    }
    Ok(())
}

impl Genesis {
    /// Reads and checks a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: name.clone(),
            source,
        })?;
        Genesis::from_json(&text, &name)
    }

    /// Parses and checks genesis JSON; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Genesis, GenesisError> {
        let g: Genesis = serde_json::from_str(text).map_err(|source| GenesisError::Json {
            path: path.to_owned(),
            source,
        })?;
        g.validate()
            .map_err(|(field, problem)| GenesisError::Invalid {
                path: path.to_owned(),
                field,
                problem,
            })?;
        Ok(g)
    }

    /// Pretty JSON, as `testnet init` writes it.
    pub fn to_json(&self) -> String {
        // A Genesis is plain data with string keys; JSON encoding cannot fail.
        serde_json::to_string_pretty(self).expect("genesis encodes as JSON")
    }

    /// Checks every rule; the error is (field, problem).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, problem: String| Err((field.to_owned(), problem));
        let n = self.validators.len();
        if n < 4 {
            return bad(
                "validators",
                format!("{n} listed, at least 4 needed (n = 3f+1 tolerates f = 1 fault)"),
            );
        }
        if n > MAX_VALIDATORS {
            return bad(
                "validators",
                format!("{n} listed, at most {MAX_VALIDATORS} supported"),
            );
        }
        let mut keys = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, v) in self.validators.iter().enumerate() {
            if !keys.insert(v.key) {
                return bad(
                    &format!("validators[{i}].key"),
                    format!("{} is listed twice", v.key),
                );
            }
            if v.key.is_small_order() {
                return bad(
                    &format!("validators[{i}].key"),
                    format!("{} is a small-order point: anyone can sign for it", v.key),
                );
            }
            for (name, addr) in [("p2p_addr", &v.p2p_addr), ("api_addr", &v.api_addr)] {
                let field = format!("validators[{i}].{name}");
                check_addr(addr).or_else(|p| bad(&field, p))?;
                if !addrs.insert(addr.as_str()) {
                    return bad(&field, format!("{addr} is used twice"));
                }
            }
        }
        let mut accounts = HashSet::new();
        let mut supply = Amount(0);
        for (i, a) in self.accounts.iter().enumerate() {
            if !accounts.insert(a.key) {
                return bad(
                    &format!("accounts[{i}].key"),
                    format!("{} is listed twice", a.key),
                );
            }
            if a.key.is_small_order() {
                return bad(
                    &format!("accounts[{i}].key"),
                    format!("{} is a small-order point: anyone can sign for it", a.key),
                );
            }
            supply = match supply.checked_add(a.balance) {
                Some(s) => s,
                None => {
                    return bad(
                        &format!("accounts[{i}].balance"),
                        "total supply overflows u64".into(),
                    )
                }
            };
        }
        let p = &self.params;
        let positive = [
            ("params.checkpoint_interval", p.checkpoint_interval),
            ("params.view_timeout_ms", p.view_timeout_ms),
            ("params.max_block_txs", p.max_block_txs.into()),
            ("params.max_in_flight", p.max_in_flight.into()),
            ("params.nonce_window", p.nonce_window),
            (
                "params.max_pending_per_sender",
                p.max_pending_per_sender.into(),
            ),
            ("params.mempool_size", p.mempool_size.into()),
            ("params.relay_batch_txs", p.relay_batch_txs.into()),
            (
                "params.transfer_batch_blocks",
                p.transfer_batch_blocks.into(),
            ),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if p.checkpoint_interval > 1 << 20 {
            return bad(
                "params.checkpoint_interval",
                format!("{} is above 2^20", p.checkpoint_interval),
            );
        }
        if p.window != 2 * p.checkpoint_interval {
            return bad(
                "params.window",
                format!(
                    "must be L = 2K = {} (twice params.checkpoint_interval), found {}",
                    2 * p.checkpoint_interval,
                    p.window
                ),
            );
        }
        if u64::from(p.max_in_flight) > p.window {
            return bad(
                "params.max_in_flight",
                format!("{} exceeds the window {}", p.max_in_flight, p.window),
            );
        }
        if p.max_view_timeout_ms < p.view_timeout_ms {
            return bad(
                "params.max_view_timeout_ms",
                format!(
                    "{} is below params.view_timeout_ms {}",
                    p.max_view_timeout_ms, p.view_timeout_ms
                ),
            );
        }
        if (p.max_block_bytes as usize) < MAX_TX_LEN {
            return bad(
                "params.max_block_bytes",
                format!(
                    "{} cannot hold one largest tx ({MAX_TX_LEN} bytes)",
                    p.max_block_bytes
                ),
            );
        }
        let frame = max_frame_len(self);
        if frame > codec::MAX_DECODE_LEN {
            return bad(
                "params",
                format!(
                    "the largest message would be {frame} bytes, above the {} byte limit: lower the \
                     window, block size or batch sizes",
                    codec::MAX_DECODE_LEN
                ),
            );
        }
        Ok(())
    }

    /// The validator set, bound to this chain ([`Genesis::chain_binding`]). Hashes the
    /// whole genesis: make one and keep it.
    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet::new(self.chain_binding(), self.validators.clone())
    }

    /// A digest of the whole genesis: the state digest at height 0 builds on it, and
    /// every signature covers it.
    pub fn digest(&self) -> Digest {
        Digest::of_parts("stele/genesis", &[&codec::encode(self)])
    }

    /// What every signature on this chain is bound to: the chain id and [`Genesis::digest`].
    /// A chain written again under the same id, with any field changed (one more
    /// account, another validator address, another start time), accepts nothing signed
    /// for this one.
    ///
    /// Nothing in a genesis is signed, so the digest does not depend on any signature
    /// made with the binding it defines. Hashes the whole genesis: derive it once.
    pub fn chain_binding(&self) -> ChainBinding {
        ChainBinding::new(self.chain_id.clone(), self.digest())
    }
}

/// The hard maximum length of one frame between validators, the largest of: a NEW-VIEW
/// (up to n VIEW-CHANGEs with up to L prepared certificates each, plus O), a proposal
/// with a full block, a state-transfer batch, a relay batch, each with n-signature
/// certificates (certificates with more than n signatures are invalid anyway).
///
/// Saturates at `usize::MAX`: parameters read from a file can ask for more than 2^64
/// bytes, and `Genesis::validate` must see that as too large, not as a wrapped size.
pub fn max_frame_len(g: &Genesis) -> usize {
    let n = g.validators.len();
    let p = &g.params;
    let window = usize::try_from(p.window).unwrap_or(usize::MAX);
    let mul = usize::saturating_mul;
    let sum = |parts: &[usize]| parts.iter().fold(0usize, |a, &b| a.saturating_add(b));
    let len_prefix = 8; // fixed-width sequence lengths
    let enum_tag = 4; // fixed-width variant index
    let sig = Signature([0; 64]);
    let digest = Digest::ZERO;
    let entry = codec::encoded_len(&SignatureEntry {
        replica: ReplicaId(0),
        signature: sig,
    });
    let pre_prepare = codec::encoded_len(&Signed {
        value: PrePrepare {
            view: ViewNumber(0),
            height: Height(0),
            digest,
        },
        signature: sig,
    });
    let empty_prepared = codec::encoded_len(&PreparedCertificate {
        pre_prepare: Signed {
            value: PrePrepare {
                view: ViewNumber(0),
                height: Height(0),
                digest,
            },
            signature: sig,
        },
        prepares: vec![],
    });
    let empty_checkpoint = codec::encoded_len(&CheckpointCertificate {
        height: Height(0),
        state_digest: digest,
        signatures: vec![],
    });
    let empty_commit_cert = codec::encoded_len(&CommitCertificate {
        view: ViewNumber(0),
        height: Height(0),
        digest,
        commits: vec![],
    });
    let prepared = sum(&[empty_prepared, mul(n, entry)]);
    let checkpoint = sum(&[empty_checkpoint, mul(n, entry)]);
    // new_view + replica + Some(checkpoint) + prepared list + signature
    let view_change = sum(&[8, 2, 1, checkpoint, len_prefix, mul(window, prepared), 64]);
    let new_view = sum(&[
        8,
        len_prefix,
        mul(n, view_change),
        len_prefix,
        mul(window, pre_prepare),
        64,
    ]);
    let header = codec::encoded_len(&BlockHeader {
        height: Height(0),
        timestamp_ms: 0,
        tx_root: digest,
    });
    let block = sum(&[header, len_prefix, p.max_block_bytes as usize]);
    let proposal = sum(&[pre_prepare, block]);
    let batch_blocks = p.transfer_batch_blocks as usize;
    let transfer = sum(&[
        len_prefix,
        mul(
            batch_blocks,
            sum(&[block, empty_commit_cert, mul(n, entry)]),
        ),
    ]);
    let relay = sum(&[len_prefix, mul(p.relay_batch_txs as usize, MAX_TX_LEN)]);
    let bodies = sum(&[len_prefix, mul(batch_blocks, block)]);
    debug_assert_eq!(
        codec::encoded_len(&Block::null(Height(0))),
        header + len_prefix
    );
    let largest = [new_view, proposal, transfer, relay, bodies]
        .into_iter()
        .max()
        .unwrap_or(0);
    sum(&[enum_tag, largest])
}
