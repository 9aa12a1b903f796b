//! `MemoryLog`: commits recorded, encoded, in a `Vec`, durable only when asked. It proves the
//! commit log seam in tests (the contract suite, the replay tests): a writer running on it
//! acknowledges nothing `make_durable` has not covered, and what it recorded replays into
//! another store. `hold` makes `make_durable` fail, as a log whose storage is unreachable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::{format, CommitLog, LogCommit, LogError};

#[derive(Default)]
pub struct MemoryLog {
    records: Mutex<Vec<Vec<u8>>>,
    durable: AtomicU64,
    held: AtomicBool,
}

impl MemoryLog {
    pub fn new() -> Self {
        MemoryLog::default()
    }

    /// Every commit appended, decoded from its stored form, in order.
    pub fn commits(&self) -> Result<Vec<LogCommit>, LogError> {
        let records = self.records.lock().map_err(|_| LogError::Corrupt("the log's lock is poisoned".into()))?;
        records.iter().map(|r| format::decode(r)).collect()
    }

    /// Only the durable commits, as a crash would leave them.
    pub fn durable_commits(&self) -> Result<Vec<LogCommit>, LogError> {
        let through = self.durable_through();
        Ok(self.commits()?.into_iter().take_while(|c| c.seq <= through).collect())
    }

    /// While held, `make_durable` fails and nothing more becomes durable.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}

impl CommitLog for MemoryLog {
    fn append(&self, commit: &LogCommit) -> Result<(), LogError> {
        let mut records = self.records.lock().map_err(|_| LogError::Corrupt("the log's lock is poisoned".into()))?;
        let last = records.len() as u64;
        if commit.seq != last + 1 {
            return Err(LogError::OutOfOrder { seq: commit.seq, last });
        }
        records.push(format::encode(commit));
        Ok(())
    }

    fn make_durable(&self) -> Result<u64, LogError> {
        if self.held.load(Ordering::SeqCst) {
            return Err(LogError::Failed("the memory log is held".into()));
        }
        let last = self.records.lock().map_err(|_| LogError::Corrupt("the log's lock is poisoned".into()))?.len() as u64;
        Ok(self.durable.fetch_max(last, Ordering::SeqCst).max(last))
    }

    fn durable_through(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
}
