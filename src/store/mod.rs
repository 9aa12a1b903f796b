//! The store: the only code that names sled.
//!
//! Everything Herald keeps lives in one sled tree, namespaced by a one-byte key prefix (see
//! `keys`), so that one `Commit` (a sled `Batch`) is atomic across resources, history,
//! subscription state and the outbox: sled recovers a batch whole or not at all. Durability is
//! a separate step: `flush()` fsyncs everything applied so far. The write path (ingest) applies
//! commits one at a time and flushes them in groups; nothing is acknowledged before the flush
//! that covers it (see `ingest::committer`).
//!
//! Search indexes (`index`) are key-only entries written by `Commit::index_version` in the same
//! commit as the version they describe, so they can never disagree with it after a crash.
//! Which parameters get entries is the store's `index::IndexSet`, fixed when it is opened.
//!
//! `ceiling` measures the engine alone (insert + group flush, no FHIR work) for `herald-load`;
//! the server never calls it.
//!
//! Records are a file format: each carries a version tag and decodes through `records`, which
//! returns an error for an unknown or damaged record instead of panicking.

pub mod audit;
pub mod ceiling;
mod dir;
pub use dir::CLUSTER_WRITER;
mod entries;
pub mod index;
mod options;
pub use options::{OpenOptions, DEFAULT_CACHE_MIB, DEFAULT_COMPRESSION_LEVEL};
mod keys;
pub mod records;
pub mod space;
mod usage;
pub use usage::{Family, Usage};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

