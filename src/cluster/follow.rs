//! Applying the stream to this node's store: `catch_up` (a new writer, before it accepts
//! writes) and `tail` (a follower, for as long as it follows).
//!
//! Decisions:
//! - Commits are applied through `ingest::Replica`, in stream order, each exactly once per
//!   opening: the store's `log_seq` says where to continue. A commit is a list of exact
//!   key/value operations, so applying a suffix again after a crash (the store recorded an
//!   older `log_seq` than it holds) converges to the same contents.
//! - Everything in the stream is durable (JetStream acknowledged it), so a follower marks what
//!   it applied durable at once (reads wait for that mark) and flushes its own store only to
//!   restart faster (at most once a second).
//! - A store whose `log_seq` is past the stream's last sequence belongs to another log (a
//!   stream recreated, a data dir from elsewhere) and is refused.
//! - The follower wakes on every record published to the log's subjects (a core NATS
//!   subscription) and otherwise checks once a second.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::commitlog::{LogCommit, LogError, LogReader};
use crate::fhir::subscription::SubscriptionLimits;
use crate::ingest::{IngestError, LaneSink, LaneView, Replica};
use crate::store::{Store, StoreError};

/// Takes a snapshot of `store` at `seq` if no other follower is taking one and the newest is
/// older than `snapshot_every`, then trims the stream below the snapshot it replaced. Failures
/// are logged: the next interval tries again.
async fn snapshot(node: &super::Node, store: &Store, seq: u64) {
    let lease = match node.leases.acquire(super::SNAPSHOT_LEASE, &node.node_id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask for the snapshot lease");
            return;
        }
    };
    let result = async {
        if node.snapshots.newest().await?.is_some_and(|newest| seq.saturating_sub(newest) < node.snapshot_every) {
            return Ok(None);
        }
        let previous = node.snapshots.take(store, seq).await?;
        Ok::<_, super::snapshot::SnapshotError>(previous)
    }
    .await;
    match result {
        Ok(Some(previous)) => match node.reader.trim_below(previous + 1).await {
            Ok(purged) => tracing::info!(below = previous + 1, purged, "commit log trimmed below the previous snapshot"),
            Err(e) => tracing::warn!(error = %e, "cannot trim the commit log"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, seq, "cannot take a snapshot"),
    }
    let _ = node.leases.release(lease).await;
}

