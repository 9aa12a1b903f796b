//! `MemoryLog`: commits recorded, encoded, in a `Vec`, durable only when asked. It proves the
//! commit log seam in tests (the contract suite, the replay tests): a writer running on it
//! acknowledges nothing `make_durable` has not covered, and what it recorded replays into
//! another store. `hold` makes `make_durable` wait (a log whose replicas have not answered
//! yet) and `fail` makes it fail (a log whose storage is gone).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use super::{format, CommitLog, LogCommit, LogError};

#[derive(Default)]
pub struct MemoryLog {
    records: Mutex<Vec<Vec<u8>>>,
    durable: AtomicU64,
    held: Mutex<bool>,
    released: Condvar,
    failing: AtomicBool,
}

fn poisoned() -> LogError {
    LogError::Corrupt("the log's lock is poisoned".into())
}

impl MemoryLog {
    pub fn new() -> Self {
        MemoryLog::default()
    }

    /// Every commit appended, decoded from its stored form, in order.
    pub fn commits(&self) -> Result<Vec<LogCommit>, LogError> {
        let records = self.records.lock().map_err(|_| poisoned())?;
        records.iter().map(|r| format::decode(r)).collect()
    }

    /// How many commits were appended.
    pub fn len(&self) -> usize {
        self.records.lock().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Only the durable commits, as a crash would leave them.
    pub fn durable_commits(&self) -> Result<Vec<LogCommit>, LogError> {
        let through = self.durable_through();
        Ok(self.commits()?.into_iter().take_while(|c| c.seq <= through).collect())
    }

    /// While held, `make_durable` waits; releasing lets it finish.
    pub fn hold(&self, held: bool) {
        if let Ok(mut h) = self.held.lock() {
            *h = held;
        }
        self.released.notify_all();
    }

    /// While failing, `make_durable` fails and nothing more becomes durable.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl CommitLog for MemoryLog {
    fn append(&self, commit: &LogCommit) -> Result<(), LogError> {
        let mut records = self.records.lock().map_err(|_| poisoned())?;
        let last = records.len() as u64;
        if commit.seq != last + 1 {
            return Err(LogError::OutOfOrder { seq: commit.seq, last });
        }
        records.push(format::encode(commit));
        Ok(())
    }

    fn make_durable(&self) -> Result<u64, LogError> {
        // What is appended before the call is what it covers, held or not.
        let last = self.records.lock().map_err(|_| poisoned())?.len() as u64;
        let mut held = self.held.lock().map_err(|_| poisoned())?;
        while *held {
            held = self.released.wait(held).map_err(|_| poisoned())?;
        }
        drop(held);
        if self.failing.load(Ordering::SeqCst) {
            return Err(LogError::Failed("the memory log is failing".into()));
        }
        Ok(self.durable.fetch_max(last, Ordering::SeqCst).max(last))
    }

    fn durable_through(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
}
