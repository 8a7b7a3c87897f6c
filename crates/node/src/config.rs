//! `node.toml`: what one validator process needs, and everything it loads at start.
//!
//! Every problem is reported as one line naming the file and the field, and the process
//! exits with code 2 ([`ConfigError`]), before anything is opened or bound.

use std::path::{Path, PathBuf};

use stele_crypto::KeyPair;
use stele_types::{Genesis, ReplicaId};

// The file's fields and parser live in stele-types, where the fuzzer reaches them.
pub use stele_types::node_config::{ConfigError, NodeConfig};

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
    let key = KeyPair::load(&key_path).map_err(|e| ConfigError::new(path, "key", e.to_string()))?;
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
    check_log_filter(&config.log).map_err(|p| ConfigError::new(path, "log", p))?;
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

/// A log filter the node can use: `target=level` directives separated by commas, a bare
/// level for everything else (`info,stele_node=debug,quinn=warn`).
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("empty log filter".into());
    }
    filter
        .parse::<tracing_subscriber::filter::Targets>()
        .map(|_| ())
        .map_err(|e| {
            format!("{filter:?} is not a log filter ({e}): use target=level directives, as in \"info,stele_node=debug\"")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters() {
        for good in [
            "info",
            "debug",
            "info,stele_node=debug,quinn=warn",
            "stele_node::driver=trace",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in ["", "  ", "stele_node=loud", "info,=debug=x"] {
            assert!(check_log_filter(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn bad_address_is_refused() {
        assert!(check_addr("127.0.0.1:0").is_err());
        assert!(check_addr("localhost").is_err());
        assert!(check_addr(":80").is_err());
        assert!(check_addr("127.0.0.1:7200").is_ok());
    }
}
