//! An idle primary proposes what one burst of inputs admitted as one block. Proposing
//! at each admitted tx sent the burst's first tx alone (a lone tx goes at once when no
//! block is in flight) and made the rest wait for that block to execute: at 500 tx/s in
//! chunks of 64, every chunk took two blocks, one of them with a single tx.

mod common;

use common::{four_validators, replica, transfer, verifier};
use stele_consensus::{Action, TxClass};
use stele_types::tx::tx_hash;
use stele_types::{Message, Transaction};

/// The tx counts of the proposals among `actions`, in order.
fn proposed(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Proposal(p)) => Some(p.body.txs.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_primary_proposes_a_burst_of_requests_as_one_block() {
    let g = four_validators("burst-test");
    let vs = g.validator_set();
    let mut engine = replica(&g, 0);
    engine.drain();
    let txs: Vec<Transaction> = (0..5).map(|n| transfer(&g, n)).collect();
    let verified = verifier(&g, &vs).check_txs(&txs).expect("the txs verify");

    // One burst: five client txs handed over one after another, then the drain.
    let now = 10;
    // Each is the sender's next nonce counting the pending ones before it, as the node
    // classifies them.
    for (tx, v) in txs.iter().zip(verified) {
        let unix = g.genesis_time_ms + now;
        engine.on_request(now, unix, tx_hash(tx), v, TxClass::Executable, true);
    }
    let actions = engine.drain();
    assert_eq!(
        proposed(&actions),
        vec![5],
        "one proposal with the whole burst: {actions:?}"
    );
    // The proposal's record precedes its broadcast (safety rule 3), and the relay of the
    // burst's client txs still goes last.
    let record = actions
        .iter()
        .position(|a| matches!(a, Action::Persist(_)))
        .expect("the PRE-PREPARE is persisted");
    let sent = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(Message::Proposal(_))))
        .expect("the PRE-PREPARE is sent");
    assert!(record < sent, "{actions:?}");
    assert!(
        matches!(actions.last(), Some(Action::Broadcast(Message::Relay(_)))),
        "{actions:?}"
    );
    // Nothing is left for a later block.
    engine.on_tick(1_000, g.genesis_time_ms + 1_000);
    assert!(proposed(&engine.drain()).is_empty());
}
