//! The data directory and its genesis marker (DESIGN.md, "Recovery of a wiped validator").
//!
//! `init` leaves a marker naming the genesis digest; `run` creates a database only where
//! the marker is. An empty directory without it is a validator that lost its disk: it
//! may have voted before, so it must not start as if new; it needs `--recover`.

use std::path::{Path, PathBuf};

use stele_crypto::Digest;
use stele_types::Genesis;

/// The marker's file name inside the data directory.
pub const MARKER: &str = "GENESIS_MARKER";
/// RocksDB's own folder inside the data directory.
pub const DB_DIR: &str = "db";

/// How `run` may open a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A database exists: open it.
    Existing,
    /// Fresh from `init` (marker present): create the database, then remove the marker.
    Fresh,
    /// Wiped, and the operator said `--recover`: create it and recover from peers.
    Recover,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "data directory {0} holds no database and no genesis marker: this validator may have \
         voted before and lost its disk. Restart it with --recover to rejoin safely, or \
         prepare a brand-new validator with `stele-node init`"
    )]
    NeedsRecover(PathBuf),
    #[error("data directory {path}: the genesis marker names genesis {found}, the config's genesis is {expected}")]
    WrongGenesis {
        path: PathBuf,
        expected: Digest,
        found: String,
    },
    #[error("data directory {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("data directory {0} already holds a database; `init` prepares only new ones")]
    AlreadyInitialised(PathBuf),
}

fn io<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// The database folder of a data directory.
pub fn db_path(data: &Path) -> PathBuf {
    data.join(DB_DIR)
}

fn has_db(data: &Path) -> bool {
    db_path(data).join("CURRENT").exists()
}

/// `stele-node init`: creates `data` with a genesis marker.
pub fn init(data: &Path, genesis: &Genesis) -> Result<(), DataDirError> {
    if has_db(data) {
        return Err(DataDirError::AlreadyInitialised(data.to_path_buf()));
    }
    std::fs::create_dir_all(data).map_err(io(data, "create"))?;
    let marker = data.join(MARKER);
    std::fs::write(&marker, format!("{}\n", genesis.digest()))
        .map_err(io(&marker, "write the genesis marker"))?;
    Ok(())
}

/// Decides how `run` opens `data`.
pub fn opening(data: &Path, genesis: &Genesis, recover: bool) -> Result<Opening, DataDirError> {
    if has_db(data) {
        return Ok(Opening::Existing);
    }
    let marker = data.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let expected = genesis.digest();
            if text.trim() != expected.to_string() {
                return Err(DataDirError::WrongGenesis {
                    path: data.to_path_buf(),
                    expected,
                    found: text.trim().chars().take(80).collect(),
                });
            }
            Ok(Opening::Fresh)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if recover {
                std::fs::create_dir_all(data).map_err(io(data, "create"))?;
                Ok(Opening::Recover)
            } else {
                Err(DataDirError::NeedsRecover(data.to_path_buf()))
            }
        }
        Err(e) => Err(io(&marker, "read the genesis marker")(e)),
    }
}

/// Removes the marker once the database exists (first open).
pub fn remove_marker(data: &Path) -> Result<(), DataDirError> {
    let marker = data.join(MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&marker, "remove the genesis marker")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{ChainId, KeyPair};
    use stele_types::{GenesisAccount, Params, ValidatorInfo};

    fn genesis() -> Genesis {
        Genesis {
            chain_id: ChainId::new("t").expect("valid"),
            genesis_time_ms: 0,
            validators: (0..4u8)
                .map(|i| ValidatorInfo {
                    key: KeyPair::from_seed([i; 32]).public(),
                    p2p_addr: format!("127.0.0.1:{}", 7100 + u16::from(i)),
                    api_addr: format!("127.0.0.1:{}", 7200 + u16::from(i)),
                })
                .collect(),
            accounts: vec![GenesisAccount {
                key: KeyPair::from_seed([9; 32]).public(),
                balance: stele_types::Amount(5),
            }],
            params: Params::default(),
        }
    }

    #[test]
    fn empty_directory_without_marker_needs_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = genesis();
        assert!(matches!(
            opening(dir.path(), &g, false),
            Err(DataDirError::NeedsRecover(_))
        ));
        assert_eq!(
            opening(dir.path(), &g, true).expect("recover"),
            Opening::Recover
        );
    }

    #[test]
    fn init_marks_fresh_and_refuses_another_genesis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = genesis();
        init(dir.path(), &g).expect("init");
        assert_eq!(
            opening(dir.path(), &g, false).expect("fresh"),
            Opening::Fresh
        );
        let mut other = g.clone();
        other.genesis_time_ms = 1;
        assert!(matches!(
            opening(dir.path(), &other, false),
            Err(DataDirError::WrongGenesis { .. })
        ));
        remove_marker(dir.path()).expect("remove");
        assert!(matches!(
            opening(dir.path(), &g, false),
            Err(DataDirError::NeedsRecover(_))
        ));
    }
}
