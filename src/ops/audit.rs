//! The audit trail: who changed which subscription, topic or search parameter, every delivery
//! attempt, refused credentials, resends, dead letters and status changes, stored in sled
//! (`store::audit`) and readable by operators (`GET /admin/api/audit`, `herald audit`).
//!
//! Append-only for everyone but the trimmer, which keeps the newest `admin.audit_keep` entries.
//! An entry names actors, resources and outcomes; never resource bodies, header values, tokens
//! or payloads. Each entry is also written to the `tracing` target `audit`.
//!
//! Durability: entries about a change are staged in that change's commit (`stage`), so they
//! survive exactly when the change does; delivery attempts and refused credentials go through
//! the `AuditWriter`, stored within 100 ms and flushed with the next group flush or within
//! sled's one-second flush. Losing the last second of those in a crash loses no notification:
//! the outbox cursor, not the trail, decides what is resent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::fhir::instant::{now_millis, Millis};
use crate::store::{Commit, Store};

/// One entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Position in the trail (from the key; not stored in the value).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    pub at: Millis,
    /// `create`, `update`, `delete`, `status`, `dead-letter`, `resend`, `delivery`,
    /// `credentials-refused`, `withheld`.
    pub action: String,
    /// The client id, `anonymous`, or `herald` for what Herald does on its own.
    pub actor: String,
    /// `Type/id` (with `/_history/vid` for a write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditEntry {
    pub fn new(action: &str, actor: Option<&str>, outcome: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: now_millis(),
            action: action.to_owned(),
            actor: actor.filter(|a| !a.is_empty()).unwrap_or("anonymous").to_owned(),
            entity: None,
            subscription: None,
            outcome: outcome.to_owned(),
            detail: Map::new(),
        }
    }

    /// An entry for something Herald did on its own (delivery, dead letters, status changes).
    pub fn herald(action: &str, outcome: &str) -> AuditEntry {
        AuditEntry::new(action, Some("herald"), outcome)
    }

    pub fn entity(mut self, entity: impl Into<String>) -> AuditEntry {
        self.entity = Some(entity.into());
        self
    }

    pub fn subscription(mut self, sub: impl Into<String>) -> AuditEntry {
        self.subscription = Some(sub.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> AuditEntry {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// Also to the `audit` log target: at `info`, except delivery attempts (`debug`: one per
    /// notification would drown the log; the trail keeps them).
    fn trace(&self) {
        let enabled = if self.action == "delivery" {
            tracing::enabled!(target: "audit", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "audit", tracing::Level::INFO)
        };
        if !enabled {
            return;
        }
        let detail = Value::Object(self.detail.clone());
        let (entity, subscription) = (self.entity.as_deref().unwrap_or(""), self.subscription.as_deref().unwrap_or(""));
        if self.action == "delivery" {
            tracing::debug!(target: "audit", action = %self.action, actor = %self.actor, subscription, outcome = %self.outcome, detail = %detail, "audit");
        } else {
            tracing::info!(target: "audit", action = %self.action, actor = %self.actor, entity, subscription, outcome = %self.outcome, detail = %detail, "audit");
        }
    }
}

/// Stages `entry` in `commit`, to be stored with the change it describes.
pub fn stage(store: &Store, commit: &mut Commit, entry: &AuditEntry) {
    entry.trace();
    if let Err(e) = commit.put_audit(store.next_audit_seq(), entry) {
        tracing::error!(error = %e, "could not encode an audit entry");
    }
}

/// Appends entries off the caller's path: `record` numbers the entry at once (so the trail
/// keeps the order things happened in) and hands it to a task that stores whatever has
/// queued up as one batch. The delivery lanes use it, since one sled insert per attempt on a
/// lane's path measurably slowed a busy subscription. When the queue is full the caller
/// stores the entry itself: nothing is dropped.
pub struct AuditWriter {
    store: Store,
    tx: tokio::sync::mpsc::Sender<(u64, AuditEntry)>,
}

/// Entries queued for the writer before callers store their own.
const QUEUE: usize = 65_536;
/// Most entries stored in one batch.
const BATCH: usize = 4_096;
/// How long the writer lets entries gather after the first of a batch arrives.
const GATHER: std::time::Duration = std::time::Duration::from_millis(100);

impl AuditWriter {
    /// The writer and the task that stores its entries; the task ends once every
    /// `AuditWriter` is dropped, or at `stop`, after storing what is queued (later entries are
    /// stored by their callers).
    pub fn start(store: Store, stop: CancellationToken) -> (AuditWriter, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, AuditEntry)>(QUEUE);
        let task_store = store.clone();
        let task = async move {
            let mut batch = Vec::new();
            loop {
                let got = tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => n,
                    () = stop.cancelled() => {
                        rx.close();
                        rx.recv_many(&mut batch, QUEUE).await
                    }
                };
                if got == 0 {
                    break;
                }
                // Let a busy stream of attempts gather before storing it: one wake-up, one
                // blocking call and (after `coalesce`) few entries per interval, rather than
                // one of each per notification.
                if !stop.is_cancelled() && batch.len() < BATCH {
                    tokio::select! {
                        () = tokio::time::sleep(GATHER) => {}
                        () = stop.cancelled() => {}
                    }
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(v) => batch.push(v),
                            Err(_) => break,
                        }
                    }
                }
                let store = task_store.clone();
                let entries = coalesce(std::mem::take(&mut batch));
                let stored = tokio::task::spawn_blocking(move || store.append_audit_batch(&entries)).await;
                match stored {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "could not store audit entries"),
                    Err(e) => tracing::error!(error = %e, "the audit writer failed"),
                }
                if stop.is_cancelled() && rx.is_empty() {
                    break;
                }
            }
        };
        (AuditWriter { store, tx }, task)
    }

    pub fn record(&self, entry: AuditEntry) {
        entry.trace();
        let seq = self.store.next_audit_seq();
        if let Err(err) = self.tx.try_send((seq, entry)) {
            let (seq, entry) = match err {
                tokio::sync::mpsc::error::TrySendError::Full(v) | tokio::sync::mpsc::error::TrySendError::Closed(v) => v,
            };
            if let Err(e) = self.store.append_audit(seq, &entry) {
                tracing::error!(error = %e, "could not store an audit entry");
            }
        }
    }
}

