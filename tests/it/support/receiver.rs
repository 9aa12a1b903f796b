//! A rest-hook endpoint: records every POST (headers, body and its bytes, arrival time) into a
//! channel and answers with the status the test sets (default 200), after the delay the test
//! sets (default none). A delayed POST is recorded only once it is answered: one the sender
//! gave up on (closed the connection) was never accepted and is not recorded.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::{mpsc, Mutex};

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// The body's bytes as they arrived (what a signature covers).
    pub raw: Bytes,
    pub at: Instant,
    /// The status the receiver answered it with.
    pub answered: u16,
}

impl Received {
    /// The status resource (R5/R4B SubscriptionStatus, R4 Parameters).
    pub fn status(&self) -> &Value {
        &self.body["entry"][0]["resource"]
    }

    /// The notification type, in any version's status shape.
    pub fn kind(&self) -> &str {
        super::status::kind(self.status())
    }

    /// Event numbers carried, as integers, in any version.
    pub fn event_numbers(&self) -> Vec<u64> {
        super::versions::events(self.status()).into_iter().map(|(n, _)| n).collect()
    }

    /// The ids of the events' focus resources (events without a focus left out).
    pub fn focus_ids(&self) -> Vec<String> {
        super::versions::events(self.status()).into_iter().filter_map(|(_, f)| Some(f?.rsplit('/').next()?.to_owned())).collect()
    }

    /// The subscription's id (the reference's last segment, as Inferno's listener reads it).
    pub fn subscription_id(&self) -> String {
        super::versions::field(self.status(), "subscription").unwrap().rsplit('/').next().unwrap().to_string()
    }
}

struct Shared {
    tx: mpsc::UnboundedSender<Received>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// POSTs still to refuse (answered 500, as the Inferno listener answers a request no test session waits for) before `status` applies again.
    refuse: AtomicUsize,
}

/// Counts a request as in flight until it is answered or dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Receiver {
    pub url: String,
    rx: Mutex<mpsc::UnboundedReceiver<Received>>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refused = shared.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if refused { 500 } else { shared.status.load(Ordering::SeqCst) };
    let _ = shared.tx.send(Received { headers, body: parsed, raw: body, at: Instant::now(), answered: status });
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let local = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tx,
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            refuse: AtomicUsize::new(0),
        });
        let app = Router::new().route("/hook", post(hook)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url: format!("http://{local}/hook"), rx: Mutex::new(rx), shared, task }
    }

    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Answers the next `n` POSTs 500 (a receiver not ready yet), then as set before.
    pub fn refuse_next(&self, n: usize) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    /// Answers every later POST only after `d` (a slow endpoint).
    pub fn set_delay(&self, d: Duration) {
        self.shared.delay_ms.store(u64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
    }

    /// POSTs received and not yet answered (nor given up by the sender).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The next notification of any kind, or a failure naming the wait.
    pub async fn next_within(&self, d: Duration) -> Received {
        let mut rx = self.rx.lock().await;
        match tokio::time::timeout(d, rx.recv()).await {
            Ok(Some(r)) => r,
            _ => panic!("no notification arrived within {d:?}"),
        }
    }

    /// The next notification of `kind`, skipping others (heartbeats, say).
    pub async fn next_of(&self, kind: &str, d: Duration) -> Received {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.next_within(left).await;
            if r.kind() == kind {
                return r;
            }
        }
    }

    /// Event notifications until `n` events have arrived (in arrival order).
    pub async fn events(&self, n: usize, d: Duration) -> Vec<Received> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        let mut count = 0;
        while count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::time::timeout(left, self.next_of("event-notification", left))
                .await
                .unwrap_or_else(|_| panic!("only {count} of {n} events arrived within {d:?}"));
            count += r.event_numbers().len();
            out.push(r);
        }
        out
    }

    /// Everything already received, without waiting.
    pub async fn drain(&self) -> Vec<Received> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r);
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
