//! Building, sending and confirming transactions.
//!
//! A tx is signed here, sent to `fanout` validators (q by default), and believed only
//! once f+1 validators have signed matching receipts for it (see `quorum`). Everything
//! that waits has a deadline; a busy node (429) is retried with exponential backoff that
//! honours its `Retry-After`; a node that lost the tx gets it again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use stele_crypto::{PublicKey, Signer};
use stele_types::api::{
    AccountResponse, Admitted, ApiError, SubmitResponse, TxResponse, MAX_SUBMIT_BATCH,
    MAX_SUBMIT_BODY,
};
use stele_types::tx::{check_well_formed, sign_tx};
use stele_types::{codec, tx_hash, Nonce, Op, Transaction, TxBody, TxHash};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{remaining, Client, Encoding, Node, SubmitBody};
use crate::error::ClientError;
use crate::quorum::{Confirmed, ReceiptError, ReceiptTally, TxId};

/// First wait after a 429 when the node gives no `Retry-After`.
const BUSY_BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between two tries at a busy node (unless `Retry-After` says longer).
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// First pause between two rounds of `GET /txs` while waiting for receipts.
const POLL_START: Duration = Duration::from_millis(50);
/// Longest pause between two rounds of `GET /txs`.
const POLL_MAX: Duration = Duration::from_secs(1);

/// What became of a batch: every tx's hash in order, and the txs that every validator
/// they were sent to refused (index into the batch, hash, the first reason given).
#[derive(Debug, Clone)]
pub struct Batch {
    pub hashes: Vec<TxHash>,
    pub refused: Vec<(usize, TxHash, ApiError)>,
}

/// Every node's answer to `GET /txs/{hash}`, with the receipts checked and tallied.
#[derive(Debug)]
pub struct TxQuery {
    pub hash: TxHash,
    pub answers: Vec<(Node, Result<TxResponse, ClientError>)>,
    /// The receipts that verified, grouped by outcome.
    pub tally: ReceiptTally,
    /// Receipts that did not count, and why.
    pub bad_receipts: Vec<(Node, ReceiptError)>,
}

impl TxQuery {
    /// The outcome f+1 validators signed, if they did.
    pub fn confirmed(&self) -> Option<Confirmed> {
        self.tally.accepted()
    }
}

/// Per-confirmation state shared by the POST and the polling phases.
struct Waiter {
    hash: TxHash,
    tally: ReceiptTally,
    /// Nodes (by index in `client.nodes()`) whose receipt is already counted.
    done: Vec<bool>,
    /// Nodes that admitted the tx (or already knew it).
    admitted: Vec<bool>,
    last_resend: Vec<Option<Instant>>,
    last_error: BTreeMap<usize, String>,
}

impl Waiter {
    fn new(client: &Client, tx: TxId) -> Waiter {
        let n = client.nodes().len();
        Waiter {
            hash: tx.hash,
            tally: ReceiptTally::new(tx, client.receipt_checker()),
            done: vec![false; n],
            admitted: vec![false; n],
            last_resend: vec![None; n],
            last_error: BTreeMap::new(),
        }
    }

    /// Counts the receipt in a node's answer, if it has one.
    fn take(&mut self, client: &Client, i: usize, resp: &TxResponse) {
        if resp.hash != self.hash {
            self.last_error
                .insert(i, format!("answered for tx {}", resp.hash));
            return;
        }
        if resp.status != stele_types::api::TxStatus::Unknown {
            self.admitted[i] = true;
        }
        if let Some(t) = &resp.tx {
            self.tally.learn(t);
        }
        if let Some(r) = &resp.receipt {
            match self
                .tally
                .offer(client.receipt_checker(), r.clone(), resp.used_by.as_ref())
            {
                Ok(_) => {
                    self.done[i] = true;
                    self.last_error.remove(&i);
                }
                Err(e) => {
                    tracing::warn!(node = %client.nodes()[i], tx = %self.hash, error = %e, "receipt does not count");
                    self.last_error.insert(i, e.to_string());
                }
            }
        }
    }

    fn timeout(&self, started: Instant) -> ClientError {
        let mut last = self.tally.describe();
        if !self.last_error.is_empty() {
            let errs: Vec<String> = self.last_error.values().cloned().collect();
            last.push_str("; ");
            last.push_str(&errs.join("; "));
        }
        ClientError::Timeout {
            hash: self.hash,
            have: self.tally.best(),
            need: self.tally.need(),
            waited: started.elapsed(),
            last,
        }
    }
}

