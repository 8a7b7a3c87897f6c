//! Issue 22: a Byzantine replica cannot wear down the honest ones. Replica f floods its
//! peers while clients submit; the honest replicas keep committing (the liveness checker
//! runs at the end of every scenario) and what the flood draws from each stays within
//! its bound.

use stele_sim::{run, Behaviour, Outcome, Scenario};

fn ok(sc: &Scenario) -> Outcome {
    run(sc).unwrap_or_else(|v| panic!("{v}"))
}

fn rejected(o: &Outcome, label: &str) -> u64 {
    o.rejected.get(label).copied().unwrap_or(0)
}

fn wear(name: &'static str, seed: u64) -> Scenario {
    let mut sc = Scenario::named(name, seed, 4);
    sc.test_file = "wear";
    sc.quiet_at = 6_000;
    sc.txs_per_client = 30;
    sc
}

/// Replica 1 (f = 1) asks every peer for blocks and bodies 32 times over with each
/// STATUS and each vote, while honest replica 3 is down for 2.5 s and must then catch
/// up by state transfer beside the flood. Each honest replica answers the flooder
/// within its serving budget per interval of T and refuses the rest (counted); the
/// laggard's own budget is untouched, so it catches up.
#[test]
fn flooded_fetches_are_answered_within_the_serving_budget() {
    for seed in 0..3 {
        let mut sc = wear(
            "flooded_fetches_are_answered_within_the_serving_budget",
            seed,
        );
        sc.byzantine = vec![(1, Behaviour::FloodFetches)];
        sc.crashes = vec![(1_500, 3, 2_500)];
        let o = ok(&sc);
        assert!(
            rejected(&o, "rate_limited") > 0,
            "seed {seed}: the flood never reached the budget: {o:?}"
        );
        assert!(
            o.max_served_per_peer_interval <= o.serve_budget,
            "seed {seed}: {} bytes answered to one peer in one interval, budget {}",
            o.max_served_per_peer_interval,
            o.serve_budget
        );
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
        eprintln!(
            "seed {seed}: {} heights, {} fetches refused, at most {} bytes charged ({} encoded) per peer per interval, budget {}",
            o.heights,
            rejected(&o, "rate_limited"),
            o.max_served_per_peer_interval,
            o.max_served_encoded_per_peer_interval,
            o.serve_budget
        );
    }
}

/// Replica 1 (f = 1) follows each PREPARE and COMMIT with 32 more for other digests, and
/// as the primary of view 1 (primary 0 is cut off for 1.5 s to get there) each proposal
/// with 32 other blocks. Every honest replica records each slot once: never a second
/// Evidence action (in the node, a synced write) for a slot it already reported.
#[test]
fn flooded_evidence_is_recorded_once_per_slot() {
    for seed in 0..3 {
        let mut sc = wear("flooded_evidence_is_recorded_once_per_slot", seed);
        sc.byzantine = vec![(1, Behaviour::FloodEvidence)];
        sc.partitions = vec![(1_000, 2_500, vec![0])];
        let o = ok(&sc);
        assert!(o.view_changes > 0, "seed {seed}: {o:?}");
        assert!(
            o.evidence >= o.heights,
            "seed {seed}: the flood went unseen: {o:?}"
        );
        assert_eq!(
            o.evidence_repeats, 0,
            "seed {seed}: {} Evidence actions for slots already reported ({} in all)",
            o.evidence_repeats, o.evidence
        );
        assert!(
            o.heights_after_quiet_with_client_tx > 0,
            "seed {seed}: {o:?}"
        );
        eprintln!(
            "seed {seed}: {} heights, {} view changes, {} Evidence actions, {} refused as duplicates",
            o.heights,
            o.view_changes,
            o.evidence,
            rejected(&o, "duplicate")
        );
    }
}
