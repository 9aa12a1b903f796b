//! Scenario 1, crash loop: Herald is killed with SIGKILL at a random moment, `cycles` times,
//! and restarted on the same data directory, while writers keep creating Tasks and three
//! subscriptions' receivers switch between answering, failing (503, 500), answering after the
//! timeout, stalling and dropping connections (`receiver::Chaos`). About one restart in ten
//! is itself killed during startup (recovery interrupted). Then the receivers turn healthy,
//! Herald starts one last time, and delivery must catch up: nothing acknowledged lost, first
//! deliveries gap-free and in order, no number reused. Restart-to-ready times are reported.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::drain::drain;
use crate::herald::{panics, Launch};
use crate::receiver::{Behaviour, Chaos, Policy, Receiver};
use crate::report::{spread, Findings, Ran, Verdict};
use crate::scratch::{free_port, Scratch};
use crate::writers::Writers;
use crate::{client, ledger, Result, Settings};

const SUBSCRIPTIONS: usize = 3;
const WRITERS: usize = 4;
/// Each writer's pace: 4 writers, 80 writes/s at most, so that the backlog built under faults
/// drains in a minute or two even against a debug build.
const WRITE_PERIOD: Duration = Duration::from_millis(50);

pub async fn run(s: &Settings, found: &mut Findings) -> Result<Ran> {
    let scratch = Scratch::new("crash")?;
    let client = client::build()?;
    let launch = Launch::new(&s.herald, &scratch.path.join("data"), free_port()?, &scratch.file("herald.log"));
    let base = launch.base();
    let mut rng = StdRng::seed_from_u64(s.seed_for(1));
    let uptime: Range<f64> = if s.quick { 0.5..2.0 } else { 0.5..3.0 };
    let mut receivers = Vec::with_capacity(SUBSCRIPTIONS);
    for _ in 0..SUBSCRIPTIONS {
        receivers.push(Receiver::start().await?);
    }
    let mut subs = Vec::with_capacity(SUBSCRIPTIONS);
    let mut writers = None;
    let (mut restarts, mut early_kills, mut died) = (Vec::new(), 0u32, 0u32);
    for cycle in 1..=s.cycles {
        if cycle > 1 && rng.gen_bool(0.1) {
            let h = launch.spawn()?;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..150))).await;
            h.kill9()?;
            early_kills += 1;
        }
        let (mut h, took) = launch.start(&client).await?;
        if cycle == 1 {
            client::create_topic(&client, &base).await?;
            for r in &receivers {
                subs.push(client::subscribe(&client, &base, &r.url).await?);
            }
            for (i, r) in receivers.iter().enumerate() {
                // Stretches of 400 ms; a late answer comes 1.5 s after the request, past
                // Herald's 1 s timeout (herald::Launch).
                r.set(Policy::Chaos(Box::new(Chaos::new(
                    s.seed_for(10 + i as u64),
                    Duration::from_millis(400),
                    Duration::from_millis(1500),
                ))));
            }
            writers = Some(Writers::start(&client, &base, WRITERS, WRITE_PERIOD));
        } else {
            restarts.push(took);
        }
        tokio::time::sleep(Duration::from_secs_f64(rng.gen_range(uptime.clone()))).await;
        if !h.alive() {
            died += 1;
        }
        h.kill9()?;
    }
    let tally = match writers {
        Some(w) => w.stop().await,
        None => return Err("no cycle ran".into()),
    };
    for r in &receivers {
        r.fixed(Behaviour::Ok);
    }
    let (h, took) = launch.start(&client).await?;
    restarts.push(took);
    let acked: Vec<&str> = tally.acked.iter().map(|a| a.id.as_str()).collect();
    let pairs: Vec<(&str, &Receiver)> = subs.iter().map(String::as_str).zip(receivers.iter()).collect();
    let within = Duration::from_secs(if s.quick { 60 } else { 600 });
    let drained = drain(&client, &base, &pairs, &acked, within).await?;

    let mut answers: BTreeMap<&str, u64> = BTreeMap::new();
    for rx in &receivers {
        for d in rx.deliveries().iter().filter(|d| d.kind == "event-notification") {
            *answers.entry(d.answer).or_insert(0) += 1;
        }
    }
    let mut caught_up = Vec::new();
    let (mut received, mut two_numbers, mut examples) = (0, 0, Vec::new());
    for (sub, rx) in &pairs {
        let (_, since) = client::sub_status(&client, &base, sub).await?;
        let l = ledger::check(acked.iter().copied(), &rx.deliveries());
        caught_up.push(format!("{}/{since}", l.accepted_through));
        received += l.received;
        two_numbers += l.two_numbers;
        examples.extend(l.examples.iter().take(2).cloned());
        found.counters.add(l.counters);
    }
    let stop = h.terminate().await?;

    found.info(
        "load",
        format!(
            "{} cycles, seed {}; {} writes acknowledged, {} unanswered (Herald down), answered otherwise: {}; {SUBSCRIPTIONS} subscriptions",
            s.cycles,
            s.seed,
            acked.len(),
            tally.unanswered,
            tally.refused_text()
        ),
    );
    found.info(
        "what the receivers did with event notifications",
        answers.iter().map(|(a, n)| format!("{n} × {a}")).collect::<Vec<_>>().join(", "),
    );
    found.delivery_rows(acked.len() * SUBSCRIPTIONS, received, two_numbers, &examples);
    found.row(
        "delivery caught up after the last restart",
        "each subscription accepted 1..=eventsSinceSubscriptionStart",
        match drained {
            Some(d) => format!("accepted/events {} in {:.1} s", caught_up.join(", "), d.as_secs_f64()),
            None => format!("accepted/events {} after {} s (gave up)", caught_up.join(", "), within.as_secs()),
        },
        Verdict::of(drained.is_some()),
    );
    found.row("Herald stays up between kills", "0 exits of its own", format!("{died}"), Verdict::of(died == 0));
    found.info("restart to ready", format!("{}; {early_kills} more killed during startup", spread(restarts)));
    let panicked = panics(&launch.log);
    found.row(
        "no panic in Herald's log",
        "none",
        panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(panicked.is_empty()),
    );
    found.row(
        "clean stop after the run (SIGTERM)",
        "exit status 0",
        stop.map_or_else(|| "still running after 20 s; killed".to_string(), |st| st.to_string()),
        Verdict::of(stop.is_some_and(|st| st.success())),
    );
    Ok(Ran::Done)
}
