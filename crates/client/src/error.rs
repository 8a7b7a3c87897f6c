//! The client's typed errors.
//!
//! Every error that comes from a node names that node (validator id and URL) and says
//! what was expected and what came back; an [`ApiError`] body is kept whole so callers
//! can branch on its stable `reason`. Binaries wrap these in `anyhow` context.

use std::path::PathBuf;
use std::time::Duration;

use stele_types::api::ApiError;
use stele_types::{GenesisError, TxHash};

/// What went wrong talking to the network or setting the client up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{node}: cannot reach it: {detail}")]
    Unreachable { node: String, detail: String },

    #[error("{node}: no answer within {timeout:?}")]
    TimedOut { node: String, timeout: Duration },

    /// A 4xx (or 5xx) with the node's JSON reason.
    #[error("{node}: refused with HTTP {status}: {} ({})", .api.error, .api.reason)]
    Api {
        node: String,
        status: u16,
        api: ApiError,
    },

    /// 429: the mempool or the sender's quota is full; retried by the submit paths.
    #[error("{node}: busy (HTTP 429{}){}", suffix(.reason.as_deref()), retry_suffix(.retry_after))]
    Busy {
        node: String,
        retry_after: Option<Duration>,
        reason: Option<String>,
    },

    /// An answer that is not what the API promises (wrong status, bad JSON, wrong hash).
    #[error("{node}: unexpected answer: {detail}")]
    BadResponse { node: String, detail: String },

    #[error("key {key} has no account at any node that answered ({answered} of {asked})")]
    NoAccount {
        key: String,
        answered: usize,
        asked: usize,
    },

    #[error("no node answered: {}", join(.errors))]
    NoAnswer { errors: Vec<ClientError> },

    /// Every node the tx was sent to refused it at admission.
    #[error("tx {hash} was refused by every node it was sent to: {}", join(.errors))]
    Rejected {
        hash: TxHash,
        errors: Vec<ClientError>,
    },

    /// Some txs of a batch were refused by every validator they were sent to.
    #[error("{} of {total} txs were refused everywhere; the first: {}", .refused.len(), first_refusal(.refused))]
    BatchRefused {
        total: usize,
        refused: Vec<(usize, TxHash, ApiError)>,
    },

    #[error(
        "tx {hash}: {have} matching signed receipts after {waited:?}, f+1 = {need} needed \
         (best answers: {last})"
    )]
    Timeout {
        hash: TxHash,
        have: usize,
        need: usize,
        waited: Duration,
        last: String,
    },

    #[error(
        "{have} node URLs cannot give the f+1 = {need} receipts a result needs: list more \
         validators"
    )]
    TooFewNodes { have: usize, need: usize },

    #[error("bad node URL {url:?}: {problem}")]
    BadUrl { url: String, problem: String },

    #[error(transparent)]
    Genesis(#[from] GenesisError),

    #[error("testnet directory {path}: {problem}")]
    Testnet { path: PathBuf, problem: String },

    #[error("cannot build the HTTP client: {0}")]
    Http(String),

    #[error("tx is not well-formed: {0}")]
    Malformed(String),
}

fn suffix(reason: Option<&str>) -> String {
    reason.map(|r| format!(", {r}")).unwrap_or_default()
}

fn retry_suffix(after: &Option<Duration>) -> String {
    after
        .map(|d| format!(", retry after {d:?}"))
        .unwrap_or_default()
}

fn first_refusal(refused: &[(usize, TxHash, ApiError)]) -> String {
    refused.first().map_or_else(String::new, |(i, h, e)| {
        format!("tx #{i} {h}: {} ({})", e.error, e.reason)
    })
}

fn join(errors: &[ClientError]) -> String {
    if errors.is_empty() {
        return "no node was asked".to_owned();
    }
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClientError {
    /// The API's `reason` when a node refused with a JSON body.
    pub fn api_reason(&self) -> Option<&str> {
        match self {
            ClientError::Api { api, .. } => Some(&api.reason),
            ClientError::Busy { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Whether a node answered and definitely refused (as opposed to being down, slow
    /// or busy): such an answer is worth reporting instead of waiting on.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if (400..500).contains(status) && *status != 429)
    }
}
