//! A notification listener that behaves like the Inferno subscriptions test kit's
//! (`../shared/fhir/backport/INFERNO-SERVER-CHECKS.md` §0): it accepts a POST only while its
//! session waits and only with `Authorization: Bearer <token>`, answering 200 with an empty
//! body; anything else gets 500, which the server sees as a failed delivery. Accepted requests
//! are tagged, as the kit tags them, with the notification type and subscription id read from
//! the first `Parameters` entry (R4) or the first `SubscriptionStatus` entry (R4B).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::{Mutex, Notify};

pub const PATH: &str = "/custom/subscriptions_r5_backport_r4_server/subscription/channel/notification_listener";

/// One accepted notification with the kit's tags.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub headers: HeaderMap,
    pub body: Value,
    pub kind: String,
    pub subscription: String,
}

struct Shared {
    token: String,
    waiting: AtomicBool,
    refused: AtomicUsize,
    accepted: Mutex<Vec<Tagged>>,
    arrived: Notify,
}

pub struct Listener {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The status entry's notification type and subscription id, as the kit reads them: the
/// first entry whose resource is a `Parameters` (its `type` and `subscription` parameters),
/// or for R4B the first `SubscriptionStatus`. `None` where the kit's listener would fail.
pub fn tags(body: &Value) -> Option<(String, String)> {
    for entry in body["entry"].as_array()? {
        let resource = entry.get("resource")?;
        match resource["resourceType"].as_str()? {
            "Parameters" => {
                let param = |name: &str| resource["parameter"].as_array()?.iter().find(|p| p["name"] == name).cloned();
                let kind = param("type")?["valueCode"].as_str()?.to_owned();
                let sub = param("subscription")?["valueReference"]["reference"].as_str()?.rsplit('/').next()?.to_owned();
                return Some((kind, sub));
            }
            "SubscriptionStatus" => {
                let kind = resource["type"].as_str()?.to_owned();
                let sub = resource["subscription"]["reference"].as_str()?.rsplit('/').next()?.to_owned();
                return Some((kind, sub));
            }
            _ => {}
        }
    }
    None
}

async fn listen(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.token.as_str()) || !shared.waiting.load(Ordering::SeqCst) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let Some((kind, subscription)) = tags(&body) else {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    shared.accepted.lock().await.push(Tagged { headers, body, kind, subscription });
    shared.arrived.notify_waiters();
    StatusCode::OK
}

impl Listener {
    pub async fn start(token: &str) -> Listener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            waiting: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let app = Router::new().route(PATH, post(listen)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Listener { url: format!("http://{local}{PATH}"), shared, task }
    }

    /// The session starts waiting (the kit does this after it parsed the create response).
    pub fn wait(&self) {
        self.shared.waiting.store(true, Ordering::SeqCst);
    }

    /// Requests answered with an error (unmatched token, not waiting, unreadable).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    pub async fn accepted(&self) -> Vec<Tagged> {
        self.shared.accepted.lock().await.clone()
    }

    /// Waits until a notification of `kind` for `subscription` was accepted, and returns it.
    pub async fn next_of(&self, kind: &str, subscription: &str, d: Duration) -> Tagged {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            // Registered before looking, so an arrival between the look and the wait counts.
            let arrived = self.shared.arrived.notified();
            if let Some(t) = self.accepted().await.into_iter().find(|t| t.kind == kind && t.subscription == subscription) {
                return t;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no {kind} for Subscription/{subscription} within {d:?}");
            }
        }
    }
}
