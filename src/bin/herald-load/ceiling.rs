//! This machine's ceilings, measured in the same run as Herald's figures:
//! - HTTP ingest: a bare axum handler in this process, on an ephemeral loopback port, that reads
//!   the body and answers 201 to any method and path. It is driven by `client::closed_loop` with
//!   the very requests of S1 (or S4) and the same concurrency.
//! - Durability: `herald::store::ceiling::sled_insert_flush`, `concurrency` writer threads, each
//!   inserting a record of the same size as the HTTP body and waiting for one flusher thread's
//!   `Db::flush` (group commit, as Herald does) to cover it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Router;
use herald::store::ceiling::{sled_insert_flush, InsertFlush};

use crate::client::{self, Window};
use crate::proc;
use crate::report::{count, num, Latency, Row};
use crate::workload::TaskWrites;
use crate::{Result, Settings};

/// The two ceilings for one body size.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    pub http: f64,
    pub durable: f64,
}

impl Ceilings {
    /// Fills a Herald row's ratios.
    pub fn apply(&self, row: &mut Row) {
        let of = |v: Option<f64>, c: f64| v.filter(|_| c > 0.0).map(|v| v / c);
        row.writes_vs_http_ceiling = of(row.writes_per_s, self.http);
        row.writes_vs_durable_ceiling = of(row.writes_per_s, self.durable);
        row.notifications_vs_http_ceiling = of(row.notifications_per_s, self.http);
    }
}

async fn bare(body: Bytes) -> StatusCode {
    drop(body);
    StatusCode::CREATED
}

pub async fn http(client: &reqwest::Client, writes: &TaskWrites, s: &Settings) -> Result<Row> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(bare)).await;
    });
    let writes = writes.with_base(&format!("http://{addr}/fhir"));
    let window = Window::starting_now(s.warmup, s.duration);
    let cpu = tokio::spawn(sample_self_cpu(window));
    let outcome = client::closed_loop(client, &writes, s.concurrency, window, None).await;
    server.abort();
    let outcome = outcome?;
    let bytes = writes.typical_bytes();
    Ok(Row {
        scenario: "ceiling-http".into(),
        what: format!("bare axum handler, PUT of {} B, 201, same client, {} in flight", count(bytes), s.concurrency),
        writes_per_s: Some(outcome.writes_per_sec()),
        ack_latency: Latency::of(&outcome.ack, false),
        load_cpu_percent: cpu.await?.ok(),
        errors: outcome.errors,
        first_error: outcome.first_error,
        ..Row::default()
    })
}

/// herald-load's CPU over the window (for the HTTP ceiling that is server and client together).
pub async fn sample_self_cpu(window: Window) -> Result<f64> {
    tokio::time::sleep_until(window.from.into()).await;
    let before = proc::cpu_seconds("self")?;
    tokio::time::sleep_until(window.until.into()).await;
    Ok(proc::percent(before, proc::cpu_seconds("self")?, window.secs()))
}

pub async fn durable(dir: std::path::PathBuf, record_bytes: usize, s: &Settings) -> Result<Row> {
    let spec = InsertFlush { writers: s.concurrency, record_bytes, warmup: s.warmup, duration: s.duration };
    let window = Window::starting_now(s.warmup, s.duration);
    let cpu = tokio::spawn(sample_self_cpu(window));
    let hist = Mutex::new(client::histogram()?);
    let (report, hist) = tokio::task::spawn_blocking(move || {
        let report = sled_insert_flush(&dir, &spec, &|d: Duration| {
            client::record(&mut hist.lock().unwrap_or_else(PoisonError::into_inner), d);
        });
        (report, hist.into_inner().unwrap_or_else(PoisonError::into_inner))
    })
    .await?;
    let report = report?;
    let secs = report.window.as_secs_f64();
    let mut row = Row {
        scenario: "ceiling-durable".into(),
        what: format!("sled insert of {} B + group flush, {} writers, one flusher", count(record_bytes), s.concurrency),
        writes_per_s: Some(report.writes as f64 / secs),
        ack_latency: Latency::of(&hist, false),
        load_cpu_percent: cpu.await?.ok(),
        ..Row::default()
    };
    if report.flushes > 0 {
        row.notes.push(format!(
            "{} writes per flush, {} flushes/s",
            num(report.writes as f64 / report.flushes as f64),
            num(report.flushes as f64 / secs)
        ));
    }
    row.details.insert("flushes".into(), report.flushes.into());
    Ok(row)
}
