//! The run: ceilings first, then each selected scenario on its own Herald process (fresh data
//! directory, so CPU and peak RSS are the scenario's own) with its own receiver.
//!
//! A delivery scenario creates its topic and subscriptions, waits until they are active, writes
//! for warm-up + window, then waits (up to `--drain`) for the notifications of every
//! acknowledged write, and joins each window write with its notifications by (Task, version):
//! latency = arrival - send. A notification still missing at the end of the drain is counted
//! at the drain's end, which makes the percentiles lower bounds (shown with ≥).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ceiling::{self, Ceilings};
use crate::client::{self, Gate, Outcome, Sent, Window};
use crate::herald::{Herald, Scratch};
use crate::receiver::{Receipt, Receiver};
use crate::report::{count, num, Latency, Report, Row};
use crate::setup::{self, Filter, Plan};
use crate::workload::{Owners, TaskWrites};
use crate::{cluster, lane, matching, proc, Result, Scenario, Settings};

/// The owner of every Task written, except in S2.
pub const OWNER: &str = "load";

/// S3: events whose fan-out may be outstanding before the writer waits.
const FANOUT_AHEAD: u64 = 2;

pub enum Drive {
    Closed { concurrency: usize, gate_ahead: Option<u64> },
    Open { rate: f64 },
}

pub struct Spec<'a> {
    pub id: &'static str,
    pub what: String,
    pub plan: Plan<'a>,
    pub owners: Owners,
    pub body_bytes: usize,
    pub drive: Drive,
    /// Notifications each write should cause.
    pub per_write: u64,
    /// S2: report Herald's RSS growth per 1,000 subscriptions.
    pub rss_per_1k: bool,
}

/// The Herald processes a scenario drives: one on sled, or a cluster's nodes, whose NATS
/// servers' CPU is sampled apart. Setup goes through the first node; writes are spread over
/// all of them.
pub struct Target<'a> {
    pub nodes: &'a [Herald],
    pub nats_pids: Vec<String>,
}

