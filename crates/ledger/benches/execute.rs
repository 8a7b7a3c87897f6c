//! Ledger execution of a 1,000-tx block of transfers over the in-memory state: the
//! state machine's own cost, without the store.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stele_crypto::{ChainId, PublicKey, Signature, Signed};
use stele_ledger::{execute, MemState};
use stele_types::{
    Amount, Block, Genesis, GenesisAccount, Height, Nonce, Op, Params, Transaction, TxBody,
};

const TXS: usize = 1000;

fn key(i: usize) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PublicKey(k)
}

fn bench_execute(c: &mut Criterion) {
    let chain_id = ChainId::new("bench").expect("valid chain id");
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        genesis_time_ms: 0,
        validators: vec![],
        accounts: (0..TXS)
            .map(|i| GenesisAccount {
                key: key(i),
                balance: Amount(1_000_000),
            })
            .collect(),
        params: Params::default(),
    };
    let state = MemState::genesis(&genesis);
    // Every sender pays the next one: 1,000 applied transfers, 2,000 account writes.
    let txs: Vec<Transaction> = (0..TXS)
        .map(|i| Signed {
            value: TxBody {
                sender: key(i),
                nonce: Nonce(0),
                op: Op::Transfer {
                    to: key((i + 1) % TXS),
                    amount: Amount(7),
                },
            },
            signature: Signature([1; 64]),
        })
        .collect();
    let block = Block::new(Height(1), 1, txs);
    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(TXS as u64));
    g.bench_function("execute 1000-tx block (MemState)", |b| {
        b.iter(|| execute(&block, &state, &genesis.params).expect("executes"))
    });
    g.finish();
}

criterion_group!(benches, bench_execute);
criterion_main!(benches);
