//! The rest-hook endpoint: an axum app on an ephemeral loopback port that answers 200 at once
//! (handshakes included) and timestamps every notification on arrival. For each event of an
//! `event-notification` Bundle it keeps the join key of the write that caused it, the Task
//! (from the payload entry's `fullUrl`) and the version (its `response.etag`), so that
//! latency = arrival - the write's send time (`scenarios::join`). It also checks that each
//! subscription's `eventNumber`s arrive as 1, 2, 3, ... and counts the exceptions.
//!
//! A gated receiver (`Receiver::start_gated`, the `lane` scenario) holds every
//! event-notification unanswered until its gate opens, and keeps a copy of the first one's body.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio::sync::watch;

use crate::workload::{etag_version, key, task_number};
use crate::Result;

/// One event received: the write it came from and when it arrived.
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    pub key: u64,
    pub at: Instant,
}

#[derive(Default)]
pub struct Receipts {
    handshakes: AtomicU64,
    events: AtomicU64,
    bundles: AtomicU64,
    /// Events whose write could not be told (no Task focus or no version).
    unkeyed: AtomicU64,
    /// Bodies that were not a notification Bundle.
    unparsed: AtomicU64,
    /// Events whose number was not the previous one of its subscription plus one.
    out_of_order: AtomicU64,
    log: Mutex<Vec<Receipt>>,
    last_number: Mutex<HashMap<String, u64>>,
    /// The first event-notification body received.
    sample: Mutex<Option<Bytes>>,
}

impl Receipts {
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn bundles(&self) -> u64 {
        self.bundles.load(Ordering::Relaxed)
    }

    pub fn out_of_order(&self) -> u64 {
        self.out_of_order.load(Ordering::Relaxed)
    }

    pub fn unkeyed(&self) -> u64 {
        self.unkeyed.load(Ordering::Relaxed) + self.unparsed.load(Ordering::Relaxed)
    }

