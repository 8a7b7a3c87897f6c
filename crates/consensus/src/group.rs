//! Group commit: the order in which a driver carries out one drain of actions.
//!
//! The node writes a drain's consensus records in one synced batch instead of syncing
//! each on its own (one sync per record caps one-tx blocks near 60 a second). The step
//! list lives here, beside the engine, so that the node and the simulator run the very
//! same grouping: the simulator crashes a replica between any two of these steps.

use stele_types::DurableEntry;

use crate::Action;

/// One step of a drain, as a driver carries it out.
#[derive(Debug)]
pub enum Step {
    /// Consensus records, written in one synced batch.
    Records(Vec<DurableEntry>),
    /// Any other action, carried out alone (a `PersistCheckpoint` is its own synced write).
    Do(Action),
}

/// A drain's actions as group commit runs them: within each stretch between stable
/// checkpoints, every `Persist` of the stretch first as one `Records` step, then the
/// stretch's other actions in their order; each `PersistCheckpoint` where it was.
///
/// Contract (safety rule 3, whatever the grouping): every action that leaves the replica
/// comes after every `Persist` and `PersistCheckpoint` emitted before it; sends keep their
/// order; a stable checkpoint (which discards the log below it) is never crossed by a
/// record. A record written earlier than emitted is only earlier.
pub fn group_commit(actions: Vec<Action>) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut records = Vec::new();
    let mut rest = Vec::new();
    let flush = |steps: &mut Vec<Step>, records: &mut Vec<DurableEntry>, rest: &mut Vec<Action>| {
        if !records.is_empty() {
            steps.push(Step::Records(std::mem::take(records)));
        }
        steps.extend(rest.drain(..).map(Step::Do));
    };
    #[cfg(debug_assertions)]
    let shape: Vec<Kind> = actions.iter().map(Kind::of).collect();
    for a in actions {
        match a {
            Action::Persist(e) => records.extend(e),
            Action::PersistCheckpoint(_) => {
                flush(&mut steps, &mut records, &mut rest);
                steps.push(Step::Do(a));
            }
            other => rest.push(other),
        }
    }
    flush(&mut steps, &mut records, &mut rest);
    #[cfg(debug_assertions)]
    if let Err(e) = check_order(&shape, &steps) {
        panic!("group commit broke its contract: {e}");
    }
    steps
}

/// What matters of an action for the order of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Persist`, with its number of records.
    Write(usize),
    /// A checkpoint write.
    Checkpoint,
    /// Anything a peer can see: `Send`, `Broadcast`, `ServeBlocks`.
    Send,
    /// Everything else.
    Other,
}

impl Kind {
    /// The kind of an action.
    pub fn of(a: &Action) -> Kind {
        match a {
            Action::Persist(e) => Kind::Write(e.len()),
            Action::PersistCheckpoint(_) => Kind::Checkpoint,
            Action::Send(..) | Action::Broadcast(_) | Action::ServeBlocks { .. } => Kind::Send,
            _ => Kind::Other,
        }
    }
}

