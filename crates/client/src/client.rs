//! The network a client talks to, and one typed call per HTTP endpoint.
//!
//! A [`Client`] holds the genesis (chain id, validator set, f and q, and the binding to
//! this genesis that its txs are signed with and receipts are checked against), the node
//! URLs and one pooled HTTP client with timeouts. Each call goes to one [`Node`] and
//! returns a typed answer or a [`ClientError`] that names the node; nothing here trusts an
//! answer beyond its shape: receipts and blocks are checked by `quorum` and `verify`.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use stele_crypto::PublicKey;
use stele_types::api::{
    AccountResponse, ApiError, BinarySubmitResponse, BlockResponse, StatusResponse, SubmitResponse,
    TxResponse, BINARY_CONTENT_TYPE,
};
use stele_types::{
    codec, ChainBinding, ChainId, Genesis, Height, ReplicaId, Transaction, TxHash, ValidatorSet,
};
use tokio::task::JoinSet;

use crate::error::ClientError;
use crate::quorum::ReceiptChecker;

/// Largest answer body read from a node. A block of `max_block_bytes` (1 MiB by default)
/// is about three times that as JSON (hex); anything much larger is a faulty node, and
/// reading it whole would let it exhaust our memory.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Longest wait honoured from a `Retry-After` header: a node cannot park us for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Timeouts, fanout and concurrency of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// One plain request (status, block, tx, account, a POST without wait).
    pub request_timeout: Duration,
    /// Opening a TCP connection; short, so a dead node is noticed quickly.
    pub connect_timeout: Duration,
    /// One `POST /txs?wait=true`: the node itself waits about 30 s for the outcome.
    pub wait_request_timeout: Duration,
    /// The whole of `submit_and_wait` / `wait_for`: f+1 receipts or give up.
    pub wait_timeout: Duration,
    /// How many validators a tx is sent to; `None` = q = n − f, so that at least f+1
    /// honest validators hold it even if f of them are faulty.
    pub fanout: Option<usize>,
    /// Most requests (or confirmations, in `wait_for`) in flight at once.
    pub max_in_flight: usize,
    /// Send batches as the binary codec encoding (smaller, faster) instead of JSON.
    pub binary_batches: bool,
    /// While waiting, a node that says it has never seen the tx (it restarted and lost
    /// its mempool, or the relay has not reached it) gets the tx again at most this often.
    pub resend_interval: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            wait_request_timeout: Duration::from_secs(35),
            wait_timeout: Duration::from_secs(60),
            fanout: None,
            max_in_flight: 64,
            binary_batches: true,
            resend_interval: Duration::from_secs(5),
        }
    }
}

/// One node's API: its base URL and, when its address is one of genesis's `api_addr`s,
/// which validator it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    pub validator: Option<ReplicaId>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.validator {
            Some(id) => write!(f, "validator {id} ({})", self.url),
            None => write!(f, "node {}", self.url),
        }
    }
}

/// How a batch of txs travels in `POST /txs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// One tx as a JSON object, several as a JSON array.
    Json,
    /// `codec::encode(&Vec<Transaction>)` as `application/octet-stream`.
    Binary,
}

/// A pre-encoded `POST /txs` body, so retries and fanout do not encode again.
#[derive(Clone, Debug)]
pub struct SubmitBody {
    content_type: &'static str,
    bytes: Vec<u8>,
    hashes: Vec<TxHash>,
}

impl SubmitBody {
    /// Encodes `txs` (at least one).
    pub fn new(txs: &[Transaction], encoding: Encoding) -> SubmitBody {
        assert!(!txs.is_empty(), "a submit body holds at least one tx");
        let (content_type, bytes) = match encoding {
            Encoding::Binary => (BINARY_CONTENT_TYPE, codec::encode(txs)),
            // Plain data with string keys: JSON encoding cannot fail.
            Encoding::Json if txs.len() == 1 => (
                "application/json",
                serde_json::to_vec(&txs[0]).expect("a tx encodes as JSON"),
            ),
            Encoding::Json => (
                "application/json",
                serde_json::to_vec(txs).expect("txs encode as JSON"),
            ),
        };
        SubmitBody {
            content_type,
            bytes,
            hashes: txs.iter().map(stele_types::tx_hash).collect(),
        }
    }