fn node_index(client: &Client, node: &Node) -> usize {
    client
        .nodes()
        .iter()
        .position(|n| n == node)
        .unwrap_or_else(|| unreachable!("fanout nodes come from client.nodes()"))
}

impl Client {
    /// Builds and signs a tx for this chain (its id and genesis digest, [`Client::chain`]),
    /// and checks it is well-formed (non-zero amount, not to oneself, within size), so
    /// that a mistake is caught before sending.
    pub fn sign(
        &self,
        signer: &dyn Signer,
        nonce: Nonce,
        op: Op,
    ) -> Result<Transaction, ClientError> {
        let tx = sign_tx(
            TxBody {
                sender: signer.public_key(),
                nonce,
                op,
            },
            self.chain(),
            signer,
        );
        check_well_formed(&tx).map_err(|e| ClientError::Malformed(e.to_string()))?;
        Ok(tx)
    }

    /// Every node's view of `key`'s account, in node order.
    pub async fn accounts(
        &self,
        key: &PublicKey,
    ) -> Vec<(Node, Result<Option<AccountResponse>, ClientError>)> {
        let key = *key;
        self.ask_all(self.nodes(), move |c, n| async move {
            c.account(&n, &key).await
        })
        .await
    }

    /// The nonce the sender's next tx must carry, from the nodes' committed state.
    ///
    /// All nodes are asked and the highest nonce wins. An honest node only ever
    /// understates it (it lags: its nonce is one the sender already used, and a tx
    /// built on it would come back `stale_nonce`), so the highest answer is the freshest
    /// truth among the honest ones. A faulty node can only overstate it, and then the tx
    /// is refused (`nonce_too_far`) or waits gapped: a visible failure the caller can fix
    /// with an explicit nonce, never a double spend, since the ledger enforces nonces.
    /// Txs the sender has pending in mempools are not counted: a caller that sends
    /// several in a row numbers them itself.
    pub async fn next_nonce(&self, sender: &PublicKey) -> Result<Nonce, ClientError> {
        let answers = self.accounts(sender).await;
        let asked = answers.len();
        let mut best: Option<Nonce> = None;
        let mut answered = 0;
        let mut errors = Vec::new();
        for (_, r) in answers {
            match r {
                Ok(Some(a)) => {
                    answered += 1;
                    best = best.max(Some(a.nonce));
                }
                Ok(None) => answered += 1,
                Err(e) => errors.push(e),
            }
        }
        if answered == 0 {
            return Err(ClientError::NoAnswer { errors });
        }
        best.ok_or(ClientError::NoAccount {
            key: sender.to_hex(),
            answered,
            asked,
        })
    }

    /// Sends `tx` to `fanout` validators and returns once f+1 of all validators have
    /// signed matching receipts for it, or fails after `wait_timeout`.
    pub async fn submit_and_wait(&self, tx: &Transaction) -> Result<Confirmed, ClientError> {
        self.submit_and_wait_until(tx, Instant::now() + self.config().wait_timeout)
            .await
    }

