//! The one client code path for the HTTP ceiling and every Herald scenario: a reqwest client
//! (HTTP/1.1 keep-alive, no proxy) sending `TaskWrites` either in a closed loop (`concurrency`
//! workers, each sending its next write when the previous one is answered) or in an open loop
//! (writes scheduled at fixed intervals whatever the answers, latency measured from the
//! scheduled time, so that a stall is not hidden: coordinated omission corrected).
//!
//! A write counts when it was sent inside the window (after the warm-up); its answer may come
//! after the window ends. Answers are acknowledgements: any 2xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::header::{CONTENT_TYPE, ETAG};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::receiver::Receipts;
use crate::workload::{etag_version, key, Request, TaskWrites};
use crate::Result;

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
pub fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

pub fn build(concurrency: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// Warm-up, then the measured window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub from: Instant,
    pub until: Instant,
}

impl Window {
    pub fn starting_now(warmup: Duration, duration: Duration) -> Window {
        let start = Instant::now();
        Window { start, from: start + warmup, until: start + warmup + duration }
    }

    pub fn contains(&self, t: Instant) -> bool {
        (self.from..self.until).contains(&t)
    }

    pub fn secs(&self) -> f64 {
        self.until.duration_since(self.from).as_secs_f64()
    }
}

/// An acknowledged write of the window: its join key and when it was sent (scheduled, in the
/// open loop).
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub key: u64,
    pub at: Instant,
}

/// What one run of writes gave.
pub struct Outcome {
    /// Writes sent in the window and acknowledged.
    pub acked: u64,
    /// Writes acknowledged over the whole run, warm-up included.
    pub acked_total: u64,
    /// Writes sent in the window and not acknowledged (error status or no answer).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send (or scheduled send) to acknowledgement, of the acknowledged writes of the window.
    pub ack: Histogram<u64>,
    /// The window's acknowledged writes whose answer named a version (Herald's ETag).
    pub sent: Vec<Sent>,
    pub window: Window,
}

impl Outcome {
    fn new(window: Window) -> Result<Outcome> {
        Ok(Outcome { acked: 0, acked_total: 0, errors: 0, first_error: None, ack: histogram()?, sent: Vec::new(), window })
    }

    fn merge(&mut self, other: Outcome) {
        self.acked += other.acked;
        self.acked_total += other.acked_total;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        let _ = self.ack.add(&other.ack);
        self.sent.extend(other.sent);
    }

    /// Accounts one write sent (or scheduled) at `at` and answered at `done`.
    fn account(&mut self, task: u32, at: Instant, done: Instant, answer: std::result::Result<Option<u32>, String>) {
        let counted = self.window.contains(at);
        match answer {
            Ok(version) => {
                self.acked_total += 1;
                if counted {
                    self.acked += 1;
                    record(&mut self.ack, done.saturating_duration_since(at));
                    if let Some(v) = version {
                        self.sent.push(Sent { key: key(task, v), at });
                    }
                }
            }
            Err(e) => {
                if counted {
                    self.errors += 1;
                }
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn writes_per_sec(&self) -> f64 {
        self.acked as f64 / self.window.secs()
    }
}

/// Sends one write; `Ok(version)` on a 2xx (the version from the ETag, if any).
async fn send(client: &reqwest::Client, req: Request) -> std::result::Result<Option<u32>, String> {
    let resp = client
        .put(&req.url)
        .header(CONTENT_TYPE, "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(req.body)
        .send()
        .await
        .map_err(|e| format!("PUT {}: {e}", req.url))?;
    let status = resp.status();
    let version = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).and_then(etag_version);
    let body = resp.bytes().await.map_err(|e| format!("PUT {}: reading the answer: {e}", req.url))?;
    if status.is_success() {
        Ok(version)
    } else {
        let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        Err(format!("PUT {}: {status}: {text}", req.url))
    }
}

/// Holds each closed-loop writer back until the notifications of all but `ahead` of the writes
/// acknowledged so far have arrived (S3: one write means `per_write` notifications, and an
/// unbounded backlog would only measure the outbox filling up).
#[derive(Clone)]
pub struct Gate {
    pub receipts: Arc<Receipts>,
    pub per_write: u64,
    pub ahead: u64,
}

impl Gate {
    async fn wait(&self, acked: &AtomicU64, until: Instant) {
        loop {
            let due = acked.load(Ordering::Relaxed).saturating_sub(self.ahead).saturating_mul(self.per_write);
            if self.receipts.events() >= due || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// `concurrency` workers; worker `w` writes Task `lt{first_task + w}` over and over.
pub async fn closed_loop(
    client: &reqwest::Client,
    writes: &TaskWrites,
    concurrency: usize,
    window: Window,
    gate: Option<Gate>,
) -> Result<Outcome> {
    let acked = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for w in 0..concurrency.max(1) {
        let (client, writes, gate, acked) = (client.clone(), writes.clone(), gate.clone(), acked.clone());
        let mut out = Outcome::new(window)?;
        let task = u32::try_from(w)?;
        workers.spawn(async move {
            for seq in 0u64.. {
                if let Some(g) = &gate {
                    g.wait(&acked, window.until).await;
                }
                let at = Instant::now();
                if at >= window.until {
                    break;
                }
                let answer = send(&client, writes.request(task, seq)).await;
                let failed = answer.is_err();
                if !failed {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                out.account(task, at, Instant::now(), answer);
                if failed {
                    // Do not spin on a server that is gone; the window still ends on time.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            out
        });
    }
    let mut total = Outcome::new(window)?;
    while let Some(done) = workers.join_next().await {
        total.merge(done?);
    }
    Ok(total)
}

/// Most writes of the open loop in flight at once; past it the schedule waits (and the wait
/// shows in the latency, which is measured from the scheduled time).
const OPEN_LOOP_IN_FLIGHT: usize = 4096;

/// Writes scheduled every `1 / rate` seconds over `tasks` Tasks, each sent on its own task.
pub async fn open_loop(client: &reqwest::Client, writes: &TaskWrites, rate: f64, tasks: u32, window: Window) -> Result<Outcome> {
    let slots = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut total = Outcome::new(window)?;
    for k in 0u64.. {
        let scheduled = window.start + Duration::from_secs_f64(k as f64 / rate);
        if scheduled >= window.until {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let slot = slots.clone().acquire_owned().await?;
        let task = u32::try_from(k % u64::from(tasks.max(1)))?;
        let (client, req) = (client.clone(), writes.request(task, k));
        in_flight.spawn(async move {
            let answer = send(&client, req).await;
            drop(slot);
            (task, scheduled, Instant::now(), answer)
        });
        while let Some(done) = in_flight.try_join_next() {
            let (task, scheduled, at, answer) = done?;
            total.account(task, scheduled, at, answer);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let (task, scheduled, at, answer) = done?;
        total.account(task, scheduled, at, answer);
    }
    Ok(total)
}
