//! The audit trail: who changed which subscription, topic or search parameter, every delivery
//! attempt, refused credentials, resends, dead letters and status changes, stored in sled
//! (`store::audit`) and readable by operators (`GET /admin/api/audit`, `herald audit`).
//!
//! Append-only for everyone but the trimmer, which keeps the newest `admin.audit_keep` entries.
//! An entry names actors, resources and outcomes; never resource bodies, header values, tokens
//! or payloads. Each entry is also written to the `tracing` target `audit`.
//!
//! Durability: entries about a change are staged in that change's commit (`stage`), so they
//! survive exactly when the change does; delivery attempts and refused credentials are plain
//! inserts (`record`), flushed with the next group flush or within sled's one-second flush.
//! Losing the last second of delivery entries in a crash loses no notification: the outbox
//! cursor, not the trail, decides what is resent.

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

/// Appends `entry` now. A storage failure is logged; it never fails what is being audited.
pub fn record(store: &Store, entry: &AuditEntry) {
    entry.trace();
    if let Err(e) = store.append_audit(store.next_audit_seq(), entry) {
        tracing::error!(error = %e, "could not store an audit entry");
    }
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

    #[test]
    fn entries_are_kept_in_order_filtered_and_trimmed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        for i in 0..10 {
            let sub = if i % 2 == 0 { "a" } else { "b" };
            record(&store, &AuditEntry::herald("delivery", "success").subscription(sub).detail("i", i));
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
        let store = Store::open(dir.path()).expect("reopen");
        record(&store, &AuditEntry::herald("delivery", "success"));
        let last = query(&store, &AuditQuery { limit: Some(1), ..Default::default() }).expect("query");
        assert_eq!(last[0].seq, 11);
    }
}
