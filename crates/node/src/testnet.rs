//! `stele-node testnet init` and `testnet up`: a whole chain on one machine from
//! `config/testnet.toml` — keys, genesis, per-validator configs and initialised data
//! directories — and its validators run as separate processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use stele_crypto::{ChainId, KeyPair};
use stele_types::{Amount, Genesis, GenesisAccount, Params, ValidatorInfo};

use crate::config::{ConfigError, NodeConfig};
use crate::datadir;

/// `config/testnet.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestnetConfig {
    pub chain_id: String,
    /// Number of validators (at least 4).
    #[serde(default = "four")]
    pub validators: usize,
    /// Every validator's host, unless `hosts` names one per validator.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Address the processes bind (`0.0.0.0` in containers); default: their host.
    #[serde(default)]
    pub listen_host: Option<String>,
    /// Validator i: QUIC at base_port + i, HTTP API at base_port + 100 + i.
    #[serde(default = "base_port")]
    pub base_port: u16,
    /// Funded accounts, each with `balance`; their keys go to `clients/accountJ.pem`.
    #[serde(default = "accounts")]
    pub accounts: usize,
    #[serde(default = "balance")]
    pub balance: u64,
    /// Written into every node.toml; see `NodeConfig::sync`.
    #[serde(default = "yes")]
    pub sync: bool,
    /// Written into every node.toml; see `NodeConfig::retain_blocks` (unset: keep every
    /// block).
    #[serde(default)]
    pub retain_blocks: Option<u64>,
    /// Protocol parameters; any left out take their defaults.
    #[serde(default)]
    pub params: Params,
}

fn four() -> usize {
    4
}
fn base_port() -> u16 {
    7100
}
fn accounts() -> usize {
    64
}
fn balance() -> u64 {
    1_000_000_000
}
fn yes() -> bool {
    true
}

impl TestnetConfig {
    pub fn load(path: &Path) -> Result<TestnetConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
        let c: TestnetConfig = toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                path,
                "(file)",
                e.message().lines().next().unwrap_or("invalid TOML"),
            )
        })?;
        if c.validators < 4 {
            return Err(ConfigError::new(
                path,
                "validators",
                format!(
                    "at least 4 (n = 3f + 1 with f >= 1), found {}",
                    c.validators
                ),
            ));
        }
        if let Some(h) = &c.hosts {
            if h.len() != c.validators {
                return Err(ConfigError::new(
                    path,
                    "hosts",
                    format!("{} hosts for {} validators", h.len(), c.validators),
                ));
            }
        }
        if usize::from(c.base_port) + 100 + c.validators > usize::from(u16::MAX) {
            return Err(ConfigError::new(
                path,
                "base_port",
                "ports would pass 65535",
            ));
        }
        if c.accounts == 0 {
            return Err(ConfigError::new(path, "accounts", "at least 1"));
        }
        Ok(c)
    }

    fn host(&self, i: usize) -> String {
        match &self.hosts {
            Some(h) => h[i].clone(),
            None => self.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        }
    }
}

/// Where `init` puts validator i.
pub fn node_dir(out: &Path, i: usize) -> PathBuf {
    out.join(format!("node{i}"))
}

