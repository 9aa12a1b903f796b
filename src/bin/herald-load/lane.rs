//! The `lane` scenario (issue #23): how fast one subscription's lane delivers on its own, next
//! to the fastest a strictly ordered lane could go on this machine.
//!
//! - fill: one id-only subscription at the default `maxCount` (one event per notification),
//!   its receiver gated: the first event-notification is held unanswered while
//!   `--concurrency` writers write Task updates for `--lane-fill` seconds, so the lane has
//!   every other event of the fill pending and nothing else runs but the lane.
//! - drain: the gate opens; the lane's rate is the events that arrive after the opening over
//!   the time from the opening to the last arrival. Herald's and herald-load's CPU (the
//!   receiver's share) are sampled over the same time.
//! - `ceiling-delivery`: Herald stopped, a serial keep-alive loop (one request in flight, the
//!   next sent when the previous is answered: what strict order allows) POSTs a copy of the
//!   first notification Herald sent to a fresh receiver of the same code, for the warm-up and
//!   `--duration`: requests per second. The lane's ratio to it is the row's figure.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::json;

use crate::client::{self, Window};
use crate::herald::{Herald, Scratch};
use crate::receiver::Receiver;
use crate::report::{num, Row};
use crate::scenarios::OWNER;
use crate::setup::{self, Filter, Plan};
use crate::workload::{Owners, TaskWrites};
use crate::{proc, Result, Settings};

/// The lane's own timeout: the held first notification must outlast the fill.
const HELD_TIMEOUT_SECS: u64 = 120;

pub async fn run(client: &reqwest::Client, s: &Settings, scratch: &Scratch) -> Result<(Row, Row)> {
    eprintln!("== lane: one subscription's lane draining {} s of writes alone", num(s.lane_fill.as_secs_f64()));
    let dir = scratch.dir("lane")?;
    let (receiver, gate) = Receiver::start_gated().await?;
    let herald = Herald::start(&s.herald, s.herald_config.as_deref(), &dir, client).await?;
    let drained = drain(client, s, &herald, &receiver, &gate).await;
    let drained = match drained {
        Ok(d) => d,
        Err(e) => {
            let tail = herald.log_tail();
            let _ = herald.stop().await;
            scratch.remove(&dir);
            return Err(format!("lane: {e}\nHerald's log ends:\n{tail}").into());
        }
    };
    let _ = gate.send(true);
    let peak = herald.peak_rss_mib().ok();
    let stopped = herald.stop().await;
    scratch.remove(&dir);
    let (mut lane, body) = drained;
    lane.herald_peak_rss_mib = peak;
    if !stopped.unwrap_or(false) {
        lane.notes.push("Herald did not stop cleanly on SIGTERM".into());
    }
    eprintln!("== ceiling: delivery, serial keep-alive POST of a {} B notification", body.len());
    let ceiling = ceiling(s, body).await?;
    if let (Some(got), Some(max)) = (lane.notifications_per_s, ceiling.notifications_per_s.filter(|c| *c > 0.0)) {
        lane.notes.insert(0, format!("{:.1} % of the delivery ceiling ({} of {} notifications/s)", got / max * 100.0, num(got), num(max)));
        lane.details.insert("vs_delivery_ceiling".into(), (got / max).into());
    }
    Ok((ceiling, lane))
}