pub use records::{
    ContextRef, CurrentRecord, DeadRecord, EventRecord, GrantSource, OwnerForm, Resend, StoredError, StoredGrant, SubState, SubStatus,
    VersionRecord,
};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage engine failure")]
    Engine(#[from] sled::Error),
    #[error("undecodable record under key {key}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("undecodable index entry list under key {key}")]
    CorruptIndex { key: String },
    #[error("could not encode a record")]
    Encode(#[source] serde_json::Error),
    /// A caller stopped a long operation (an index rebuild) through its progress callback.
    #[error("interrupted before it finished")]
    Interrupted,
    /// The data directory is not one this build may serve: another program's, written by a
    /// newer Herald, or missing data it acknowledged (`dir`).
    #[error("{0}")]
    Refused(String),
    /// Answering a lookup on an unindexed parameter would read more resources than allowed.
    #[error("answering {resource_type}.{code} without an index would read more than {limit} resources")]
    ScanLimit { resource_type: String, code: String, limit: usize },
}

impl StoreError {
    /// The store's files are locked by another handle (in this process or another).
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Engine(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Most version heads `Store::version_by_id` reads looking for a foreign version id.
pub const MAX_VERSIONS_SCANNED: usize = 10_000;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// What the search index holds; fixed once the store is open (see `index::set`).
    index: Arc<index::IndexConfig>,
    /// The next audit trail sequence number (`audit`).
    audit_seq: Arc<AtomicU64>,
    /// What has been applied, and how much of it is durable (read committed).
    marks: Arc<Marks>,
    /// Records the durable commit count beside the store (`dir`: `herald.ack`).
    ack: Arc<dir::AckWriter>,
}

/// Commits applied so far and the count of them known durable: a reader that saw the store at
/// `applied` waits for `durable` to reach it before it answers (`Store::durable_through`).
struct Marks {
    applied: AtomicU64,
    durable: tokio::sync::watch::Sender<u64>,
    /// The last commit log sequence applied (`apply_logged`), recorded by each flush.
    log_seq: AtomicU64,
}

impl Marks {
    /// Marks for a store that already holds `commits` durable commits, through log `log_seq`.
    fn at(commits: u64, log_seq: u64) -> Self {
        Marks { applied: AtomicU64::new(commits), durable: tokio::sync::watch::Sender::new(commits), log_seq: AtomicU64::new(log_seq) }
    }
}

/// Meta keys: the store's id (`dir`), and the commits it held at its last flush.
const STORE_ID: &str = "store-id";
const COMMITS: &str = "commits";
/// The commit log sequence the store had applied at its last flush (`commitlog`).
const LOG_SEQ: &str = "log-seq";

/// One write of a commit: a put (`Some`) or a removal (`None`) of a key.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// A set of writes applied atomically by `Store::apply`.
#[derive(Default)]
pub struct Commit {
    /// Inserts (`Some`) and removals (`None`) in order; on the same key the last one wins, as
    /// in the sled `Batch` they become.
    ops: Vec<Op>,
    /// Index entries this commit gave each resource so far (see `index::PendingEntries`).
    index_pending: index::PendingEntries,
}

impl Commit {
    pub fn new() -> Self {
        Commit::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes, in order (what a `commitlog::LogCommit` carries).
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Adds `later`'s writes after this commit's, so that both are applied as one atomic batch
    /// (the committer's apply groups, `ingest::group`).
    pub fn append(&mut self, later: Commit) {
        if self.ops.is_empty() {
            self.ops = later.ops;
        } else {
            self.ops.extend(later.ops);
        }
        self.index_pending.extend(later.index_pending);
    }

    fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(StoreError::Encode)?;
        self.ops.push((key, Some(bytes)));
        Ok(())
    }

    fn insert_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    /// Writes a resource version: its history entry and the current pointer.
    pub fn put_version(&mut self, rec: &VersionRecord) -> Result<()> {
        self.put(keys::history(&rec.resource_type, &rec.id, rec.seq), rec)?;
        let current = CurrentRecord { v: records::FORMAT, seq: rec.seq, version_id: rec.version_id.clone(), deleted: rec.deleted };
        self.put(keys::current(&rec.resource_type, &rec.id), &current)
    }

    pub fn put_sub_state(&mut self, sub: &str, state: &SubState) -> Result<()> {
        self.put(keys::sub_state(sub), state)
    }

    pub fn remove_sub_state(&mut self, sub: &str) {
        self.remove(keys::sub_state(sub));
    }

    pub fn put_event(&mut self, sub: &str, event: &EventRecord) -> Result<()> {
        self.put(keys::event(sub, event.number), event)
    }

    pub fn put_dead(&mut self, sub: &str, dead: &DeadRecord) -> Result<()> {
        self.put(keys::dead(sub, dead.number), dead)
    }

    pub fn remove_event(&mut self, sub: &str, number: u64) {
        self.remove(keys::event(sub, number));
    }

    pub fn remove_dead(&mut self, sub: &str, number: u64) {
        self.remove(keys::dead(sub, number));
    }

    /// Removes up to `max` of a deleted subscription's events and dead letters, and records
    /// (or, once none are left, forgets) that more remain, so that the removal of a long
    /// backlog goes in bounded commits and resumes after a restart (`Store::purges`). Keys are
    /// listed by the caller from a scan so that the removal is part of this atomic commit.
    /// Returns true when nothing is left.
    pub fn purge_outbox(&mut self, store: &Store, sub: &str, max: usize) -> Result<bool> {
        let mut removed = 0usize;
        for prefix in [keys::event_prefix(sub), keys::dead_prefix(sub)] {
            for item in store.tree.scan_prefix(&prefix).keys() {
                if removed == max {
                    self.insert_raw(keys::purge(sub), Vec::new());
                    return Ok(false);
                }
                self.remove(item?.to_vec());
                removed += 1;
            }
        }
        self.remove(keys::purge(sub));
        Ok(true)
    }
}

/// What `op` does to a subscription's state, if it is a state write: the subscription id and
/// the new state (`None`: removed). A replica keeps its in-memory states in step with these.
pub fn sub_state_write(op: &Op) -> Result<Option<(String, Option<SubState>)>> {
    let (key, value) = op;
    let prefix = keys::sub_state_prefix();
    let Some(id) = key.strip_prefix(prefix.as_slice()) else { return Ok(None) };
    let id = String::from_utf8_lossy(id).into_owned();
    match value {
        Some(bytes) => Ok(Some((id, Some(decode::<SubState>(key, bytes)?.upgraded())))),
        None => Ok(Some((id, None))),
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { key: keys::display(key), source })
}

#[cfg(test)]
/// Tests: runs `open` until sled lets go of the directory's lock: a handle just dropped releases it
/// from sled's background flush thread, a moment later (seen under load in CI).
pub(crate) fn when_unlocked<T>(mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(StoreError::Engine(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// sled's settings for a store at `path` (`compressed`: pages compressed, which sled fixes
/// when it creates its files). The durable ceiling (`ceiling`) opens with the same.
fn sled_config(path: &Path, options: &OpenOptions, compressed: bool) -> sled::Config {
    // Background flushing stays on as a safety net; durability of acknowledged writes comes
    // from the explicit group flush, never from this timer.
    sled::Config::new()
        .path(path)
        .flush_every_ms(options.background_flush.then_some(1000))
        .cache_capacity(options.cache_mib.max(1).saturating_mul(1024 * 1024))
        .use_compression(compressed)
        .compression_factor(options.compression.unwrap_or(DEFAULT_COMPRESSION_LEVEL))
}

impl Store {
    /// Opens (or creates) the database under `dir`, with the index set it was built with (the
    /// default set for a new store). The server opens with `open_indexed` instead.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, OpenOptions::default())
    }

    /// `open`, with `options`.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Store> {
        // A foreign, newer or damaged directory is refused before sled writes anything in it.
        let found = dir::inspect(path)?;
        // Compression is fixed when sled creates its files (it refuses to open them with the
        // other setting): an existing store keeps its own, a new one takes the configured one.
        let compressed = match dir::sled_compression(path)? {
            Some(compressed) => compressed,
            None => options.compression.is_some(),
        };
        let db = sled_config(path, &options, compressed).open()?;
        if matches!(found, dir::Found::Unmarked) && !db.tree_names().iter().any(|n| n.as_ref() == b"herald") {
            return Err(StoreError::Refused(format!(
                "data directory {}: holds a sled database that is not Herald's; refusing to start rather than write into it",
                path.display()
            )));
        }
        let tree = db.open_tree("herald")?;
        let recorded = tree.get(keys::meta(STORE_ID))?.map(|v| String::from_utf8_lossy(&v).into_owned());
        let store_id = match (found, recorded) {
            (dir::Found::Marked { store }, Some(recorded)) if store != recorded => {
                return Err(StoreError::Refused(format!(
                    "data directory {}: its marker names store {store} but the store inside is {recorded}; the directory was assembled from two stores",
                    path.display()
                )));
            }
            (dir::Found::Marked { store }, _) => store,
            // A new store, or one written before the marker existed (adopted, same format).
            (_, recorded) => {
                let id = recorded.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                tree.insert(keys::meta(STORE_ID), id.as_bytes())?;
                db.flush()?;
                dir::mark(path, &id, if compressed { dir::FORMAT } else { dir::FORMAT_PLAIN })?;
                id
            }
        };
        let commits = match tree.get(keys::meta(COMMITS))? {
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::CorruptIndex { key: COMMITS.into() })?),
            None => 0,
        };
        dir::check_ack(path, &store_id, commits)?;
        let log_seq = match tree.get(keys::meta(LOG_SEQ))? {
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::CorruptIndex { key: LOG_SEQ.into() })?),
            None => 0,
        };
        let audit_seq = Arc::new(AtomicU64::new(audit::next_seq(&tree)?));
        let mut store = Store {
            db,
            tree,
            index: Arc::default(),
            audit_seq,
            marks: Arc::new(Marks::at(commits, log_seq)),
            ack: Arc::new(dir::AckWriter::new(path, &store_id)),
        };
        let set = store.recorded_index_set()?.unwrap_or_default();
        store.index = Arc::new(index::IndexConfig { set, base_url: String::new(), scan_limit: index::UNINDEXED_SCAN_LIMIT });
        Ok(store)
    }

    /// Applies a commit atomically (not yet durable).
    pub fn apply(&self, commit: Commit) -> Result<()> {
        self.apply_ops(&commit.ops)
    }

    /// Applies commit log entry `seq`'s writes atomically (not yet durable); the store records
    /// `seq` as applied with its next flush (`log_seq`).
    pub fn apply_logged(&self, seq: u64, ops: &[Op]) -> Result<()> {
        self.apply_ops(ops)?;
        self.marks.log_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(())
    }

    /// The last commit log sequence this store applied as of its last flush: after a crash it
    /// may hold some commits past it too, which applying them again leaves unchanged (every
    /// op is absolute; see `commitlog`).
    pub fn log_seq(&self) -> u64 {
        self.marks.log_seq.load(Ordering::SeqCst)
    }

    /// Applies writes atomically (not yet durable).
    ///
    /// One write is a plain insert or removal, which sled applies atomically on its own:
    /// `apply_batch` rolls sled's IO buffer every time (a write and a sync in its thread
    /// pool), which costs more than the rest of a small commit.
    fn apply_ops(&self, ops: &[Op]) -> Result<()> {
        match ops {
            [] => return Ok(()),
            [(key, value)] => {
                match value {
                    Some(value) => self.tree.insert(key.as_slice(), value.as_slice())?,
                    None => self.tree.remove(key.as_slice())?,
                };
            }
            ops => {
                let mut batch = sled::Batch::default();
                for (key, value) in ops {
                    match value {
                        Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                        None => batch.remove(key.as_slice()),
                    }
                }
                self.tree.apply_batch(batch)?;
            }
        }
        self.marks.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes everything applied so far durable. Blocking: call from a blocking thread. (sled
    /// 0.34's `flush_async` hangs with many concurrent callers; see PLATFORM.md.)
    pub fn flush(&self) -> Result<usize> {
        // Everything applied before the flush starts is covered by it, and the store records
        // how many commits that is, for `herald.ack` to be checked against (`dir`).
        let mark = self.marks.applied.load(Ordering::SeqCst);
        let log_seq = self.marks.log_seq.load(Ordering::SeqCst);
        self.tree.insert(keys::meta(COMMITS), &mark.to_be_bytes())?;
        self.tree.insert(keys::meta(LOG_SEQ), &log_seq.to_be_bytes())?;
        let flushed = self.db.flush()?;
        self.mark_durable(mark);
        self.ack.durable(mark);
        Ok(flushed)
    }

    /// `flush`, then records the durable count in `herald.ack` whatever the throttle says (a
    /// clean stop, where nothing follows to catch up).
    pub fn flush_and_record(&self) -> Result<usize> {
        let flushed = self.flush()?;
        self.ack.durable_now(*self.marks.durable.borrow());
        Ok(flushed)
    }

    /// Records that every commit up to `mark` (an `applied_mark`) is durable, for a store whose
    /// commits another log makes durable (`commitlog`); `flush` does this itself.
    pub fn mark_durable(&self, mark: u64) {
        self.marks.durable.send_if_modified(|durable| {
            let advanced = mark > *durable;
            if advanced {
                *durable = mark;
            }
            advanced
        });
    }

    /// A mark covering every commit applied so far (and so everything a read made now sees).
    pub fn applied_mark(&self) -> u64 {
        self.marks.applied.load(Ordering::SeqCst)
    }

    /// Waits until every commit up to `mark` is durable (read committed: an answer built from
    /// what a read saw is sent only once that cannot be lost).
    pub async fn durable_through(&self, mark: u64) {
        let mut rx = self.marks.durable.subscribe();
        // The sender lives as long as this store handle, so `wait_for` ends only when it holds.
        let _ = rx.wait_for(|durable| *durable >= mark).await;
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn current(&self, resource_type: &str, id: &str) -> Result<Option<CurrentRecord>> {
        self.get(&keys::current(resource_type, id))
    }

    pub fn version(&self, resource_type: &str, id: &str, seq: u64) -> Result<Option<VersionRecord>> {
        self.get(&keys::history(resource_type, id, seq))
    }

    /// `version`, with its resource only when `with_resource` (else `resource` is `None` and
    /// never built), and the length of its stored record.
    pub fn version_sized(&self, resource_type: &str, id: &str, seq: u64, with_resource: bool) -> Result<Option<(VersionRecord, usize)>> {
        let key = keys::history(resource_type, id, seq);
        let Some(bytes) = self.tree.get(&key)? else { return Ok(None) };
        let record = if with_resource { decode(&key, &bytes)? } else { decode::<records::VersionHead>(&key, &bytes)?.into() };
        Ok(Some((record, bytes.len())))
    }

    /// The latest version record (possibly a deletion).
    pub fn latest(&self, resource_type: &str, id: &str) -> Result<Option<VersionRecord>> {
        match self.current(resource_type, id)? {
            Some(cur) => self.version(resource_type, id, cur.seq),
            None => Ok(None),
        }
    }

    /// The version of one resource whose versionId is `version_id`. Herald numbers its own
    /// versions by their sequence, so that is one read; versions mirrored from another server
    /// (`$ingest`) keep that server's ids and are looked for among the version heads (never
    /// the resources), newest first, at most `MAX_VERSIONS_SCANNED` of them.
    pub fn version_by_id(&self, resource_type: &str, id: &str, version_id: &str) -> Result<Option<VersionRecord>> {
        if let Ok(seq) = version_id.parse::<u64>() {
            if let Some(v) = self.version(resource_type, id, seq)?.filter(|v| v.version_id == version_id) {
                return Ok(Some(v));
            }
        }
        let prefix = keys::history_prefix(resource_type, id);
        for item in self.tree.scan_prefix(&prefix).rev().take(MAX_VERSIONS_SCANNED) {
            let (k, v) = item?;
            let head: VersionRecord = decode::<records::VersionHead>(&k, &v)?.into();
            if head.version_id == version_id {
                return self.version(resource_type, id, head.seq);
            }
        }
        Ok(None)
    }

    /// Versions of one resource, newest first, at most `limit`.
    pub fn history(&self, resource_type: &str, id: &str, limit: usize) -> Result<Vec<VersionRecord>> {
        let prefix = keys::history_prefix(resource_type, id);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix).rev().take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Deleted subscriptions whose events are still being removed (`Commit::purge_outbox`).
    pub fn purges(&self) -> Result<Vec<String>> {
        let prefix = keys::purge_prefix();
        let mut out = Vec::new();
        for key in self.tree.scan_prefix(&prefix).keys() {
            let key = key?;
            out.push(String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default()).into_owned());
        }
        Ok(out)
    }

    /// Current pointers of every resource of a type, in id order, starting after `after`.
    pub fn list_current(&self, resource_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, CurrentRecord)>> {
        let prefix = keys::current_type_prefix(resource_type);
        let mut out = Vec::new();
        let start = match after {
            Some(id) => {
                let mut k = keys::current(resource_type, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let id = String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned();
            out.push((id, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// A subscription's state, upgraded from older releases' form (`SubState::upgraded`).
    pub fn sub_state(&self, sub: &str) -> Result<Option<SubState>> {
        Ok(self.get::<SubState>(&keys::sub_state(sub))?.map(SubState::upgraded))
    }

    pub fn sub_states(&self) -> Result<Vec<(String, SubState)>> {
        let prefix = keys::sub_state_prefix();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let id = String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned();
            out.push((id, decode::<SubState>(&k, &v)?.upgraded()));
        }
        Ok(out)
    }

    /// Events `from..` of a subscription, in number order, at most `limit`.
    pub fn events(&self, sub: &str, from: u64, limit: usize) -> Result<Vec<EventRecord>> {
        let prefix = keys::event_prefix(sub);
        let mut out = Vec::new();
        for item in self.tree.range(keys::event(sub, from)..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// The dead letters numbered `from..=until`, in number order, at most `limit`.
    pub fn dead_letters_in(&self, sub: &str, from: u64, until: u64, limit: usize) -> Result<Vec<DeadRecord>> {
        let mut out = Vec::new();
        if until < from {
            return Ok(out);
        }
        for item in self.tree.range(keys::dead(sub, from)..=keys::dead(sub, until)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    pub fn dead_letters(&self, sub: &str, limit: usize) -> Result<Vec<DeadRecord>> {
        let prefix = keys::dead_prefix(sub);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix).take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
pub(crate) mod tests;