/// Checks a step list against the drain it came from (`emitted`, the kinds of the
/// actions in emission order): every send comes after every write emitted before it,
/// sends keep their order, and no record crosses a checkpoint. `Err` says where.
pub fn check_order(emitted: &[Kind], steps: &[Step]) -> Result<(), String> {
    // Records and sends are matched to the emitted actions in order: the i-th record of
    // the steps is the i-th record emitted, the j-th send the j-th send emitted.
    let record_at: Vec<usize> = emitted
        .iter()
        .enumerate()
        .flat_map(|(i, k)| match k {
            Kind::Write(n) => vec![i; *n],
            _ => vec![],
        })
        .collect();
    let index_of = |kind: Kind| -> Vec<usize> {
        emitted
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == kind)
            .map(|(i, _)| i)
            .collect()
    };
    let sends_at = index_of(Kind::Send);
    let checkpoints_at = index_of(Kind::Checkpoint);
    // Emitted writes (records and checkpoints), by emission index: written yet?
    let mut written = vec![true; emitted.len()];
    for &i in record_at.iter().chain(&checkpoints_at) {
        written[i] = false;
    }
    let mut lowest_unwritten = 0;
    let (mut records, mut sends, mut checkpoints) = (0, 0, 0);
    for (p, step) in steps.iter().enumerate() {
        match step {
            Step::Records(e) => {
                for _ in e {
                    let i = *record_at
                        .get(records)
                        .ok_or(format!("step {p}: more records than emitted"))?;
                    if checkpoints_at.get(checkpoints).is_some_and(|&c| c < i) {
                        return Err(format!(
                            "step {p}: a record emitted at {i} crosses the checkpoint emitted at {}",
                            checkpoints_at[checkpoints]
                        ));
                    }
                    written[i] = true;
                    records += 1;
                }
            }
            Step::Do(a) => match Kind::of(a) {
                Kind::Checkpoint => {
                    let i = *checkpoints_at
                        .get(checkpoints)
                        .ok_or(format!("step {p}: more checkpoints than emitted"))?;
                    while lowest_unwritten < i && written[lowest_unwritten] {
                        lowest_unwritten += 1;
                    }
                    if lowest_unwritten < i {
                        return Err(format!(
                            "step {p}: the checkpoint emitted at {i} is written before the record emitted at {lowest_unwritten}"
                        ));
                    }
                    written[i] = true;
                    checkpoints += 1;
                }
                Kind::Send => {
                    let j = *sends_at
                        .get(sends)
                        .ok_or(format!("step {p}: more sends than emitted"))?;
                    while lowest_unwritten < written.len() && written[lowest_unwritten] {
                        lowest_unwritten += 1;
                    }
                    if lowest_unwritten < j {
                        return Err(format!(
                            "step {p}: the send emitted at {j} leaves before the write emitted at {lowest_unwritten}"
                        ));
                    }
                    sends += 1;
                }
                Kind::Write(_) => return Err(format!("step {p}: a Persist outside Records")),
                Kind::Other => {}
            },
        }
    }
    if records != record_at.len() || sends != sends_at.len() || checkpoints != checkpoints_at.len()
    {
        return Err(format!(
            "steps hold {records} records, {sends} sends, {checkpoints} checkpoints; \
             the drain emitted {}, {}, {}",
            record_at.len(),
            sends_at.len(),
            checkpoints_at.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_types::{CheckpointCertificate, Digest, Height, Message, ViewNumber};

    fn vc_sent(v: u64) -> Action {
        Action::Persist(vec![DurableEntry::ViewChangeSent {
            view: ViewNumber(v),
        }])
    }

    fn fetch(h: u64) -> Action {
        Action::Broadcast(Message::FetchBodies(stele_types::FetchBodies {
            wanted: vec![(Height(h), Digest::of(b"x"))],
        }))
    }

    fn checkpoint(h: u64) -> Action {
        Action::PersistCheckpoint(CheckpointCertificate {
            height: Height(h),
            state_digest: Digest::of(b"s"),
            signatures: vec![],
        })
    }

    fn other() -> Action {
        Action::ViewChanged {
            view: ViewNumber(1),
            active: false,
        }
    }

    fn shape(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Records(e) => format!("records {}", e.len()),
                Step::Do(Action::Broadcast(Message::FetchBodies(f))) => {
                    format!("send {}", f.wanted[0].0)
                }
                Step::Do(Action::PersistCheckpoint(c)) => format!("checkpoint {}", c.height),
                Step::Do(a) => format!("{a:?}"),
            })
            .collect()
    }

    /// Safety rule 3 under group commit: every send comes after the records that came
    /// before it in the drain, sends keep their order, and a stable checkpoint (which
    /// discards the log below it) is never crossed by a record.
    #[test]
    fn records_go_first_sends_keep_order_checkpoints_stay_barriers() {
        let steps = group_commit(vec![
            fetch(1),
            vc_sent(1),
            fetch(2),
            vc_sent(2),
            checkpoint(16),
            fetch(3),
            vc_sent(3),
        ]);
        assert_eq!(
            shape(&steps),
            [
                "records 2",
                "send 1",
                "send 2",
                "checkpoint 16",
                "records 1",
                "send 3"
            ]
        );
        assert!(group_commit(vec![]).is_empty());
        assert_eq!(shape(&group_commit(vec![fetch(7)])), ["send 7"]);
    }

    /// The contract holds for every drain of up to 7 actions over the four kinds that
    /// matter (16,384 drains): `check_order` accepts what `group_commit` makes.
    #[test]
    fn every_short_drain_keeps_the_contract() {
        let make = |k: usize, i: usize| match k {
            0 => vc_sent(i as u64),
            1 => checkpoint(i as u64),
            2 => fetch(i as u64),
            _ => other(),
        };
        for len in 0..=7u32 {
            for code in 0..4usize.pow(len) {
                let actions: Vec<Action> = (0..len as usize)
                    .map(|i| make(code / 4usize.pow(i as u32) % 4, i))
                    .collect();
                let kinds: Vec<Kind> = actions.iter().map(Kind::of).collect();
                let steps = group_commit(actions);
                assert_eq!(check_order(&kinds, &steps), Ok(()), "drain {kinds:?}");
            }
        }
    }

    /// The checker bites: a send moved before a record emitted ahead of it, and a record
    /// moved across a checkpoint, are refused.
    #[test]
    fn check_order_refuses_a_send_before_an_earlier_record() {
        let kinds = [Kind::Write(1), Kind::Send];
        let ahead = vec![Step::Do(fetch(1)), Step::Records(vec![])];
        assert!(check_order(&kinds, &ahead).is_err());
        let swapped = vec![
            Step::Do(fetch(1)),
            Step::Records(vec![DurableEntry::ViewChangeSent {
                view: ViewNumber(1),
            }]),
        ];
        let err = check_order(&kinds, &swapped).expect_err("a send before its record");
        assert!(err.contains("leaves before the write"), "{err}");
        let kinds = [Kind::Checkpoint, Kind::Write(1)];
        let crossed = vec![
            Step::Records(vec![DurableEntry::ViewChangeSent {
                view: ViewNumber(1),
            }]),
            Step::Do(checkpoint(8)),
        ];
        let err = check_order(&kinds, &crossed).expect_err("a record across a checkpoint");
        assert!(err.contains("crosses the checkpoint"), "{err}");
        let kinds = [Kind::Write(1), Kind::Checkpoint];
        let behind = vec![
            Step::Do(checkpoint(8)),
            Step::Records(vec![DurableEntry::ViewChangeSent {
                view: ViewNumber(1),
            }]),
        ];
        let err = check_order(&kinds, &behind).expect_err("a checkpoint before a record");
        assert!(err.contains("written before the record"), "{err}");
    }
}