/// Fill with the receiver gated, open it, and time the drain. Returns the row and the body of
/// the first notification.
async fn drain(
    client: &reqwest::Client,
    s: &Settings,
    herald: &Herald,
    receiver: &Receiver,
    gate: &tokio::sync::watch::Sender<bool>,
) -> Result<(Row, Bytes)> {
    let base = herald.base.clone();
    let receipts = receiver.receipts.clone();
    setup::create_topic(client, &base).await?;
    let plan = Plan { count: 1, content: "id-only", filter: Filter::Owner(OWNER), max_count: None };
    let mut sub = setup::subscription(&plan, &receiver.url, 0);
    if let Some(obj) = sub.as_object_mut() {
        obj.insert("timeout".into(), json!(HELD_TIMEOUT_SECS));
    }
    let created = setup::post(client, &format!("{base}/Subscription"), &sub).await?;
    let id = created.get("id").and_then(serde_json::Value::as_str).ok_or("the created Subscription has no id")?.to_string();
    setup::wait_active(client, &base, std::slice::from_ref(&id), 1, Duration::from_secs(60)).await?;

    let writes = TaskWrites::new(&base, Owners::One(OWNER), 0);
    let fill = client::closed_loop(client, &writes, s.concurrency, Window::starting_now(Duration::ZERO, s.lane_fill), None).await?;
    let expected = fill.acked_total;
    if expected < 2 {
        return Err("the fill acknowledged fewer than two writes".into());
    }
    // Every write is acknowledged, so every event is committed; the lane has sent the first
    // one and waits for its answer. Wait for that first arrival, then open.
    let held_by = Instant::now() + Duration::from_secs(30);
    while receipts.events() == 0 {
        if Instant::now() > held_by {
            return Err("no notification reached the receiver during the fill".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = receipts.events();
    let (h0, l0) = (proc::cpu_seconds(herald.pid())?, proc::cpu_seconds("self")?);
    let opened = Instant::now();
    gate.send(true).map_err(|_| "the receiver is gone")?;
    let deadline = opened + s.drain;
    while receipts.events() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (h1, l1) = (proc::cpu_seconds(herald.pid())?, proc::cpu_seconds("self")?);
    let got = receipts.events();
    let last = receipts.last_at().filter(|t| *t > opened).ok_or("nothing arrived after the gate opened")?;
    let secs = last.duration_since(opened).as_secs_f64().max(1e-6);
    let cpu_secs = Instant::now().duration_since(opened).as_secs_f64();
    let delivered = got.saturating_sub(before);
    let mut row = Row {
        scenario: "lane".into(),
        what: format!(
            "one id-only subscription, default maxCount, draining {} pending events alone (receiver held during the fill)",
            expected - before
        ),
        notifications_per_s: Some(delivered as f64 / secs),
        herald_cpu_percent: Some(proc::percent(h0, h1, cpu_secs)),
        load_cpu_percent: Some(proc::percent(l0, l1, cpu_secs)),
        undelivered: Some(expected.saturating_sub(got)),
        out_of_order: Some(receipts.out_of_order()),
        notifications_total: Some(got),
        ..Row::default()
    };
    row.notes.push(format!("{delivered} events in {secs:.2} s after the gate opened; herald-load (receiver) CPU is the receiver's share"));
    row.details.insert("fill_writes".into(), expected.into());
    row.details.insert("drain_s".into(), secs.into());
    row.details.insert("notification_bundles".into(), receipts.bundles().into());
    let body = receipts.sample().ok_or("no notification body was kept")?;
    Ok((row, body))
}

/// The delivery ceiling: one request in flight, `body` POSTed over and over to a fresh receiver.
async fn ceiling(s: &Settings, body: Bytes) -> Result<Row> {
    let receiver = Receiver::start().await?;
    let client = client::build(1)?;
    let window = Window::starting_now(s.warmup, s.duration);
    let mut counted = 0u64;
    let mut from_cpu = None;
    let mut hist = client::histogram()?;
    loop {
        let at = Instant::now();
        if at >= window.until {
            break;
        }
        if from_cpu.is_none() && at >= window.from {
            from_cpu = Some(proc::cpu_seconds("self")?);
        }
        let resp = client.post(&receiver.url).header("content-type", "application/fhir+json").body(body.clone()).send().await?;
        let status = resp.status();
        resp.bytes().await?;
        if !status.is_success() {
            return Err(format!("the delivery ceiling's receiver answered {status}").into());
        }
        if window.contains(at) {
            counted += 1;
            client::record(&mut hist, at.elapsed());
        }
    }
    let l1 = proc::cpu_seconds("self")?;
    Ok(Row {
        scenario: "ceiling-delivery".into(),
        what: format!("serial keep-alive POST of a {} B notification (Herald's first), one in flight", body.len()),
        notifications_per_s: Some(counted as f64 / window.secs()),
        ack_latency: crate::report::Latency::of(&hist, false),
        load_cpu_percent: from_cpu.map(|c| proc::percent(c, l1, window.secs())),
        ..Row::default()
    })
}
