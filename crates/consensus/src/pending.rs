//! The engine's bounded set of pending client transactions.
//!
//! It knows each tx's class (executable or gapped, as the node's admission said), whether
//! it is in flight (in a block pre-prepared in the current view) or committed, and its
//! age. The view-change timer follows the oldest *tracked* tx: executable, not yet
//! committed, not shadowed by a committed tx with the same (sender, nonce).
//!
//! Age is measured on the chain, not the local clock: a tx's rank is the executed height
//! at which it became executable here (its arrival, or the execution of its sender's
//! previous nonce), then its hash. A sender's next nonce becomes executable on every
//! replica after the same block, so replicas rank it alike, and the primary proposes in
//! the order the backups track. Ranked by local arrival instead, a burst from many senders
//! reached each replica in another order; a backup's oldest tx then sat behind hundreds
//! of others in the primary's order, its timer fired though the primary was working,
//! and one-tx blocks under a 10,000-tx burst changed view every T.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use stele_crypto::{PublicKey, Verified};
use stele_types::{Height, Nonce, Transaction, TxBody, TxHash};

/// How the node's admission classified a pending tx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxClass {
    /// The sender's next nonce (against executed state plus blocks in flight).
    Executable,
    /// A nonce ahead of the sender's next: waits, expires after the TTL, evicted first.
    Gapped,
}

/// What execution meant for a pending tx (reported with `on_executed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOutcome {
    /// Applied: it leaves the pending set.
    Applied,
    /// Dead (its nonce is used) or otherwise unexecutable: it leaves the pending set.
    Dropped,
    /// Still pending, with this class.
    Reclassified(TxClass),
}

#[derive(Debug, Clone)]
struct Entry {
    tx: Transaction,
    class: TxClass,
    /// When it arrived or was last reclassified (engine time, ms).
    since: u64,
    /// Where it stands in `order`: (executed height when it became executable here, hash).
    rank: (u64, TxHash),
    in_flight: bool,
    committed: bool,
    shadowed: bool,
    /// Its encoded length (block size limit), computed once.
    size: usize,
}

impl Entry {
    /// The view-change timer may follow it.
    fn tracked(&self) -> bool {
        self.class == TxClass::Executable && !self.committed && !self.shadowed
    }

    /// A block may start with it.
    fn ready(&self) -> bool {
        self.tracked() && !self.in_flight
    }
}

/// The pending set.
#[derive(Debug)]
pub struct Pending {
    entries: HashMap<TxHash, Entry>,
    order: BTreeMap<(u64, TxHash), TxHash>,
    by_sender: HashMap<PublicKey, BTreeMap<Nonce, Vec<TxHash>>>,
    /// The ranks of tracked and of ready entries: the primary and the timer look only at
    /// these, not at every pending tx (gapped ones are most of a burst). Kept in step by
    /// `index` after every change to an entry.
    tracked: BTreeSet<(u64, TxHash)>,
    ready: BTreeSet<(u64, TxHash)>,
    cap: usize,
}

impl Pending {
    /// An empty set holding at most `cap` txs.
    pub fn new(cap: usize) -> Pending {
        assert!(cap > 0);
        Pending {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            by_sender: HashMap::new(),
            tracked: BTreeSet::new(),
            ready: BTreeSet::new(),
            cap,
        }
    }

    /// Number of pending txs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// The class of a pending tx, if it is pending.
    pub fn class_of(&self, hash: &TxHash) -> Option<TxClass> {
        self.entries.get(hash).map(|e| e.class)
    }

