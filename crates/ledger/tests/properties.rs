//! Property tests of the state machine: over any sequence of blocks of transfers and
//! puts (good, failing, stale, gapped, repeated, from unknown senders) total supply is
//! conserved and nonces only move forward; replaying the same blocks from genesis gives
//! the same results, digests and state.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{genesis, key, pay, tx};
use proptest::collection::vec;
use proptest::prelude::*;
use stele_crypto::PublicKey;
use stele_ledger::{execute, Execution, MemState};
use stele_types::{
    Amount, Block, Genesis, Height, Op, Params, RecordKey, RecordValue, StateView, Transaction,
};

/// Keys 0..4 are funded at genesis, 4 and 5 send but start without an account, 6..9
/// only receive.
const FUNDED: [(u8, u64); 4] = [(0, 1000), (1, 500), (2, 50), (3, 0)];

#[derive(Clone, Debug)]
enum Spec {
    /// A transfer whose nonce is the sender's expected next nonce plus `delta`.
    Pay {
        from: u8,
        delta: i8,
        to: u8,
        amount: u64,
    },
    Put {
        from: u8,
        delta: i8,
        slot: u8,
        value: u8,
    },
    /// Include again a tx built earlier.
    Repeat(usize),
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        6 => (0..6u8, -1..3i8, 0..10u8, 0..400u64)
            .prop_map(|(from, delta, to, amount)| Spec::Pay { from, delta, to, amount }),
        1 => (0..6u8, -1..2i8, 0..3u8, any::<u8>())
            .prop_map(|(from, delta, slot, value)| Spec::Put { from, delta, slot, value }),
        1 => any::<usize>().prop_map(Spec::Repeat),
    ]
}

fn params() -> Params {
    Params {
        min_new_account: Amount(25),
        ..Params::default()
    }
}

fn the_genesis() -> Genesis {
    let accounts: Vec<(PublicKey, u64)> = FUNDED.iter().map(|&(k, b)| (key(k), b)).collect();
    genesis(&accounts, params())
}

/// Turns specs into blocks, picking nonces against the state the blocks will meet.
fn build_blocks(specs: &[Vec<Spec>]) -> Vec<Block> {
    let g = the_genesis();
    let mut state = MemState::genesis(&g);
    let mut built: Vec<Transaction> = Vec::new();
    let mut blocks = Vec::new();
    for (i, block_specs) in specs.iter().enumerate() {
        let mut expected: HashMap<PublicKey, u64> = HashMap::new();
        let mut txs = Vec::new();
        for s in block_specs {
            let mut nonce_for = |from: u8, delta: i8| {
                let k = key(from);
                let next = *expected
                    .entry(k)
                    .or_insert_with(|| state.account(&k).unwrap().map_or(0, |a| a.nonce.0));
                let n = next.saturating_add_signed(i64::from(delta));
                if delta == 0 {
                    expected.insert(k, next + 1);
                }
                n
            };
            let t = match *s {
                Spec::Pay {
                    from,
                    delta,
                    to,
                    amount,
                } => pay(key(from), nonce_for(from, delta), key(to), amount),
                Spec::Put {
                    from,
                    delta,
                    slot,
                    value,
                } => tx(
                    key(from),
                    nonce_for(from, delta),
                    Op::Put {
                        key: RecordKey::new(vec![slot]).unwrap(),
                        value: RecordValue::new(vec![value; 3]).unwrap(),
                    },
                ),
                Spec::Repeat(j) if !built.is_empty() => built[j % built.len()].clone(),
                Spec::Repeat(_) => continue,
            };
            built.push(t.clone());
            txs.push(t);
        }
        // Every fourth block is a null block when it would be empty anyway.
        let block = if txs.is_empty() && i % 4 == 0 {
            Block::null(Height(i as u64 + 1))
        } else {
            Block::new(Height(i as u64 + 1), 1000 + i as u64, txs)
        };
        let e = execute(&block, &state, &params()).unwrap();
        state.apply(&block, &e);
        blocks.push(block);
    }
    blocks
}

/// Executes `blocks` from genesis, checking conservation and nonce monotonicity after
/// each; returns the executions and the final state.
fn run(blocks: &[Block]) -> (Vec<Execution>, MemState) {
    let g = the_genesis();
    let supply: u128 = FUNDED.iter().map(|&(_, b)| u128::from(b)).sum();
    let mut state = MemState::genesis(&g);
    let mut execs = Vec::new();
    let mut applied = 0;
    for block in blocks {
        let before: HashMap<PublicKey, u64> =
            state.accounts().map(|(k, a)| (*k, a.nonce.0)).collect();
        let e = execute(block, &state, &params()).unwrap();
        state.apply(block, &e);
        applied += e.applied().count();
        assert_eq!(
            state.total_supply(),
            supply,
            "supply changed at {}",
            block.height()
        );
        for (k, n) in before {
            assert!(state.account(&k).unwrap().unwrap().nonce.0 >= n);
        }
        execs.push(e);
    }
    assert_eq!(state.applied_count(), applied);
    (execs, state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn supply_is_conserved_and_replay_is_deterministic(
        specs in vec(vec(spec(), 0..14), 1..10)
    ) {
        let blocks = build_blocks(&specs);
        let (first, state1) = run(&blocks);
        let (second, state2) = run(&blocks);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(&state1, &state2);
        // Distinct heights give distinct digests: the chain never repeats a state digest.
        let digests: std::collections::HashSet<_> =
            first.iter().map(|e| e.state_digest).collect();
        prop_assert_eq!(digests.len(), first.len());
    }
}