    /// [`Client::submit_and_wait`] with an explicit deadline.
    pub async fn submit_and_wait_until(
        &self,
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Confirmed, ClientError> {
        let started = Instant::now();
        let need = self.receipts_needed();
        if self.nodes().len() < need {
            return Err(ClientError::TooFewNodes {
                have: self.nodes().len(),
                need,
            });
        }
        let hash = tx_hash(tx);
        let body = Arc::new(SubmitBody::new(std::slice::from_ref(tx), Encoding::Json));
        let mut w = Waiter::new(self, TxId::of(tx));
        let mut errors = Vec::new();

        // Phase 1: POST ?wait=true to the fanout; stop as soon as f+1 receipts match.
        let fanout = self.fanout_nodes(&hash, self.fanout());
        let mut set = JoinSet::new();
        for node in &fanout {
            let (c, node, body) = (self.clone(), node.clone(), Arc::clone(&body));
            let i = node_index(self, &node);
            set.spawn(async move {
                let timeout = c.config().wait_request_timeout;
                (
                    i,
                    c.post_retrying(&node, &body, true, timeout, deadline).await,
                )
            });
        }
        loop {
            let joined = match tokio::time::timeout_at(deadline.into(), set.join_next()).await {
                Ok(Some(j)) => j,
                Ok(None) | Err(_) => break,
            };
            let (i, r) = match joined {
                Ok(x) => x,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => continue,
            };
            match r {
                Ok(resp) => errors.extend(self.take_submit(&mut w, i, &resp)),
                Err(e) => {
                    w.last_error.insert(i, e.to_string());
                    errors.push(e);
                }
            }
            if let Some(c) = w.tally.accepted() {
                set.abort_all();
                return Ok(c);
            }
        }
        set.abort_all();

        // Nobody in the fanout took it: try every other node once before giving up.
        if !w.admitted.iter().any(|a| *a) {
            let rest: Vec<Node> = self
                .nodes()
                .iter()
                .filter(|n| !fanout.contains(n))
                .cloned()
                .collect();
            let timeout = self.config().request_timeout;
            let b = Arc::clone(&body);
            let answers = self
                .ask_all(&rest, move |c, n| {
                    let b = Arc::clone(&b);
                    async move { c.post_retrying(&n, &b, false, timeout, deadline).await }
                })
                .await;
            for (node, r) in answers {
                let i = node_index(self, &node);
                match r {
                    Ok(resp) => errors.extend(self.take_submit(&mut w, i, &resp)),
                    Err(e) => errors.push(e),
                }
            }
            if !w.admitted.iter().any(|a| *a) {
                return Err(if errors.iter().any(ClientError::is_refusal) {
                    ClientError::Rejected { hash, errors }
                } else {
                    ClientError::NoAnswer { errors }
                });
            }
        }

        // Phase 2: ask every validator, the fanout's and the others, until f+1 agree.
        self.poll(&mut w, Some(&body), deadline, started, false)
            .await
    }

    /// Counts a POST answer; a refusal of the tx comes back as the error it amounts to.
    fn take_submit(&self, w: &mut Waiter, i: usize, resp: &SubmitResponse) -> Option<ClientError> {
        // post_txs checked the answer is for exactly our one tx.
        let entry = resp.txs.first()?;
        if entry.admitted == Admitted::Refused {
            let api = entry.error.clone().unwrap_or_else(|| ApiError {
                reason: "refused".into(),
                error: "refused without a reason".into(),
                index: None,
                horizon: None,
            });
            let e = ClientError::Api {
                node: self.nodes()[i].to_string(),
                status: 400,
                api,
            };
            w.last_error.insert(i, e.to_string());
            return Some(e);
        }
        w.admitted[i] = true;
        if let Some(outcome) = &entry.outcome {
            w.take(self, i, outcome);
        }
        None
    }

    /// Asks the nodes whose receipt is missing, round after round with a growing pause,
    /// until f+1 match or `deadline`. With `resend`, a node that says it has never seen
    /// the tx gets it again (at most every `resend_interval`). With `frugal`, the first
    /// round asks only f+1 nodes: when the tx is long final (a bulk `wait_for`), that is
    /// all it takes.
    async fn poll(
        &self,
        w: &mut Waiter,
        resend: Option<&Arc<SubmitBody>>,
        deadline: Instant,
        started: Instant,
        frugal: bool,
    ) -> Result<Confirmed, ClientError> {
        let mut pause = POLL_START;
        let mut round = 0u32;
        loop {
            if let Some(c) = w.tally.accepted() {
                return Ok(c);
            }
            if Instant::now() >= deadline {
                return Err(w.timeout(started));
            }
            let mut ask: Vec<usize> = (0..self.nodes().len()).filter(|i| !w.done[*i]).collect();
            if frugal && round == 0 {
                let offset = usize::from(w.hash.0[0]) % self.nodes().len();
                ask.sort_by_key(|i| (i + self.nodes().len() - offset) % self.nodes().len());
                ask.truncate(w.tally.need());
            }
            let nodes: Vec<Node> = ask.iter().map(|i| self.nodes()[*i].clone()).collect();
            let hash = w.hash;
            let timeout = self.config().request_timeout.min(remaining(deadline));
            let answers = self
                .ask_all(&nodes, move |c, n| async move {
                    tokio::time::timeout(timeout, c.tx(&n, &hash))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ClientError::TimedOut {
                                node: n.to_string(),
                                timeout,
                            })
                        })
                })
                .await;
            let mut lost = Vec::new();
            for (node, r) in answers {
                let i = node_index(self, &node);
                match r {
                    Ok(resp) => {
                        if resp.status == stele_types::api::TxStatus::Unknown {
                            lost.push(i);
                        }
                        w.take(self, i, &resp);
                    }
                    Err(e) => {
                        w.last_error.insert(i, e.to_string());
                    }
                }
            }
            if let Some(body) = resend {
                self.resend(w, body, &lost, deadline).await;
            }
            round += 1;
            if w.tally.accepted().is_none() {
                tokio::time::sleep(pause.min(remaining(deadline))).await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }

