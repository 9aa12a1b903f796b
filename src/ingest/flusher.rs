//! Group commit. The committer applies each commit to the store, appends it to the commit log
//! and sends the flusher a `FlushItem`; the flusher takes everything queued, asks the log once
//! to make it durable (`CommitLog::make_durable`: for sled, one fsync) in a blocking thread,
//! then answers every waiting client and publishes lane changes. While one flush runs, the committer
//! keeps applying, so the next flush covers a larger group.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{LaneSink, LaneView};
use crate::commitlog::CommitLog;
use crate::store::Store;

/// What to do once the commits sent so far are durable.
pub(crate) struct FlushItem {
    pub reply: Option<Box<dyn FnOnce(bool) + Send>>,
    pub lanes: Vec<(String, Option<LaneView>)>,
}

/// The flusher task. `delay` (`store.dangerous_flush_delay`, zero outside crash tests) holds
/// each flush. `lost` is cancelled when making commits durable fails: sled does not recover
/// from an IO error in place.
pub(crate) struct Flusher {
    pub store: Store,
    pub log: Arc<dyn CommitLog>,
    pub sink: Arc<dyn LaneSink>,
    pub delay: Duration,
    pub lost: tokio_util::sync::CancellationToken,
    /// `store.flush_timeout`.
    pub timeout: Duration,
}

impl Flusher {
    pub(crate) async fn run(self, mut rx: mpsc::UnboundedReceiver<FlushItem>) {
        let Flusher { store, log, sink, delay, lost, timeout: flush_timeout } = self;
        while let Some(first) = rx.recv().await {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut items = vec![first];
            while let Ok(item) = rx.try_recv() {
                items.push(item);
            }
            let started = Instant::now();
            // Every commit of `items` was applied and appended before they were sent, so the
            // log's `make_durable` covers them, and the store's reads up to `mark`.
            let mark = store.applied_mark();
            let flush_log = log.clone();
            let flushing = tokio::task::spawn_blocking(move || flush_log.make_durable());
            // A storage engine that neither finishes nor fails a flush (sled waiting forever on a
            // write the full disk failed) would hold every waiting client and, through its locks,
            // the committer's thread: past `store.flush_timeout` Herald exits (status 4) for its
            // supervisor to restart it. Nothing unflushed was acknowledged; a restart loses nothing.
            let Ok(flushed) = tokio::time::timeout(flush_timeout, flushing).await else {
                tracing::error!(timeout_s = flush_timeout.as_secs(), "the store did not finish a flush in time; exiting for a restart");
                eprintln!(
                    "herald: the store did not finish a flush within {} s; exiting (status 4) for a restart",
                    flush_timeout.as_secs()
                );
                std::process::exit(crate::EXIT_STORE_STUCK);
            };
            let ok = match flushed {
                Ok(Ok(_)) => {
                    store.mark_durable(mark);
                    true
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "store flush failed; writes in this group are not acknowledged");
                    lost.cancel();
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "flush thread failed");
                    false
                }
            };
            tracing::trace!(group = items.len(), micros = started.elapsed().as_micros() as u64, "ingest.flush");
            let m = crate::ops::metrics::metrics();
            m.flush_duration.observe(started.elapsed().as_secs_f64());
            m.flush_batch.observe(items.iter().filter(|i| i.reply.is_some()).count() as f64);
            for item in items {
                if let Some(reply) = item.reply {
                    reply(ok);
                }
                if ok {
                    for (sub, view) in item.lanes {
                        sink.publish(&sub, view);
                    }
                }
            }
        }
    }
}