/// `testnet init`: writes `out/genesis.json`, `out/nodeI/{node.toml, validator.pem, data/}`
/// and `out/clients/accountJ.pem`.
pub fn init(config_path: &Path, out: &Path) -> anyhow::Result<()> {
    let c = TestnetConfig::load(config_path)?;
    if out.join("genesis.json").exists() {
        bail!(
            "{} already holds a testnet (genesis.json); remove the directory to start afresh",
            out.display()
        );
    }
    let chain_id = ChainId::new(&c.chain_id)
        .map_err(|e| ConfigError::new(config_path, "chain_id", e.to_string()))?;
    std::fs::create_dir_all(out.join("clients"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut validators = Vec::new();
    let mut keys = Vec::new();
    for i in 0..c.validators {
        let key = KeyPair::generate();
        let host = c.host(i);
        let port = usize::from(c.base_port) + i;
        validators.push(ValidatorInfo {
            key: key.public(),
            p2p_addr: format!("{host}:{port}"),
            api_addr: format!("{host}:{}", port + 100),
        });
        keys.push(key);
    }
    let mut accounts = Vec::new();
    for j in 0..c.accounts {
        let key = KeyPair::generate();
        let path = out.join("clients").join(format!("account{j}.pem"));
        key.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        accounts.push(GenesisAccount {
            key: key.public(),
            balance: Amount(c.balance),
        });
    }
    let genesis = Genesis {
        chain_id,
        genesis_time_ms: stele_transport::unix_ms(),
        validators,
        accounts,
        params: c.params.clone(),
    };
    if let Err((field, problem)) = genesis.validate() {
        bail!(ConfigError::new(config_path, &field, problem));
    }
    let genesis_path = out.join("genesis.json");
    std::fs::write(&genesis_path, genesis.to_json())
        .with_context(|| format!("writing {}", genesis_path.display()))?;
    for (i, key) in keys.iter().enumerate() {
        let dir = node_dir(out, i);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        key.save(&dir.join("validator.pem"))
            .with_context(|| format!("writing {}", dir.join("validator.pem").display()))?;
        let listen = c.listen_host.as_ref().map(|h| {
            let port = usize::from(c.base_port) + i;
            (format!("{h}:{port}"), format!("{h}:{}", port + 100))
        });
        let node = NodeConfig {
            genesis: PathBuf::from("../genesis.json"),
            key: PathBuf::from("validator.pem"),
            data_dir: PathBuf::from("data"),
            p2p_listen: listen.as_ref().map(|l| l.0.clone()),
            api_listen: listen.map(|l| l.1),
            sync: c.sync,
            log: "info".into(),
            snapshot_every: 1,
            snapshots_kept: 2,
            start_from_snapshot: true,
            retain_blocks: c.retain_blocks,
        };
        let text = format!(
            "# Validator {i} of testnet {}. See `stele-node run --help`.\n{}",
            c.chain_id,
            toml::to_string(&node).context("writing node.toml")?
        );
        std::fs::write(dir.join("node.toml"), text)
            .with_context(|| format!("writing {}", dir.join("node.toml").display()))?;
        datadir::init(&dir.join("data"), &genesis)?;
    }
    println!(
        "testnet {} with {} validators and {} funded accounts in {}",
        c.chain_id,
        c.validators,
        c.accounts,
        out.display()
    );
    Ok(())
}

/// `testnet up`: runs every validator of `dir` as its own process until Ctrl-C.
pub async fn up(dir: &Path, exe: &Path) -> anyhow::Result<()> {
    let genesis_path = dir.join("genesis.json");
    let genesis = Genesis::load(&genesis_path).with_context(|| {
        format!(
            "{} is not a testnet directory (run `stele-node testnet init --out {}` first)",
            dir.display(),
            dir.display()
        )
    })?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for (i, v) in genesis.validators.iter().enumerate() {
        let nd = node_dir(dir, i);
        let log_path = nd.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(nd.join("node.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting validator {i} ({})", exe.display()))?;
        println!(
            "validator {i}: pid {:>7}  API http://{}  QUIC {}  log {}",
            child.id(),
            v.api_addr,
            v.p2p_addr,
            log_path.display()
        );
        children.push((i, child));
    }
    println!(
        "\n{} validators running. Try `stele status --testnet {}`. Ctrl-C stops them all.",
        children.len(),
        dir.display()
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // SIGTERM too, so that stopping `up` from a script or a service manager stops the
    // validators rather than orphaning them.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stopped_by_user = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break true,
            _ = term.recv() => break true,
            _ = tick.tick() => {
                for (i, c) in children.iter_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("validator {i} exited ({status}); see {}", node_dir(dir, *i).join("node.log").display());
                    }
                }
                children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
                if children.is_empty() {
                    break false;
                }
            }
        }
    };
    // SIGTERM, so each validator stops in order (unsafe code is forbidden here, so
    // the signal goes through kill(1) rather than libc).
    for (_, c) in &children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
    }
    for (i, c) in children.iter_mut() {
        match c.wait() {
            Ok(s) => println!("validator {i} stopped ({s})"),
            Err(e) => eprintln!("validator {i}: {e}"),
        }
    }
    if !stopped_by_user {
        bail!("every validator exited");
    }
    Ok(())
}
