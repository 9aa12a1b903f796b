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
//! A rebuild reads every resource twice (write, then check) and can take minutes on a large
//! store: it reports `RebuildProgress` to its caller every `PROGRESS_EVERY` resources, and the
//! caller may interrupt it there (`StoreError::Interrupted`, the record still `rebuilding`).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use super::{encode_entries, entry_key, extract, keys, Entry, IndexConfig, IndexSet, Result, Store, StoreError};
use crate::store::{CurrentRecord, VersionRecord};

/// Metadata record holding the index set's fingerprint.
const SET_RECORD: &str = "index-set";
/// Recorded while a rebuild runs: never equal to a fingerprint.
const REBUILDING: &str = "rebuilding";
/// Resources (or removed keys, while clearing) between two progress reports.
pub const PROGRESS_EVERY: usize = 1_000;

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

/// The part of a rebuild a progress report is about, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebuildStep {
    /// Removing the old entries: `done` counts removed keys, `total` is 0 (not counted first).
    Clearing,
    /// Writing every resource's entries: `done` of `total` resources (current and deleted).
    Writing,
    /// Checking the new index against a recomputation: `done` of `total` resources.
    Checking,
}

/// Where a rebuild is. Reported at the start of each step, every `PROGRESS_EVERY` resources
/// (or keys) and at the end of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    pub step: RebuildStep,
    pub done: usize,
    pub total: usize,
}

/// Receives progress; `ControlFlow::Break` interrupts the rebuild (`StoreError::Interrupted`).
pub type Progress<'a> = &'a mut dyn FnMut(RebuildProgress) -> ControlFlow<()>;

fn report(progress: &mut Option<Progress<'_>>, step: RebuildStep, done: usize, total: usize) -> Result<()> {
    match progress.as_mut().map(|p| p(RebuildProgress { step, done, total })) {
        Some(ControlFlow::Break(())) => Err(StoreError::Interrupted),
        _ => Ok(()),
    }
}

impl Store {
    /// Live resources as (type, id, version), in key order. `scanned` is told how many current
    /// records (live or deleted) were read, every `PROGRESS_EVERY` and at the end.
    fn for_each_live(
        &self,
        mut visit: impl FnMut(&str, &str, VersionRecord) -> Result<()>,
        mut scanned: impl FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let mut n = 0usize;
        for item in self.tree.scan_prefix([b'r']) {
            let (k, v) = item?;
            n += 1;
            if n % PROGRESS_EVERY == 0 {
                scanned(n)?;
            }
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
        scanned(n)
    }

    /// Current records (live and deleted): the `total` of a rebuild's progress.
    fn count_current(&self) -> usize {
        self.tree.scan_prefix([b'r']).keys().count()
    }

    /// Compares the index with a full recomputation from the current resources.
    pub fn check_index(&self, base_url: &str) -> Result<IndexCheck> {
        self.check_index_with(base_url, None, 0)
    }

    fn check_index_with(&self, base_url: &str, mut progress: Option<Progress<'_>>, total: usize) -> Result<IndexCheck> {
        let mut found = IndexCheck::default();
        report(&mut progress, RebuildStep::Checking, 0, total)?;
        self.for_each_live(
            |ty, id, rec| {
                found.resources += 1;
                let entries: Vec<Entry> =
                    rec.resource.as_ref().map(|r| extract::entries(&self.index.set, ty, r, base_url)).unwrap_or_default();
                let mut suffixes: Vec<Vec<u8>> = entries.iter().map(Entry::suffix).collect();
                suffixes.sort();
                suffixes.dedup();
                found.expected += suffixes.len();
                for s in &suffixes {
                    if !self.tree.contains_key(entry_key(ty, s, id))? {
                        found.missing += 1;
                    }
                }
                let stored = self.tree.get(keys::index_entries(ty, id))?;
                let expected_list = (!suffixes.is_empty()).then(|| encode_entries(&suffixes));
                if stored.as_deref() != expected_list.as_deref() {
                    found.list_mismatch += 1;
                }
                Ok(())
            },
            |n| report(&mut progress, RebuildStep::Checking, n, total),
        )?;
        let present = self.tree.scan_prefix(keys::index_all_prefix()).count();
        let lists = self.tree.scan_prefix(keys::index_entries_all_prefix()).count();
        found.stale = (present + found.missing).saturating_sub(found.expected);
        // Lists left by resources that are gone count as mismatches too.
        if lists > found.resources {
            found.list_mismatch += lists - found.resources;
        }
        Ok(found)
    }

    /// Opens the store under `dir` with the configured index set. When the store's index was
    /// built under another set or key layout (or none is recorded and it holds resources), the
    /// index is rebuilt before this returns, and the check after the rebuild is returned.
    pub fn open_indexed(dir: &Path, set: IndexSet, base_url: &str) -> Result<(Store, Option<IndexCheck>)> {
        Self::open_indexed_with(dir, set, base_url, None)
    }

    /// `open_indexed`, reporting a rebuild's progress to `progress`, which may interrupt it.
    pub fn open_indexed_with(
        dir: &Path,
        set: IndexSet,
        base_url: &str,
        progress: Option<Progress<'_>>,
    ) -> Result<(Store, Option<IndexCheck>)> {
        Self::open_indexed_opts(dir, set, base_url, progress, crate::store::OpenOptions::default())
    }

    /// `open_indexed_with`, with `options` (`Store::open_with`).
    pub fn open_indexed_opts(
        dir: &Path,
        set: IndexSet,
        base_url: &str,
        progress: Option<Progress<'_>>,
        options: crate::store::OpenOptions,
    ) -> Result<(Store, Option<IndexCheck>)> {
        let mut store = Store::open_with(dir, options)?;
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
        let check = store.rebuild_index_with(base_url, progress)?;
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
        self.rebuild_index_with(base_url, None)
    }

    /// `rebuild_index`, reporting progress to `progress`, which may interrupt it. An
    /// interrupted rebuild leaves a partial index: rebuild again before serving from it.
    pub fn rebuild_index_with(&self, base_url: &str, mut progress: Option<Progress<'_>>) -> Result<IndexCheck> {
        report(&mut progress, RebuildStep::Clearing, 0, 0)?;
        let mut removed = 0usize;
        for prefix in [keys::index_all_prefix(), keys::index_entries_all_prefix()] {
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for k in self.tree.scan_prefix(&prefix).keys().take(10 * PROGRESS_EVERY) {
                    batch.remove(k?);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                self.tree.apply_batch(batch)?;
                removed += n;
                report(&mut progress, RebuildStep::Clearing, removed, 0)?;
            }
        }
        let total = if progress.is_some() { self.count_current() } else { 0 };
        report(&mut progress, RebuildStep::Writing, 0, total)?;
        let mut commit = super::Commit::new();
        let mut pending = 0usize;
        self.for_each_live(
            |_, _, rec| {
                commit.index_version(self, &rec, base_url)?;
                pending += 1;
                if pending >= PROGRESS_EVERY {
                    self.apply(std::mem::take(&mut commit))?;
                    pending = 0;
                }
                Ok(())
            },
            |n| report(&mut progress, RebuildStep::Writing, n, total),
        )?;
        self.apply(commit)?;
        self.flush()?;
        self.check_index_with(base_url, progress, total)
    }
}
