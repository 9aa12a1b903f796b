//! The durability ceiling: how many "write, then wait until it is on disk" the storage engine
//! gives on this machine with no FHIR work at all. `herald-load` measures it in the same run as
//! Herald's own figures and divides by it (BENCHMARKS.md, issue #9). The server never calls it;
//! it lives here because only `store/` names sled, so a new engine brings its own ceiling.
//!
//! `writers` threads each insert one record of `record_bytes` and block until a flush covers
//! it. One flusher thread calls `Db::flush` for everything inserted so far, as
//! `ingest::flusher` does: group commit, never one `flush_async` per writer (sled 0.34 hangs with
//! 7 or more concurrent `flush_async` callers, `shared/PLATFORM.md`). The store is opened with
//! the same sled settings as `Store::open`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Result, StoreError};

/// What to run: how many writers, how large a record, and for how long.
#[derive(Clone, Debug)]
pub struct InsertFlush {
    pub writers: usize,
    pub record_bytes: usize,
    /// Run but not counted, so that the files and caches exist before the window starts.
    pub warmup: Duration,
    pub duration: Duration,
}

/// What the window saw.
#[derive(Clone, Debug, Default)]
pub struct InsertFlushReport {
    /// Durable writes that started inside the window.
    pub writes: u64,
    /// `Db::flush` calls that finished inside the window (each covers a group of writes).
    pub flushes: u64,
    pub window: Duration,
}

#[derive(Default)]
struct Progress {
    /// Records inserted so far (each writer takes the next number after its insert).
    applied: u64,
    /// Records known to be on disk.
    durable: u64,
    stop: bool,
    failure: Option<sled::Error>,
}

struct Shared {
    progress: Mutex<Progress>,
    /// Wakes the flusher when something was inserted (or on stop).
    inserted: Condvar,
    /// Wakes the writers after each flush (or on stop).
    flushed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panicking writer cannot leave the counters half-updated, so the data stays usable.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, e: sled::Error) {
        let mut p = self.lock();
        p.failure.get_or_insert(e);
        p.stop = true;
        self.inserted.notify_all();
        self.flushed.notify_all();
    }
}

/// Runs `spec` on a new sled database under `dir` (which should be empty) and reports the
/// window. `on_ack` gets the latency of each write counted (insert to durable).
pub fn sled_insert_flush(dir: &Path, spec: &InsertFlush, on_ack: &(dyn Fn(Duration) + Sync)) -> Result<InsertFlushReport> {
    // Herald's defaults (`OpenOptions::default`), so that the ceiling is the same engine.
    let options = super::OpenOptions::default();
    let db = super::sled_config(dir, &options, options.compression.is_some()).open()?;
    let tree = db.open_tree("herald")?;
    let shared = Shared { progress: Mutex::new(Progress::default()), inserted: Condvar::new(), flushed: Condvar::new() };
    let writes = AtomicU64::new(0);
    let flushes = AtomicU64::new(0);
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let end = window_start + spec.duration;

    std::thread::scope(|scope| {
        let flusher = scope.spawn(|| loop {
            let target = {
                let mut p = shared.lock();
                while p.applied == p.durable && !p.stop {
                    p = shared.inserted.wait(p).unwrap_or_else(PoisonError::into_inner);
                }
                if p.applied == p.durable || p.failure.is_some() {
                    return;
                }
                p.applied
            };
            if let Err(e) = db.flush() {
                shared.fail(e);
                return;
            }
            if (window_start..end).contains(&Instant::now()) {
                flushes.fetch_add(1, Ordering::Relaxed);
            }
            shared.lock().durable = target;
            shared.flushed.notify_all();
        });
        let writers: Vec<_> = (0..spec.writers.max(1))
            .map(|writer| {
                let (tree, shared, writes) = (&tree, &shared, &writes);
                scope.spawn(move || {
                    let value = filler(spec.record_bytes, writer);
                    for seq in 0u64.. {
                        let started = Instant::now();
                        if started >= end {
                            return;
                        }
                        let mut key = Vec::with_capacity(12);
                        key.extend_from_slice(&u32::try_from(writer).unwrap_or(u32::MAX).to_be_bytes());
                        key.extend_from_slice(&seq.to_be_bytes());
                        if let Err(e) = tree.insert(key, value.as_slice()) {
                            shared.fail(e);
                            return;
                        }
                        let mut p = shared.lock();
                        p.applied += 1;
                        let ticket = p.applied;
                        shared.inserted.notify_one();
                        while p.durable < ticket && !p.stop {
                            p = shared.flushed.wait(p).unwrap_or_else(PoisonError::into_inner);
                        }
                        if p.durable < ticket {
                            return;
                        }
                        drop(p);
                        if (window_start..end).contains(&started) {
                            writes.fetch_add(1, Ordering::Relaxed);
                            on_ack(started.elapsed());
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            let _ = w.join();
        }
        // Every writer has seen its last record flushed (or a failure): the flusher may go.
        {
            let mut p = shared.lock();
            p.stop = true;
            shared.inserted.notify_all();
        }
        let _ = flusher.join();
    });

    if let Some(e) = shared.lock().failure.take() {
        return Err(StoreError::Engine(e));
    }
    Ok(InsertFlushReport { writes: writes.into_inner(), flushes: flushes.into_inner(), window: spec.duration })
}

/// Record bytes that do not repeat trivially (a cheap xorshift per writer).
fn filler(len: usize, seed: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::try_from(seed).unwrap_or(0);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counted_write_was_flushed_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let acks = AtomicU64::new(0);
        let spec = InsertFlush { writers: 8, record_bytes: 300, warmup: Duration::from_millis(50), duration: Duration::from_millis(200) };
        let report = sled_insert_flush(dir.path(), &spec, &|_| {
            acks.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert!(report.writes > 0);
        assert_eq!(report.writes, acks.load(Ordering::Relaxed));
        assert!(report.flushes > 0);
    }
}