    /// The hashes of the txs it carries, in order.
    pub fn hashes(&self) -> &[TxHash] {
        &self.hashes
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty (never: it holds at least one tx).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<Node>,
    genesis: Genesis,
    validators: ValidatorSet,
    /// Shared by every tally, so a block receipt's signature is checked once.
    receipts: Arc<ReceiptChecker>,
    http: reqwest::Client,
    config: ClientConfig,
}

/// A connection to a Stele network: genesis, node URLs and a pooled HTTP client.
/// Cloning is cheap (shared), so tasks can each hold one.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// `DIR/clients/accountJ.pem`: the key of funded genesis account J of a testnet.
pub fn testnet_account_key(dir: &Path, j: usize) -> PathBuf {
    dir.join("clients").join(format!("account{j}.pem"))
}

/// `DIR/genesis.json` of a testnet.
pub fn testnet_genesis(dir: &Path) -> PathBuf {
    dir.join("genesis.json")
}

fn parse_url(raw: &str) -> Result<Url, ClientError> {
    let bad = |problem: &str| ClientError::BadUrl {
        url: raw.to_owned(),
        problem: problem.to_owned(),
    };
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad(
            "only http:// is supported (the validator API is plain HTTP)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a base URL takes no query or fragment"));
    }
    Ok(url)
}

