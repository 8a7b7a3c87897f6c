//! Issue 21's proposal faults, each reproduced by a scripted history: what a restart
//! must remember of its accepted PRE-PREPAREs, how many bodies a height keeps, and the
//! timestamp rule of the normal case.

use stele_sim::{run, Behaviour, DropRule, Outcome, Scenario, ScriptedTx};

fn ok(sc: &Scenario) -> Outcome {
    run(sc).unwrap_or_else(|v| panic!("{v}"))
}

/// One tx of client 0 at `at`, sent to every replica.
fn tx_everywhere(n: usize, at: u64, nonce: u64) -> ScriptedTx {
    ScriptedTx {
        at,
        client: 0,
        nonce,
        targets: (0..n).collect(),
    }
}

/// The primary proposes height 1; the PRE-PREPARE reaches only backup 3, and the primary
/// crashes and restarts. The STATUS of the stuck backups 1 and 2 asks it to re-send its
/// PRE-PREPARE, which it can only do if its restart rebuilt the proposal from its durable
/// `PrePrepareSent` record. A primary that forgot it leaves the height to the view-change
/// timer.
#[test]
fn restarted_primary_resends_its_in_flight_pre_prepare() {
    for seed in 0..4 {
        let mut sc = Scenario::named(
            "restarted_primary_resends_its_in_flight_pre_prepare",
            seed,
            4,
        );
        sc.clients = 2;
        sc.params.view_timeout_ms = 6_000;
        sc.params.max_view_timeout_ms = 12_000;
        sc.script = vec![tx_everywhere(4, 0, 0)];
        sc.drops = vec![DropRule {
            from_ms: 0,
            to_ms: 200,
            senders: vec![0],
            receivers: vec![1, 2],
            kinds: vec!["proposal"],
            ..DropRule::default()
        }];
        sc.crashes = vec![(60, 0, 200)];
        sc.quiet_at = 300;
        let o = ok(&sc);
        assert!(o.heights >= 1, "seed {seed}: {o:?}");
        assert_eq!(
            o.view_changes, 0,
            "seed {seed}: the restarted primary must re-send its PRE-PREPARE: {o:?}"
        );
    }
}

/// Replica 2 is silent, so height 1 needs backup 3's PREPARE. Backup 3 accepts the
/// PRE-PREPARE and prepares, but its PREPARE is lost; it crashes and restarts after the
/// skew bound has passed since the proposal. Rebuilt from its `PrepareSent` record it
/// re-sends that PREPARE, and the primary's retransmitted PRE-PREPARE is the one it
/// already accepted (no skew check). A backup that forgot it refuses the old
/// PRE-PREPARE as skewed and the height waits for the view-change timer.
#[test]
fn restarted_backup_keeps_its_accepted_pre_prepare() {
    for seed in 0..4 {
        let mut sc = Scenario::named("restarted_backup_keeps_its_accepted_pre_prepare", seed, 4);
        sc.clients = 2;
        sc.byzantine = vec![(2, Behaviour::Silent)];
        sc.params.clock_skew_ms = 500;
        sc.params.view_timeout_ms = 6_000;
        sc.params.max_view_timeout_ms = 12_000;
        sc.script = vec![tx_everywhere(4, 0, 0)];
        sc.drops = vec![DropRule {
            from_ms: 0,
            to_ms: 200,
            senders: vec![3],
            kinds: vec!["prepare"],
            ..DropRule::default()
        }];
        sc.crashes = vec![(100, 3, 1_000)];
        sc.quiet_at = 300;
        let o = ok(&sc);
        assert!(o.heights >= 1, "seed {seed}: {o:?}");
        assert_eq!(
            o.rejected.get("skew").copied().unwrap_or(0),
            0,
            "seed {seed}: the retransmitted PRE-PREPARE was accepted before the crash: {o:?}"
        );
        assert_eq!(o.view_changes, 0, "seed {seed}: {o:?}");
    }
}

/// n = 13, f = 4: the primaries of views 0 to 3 are Byzantine and send their proposals to
/// honest replicas 4 to 10 only. Seven backups never prepare (q − 1 = 8), so each view
/// times out, and replicas 4 to 10 end view 3 holding four bodies for height 1, one per
/// view, each with a PREPARE of theirs. The honest primary of view 4 proposes a fifth:
/// refused by a cap of four bodies per height (its own proposal's body included), it
/// stalls view 4 and every honest view after it at that height. The body of a
/// PRE-PREPARE this replica accepted, or of anything it signed, is never refused.
#[test]
fn a_fifth_body_for_one_height_is_kept_when_accepted() {
    // Honest replicas 4..=10 get the proposals; 11 and 12 and the other liars do not.
    let peers: u64 = (4..=10).map(|r| 1u64 << r).sum();
    for seed in 0..2 {
        let mut sc = Scenario::named(
            "a_fifth_body_for_one_height_is_kept_when_accepted",
            seed,
            13,
        );
        sc.clients = 2;
        sc.script = vec![tx_everywhere(13, 0, 0), tx_everywhere(13, 5, 1)];
        sc.byzantine = (0..4)
            .map(|r| (r, Behaviour::ProposeToSome { peers }))
            .collect();
        let o = ok(&sc);
        assert!(o.heights >= 1, "seed {seed}: {o:?}");
        assert!(
            o.view_changes >= 4 * 9,
            "seed {seed}: views 1 to 4 at every honest replica: {o:?}"
        );
    }
}

