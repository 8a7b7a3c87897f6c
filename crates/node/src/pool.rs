//! The verification pool: one set of threads, sized to the machine's cores, that checks
//! every signature the node checks, with consensus work first (DESIGN.md "Node", issue 22).
//!
//! Before it, consensus messages had a few threads of their own while each HTTP request
//! verified its batch in a `spawn_blocking` thread: up to 512 of those, each a batch of up
//! to 4,096 signatures, competed for the same cores as the votes and view changes, and a
//! client flood slowed consensus as much as it liked.
//!
//! Three kinds of work, taken in this order whenever a thread is free:
//! 1. consensus messages, one queue per peer; a peer's messages are taken one at a time,
//!    so they reach the engine in the order they arrived;
//! 2. relayed txs from peers;
//! 3. client txs (HTTP), in jobs of at most [`CLIENT_CHUNK`] txs, so a consensus message
//!    waits for at most one short job.
//!
//! Tx work (2 and 3) runs on at most `threads - 1` threads at once (at least one): one
//! thread is always free for consensus when the machine has two cores or more.
//!
//! A thread that takes tx work also takes the tx work queued behind it, up to
//! [`TX_BATCH`] txs and [`TX_BATCH_JOBS`] jobs, and checks all their signatures in one
//! batch: a batch of 256 costs about a sixth less per signature than four of 64 (`cargo
//! bench --bench crypto`), and under load most requests and relays wait here anyway.
//! A bad signature sends only its own job down the single-signature path
//! ([`stele_crypto::Scheme::verify_groups`]), but every job joined with it is checked a
//! second time, in a batch of its own. So after a joined batch with a bad signature,
//! batches take one job each for [`SOLO_AFTER_BAD`]: anyone can send a bad signature
//! (a client needs only a funded account's key, which is public), and then joins are
//! off, as before they existed, instead of doubling everyone's checks.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stele_crypto::Verified;
use stele_types::{Transaction, TxBody};
use tokio::sync::oneshot;

/// Most consensus jobs taken in a row while tx work waits.
pub const CONSENSUS_STREAK: usize = 8;
/// Most client txs one pool job verifies; a request with more is split.
pub const CLIENT_CHUNK: usize = 256;
/// Most client jobs waiting; past it a request is refused as busy (503).
pub const CLIENT_QUEUE: usize = 1024;
/// Most relay jobs waiting; past it a relay is dropped (peers resend what matters).
pub const RELAY_QUEUE: usize = 4096;
/// Most txs a thread takes from the tx queues for one signature batch (a single job
/// larger than this is still taken whole).
pub const TX_BATCH: usize = 256;
/// Most jobs in one batch. A job whose txs are all known (a relayed copy, say) adds no
/// tx to it, and each job keeps its txs held until the batch is done, so without this a
/// stream of such jobs would keep one batch open and a proposal waiting on its holds.
pub const TX_BATCH_JOBS: usize = 16;
/// How long batches take one job each after a joined batch had a bad signature.
pub const SOLO_AFTER_BAD: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

/// One verdict per tx, in order; `None`: its signature does not verify.
pub type TxVerdicts = Vec<Option<Verified<TxBody>>>;

/// Checks groups of tx signatures, one verdict list per group; one batch for all of
/// them when all are good (the node's is [`crate::net::batch_verifier`]).
pub type BatchVerify = Arc<dyn Fn(Vec<Vec<Transaction>>) -> Vec<TxVerdicts> + Send + Sync>;

/// Tx work (a client request's chunk, a peer's relay): what comes before its signature
/// checks, then what comes after, so the pool can check the signatures of several jobs
/// in one batch.
pub trait TxWork: Send + 'static {
    /// The most txs [`TxWork::prepare`] returns.
    fn most_txs(&self) -> usize;
    /// The checks that need no signature (the store, the verified cache); the txs whose
    /// signatures are left to check.
    fn prepare(&mut self) -> Vec<Transaction>;
    /// The rest, given one verdict per tx [`TxWork::prepare`] returned, in order.
    fn finish(self: Box<Self>, verdicts: TxVerdicts);
}

type Work = Box<dyn TxWork>;