fn host_port(url: &Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

impl Client {
    /// A client for `genesis` talking to the nodes at `urls` (`http://host:port` or
    /// `host:port`). A URL whose `host:port` is a validator's `api_addr` is known as that
    /// validator; receipts are trusted by their signatures either way.
    pub fn new(
        genesis: Genesis,
        urls: &[String],
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let mut nodes = Vec::with_capacity(urls.len());
        for raw in urls {
            let url = parse_url(raw)?;
            let addr = host_port(&url);
            let validator = genesis
                .validators
                .iter()
                .position(|v| Some(&v.api_addr) == addr.as_ref())
                .map(|i| ReplicaId(i as u16));
            let url = url.as_str().trim_end_matches('/').to_owned();
            if nodes.iter().any(|n: &Node| n.url == url) {
                return Err(ClientError::BadUrl {
                    url,
                    problem: "listed twice".into(),
                });
            }
            nodes.push(Node { url, validator });
        }
        if nodes.is_empty() {
            return Err(ClientError::BadUrl {
                url: String::new(),
                problem: "no node URL given".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_in_flight.max(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let validators = genesis.validator_set();
        Ok(Client {
            inner: Arc::new(Inner {
                nodes,
                genesis,
                receipts: Arc::new(ReceiptChecker::new(validators.clone())),
                validators,
                http,
                config,
            }),
        })
    }

    /// A client for the testnet in `dir` (written by `stele-node testnet init`): its
    /// `genesis.json`, and every validator's `api_addr` as a node.
    pub fn from_testnet(dir: &Path, config: ClientConfig) -> Result<Client, ClientError> {
        let path = testnet_genesis(dir);
        if !path.is_file() {
            return Err(ClientError::Testnet {
                path: dir.to_path_buf(),
                problem: format!(
                    "no {} here: write a testnet with `stele-node testnet init` (or `make \
                     testnet`), or name one with --testnet DIR, or give --nodes and --genesis",
                    path.display()
                ),
            });
        }
        let genesis = Genesis::load(&path)?;
        let urls: Vec<String> = genesis
            .validators
            .iter()
            .map(|v| format!("http://{}", v.api_addr))
            .collect();
        Client::new(genesis, &urls, config)
    }

    /// A client for explicit node URLs and a genesis file.
    pub fn from_nodes(
        urls: &[String],
        genesis: &Path,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        Client::new(Genesis::load(genesis)?, urls, config)
    }

    /// The same network and connection pool with another configuration (say, a fanout
    /// of 1 for a load generator beside the default client).
    pub fn with_config(&self, config: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                nodes: self.inner.nodes.clone(),
                genesis: self.inner.genesis.clone(),
                validators: self.inner.validators.clone(),
                receipts: Arc::clone(&self.inner.receipts),
                http: self.inner.http.clone(),
                config,
            }),
        }
    }

    /// The nodes, in the order given (validator order for a testnet).
    pub fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.inner.genesis
    }

    /// The validator set (keys that may sign receipts and commits).
    pub fn validators(&self) -> &ValidatorSet {
        &self.inner.validators
    }

    /// Checks receipts against the validator set, each block receipt's signature once.
    pub fn receipt_checker(&self) -> &ReceiptChecker {
        &self.inner.receipts
    }

    /// The chain id every tx must carry.
    pub fn chain_id(&self) -> &ChainId {
        &self.inner.genesis.chain_id
    }

    /// What every signature on this chain is bound to, txs and receipts alike: the chain
    /// id and the digest of the genesis this client was given. Derived once, when the
    /// client is made; a client given another genesis (an older chain under the same id)
    /// signs txs no validator of this chain accepts.
    pub fn chain(&self) -> &ChainBinding {
        self.inner.validators.chain()
    }

    /// f: how many validators may be faulty.
    pub fn f(&self) -> usize {
        self.inner.validators.f()
    }

    /// f+1: matching receipts that accept a result.
    pub fn receipts_needed(&self) -> usize {
        self.f() + 1
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many nodes a tx is sent to: the configured fanout (q by default), at least 1
    /// and at most the nodes known.
    pub fn fanout(&self) -> usize {
        let q = self.inner.validators.quorum();
        self.inner
            .config
            .fanout
            .unwrap_or(q)
            .clamp(1, self.inner.nodes.len())
    }

    /// `k` nodes to send the tx named `hash` to: consecutive from an offset the hash
    /// picks, so many clients spread their load over all validators.
    pub fn fanout_nodes(&self, hash: &TxHash, k: usize) -> Vec<Node> {
        let nodes = &self.inner.nodes;
        let k = k.min(nodes.len());
        let start = usize::from(hash.0[0]) % nodes.len();
        (0..k)
            .map(|i| nodes[(start + i) % nodes.len()].clone())
            .collect()
    }

    /// `GET /status`.
    pub async fn status(&self, node: &Node) -> Result<StatusResponse, ClientError> {
        self.get(node, "/status")
            .await?
            .ok_or_else(|| not_found(node, "/status"))
    }

    /// `GET /blocks/{height}`; `None` when that height is not committed there yet.
    pub async fn block(
        &self,
        node: &Node,
        height: Height,
    ) -> Result<Option<BlockResponse>, ClientError> {
        let b: Option<BlockResponse> = self.get(node, &format!("/blocks/{height}")).await?;
        if let Some(b) = &b {
            if b.height != height {
                return Err(ClientError::BadResponse {
                    node: node.to_string(),
                    detail: format!("asked for block {height}, got block {}", b.height),
                });
            }
        }
        Ok(b)
    }

    /// `GET /txs/{hash}`; a node that does not know the tx answers `unknown` (a 404 is
    /// read the same way).
    pub async fn tx(&self, node: &Node, hash: &TxHash) -> Result<TxResponse, ClientError> {
        let r: Option<TxResponse> = self.get(node, &format!("/txs/{hash}")).await?;
        let r = r.unwrap_or_else(|| TxResponse::unknown(*hash));
        if r.hash != *hash {
            return Err(ClientError::BadResponse {
                node: node.to_string(),
                detail: format!("asked for tx {hash}, got tx {}", r.hash),
            });
        }
        Ok(r)
    }

    /// `GET /accounts/{key}`; `None` when the key has no account there.
    pub async fn account(
        &self,
        node: &Node,
        key: &PublicKey,
    ) -> Result<Option<AccountResponse>, ClientError> {
        let a: Option<AccountResponse> = self.get(node, &format!("/accounts/{key}")).await?;
        if let Some(a) = &a {
            if a.key != *key {
                return Err(ClientError::BadResponse {
                    node: node.to_string(),
                    detail: format!("asked for account {key}, got account {}", a.key),
                });
            }
        }
        Ok(a)
    }

    /// One `POST /txs` (no retry). With `wait`, the node holds the answer until each
    /// tx's outcome is final (or about 30 s); 429 comes back as [`ClientError::Busy`].
    pub async fn post_txs(
        &self,
        node: &Node,
        body: &SubmitBody,
        wait: bool,
        timeout: Duration,
    ) -> Result<SubmitResponse, ClientError> {
        let url = format!("{}/txs{}", node.url, if wait { "?wait=true" } else { "" });
        let mut req = self
            .inner
            .http
            .post(&url)
            .header(CONTENT_TYPE, body.content_type)
            .body(body.bytes.clone())
            .timeout(timeout);
        // A client that sends binary reads binary: the answer's receipts are most of its
        // bytes, and in JSON each carried its block receipt again, in hex. The answer is
        // read by its own content type, so a validator answering JSON is still understood.
        if body.content_type == BINARY_CONTENT_TYPE {
            req = req.header(ACCEPT, BINARY_CONTENT_TYPE);
        }
        let (status, resp) = self
            .send_with(node, req, timeout, |binary, bytes| {
                if !binary {
                    return serde_json::from_slice(bytes).map_err(|e| e.to_string());
                }
                codec::decode::<BinarySubmitResponse>(bytes, MAX_RESPONSE_BYTES)
                    .map_err(|e| e.to_string())?
                    .into_response()
                    .map_err(|e| e.to_string())
            })
            .await?;
        let Some(resp) = resp else {
            return Err(ClientError::BadResponse {
                node: node.to_string(),
                detail: format!("POST /txs answered HTTP {status} without a body"),
            });
        };
        let got: Vec<TxHash> = resp.txs.iter().map(|e| e.hash).collect();
        if got != body.hashes {
            return Err(ClientError::BadResponse {
                node: node.to_string(),
                detail: format!(
                    "POST /txs of {} txs answered for {} txs, or for other hashes",
                    body.hashes.len(),
                    got.len()
                ),
            });
        }
        Ok(resp)
    }

    /// Runs `call` on each of `nodes` concurrently; the answers come back in `nodes` order.
    pub async fn ask_all<T, F, Fut>(
        &self,
        nodes: &[Node],
        call: F,
    ) -> Vec<(Node, Result<T, ClientError>)>
    where
        T: Send + 'static,
        F: Fn(Client, Node) -> Fut,
        Fut: Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let fut = call(self.clone(), node.clone());
            set.spawn(async move { (i, fut.await) });
        }
        let mut out: Vec<Option<Result<T, ClientError>>> = (0..nodes.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => out[i] = Some(r),
                // Our own tasks only panic on a bug; surface it rather than hide it.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        nodes
            .iter()
            .cloned()
            .zip(out)
            .map(|(n, r)| {
                let r = r.unwrap_or_else(|| {
                    Err(ClientError::Unreachable {
                        node: n.to_string(),
                        detail: "request cancelled".into(),
                    })
                });
                (n, r)
            })
            .collect()
    }

    /// `GET /status` of every node.
    pub async fn statuses(&self) -> Vec<(Node, Result<StatusResponse, ClientError>)> {
        self.ask_all(self.nodes(), |c, n| async move { c.status(&n).await })
            .await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        let timeout = self.inner.config.request_timeout;
        let req = self
            .inner
            .http
            .get(format!("{}{path}", node.url))
            .timeout(timeout);
        Ok(self.send(node, req, timeout).await?.1)
    }

    /// Sends and reads one answer: `Some` for a 2xx with a body of type `T`, `None` for
    /// a 404, a typed error otherwise.
    async fn send<T: DeserializeOwned>(
        &self,
        node: &Node,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, Option<T>), ClientError> {
        self.send_with(node, req, timeout, |_, bytes| {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())
        })
        .await
    }

    /// [`Client::send`], with the 2xx body parsed by `parse(binary, bytes)`: `binary` when
    /// the answer's content type is [`BINARY_CONTENT_TYPE`].
    async fn send_with<T>(
        &self,
        node: &Node,
        req: reqwest::RequestBuilder,
        timeout: Duration,
        parse: impl FnOnce(bool, &[u8]) -> Result<T, String>,
    ) -> Result<(StatusCode, Option<T>), ClientError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| transport_error(node, &e, timeout))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let binary = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(BINARY_CONTENT_TYPE));
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_error(node, &e, timeout))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ClientError::BadResponse {
                    node: node.to_string(),
                    detail: format!("answer longer than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        let api_error = || serde_json::from_slice::<ApiError>(&body).ok();
        if status.is_success() {
            let value = parse(binary, &body).map_err(|e| ClientError::BadResponse {
                node: node.to_string(),
                detail: format!("HTTP {status} with a body that does not parse: {e}"),
            })?;
            return Ok((status, Some(value)));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok((status, None));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ClientError::Busy {
                node: node.to_string(),
                retry_after,
                reason: api_error().map(|a| a.reason),
            });
        }
        match api_error() {
            Some(api) => Err(ClientError::Api {
                node: node.to_string(),
                status: status.as_u16(),
                api,
            }),
            None => Err(ClientError::BadResponse {
                node: node.to_string(),
                detail: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }),
        }
    }
}

