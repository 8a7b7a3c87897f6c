//! A signature binds the chain it was made for, genesis and all: a new chain that reuses
//! an old chain's id (a testnet written again, a chain restarted from a new genesis)
//! accepts nothing that was signed for the old one, even where the same keys sign on
//! both.

mod common;

use common::{four_validators, transfer, validator, verifier};
use stele_consensus::Reject;
use stele_crypto::{Digest, Ed25519, KeyPair, Signed};
use stele_types::{
    Amount, BlockReceipt, Genesis, GenesisAccount, Height, Message, Prepare, ReplicaId, ViewNumber,
};

/// The chain as first written: four validators, one funded account.
fn old_chain() -> Genesis {
    four_validators("stele-testnet")
}

/// The chain written again under the same id, with the same validators and one more
/// funded account.
fn new_chain() -> Genesis {
    let mut g = old_chain();
    g.accounts.push(GenesisAccount {
        key: KeyPair::from_seed([101; 32]).public(),
        balance: Amount(1_000),
    });
    g.validate().expect("the new genesis is valid");
    assert_eq!(g.chain_id, old_chain().chain_id, "the id is reused");
    assert_ne!(g.digest(), old_chain().digest(), "the genesis is not");
    g
}

fn transfer_signed_for(g: &Genesis) -> stele_types::Transaction {
    transfer(g, 0)
}

fn prepare_signed_for(g: &Genesis) -> Message {
    let p = Prepare {
        view: ViewNumber(0),
        height: Height(1),
        digest: Digest::of(b"block 1"),
        replica: ReplicaId(1),
    };
    Message::Prepare(Signed::sign(p, &g.chain_binding(), &validator(1)))
}

#[test]
fn a_tx_signed_for_an_old_genesis_is_refused_by_a_new_chain_with_the_same_id() {
    let (old, new) = (old_chain(), new_chain());
    let (old_vs, new_vs) = (old.validator_set(), new.validator_set());
    let tx = transfer_signed_for(&old);

    // The tx is good where it was signed, so a refusal below is the binding's doing.
    assert!(verifier(&old, &old_vs)
        .check_txs(std::slice::from_ref(&tx))
        .is_ok());
    assert_eq!(
        verifier(&new, &new_vs)
            .check_txs(std::slice::from_ref(&tx))
            .err(),
        Some(Reject::BadTxSignature { index: 0 }),
        "a tx signed for the old genesis verified on the new chain"
    );
    // Relayed between validators, it is refused the same way.
    let relay = Message::Relay(stele_types::TxRelay { txs: vec![tx] });
    assert!(matches!(
        verifier(&new, &new_vs).verify(ReplicaId(2), relay),
        Err(Reject::BadTxSignature { index: 0 })
    ));
}

#[test]
fn a_vote_signed_for_an_old_genesis_is_refused_by_a_new_chain_with_the_same_id() {
    let (old, new) = (old_chain(), new_chain());
    let (old_vs, new_vs) = (old.validator_set(), new.validator_set());

    assert!(verifier(&old, &old_vs)
        .verify(ReplicaId(1), prepare_signed_for(&old))
        .is_ok());
    let verdict = verifier(&new, &new_vs).verify(ReplicaId(1), prepare_signed_for(&old));
    assert!(
        matches!(verdict, Err(Reject::BadSignature(_))),
        "a PREPARE signed for the old genesis was not refused on the new chain: {verdict:?}"
    );
    // What the new chain's replicas sign still verifies there.
    assert!(verifier(&new, &new_vs)
        .verify(ReplicaId(1), prepare_signed_for(&new))
        .is_ok());
}

#[test]
fn a_receipt_signed_for_an_old_genesis_is_refused_by_a_new_chains_validator_set() {
    let (old, new) = (old_chain(), new_chain());
    let receipt = Signed::sign(
        BlockReceipt {
            replica: ReplicaId(2),
            height: Height(3),
            block_digest: Digest::of(b"block 3"),
            results_root: Digest::of(b"results 3"),
            state_digest: Digest::of(b"state 3"),
        },
        &old.chain_binding(),
        &validator(2),
    );
    assert!(old
        .validator_set()
        .verify(receipt.clone(), &Ed25519)
        .is_ok());
    assert!(
        new.validator_set().verify(receipt, &Ed25519).is_err(),
        "a receipt signed for the old genesis verified against the new chain's validators"
    );
}