/// Commits read from the stream at a time.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("the commit log: {0}")]
    Log(#[from] LogError),
    #[error("applying a commit: {0}")]
    Apply(#[from] IngestError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("this data directory has applied commit {store} but the cluster's log ends at {stream}: it belongs to another log")]
    Ahead { store: u64, stream: u64 },
    #[error("this store ends at commit {store} but the cluster's log now starts at {first}: it must be restored from a snapshot")]
    Trimmed { store: u64, first: u64 },
    #[error("an apply task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Applies `commits` on a blocking thread and gives the replica back, with the lanes they
/// told (each once, as it is after the last commit; `None`: gone).
async fn apply(mut replica: Replica, commits: Vec<LogCommit>) -> Result<(Replica, Vec<(String, Option<LaneView>)>), FollowError> {
    tokio::task::spawn_blocking(move || {
        let mut told = std::collections::HashSet::new();
        for commit in &commits {
            for (sub, _) in replica.apply(commit)? {
                told.insert(sub);
            }
        }
        let store = replica.store();
        store.mark_durable(store.applied_mark());
        let lanes = told.into_iter().map(|sub| {
            let view = replica.lane_view(&sub);
            (sub, view)
        });
        let lanes = lanes.collect();
        Ok((replica, lanes))
    })
    .await?
}

/// Applies the stream from the store's `log_seq` through `through` (a writer's catch-up:
/// the stream's last sequence when it opened the log). Returns how many commits it applied.
pub async fn catch_up(
    store: &Store,
    reader: &LogReader,
    through: u64,
    base_url: &str,
    limits: &SubscriptionLimits,
) -> Result<u64, FollowError> {
    let from = store.log_seq();
    if from > through {
        return Err(FollowError::Ahead { store: from, stream: through });
    }
    if from == through {
        return Ok(0);
    }
    let first = reader.first_seq().await?;
    if from + 1 < first {
        return Err(FollowError::Trimmed { store: from, first });
    }
    let started = Instant::now();
    let (store2, base, limits) = (store.clone(), base_url.to_owned(), limits.clone());
    let mut replica = tokio::task::spawn_blocking(move || Replica::open(store2, &base, limits)).await??;
    let mut next = from + 1;
    while next <= through {
        let mut commits = reader.read(next, BATCH).await?;
        commits.retain(|c| c.seq <= through);
        let Some(last) = commits.last().map(|c| c.seq) else { break };
        replica = apply(replica, commits).await?.0;
        next = last + 1;
    }
    let flushed = store.clone();
    tokio::task::spawn_blocking(move || flushed.flush()).await??;
    tracing::info!(from, through, secs = started.elapsed().as_secs_f64(), "caught up with the commit log");
    Ok(through - from)
}

/// What a follower's loop reads from and applies to.
pub struct Tail {
    pub store: Store,
    pub node: std::sync::Arc<super::Node>,
    pub base_url: String,
    pub limits: SubscriptionLimits,
    /// Where the lanes of this node hear of their subscriptions (`channels::Dispatcher`).
    pub sink: std::sync::Arc<dyn LaneSink>,
}

/// A follower's loop: applies every commit the stream gets, in order, until `stop`; `applied`
/// tells the last seq applied. Errors reading the stream are retried; an error applying a
/// commit ends the loop (and the role: `failed` is cancelled).
pub async fn tail(t: Tail, applied: watch::Sender<u64>, stop: CancellationToken, failed: CancellationToken) {
    if let Err(e) = tail_inner(t, applied, &stop).await {
        if !stop.is_cancelled() {
            tracing::error!(error = %e, "the follower cannot apply the commit log; leaving the role");
            failed.cancel();
        }
    }
}

async fn tail_inner(t: Tail, applied: watch::Sender<u64>, stop: &CancellationToken) -> Result<(), FollowError> {
    let Tail { store, node, base_url, limits, sink } = t;
    let reader = node.reader.clone();
    let mut wake = node.client.subscribe(format!("{}.>", node.log_subject)).await.ok();
    let mut last_snapshot = store.log_seq();
    let stream_last = reader.last_seq().await?;
    if store.log_seq() > stream_last {
        return Err(FollowError::Ahead { store: store.log_seq(), stream: stream_last });
    }
    let opened = store.clone();
    let mut replica = tokio::task::spawn_blocking(move || Replica::open(opened, &base_url, limits)).await??;
    applied.send_replace(store.log_seq());
    // Every subscription's lane as the store has it (the writer's committer does the same at
    // its start); the dispatcher runs those of the shards this node holds.
    for (sub, view) in replica.lane_views() {
        sink.publish(&sub, Some(view));
    }
    let mut flushed_at = Instant::now();
    let mut unflushed = false;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let next = store.log_seq() + 1;
        let commits = match reader.read(next, BATCH).await {
            Ok(c) => c,
            Err(LogError::Corrupt(why)) => return Err(LogError::Corrupt(why).into()),
            Err(e) => {
                if let Ok(first) = reader.first_seq().await {
                    if next < first {
                        return Err(FollowError::Trimmed { store: next - 1, first });
                    }
                }
                tracing::warn!(error = %e, "reading the commit log; retrying");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        if let Some(last) = commits.last().map(|c| c.seq) {
            let lanes;
            (replica, lanes) = apply(replica, commits).await?;
            applied.send_replace(last);
            for (sub, view) in lanes {
                sink.publish(&sub, view);
            }
            unflushed = true;
            if node.snapshot_every > 0 && last - last_snapshot >= node.snapshot_every {
                // Between two applies: the store is exactly the state after `last`.
                snapshot(&node, &store, last).await;
                last_snapshot = last;
            }
            continue;
        }
        if unflushed && flushed_at.elapsed() >= Duration::from_secs(1) {
            let s = store.clone();
            tokio::task::spawn_blocking(move || s.flush()).await??;
            flushed_at = Instant::now();
            unflushed = false;
        }
        // Nothing new: wait for the next record published, or a second.
        let woke = async {
            match wake.as_mut() {
                Some(sub) => {
                    sub.next().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = woke => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush()).await??;
    Ok(())
}
