//! Engine throughput on one core: four engines wired in memory, 1,000-tx blocks,
//! signatures treated as pre-verified (the node verifies them on a worker pool, off the
//! engine's thread). Reports committed heights/s; messages/s is heights/s × the messages
//! one height costs, printed once.

use std::collections::VecDeque;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stele_consensus::{Action, Config, Engine, TxClass, TxOutcome, Verifier};
use stele_crypto::sim::MacSigner;
use stele_crypto::{ChainId, Digest, PublicKey, Scheme, Signature, SignatureError, Signer};
use stele_types::genesis::{GenesisAccount, Params};
use stele_types::tx::sign_tx;
use stele_types::{
    tx_hash, Amount, Genesis, Height, Message, Nonce, Op, ReplicaId, TxBody, ValidatorInfo,
};

/// Signatures were checked before the engine saw them.
#[derive(Debug)]
struct PreVerified;
impl Scheme for PreVerified {
    fn verify(&self, _: &PublicKey, _: &[u8], _: &Signature) -> Result<(), SignatureError> {
        Ok(())
    }
}

const TXS: usize = 1000;

struct Cluster {
    engines: Vec<Engine>,
    genesis: Genesis,
    clients: Vec<MacSigner>,
    nonce: u64,
    now: u64,
    messages: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let signers: Vec<MacSigner> = (0..4u8).map(|i| MacSigner::new([i; 32])).collect();
        let clients: Vec<MacSigner> = (0..TXS)
            .map(|i| MacSigner::new(Digest::of(&i.to_le_bytes()).0))
            .collect();
        let genesis = Genesis {
            chain_id: ChainId::new("bench").expect("chain id"),
            genesis_time_ms: 0,
            validators: signers
                .iter()
                .enumerate()
                .map(|(i, s)| ValidatorInfo {
                    key: s.public_key(),
                    p2p_addr: format!("10.0.0.{i}:1"),
                    api_addr: format!("10.0.0.{i}:2"),
                })
                .collect(),
            accounts: clients
                .iter()
                .map(|c| GenesisAccount {
                    key: c.public_key(),
                    balance: Amount(1 << 40),
                })
                .collect(),
            params: Params {
                max_block_txs: TXS as u32,
                max_batch_delay_ms: 0,
                mempool_size: 4 * TXS as u32,
                ..Params::default()
            },
        };
        let engines = signers
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let cfg = Config {
                    id: ReplicaId(i as u16),
                    genesis: genesis.clone(),
                    signer: Arc::new(s),
                    genesis_state: Digest::ZERO,
                };
                Engine::new(cfg, 0)
            })
            .collect();
        Cluster {
            engines,
            genesis,
            clients,
            nonce: 0,
            now: 0,
            messages: 0,
        }
    }

    /// Submits one block's worth of txs to the primary and runs until every engine
    /// delivered it.
    fn one_height(&mut self) {
        self.now += 1;
        let vs = self.genesis.validator_set();
        let verifier = Verifier {
            validators: &vs,
            genesis: &self.genesis,
            scheme: &PreVerified,
            known: None,
        };
        let to = self.clients[0].public_key();
        let txs: Vec<_> = self
            .clients
            .iter()
            .skip(1)
            .chain(self.clients.iter().take(1))
            .map(|c| {
                sign_tx(
                    TxBody {
                        sender: c.public_key(),
                        nonce: Nonce(self.nonce),
                        op: Op::Transfer {
                            to: if c.public_key() == to {
                                self.clients[1].public_key()
                            } else {
                                to
                            },
                            amount: Amount(1),
                        },
                    },
                    vs.chain(),
                    c,
                )
            })
            .collect();
        self.nonce += 1;
        let target = self.engines[0].delivered().next();
        for v in verifier.check_txs(&txs).expect("pre-verified") {
            let hash = tx_hash(v.signed());
            self.engines[0].on_request(self.now, self.now, hash, v, TxClass::Executable, false);
        }
        let mut inbox: VecDeque<(usize, usize, Message)> = VecDeque::new();
        loop {
            for i in 0..4 {
                for a in self.engines[i].drain() {
                    match a {
                        Action::Broadcast(m) => (0..4)
                            .filter(|j| *j != i)
                            .for_each(|j| inbox.push_back((i, j, m.clone()))),
                        Action::Send(to, m) => inbox.push_back((i, to.index(), m)),
                        Action::Deliver { block, .. } => {
                            let outcomes: Vec<_> = block
                                .txs
                                .iter()
                                .map(|t| (tx_hash(t), TxOutcome::Applied))
                                .collect();
                            let h = block.height();
                            self.engines[i].on_executed(
                                self.now,
                                h,
                                Digest::of(&h.0.to_le_bytes()),
                                &outcomes,
                            );
                        }
                        _ => {}
                    }
                }
            }
            let Some((from, to, m)) = inbox.pop_front() else {
                break;
            };
            self.messages += 1;
            let v = verifier
                .verify(ReplicaId(from as u16), m)
                .expect("valid message");
            self.engines[to].on_message(self.now, self.now, ReplicaId(from as u16), self.now, v);
        }
        assert!(
            self.engines.iter().all(|e| e.delivered() >= target),
            "height {target} not delivered everywhere"
        );
        let _ = Height(0);
    }
}

fn bench(c: &mut Criterion) {
    let mut cluster = Cluster::new();
    cluster.one_height();
    let before = cluster.messages;
    cluster.one_height();
    eprintln!(
        "messages per committed height (n = 4): {}",
        cluster.messages - before
    );
    let mut g = c.benchmark_group("engine n=4");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function(
        "commit one 1,000-tx height (all four engines, one core)",
        |b| b.iter(|| cluster.one_height()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