    async fn resend(
        &self,
        w: &mut Waiter,
        body: &Arc<SubmitBody>,
        lost: &[usize],
        deadline: Instant,
    ) {
        let now = Instant::now();
        let interval = self.config().resend_interval;
        let due: Vec<usize> = lost
            .iter()
            .copied()
            .filter(|i| w.last_resend[*i].is_none_or(|t| now.duration_since(t) >= interval))
            .collect();
        if due.is_empty() {
            return;
        }
        for i in &due {
            w.last_resend[*i] = Some(now);
        }
        let nodes: Vec<Node> = due.iter().map(|i| self.nodes()[*i].clone()).collect();
        let timeout = self.config().request_timeout.min(remaining(deadline));
        let b = Arc::clone(body);
        let answers = self
            .ask_all(&nodes, move |c, n| {
                let b = Arc::clone(&b);
                async move { c.post_txs(&n, &b, false, timeout).await }
            })
            .await;
        for (node, r) in answers {
            if let Err(e) = r {
                tracing::debug!(%node, error = %e, "resending the tx failed");
            }
        }
    }

    /// `POST /txs` that retries 429s with exponential backoff (and jitter), honouring
    /// `Retry-After`, until `deadline`. Any other error is returned at once.
    pub async fn post_retrying(
        &self,
        node: &Node,
        body: &SubmitBody,
        wait: bool,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<SubmitResponse, ClientError> {
        let mut backoff = BUSY_BACKOFF_START;
        loop {
            let left = remaining(deadline);
            if left.is_zero() {
                return Err(ClientError::TimedOut {
                    node: node.to_string(),
                    timeout,
                });
            }
            match self.post_txs(node, body, wait, timeout.min(left)).await {
                Err(ClientError::Busy { retry_after, .. }) if !remaining(deadline).is_zero() => {
                    // Jitter keeps many clients that were refused together from all
                    // coming back in the same instant.
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                    let pause = retry_after
                        .unwrap_or_default()
                        .max(backoff + Duration::from_millis(jitter));
                    if pause >= remaining(deadline) {
                        return self
                            .post_txs(node, body, wait, timeout.min(remaining(deadline)))
                            .await;
                    }
                    tracing::debug!(%node, ?pause, "node busy, retrying");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(BUSY_BACKOFF_MAX);
                }
                r => return r,
            }
        }
    }

    /// Sends a batch to `fanout` validators without waiting for outcomes; returns the tx
    /// hashes in order. Batches larger than the API allows are split. A tx counts as sent
    /// when at least one validator admitted it (they relay to each other); any tx that
    /// every validator it went to refused makes this an error
    /// ([`ClientError::BatchRefused`]; [`Client::submit_batch`] reports it per tx instead).
    pub async fn submit_many(&self, txs: &[Transaction]) -> Result<Vec<TxHash>, ClientError> {
        let sent = self.submit_batch(txs).await?;
        if !sent.refused.is_empty() {
            return Err(ClientError::BatchRefused {
                total: txs.len(),
                refused: sent.refused,
            });
        }
        Ok(sent.hashes)
    }

    /// Like [`Client::submit_many`], but a tx refused everywhere is listed in
    /// [`Batch::refused`] instead of failing the call (a load generator goes on). Fails
    /// only when no validator answered a part at all.
    pub async fn submit_batch(&self, txs: &[Transaction]) -> Result<Batch, ClientError> {
        let deadline = Instant::now() + self.config().wait_timeout;
        let encoding = self.batch_encoding();
        let mut out = Batch {
            hashes: Vec::with_capacity(txs.len()),
            refused: Vec::new(),
        };
        for part in split_batches(txs) {
            let body = Arc::new(SubmitBody::new(part, encoding));
            let nodes = self.fanout_nodes(&body.hashes()[0], self.fanout());
            let timeout = self.config().request_timeout;
            let b = Arc::clone(&body);
            let answers = self
                .ask_all(&nodes, move |c, n| {
                    let b = Arc::clone(&b);
                    async move { c.post_retrying(&n, &b, false, timeout, deadline).await }
                })
                .await;
            let mut errors = Vec::new();
            let mut admitted = vec![false; part.len()];
            let mut why: Vec<Option<ApiError>> = vec![None; part.len()];
            let mut answered = false;
            for (_, r) in answers {
                match r {
                    Ok(resp) => {
                        answered = true;
                        for (k, e) in resp.txs.into_iter().enumerate() {
                            if e.admitted == Admitted::Refused {
                                why[k] = why[k].take().or(e.error);
                            } else {
                                admitted[k] = true;
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            if !answered {
                return Err(ClientError::Rejected {
                    hash: body.hashes()[0],
                    errors,
                });
            }
            let offset = out.hashes.len();
            for (k, hash) in body.hashes().iter().enumerate() {
                if !admitted[k] {
                    let api = why[k].take().unwrap_or_else(|| ApiError {
                        reason: "refused".into(),
                        error: "refused without a reason".into(),
                        index: Some(k),
                        horizon: None,
                    });
                    out.refused.push((offset + k, *hash, api));
                }
            }
            out.hashes.extend_from_slice(body.hashes());
        }
        debug_assert_eq!(out.hashes.len(), txs.len());
        Ok(out)
    }

    /// Waits for f+1 matching receipts for each of `hashes`, at most `max_in_flight` at a
    /// time, all within `wait_timeout` from now. The results are in `hashes` order.
    ///
    /// Holding only hashes, it cannot send a tx again: a tx every validator lost (all of
    /// them restarted with it in their mempools) waits out the whole timeout. A caller
    /// that still has the txs should use [`Client::wait_for_txs`].
    pub async fn wait_for(&self, hashes: &[TxHash]) -> Vec<Result<Confirmed, ClientError>> {
        self.wait_for_until(hashes, Instant::now() + self.config().wait_timeout)
            .await
    }

    /// [`Client::wait_for`] with an explicit deadline for the whole set.
    pub async fn wait_for_until(
        &self,
        hashes: &[TxHash],
        deadline: Instant,
    ) -> Vec<Result<Confirmed, ClientError>> {
        let items = hashes.iter().map(|h| (TxId::hash(*h), None)).collect();
        self.wait_all(items, deadline).await
    }

    /// Waits, like [`Client::wait_for`], for the txs a [`Client::submit_many`] sent; a
    /// validator that says it has never seen one gets it again, first `resend_interval`
    /// after this call and at most every `resend_interval` after that. A validator's
    /// mempool dies with it, so without this a tx lost in a restart of every validator
    /// would never commit.
    pub async fn wait_for_txs(&self, txs: &[Transaction]) -> Vec<Result<Confirmed, ClientError>> {
        let deadline = Instant::now() + self.config().wait_timeout;
        let encoding = self.batch_encoding();
        let items = txs
            .iter()
            .map(|tx| {
                let body = SubmitBody::new(std::slice::from_ref(tx), encoding);
                (TxId::of(tx), Some(Arc::new(body)))
            })
            .collect();
        self.wait_all(items, deadline).await
    }

    fn batch_encoding(&self) -> Encoding {
        if self.config().binary_batches {
            Encoding::Binary
        } else {
            Encoding::Json
        }
    }

    async fn wait_all(
        &self,
        items: Vec<(TxId, Option<Arc<SubmitBody>>)>,
        deadline: Instant,
    ) -> Vec<Result<Confirmed, ClientError>> {
        let started = Instant::now();
        let hashes: Vec<TxHash> = items.iter().map(|(id, _)| id.hash).collect();
        let permits = Arc::new(Semaphore::new(self.config().max_in_flight.max(1)));
        let mut set = JoinSet::new();
        for (i, (id, body)) in items.into_iter().enumerate() {
            let (c, permits) = (self.clone(), Arc::clone(&permits));
            set.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = permits.acquire_owned().await;
                let mut w = Waiter::new(&c, id);
                // The validators it went to admitted it a moment ago; one that does not
                // know it yet is most likely still receiving the relay.
                w.last_resend.fill(Some(started));
                (
                    i,
                    c.poll(&mut w, body.as_ref(), deadline, started, true).await,
                )
            });
        }
        let mut out: Vec<Option<Result<Confirmed, ClientError>>> =
            (0..hashes.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => out[i] = Some(r),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        out.into_iter()
            .zip(&hashes)
            .map(|(r, h)| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Timeout {
                        hash: *h,
                        have: 0,
                        need: self.receipts_needed(),
                        waited: started.elapsed(),
                        last: "cancelled".into(),
                    })
                })
            })
            .collect()
    }

    /// Asks every node about `hash` once and tallies the receipts.
    pub async fn query_tx(&self, hash: &TxHash) -> TxQuery {
        let h = *hash;
        let answers = self
            .ask_all(self.nodes(), move |c, n| async move { c.tx(&n, &h).await })
            .await;
        let mut tally = ReceiptTally::new(TxId::hash(h), self.receipt_checker());
        // A body first, from whichever node has it: a stale_nonce receipt is checked
        // against its sender and nonce.
        for t in answers
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok()?.tx.as_ref())
        {
            tally.learn(t);
        }
        let mut bad_receipts = Vec::new();
        for (node, r) in &answers {
            if let Ok(TxResponse {
                receipt: Some(receipt),
                used_by,
                ..
            }) = r
            {
                let checker = self.receipt_checker();
                if let Err(e) = tally.offer(checker, receipt.clone(), used_by.as_ref()) {
                    bad_receipts.push((node.clone(), e));
                }
            }
        }
        TxQuery {
            hash: h,
            answers,
            tally,
            bad_receipts,
        }
    }
}

