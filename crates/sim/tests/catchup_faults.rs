//! Issue 21's retransmission and catch-up faults, each reproduced by a targeted scenario
//! (the random campaign does not reach them): lost CHECKPOINT votes, lying STATUS
//! messages, and messages buffered just above the window.

use stele_sim::{run, Behaviour, DropRule, Outcome, Scenario};

fn ok(sc: &Scenario) -> Outcome {
    // The simulator's replay command names the `scenarios` test file; these live here.
    run(sc).unwrap_or_else(|v| {
        panic!(
            "{}",
            v.to_string()
                .replace("--test scenarios", "--test catchup_faults")
        )
    })
}

/// Replica 3 is silent; during the first 6 s the CHECKPOINTs 0→1, 1→2 and 2→0 are lost.
/// Each honest replica then holds two of the three honest votes for every checkpoint,
/// one short of q = 3: none becomes stable, deliveries reach h + L and proposals stop at
/// the window, and every view change re-proposes without re-executing, so no replica
/// makes a new CHECKPOINT. Votes sent once and never again would keep the window shut
/// for good, long after the drops end; STATUS answers carry the lost votes.
#[test]
fn lost_checkpoint_votes_are_retransmitted() {
    for seed in 0..5 {
        let sc = lost_checkpoints("lost_checkpoint_votes_are_retransmitted", seed);
        let o = ok(&sc);
        // The window (L = 16) must have moved: more heights than one window.
        assert!(o.heights > 2 * 16, "seed {seed}: {o:?}");
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
    }
}

/// As above, and every replica crashes and restarts once the votes are lost: nobody
/// holds a CHECKPOINT vote in memory any more. Each must count its own again from its
/// committed chain (the others' come back with their STATUS answers), or the three
/// honest replicas stay one vote short for good.
#[test]
fn restart_rebuilds_own_checkpoint_votes() {
    for seed in 0..5 {
        let mut sc = lost_checkpoints("restart_rebuilds_own_checkpoint_votes", seed);
        sc.whole_crash = Some(4_000 + 200 * seed);
        let o = ok(&sc);
        assert!(o.heights > 2 * 16, "seed {seed}: {o:?}");
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
    }
}

fn lost_checkpoints(name: &'static str, seed: u64) -> Scenario {
    let mut sc = Scenario::named(name, seed, 4);
    sc.quiet_at = 6_000;
    sc.txs_per_client = 60;
    sc.byzantine = vec![(3, Behaviour::Silent)];
    sc.drops = [(0, 1), (1, 2), (2, 0)]
        .into_iter()
        .map(|(from, to)| DropRule {
            from_ms: 0,
            to_ms: 6_000,
            senders: vec![from],
            receivers: vec![to],
            kinds: vec!["checkpoint"],
            ..DropRule::default()
        })
        .collect();
    sc
}

/// n = 7 (f = 2): replica 6 lies in every STATUS (view, executed height and stable
/// checkpoint all `u64::MAX`), replica 3 loses its disk and recovers. The liar plus the
/// recovering replica stay within f. Bounds taken as the maximum of the first q claims
/// would be (u64::MAX, u64::MAX): the gate could never open. c_r comes only from a valid
/// proof and m is the (f+1)-th highest view claimed, so one liar cannot lock it.
#[test]
fn lying_status_cannot_lock_a_recovering_replica_out() {
    for seed in 0..4 {
        let mut sc = Scenario::named("lying_status_cannot_lock_a_recovering_replica_out", seed, 7);
        sc.quiet_at = 6_000;
        sc.txs_per_client = 30;
        sc.byzantine = vec![(6, Behaviour::LyingStatus)];
        sc.wipes = vec![(1_500 + 100 * seed, 3, 500)];
        // The gate opens only in a view above m: the primary of view 0 crashes later.
        sc.crashes = vec![(3_500, 0, 1_500)];
        let o = ok(&sc);
        assert!(o.held_by_recovery > 0, "seed {seed}: {o:?}");
        assert_eq!(
            o.recovered,
            vec![3],
            "seed {seed}: it must vote again: {o:?}"
        );
        assert!(o.votes_after_recovery > 0, "seed {seed}: {o:?}");
    }
}

/// A lagging replica catches up by state transfer while a liar claims, in every STATUS,
/// to have executed `u64::MAX`: the claim may start a fetch, never pin one.
#[test]
fn lying_status_does_not_pin_state_transfer() {
    for seed in 0..3 {
        let mut sc = Scenario::named("lying_status_does_not_pin_state_transfer", seed, 4);
        sc.quiet_at = 6_000;
        sc.txs_per_client = 80;
        sc.byzantine = vec![(2, Behaviour::LyingStatus)];
        // Replica 3 hears nothing for most of the run: the others move several
        // checkpoints (K = 8) past it.
        sc.partitions = vec![(100, 5_500, vec![3])];
        let o = ok(&sc);
        assert!(o.heights > 3 * 16, "seed {seed}: {o:?}");
    }
}