pub async fn run_all(s: &Settings, report: &mut Report) -> Result<()> {
    let scratch = Scratch::new()?;
    let client = client::build(s.concurrency)?;
    let small = TaskWrites::new("http://127.0.0.1/fhir", Owners::One(OWNER), 0);
    let small_ceilings = ceilings(&client, &small, s, &scratch, report).await?;
    let large_ceilings = if s.runs(Scenario::S4) {
        Some(ceilings(&client, &TaskWrites::new("http://127.0.0.1/fhir", Owners::One(OWNER), s.large_bytes), s, &scratch, report).await?)
    } else {
        None
    };
    let one = |content| Plan { count: 1, content, filter: Filter::Owner(OWNER), max_count: s.max_count };

    let mut s1_rate = None;
    let for_s6 = s.runs(Scenario::S6) && s.open_rate.is_none();
    if s.runs(Scenario::S1) || for_s6 || s.runs(Scenario::Cluster) {
        let mut row = delivery(&client, s, &scratch, s1(s)).await?;
        small_ceilings.apply(&mut row);
        if !s.runs(Scenario::S1) {
            row.notes.push(if for_s6 { "run for S6's rate" } else { "run as the cluster rows' reference" }.into());
        }
        s1_rate = row.writes_per_s;
        let sled = row.clone();
        report.push(row);
        if s.runs(Scenario::Cluster) {
            cluster::run(&client, s, &scratch, &sled, &small_ceilings, report).await?;
        }
    }
    if s.runs(Scenario::Lane) {
        let (ceiling, lane) = lane::run(&client, s, &scratch).await?;
        report.push(ceiling);
        report.push(lane);
    }
    if s.runs(Scenario::S2) {
        let n = s.subscriptions;
        let spec = Spec {
            id: "S2",
            what: format!("{} subscriptions, each on its own owner; each event matches one; id-only", count(n)),
            plan: Plan { count: n, content: "id-only", filter: Filter::OwnOwner, max_count: s.max_count },
            owners: Owners::Spread(n),
            body_bytes: 0,
            drive: Drive::Closed { concurrency: s.concurrency, gate_ahead: None },
            per_write: 1,
            rss_per_1k: true,
        };
        let mut row = delivery(&client, s, &scratch, spec).await?;
        small_ceilings.apply(&mut row);
        report.push(row);
    }
    if s.runs(Scenario::S3) {
        let n = s.fanout;
        let spec = Spec {
            id: "S3",
            what: format!(
                "fan-out: each event matches {} subscriptions ({}); 1 writer, at most {FANOUT_AHEAD} events' fan-out outstanding",
                count(n),
                s.fanout_content
            ),
            plan: Plan { count: n, content: &s.fanout_content, filter: Filter::Owner(OWNER), max_count: s.max_count },
            owners: Owners::One(OWNER),
            body_bytes: 0,
            drive: Drive::Closed { concurrency: 1, gate_ahead: Some(FANOUT_AHEAD) },
            per_write: u64::try_from(n)?,
            rss_per_1k: false,
        };
        let mut row = delivery(&client, s, &scratch, spec).await?;
        small_ceilings.apply(&mut row);
        report.push(row);
    }
    if let (true, Some(large)) = (s.runs(Scenario::S4), large_ceilings) {
        let spec = Spec {
            id: "S4",
            what: format!("Task updates of {} B, {} in flight, 1 subscription, full-resource", count(s.large_bytes), s.concurrency),
            plan: one("full-resource"),
            owners: Owners::One(OWNER),
            body_bytes: s.large_bytes,
            drive: Drive::Closed { concurrency: s.concurrency, gate_ahead: None },
            per_write: 1,
            rss_per_1k: false,
        };
        let mut row = delivery(&client, s, &scratch, spec).await?;
        large.apply(&mut row);
        report.push(row);
    }
    if s.runs(Scenario::S5) {
        eprintln!("== S5: matching alone at {:?} subscriptions", s.matching_sizes);
        let (sizes, quick) = (s.matching_sizes.clone(), s.quick);
        for row in tokio::task::spawn_blocking(move || matching::run(&sizes, quick)).await?? {
            report.push(row);
        }
    }
    if s.runs(Scenario::S6) {
        let rate = s.open_rate.or(s1_rate.map(|r| r / 2.0)).filter(|r| *r > 0.0).ok_or("S6 needs a rate: S1 acknowledged nothing")?;
        let spec = Spec {
            id: "S6",
            what: format!("open loop at {} writes/s (half of S1 unless --open-rate), 1 subscription, id-only", num(rate)),
            plan: one("id-only"),
            owners: Owners::One(OWNER),
            body_bytes: 0,
            drive: Drive::Open { rate },
            per_write: 1,
            rss_per_1k: false,
        };
        let mut row = delivery(&client, s, &scratch, spec).await?;
        small_ceilings.apply(&mut row);
        row.notes.push("latency from the scheduled send time (coordinated omission corrected)".into());
        report.push(row);
    }
    if s.runs(Scenario::Scale) {
        crate::scale::run(&client, s, &scratch, report).await?;
    }
    if s.runs(Scenario::Storage) {
        crate::storage::run(&client, s, &scratch, report).await?;
    }
    Ok(())
}

/// S1: Task updates, `--concurrency` in flight, one id-only subscription matching every write.
pub fn s1(s: &Settings) -> Spec<'static> {
    Spec {
        id: "S1",
        what: format!("Task updates, {} in flight, 1 subscription (every event), id-only", s.concurrency),
        plan: Plan { count: 1, content: "id-only", filter: Filter::Owner(OWNER), max_count: s.max_count },
        owners: Owners::One(OWNER),
        body_bytes: 0,
        drive: Drive::Closed { concurrency: s.concurrency, gate_ahead: None },
        per_write: 1,
        rss_per_1k: false,
    }
}

/// Both ceilings for the body size of `writes`.
async fn ceilings(client: &reqwest::Client, writes: &TaskWrites, s: &Settings, scratch: &Scratch, report: &mut Report) -> Result<Ceilings> {
    let bytes = writes.typical_bytes();
    eprintln!("== ceiling: HTTP, bare axum handler, {bytes} B bodies");
    let http = ceiling::http(client, writes, s).await?;
    eprintln!("== ceiling: durable, sled insert + group flush, {bytes} B records");
    let dir = scratch.dir(&format!("sled-{bytes}"))?;
    let durable = ceiling::durable(dir.clone(), bytes, s).await;
    scratch.remove(&dir);
    let durable = durable?;
    let c = Ceilings { http: http.writes_per_s.unwrap_or(0.0), durable: durable.writes_per_s.unwrap_or(0.0) };
    report.push(http);
    report.push(durable);
    Ok(c)
}

