//! A validator that admits a client's txs relays them to the others, so the primary
//! can propose txs a client sent only to backups. The relay goes out with the actions
//! of the burst that admitted them: a relay held back for a timer made every tx that
//! reached the primary only by relay wait that long before it could be proposed.

mod common;

use common::{four_validators, replica, transfer, verifier};
use stele_consensus::{Action, Engine, TxClass};
use stele_types::tx::tx_hash;
use stele_types::{Genesis, Message, Transaction};

/// Hands `txs` to the engine as admitted requests at virtual time `now`.
fn request(engine: &mut Engine, g: &Genesis, txs: &[Transaction], from_client: bool, now: u64) {
    let vs = g.validator_set();
    let verified = verifier(g, &vs).check_txs(txs).expect("the txs verify");
    for (tx, v) in txs.iter().zip(verified) {
        let unix = g.genesis_time_ms + now;
        engine.on_request(now, unix, tx_hash(tx), v, TxClass::Executable, from_client);
    }
}

/// The txs of every relay among `actions`, in order.
fn relayed(actions: &[Action]) -> Vec<Transaction> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(Message::Relay(r)) => Some(r.txs.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn client_txs_are_relayed_with_the_actions_of_the_burst_that_admitted_them() {
    let g = four_validators("relay-test");
    let mut engine = replica(&g, 1);
    engine.drain();
    let txs: Vec<Transaction> = (0..3).map(|n| transfer(&g, n)).collect();

    request(&mut engine, &g, &txs, true, 10);
    let actions = engine.drain();
    assert_eq!(
        relayed(&actions),
        txs,
        "the burst's drain relays its three client txs, in order"
    );
    let relays = actions
        .iter()
        .filter(|a| matches!(a, Action::Broadcast(Message::Relay(_))))
        .count();
    assert_eq!(relays, 1, "one relay for the burst: {actions:?}");
    assert!(
        matches!(actions.last(), Some(Action::Broadcast(Message::Relay(_)))),
        "the relay goes after the burst's other actions, behind any record they need"
    );
    // Sent once: nothing is left to relay at the next drain or timer.
    assert!(relayed(&engine.drain()).is_empty());
    engine.on_tick(1_000, g.genesis_time_ms + 1_000);
    assert!(relayed(&engine.drain()).is_empty());

    // A tx another validator relayed is not relayed again.
    let more = [transfer(&g, 3)];
    request(&mut engine, &g, &more, false, 1_000);
    engine.on_tick(2_000, g.genesis_time_ms + 2_000);
    assert!(relayed(&engine.drain()).is_empty());
}
