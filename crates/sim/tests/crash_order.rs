//! Crashes inside the node's group-commit step list (issue 21): the simulator drains
//! each replica through `stele_consensus::group_commit`, takes inputs in bursts as the
//! node's loop does, and crashes a replica between two steps of a drain or inside a
//! grouped write. Safety rule 3 must hold at every such point: a restarted replica never
//! votes in a view it left, nor signs anything that conflicts with what it sent.

use stele_sim::{run, CrashPoint, DropRule, Outcome, Scenario, StepCrash};

fn ok(sc: &Scenario) -> Outcome {
    run(sc).unwrap_or_else(|v| panic!("{v}"))
}

/// n = 4. Replica 2, primary of view 2, hears nothing of views 1 and 2 until 3 s, then
/// all of it in one burst: the VIEW-CHANGE(1)s, NEW-VIEW(1) (carrying a stable checkpoint
/// above its own, since it never saw a CHECKPOINT), then VIEW-CHANGE(2)s that make it
/// join view 2 and complete a quorum. One drain then accepts NEW-VIEW(1), writes the
/// checkpoint, sends VIEW-CHANGE(2) and NEW-VIEW(2). It crashes right after the step
/// that broadcasts NEW-VIEW(2) and restarts 100 ms later from what was durable; then
/// primary 1's view-1 PRE-PREPAREs, held on the way to it, arrive.
fn new_view_burst(seed: u64) -> Scenario {
    let mut sc = Scenario::named("new_view_burst_then_crash_after_its_send", seed, 4);
    sc.quiet_at = 6_000;
    sc.txs_per_client = 30;
    sc.burst_ms = 1;
    let release = 3_000;
    sc.drops = vec![
        // Primary 0 stops proposing: view 0 ends everywhere.
        DropRule {
            from_ms: 900,
            to_ms: 6_000,
            senders: vec![0],
            kinds: vec!["proposal"],
            ..DropRule::default()
        },
        // Primary 1's proposals do not reach 0 and 3: they leave view 1 for view 2.
        DropRule {
            to_ms: 6_000,
            senders: vec![1],
            receivers: vec![0, 3],
            kinds: vec!["proposal"],
            view: Some(1),
            ..DropRule::default()
        },
        // ... and reach 2 only after its restart.
        DropRule {
            to_ms: release + 200,
            senders: vec![1],
            receivers: vec![2],
            kinds: vec!["proposal"],
            view: Some(1),
            hold_until: Some(release + 200),
            ..DropRule::default()
        },
        // Replica 2 takes the view change in one burst at `release`.
        DropRule {
            to_ms: release,
            receivers: vec![2],
            kinds: vec!["view_change", "new_view"],
            hold_until: Some(release),
            ..DropRule::default()
        },
        // Its stable checkpoint stays at genesis: NEW-VIEW(1) brings a higher one.
        DropRule {
            to_ms: 6_000,
            receivers: vec![2],
            kinds: vec!["checkpoint", "checkpoint_certificate"],
            ..DropRule::default()
        },
    ];
    sc.step_crashes = vec![StepCrash {
        replica: 2,
        from_ms: release,
        at: CrashPoint::AfterSend("new_view"),
        down: 100,
    }];
    sc
}

/// On main the drain ran: write NEW-VIEW(1), send NEW-VIEW(2), write the checkpoint,
/// write VIEW-CHANGE(2) and NEW-VIEW(2) (`build_new_view` put its broadcast after the
/// first NEW-VIEW record in the drain, NEW-VIEW(1)'s). Restarted active in view 1 though
/// it had signed VIEW-CHANGE(2), replica 2 PREPAREd primary 1's view-1 proposal ("no vote
/// in a left view"); the durability checker now catches the send itself.
#[test]
fn new_view_burst_then_crash_after_its_send() {
    for seed in 0..5 {
        let o = ok(&new_view_burst(seed));
        assert!(
            o.view_changes >= 3,
            "seed {seed}: views 1 and 2 at least: {o:?}"
        );
    }
}

/// The same burst, with replica 2 crashing at every point of the node's step list in
/// turn: after each step of the drain, and inside its grouped writes (keeping 0, 1, 2 or
/// 3 records of a larger write). Every point must restart it into a state consistent
/// with what it sent.
#[test]
fn new_view_burst_crash_at_every_step() {
    let points = (1..20)
        .map(CrashPoint::AfterSteps)
        .chain((0..4).map(CrashPoint::Torn));
    for seed in [0, 1, 5] {
        for at in points.clone() {
            let mut sc = new_view_burst(seed);
            sc.name = "new_view_burst_crash_at_every_step";
            sc.step_crashes[0].at = at;
            if let Err(v) = run(&sc) {
                panic!("crash point {at:?}: {v}");
            }
        }
    }
}
