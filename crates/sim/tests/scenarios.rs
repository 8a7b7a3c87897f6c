//! Named scenarios: each a fault the protocol must survive, with what it must show.

use stele_sim::{run, Byzantine, Outcome, Scenario};

fn ok(sc: &Scenario) -> Outcome {
    run(sc).unwrap_or_else(|v| panic!("{v}"))
}

fn faulty(seed: u64, n: usize) -> Scenario {
    let mut sc = Scenario::calm(seed, n);
    sc.quiet_at = 6_000;
    sc.txs_per_client = 30;
    sc
}

#[test]
fn primary_crash_under_load() {
    for seed in 0..5 {
        let mut sc = faulty(seed, 4);
        sc.crashes = vec![(800, 0, 4_000)];
        let o = ok(&sc);
        assert!(
            o.view_changes > 0,
            "seed {seed}: the primary's crash must cause a view change: {o:?}"
        );
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
    }
}

#[test]
fn equivocating_primary() {
    for seed in 0..5 {
        let mut sc = faulty(seed, 4);
        sc.byzantine = vec![(0, Byzantine::Equivocate)];
        let o = ok(&sc);
        // Honest backups hold different blocks for the height, so no quorum forms: the
        // timer replaces the primary, and everything still commits (checked by `ok`).
        assert!(
            o.view_changes > 0,
            "seed {seed}: an equivocating primary must be replaced: {o:?}"
        );
        assert!(o.heights_after_quiet_with_client_tx > 0);
    }
}

#[test]
fn partition_two_two_then_heal() {
    for seed in 0..5 {
        let mut sc = faulty(seed, 4);
        sc.partitions = vec![(500, 4_000, vec![0, 1])];
        let o = ok(&sc);
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
    }
}

#[test]
fn twenty_percent_loss_with_duplication_and_reordering() {
    for seed in 0..5 {
        let mut sc = faulty(seed, 4);
        sc.loss = 0.2;
        sc.dup = 0.2;
        sc.max_delay = 150;
        let o = ok(&sc);
        assert!(
            o.rejected.get("duplicate").copied().unwrap_or(0) > 0,
            "duplicates must reach the engine: {o:?}"
        );
    }
}

#[test]
fn crash_mid_commit_and_restart() {
    for seed in 0..10 {
        let mut sc = faulty(seed, 4);
        // Down and up again while blocks are in flight.
        sc.crashes = vec![(300 + 137 * seed, (seed % 4) as usize, 200 + 50 * seed)];
        ok(&sc);
    }
}

#[test]
fn whole_cluster_crash_with_blocks_in_flight() {
    for seed in 0..10 {
        let mut sc = faulty(seed, 4);
        sc.whole_crash = Some(700 + 61 * seed);
        ok(&sc);
    }
}

#[test]
fn lagging_replica_catches_up_by_state_transfer() {
    for seed in 0..3 {
        let mut sc = faulty(seed, 4);
        sc.txs_per_client = 80;
        // Replica 3 hears nothing for most of the run: the others move several
        // checkpoints (K = 8) past it.
        sc.partitions = vec![(100, 5_500, vec![3])];
        let o = ok(&sc);
        assert!(o.heights > 3 * 16, "seed {seed}: {o:?}");
    }
}

#[test]
fn bad_new_view_is_rejected() {
    for seed in 0..5 {
        let mut sc = faulty(seed, 4);
        // The primary of view 0 crashes; the primary of view 1 lies in its NEW-VIEW.
        sc.crashes = vec![(500, 0, 5_000)];
        sc.byzantine = vec![(1, Byzantine::BadNewView)];
        let o = ok(&sc);
        assert!(
            o.rejected.get("bad_new_view").copied().unwrap_or(0) > 0,
            "seed {seed}: {o:?}"
        );
    }
}

#[test]
fn gapped_txs_and_same_nonce_pairs_cause_no_view_change() {
    for seed in 0..10 {
        let mut sc = Scenario::calm(seed, 4);
        sc.tricky_txs = true;
        sc.txs_per_client = 30;
        let o = ok(&sc);
        assert_eq!(o.view_changes, 0, "seed {seed}: {o:?}");
    }
}

#[test]
fn silent_byzantine_among_seven() {
    for seed in 0..3 {
        let mut sc = faulty(seed, 7);
        sc.byzantine = vec![(0, Byzantine::Silent), (4, Byzantine::BadVotes)];
        ok(&sc);
    }
}