/// The primary of view 0 dates each block at an even height 2 s earlier than its clock:
/// below the block under it, yet within the skew bound of arrival. A backup must refuse
/// a fresh proposal dated no later than the highest non-null block it knows below it
/// (DESIGN.md, normal case), so no committed block is dated before the one under it.
#[test]
fn backups_refuse_a_proposal_dated_before_the_block_below() {
    for seed in 0..4 {
        let mut sc = Scenario::named(
            "backups_refuse_a_proposal_dated_before_the_block_below",
            seed,
            4,
        );
        sc.quiet_at = 3_000;
        sc.byzantine = vec![(0, Behaviour::Redate { shift_ms: -2_000 })];
        let o = ok(&sc);
        assert!(o.heights >= 2, "seed {seed}: {o:?}");
        assert_eq!(o.non_monotonic_timestamps, 0, "seed {seed}: {o:?}");
        assert!(
            o.rejected.get("timestamp").copied().unwrap_or(0) > 0,
            "seed {seed}: the backdated proposals must be refused: {o:?}"
        );
        assert!(
            o.view_changes > 0,
            "seed {seed}: the liar is replaced: {o:?}"
        );
    }
}

/// The primary of view 0 dates height 2 four seconds ahead (within the skew bound), and
/// only replica 1 gets that proposal: it never commits. Replica 1 leads view 1 and
/// proposes height 2 afresh. Its timestamp follows its clock and the blocks below
/// height 2, never the stale proposal, so the committed block is not dated seconds
/// ahead of the clocks.
#[test]
fn a_stale_proposal_does_not_date_the_next_block() {
    for seed in 0..4 {
        let mut sc = Scenario::named("a_stale_proposal_does_not_date_the_next_block", seed, 4);
        sc.clients = 2;
        sc.script = vec![tx_everywhere(4, 0, 0), tx_everywhere(4, 500, 1)];
        sc.byzantine = vec![(0, Behaviour::Redate { shift_ms: 4_000 })];
        sc.drops = vec![DropRule {
            from_ms: 300,
            to_ms: 3_000,
            senders: vec![0],
            receivers: vec![2, 3],
            kinds: vec!["proposal"],
            ..DropRule::default()
        }];
        sc.quiet_at = 3_000;
        let o = ok(&sc);
        assert_eq!(o.heights, 2, "seed {seed}: {o:?}");
        assert!(o.view_changes > 0, "seed {seed}: {o:?}");
        assert!(
            o.max_timestamp_lead_ms < 1_000,
            "seed {seed}: a block dated {} ms ahead: {o:?}",
            o.max_timestamp_lead_ms
        );
    }
}

/// The random campaign's faults (crashes, partitions, view changes with null blocks,
/// state transfer, one Byzantine replica) never commit a block dated no later than the
/// one below it, nor one dated ahead of the clocks by more than their spread and the
/// network's delay. Where the campaign moves a clock (`clock_steps`) or a Byzantine
/// primary redates ahead, a block may lead by that much more (up to the skew bound): a
/// proposal within the skew bound of its backups is valid however wrong its primary's
/// clock.
#[test]
fn committed_timestamps_increase_under_random_faults() {
    for seed in 0..150 {
        let sc = Scenario::random(seed);
        let o = run(&sc).unwrap_or_else(|v| panic!("{v}"));
        assert_eq!(o.non_monotonic_timestamps, 0, "seed {seed}: {o:?}");
        let clocks = sc
            .clock_steps
            .iter()
            .map(|(_, _, off)| 2 * off.unsigned_abs())
            .max()
            .unwrap_or(0);
        let redate = sc
            .byzantine
            .iter()
            .filter_map(|(_, b)| match b {
                // Its shifts add up over the heights it leads, up to the skew bound.
                Behaviour::Redate { shift_ms } if *shift_ms > 0 => Some(sc.params.clock_skew_ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let bound = 1_000 + clocks.max(redate);
        assert!(o.max_timestamp_lead_ms < bound, "seed {seed}: {o:?}");
    }
}
