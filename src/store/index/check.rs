//! Checking the search index against a full recomputation, and rebuilding it.
//!
//! In: the store. Out: `IndexCheck` counts. The check reads every current resource, computes
//! its entries as the write path would, and looks each one up, then compares the number of
//! entries present with the number expected (so that stale entries show without holding the
//! whole index in memory). Rebuild is for an offline store (nothing else writing): it clears
//! both index namespaces and writes every resource's entries again, in batches.
//!
//! Both use the store's `IndexSet`. `Store::open_indexed` compares the configured set's
//! fingerprint with the one recorded in the store and rebuilds when they differ; the record
//! says `rebuilding` while it runs, so a crash in the middle rebuilds again at the next start.

use std::path::Path;
use std::sync::Arc;

use super::{encode_entries, entry_key, extract, keys, Entry, IndexConfig, IndexSet, Result, Store};
use crate::store::{CurrentRecord, VersionRecord};

/// Metadata record holding the index set's fingerprint.
const SET_RECORD: &str = "index-set";
/// Recorded while a rebuild runs: never equal to a fingerprint.
const REBUILDING: &str = "rebuilding";

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexCheck {
    /// Live resources read.
    pub resources: usize,
    /// Entries a full recomputation expects.
    pub expected: usize,
    /// Expected entries that are absent.
    pub missing: usize,
    /// Entries present beyond those expected (left by a version that is no longer current).
    pub stale: usize,
    /// Resources whose stored entry list differs from the recomputation.
    pub list_mismatch: usize,
}

impl IndexCheck {
    pub fn is_consistent(&self) -> bool {
        self.missing == 0 && self.stale == 0 && self.list_mismatch == 0
    }
}

impl Store {
    /// Live resources as (type, id, version), in key order.
    fn for_each_live(&self, mut visit: impl FnMut(&str, &str, VersionRecord) -> Result<()>) -> Result<()> {
        for item in self.tree.scan_prefix([b'r']) {
            let (k, v) = item?;
            let cur: CurrentRecord = super::super::decode(&k, &v)?;
            if cur.deleted {
                continue;
            }
            let body = k.get(1..).unwrap_or_default();
            let Some(at) = body.iter().position(|&b| b == 0) else { continue };
            let ty = String::from_utf8_lossy(body.get(..at).unwrap_or_default()).into_owned();
            let id = String::from_utf8_lossy(body.get(at + 1..).unwrap_or_default()).into_owned();
            if let Some(rec) = self.version(&ty, &id, cur.seq)? {
                visit(&ty, &id, rec)?;
            }
        }
        Ok(())
    }

    /// Compares the index with a full recomputation from the current resources.
    pub fn check_index(&self, base_url: &str) -> Result<IndexCheck> {
        let mut report = IndexCheck::default();
        self.for_each_live(|ty, id, rec| {
            report.resources += 1;
            let entries: Vec<Entry> = rec.resource.as_ref().map(|r| extract::entries(&self.index.set, ty, r, base_url)).unwrap_or_default();
            let mut suffixes: Vec<Vec<u8>> = entries.iter().map(Entry::suffix).collect();
            suffixes.sort();
            suffixes.dedup();
            report.expected += suffixes.len();
            for s in &suffixes {
                if !self.tree.contains_key(entry_key(ty, s, id))? {
                    report.missing += 1;
                }
            }
            let stored = self.tree.get(keys::index_entries(ty, id))?;
            let expected_list = (!suffixes.is_empty()).then(|| encode_entries(&suffixes));
            if stored.as_deref() != expected_list.as_deref() {
                report.list_mismatch += 1;
            }
            Ok(())
        })?;
        let present = self.tree.scan_prefix(keys::index_all_prefix()).count();
        let lists = self.tree.scan_prefix(keys::index_entries_all_prefix()).count();
        report.stale = (present + report.missing).saturating_sub(report.expected);
        // Lists left by resources that are gone count as mismatches too.
        if lists > report.resources {
            report.list_mismatch += lists - report.resources;
        }
        Ok(report)
    }

    /// Opens the store under `dir` with the configured index set. When the store's index was
    /// built under another set or key layout (or none is recorded and it holds resources), the
    /// index is rebuilt before this returns, and the check after the rebuild is returned.
    pub fn open_indexed(dir: &Path, set: IndexSet, base_url: &str) -> Result<(Store, Option<IndexCheck>)> {
        let mut store = Store::open(dir)?;
        let wanted = set.fingerprint();
        store.index = Arc::new(IndexConfig { set, base_url: base_url.to_owned(), scan_limit: store.index.scan_limit });
        let meta = keys::meta(SET_RECORD);
        if store.tree.get(&meta)?.as_deref() == Some(wanted.as_bytes()) {
            return Ok((store, None));
        }
        let holds_data = [b'r', b'i', b'x'].iter().any(|p| store.tree.scan_prefix([*p]).next().is_some());
        if !holds_data {
            store.tree.insert(&meta, wanted.as_bytes())?;
            store.flush()?;
            return Ok((store, None));
        }
        store.tree.insert(&meta, REBUILDING.as_bytes())?;
        store.flush()?;
        let check = store.rebuild_index(base_url)?;
        store.tree.insert(&meta, wanted.as_bytes())?;
        store.flush()?;
        Ok((store, Some(check)))
    }

    /// The index set recorded in the store, if one is and it is of the current layout.
    pub fn recorded_index_set(&self) -> Result<Option<IndexSet>> {
        let recorded = self.tree.get(keys::meta(SET_RECORD))?;
        Ok(recorded.and_then(|bytes| std::str::from_utf8(&bytes).ok().and_then(IndexSet::from_fingerprint)))
    }

    /// The index set this store writes and answers with.
    pub fn index_set(&self) -> &IndexSet {
        &self.index.set
    }

    /// Drops and rewrites the whole index. Only for a store nothing else is writing.
    pub fn rebuild_index(&self, base_url: &str) -> Result<IndexCheck> {
        for prefix in [keys::index_all_prefix(), keys::index_entries_all_prefix()] {
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for k in self.tree.scan_prefix(&prefix).keys().take(10_000) {
                    batch.remove(k?);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                self.tree.apply_batch(batch)?;
            }
        }
        let mut commit = super::Commit::new();
        let mut pending = 0usize;
        self.for_each_live(|_, _, rec| {
            commit.index_version(self, &rec, base_url)?;
            pending += 1;
            if pending >= 1_000 {
                self.apply(std::mem::take(&mut commit))?;
                pending = 0;
            }
            Ok(())
        })?;
        self.apply(commit)?;
        self.flush()?;
        self.check_index(base_url)
    }
}
