//! The commit log: the seam between deciding what a write does and making it durable.
//!
//! A `LogCommit` is everything one atomic apply of the single writer changes, as a
//! self-contained, versioned value that another process can apply (`ingest::materialize`):
//!
//! - `seq`: its place in the log, 1, 2, 3, ... without gaps;
//! - `ops`: the exact key/value writes of the store, in order (a put or a removal; on the same
//!   key the last one wins). Every op is absolute, never read-modify-write, so applying a
//!   suffix of the log again over a store that already holds part of it gives the same store;
//! - `effects`: what the registry must reload once the ops are applied (a topic, a
//!   subscription, a SearchParameter), named by id, so that a follower rebuilds the registry
//!   from the same stored resources the writer bound;
//! - `lanes`: the subscriptions whose delivery lanes must be told (their state changed, they
//!   were created, or they are gone).
//!
//! Its binary form is `format` (documented there like the store's key layout).
//!
//! Durability is one trait, `CommitLog`, with one question: is this commit, and everything
//! before it, durable (`durable_through`)? The writer appends each commit, applies it to its
//! own store, and answers a client only once the log says the commit is durable. Two
//! implementations live here: `SledLog`, where the store's own write-ahead log is the commit
//! log (appending is applying, durability is one group fsync), and `MemoryLog`, which records
//! encoded commits in a `Vec` and makes them durable on demand, to prove the seam in tests.
//! `recording::RecordingLog` wraps another log and copies every commit to a file
//! (`store.record_commits`), for replay tests and diagnosis. `jetstream::JetStreamLog` is the
//! replicated log of a cluster: one NATS JetStream stream whose sequence is the commit seq,
//! durable at JetStream's publish acknowledgement, fencing a deposed writer.

pub mod format;
pub mod jetstream;
pub mod memory;
pub mod recording;
pub mod store_log;

pub use jetstream::{JetStreamLog, LogReader, LogStream};
pub use memory::MemoryLog;
pub use recording::RecordingLog;
pub use store_log::SledLog;

use thiserror::Error;

/// One store write of a commit: a put (`Some`) or a removal (`None`).
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// What the registry reloads from the store after a commit's ops are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The stored topic with this id (the instance version's topic type) is current again:
    /// put it in the registry if it is a live topic, take the id out otherwise.
    Topic(String),
    /// The stored Subscription with this id: bind it if live, remove it otherwise. Its state
    /// comes from the store too.
    Subscription(String),
    /// The stored SearchParameter with this id: register it if live; `retired_url` is a
    /// definition it replaced or removed, unregistered first.
    SearchParameter { id: String, retired_url: Option<String> },
}

/// One atomic apply of the writer, as the log holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogCommit {
    pub seq: u64,
    pub ops: Vec<Op>,
    pub effects: Vec<Effect>,
    /// Subscriptions whose lanes are republished after the commit (a removed one stops).
    pub lanes: Vec<String>,
}

#[derive(Debug, Error)]
pub enum LogError {
    /// A commit out of order: the log holds `last`, and `seq` is not `last + 1`.
    #[error("commit {seq} does not follow commit {last}")]
    OutOfOrder { seq: u64, last: u64 },
    /// The log's storage failed; nothing after `durable_through` may be acknowledged.
    #[error("the commit log failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored commit does not decode (damaged, or written by a newer format).
    #[error("undecodable commit: {0}")]
    Corrupt(String),
}

/// Where commits become durable. The single writer calls `append` in sequence order (from one
/// thread) and `make_durable` from the flusher; `durable_through` may be asked by anyone.
pub trait CommitLog: Send + Sync + 'static {
    /// Records `commit`, the successor of the last commit appended. It is not durable yet.
    fn append(&self, commit: &LogCommit) -> Result<(), LogError>;

    /// Makes every commit appended so far durable (blocking: call it from a blocking thread)
    /// and returns the highest sequence now durable.
    fn make_durable(&self) -> Result<u64, LogError>;

    /// The one question: through which sequence is the log durable? Commit `seq` may be
    /// acknowledged once `seq <= durable_through()`.
    fn durable_through(&self) -> u64;
}
