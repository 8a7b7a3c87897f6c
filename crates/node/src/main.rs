//! `stele-node`: run a validator, prepare its data directory, make keys, and run a
//! whole testnet on one machine.
//!
//! Exit codes: 0 stopped cleanly; 1 a failure at run time (store, network binding);
//! 2 a configuration or data-directory problem the operator must fix; 3 halted on a
//! safety violation (divergence from a stable checkpoint).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stele_crypto::KeyPair;
use stele_node::driver::Exit;
use stele_node::run::StartError;
use stele_node::{datadir, testnet};
use stele_types::Genesis;

const AFTER_HELP: &str = "\
Quick start (a four-validator testnet on this machine):
  stele-node testnet init --config config/testnet.toml --out testnet
  stele-node testnet up --dir testnet
  stele submit transfer --to <HEX> --amount 5        # in another terminal

A validator set up by hand:
  stele-node keygen --out validator.pem              # its key; put the public key in genesis
  stele-node init --genesis genesis.json --data data # a new data directory
  stele-node run --config node.toml

A snapshot as a file (every chunk verified against the genesis, at export and at init):
  stele-node snapshot export --genesis genesis.json --out state.snap
  stele-node init --genesis genesis.json --data data --snapshot state.snap

Exit codes: 0 stopped, 1 runtime failure, 2 configuration or data-directory problem,
3 halted on a safety violation (wipe the data directory and run with --recover).";

/// A Stele validator: PBFT over QUIC, RocksDB on disk, an HTTP API with Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "stele-node", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a validator from its node.toml until SIGINT/SIGTERM.
    #[command(after_help = "\