/// CPU over the window, in percent of one core: Herald's (every node's, summed),
/// herald-load's own, and the NATS servers' (summed).
struct Cpu {
    herald: f64,
    load: f64,
    nats: f64,
}

async fn sample_cpu(herald: Vec<String>, nats: Vec<String>, window: Window) -> Result<Cpu> {
    let total = |pids: &[String]| pids.iter().map(|p| proc::cpu_seconds(p)).sum::<Result<f64>>();
    tokio::time::sleep_until(window.from.into()).await;
    let (h0, s0, n0) = (total(&herald)?, proc::cpu_seconds("self")?, total(&nats)?);
    tokio::time::sleep_until(window.until.into()).await;
    let (h1, s1, n1) = (total(&herald)?, proc::cpu_seconds("self")?, total(&nats)?);
    let secs = window.secs();
    Ok(Cpu { herald: proc::percent(h0, h1, secs), load: proc::percent(s0, s1, secs), nats: proc::percent(n0, n1, secs) })
}

pub async fn delivery(client: &reqwest::Client, s: &Settings, scratch: &Scratch, spec: Spec<'_>) -> Result<Row> {
    eprintln!("== {}: {}", spec.id, spec.what);
    let dir = scratch.dir(&spec.id.to_lowercase())?;
    let receiver = Receiver::start().await?;
    let receipts = receiver.receipts.clone();
    let herald = Herald::start(&s.herald, s.herald_config.as_deref(), &dir, client).await?;
    let target = Target { nodes: std::slice::from_ref(&herald), nats_pids: Vec::new() };
    let result = drive(client, s, &spec, &target, &receiver).await;
    let result: Result<Row> = match result {
        Ok(row) => Ok(row),
        Err(e) => Err(format!("{}: {e}\nHerald's log ends:\n{}", spec.id, herald.log_tail()).into()),
    };
    let stopped = herald.stop().await;
    scratch.remove(&dir);
    let mut row = result?;
    if !stopped.unwrap_or(false) {
        row.notes.push("Herald did not stop cleanly on SIGTERM".into());
    }
    if receipts.unkeyed() > 0 {
        row.notes.push(format!("{} notifications could not be joined to a write", receipts.unkeyed()));
    }
    Ok(row)
}

pub async fn drive(client: &reqwest::Client, s: &Settings, spec: &Spec<'_>, target: &Target<'_>, receiver: &Receiver) -> Result<Row> {
    let herald = target.nodes.first().ok_or("no Herald to drive")?;
    let base = herald.base.clone();
    let receipts = receiver.receipts.clone();
    setup::create_topic(client, &base).await?;
    let rss_before = herald.rss_mib()?;
    let started = Instant::now();
    let ids = setup::subscribe(client, &base, &receiver.url, spec.plan, s.concurrency).await?;
    let posted = started.elapsed();
    setup::wait_active(client, &base, &ids, s.concurrency, Duration::from_secs(600)).await?;
    let active = started.elapsed();
    let rss_after = herald.rss_mib()?;

    let mut writes = TaskWrites::new(&base, spec.owners, spec.body_bytes);
    if target.nodes.len() > 1 {
        writes = writes.spread_over(&target.nodes.iter().map(|h| h.base.clone()).collect::<Vec<_>>());
    }
    let window = Window::starting_now(s.warmup, s.duration);
    let pids = target.nodes.iter().map(|h| h.pid().to_string()).collect();
    let cpu = tokio::spawn(sample_cpu(pids, target.nats_pids.clone(), window));
    let outcome = match spec.drive {
        Drive::Closed { concurrency, gate_ahead } => {
            let gate = gate_ahead.map(|ahead| Gate { receipts: receipts.clone(), per_write: spec.per_write, ahead });
            client::closed_loop(client, &writes, concurrency, window, gate).await?
        }
        Drive::Open { rate } => client::open_loop(client, &writes, rate, u32::try_from(s.concurrency)?, window).await?,
    };
    let cpu = cpu.await??;

    let expected = outcome.acked_total.saturating_mul(spec.per_write);
    let drain_deadline = Instant::now() + s.drain;
    while receipts.events() < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = Instant::now();
    let (receipt, undelivered) = join(&outcome.sent, &receipts.log(), spec.per_write, drained)?;
    let notifications = receipts.events_between(window.from, window.until);

    let mut row = row_of(spec, &outcome, &receipt, undelivered, notifications);
    row.herald_cpu_percent = Some(cpu.herald);
    row.load_cpu_percent = Some(cpu.load);
    row.herald_peak_rss_mib = target.nodes.iter().map(Herald::peak_rss_mib).sum::<Result<f64>>().ok();
    if !target.nats_pids.is_empty() {
        row.details.insert("nats_cpu_percent".into(), cpu.nats.into());
    }
    row.out_of_order = Some(receipts.out_of_order());
    row.notifications_total = Some(receipts.events());
    row.details.insert("notification_bundles".into(), receipts.bundles().into());
    row.details.insert("handshakes".into(), receipts.handshakes().into());
    row.details.insert("drain_s".into(), drained.duration_since(window.until).as_secs_f64().into());
    if spec.plan.count > 1 {
        row.notes.push(format!(
            "{} subscriptions created and active in {:.1} s (POSTs all answered after {:.1} s)",
            count(spec.plan.count),
            active.as_secs_f64(),
            posted.as_secs_f64()
        ));
        row.details.insert("subscriptions".into(), spec.plan.count.into());
        row.details.insert("subscriptions_posted_s".into(), posted.as_secs_f64().into());
        row.details.insert("subscriptions_active_s".into(), active.as_secs_f64().into());
    }
    if spec.rss_per_1k {
        let per_1k = (rss_after - rss_before) / (spec.plan.count as f64 / 1000.0);
        row.notes.push(format!("Herald RSS {rss_before:.1} → {rss_after:.1} MiB with the subscriptions: {per_1k:.2} MiB per 1,000"));
        row.details.insert("rss_before_subscriptions_mib".into(), rss_before.into());
        row.details.insert("rss_after_subscriptions_mib".into(), rss_after.into());
        row.details.insert("rss_per_1k_subscriptions_mib".into(), per_1k.into());
    }
    Ok(row)
}

