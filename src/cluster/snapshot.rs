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
//! - **Streamed both ways**: taking one iterates the store on a blocking thread and hands
//!   records (at most `CHUNK` operations or `CHUNK_BYTES`, whichever comes first) through a
//!   queue of `IN_FLIGHT` to the upload; restoring reads one record at a time from the
//!   download and applies it. Neither holds more than a few records in memory, whatever the
//!   store's size.

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::commitlog::{format, LogCommit};
use crate::store::Store;

pub const BUCKET: &str = "herald_snapshots";
const OBJECT: &str = "store";
/// Store operations per record, at most.
const CHUNK: usize = 4096;
/// Bytes of keys and values per record, about (a record ends after the entry that passes it).
const CHUNK_BYTES: usize = 1 << 20;
/// Records between the store's iteration and the upload.
const IN_FLIGHT: usize = 4;
/// The largest record a restore accepts (a damaged length must not allocate gigabytes).
const MAX_RECORD: usize = 64 << 20;

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
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(IN_FLIGHT);
        let from = store.clone();
        let producer = tokio::task::spawn_blocking(move || {
            let sent = encode(&from, seq, |record| {
                let len = record.len();
                // The upload ended (it failed): stop iterating.
                tx.blocking_send(Ok(Bytes::from(record))).map(|()| len).map_err(|_| SnapshotError::Bucket("the upload stopped".into()))
            });
            if let Err(e) = &sent {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            sent
        });
        let records = Box::pin(futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|item| (item, rx)) }));
        let mut reader = tokio_util::io::StreamReader::new(records);
        let meta = object_store::ObjectMetadata { name: OBJECT.into(), description: Some(format!("seq={seq}")), ..Default::default() };
        let uploaded = self.objects.put(meta, &mut reader).await.map_err(bucket);
        drop(reader);
        let bytes = producer.await??;
        uploaded?;
        tracing::info!(seq, bytes, "snapshot uploaded");
        Ok(previous)
    }

    /// Restores the snapshot into `store` (which must be empty); returns its seq.
    pub async fn restore(&self, store: &Store) -> Result<Option<u64>, SnapshotError> {
        let Some(seq) = self.newest().await? else { return Ok(None) };
        let mut object = self.objects.get(OBJECT).await.map_err(bucket)?;
        let restored = decode_into(store, &mut object).await?;
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

/// Encodes every entry of `store` but its bookkeeping as records of commit `seq`, each
/// preceded by its length, handing each to `emit`; returns the bytes emitted.
fn encode(store: &Store, seq: u64, mut emit: impl FnMut(Vec<u8>) -> Result<usize, SnapshotError>) -> Result<usize, SnapshotError> {
    let mut total = 0;
    let mut ops = Vec::new();
    let mut size = 0;
    let mut flush = |ops: &mut Vec<crate::store::Op>, total: &mut usize| {
        let record = format::encode(&LogCommit { seq, ops: std::mem::take(ops), effects: Vec::new(), lanes: Vec::new() });
        let mut framed = Vec::with_capacity(record.len() + 4);
        framed.extend_from_slice(&(record.len() as u32).to_be_bytes());
        framed.extend_from_slice(&record);
        *total += emit(framed)?;
        Ok::<_, SnapshotError>(())
    };
    store.for_each_entry(&[], |key, value| {
        if bookkeeping(key) {
            return Ok(true);
        }
        size += key.len() + value.len();
        ops.push((key.to_vec(), Some(value.to_vec())));
        if ops.len() == CHUNK || size >= CHUNK_BYTES {
            flush(&mut ops, &mut total)?;
            size = 0;
        }
        Ok::<_, SnapshotError>(true)
    })?;
    // Always at least one record, so that an empty store's snapshot still says its seq.
    flush(&mut ops, &mut total)?;
    Ok(total)
}

/// Applies the records `from` yields to `store`, one at a time; returns their seq.
async fn decode_into(store: &Store, from: &mut (impl AsyncRead + Unpin)) -> Result<u64, SnapshotError> {
    let damaged = |what: &str| SnapshotError::Damaged(what.into());
    let mut seq = None;
    loop {
        let mut len = [0u8; 4];
        let first = from.read(&mut len[..1]).await.map_err(bucket)?;
        if first == 0 {
            break;
        }
        from.read_exact(&mut len[1..]).await.map_err(|_| damaged("a record length is cut off"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD {
            return Err(damaged("a record length is past any record's size"));
        }
        let mut record = vec![0u8; len];
        from.read_exact(&mut record).await.map_err(|_| damaged("a record is cut off"))?;
        let commit = format::decode(&record).map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        if seq.is_some_and(|s| s != commit.seq) {
            return Err(damaged("its records name different seqs"));
        }
        seq = Some(commit.seq);
        let into = store.clone();
        tokio::task::spawn_blocking(move || into.apply_logged(commit.seq, &commit.ops)).await??;
    }
    let seq = seq.ok_or_else(|| damaged("it holds no record"))?;
    let flushed = store.clone();
    tokio::task::spawn_blocking(move || flushed.flush()).await??;
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

    fn encoded(store: &Store, seq: u64) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut records = 0;
        let total = encode(store, seq, |r| {
            records += 1;
            out.extend_from_slice(&r);
            Ok(r.len())
        })
        .unwrap();
        assert_eq!(total, out.len());
        (out, records)
    }

    #[tokio::test]
    async fn a_snapshot_restores_the_same_contents_and_its_seq() {
        let (_a, from) = store_with(CHUNK * 2 + 3);
        let (bytes, records) = encoded(&from, 7);
        assert!(records >= 3, "{records} records");
        let (_b, into) = store_with(0);
        assert_eq!(decode_into(&into, &mut bytes.as_slice()).await.unwrap(), 7);
        let without = |s: &Store| s.contents(&[]).unwrap().into_iter().filter(|(k, _)| !bookkeeping(k)).collect::<Vec<_>>();
        assert_eq!(without(&from), without(&into));
        assert_eq!(into.log_seq(), 7);
    }

    #[tokio::test]
    async fn a_cut_or_damaged_snapshot_is_refused() {
        let (_a, from) = store_with(100);
        let (bytes, _) = encoded(&from, 3);
        for cut in [0, 2, 5, bytes.len() - 1] {
            let (_b, into) = store_with(0);
            assert!(matches!(decode_into(&into, &mut &bytes[..cut]).await, Err(SnapshotError::Damaged(_))), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        let (_b, into) = store_with(0);
        assert!(matches!(decode_into(&into, &mut flipped.as_slice()).await, Err(SnapshotError::Damaged(_))));
        // A length that claims gigabytes is refused before anything is allocated for it.
        let huge = [0xff, 0xff, 0xff, 0xff, 0];
        let (_c, into) = store_with(0);
        assert!(matches!(decode_into(&into, &mut huge.as_slice()).await, Err(SnapshotError::Damaged(_))));
    }

    #[test]
    fn records_are_cut_by_size_as_well_as_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // 40 entries of 100 KB: 4 MB, so at least 4 records of about 1 MiB, not one of 4 MB.
        let ops: Vec<crate::store::Op> = (0..40).map(|i| (format!("r{i:03}").into_bytes(), Some(vec![b'v'; 100_000]))).collect();
        store.apply_logged(1, &ops).unwrap();
        let mut largest = 0;
        let mut records = 0;
        encode(&store, 1, |r| {
            records += 1;
            largest = largest.max(r.len());
            Ok(r.len())
        })
        .unwrap();
        assert!(records >= 4, "{records} records");
        assert!(largest < 2 * CHUNK_BYTES, "a record of {largest} bytes");
    }
}
