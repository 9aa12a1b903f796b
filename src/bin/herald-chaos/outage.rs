//! Scenario 3, long outage. First phase: one subscription's receiver goes away for `--outage`
//! (its first half: connection refused; its second half: 503) while writes continue at a
//! steady rate and Herald retries every 50 to 200 ms; Herald's RSS is sampled against the
//! backlog (events not yet accepted). Then the receiver comes back and everything must arrive,
//! in order. Second phase, on a fresh Herald (the limits are server-wide settings, so they get
//! their own process): `max_attempts` 4 and `max_age` 2 s must dead-letter a subscription whose
//! receiver answers 503 after exactly 4 attempts, and one whose receiver stalls by age, and
//! both must go to `error` with their events still served by `$events`.

use std::time::{Duration, Instant};

use crate::drain::drain;
use crate::herald::{panics, Launch};
use crate::receiver::{Behaviour, Receiver};
use crate::report::{Findings, Ran, Verdict};
use crate::scratch::{free_port, Scratch};
use crate::writers::Writers;
use crate::{client, ledger, Result, Settings};

pub async fn run(s: &Settings, found: &mut Findings) -> Result<Ran> {
    let scratch = Scratch::new("outage")?;
    outage(s, found, &scratch).await?;
    dead_letters(s, found, &scratch).await?;
    Ok(Ran::Done)
}

/// One RSS sample.
struct Sample {
    rss_mib: f64,
    backlog: u64,
}

async fn outage(s: &Settings, found: &mut Findings, scratch: &Scratch) -> Result<()> {
    let client = client::build()?;
    let launch = Launch::new(&s.herald, &scratch.dir("outage")?, free_port()?, &scratch.file("outage.log"));
    let base = launch.base();
    let (h, _) = launch.start(&client).await?;
    let mut rx = Receiver::start().await?;
    client::create_topic(&client, &base).await?;
    let sub = client::subscribe(&client, &base, &rx.url).await?;
    let rate: u32 = if s.quick { 50 } else { 100 };
    // Two writers, so that one slow acknowledgement does not lower the rate.
    let writers = Writers::start(&client, &base, 2, Duration::from_secs(2) / rate);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = h.rss_mib().unwrap_or(0.0);
    rx.down();
    let started = Instant::now();
    let (mut samples, mut refused_phase) = (Vec::new(), true);
    let mut attempts_503 = rx.count();
    while started.elapsed() < s.outage {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if refused_phase && started.elapsed() >= s.outage / 2 {
            rx.fixed(Behaviour::Status(503));
            rx.up().await?;
            refused_phase = false;
            attempts_503 = rx.count();
        }
        let (_, since) = client::sub_status(&client, &base, &sub).await?;
        let through = ledger::check([], &rx.deliveries()).accepted_through;
        samples.push(Sample { rss_mib: h.rss_mib().unwrap_or(0.0), backlog: since.saturating_sub(through) });
    }
    let attempts_503 = rx.count().saturating_sub(attempts_503);
    rx.fixed(Behaviour::Ok);
    let tally = writers.stop().await;
    let acked: Vec<&str> = tally.acked.iter().map(|a| a.id.as_str()).collect();
    let within = Duration::from_secs(if s.quick { 60 } else { 600 });
    let drained = drain(&client, &base, &[(sub.as_str(), &rx)], &acked, within).await?;
    let after = h.rss_mib().unwrap_or(0.0);
    let l = ledger::check(acked.iter().copied(), &rx.deliveries());
    found.counters.add(l.counters);
    h.terminate().await?;

    let peak = samples.iter().map(|x| x.rss_mib).fold(before, f64::max);
    let backlog = samples.iter().map(|x| x.backlog).max().unwrap_or(0);
    let per_event = if backlog > 0 { (peak - before) * 1024.0 / backlog as f64 } else { 0.0 };
    let half = s.outage.as_secs_f64() / 2.0;
    found.info(
        "outage",
        format!(
            "{rate} writes/s; receiver refused connections {half:.0} s, then answered 503 {half:.0} s ({attempts_503} attempts, \
             retries every 50-200 ms); {} writes acknowledged",
            acked.len()
        ),
    );
    found.info(
        "Herald RSS against backlog",
        format!(
            "{before:.1} MiB before; peak {peak:.1} MiB at a backlog of up to {backlog} events (≈{per_event:.2} KiB per pending event); \
             {after:.1} MiB after the drain; samples (backlog: MiB) {}",
            trace(&samples)
        ),
    );
    let n = |v: Option<u64>| v.unwrap_or(0);
    found.row(
        "everything arrives after the outage",
        "0 lost, 0 out of order, 0 reused",
        format!(
            "{} lost, {} out of order, {} reused, {} duplicates; {}",
            l.lost(),
            n(l.counters.out_of_order),
            n(l.counters.reused),
            n(l.counters.duplicates),
            drained.map_or_else(
                || format!("not caught up after {} s", within.as_secs()),
                |d| format!("caught up in {:.1} s", d.as_secs_f64())
            )
        ),
        Verdict::of(drained.is_some() && l.lost() == 0 && n(l.counters.out_of_order) == 0 && n(l.counters.reused) == 0),
    );
    let panicked = panics(&launch.log);
    found.row(
        "no panic in Herald's log",
        "none",
        panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(panicked.is_empty()),
    );
    Ok(())
}