    /// Every keyed receipt so far.
    pub fn log(&self) -> Vec<Receipt> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The body of the first event-notification received, if any.
    pub fn sample(&self) -> Option<Bytes> {
        self.sample.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// When the last keyed event arrived.
    pub fn last_at(&self) -> Option<Instant> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|r| r.at).max()
    }

    /// Events that arrived in `[from, until)`.
    pub fn events_between(&self, from: Instant, until: Instant) -> u64 {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().filter(|r| (from..until).contains(&r.at)).count() as u64
    }

    /// Takes one body in; true when it was an event-notification.
    fn take(&self, body: &[u8], at: Instant) -> bool {
        let Ok(bundle) = serde_json::from_slice::<Bundle>(body) else {
            self.unparsed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let mut entries = bundle.entry.into_iter();
        let Some(head) = entries.next().and_then(|e| e.resource) else {
            self.unparsed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match head.kind.as_deref() {
            Some("handshake") => {
                self.handshakes.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some("event-notification") => {
                self.take_events(head, entries, at);
                true
            }
            _ => false,
        }
    }

    fn take_events(&self, head: Head, payload: impl Iterator<Item = Entry>, at: Instant) {
        self.bundles.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(head.events.len() as u64, Ordering::Relaxed);
        let sub = head.subscription.and_then(|s| s.reference).unwrap_or_default();
        {
            let mut last = self.last_number.lock().unwrap_or_else(PoisonError::into_inner);
            let prev = last.entry(sub).or_insert(0);
            for ev in &head.events {
                let n = ev.number.as_deref().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                if n != *prev + 1 {
                    self.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                *prev = n.max(*prev);
            }
        }
        // Payload entries follow the status entry in the order of `notificationEvent`.
        let mut keyed = Vec::with_capacity(head.events.len());
        let mut seen = 0;
        for entry in payload.take(head.events.len()) {
            seen += 1;
            let task = entry.full_url.as_deref().and_then(task_number);
            let version = entry.response.and_then(|r| r.etag).as_deref().and_then(etag_version);
            match (task, version) {
                (Some(t), Some(v)) => keyed.push(Receipt { key: key(t, v), at }),
                _ => {
                    self.unkeyed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.unkeyed.fetch_add(head.events.len().saturating_sub(seen) as u64, Ordering::Relaxed);
        self.log.lock().unwrap_or_else(PoisonError::into_inner).extend(keyed);
    }
}

// Only what the receiver reads of a notification Bundle; serde skips the rest. A payload
// entry's `resource` is read through `Head` too: the Tasks herald-load writes have none of
// its fields, so it reads as all absent.
#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    resource: Option<Head>,
    response: Option<EntryResponse>,
}

/// The SubscriptionStatus (for a payload entry, every field here is absent).
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    subscription: Option<Reference>,
    #[serde(rename = "notificationEvent", default)]
    events: Vec<NotificationEvent>,
}

#[derive(Deserialize)]
struct NotificationEvent {
    #[serde(rename = "eventNumber")]
    number: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct EntryResponse {
    etag: Option<String>,
}

#[derive(Clone)]
struct Hook {
    receipts: Arc<Receipts>,
    /// Gated receivers: event-notifications wait until this reads true.
    gate: Option<watch::Receiver<bool>>,
}

async fn hook(State(hook): State<Hook>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    if hook.receipts.take(&body, at) {
        {
            let mut sample = hook.receipts.sample.lock().unwrap_or_else(PoisonError::into_inner);
            if sample.is_none() {
                *sample = Some(body.clone());
            }
        }
        if let Some(mut gate) = hook.gate {
            // A closed sender (the receiver is going away) opens the gate too.
            let _ = gate.wait_for(|open| *open).await;
        }
    }
    StatusCode::OK
}

pub struct Receiver {
    /// The endpoint to put in Subscriptions.
    pub url: String,
    pub receipts: Arc<Receipts>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Result<Receiver> {
        Self::serve(None).await
    }

    /// A receiver that answers event-notifications only once the returned gate is set to true
    /// (handshakes and heartbeats are answered at once).
    pub async fn start_gated() -> Result<(Receiver, watch::Sender<bool>)> {
        let (open, gate) = watch::channel(false);
        Ok((Self::serve(Some(gate)).await?, open))
    }

    async fn serve(gate: Option<watch::Receiver<bool>>) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let receipts = Arc::new(Receipts::default());
        let app = Router::new().route("/hook", post(hook)).with_state(Hook { receipts: receipts.clone(), gate });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("herald-load: receiver stopped: {e}");
            }
        });
        Ok(Receiver { url: format!("http://{addr}/hook"), receipts, task })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_keyed_by_task_and_version_and_numbering_is_checked() {
        let r = Receipts::default();
        let at = Instant::now();
        r.take(br#"{"entry":[{"resource":{"type":"handshake"}}]}"#, at);
        let bundle = |n: u32, v: u32| {
            format!(
                r#"{{"resourceType":"Bundle","entry":[{{"fullUrl":"urn:uuid:1","resource":{{"resourceType":"SubscriptionStatus","type":"event-notification","subscription":{{"reference":"http://h/fhir/Subscription/a"}},"notificationEvent":[{{"eventNumber":"{n}"}}]}}}},{{"fullUrl":"http://h/fhir/Task/lt5","resource":{{"resourceType":"Task","status":"x"}},"response":{{"status":"200","etag":"W/\"{v}\""}}}}]}}"#
            )
        };
        r.take(bundle(1, 2).as_bytes(), at);
        r.take(bundle(3, 4).as_bytes(), at);
        assert_eq!(r.handshakes(), 1);
        assert_eq!(r.events(), 2);
        assert_eq!(r.out_of_order(), 1);
        let keys: Vec<u64> = r.log().iter().map(|x| x.key).collect();
        assert_eq!(keys, vec![key(5, 2), key(5, 4)]);
        assert_eq!(r.unkeyed(), 0);
    }
}