fn row_of(spec: &Spec<'_>, outcome: &Outcome, receipt: &Histogram<u64>, undelivered: u64, notifications: u64) -> Row {
    Row {
        scenario: spec.id.into(),
        what: spec.what.clone(),
        writes_per_s: Some(outcome.writes_per_sec()),
        notifications_per_s: Some(notifications as f64 / outcome.window.secs()),
        receipt_latency: Latency::of(receipt, undelivered > 0),
        ack_latency: Latency::of(&outcome.ack, false),
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        undelivered: Some(undelivered),
        ..Row::default()
    }
}

/// Joins the window's writes with their notifications: each write expects `per_write`; one
/// that never came is counted as arriving at `drain_end`. Returns the latencies and the number
/// of notifications that never came.
fn join(sent: &[Sent], receipts: &[Receipt], per_write: u64, drain_end: Instant) -> Result<(Histogram<u64>, u64)> {
    let mut h = client::histogram()?;
    let mut writes: HashMap<u64, (Instant, u64)> = sent.iter().map(|s| (s.key, (s.at, 0))).collect();
    for r in receipts {
        if let Some((at, got)) = writes.get_mut(&r.key) {
            // Repeats (a retried delivery) count once.
            if *got < per_write {
                *got += 1;
                client::record(&mut h, r.at.saturating_duration_since(*at));
            }
        }
    }
    let mut undelivered = 0;
    for (at, got) in writes.values() {
        let missing = per_write.saturating_sub(*got);
        if missing > 0 {
            let us = u64::try_from(drain_end.saturating_duration_since(*at).as_micros()).unwrap_or(u64::MAX).max(1);
            h.saturating_record_n(us, missing);
            undelivered += missing;
        }
    }
    Ok((h, undelivered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_counts_each_expected_notification_once_and_the_missing_at_the_deadline() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let sent = [Sent { key: 1, at: t0 }, Sent { key: 2, at: t0 }];
        let receipts = [
            Receipt { key: 1, at: ms(2) },
            Receipt { key: 1, at: ms(3) },
            Receipt { key: 1, at: ms(500) },
            Receipt { key: 9, at: ms(1) },
            Receipt { key: 2, at: ms(4) },
        ];
        let (h, missing) = join(&sent, &receipts, 2, ms(1000)).unwrap();
        assert_eq!(missing, 1, "write 2 got one of two");
        assert_eq!(h.len(), 4);
        assert!(h.max() >= 999_000, "the missing one counts at the deadline");
    }
}