/// Why work was not queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the verification queue is full")]
    Full,
    #[error("the verification pool has stopped")]
    Stopped,
}

/// A handle on the pool; the threads stop when the last handle is dropped, after the
/// work already queued.
#[derive(Clone)]
pub struct VerifyPool {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("threads", &self.inner.threads)
            .field("tx_threads", &self.inner.tx_threads)
            .finish()
    }
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
    threads: usize,
    tx_threads: usize,
    peer_queue: usize,
    verify: BatchVerify,
}

struct State {
    peers: Vec<PeerQueue>,
    /// Where the next scan for consensus work starts, so no peer is served before all
    /// the others every time.
    next_peer: usize,
    relays: VecDeque<Work>,
    clients: VecDeque<Work>,
    tx_running: usize,
    /// Until when tx jobs are not joined ([`SOLO_AFTER_BAD`]).
    solo_until: Option<Instant>,
    /// Consensus jobs taken since the last tx job.
    streak: usize,
    stopped: bool,
}

#[derive(Default)]
struct PeerQueue {
    jobs: VecDeque<Job>,
    busy: bool,
}

enum Taken {
    Peer(usize, Job),
    Tx(Work),
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.ready.notify_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job that panicked poisons nothing the queues rely on: they are consistent
        // between any two statements that hold the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn take(&mut self, tx_threads: usize) -> Option<Taken> {
        if self.streak >= CONSENSUS_STREAK {
            if let Some(t) = self.take_tx(tx_threads) {
                return Some(t);
            }
        }
        let n = self.peers.len();
        for k in 0..n {
            let p = (self.next_peer + k) % n;
            let q = &mut self.peers[p];
            if q.busy {
                continue;
            }
            if let Some(job) = q.jobs.pop_front() {
                q.busy = true;
                self.next_peer = (p + 1) % n;
                self.streak += 1;
                return Some(Taken::Peer(p, job));
            }
        }
        self.take_tx(tx_threads)
    }

    fn take_tx(&mut self, tx_threads: usize) -> Option<Taken> {
        if self.tx_running >= tx_threads {
            return None;
        }
        let job = self
            .relays
            .pop_front()
            .or_else(|| self.clients.pop_front())?;
        self.tx_running += 1;
        self.streak = 0;
        Some(Taken::Tx(job))
    }

    /// The next tx job, for a thread already holding a tx slot, if it fits in a batch
    /// that has `room` txs left.
    fn take_more_tx(&mut self, room: usize) -> Option<Work> {
        let q = if !self.relays.is_empty() {
            &mut self.relays
        } else {
            &mut self.clients
        };
        if q.front()?.most_txs() > room {
            return None;
        }
        q.pop_front()
    }

    fn idle(&self) -> bool {
        self.relays.is_empty()
            && self.clients.is_empty()
            && self.peers.iter().all(|q| q.jobs.is_empty())
    }
}

