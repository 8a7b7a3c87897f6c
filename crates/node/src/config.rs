//! `node.toml`: what one validator process needs, and everything it loads at start.
//!
//! Every problem is reported as one line naming the file and the field, and the process
//! exits with code 2 ([`ConfigError`]), before anything is opened or bound.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stele_crypto::KeyPair;
use stele_types::{Genesis, ReplicaId};

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

/// Everything `run` needs, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: NodeConfig,
    pub genesis: Genesis,
    pub key: KeyPair,
    pub id: ReplicaId,
    pub data_dir: PathBuf,
    pub p2p_listen: String,
    pub api_listen: String,
}

impl NodeConfig {
    /// Parses a config file's text.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
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
        })
    }

    /// Reads, parses and checks `path` with everything it names.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        let config = NodeConfig::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let genesis_path = resolve(&config.genesis);
        let genesis = Genesis::load(&genesis_path)
            .map_err(|e| ConfigError::new(path, "genesis", e.to_string()))?;
        let key_path = resolve(&config.key);
        let key =
            KeyPair::load(&key_path).map_err(|e| ConfigError::new(path, "key", e.to_string()))?;
        let vs = genesis.validator_set();
        let Some(id) = vs.id_of(&key.public()) else {
            return Err(ConfigError::new(
                path,
                "key",
                format!(
                    "public key {} of {} is not a validator in {}",
                    key.public(),
                    key_path.display(),
                    genesis_path.display()
                ),
            ));
        };
        let info = vs
            .info(id)
            .ok_or_else(|| ConfigError::new(path, "key", "validator id without an entry"))?;
        let p2p_listen = config
            .p2p_listen
            .clone()
            .unwrap_or_else(|| info.p2p_addr.clone());
        let api_listen = config
            .api_listen
            .clone()
            .unwrap_or_else(|| info.api_addr.clone());
        for (field, addr) in [("p2p_listen", &p2p_listen), ("api_listen", &api_listen)] {
            check_addr(addr).map_err(|p| ConfigError::new(path, field, p))?;
        }
        if config.log.trim().is_empty() {
            return Err(ConfigError::new(path, "log", "empty log filter"));
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            data_dir: resolve(&config.data_dir),
            config,
            genesis,
            key,
            id,
            p2p_listen,
            api_listen,
        })
    }
}

/// `host:port` with a port in 1..=65535.
pub fn check_addr(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "expected host:port with a port in 1..65535, found {addr:?}"
        )),
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
    fn sync_defaults_on() {
        let c = NodeConfig::parse(
            "genesis = \"g\"\nkey = \"k\"\ndata_dir = \"d\"\n",
            Path::new("n.toml"),
        )
        .expect("valid");
        assert!(c.sync);
        assert_eq!(c.log, "info");
    }

    #[test]
    fn bad_address_is_refused() {
        assert!(check_addr("127.0.0.1:0").is_err());
        assert!(check_addr("localhost").is_err());
        assert!(check_addr(":80").is_err());
        assert!(check_addr("127.0.0.1:7200").is_ok());
    }
}
