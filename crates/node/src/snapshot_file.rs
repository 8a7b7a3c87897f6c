//! A snapshot as one file (issue 24): `stele-node snapshot export` fetches the highest
//! snapshot the validators serve, verifies it against the genesis file and writes it;
//! `stele-node init --snapshot` checks such a file again against the genesis and starts a
//! data directory from it. Nothing in the file is trusted: the manifest's checkpoint
//! certificate must carry q genesis validators' signatures, and every chunk must hash to
//! the state root it proves.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use stele_crypto::{Digest, Ed25519};
use stele_ledger::{genesis_changes, genesis_state_digest};
use stele_store::{GenesisState, Store, StoreConfig};
use stele_types::codec;
use stele_types::snapshot::SnapshotFile;
use stele_types::{Genesis, Height};

use crate::datadir;

/// What a snapshot file holds, for the operator.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub height: Height,
    pub state_root: Digest,
    pub entries: usize,
    pub bytes: u64,
}

/// Fetches the highest snapshot `urls` serve (default: every genesis validator's API),
/// verifies it and writes it to `out` (through a temporary file, synced, then renamed).
pub async fn export(genesis: &Genesis, urls: &[String], out: &Path) -> anyhow::Result<Summary> {
    let urls: Vec<String> = if urls.is_empty() {
        genesis
            .validators
            .iter()
            .map(|v| format!("http://{}", v.api_addr))
            .collect()
    } else {
        urls.to_vec()
    };
    let Some((manifest, chunks)) = crate::snapshot_sync::fetch_snapshot(genesis, &urls).await?
    else {
        bail!(
            "no validator of {} serves a whole snapshot that verifies against this genesis \
             (a young chain has none before its first stable checkpoint)",
            urls.join(", ")
        );
    };
    let file = SnapshotFile { manifest, chunks };
    let (height, state_root) = file
        .verify(&genesis.validator_set(), &Ed25519)
        .context("the fetched snapshot")?;
    let bytes = codec::encode(&file);
    let tmp = out.with_extension("partial");
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(Summary {
        height,
        state_root,
        entries: file.chunks.iter().map(|c| c.entries()).sum(),
        bytes: bytes.len() as u64,
    })
}

/// Reads and verifies a snapshot file against `genesis`.
pub fn read(genesis: &Genesis, path: &Path) -> anyhow::Result<(SnapshotFile, Summary)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: SnapshotFile = codec::decode(&bytes, bytes.len().saturating_add(1))
        .with_context(|| format!("{} is not a snapshot file", path.display()))?;
    let (height, state_root) = file
        .verify(&genesis.validator_set(), &Ed25519)
        .with_context(|| format!("{} does not verify against this genesis", path.display()))?;
    let summary = Summary {
        height,
        state_root,
        entries: file.chunks.iter().map(|c| c.entries()).sum(),
        bytes: bytes.len() as u64,
    };
    Ok((file, summary))
}

/// Prepares a new data directory whose store starts at the snapshot in `path`: the
/// validator then fetches only the blocks above it. The directory must be new.
pub fn init_from(genesis: &Genesis, data: &Path, path: &Path) -> anyhow::Result<Summary> {
    let (file, summary) = read(genesis, path)?;
    datadir::init(data, genesis)?;
    let initial = GenesisState {
        changes: genesis_changes(genesis),
        state_digest: genesis_state_digest(genesis),
    };
    let db = datadir::db_path(data);
    let store = Store::open(&db, genesis, &initial, &StoreConfig::default())
        .with_context(|| format!("creating the store in {}", db.display()))?;
    store
        .install_snapshot(&file.manifest, &file.chunks)
        .context("installing the snapshot")?;
    drop(store);
    datadir::remove_marker(data)?;
    Ok(summary)
}