impl VerifyPool {
    /// A pool of `threads` threads (at least 1) serving `peers` peers, each with up to
    /// `peer_queue` messages waiting, checking tx signatures with `verify`.
    pub fn start(
        threads: usize,
        peers: usize,
        peer_queue: usize,
        verify: BatchVerify,
    ) -> std::io::Result<VerifyPool> {
        let threads = threads.max(1);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                peers: (0..peers).map(|_| PeerQueue::default()).collect(),
                next_peer: 0,
                relays: VecDeque::new(),
                clients: VecDeque::new(),
                tx_running: 0,
                solo_until: None,
                streak: 0,
                stopped: false,
            }),
            ready: Condvar::new(),
            threads,
            tx_threads: threads.saturating_sub(1).max(1),
            peer_queue,
            verify,
        });
        for i in 0..threads {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || work(&inner))?;
        }
        Ok(VerifyPool {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        })
    }

    /// The pool's size: the machine's cores.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }

    /// Queues a consensus message's work behind the same peer's earlier ones.
    pub fn consensus(
        &self,
        peer: usize,
        job: impl FnOnce() + Send + 'static,
    ) -> Result<(), PoolError> {
        let mut s = self.inner.lock();
        if s.stopped {
            return Err(PoolError::Stopped);
        }
        let limit = self.inner.peer_queue;
        let q = s.peers.get_mut(peer).ok_or(PoolError::Full)?;
        if q.jobs.len() >= limit {
            return Err(PoolError::Full);
        }
        q.jobs.push_back(Box::new(job));
        drop(s);
        self.inner.ready.notify_one();
        Ok(())
    }

    /// Queues relayed txs' work.
    pub fn relay(&self, work: impl TxWork) -> Result<(), PoolError> {
        self.push(|s| &mut s.relays, RELAY_QUEUE, Box::new(work))
    }

    /// Runs `work` (a client's txs, at most [`CLIENT_CHUNK`] of them) on the pool, after
    /// any consensus and relay work queued before it is taken, and waits for what its
    /// [`TxWork::finish`] sends.
    pub async fn client<T: Send + 'static>(
        &self,
        work: impl FnOnce(oneshot::Sender<T>) -> Work,
    ) -> Result<T, PoolError> {
        let (tx, rx) = oneshot::channel();
        self.push(|s| &mut s.clients, CLIENT_QUEUE, work(tx))?;
        rx.await.map_err(|_| PoolError::Stopped)
    }

    fn push(
        &self,
        queue: impl FnOnce(&mut State) -> &mut VecDeque<Work>,
        limit: usize,
        job: Work,
    ) -> Result<(), PoolError> {
        let mut s = self.inner.lock();
        if s.stopped {
            return Err(PoolError::Stopped);
        }
        let q = queue(&mut s);
        if q.len() >= limit {
            return Err(PoolError::Full);
        }
        q.push_back(job);
        drop(s);
        self.inner.ready.notify_one();
        Ok(())
    }
}

/// Runs `f`; a panic (a bug) costs that piece of work, not the thread: the pool would
/// otherwise shrink by one thread per panic.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    if out.is_none() {
        tracing::error!("a verification job panicked; its work is lost");
    }
    out
}

/// A tx job and the tx jobs queued behind it (up to [`TX_BATCH`] txs and
/// [`TX_BATCH_JOBS`] jobs, or none while joins are off): their checks before
/// signatures, one batch of signatures, then their checks after, each in turn.
fn run_tx_work(inner: &Inner, first: Work) {
    let solo = inner.lock().solo_until.is_some_and(|t| Instant::now() < t);
    let mut jobs: Vec<(Work, Vec<Transaction>)> = Vec::new();
    let mut txs = 0;
    let mut next = Some(first);
    while let Some(mut job) = next {
        if let Some(t) = guarded(|| job.prepare()) {
            txs += t.len();
            jobs.push((job, t));
        }
        next = if solo || jobs.len() >= TX_BATCH_JOBS {
            None
        } else {
            inner.lock().take_more_tx(TX_BATCH.saturating_sub(txs))
        };
    }
    let (jobs, groups): (Vec<Work>, Vec<Vec<Transaction>>) = jobs.into_iter().unzip();
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    let verdicts = if txs == 0 {
        Some(sizes.iter().map(|_| Vec::new()).collect())
    } else {
        guarded(|| (inner.verify)(groups))
    };
    let Some(verdicts) = verdicts else { return };
    debug_assert_eq!(
        verdicts.iter().map(Vec::len).collect::<Vec<_>>(),
        sizes,
        "one verdict per tx"
    );
    let joined = sizes.iter().filter(|&&n| n > 0).count() > 1;
    if joined && verdicts.iter().flatten().any(Option::is_none) {
        inner.lock().solo_until = Some(Instant::now() + SOLO_AFTER_BAD);
    }
    for (job, v) in jobs.into_iter().zip(verdicts) {
        guarded(|| job.finish(v));
    }
}

