//! Storage of the audit trail (`ops::audit` decides what goes in it): prefix `a`, keyed by a
//! big-endian sequence number, so that key order is the order entries were taken in.
//!
//! Entries that describe a change go into that change's `Commit` (`Commit::put_audit`), so they
//! are exactly as durable as the change; the others (delivery attempts, refused credentials) are
//! plain inserts, made durable by the next group flush or sled's own one-second flush.

use std::sync::atomic::Ordering;

use super::{decode, keys, Commit, Result, Store, StoreError};

/// The sequence number after the newest stored entry.
pub(super) fn next_seq(tree: &sled::Tree) -> Result<u64> {
    let last = tree.scan_prefix(keys::audit_prefix()).keys().next_back().transpose()?;
    Ok(last.and_then(|k| seq_of(&k)).map_or(1, |n| n + 1))
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

impl Store {
    /// Takes the next audit sequence number.
    pub fn next_audit_seq(&self) -> u64 {
        self.audit_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends one entry outside any commit.
    pub fn append_audit<T: serde::Serialize>(&self, seq: u64, entry: &T) -> Result<()> {
        let bytes = serde_json::to_vec(entry).map_err(StoreError::Encode)?;
        self.tree.insert(keys::audit(seq), bytes)?;
        Ok(())
    }

    /// Appends several numbered entries as one batch.
    pub fn append_audit_batch<T: serde::Serialize>(&self, entries: &[(u64, T)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (seq, entry) in entries {
            batch.insert(keys::audit(*seq), serde_json::to_vec(entry).map_err(StoreError::Encode)?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Entries with a sequence number above `after` (oldest first), or the newest ones when
    /// `after` is `None` (still returned oldest first), keeping those `keep` accepts, at most
    /// `limit`, reading at most `max_read` entries.
    pub fn audit_entries<T: serde::de::DeserializeOwned>(
        &self,
        after: Option<u64>,
        limit: usize,
        max_read: usize,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Vec<(u64, T)>> {
        let mut out = Vec::new();
        let mut visit = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool> {
            let (key, value) = item?;
            let entry: T = decode(&key, &value)?;
            if keep(&entry) {
                out.push((seq_of(&key).unwrap_or(0), entry));
            }
            Ok(out.len() < limit)
        };
        match after {
            Some(after) => {
                for item in self.tree.range(keys::audit(after.saturating_add(1))..keys::audit(u64::MAX)).take(max_read) {
                    if !visit(item)? {
                        break;
                    }
                }
            }
            None => {
                for item in self.tree.scan_prefix(keys::audit_prefix()).rev().take(max_read) {
                    if !visit(item)? {
                        break;
                    }
                }
                out.reverse();
            }
        }
        Ok(out)
    }

    /// Removes the oldest entries so that at most `keep` remain; returns how many went.
    pub fn trim_audit(&self, keep: u64) -> Result<usize> {
        let Some(newest) = self.audit_seq.load(Ordering::Relaxed).checked_sub(1) else { return Ok(0) };
        let Some(below) = newest.checked_sub(keep) else { return Ok(0) };
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for key in self.tree.range(keys::audit(0)..=keys::audit(below)).keys() {
            batch.remove(key?);
            removed += 1;
            if removed % 10_000 == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(removed)
    }
}

impl Commit {
    /// Stages an audit entry with the change it describes.
    pub fn put_audit<T: serde::Serialize>(&mut self, seq: u64, entry: &T) -> Result<()> {
        self.put(keys::audit(seq), entry)
    }
}