/// Splits `txs` into parts that fit one `POST /txs`: at most [`MAX_SUBMIT_BATCH`] txs
/// and [`MAX_SUBMIT_BODY`] bytes (JSON, the larger encoding, is what is counted, with a
/// margin, so a part fits either way).
pub fn split_batches(txs: &[Transaction]) -> Vec<&[Transaction]> {
    // JSON writes every byte as two hex digits plus field names and punctuation.
    const JSON_FACTOR: usize = 3;
    let budget = MAX_SUBMIT_BODY / JSON_FACTOR;
    let mut parts = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, tx) in txs.iter().enumerate() {
        let len = codec::encoded_len(tx);
        if i > start && (i - start == MAX_SUBMIT_BATCH || bytes + len > budget) {
            parts.push(&txs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < txs.len() {
        parts.push(&txs[start..]);
    }
    debug_assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), txs.len());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{ChainBinding, ChainId, Digest, KeyPair};
    use stele_types::{Amount, RecordKey, RecordValue};

    fn put(k: &KeyPair, nonce: u64, value_len: usize) -> Transaction {
        let chain = ChainBinding::new(ChainId::new("t").unwrap(), Digest::ZERO);
        sign_tx(
            TxBody {
                sender: k.public(),
                nonce: Nonce(nonce),
                op: Op::Put {
                    key: RecordKey::new(b"k".to_vec()).unwrap(),
                    value: RecordValue::new(vec![7; value_len]).unwrap(),
                },
            },
            &chain,
            k,
        )
    }

    #[test]
    fn batches_split_at_the_tx_count_limit() {
        let k = KeyPair::generate();
        let txs: Vec<Transaction> = (0..MAX_SUBMIT_BATCH as u64 * 2 + 3)
            .map(|i| put(&k, i, 0))
            .collect();
        let parts = split_batches(&txs);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![MAX_SUBMIT_BATCH, MAX_SUBMIT_BATCH, 3]
        );
    }

    #[test]
    fn batches_split_at_the_byte_limit_and_fit_as_json() {
        let k = KeyPair::generate();
        let txs: Vec<Transaction> = (0..3000).map(|i| put(&k, i, 1024)).collect();
        let parts = split_batches(&txs);
        assert!(parts.len() > 1);
        for p in parts {
            let json = serde_json::to_vec(p).unwrap();
            assert!(json.len() <= MAX_SUBMIT_BODY, "{}", json.len());
        }
        assert!(split_batches(&[]).is_empty());
    }

    #[test]
    fn a_zero_transfer_is_caught_before_sending() {
        let k = KeyPair::generate();
        let genesis = crate::verify::tests::genesis(&crate::quorum::tests::keys(4));
        let client = Client::new(
            genesis,
            &["127.0.0.1:1".to_owned()],
            crate::ClientConfig::default(),
        )
        .unwrap();
        let err = client
            .sign(
                &k,
                Nonce(0),
                Op::Transfer {
                    to: KeyPair::generate().public(),
                    amount: Amount(0),
                },
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::Malformed(_)), "{err}");
    }
}
