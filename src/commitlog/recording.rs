//! `RecordingLog`: another log, with every commit it is given also written to a file in the
//! commit format (`format`), each record preceded by its `u32` length. It is how the replay
//! tests get the exact log a running Herald wrote (`store.record_commits`), and how an
//! operator can capture what a workload commits. The file holds what the store holds
//! (resources, events), so it needs the same protection; it is written before the inner log
//! is asked for durability and flushed with it, but it is a copy, never what acknowledges.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Mutex;

use super::{format, CommitLog, LogCommit, LogError};

pub struct RecordingLog {
    inner: Box<dyn CommitLog>,
    file: Mutex<BufWriter<File>>,
}

impl RecordingLog {
    /// Wraps `inner`, appending to the file at `path` (created if missing).
    pub fn new(inner: Box<dyn CommitLog>, path: &Path) -> Result<Self, LogError> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| LogError::Failed(Box::new(e)))?;
        Ok(RecordingLog { inner, file: Mutex::new(BufWriter::new(file)) })
    }
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::Failed(Box::new(e))
}

impl CommitLog for RecordingLog {
    fn append(&self, commit: &LogCommit) -> Result<(), LogError> {
        self.inner.append(commit)?;
        let bytes = format::encode(commit);
        let mut file = self.file.lock().map_err(|_| LogError::Corrupt("the recording's lock is poisoned".into()))?;
        let len = u32::try_from(bytes.len()).map_err(|_| LogError::Corrupt("a commit past 4 GiB".into()))?;
        file.write_all(&len.to_be_bytes()).map_err(failed)?;
        file.write_all(&bytes).map_err(failed)
    }

    fn make_durable(&self) -> Result<u64, LogError> {
        self.file.lock().map_err(|_| LogError::Corrupt("the recording's lock is poisoned".into()))?.flush().map_err(failed)?;
        self.inner.make_durable()
    }

    fn durable_through(&self) -> u64 {
        self.inner.durable_through()
    }
}

/// Every commit recorded in the file at `path`, in order.
pub fn read(path: &Path) -> Result<Vec<LogCommit>, LogError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(failed)?;
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else { return Err(LogError::Corrupt("a record length is cut".into())) };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(LogError::Corrupt("a record is cut".into()));
        }
        let (record, tail) = tail.split_at(len);
        out.push(format::decode(record)?);
        rest = tail;
    }
    Ok(out)
}