/// Whether `e` is a successful event delivery, which `coalesce` may merge.
fn delivered_events(e: &AuditEntry) -> bool {
    e.action == "delivery" && e.outcome == "success" && e.detail.get("kind").and_then(Value::as_str) == Some("event-notification")
}

/// Merges the successful event deliveries of one subscription that follow each other in a
/// queued batch into one entry: `firstEvent` of the first, `lastEvent` of the last,
/// `attempts` (how many notifications), `until` (time of the last) and the longest
/// `millis`. A busy subscription then costs one entry per batch instead of one per
/// notification; failures, handshakes, heartbeats and everything else stay one entry each,
/// and under light load nothing is merged. Sequence numbers stay increasing, with gaps.
fn coalesce(entries: Vec<(u64, AuditEntry)>) -> Vec<(u64, AuditEntry)> {
    let mut out: Vec<(u64, AuditEntry)> = Vec::with_capacity(entries.len());
    // The index in `out` of each subscription's latest entry.
    let mut latest: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (seq, e) in entries {
        let sub = e.subscription.clone().unwrap_or_default();
        if delivered_events(&e) {
            if let Some(prev) = latest.get(&sub).and_then(|&i| out.get_mut(i)).map(|(_, p)| p).filter(|p| delivered_events(p)) {
                let attempts = prev.detail.get("attempts").and_then(Value::as_u64).unwrap_or(1) + 1;
                let millis = |x: &AuditEntry| x.detail.get("millis").and_then(Value::as_u64).unwrap_or(0);
                let longest = millis(prev).max(millis(&e));
                if let Some(last) = e.detail.get("lastEvent") {
                    prev.detail.insert("lastEvent".into(), last.clone());
                }
                prev.detail.insert("attempts".into(), attempts.into());
                prev.detail.insert("millis".into(), longest.into());
                prev.detail.insert("until".into(), e.at.into());
                continue;
            }
        }
        latest.insert(sub, out.len());
        out.push((seq, e));
    }
    out
}

/// What an operator asks for.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Entries after this sequence number (oldest first); none: the newest ones.
    pub after: Option<u64>,
    pub limit: Option<usize>,
    pub subscription: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
}

