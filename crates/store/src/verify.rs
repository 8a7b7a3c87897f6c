//! The consistency checks of `open`: a cheap one on the tip (always) and a full read of
//! every column family (with `verify_on_open`).
//!
//! RocksDB guarantees each committed batch is all or nothing; these checks catch what it
//! cannot: damaged files it only notices when a block is read, and entries that
//! contradict each other. Either gives an error naming the family, key and problem.

use rocksdb::{IteratorMode, ReadOptions};
use stele_crypto::{Digest, DIGEST_LEN, PUBLIC_KEY_LEN};
use stele_types::tx::MAX_RECORD_KEY_LEN;
use stele_types::{Account, Block, CommitCertificate, Height, RecordValue, TxLocation};

use crate::error::StoreError;
use crate::keys::*;
use crate::store::{Store, Tip, CERT_LIMIT, SMALL_VALUE_LIMIT};

impl Store {
    fn inconsistent(&self, problem: String) -> StoreError {
        StoreError::Inconsistent {
            path: self.path.clone(),
            problem,
        }
    }

    /// The last key of `cf`, if any.
    fn last_key(&self, cf: &'static str) -> Result<Option<Box<[u8]>>, StoreError> {
        match self.db.iterator_cf(self.cf(cf), IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (k, _) = item.map_err(|e| self.rocks("read the last key", cf, e))?;
                Ok(Some(k))
            }
        }
    }

    /// Checks that the last block, its certificate, its digest index entry and its
    /// state digest agree, and that no certificate lies beyond it; returns the tip.
    pub(crate) fn check_tip(&self) -> Result<Tip, StoreError> {
        let Some(key) = self.last_key(BLOCKS)? else {
            return Err(self.inconsistent("`blocks` is empty, yet it was read a moment ago".into()));
        };
        let height = parse_height(&key).ok_or_else(|| {
            self.corrupt(
                BLOCKS,
                &key,
                format!("expected an 8-byte height key, found {} bytes", key.len()),
            )
        })?;
        let (state_digest, block) = self.get_block_entry(height)?.ok_or_else(|| {
            self.inconsistent(format!("the last block at height {height} vanished"))
        })?;
        if height > Height(0) {
            self.check_certified(height, &block)?;
        }
        let last_cert = self.last_key(CERTS)?.map(|k| parse_height(&k));
        match last_cert {
            None if height == Height(0) => {}
            Some(Some(h)) if h == height => {}
            other => {
                return Err(self.inconsistent(format!(
                    "the last block is at height {height} but the last certificate is at {}",
                    match other {
                        None => "no height (there is none)".to_owned(),
                        Some(None) => "a malformed key".to_owned(),
                        Some(Some(h)) => format!("height {h}"),
                    }
                )))
            }
        }
        Ok(Tip {
            height,
            state_digest,
        })
    }

    /// The certificate of `height` exists and certifies `block`, and the digest index
    /// names `height`.
    fn check_certified(&self, height: Height, block: &Block) -> Result<(), StoreError> {
        let digest = block.digest();
        let cert = self.certificate(height)?.ok_or_else(|| {
            self.inconsistent(format!(
                "block at height {height} has no commit certificate"
            ))
        })?;
        if cert.digest != digest {
            return Err(self.inconsistent(format!(
                "the certificate at height {height} certifies digest {}, the stored block has \
                 digest {digest}",
                cert.digest
            )));
        }
        match self.get_raw(BLOCK_INDEX, digest.as_bytes())? {
            Some(raw) if parse_height(&raw) == Some(height) => Ok(()),
            Some(raw) => Err(self.corrupt(
                BLOCK_INDEX,
                digest.as_bytes(),
                format!("expected height {height}, found bytes {}", show(&raw)),
            )),
            None => Err(self.inconsistent(format!(
                "block {digest} at height {height} is missing from the digest index"
            ))),
        }
    }

    /// Every block above genesis has one result per tx: receipts are proven from them.
    fn check_results(&self, height: Height, block: &Block) -> Result<(), StoreError> {
        match self.results(height)? {
            Some(r) if r.len() == block.txs.len() => Ok(()),
            Some(r) => Err(self.corrupt(
                RESULTS,
                &height_key(height),
                format!(
                    "{} results for the {} txs of its block",
                    r.len(),
                    block.txs.len()
                ),
            )),
            None => Err(self.inconsistent(format!(
                "height {height} has no `results` entry (a data directory written before \
                 results were kept: start it again from the genesis or by --recover)"
            ))),
        }
    }

    /// Reads every entry of every family (RocksDB verifies each block's checksum as it
    /// reads it) and checks: heights 0..=tip in `blocks` with no gap, each certified
    /// and indexed; every index entry, account, record and consensus entry decodes.
    pub(crate) fn verify_all(&self, tip: Tip) -> Result<(), StoreError> {
        // Blocks 1..horizon are not kept (the store started from a snapshot there).
        let horizon = self.horizon()?;
        let kept = (tip.height.0 + 1).saturating_sub(horizon.0);
        let mut expected = Height(0);
        self.scan(BLOCKS, |key, value| {
            let found = parse_height(key);
            if found != Some(expected) {
                return Err(self.inconsistent(format!(
                    "expected height {expected} next in `blocks`, found key {}",
                    show(key)
                )));
            }
            let (_, block): (Digest, Block) =
                self.decode_value(BLOCKS, key, value, stele_types::codec::MAX_DECODE_LEN)?;
            if block.height() != expected {
                return Err(self.corrupt(
                    BLOCKS,
                    key,
                    format!("block header says height {}", block.height()),
                ));
            }
            if expected > Height(0) {
                self.check_certified(expected, &block)?;
                self.check_results(expected, &block)?;
            }
            expected = if expected == Height(0) {
                horizon
            } else {
                expected.next()
            };
            Ok(())
        })?;
        if expected != tip.height.next() && !(tip.height == Height(0) && expected == horizon) {
            return Err(self.inconsistent(format!(
                "`blocks` ends at height {}, the tip is {}",
                expected.prev(),
                tip.height
            )));
        }
        let mut certs = 0u64;
        self.scan(CERTS, |key, value| {
            let _: CommitCertificate = self.decode_value(CERTS, key, value, CERT_LIMIT)?;
            match parse_height(key) {
                Some(h) if h >= horizon && h <= tip.height => {
                    certs += 1;
                    Ok(())
                }
                _ => Err(self.inconsistent(format!(
                    "certificate key {} is not a height in {horizon}..={}",
                    show(key),
                    tip.height
                ))),
            }
        })?;
        let mut results = 0u64;
        self.scan(RESULTS, |key, _| match parse_height(key) {
            // Each value was decoded and its length checked against its block above.
            Some(h) if h >= horizon && h <= tip.height => {
                results += 1;
                Ok(())
            }
            _ => Err(self.inconsistent(format!(
                "results key {} is not a height in {horizon}..={}",
                show(key),
                tip.height
            ))),
        })?;
        if results != kept {
            return Err(self.inconsistent(format!(
                "{kept} blocks kept above genesis but {results} results entries"
            )));
        }
        self.scan(OPENINGS, |key, value| {
            let o: stele_types::state_root::StateOpening =
                self.decode_value(OPENINGS, key, value, SMALL_VALUE_LIMIT)?;
            match parse_height(key) {
                Some(h) if h == o.height && h > Height(0) && h <= tip.height => Ok(()),
                _ => Err(self.corrupt(
                    OPENINGS,
                    key,
                    format!("an opening for height {} under this key", o.height),
                )),
            }
        })?;
        let mut indexed = 0u64;
        self.scan(BLOCK_INDEX, |key, value| {
            indexed += 1;
            match (key.len(), parse_height(value)) {
                (DIGEST_LEN, Some(h)) if h >= horizon && h <= tip.height => Ok(()),
                _ => Err(self.corrupt(
                    BLOCK_INDEX,
                    key,
                    format!("value {} is not a committed height", show(value)),
                )),
            }
        })?;
        if certs != kept || indexed != kept {
            return Err(self.inconsistent(format!(
                "{kept} blocks kept above genesis but {certs} certificates and {indexed} digest index entries"
            )));
        }
        self.scan(TX_INDEX, |key, value| {
            let l: TxLocation = self.decode_value(TX_INDEX, key, value, SMALL_VALUE_LIMIT)?;
            if key.len() != DIGEST_LEN || l.height > tip.height || !l.result.is_applied() {
                return Err(self.corrupt(
                    TX_INDEX,
                    key,
                    format!("{l:?} is not an applied tx of a committed height"),
                ));
            }
            Ok(())
        })?;
        self.scan(NONCE_INDEX, |key, value| {
            if key.len() != PUBLIC_KEY_LEN + 8 || value.len() != DIGEST_LEN {
                return Err(self.corrupt(
                    NONCE_INDEX,
                    key,
                    format!(
                        "expected a 40-byte key and a 32-byte tx hash, found a {}-byte value",
                        value.len()
                    ),
                ));
            }
            Ok(())
        })?;
        self.scan(ACCOUNTS, |key, value| {
            let _: Account = self.decode_value(ACCOUNTS, key, value, SMALL_VALUE_LIMIT)?;
            if key.len() != PUBLIC_KEY_LEN {
                return Err(self.corrupt(ACCOUNTS, key, "expected a 32-byte public key".into()));
            }
            Ok(())
        })?;
        self.scan(RECORDS, |key, value| {
            let _: RecordValue = self.decode_value(RECORDS, key, value, SMALL_VALUE_LIMIT)?;
            if key.len() < PUBLIC_KEY_LEN || key.len() > PUBLIC_KEY_LEN + MAX_RECORD_KEY_LEN {
                return Err(self.corrupt(
                    RECORDS,
                    key,
                    "expected an owner key and a record key".into(),
                ));
            }
            Ok(())
        })?;
        self.scan(CONSENSUS, |key, value| {
            self.decode_durable(key, value).map(drop)
        })?;
        self.scan(EVIDENCE, |_, _| Ok(()))?;
        Ok(())
    }

    /// Calls `f` on every entry of `cf`, reading around the block cache; a read error
    /// (a checksum mismatch included) is an error naming the family.
    fn scan(
        &self,
        cf: &'static str,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_verify_checksums(true);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        it.seek_to_first();
        while it.valid() {
            match (it.key(), it.value()) {
                (Some(k), Some(v)) => f(k, v)?,
                _ => break,
            }
            it.next();
        }
        it.status()
            .map_err(|e| self.rocks("read every entry", cf, e))
    }
}
