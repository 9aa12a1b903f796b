//! `SledLog`: the store's own write-ahead log is the commit log.
//!
//! The writer applies each commit to the store before appending it (`ingest::committer`), and
//! sled's log already holds what was applied, so appending only checks and records the order;
//! `make_durable` is one group fsync of the store (`Store::flush`), which covers every commit
//! applied before it. The store records the last sequence with each flush (`Store::log_seq`),
//! so numbering continues after a restart. Commits are never read back from it: the store is
//! their materialized form.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{CommitLog, LogCommit, LogError};
use crate::store::Store;

pub struct SledLog {
    store: Store,
    appended: AtomicU64,
    durable: AtomicU64,
}

impl SledLog {
    /// The log of `store`, continuing after the last sequence it recorded.
    pub fn new(store: Store) -> Self {
        let seq = store.log_seq();
        SledLog { store, appended: AtomicU64::new(seq), durable: AtomicU64::new(seq) }
    }
}

impl CommitLog for SledLog {
    fn append(&self, commit: &LogCommit) -> Result<(), LogError> {
        let last = self.appended.load(Ordering::SeqCst);
        if commit.seq != last + 1 {
            return Err(LogError::OutOfOrder { seq: commit.seq, last });
        }
        self.appended.store(commit.seq, Ordering::SeqCst);
        Ok(())
    }

    fn make_durable(&self) -> Result<u64, LogError> {
        // Everything appended before the flush starts was applied before it, so it is covered.
        let through = self.appended.load(Ordering::SeqCst);
        self.store.flush().map_err(|e| LogError::Failed(Box::new(e)))?;
        Ok(self.durable.fetch_max(through, Ordering::SeqCst).max(through))
    }

    fn durable_through(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
}