    /// Adds a verified tx that arrived at `now` with the chain executed to `executed`;
    /// false if already there or full of executable txs.
    pub fn insert(
        &mut self,
        hash: TxHash,
        tx: Verified<TxBody>,
        class: TxClass,
        now: u64,
        executed: Height,
    ) -> bool {
        let tx = tx.into_signed();
        if self.entries.contains_key(&hash) {
            return false;
        }
        if self.entries.len() >= self.cap && !self.evict_gapped() {
            return false;
        }
        let rank = (executed.0, hash);
        let size = stele_types::codec::encoded_len(&tx);
        self.by_sender
            .entry(tx.sender)
            .or_default()
            .entry(tx.nonce)
            .or_default()
            .push(hash);
        self.order.insert(rank, hash);
        self.entries.insert(
            hash,
            Entry {
                tx,
                class,
                since: now,
                rank,
                in_flight: false,
                committed: false,
                shadowed: false,
                size,
            },
        );
        self.index(rank, &hash);
        debug_assert!(self.entries.len() <= self.cap);
        true
    }

    fn evict_gapped(&mut self) -> bool {
        let victim = self
            .order
            .values()
            .find(|h| {
                self.entries
                    .get(h)
                    .is_some_and(|e| e.class == TxClass::Gapped && !e.in_flight)
            })
            .copied();
        match victim {
            Some(h) => {
                self.remove(&h);
                true
            }
            None => false,
        }
    }

    /// Removes a tx.
    pub fn remove(&mut self, hash: &TxHash) {
        if let Some(e) = self.entries.remove(hash) {
            self.order.remove(&e.rank);
            self.tracked.remove(&e.rank);
            self.ready.remove(&e.rank);
            if let Some(nonces) = self.by_sender.get_mut(&e.tx.sender) {
                if let Some(v) = nonces.get_mut(&e.tx.nonce) {
                    v.retain(|h| h != hash);
                    if v.is_empty() {
                        nonces.remove(&e.tx.nonce);
                    }
                }
                if nonces.is_empty() {
                    self.by_sender.remove(&e.tx.sender);
                }
            }
        }
    }

