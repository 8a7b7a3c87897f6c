//! The decoders that bytes from outside reach, each with its valid seeds and the most
//! heap one decode may take.
//!
//! - `codec/<kind>`: a validator's frame payload, `codec::decode::<Message>` with the
//!   frame bound `max_frame_len(&genesis)`, seeded with a valid message of that kind;
//! - `frame`: the QUIC stream reader `FrameDecoder`, fed whole and in chunks, each frame
//!   then decoded as a message, as the node does;
//! - `submit/json`, `submit/binary`: `POST /txs` bodies, `decode_submit_body`;
//! - `genesis`: `Genesis::from_json`, also from valid genesis values with edge params;
//! - `node_toml`: `NodeConfig::parse`.

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stele_transport::frame::FrameDecoder;
use stele_types::api::decode_submit_body;
use stele_types::node_config::NodeConfig;
use stele_types::{codec, max_frame_len, Amount, Genesis, Message};

use crate::corpus;

/// The most heap bytes one decode may hold at its peak: `per_byte` per input byte plus
/// `fixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub per_byte: usize,
    pub fixed: usize,
}

impl Bound {
    /// The bound for an input of `len` bytes.
    pub fn for_len(&self, len: usize) -> usize {
        self.per_byte.saturating_mul(len).saturating_add(self.fixed)
    }
}

/// A decoder run on one input: true if it accepted the input.
pub type Decode = Box<dyn Fn(&[u8]) -> bool>;

/// One decoder under fuzz.
pub struct Target {
    pub name: String,
    /// Valid inputs: each must be accepted as it is, then is mutated.
    pub seeds: Vec<Vec<u8>>,
    /// Whether the input is text (JSON, TOML): adds the text mutations.
    pub text: bool,
    /// Prepended to half of the arbitrary inputs (a message kind's tag), so arbitrary
    /// bytes get past the first field.
    pub prefix: Vec<u8>,
    /// Valid values with edge fields, serialised (beside the byte-level mutations).
    pub structured: Option<fn(&mut ChaCha8Rng) -> Vec<u8>>,
    pub decode: Decode,
    pub bound: Bound,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("seeds", &self.seeds.len())
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// Every decoder, in a fixed order.
pub fn all() -> Vec<Target> {
    let genesis = corpus::genesis();
    let limit = max_frame_len(&genesis);
    let messages = corpus::messages();
    let mut targets = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        targets.push(Target {
            name: format!("codec/{}", m.kind()),
            seeds: vec![codec::encode(m)],
            text: false,
            prefix: (i as u32).to_le_bytes().to_vec(),
            structured: None,
            decode: Box::new(move |b| codec::decode::<Message>(b, limit).is_ok()),
            bound: CODEC_BOUND,
        });
    }
    targets.push(Target {
        name: "frame".into(),
        seeds: vec![
            corpus::frames(&messages[..5]),
            corpus::frames(&messages[5..9]),
            corpus::frames(&messages[9..]),
            corpus::frames(&messages[..1]),
        ],
        text: false,
        prefix: Vec::new(),
        structured: None,
        decode: Box::new(move |b| read_frames(b, limit)),
        bound: CODEC_BOUND,
    });
    targets.push(Target {
        name: "submit/json".into(),
        seeds: corpus::submit_json(),
        text: true,
        prefix: Vec::new(),
        structured: None,
        decode: Box::new(|b| decode_submit_body(b, false).is_ok()),
        bound: TEXT_BOUND,
    });
    targets.push(Target {
        name: "submit/binary".into(),
        seeds: corpus::submit_binary(),
        text: false,
        prefix: Vec::new(),
        structured: None,
        decode: Box::new(|b| decode_submit_body(b, true).is_ok()),
        bound: CODEC_BOUND,
    });
    targets.push(Target {
        name: "genesis".into(),
        seeds: corpus::genesis_json(),
        text: true,
        prefix: Vec::new(),
        structured: Some(edge_genesis),
        decode: Box::new(|b| Genesis::from_json(&String::from_utf8_lossy(b), "fuzz.json").is_ok()),
        bound: TEXT_BOUND,
    });
    targets.push(Target {
        name: "node_toml".into(),
        seeds: corpus::node_toml(),
        text: true,
        prefix: Vec::new(),
        structured: None,
        decode: Box::new(|b| {
            NodeConfig::parse(&String::from_utf8_lossy(b), Path::new("node.toml")).is_ok()
        }),
        bound: TEXT_BOUND,
    });
    targets
}