node.toml fields (paths relative to the file):
  genesis = \"../genesis.json\"   the chain's genesis file
  key = \"validator.pem\"         this validator's key (PKCS#8 PEM, mode 0600)
  data_dir = \"data\"             RocksDB lives in data/db
  p2p_listen = \"0.0.0.0:7100\"   optional; default: the genesis p2p_addr
  api_listen = \"0.0.0.0:7200\"   optional; default: the genesis api_addr
  sync = true                   false gives up durability (benchmarks only)
  log = \"info\"                  log filter (info,stele_node=debug); RUST_LOG overrides it
  snapshot_every = 1            keep the state every N checkpoints to serve (0: none)
  snapshots_kept = 2            certified snapshots kept
  start_from_snapshot = true    a store at genesis starts from the others' snapshot
  retain_blocks = 20000         optional; keep only this many blocks below the stable
                                checkpoint (410 pruned below); unset keeps everything")]
    Run {
        /// The validator's config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Start from an empty data directory without the genesis marker: this validator
        /// lost its disk. It starts from its peers' snapshot (or replays their chain) and
        /// does not vote until it is past every vote it may have signed before.
        #[arg(long)]
        recover: bool,
        /// Test builds only (cargo feature `byzantine`): misbehave as NAME, one of
        /// silent, equivocate, bad-votes, bad-new-view, censor:<victim key hex>, accomplice.
        #[cfg(feature = "byzantine")]
        #[arg(long, value_name = "NAME")]
        byzantine: Option<stele_consensus::byzantine::Behaviour>,
        /// Test builds only (cargo feature `byzantine`): append every consensus message
        /// this validator sends to FILE before it leaves (length-prefixed, the wire
        /// encoding), so the power-loss tests can check that it never contradicts what
        /// it signed before a crash. Keep FILE off the data directory's disk.
        #[cfg(feature = "byzantine")]
        #[arg(long, value_name = "FILE")]
        record_sent: Option<PathBuf>,
    },
    /// Prepare a new data directory (with the genesis marker that lets `run` create its
    /// database).
    Init {
        /// The chain's genesis file.
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// The data directory to prepare.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Start the store from this snapshot file (`stele-node snapshot export`),
        /// verified against the genesis: the validator then fetches only the blocks above
        /// it. For a new validator; one that lost its disk uses `run --recover`.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
    },
    /// Snapshots of the state at a stable checkpoint, as files.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Generate a validator key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// A whole testnet on this machine.
    #[command(subcommand)]
    Testnet(TestnetCmd),
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Fetch the highest snapshot the validators serve (every chunk verified against the
    /// genesis) and write it to a file, for `stele-node init --snapshot`.
    Export {
        /// The chain's genesis file: the only thing trusted.
        #[arg(long, value_name = "FILE")]
        genesis: PathBuf,
        /// A validator's HTTP API to fetch from (repeat for several; default: every
        /// validator in the genesis file).
        #[arg(long = "from", value_name = "URL")]
        from: Vec<String>,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TestnetCmd {
    /// Write keys, genesis, per-validator configs and data directories.
    Init {
        /// The testnet description (validators, ports, funded accounts, parameters).
        #[arg(long, value_name = "FILE", default_value = "config/testnet.toml")]
        config: PathBuf,
        /// Where to write it.
        #[arg(long, value_name = "DIR", default_value = "testnet")]
        out: PathBuf,
    },
    /// Run every validator of a testnet directory as its own process; Ctrl-C stops them.
    Up {
        #[arg(long, value_name = "DIR", default_value = "testnet")]
        dir: PathBuf,
    },
}

/// The genesis file, or exit code 2 with the problem printed.
fn load_genesis(path: &std::path::Path) -> Result<Genesis, ExitCode> {
    Genesis::load(path).map_err(|e| {
        eprintln!("stele-node: {e}");
        ExitCode::from(2)
    })
}

/// Logs to stderr, filtered by `RUST_LOG` if it parses, else by the config's `log`, else
/// at `info`. A filter is `target=level` directives (`info,stele_node=debug,quinn=warn`):
/// `tracing_subscriber`'s `Targets`, which needs no regex engine in the node.
fn init_logs(filter: &str) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| filter.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .finish()
        .with(targets)
        .try_init();
}

/// Replaces this process with a fresh `stele-node` run with the same arguments; returns
/// only on failure.
fn restart_self() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec(),
        Err(e) => e,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stele-node: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Cmd::Run {
            config,
            recover,
            #[cfg(feature = "byzantine")]
            byzantine,
            #[cfg(feature = "byzantine")]
            record_sent,
        } => {
            let loaded = match stele_node::config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("stele-node: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logs(&loaded.config.log);
            let options = stele_node::run::Options {
                recover,
                #[cfg(feature = "byzantine")]
                byzantine,
                #[cfg(feature = "byzantine")]
                record_sent,
            };
            #[cfg(feature = "byzantine")]
            if let Some(b) = &options.byzantine {
                tracing::warn!(
                    behaviour = b.name(),
                    "BYZANTINE test build: this validator misbehaves on purpose"
                );
            }
            match rt.block_on(stele_node::run::run(loaded, options)) {
                Ok(Exit::Stopped) => ExitCode::SUCCESS,
                Ok(Exit::Halted(detail)) => {
                    eprintln!(
                        "stele-node: HALTED: {detail}. Wipe this validator's data directory and \
                         restart it with --recover."
                    );
                    ExitCode::from(3)
                }
                Ok(Exit::Resync { height, snapshot }) => {
                    // The same process, arguments and data directory, started afresh:
                    // its start installs the snapshot. Every file and socket is closed on
                    // exec, RocksDB's lock with them.
                    rt.shutdown_timeout(std::time::Duration::from_secs(5));
                    eprintln!(
                        "stele-node: at height {height}, far behind peers that serve a \
                         snapshot at {snapshot}: starting again to install it"
                    );
                    let err = restart_self();
                    eprintln!("stele-node: could not start again: {err}");
                    ExitCode::from(1)
                }
                Ok(Exit::StoreFailed(e)) => {
                    eprintln!("stele-node: stopped: {e}");
                    ExitCode::from(1)
                }
                Err(StartError::DataDir(e)) => {
                    eprintln!("stele-node: {e}");
                    ExitCode::from(2)
                }
                Err(StartError::Other(e)) => {
                    eprintln!("stele-node: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Init {
            genesis,
            data,
            snapshot: Some(file),
        } => {
            let g = match load_genesis(&genesis) {
                Ok(g) => g,
                Err(code) => return code,
            };
            match stele_node::snapshot_file::init_from(&g, &data, &file) {
                Ok(s) => {
                    println!(
                        "initialised {} for chain {} from the snapshot at height {} (state root \
                         {}, {} accounts and records); the validator fetches the blocks above it",
                        data.display(),
                        g.chain_id,
                        s.height,
                        s.state_root,
                        s.entries
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stele-node: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Snapshot(SnapshotCmd::Export { genesis, from, out }) => {
            init_logs("warn");
            let g = match load_genesis(&genesis) {
                Ok(g) => g,
                Err(code) => return code,
            };
            match rt.block_on(stele_node::snapshot_file::export(&g, &from, &out)) {
                Ok(s) => {
                    println!(
                        "wrote {} ({} bytes): the snapshot at height {}, state root {}, {} \
                         accounts and records, verified against {}",
                        out.display(),
                        s.bytes,
                        s.height,
                        s.state_root,
                        s.entries,
                        genesis.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stele-node: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Init {
            genesis,
            data,
            snapshot: None,
        } => {
            let g = match load_genesis(&genesis) {
                Ok(g) => g,
                Err(code) => return code,
            };
            match datadir::init(&data, &g) {
                Ok(()) => {
                    println!(
                        "initialised {} for chain {} (genesis {})",
                        data.display(),
                        g.chain_id,
                        g.digest()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stele-node: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Keygen { out } => {
            let k = KeyPair::generate();
            match k.save(&out) {
                Ok(()) => {
                    println!("{}", k.public());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stele-node: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Testnet(TestnetCmd::Init { config, out }) => match testnet::init(&config, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stele-node: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::Testnet(TestnetCmd::Up { dir }) => {
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("stele-node: cannot find its own executable: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(testnet::up(&dir, &exe)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stele-node: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