fn work(inner: &Inner) {
    let mut s = inner.lock();
    loop {
        if let Some(taken) = s.take(inner.tx_threads) {
            drop(s);
            let peer = match taken {
                Taken::Peer(p, job) => {
                    guarded(job);
                    Some(p)
                }
                Taken::Tx(first) => {
                    run_tx_work(inner, first);
                    None
                }
            };
            s = inner.lock();
            match peer {
                Some(p) => s.peers[p].busy = false,
                None => s.tx_running -= 1,
            }
            // What this thread's job held back (the peer's next message, a tx slot) may
            // be another thread's to take.
            inner.ready.notify_all();
            continue;
        }
        if s.stopped && s.idle() {
            return;
        }
        s = inner.ready.wait(s).unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Tx work with no txs: runs `F` when finished.
    struct Run<F>(F);

    impl<F: FnOnce() + Send + 'static> TxWork for Run<F> {
        fn most_txs(&self) -> usize {
            0
        }
        fn prepare(&mut self) -> Vec<Transaction> {
            Vec::new()
        }
        fn finish(self: Box<Self>, verdicts: TxVerdicts) {
            assert!(verdicts.is_empty());
            (self.0)()
        }
    }

    fn no_verify() -> BatchVerify {
        Arc::new(|_| panic!("no txs to verify"))
    }

    fn start(threads: usize, peers: usize, peer_queue: usize) -> VerifyPool {
        VerifyPool::start(threads, peers, peer_queue, no_verify()).expect("pool")
    }

    /// A client job that runs `f`, as `VerifyPool::client` wants it.
    fn client_job(f: impl FnOnce() + Send + 'static) -> impl FnOnce(oneshot::Sender<()>) -> Work {
        move |reply| {
            Box::new(Run(move || {
                f();
                let _ = reply.send(());
            }))
        }
    }

    /// A job that blocks its thread until the returned sender is dropped or sent to.
    fn gate() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel::<()>();
        (tx, move || {
            let _ = rx.recv();
        })
    }

    fn log_job(log: &Arc<Mutex<Vec<String>>>, what: String) -> impl FnOnce() + Send + 'static {
        let log = log.clone();
        move || log.lock().expect("log").push(what)
    }

    fn wait_for(log: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let l = log.lock().expect("log").clone();
            if l.len() >= n {
                return l;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {:?} ran", log.lock().expect("log"));
    }

    #[test]
    fn consensus_work_is_taken_before_client_work_queued_earlier() {
        let pool = start(1, 2, 16);
        let log = Arc::new(Mutex::new(Vec::new()));
        // The one thread is busy; then clients queue, then a peer's votes arrive.
        let (open, blocker) = gate();
        pool.consensus(0, blocker).expect("queued");
        let mut waits = Vec::new();
        for i in 0..3 {
            let (p, l) = (pool.clone(), log_job(&log, format!("client {i}")));
            waits.push(std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime")
                    .block_on(p.client(client_job(l)))
            }));
        }
        // The clients' jobs are queued before the peer's.
        while pool.inner.lock().clients.len() < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.relay(Run(log_job(&log, "relay".into())))
            .expect("queued");
        pool.consensus(1, log_job(&log, "peer 1".into()))
            .expect("queued");
        drop(open);
        let mut ran = wait_for(&log, 5);
        assert_eq!(ran[..2], ["peer 1", "relay"]);
        ran[2..].sort();
        assert_eq!(ran[2..], ["client 0", "client 1", "client 2"]);
        for w in waits {
            assert_eq!(w.join().expect("thread"), Ok(()));
        }
    }

    #[test]
    fn a_peers_messages_run_in_order_and_one_thread_stays_free_for_consensus() {
        let pool = start(2, 2, 64);
        let log = Arc::new(Mutex::new(Vec::new()));
        // Tx work may hold one of the two threads, never both: with a client job stuck,
        // every later client job waits, and the peers' messages still run.
        let (open, blocker) = gate();
        pool.relay(Run(blocker)).expect("queued");
        pool.relay(Run(log_job(&log, "relay".into())))
            .expect("queued");
        for i in 0..20 {
            pool.consensus(i % 2, log_job(&log, format!("peer {} #{}", i % 2, i / 2)))
                .expect("queued");
        }
        let ran = wait_for(&log, 20);
        assert!(!ran.contains(&"relay".to_string()), "{ran:?}");
        for p in 0..2 {
            let mine: Vec<&String> = ran
                .iter()
                .filter(|l| l.starts_with(&format!("peer {p}")))
                .collect();
            let want: Vec<String> = (0..10).map(|i| format!("peer {p} #{i}")).collect();
            assert_eq!(
                mine,
                want.iter().collect::<Vec<_>>(),
                "peer {p} out of order"
            );
        }
        drop(open);
        assert_eq!(wait_for(&log, 21).last().map(String::as_str), Some("relay"));
    }

    #[test]
    fn queues_are_bounded_and_a_stopped_pool_refuses() {
        let pool = start(1, 1, 2);
        let (open, blocker) = gate();
        pool.consensus(0, blocker).expect("queued");
        // The blocker is running or queued; at most two wait behind it.
        while !pool.inner.lock().peers[0].busy {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.consensus(0, || {}).expect("queued");
        pool.consensus(0, || {}).expect("queued");
        assert_eq!(pool.consensus(0, || {}), Err(PoolError::Full));
        assert_eq!(
            pool.consensus(7, || {}),
            Err(PoolError::Full),
            "no such peer"
        );
        for _ in 0..RELAY_QUEUE {
            pool.relay(Run(|| {})).expect("queued");
        }
        assert_eq!(pool.relay(Run(|| {})), Err(PoolError::Full));
        drop(open);
        let inner = pool.inner.clone();
        drop(pool);
        assert!(inner.lock().stopped);
    }

    #[test]
    fn client_work_waits_behind_at_most_a_streak_of_consensus_work() {
        let pool = start(1, 4, 64);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (open, blocker) = gate();
        pool.consensus(0, blocker).expect("queued");
        while !pool.inner.lock().peers[0].busy {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Three peers with a backlog each, then one client job.
        for i in 0..30 {
            pool.consensus(1 + i % 3, log_job(&log, format!("peer {}", 1 + i % 3)))
                .expect("queued");
        }
        let (p, l) = (pool.clone(), log_job(&log, "client".into()));
        let client = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(p.client(client_job(l)))
        });
        while pool.inner.lock().clients.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(open);
        let ran = wait_for(&log, 31);
        let at = ran
            .iter()
            .position(|l| l == "client")
            .expect("the client job ran");
        // The blocker counted as the first of the streak.
        assert!(at < CONSENSUS_STREAK, "client job ran {at}th: {ran:?}");
        assert_eq!(client.join().expect("thread"), Ok(()));
    }

    /// Each signature batch's group sizes, in order.
    type BatchLog = Arc<Mutex<Vec<Vec<usize>>>>;

    /// Which jobs finished, in order, and which of their txs verified.
    type FinishLog = Arc<Mutex<Vec<(&'static str, Vec<bool>)>>>;

    /// A relay's or a client's txs: logs its name and its verdicts when finished.
    struct Txs {
        name: &'static str,
        txs: Vec<Transaction>,
        log: FinishLog,
        reply: Option<oneshot::Sender<()>>,
    }

    impl TxWork for Txs {
        fn most_txs(&self) -> usize {
            self.txs.len()
        }
        fn prepare(&mut self) -> Vec<Transaction> {
            self.txs.clone()
        }
        fn finish(self: Box<Self>, verdicts: TxVerdicts) {
            let ok = verdicts.iter().map(Option::is_some).collect();
            self.log.lock().expect("log").push((self.name, ok));
            if let Some(r) = self.reply {
                let _ = r.send(());
            }
        }
    }

    /// Transfers signed by one key, by nonce.
    fn signed_tx(nonce: u64) -> Transaction {
        use stele_crypto::{KeyPair, Signed};
        use stele_types::{Amount, Nonce, Op};
        let key = KeyPair::from_seed([3; 32]);
        let body = TxBody {
            sender: key.public(),
            nonce: Nonce(nonce),
            op: Op::Transfer {
                to: KeyPair::from_seed([4; 32]).public(),
                amount: Amount(1),
            },
        };
        Signed::sign(body, &test_chain(), &key)
    }

    fn test_chain() -> stele_crypto::ChainBinding {
        use stele_crypto::{ChainBinding, ChainId, Digest};
        ChainBinding::new(ChainId::new("pool-test").expect("id"), Digest::of(b"g"))
    }

    /// A pool of two threads (one for consensus, one for tx work) checking signatures
    /// for real, recording each batch's group sizes; its tx thread is held by a job
    /// until the returned sender goes.
    fn held_pool() -> (VerifyPool, BatchLog, mpsc::Sender<()>) {
        use stele_crypto::{Ed25519, Signed};
        let calls = BatchLog::default();
        let verify: BatchVerify = {
            let calls = calls.clone();
            Arc::new(move |groups: Vec<Vec<Transaction>>| {
                calls
                    .lock()
                    .expect("calls")
                    .push(groups.iter().map(Vec::len).collect());
                let keyed = groups
                    .into_iter()
                    .map(|g| g.into_iter().map(|t| (t.clone(), t.sender)).collect())
                    .collect();
                Signed::verify_groups(keyed, &test_chain(), &Ed25519)
                    .into_iter()
                    .map(|g| g.into_iter().map(Result::ok).collect())
                    .collect()
            })
        };
        let pool = VerifyPool::start(2, 1, 8, verify).expect("pool");
        let (started_tx, started) = mpsc::channel();
        let (open, blocker) = gate();
        pool.relay(Run(move || {
            let _ = started_tx.send(());
            blocker();
        }))
        .expect("queued");
        started.recv().expect("the blocker runs");
        (pool, calls, open)
    }

    #[test]
    fn tx_jobs_queued_together_are_checked_in_one_batch_of_at_most_256() {
        let (pool, calls, open) = held_pool();
        let tx = signed_tx;
        let log = Arc::new(Mutex::new(Vec::new()));
        let job = |name, n: u64| Txs {
            name,
            txs: (n * 1000..n * 1000 + if n == 4 { 50 } else { 100 })
                .map(tx)
                .collect(),
            log: log.clone(),
            reply: None,
        };
        let mut bad = job("b", 2);
        bad.txs[7].signature.0[0] ^= 1;
        pool.relay(job("a", 1)).expect("queued");
        pool.relay(bad).expect("queued");
        pool.relay(job("c", 3)).expect("queued");
        let d = job("d", 4);
        let p = pool.clone();
        let client = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(p.client(move |reply| {
                    Box::new(Txs {
                        reply: Some(reply),
                        ..d
                    }) as Work
                }))
        });
        while pool.inner.lock().clients.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(open);
        assert_eq!(client.join().expect("thread"), Ok(()));
        // a and b fill one batch (c would pass 256). b's bad signature turns joins
        // off for a while: c and d go alone.
        assert_eq!(
            *calls.lock().expect("calls"),
            [vec![100, 100], vec![100], vec![50]]
        );
        let log = log.lock().expect("log").clone();
        let names: Vec<&str> = log.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        for (name, ok) in &log {
            let bad: Vec<usize> = (0..ok.len()).filter(|&i| !ok[i]).collect();
            let want: &[usize] = if *name == "b" { &[7] } else { &[] };
            assert_eq!(bad, want, "job {name}");
        }
    }

    /// With no bad signature, joins go on, at most [`TX_BATCH_JOBS`] jobs a batch: a
    /// job adding no tx to the batch must not keep it open (each job holds its txs until
    /// the batch is done).
    #[test]
    fn a_batch_joins_at_most_sixteen_jobs() {
        let (pool, calls, open) = held_pool();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..20u64 {
            pool.relay(Txs {
                name: "one",
                txs: vec![signed_tx(i)],
                log: log.clone(),
                reply: None,
            })
            .expect("queued");
        }
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.lock().expect("log").len() < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = log.lock().expect("log").clone();
        assert_eq!(log.len(), 20);
        assert!(log.iter().all(|(_, ok)| ok == &[true]));
        assert_eq!(
            *calls.lock().expect("calls"),
            [vec![1; TX_BATCH_JOBS], vec![1; 20 - TX_BATCH_JOBS]]
        );
    }

    #[test]
    fn a_panicking_job_does_not_shrink_the_pool() {
        let pool = start(1, 1, 8);
        let log = Arc::new(Mutex::new(Vec::new()));
        pool.consensus(0, || panic!("a bug in one job"))
            .expect("queued");
        pool.consensus(0, log_job(&log, "after".into()))
            .expect("queued");
        assert_eq!(wait_for(&log, 1), ["after"]);
    }
}