/// The codec, framed or not, and binary submit bodies: 8 heap bytes per input byte
/// plus 64 KiB. A decoded value takes at most about twice its encoding (a tx's 133
/// encoded bytes at least are 184 in memory, an empty signed VIEW-CHANGE's 83 are 168),
/// and a vector growing by doubling holds its old and new buffers for a moment: 3x.
/// Nothing may be allocated from a length the input only announces.
pub const CODEC_BOUND: Bound = Bound {
    per_byte: 8,
    fixed: 64 << 10,
};

/// JSON (submit bodies, genesis) and TOML (node.toml): 8 heap bytes per input byte plus
/// 64 KiB; text is larger than the values it spells.
pub const TEXT_BOUND: Bound = Bound {
    per_byte: 8,
    fixed: 64 << 10,
};

/// The node's inbound path: frames out of a stream, each decoded as a message. The
/// stream is fed whole, then again in chunks of a size taken from its length, so frame
/// boundaries fall everywhere across the cases.
fn read_frames(b: &[u8], limit: usize) -> bool {
    let chunk = 1 + b.len() % 97;
    [b.len().max(1), chunk]
        .into_iter()
        .map(|size| {
            let mut d = FrameDecoder::new(limit);
            for c in b.chunks(size) {
                d.feed(c);
                loop {
                    match d.next_frame() {
                        Ok(Some(f)) => {
                            if codec::decode::<Message>(&f, limit).is_err() {
                                return false;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return false,
                    }
                }
            }
            d.finish().is_ok()
        })
        .fold(true, |all, ok| all & ok)
}

/// The fuzz genesis with some parameters, validators and balances set to edge values,
/// as JSON: reaches `Genesis::validate`'s arithmetic, which byte mutations of the JSON
/// text rarely get past the parser to.
fn edge_genesis(rng: &mut ChaCha8Rng) -> Vec<u8> {
    const EDGES: [u64; 12] = [
        0,
        1,
        2,
        255,
        1400,
        4096,
        1 << 20,
        (1 << 20) + 1,
        1 << 21,
        u32::MAX as u64,
        1 << 32,
        u64::MAX,
    ];
    let mut g = corpus::genesis();
    let edge = |rng: &mut ChaCha8Rng| EDGES[rng.gen_range(0..EDGES.len())];
    let p = &mut g.params;
    let u64s: [&mut u64; 9] = [
        &mut p.checkpoint_interval,
        &mut p.window,
        &mut p.max_batch_delay_ms,
        &mut p.view_timeout_ms,
        &mut p.max_view_timeout_ms,
        &mut p.clock_skew_ms,
        &mut p.nonce_window,
        &mut p.gapped_ttl_ms,
        &mut p.min_new_account.0,
    ];
    for f in u64s {
        if rng.gen_bool(0.2) {
            *f = edge(rng);
        }
    }
    let u32s: [&mut u32; 7] = [
        &mut p.max_block_txs,
        &mut p.max_block_bytes,
        &mut p.max_in_flight,
        &mut p.max_pending_per_sender,
        &mut p.mempool_size,
        &mut p.relay_batch_txs,
        &mut p.transfer_batch_blocks,
    ];
    for f in u32s {
        if rng.gen_bool(0.3) {
            *f = u32::try_from(edge(rng)).unwrap_or(u32::MAX);
        }
    }
    // Mostly keep the one rule that ties two fields, so validation goes on past it.
    if rng.gen_bool(0.7) {
        p.window = p.checkpoint_interval.saturating_mul(2);
    }
    if rng.gen_bool(0.1) {
        let n = [0, 1, 3, 5, 64, 256, 257][rng.gen_range(0..7)];
        g.validators = (0..n)
            .map(|i| stele_types::ValidatorInfo {
                key: corpus::key(i).public(),
                p2p_addr: format!("10.0.{}.{}:7100", i / 256, i % 256),
                api_addr: format!("10.0.{}.{}:8100", i / 256, i % 256),
            })
            .collect();
    }
    if rng.gen_bool(0.1) && g.validators.len() > 1 {
        g.validators[1].key = g.validators[0].key;
    }
    if rng.gen_bool(0.1) {
        if let Some(v) = g.validators.first_mut() {
            v.p2p_addr = [
                "",
                ":1",
                "h:0",
                "h:65536",
                "h:-1",
                "é:1",
                "h:99999999999999999999",
            ][rng.gen_range(0..7)]
            .into();
        }
    }
    if rng.gen_bool(0.1) {
        for a in &mut g.accounts {
            a.balance = Amount(edge(rng));
        }
    }
    serde_json::to_vec(&g).expect("a genesis value serialises")
}