    /// The pending txs of `sender`, for the node to reclassify after an execution.
    pub fn of_sender(&self, sender: &PublicKey) -> Vec<(TxHash, Nonce)> {
        self.by_sender
            .get(sender)
            .map(|m| {
                m.iter()
                    .flat_map(|(n, hs)| hs.iter().map(move |h| (*h, *n)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sender's next nonce counting its txs in blocks in flight here (DESIGN.md,
    /// "Requests"): `executed_next` (its account's nonce in executed state) moved past
    /// every contiguous nonce whose tx sits in a block pre-prepared or committed but not
    /// yet executed. Classified against executed state alone, a sender's next tx waited
    /// for the block before it to execute, so about one block was ever in flight.
    pub fn next_nonce(&self, sender: &PublicKey, executed_next: Nonce) -> Nonce {
        let mut next = executed_next;
        let Some(nonces) = self.by_sender.get(sender) else {
            return next;
        };
        for (nonce, hashes) in nonces.range(executed_next..) {
            if *nonce != next {
                break;
            }
            let in_block = hashes.iter().any(|h| {
                self.entries
                    .get(h)
                    .is_some_and(|e| (e.in_flight || e.committed) && !e.shadowed)
            });
            if !in_block {
                break;
            }
            next = next.next();
        }
        debug_assert!(next >= executed_next);
        next
    }

    /// Marks the txs of a committed block: no longer tracked or proposable; txs with the
    /// same (sender, nonce) are shadowed until execution says what became of them.
    pub fn mark_committed<'a>(&mut self, txs: impl IntoIterator<Item = (&'a Transaction, TxHash)>) {
        for (tx, hash) in txs {
            if let Some(e) = self.entries.get_mut(&hash) {
                e.committed = true;
                e.in_flight = false;
                let rank = e.rank;
                self.index(rank, &hash);
            }
            let same: Vec<TxHash> = self
                .by_sender
                .get(&tx.sender)
                .and_then(|m| m.get(&tx.nonce))
                .cloned()
                .unwrap_or_default();
            for h in same {
                if h != hash {
                    if let Some(e) = self.entries.get_mut(&h) {
                        e.shadowed = true;
                        let rank = e.rank;
                        self.index(rank, &h);
                    }
                }
            }
        }
    }

    /// Applies the outcomes of executing the chain up to `executed`.
    pub fn apply_outcomes(&mut self, outcomes: &[(TxHash, TxOutcome)], now: u64, executed: Height) {
        for (hash, outcome) in outcomes {
            match outcome {
                TxOutcome::Applied | TxOutcome::Dropped => self.remove(hash),
                TxOutcome::Reclassified(class) => {
                    if let Some(e) = self.entries.get_mut(hash) {
                        let old = e.rank;
                        if e.class != *class || e.committed || e.shadowed {
                            e.since = now;
                            // Its age starts again at this height, on every replica.
                            let rank = (executed.0, *hash);
                            if rank != e.rank {
                                self.order.remove(&e.rank);
                                self.order.insert(rank, *hash);
                                e.rank = rank;
                            }
                        }
                        e.class = *class;
                        e.committed = false;
                        e.shadowed = false;
                        self.index(old, hash);
                    }
                }
            }
        }
    }

    /// Sets the in-flight flag of the txs of a pre-prepared block.
    pub fn set_in_flight(&mut self, hashes: impl IntoIterator<Item = TxHash>, in_flight: bool) {
        for hash in hashes {
            if let Some(e) = self.entries.get_mut(&hash) {
                if !e.committed {
                    e.in_flight = in_flight;
                    let rank = e.rank;
                    self.index(rank, &hash);
                }
            }
        }
    }

    /// Clears every in-flight flag (a view change: uncommitted proposals are void).
    pub fn clear_in_flight(&mut self) {
        for e in self.entries.values_mut() {
            e.in_flight = false;
            if e.ready() {
                self.ready.insert(e.rank);
            }
        }
    }

    /// Brings `tracked` and `ready` in step with entry `hash`, whose rank was `old`
    /// before the change that calls this.
    fn index(&mut self, old: (u64, TxHash), hash: &TxHash) {
        self.tracked.remove(&old);
        self.ready.remove(&old);
        if let Some(e) = self.entries.get(hash) {
            if e.tracked() {
                self.tracked.insert(e.rank);
            }
            if e.ready() {
                self.ready.insert(e.rank);
            }
        }
        debug_assert!(self.ready.len() <= self.tracked.len());
    }

    /// The oldest tracked tx and when its tracking began.
    pub fn oldest_tracked(&self) -> Option<(TxHash, u64)> {
        let (_, h) = self.tracked.first()?;
        self.entries.get(h).map(|e| (*h, e.since))
    }

    /// Whether `hash` is still tracked.
    pub fn is_tracked(&self, hash: &TxHash) -> bool {
        self.entries.get(hash).is_some_and(Entry::tracked)
    }

    /// Whether some tx could be proposed now.
    pub fn has_proposable(&self) -> bool {
        !self.ready.is_empty()
    }

    /// How many txs could start a block now (each sender's contiguous successors, which
    /// a block may carry too, are not counted).
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Earliest `since` of a proposable tx (for the batch delay).
    pub fn oldest_proposable_since(&self) -> Option<u64> {
        self.ready
            .iter()
            .filter_map(|(_, h)| self.entries.get(h))
            .map(|e| e.since)
            .min()
    }

    /// Picks txs for a block in arrival order, each sender's in nonce order: an executable
    /// tx, then the same sender's next nonces while contiguous. At most `max_txs` and
    /// `max_bytes` encoded bytes.
    pub fn select(&self, max_txs: usize, max_bytes: usize) -> Vec<Transaction> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut taken_senders = std::collections::HashSet::new();
        for (_, h) in &self.ready {
            if out.len() >= max_txs {
                break;
            }
            let Some(e) = self.entries.get(h) else {
                continue;
            };
            if !taken_senders.insert(e.tx.sender) {
                continue;
            }
            // Lowest proposable nonce of this sender first, then contiguous successors.
            let Some(nonces) = self.by_sender.get(&e.tx.sender) else {
                continue;
            };
            let mut expect: Option<Nonce> = None;
            for (nonce, hashes) in nonces {
                if let Some(x) = expect {
                    if *nonce != x {
                        break;
                    }
                }
                let pick = hashes.iter().filter_map(|h| self.entries.get(h)).find(|c| {
                    !c.in_flight
                        && !c.committed
                        && !c.shadowed
                        && (c.class == TxClass::Executable || expect.is_some())
                });
                let Some(c) = pick else {
                    if expect.is_none() {
                        continue;
                    }
                    break;
                };
                let len = c.size;
                if out.len() >= max_txs || bytes + len > max_bytes {
                    break;
                }
                bytes += len;
                out.push(c.tx.clone());
                expect = Some(nonce.next());
            }
        }
        debug_assert!(out.len() <= max_txs && bytes <= max_bytes);
        out
    }

    /// Drops gapped txs waiting longer than `ttl` ms.
    pub fn expire_gapped(&mut self, now: u64, ttl: u64) -> usize {
        let old: Vec<TxHash> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.class == TxClass::Gapped && !e.in_flight && now.saturating_sub(e.since) > ttl
            })
            .map(|(h, _)| *h)
            .collect();
        for h in &old {
            self.remove(h);
        }
        old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::sim::{MacScheme, MacSigner};
    use stele_crypto::Signer;
    use stele_types::tx::sign_tx;
    use stele_types::{tx_hash, Amount, ChainBinding, ChainId, Digest, Op};

    fn txs(senders: &[MacSigner], nonces: u64) -> Vec<Verified<TxBody>> {
        let chain = ChainBinding::new(
            ChainId::new("pending-test").expect("chain id"),
            Digest::ZERO,
        );
        let scheme = MacScheme::new(senders.iter());
        let mut out = Vec::new();
        for n in 0..nonces {
            for s in senders {
                let tx = sign_tx(
                    TxBody {
                        sender: s.public_key(),
                        nonce: Nonce(n),
                        op: Op::Transfer {
                            to: senders[0].public_key(),
                            amount: Amount(1),
                        },
                    },
                    &chain,
                    s,
                );
                out.push(
                    tx.verify(&chain, &s.public_key(), &scheme)
                        .expect("verifies"),
                );
            }
        }
        out
    }

    /// Replicas that received one burst in different orders track the same tx and
    /// propose the same one first, and after an execution they agree again on the
    /// successors that became executable.
    #[test]
    fn replicas_rank_a_burst_alike_whatever_its_arrival_order() {
        let senders: Vec<MacSigner> = (0..50u8).map(|i| MacSigner::new([i; 32])).collect();
        let all = txs(&senders, 2);
        let mut a = Pending::new(1000);
        let mut b = Pending::new(1000);
        for (i, tx) in all.iter().enumerate() {
            let class = if tx.nonce == Nonce(0) {
                TxClass::Executable
            } else {
                TxClass::Gapped
            };
            assert!(a.insert(tx_hash(tx.signed()), tx.clone(), class, i as u64, Height(0)));
        }
        for (i, tx) in all.iter().rev().enumerate() {
            let class = if tx.nonce == Nonce(0) {
                TxClass::Executable
            } else {
                TxClass::Gapped
            };
            assert!(b.insert(tx_hash(tx.signed()), tx.clone(), class, i as u64, Height(0)));
        }
        let (ta, _) = a.oldest_tracked().expect("a tracks");
        let (tb, _) = b.oldest_tracked().expect("b tracks");
        assert_eq!(ta, tb);
        let first = a.select(1, 1 << 20);
        assert_eq!(first, b.select(1, 1 << 20));
        assert_eq!(
            tx_hash(&first[0]),
            ta,
            "the primary proposes what backups track"
        );

        // The block with that tx executes at height 1: its sender's nonce 1 becomes
        // executable, ranked at height 1, behind the other nonce-0 txs on both.
        let applied = first[0].clone();
        let successor = all
            .iter()
            .find(|t| t.sender == applied.sender && t.nonce == Nonce(1))
            .map(|t| tx_hash(t.signed()))
            .expect("successor");
        for p in [&mut a, &mut b] {
            p.mark_committed([(&applied, tx_hash(&applied))]);
            p.apply_outcomes(
                &[
                    (tx_hash(&applied), TxOutcome::Applied),
                    (successor, TxOutcome::Reclassified(TxClass::Executable)),
                ],
                1_000,
                Height(1),
            );
        }
        assert_eq!(
            a.oldest_tracked().map(|t| t.0),
            b.oldest_tracked().map(|t| t.0)
        );
        assert_ne!(a.oldest_tracked().map(|t| t.0), Some(successor));
        let mut order_a = Vec::new();
        let mut order_b = Vec::new();
        for _ in 0..50 {
            let x = a.select(1, 1 << 20);
            let y = b.select(1, 1 << 20);
            a.set_in_flight(x.iter().map(tx_hash), true);
            b.set_in_flight(y.iter().map(tx_hash), true);
            order_a.extend(x);
            order_b.extend(y);
        }
        assert_eq!(order_a, order_b);
        assert_eq!(order_a.len(), 50);
        assert_eq!(
            tx_hash(order_a.last().expect("50")),
            successor,
            "a successor that became executable later goes after the older txs"
        );
    }
    /// A sender's txs in a block in flight count toward its next nonce, so its next tx
    /// is executable at once and goes in the next block, before the first executes.
    #[test]
    fn the_next_nonce_counts_blocks_in_flight_and_a_successor_is_proposed_behind_them() {
        let s = MacSigner::new([7; 32]);
        let all = txs(std::slice::from_ref(&s), 6);
        let me = s.public_key();
        let mut p = Pending::new(100);
        for tx in &all[..3] {
            let class = if tx.nonce == Nonce(0) {
                TxClass::Executable
            } else {
                TxClass::Gapped
            };
            assert!(p.insert(tx_hash(tx.signed()), tx.clone(), class, 0, Height(0)));
        }
        assert_eq!(p.next_nonce(&me, Nonce(0)), Nonce(0));
        let block1 = p.select(100, 1 << 20);
        assert_eq!(block1.len(), 3, "nonces 0, 1, 2 in one block");
        p.set_in_flight(block1.iter().map(tx_hash), true);
        assert_eq!(p.next_nonce(&me, Nonce(0)), Nonce(3));
        // Committed but not executed still counts; a gap ends the run.
        p.mark_committed(block1[..2].iter().map(|t| (t, tx_hash(t))));
        assert_eq!(p.next_nonce(&me, Nonce(0)), Nonce(3));
        assert_eq!(p.next_nonce(&me, Nonce(1)), Nonce(3));
        assert_eq!(p.next_nonce(&me, Nonce(5)), Nonce(5));

        // Nonce 3 arrives while 0..=2 are in flight: classified against them it is
        // executable, and the primary proposes it (and 4, contiguous) right away.
        let next = p.next_nonce(&me, Nonce(0));
        for tx in &all[3..5] {
            let class = if tx.nonce == next {
                TxClass::Executable
            } else {
                TxClass::Gapped
            };
            assert!(p.insert(tx_hash(tx.signed()), tx.clone(), class, 1, Height(0)));
        }
        let block2 = p.select(100, 1 << 20);
        let nonces: Vec<u64> = block2.iter().map(|t| t.nonce.0).collect();
        assert_eq!(nonces, vec![3, 4]);

        // A view change voids the proposals: the in-flight run is gone.
        p.clear_in_flight();
        assert_eq!(
            p.next_nonce(&me, Nonce(0)),
            Nonce(2),
            "0 and 1 are committed"
        );
    }
}
