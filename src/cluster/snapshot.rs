//! Snapshots of a node's store in the JetStream object store, so that a new or wiped node
//! does not replay the stream from its first commit, and the stream can be trimmed.
//!
//! Decisions:
//! - **One object**, `store`, in the bucket `herald_snapshots`, replaced by each new snapshot
//!   (the object store swaps it whole); its description says the commit seq it holds
//!   (`seq=N`). A snapshot is every key and value of the store but the store's own bookkeeping
//!   (`commits`, `log-seq`, `store-id` in the meta namespace), as records of the commit format
//!   (`commitlog::format`: each a `LogCommit` of seq N whose ops are puts, CRC-checked), each
//!   preceded by its length (u32, big-endian).
//! - **Taken by a follower** (`follow::tail`, every `cluster.snapshot_every` commits), between
//!   two applies, so the store is exactly the state after commit N (the follower is its only
//!   writer but for node-local audit entries). One follower at a time: it holds the
//!   `snapshot` lease while it takes and uploads one.
//! - **Trimming**: after uploading the snapshot of N, the stream is purged below the seq of the
//!   snapshot it replaced (plus one), so a node that was up to the previous snapshot can still
//!   catch up from the stream, and anything older restores the new one.
//! - **Restoring** (`node::serve`, before a role starts): a node whose store is empty while a
//!   snapshot exists, or whose store ends before the stream's first commit, discards its store
//!   and restores the snapshot; the role then applies the stream from N + 1.
//! - The snapshot is built in memory before the upload (the object store takes a reader);
//!   streaming it from the store is left for stores larger than a node's memory.

use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt;

use crate::commitlog::{format, LogCommit};
use crate::store::Store;

pub const BUCKET: &str = "herald_snapshots";
const OBJECT: &str = "store";
/// Store operations per record.
const CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot bucket: {0}")]
    Bucket(String),
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the snapshot is damaged: {0}")]
    Damaged(String),
    #[error("a snapshot task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn bucket(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Bucket(e.to_string())
}

#[derive(Clone)]
pub struct Snapshots {
    objects: object_store::ObjectStore,
}

impl Snapshots {
    /// Opens the bucket, creating it (file storage, `replicas`) if missing.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Snapshots, SnapshotError> {
        let objects = match js.get_object_store(BUCKET).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: BUCKET.into(),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(bucket)?,
        };
        Ok(Snapshots { objects })
    }

    /// The commit seq of the snapshot stored now (`None`: there is none).
    pub async fn newest(&self) -> Result<Option<u64>, SnapshotError> {
        match self.objects.info(OBJECT).await {
            Ok(info) if !info.deleted => Ok(info.description.as_deref().and_then(|d| d.strip_prefix("seq=")).and_then(|n| n.parse().ok())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(bucket(e)),
        }
    }

    /// Uploads the snapshot of `store`, which must hold exactly the state after commit `seq`.
    /// Returns the seq of the snapshot it replaced, if any.
    pub async fn take(&self, store: &Store, seq: u64) -> Result<Option<u64>, SnapshotError> {
        let previous = self.newest().await?;
        let from = store.clone();
        let bytes = tokio::task::spawn_blocking(move || encode(&from, seq)).await??;
        let meta = object_store::ObjectMetadata { name: OBJECT.into(), description: Some(format!("seq={seq}")), ..Default::default() };
        self.objects.put(meta, &mut bytes.as_slice()).await.map_err(bucket)?;
        tracing::info!(seq, bytes = bytes.len(), "snapshot uploaded");
        Ok(previous)
    }

    /// Restores the snapshot into `store` (which must be empty); returns its seq.
    pub async fn restore(&self, store: &Store) -> Result<Option<u64>, SnapshotError> {
        let Some(seq) = self.newest().await? else { return Ok(None) };
        let mut object = self.objects.get(OBJECT).await.map_err(bucket)?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(bucket)?;
        let into = store.clone();
        let restored = tokio::task::spawn_blocking(move || decode_into(&into, &bytes)).await??;
        if restored != seq {
            return Err(SnapshotError::Damaged(format!("its description says seq {seq}, its records {restored}")));
        }
        Ok(Some(seq))
    }
}

/// The meta keys a snapshot leaves out: the store's own bookkeeping.
fn bookkeeping(key: &[u8]) -> bool {
    match key.split_first() {
        Some((b'm', name)) => [&b"commits"[..], b"log-seq", b"store-id"].contains(&name),
        _ => false,
    }
}

fn encode(store: &Store, seq: u64) -> Result<Vec<u8>, SnapshotError> {
    let mut out = Vec::new();
    let mut ops = Vec::with_capacity(CHUNK);
    let flush = |ops: &mut Vec<crate::store::Op>, out: &mut Vec<u8>| {
        let record = format::encode(&LogCommit { seq, ops: std::mem::take(ops), effects: Vec::new(), lanes: Vec::new() });
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(&record);
    };
    for (key, value) in store.contents(&[])? {
        if bookkeeping(&key) {
            continue;
        }
        ops.push((key, Some(value)));
        if ops.len() == CHUNK {
            flush(&mut ops, &mut out);
        }
    }
    // Always at least one record, so that an empty store's snapshot still says its seq.
    flush(&mut ops, &mut out);
    Ok(out)
}

fn decode_into(store: &Store, mut bytes: &[u8]) -> Result<u64, SnapshotError> {
    let mut seq = None;
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(SnapshotError::Damaged("a record length is cut off".into()));
        };
        let Some((record, after)) = rest.split_at_checked(u32::from_be_bytes(*len) as usize) else {
            return Err(SnapshotError::Damaged("a record is cut off".into()));
        };
        let commit = format::decode(record).map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        if seq.is_some_and(|s| s != commit.seq) {
            return Err(SnapshotError::Damaged("its records name different seqs".into()));
        }
        seq = Some(commit.seq);
        store.apply_logged(commit.seq, &commit.ops)?;
        bytes = after;
    }
    let seq = seq.ok_or_else(|| SnapshotError::Damaged("it holds no record".into()))?;
    store.flush()?;
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ops: Vec<crate::store::Op> = (0..n).map(|i| (format!("r{i:06}").into_bytes(), Some(vec![b'v'; i % 50]))).collect();
        store.apply_logged(7, &ops).unwrap();
        (dir, store)
    }

    #[test]
    fn a_snapshot_restores_the_same_contents_and_its_seq() {
        let (_a, from) = store_with(CHUNK * 2 + 3);
        let bytes = encode(&from, 7).unwrap();
        let (_b, into) = store_with(0);
        assert_eq!(decode_into(&into, &bytes).unwrap(), 7);
        let without = |s: &Store| s.contents(&[]).unwrap().into_iter().filter(|(k, _)| !bookkeeping(k)).collect::<Vec<_>>();
        assert_eq!(without(&from), without(&into));
        assert_eq!(into.log_seq(), 7);
    }

    #[test]
    fn a_cut_or_damaged_snapshot_is_refused() {
        let (_a, from) = store_with(100);
        let bytes = encode(&from, 3).unwrap();
        for cut in [0, 2, 5, bytes.len() - 1] {
            let (_b, into) = store_with(0);
            assert!(matches!(decode_into(&into, &bytes[..cut]), Err(SnapshotError::Damaged(_))), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        let (_b, into) = store_with(0);
        assert!(matches!(decode_into(&into, &flipped), Err(SnapshotError::Damaged(_))));
    }
}