fn not_found(node: &Node, path: &str) -> ClientError {
    ClientError::BadResponse {
        node: node.to_string(),
        detail: format!("{path} answered 404"),
    }
}

fn transport_error(node: &Node, e: &reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_timeout() {
        return ClientError::TimedOut {
            node: node.to_string(),
            timeout,
        };
    }
    // reqwest's own message is terse ("error sending request"); the cause is below it.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    ClientError::Unreachable {
        node: node.to_string(),
        detail,
    }
}

/// Time left until `deadline`, zero when past.
pub(crate) fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_host_port_or_http_and_refuse_the_rest() {
        assert_eq!(
            parse_url("127.0.0.1:7200").unwrap().as_str(),
            "http://127.0.0.1:7200/"
        );
        assert_eq!(
            parse_url("http://localhost:7200/").unwrap().as_str(),
            "http://localhost:7200/"
        );
        for bad in [
            "",
            "https://x:1",
            "ftp://x",
            "http://x:1/?a=b",
            "http://:80",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn submit_body_carries_hashes_in_order() {
        use stele_crypto::KeyPair;
        use stele_types::{Amount, Nonce, Op, TxBody};
        let k = KeyPair::generate();
        let chain = ChainBinding::new(ChainId::new("t").unwrap(), stele_crypto::Digest::ZERO);
        let txs: Vec<Transaction> = (0..3)
            .map(|i| {
                stele_types::tx::sign_tx(
                    TxBody {
                        sender: k.public(),
                        nonce: Nonce(i),
                        op: Op::Transfer {
                            to: KeyPair::generate().public(),
                            amount: Amount(10),
                        },
                    },
                    &chain,
                    &k,
                )
            })
            .collect();
        let b = SubmitBody::new(&txs, Encoding::Binary);
        assert_eq!(b.hashes().len(), 3);
        assert_eq!(b.hashes()[2], stele_types::tx_hash(&txs[2]));
        let back: Vec<Transaction> = codec::decode(&b.bytes, 1 << 20).unwrap();
        assert_eq!(back, txs);
        let j = SubmitBody::new(&txs[..1], Encoding::Json);
        let one: Transaction = serde_json::from_slice(&j.bytes).unwrap();
        assert_eq!(one, txs[0]);
    }
}
