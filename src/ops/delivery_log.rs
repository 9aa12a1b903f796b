//! The delivery log: each subscription's most recent delivery attempts, for operators
//! (`/admin/api/subscriptions/{id}`, the dashboard, `herald subscriptions show`).
//!
//! Bounded: the newest `admin.delivery_log` attempts per subscription, in memory (a restart
//! starts it empty; the durable record of what was delivered is the outbox cursor). An entry
//! holds the time, the kind, the event numbers, the channel, the HTTP status or the error
//! class, the outcome and the latency; never header values, payloads or error bodies.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::fhir::instant::Millis;
use crate::ops::audit::{AuditEntry, AuditWriter};

/// One attempt.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AttemptEntry {
    pub at: Millis,
    /// `handshake`, `heartbeat`, `event-notification`, or `resend`.
    pub kind: String,
    /// First and last event number carried, if any.
    pub events: Option<(u64, u64)>,
    pub channel: String,
    /// HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// `dns`, `connect`, `timeout`, `blocked`, `other`, when it did not.
    pub error: Option<String>,
    /// `delivered` or `failed`.
    pub outcome: String,
    pub millis: u64,
}

/// Every subscription's recent attempts.
pub struct DeliveryLog {
    capacity: usize,
    entries: Mutex<HashMap<String, VecDeque<AttemptEntry>>>,
    /// Where every attempt is also recorded durably (`admin.audit_deliveries`).
    audit: Option<Arc<AuditWriter>>,
}

impl DeliveryLog {
    pub fn new(capacity: usize) -> DeliveryLog {
        DeliveryLog { capacity, entries: Mutex::new(HashMap::new()), audit: None }
    }

    /// Also appends each attempt to the audit trail, through `writer`.
    pub fn with_audit(mut self, writer: Arc<AuditWriter>) -> DeliveryLog {
        self.audit = Some(writer);
        self
    }

    pub fn record(&self, sub: &str, entry: AttemptEntry) {
        if let Some(writer) = &self.audit {
            let outcome = if entry.outcome == "delivered" { "success" } else { "failure" };
            let mut audit = AuditEntry::herald("delivery", outcome)
                .subscription(sub)
                .detail("kind", entry.kind.clone())
                .detail("channel", entry.channel.clone())
                .detail("millis", entry.millis);
            if let Some((first, last)) = entry.events {
                audit = audit.detail("firstEvent", first).detail("lastEvent", last);
            }
            if let Some(status) = entry.status {
                audit = audit.detail("status", status);
            }
            if let Some(error) = &entry.error {
                audit = audit.detail("error", error.clone());
            }
            writer.record(audit);
        }
        if self.capacity == 0 {
            return;
        }
        let mut all = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let list = all.entry(sub.to_owned()).or_default();
        if list.len() >= self.capacity {
            list.pop_back();
        }
        list.push_front(entry);
    }

    /// Newest first.
    pub fn recent(&self, sub: &str, limit: usize) -> Vec<AttemptEntry> {
        let all = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(sub).map(|l| l.iter().take(limit).cloned().collect()).unwrap_or_default()
    }

    /// Drops a deleted subscription's log.
    pub fn forget(&self, sub: &str) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(sub);
    }

    /// (attempts, failures) of the entries held for `sub`.
    pub fn counts(&self, sub: &str) -> (usize, usize) {
        let all = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(sub).map_or((0, 0), |l| (l.len(), l.iter().filter(|e| e.outcome != "delivered").count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: Millis, outcome: &str) -> AttemptEntry {
        AttemptEntry {
            at,
            kind: "event-notification".into(),
            events: Some((1, 1)),
            channel: "rest-hook".into(),
            status: Some(200),
            error: None,
            outcome: outcome.into(),
            millis: 1,
        }
    }

    #[test]
    fn keeps_the_newest_entries_up_to_its_capacity() {
        let log = DeliveryLog::new(2);
        for (at, outcome) in [(1, "failed"), (2, "delivered"), (3, "failed")] {
            log.record("s", entry(at, outcome));
        }
        let recent = log.recent("s", 10);
        assert_eq!(recent.iter().map(|e| e.at).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(log.counts("s"), (2, 1));
        log.forget("s");
        assert!(log.recent("s", 10).is_empty());
        let off = DeliveryLog::new(0);
        off.record("s", entry(1, "failed"));
        assert!(off.recent("s", 1).is_empty());
    }
}