/// Most entries one query returns, and most it reads to find them.
pub const MAX_LIMIT: usize = 1000;
const MAX_READ: usize = 200_000;

/// The entries `query` selects, oldest first.
pub fn query(store: &Store, query: &AuditQuery) -> crate::store::Result<Vec<AuditEntry>> {
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let found = store.audit_entries::<AuditEntry>(query.after, limit, MAX_READ, |e| {
        query.subscription.as_deref().is_none_or(|s| e.subscription.as_deref() == Some(s))
            && query.action.as_deref().is_none_or(|a| e.action == a)
            && query.actor.as_deref().is_none_or(|a| e.actor == a)
    })?;
    Ok(found
        .into_iter()
        .map(|(seq, mut e)| {
            e.seq = seq;
            e
        })
        .collect())
}

/// Keeps the newest `keep` entries, trimming once a minute until `stop`.
pub async fn trim(store: Store, keep: u64, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.trim_audit(keep)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(removed = n, "audit trail trimmed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not trim the audit trail"),
            Err(e) => tracing::warn!(error = %e, "the audit trimmer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(sub: &str, outcome: &str, kind: &str, first: u64, last: u64, millis: u64) -> AuditEntry {
        AuditEntry::herald("delivery", outcome)
            .subscription(sub)
            .detail("kind", kind)
            .detail("firstEvent", first)
            .detail("lastEvent", last)
            .detail("millis", millis)
    }

    #[test]
    fn consecutive_successful_deliveries_of_a_subscription_merge_and_nothing_else_does() {
        let batch = vec![
            (1, delivery("a", "success", "event-notification", 1, 1, 3)),
            (2, delivery("b", "success", "event-notification", 7, 7, 1)),
            (3, delivery("a", "success", "event-notification", 2, 3, 9)),
            (4, delivery("a", "success", "event-notification", 4, 4, 2)),
            (5, delivery("a", "failure", "event-notification", 5, 5, 1)),
            (6, delivery("a", "success", "event-notification", 5, 5, 1)),
            (7, delivery("a", "success", "heartbeat", 0, 0, 1)),
            (8, delivery("a", "success", "event-notification", 6, 6, 1)),
        ];
        let out = coalesce(batch);
        let seqs: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 5, 6, 7, 8]);
        let merged = &out[0].1;
        assert_eq!((merged.detail["firstEvent"].as_u64(), merged.detail["lastEvent"].as_u64()), (Some(1), Some(4)));
        assert_eq!((merged.detail["attempts"].as_u64(), merged.detail["millis"].as_u64()), (Some(3), Some(9)));
        assert_eq!(out[1].1.subscription.as_deref(), Some("b"));
        assert_eq!(out[2].1.outcome, "failure");
        // After a failure, the retry that succeeds starts a new entry.
        assert_eq!(out[3].1.detail["firstEvent"].as_u64(), Some(5));
        assert!(!out[3].1.detail.contains_key("attempts"));
    }

    fn append(store: &Store, entry: &AuditEntry) {
        store.append_audit(store.next_audit_seq(), entry).expect("append");
    }

    #[test]
    fn entries_are_kept_in_order_filtered_and_trimmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        for i in 0..10 {
            let sub = if i % 2 == 0 { "a" } else { "b" };
            append(&store, &AuditEntry::herald("delivery", "success").subscription(sub).detail("i", i));
        }
        let newest = query(&store, &AuditQuery { limit: Some(3), ..Default::default() }).expect("query");
        assert_eq!(newest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
        let only_a = query(&store, &AuditQuery { after: Some(2), subscription: Some("a".into()), ..Default::default() }).expect("query");
        assert_eq!(only_a.iter().map(|e| e.detail["i"].as_i64().unwrap_or(-1)).collect::<Vec<_>>(), vec![2, 4, 6, 8]);
        assert_eq!(store.trim_audit(4).expect("trim"), 6);
        let left = query(&store, &AuditQuery { after: Some(0), ..Default::default() }).expect("query");
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
        drop(store);
        // Numbering continues after a reopen.
        let store = crate::store::when_unlocked(|| Store::open(dir.path())).expect("reopen");
        append(&store, &AuditEntry::herald("delivery", "success"));
        let last = query(&store, &AuditQuery { limit: Some(1), ..Default::default() }).expect("query");
        assert_eq!(last[0].seq, 11);
    }
}