/// Up to ten evenly spaced samples, "backlog: MiB".
fn trace(samples: &[Sample]) -> String {
    let step = (samples.len() / 10).max(1);
    samples.iter().step_by(step).map(|x| format!("{}: {:.0}", x.backlog, x.rss_mib)).collect::<Vec<_>>().join(", ")
}

const MAX_ATTEMPTS: usize = 4;
const MAX_AGE: Duration = Duration::from_secs(2);

/// A subscription meant to be dead-lettered: by attempt count (its receiver answers 503) or by
/// age (its receiver stalls past the timeout, so few attempts fit in `MAX_AGE`).
struct DeadCase {
    by_count: bool,
    sub: String,
    rx: Receiver,
    /// When `$status` was first seen as `error`.
    errored: Option<Instant>,
}

async fn dead_letters(s: &Settings, found: &mut Findings, scratch: &Scratch) -> Result<()> {
    let client = client::build()?;
    let launch = Launch::new(&s.herald, &scratch.dir("dead")?, free_port()?, &scratch.file("dead.log"))
        .env("HERALD_DELIVERY__MAX_ATTEMPTS", &MAX_ATTEMPTS.to_string())
        .env("HERALD_DELIVERY__MAX_AGE", &format!("{}s", MAX_AGE.as_secs()));
    let base = launch.base();
    let (h, _) = launch.start(&client).await?;
    client::create_topic(&client, &base).await?;
    let mut cases = Vec::new();
    for (by_count, behaviour) in [(true, Behaviour::Status(503)), (false, Behaviour::Stall)] {
        let rx = Receiver::start().await?;
        let sub = client::subscribe(&client, &base, &rx.url).await?;
        rx.fixed(behaviour);
        cases.push(DeadCase { by_count, sub, rx, errored: None });
    }
    for _ in 0..3 {
        let (a, id) = client::create_task(&client, &base, 0).await?;
        if id.is_none() {
            return Err(format!("writing a Task: {}", a.describe()).into());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while cases.iter().any(|c| c.errored.is_none()) && Instant::now() < deadline {
        for c in cases.iter_mut().filter(|c| c.errored.is_none()) {
            if client::sub_status(&client, &base, &c.sub).await?.0 == "error" {
                c.errored = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &cases {
        let log = c.rx.deliveries();
        let events: Vec<u64> =
            log.iter().filter(|d| d.kind == "event-notification").flat_map(|d| d.events.iter().map(|e| e.number)).collect();
        let attempts = events.iter().filter(|n| **n == 1).count();
        let others = events.len() - attempts;
        let first = log.iter().find(|d| d.kind == "event-notification").map(|d| d.at);
        let took = first.zip(c.errored).map(|(f, e)| e.saturating_duration_since(f));
        let age = match (took, c.errored) {
            (Some(d), _) => format!("error {:.1} s after the first attempt", d.as_secs_f64()),
            (None, Some(_)) => "error with no attempt received".to_string(),
            (None, None) => "never went to error within 30 s".to_string(),
        };
        let kept = client::stored_events(&client, &base, &c.sub, 1).await?;
        let (status, _) = client::sub_status(&client, &base, &c.sub).await?;
        let (what, expected, limits_ok) = if c.by_count {
            (
                "dead letter by max_attempts (4), receiver answering 503",
                format!("error after exactly {MAX_ATTEMPTS} attempts of event 1; events 1-3 kept for $events"),
                attempts == MAX_ATTEMPTS,
            )
        } else {
            (
                "dead letter by max_age (2 s), receiver stalling past the 1 s timeout",
                format!("error once event 1 failed for 2 s (fewer than {MAX_ATTEMPTS} attempts); events 1-3 kept for $events"),
                (1..MAX_ATTEMPTS).contains(&attempts) && took.is_some_and(|d| d >= MAX_AGE),
            )
        };
        found.row(
            what,
            expected,
            format!("$status {status}; {attempts} attempts of event 1, {others} of later events; {age}; $events: {kept:?}"),
            Verdict::of(status == "error" && limits_ok && others == 0 && kept == [1, 2, 3]),
        );
    }
    h.terminate().await?;
    let panicked = panics(&launch.log);
    found.row(
        "no panic in Herald's log (dead letters)",
        "none",
        panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(panicked.is_empty()),
    );
    Ok(())
}
