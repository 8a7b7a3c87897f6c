//! `node.toml`, the config file of one validator: its fields and its parser.
//!
//! Here rather than in stele-node so the fuzzer reaches the parser without the node's
//! dependencies; stele-node re-exports both types and loads what the file names. Every
//! problem is one line naming the file and the field ([`ConfigError`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The config file of one validator. Relative paths are relative to the file's folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The chain's genesis file, shared by every validator.
    pub genesis: PathBuf,
    /// This validator's Ed25519 key (PKCS#8 PEM, mode 0600); it must be in genesis.
    pub key: PathBuf,
    /// Where RocksDB keeps this validator's chain and consensus state.
    pub data_dir: PathBuf,
    /// Address the QUIC endpoint binds; default: this validator's genesis `p2p_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p_listen: Option<String>,
    /// Address the HTTP API binds; default: this validator's genesis `api_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<String>,
    /// Sync every commit and every consensus write to disk before going on (default:
    /// true). `false` gives up durability: a machine crash may lose blocks clients were
    /// told are committed and votes already sent (safety rules 3 and 4). Benchmarks only;
    /// `stele bench` refuses to report a run against such a node.
    #[serde(default = "yes")]
    pub sync: bool,
    /// Log filter (`info`, `stele_node=debug,info`, ...); `RUST_LOG` overrides it.
    #[serde(default = "info")]
    pub log: String,
    /// Keep the state at every `snapshot_every`-th checkpoint height, to serve to
    /// validators that start from a snapshot instead of replaying every block (default:
    /// 1, every checkpoint; 0 keeps none). Each is a small RocksDB of the accounts and
    /// records in `data_dir/snapshots`, written beside later blocks; a snapshot height
    /// reached while the one before is still being written is passed over.
    #[serde(default = "one")]
    pub snapshot_every: u64,
    /// How many snapshots with a stable checkpoint certificate to keep (default: 2). A
    /// validator syncing from this one needs its snapshot to stay while it fetches it.
    #[serde(default = "two")]
    pub snapshots_kept: usize,
    /// Whether a store at genesis (a new validator, or one restarted with `--recover`)
    /// first tries to start from a peer's snapshot (default: true). `false` replays every
    /// block from genesis: an archive validator that must hold the whole history.
    #[serde(default = "yes")]
    pub start_from_snapshot: bool,
    /// Keep only this many blocks below the stable checkpoint (default: unset, keep
    /// everything, an archive). Older blocks, their certificates and their tx and nonce
    /// index entries are removed after each stable checkpoint and the space compacted;
    /// queries below the horizon answer 410 `pruned`. A kept snapshot's block always
    /// stays, so peers can still start from it. A validator of this chain that is down
    /// for longer than its peers retain catches up only by restarting from a snapshot
    /// (empty data directory and `--recover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_blocks: Option<u64>,
}

fn one() -> u64 {
    1
}

fn two() -> usize {
    2
}

fn yes() -> bool {
    true
}

fn info() -> String {
    "info".into()
}

/// A config problem: one line, naming the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.display().to_string(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl NodeConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let c: NodeConfig = toml::from_str(text).map_err(|e| {
            // toml names the key in its message; keep its first line, which says what
            // was expected and where.
            let msg = e.message().to_string();
            let field = e
                .span()
                .and_then(|s| text.get(s))
                .map(|t| t.split('=').next().unwrap_or(t).trim().to_string())
                .filter(|t| !t.is_empty() && t.len() < 40)
                .unwrap_or_else(|| "(file)".into());
            ConfigError::new(path, &field, msg.lines().next().unwrap_or("invalid TOML"))
        })?;
        if c.snapshots_kept == 0 {
            return Err(ConfigError::new(
                path,
                "snapshots_kept",
                "must be at least 1 (set snapshot_every = 0 to keep no snapshot)",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_field_names_the_field() {
        let e = NodeConfig::parse(
            "genesis = \"g.json\"\nkey = \"k.pem\"\n",
            Path::new("n.toml"),
        )
        .expect_err("data_dir is missing");
        let line = e.to_string();
        assert!(line.starts_with("n.toml: "), "{line}");
        assert!(line.contains("data_dir"), "{line}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = NodeConfig::parse(
            "genesis = \"g\"\nkey = \"k\"\ndata_dir = \"d\"\nsink = false\n",
            Path::new("n.toml"),
        )
        .expect_err("typo");
        assert!(e.to_string().contains("sink"), "{e}");
    }

    #[test]
    fn snapshots_default_to_every_checkpoint_two_kept_and_none_kept_is_refused() {
        let c = NodeConfig::parse(
            "genesis = \"g\"\nkey = \"k\"\ndata_dir = \"d\"\n",
            Path::new("n"),
        )
        .unwrap();
        assert_eq!((c.snapshot_every, c.snapshots_kept), (1, 2));
        let e = NodeConfig::parse(
            "genesis = \"g\"\nkey = \"k\"\ndata_dir = \"d\"\nsnapshots_kept = 0\n",
            Path::new("n.toml"),
        )
        .expect_err("zero kept");
        assert!(e.to_string().starts_with("n.toml: snapshots_kept: "), "{e}");
    }

    #[test]
    fn sync_defaults_on() {
        let c = NodeConfig::parse(
            "genesis = \"g\"\nkey = \"k\"\ndata_dir = \"d\"\n",
            Path::new("n.toml"),
        )
        .expect("valid");
        assert!(c.sync);
        assert_eq!(c.log, "info");
    }
}
