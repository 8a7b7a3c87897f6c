//! Every checker bites: each test breaks the cluster on purpose, outside the fault model
//! (f+1 colluders, or a `Sabotage`), and sees the run fail on exactly that checker. A
//! checker that stopped looking would let its test pass the run and fail the assert.

use stele_sim::{run, Behaviour, Check, Outcome, Sabotage, Scenario, Violation};

fn scenario(name: &'static str, seed: u64, sabotage: Sabotage) -> Scenario {
    let mut sc = Scenario::named(name, seed, 4);
    sc.sabotage = Some(sabotage);
    sc
}

/// The run fails, on `check`.
fn fails_on(check: Check, sc: &Scenario) -> Violation {
    match run(sc) {
        Err(v) if v.check == check => {
            eprintln!("{v}");
            v
        }
        Err(v) => panic!(
            "expected a {check:?} violation, the {:?} checker failed: {v}",
            v.check
        ),
        Ok(o) => panic!("expected a {check:?} violation, the run passed: {o:?}"),
    }
}

fn passes(sc: &Scenario) -> Outcome {
    run(sc).unwrap_or_else(|v| panic!("without the sabotage the run must pass: {v}"))
}

/// An equivocating primary and an accomplice voting for both blocks: f+1 = 2 colluders
/// at n = 4, beyond what the protocol promises. Honest replicas commit different blocks.
#[test]
fn agreement_checker_bites() {
    let mut caught = 0;
    for seed in 0..20 {
        let mut sc = Scenario::named("agreement_checker_bites", seed, 4);
        sc.byzantine = vec![(0, Behaviour::Equivocate), (3, Behaviour::Accomplice)];
        if let Err(v) = run(&sc) {
            assert_eq!(v.check, Check::Agreement, "{v}");
            caught += 1;
        }
    }
    assert!(caught > 0, "20 seeds of f+1 colluders and no violation");
}

/// A tx no client submitted is committed: as if a replica made txs up.
#[test]
fn validity_checker_bites() {
    let sc = scenario("validity_checker_bites", 1, Sabotage::UnsubmittedTx);
    let v = fails_on(Check::Validity, &sc);
    assert!(v.detail.contains("no client submitted"), "{v}");
}

/// A replica restarts without the last three blocks it had committed.
#[test]
fn durability_checker_bites() {
    let mut sc = scenario(
        "durability_checker_bites",
        1,
        Sabotage::RestartLosesBlocks {
            replica: 2,
            blocks: 3,
        },
    );
    sc.quiet_at = 3_000;
    sc.crashes = vec![(1_500, 2, 500)];
    let v = fails_on(Check::Durability, &sc);
    assert_eq!(v.at_ms, 2_000, "{v}");
    sc.sabotage = None;
    passes(&sc);
}

/// Replica 1, cut off, leaves view 0 by VIEW-CHANGE; it crashes, and restarts without
/// its VIEW-CHANGE record: active in view 0 again, it votes there once it hears the
/// others, who never left view 0.
#[test]
fn no_vote_in_a_left_view_checker_bites() {
    let mut sc = scenario(
        "no_vote_in_a_left_view_checker_bites",
        1,
        Sabotage::RestartLosesViewChanges { replica: 1 },
    );
    sc.quiet_at = 4_000;
    sc.partitions = vec![(200, 3_000, vec![1])];
    sc.crashes = vec![(2_800, 1, 400)];
    fails_on(Check::NoVoteInLeftView, &sc);
    sc.sabotage = None;
    passes(&sc);
}

/// An honest backup signs a second PREPARE, for another digest, next to each of its own.
#[test]
fn no_equivocation_checker_bites() {
    let sc = scenario(
        "no_equivocation_checker_bites",
        1,
        Sabotage::SecondVote {
            replica: 2,
            kind: "prepare",
        },
    );
    fails_on(Check::NoEquivocation, &sc);
}

/// An honest replica signs a second CHECKPOINT, over another state digest, for a height.
#[test]
fn checkpoint_equivocation_checker_bites() {
    let sc = scenario(
        "checkpoint_equivocation_checker_bites",
        1,
        Sabotage::SecondVote {
            replica: 2,
            kind: "checkpoint",
        },
    );
    let v = fails_on(Check::CheckpointEquivocation, &sc);
    assert_eq!(v.rule, "checkpoint equivocation", "{v}");
}

/// An honest replica signs every CHECKPOINT over one wrong state digest: consistent with
/// itself, it disagrees with the other honest replicas.
#[test]
fn checkpoint_equivocation_checker_bites_on_two_honest_digests() {
    let sc = scenario(
        "checkpoint_equivocation_checker_bites_on_two_honest_digests",
        1,
        Sabotage::WrongCheckpointDigest { replica: 3 },
    );
    let v = fails_on(Check::CheckpointEquivocation, &sc);
    assert_eq!(
        v.rule, "checkpoint equivocation (two honest digests)",
        "{v}"
    );
}

/// Every message is lost from 1 s on, for good: nothing submitted later is applied.
#[test]
fn liveness_checker_bites() {
    let sc = scenario(
        "liveness_checker_bites",
        1,
        Sabotage::Blackout { from_ms: 1_000 },
    );
    fails_on(Check::Liveness, &sc);
}

/// A replica delivers blocks under commit certificates with a broken signature.
#[test]
fn certificates_checker_bites() {
    let sc = scenario(
        "certificates_checker_bites",
        1,
        Sabotage::BrokenCommitSignature { replica: 1 },
    );
    let v = fails_on(Check::Certificates, &sc);
    assert!(v.detail.contains("commit certificate"), "{v}");
}

/// Every rule maps to its checker; an unknown one to none.
#[test]
fn rules_name_their_checker() {
    for (rule, check) in [
        ("agreement", Check::Agreement),
        ("agreement (state)", Check::Agreement),
        ("validity (applied twice)", Check::Validity),
        ("durability", Check::Durability),
        ("no equivocation", Check::NoEquivocation),
        ("no vote in a left view", Check::NoVoteInLeftView),
        ("bounded memory", Check::BoundedMemory),
        ("liveness", Check::Liveness),
        ("certificates", Check::Certificates),
        (
            "checkpoint equivocation (two honest digests)",
            Check::CheckpointEquivocation,
        ),
        ("durable before send", Check::DurableBeforeSend),
        ("bounded run", Check::BoundedRun),
        ("agreements", Check::Other),
        ("something new", Check::Other),
    ] {
        assert_eq!(Check::of(rule), check, "{rule}");
    }
}
