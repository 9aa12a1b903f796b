//! Scenario 6, the crash loop against a cluster (issue #22): one `nats-server` (JetStream, its
//! store in the scratch directory, loopback ports) and three Herald nodes on it (`--nats URL
//! --node-id n0..n2`, each its own data directory, `HERALD_CLUSTER__REPLICAS=1`, a 2 s writer
//! lease), with `crash_loop`'s writers (spread over the three nodes' bases: followers forward
//! to the writer) and its three chaotic receivers.
//!
//! Each cycle lets the three run a random while, SIGKILLs one node (the writer, found in the
//! lease bucket, in every odd cycle; any node in the even ones), leaves it down a random while
//! and starts it again on the same data directory; about one restart in ten is itself killed
//! during startup. After a writer's death the cluster has no writer until its lease expired and
//! another node took it: how long, from the kill to the first write acknowledged again (sent
//! after the kill, on any node), is reported per writer kill, with restart-to-ready times.
//!
//! Then the receivers turn healthy, the three nodes run, and the crash loop's checks must hold:
//! nothing acknowledged lost, first deliveries gap-free and in order, no number reused,
//! delivery caught up (on the writer's `$status`, and every node's copy agrees), no panic in
//! any node's log, every node stops cleanly on SIGTERM.
//!
//! With `HERALD_CHAOS_LOGS=DIR` set, the nodes' and the NATS server's logs are copied there at
//! the end (the scratch directory is removed).
//!
//! Without `nats-server` on PATH the scenario is skipped, except under `CI=true`, where that is
//! an error (the rule of `tests/it/support/nats.rs`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::drain::drain;
use crate::herald::{errors, panics, Herald, Launch};
use crate::receiver::{Behaviour, Chaos, Policy, Receiver};
use crate::report::{spread, Findings, Ran, Verdict};
use crate::scratch::{free_port, Scratch};
use crate::writers::Writers;
use crate::{client, ledger, Result, Settings};

const NODES: usize = 3;
const SUBSCRIPTIONS: usize = 3;
/// One writer per node to start with; each rotates over the three bases.
const WRITERS: usize = 3;
const WRITE_PERIOD: Duration = Duration::from_millis(50);
/// The writer lease's TTL (`cluster.lease_ttl`): a failover takes about this plus a third.
const LEASE_TTL: &str = "2s";
/// How long after a writer kill the cluster may take to acknowledge a write again before that
/// is a finding (and the loop goes on regardless).
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);
const NATS: &str = "nats-server";

/// The `nats-server` of the scenario, killed (SIGKILL) and reaped when dropped, whatever
/// happened.
struct Nats {
    child: Child,
    url: String,
}

impl Nats {
    /// Starts one JetStream server with its store under `dir`, and waits until its monitoring
    /// endpoint answers `/healthz` with 200 (JetStream enabled).
    async fn start(client: &reqwest::Client, dir: &Path, log: &Path) -> Result<Nats> {
        let (port, monitor) = (free_port()?, free_port()?);
        let child = Command::new(NATS)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string(), "-n", "chaos", "-js", "-sd"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map_err(|e| format!("cannot start {NATS}: {e}"))?;
        let mut nats = Nats { child, url: format!("nats://127.0.0.1:{port}") };
        let healthz = format!("http://127.0.0.1:{monitor}/healthz");
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(&healthz).timeout(Duration::from_secs(2)).send().await {
                if r.status().is_success() {
                    return Ok(nats);
                }
            }
            if let Some(status) = nats.child.try_wait()? {
                return Err(format!("{NATS} exited with {status}: {}", crate::herald::tail(log, 10)).into());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{NATS} not ready within 30 s: {}", crate::herald::tail(log, 10)).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `nats-server` runs here; without it the scenario is skipped, or under `CI=true`
/// fails.
fn nats_available() -> Result<bool> {
    let found = Command::new(NATS).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !found && std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(format!("{NATS} is not on PATH and CI=true: CI must install it (.ci/run)").into());
    }
    Ok(found)
}

/// One node: how to start it, and its process while it runs.
struct Member {
    id: String,
    base: String,
    launch: Launch,
    process: Option<Herald>,
    /// SIGKILLs it got.
    killed: u32,
}

impl Member {
    fn alive(&mut self) -> bool {
        self.process.as_mut().is_some_and(Herald::alive)
    }
}

/// Starts every node that exited on its own again; counts them in `died` and their startup
/// times in `restarts`.
async fn restart_dead(members: &mut [Member], client: &reqwest::Client, died: &mut u32, restarts: &mut Vec<Duration>) -> Result<()> {
    for m in members {
        if !m.alive() {
            *died += 1;
            let (h, took) = m.launch.start(client).await?;
            m.process = Some(h);
            restarts.push(took);
        }
    }
    Ok(())
}

fn member(members: &mut [Member], i: usize) -> Result<&mut Member> {
    members.get_mut(i).ok_or_else(|| format!("no node {i}").into())
}

/// The node holding the writer lease now, as the bucket says ("NODE_ID URL"), if any.
async fn writer(leases: &herald::cluster::LeaseBucket, members: &[Member]) -> Option<usize> {
    let holder = leases.holder(herald::cluster::WRITER_LEASE).await.ok()??;
    let id = holder.split_whitespace().next()?;
    members.iter().position(|m| m.id == id)
}

/// Waits until some node holds the writer lease, at most `within`.
async fn await_writer(leases: &herald::cluster::LeaseBucket, members: &[Member], within: Duration) -> Option<usize> {
    let started = Instant::now();
    loop {
        if let Some(w) = writer(leases, members).await {
            return Some(w);
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "min 2.1 s, median 2.9 s, max 4.0 s (n = 10)".
fn min_median_max(mut v: Vec<Duration>) -> String {
    v.sort();
    match (v.first(), v.get(v.len().saturating_sub(1) / 2), v.last()) {
        (Some(a), Some(m), Some(b)) => {
            format!("min {:.2} s, median {:.2} s, max {:.2} s (n = {})", a.as_secs_f64(), m.as_secs_f64(), b.as_secs_f64(), v.len())
        }
        _ => "no samples".to_string(),
    }
}

pub async fn run(s: &Settings, found: &mut Findings) -> Result<Ran> {
    if !nats_available()? {
        return Ok(Ran::Skipped(format!("{NATS} is not on PATH")));
    }
    // Declared before the servers, so dropped after them: the store goes once nothing uses it.
    let scratch = Scratch::new("cluster")?;
    let client = client::build()?;
    let nats = Nats::start(&client, &scratch.dir("nats")?, &scratch.file("nats.log")).await?;
    let mut members = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let id = format!("n{i}");
        let launch = Launch::new(&s.herald, &scratch.path.join(&id), free_port()?, &scratch.file(&format!("{id}.log")))
            .args(&["--nats", nats.url.as_str(), "--node-id", id.as_str()])
            .env("HERALD_CLUSTER__REPLICAS", "1")
            .env("HERALD_CLUSTER__LEASE_TTL", LEASE_TTL);
        members.push(Member { base: launch.base(), id, launch, process: None, killed: 0 });
    }
    let bases: Vec<String> = members.iter().map(|m| m.base.clone()).collect();
    let mut rng = StdRng::seed_from_u64(s.seed_for(60));
    let pause: Range<f64> = if s.quick { 0.5..1.5 } else { 0.5..3.0 };

    // n0 first, so that it is the writer the others find; then the other two.
    let mut first_ready = Vec::new();
    for m in &mut members {
        let (h, took) = m.launch.start(&client).await?;
        m.process = Some(h);
        first_ready.push(took);
    }
    let nc = async_nats::connect(nats.url.as_str()).await?;
    let js = async_nats::jetstream::new(nc);
    let ttl = Duration::from_secs(2);
    let leases = herald::cluster::LeaseBucket::open(&js, herald::cluster::LEASE_BUCKET, ttl, 1).await?;
    if await_writer(&leases, &members, Duration::from_secs(30)).await.is_none() {
        return Err("no node took the writer lease within 30 s of the three being ready".into());
    }

    let mut receivers = Vec::with_capacity(SUBSCRIPTIONS);
    for _ in 0..SUBSCRIPTIONS {
        receivers.push(Receiver::start().await?);
    }
    client::create_topic(&client, &members.first().ok_or("no nodes")?.base).await?;
    let mut subs = Vec::with_capacity(SUBSCRIPTIONS);
    for (r, base) in receivers.iter().zip(bases.iter().cycle()) {
        // Through every node in turn: a follower forwards the create to the writer.
        subs.push(client::subscribe(&client, base, &r.url).await?);
    }
    for (i, r) in receivers.iter().enumerate() {
        r.set(Policy::Chaos(Box::new(Chaos::new(s.seed_for(70 + i as u64), Duration::from_millis(400), Duration::from_millis(1500)))));
    }
    let writers = Writers::start_over(&client, &bases, WRITERS, WRITE_PERIOD);

    let (mut restarts, mut early_kills, mut died) = (Vec::new(), 0u32, 0u32);
    let (mut gaps, mut no_writer_again, mut writer_kills) = (Vec::new(), 0u32, 0u32);
    for cycle in 1..=s.cluster_cycles {
        tokio::time::sleep(Duration::from_secs_f64(rng.gen_range(pause.clone()))).await;
        // A node that exited on its own is counted and started again before the kill.
        restart_dead(&mut members, &client, &mut died, &mut restarts).await?;
        let holder = writer(&leases, &members).await;
        let target = match holder {
            Some(w) if cycle % 2 == 1 => w,
            _ => rng.gen_range(0..NODES),
        };
        let was_writer = holder == Some(target);
        let m = member(&mut members, target)?;
        if let Some(h) = m.process.take() {
            h.kill9()?;
        }
        // After the process is reaped: no write sent from here on can be the dead writer's.
        let killed_at = Instant::now();
        m.killed += 1;
        if was_writer {
            writer_kills += 1;
        }
        tokio::time::sleep(Duration::from_secs_f64(rng.gen_range(pause.clone()))).await;
        if rng.gen_bool(0.1) {
            let h = m.launch.spawn()?;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..150))).await;
            h.kill9()?;
            early_kills += 1;
        }
        let (h, took) = m.launch.start(&client).await?;
        m.process = Some(h);
        restarts.push(took);
        if was_writer {
            let deadline = Instant::now() + FAILOVER_WITHIN;
            loop {
                if let Some(at) = writers.first_acked_since(killed_at) {
                    gaps.push(at.duration_since(killed_at));
                    break;
                }
                if Instant::now() > deadline {
                    no_writer_again += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let tally = writers.stop().await;
    for r in &receivers {
        r.fixed(Behaviour::Ok);
    }
    restart_dead(&mut members, &client, &mut died, &mut restarts).await?;
    let Some(w) = await_writer(&leases, &members, Duration::from_secs(30)).await else {
        return Err("no node holds the writer lease 30 s after the last restart".into());
    };
    let (base, writer_id) = {
        let m = member(&mut members, w)?;
        (m.base.clone(), m.id.clone())
    };
    let base = base.as_str();
    let acked: Vec<&str> = tally.acked.iter().map(|a| a.id.as_str()).collect();
    let pairs: Vec<(&str, &Receiver)> = subs.iter().map(String::as_str).zip(receivers.iter()).collect();
    let within = Duration::from_secs(if s.quick { 60 } else { 600 });
    let drained = drain(&client, base, &pairs, &acked, within).await?;

    let mut answers: BTreeMap<&str, u64> = BTreeMap::new();
    for rx in &receivers {
        for d in rx.deliveries().iter().filter(|d| d.kind == "event-notification") {
            *answers.entry(d.answer).or_insert(0) += 1;
        }
    }
    let mut caught_up = Vec::new();
    let mut writer_since = Vec::new();
    let (mut received, mut two_numbers, mut examples) = (0, 0, Vec::new());
    for (sub, rx) in &pairs {
        let (_, since) = client::sub_status(&client, base, sub).await?;
        writer_since.push(since);
        let l = ledger::check(acked.iter().copied(), &rx.deliveries());
        caught_up.push(format!("{}/{since}", l.accepted_through));
        received += l.received;
        two_numbers += l.two_numbers;
        examples.extend(l.examples.iter().take(2).cloned());
        found.counters.add(l.counters);
    }
    // Every node's copy: the same eventsSinceSubscriptionStart as the writer's, within 10 s.
    let agreed_by = Instant::now() + Duration::from_secs(10);
    let mut disagree = Vec::new();
    loop {
        disagree.clear();
        for m in &members {
            for (sub, expected) in subs.iter().zip(&writer_since) {
                let since = client::sub_status(&client, &m.base, sub).await.map(|(_, n)| n).ok();
                if since != Some(*expected) {
                    let said = since.map_or_else(|| "nothing".to_string(), |n| n.to_string());
                    disagree.push(format!("{} says {said} of {sub}, the writer {expected}", m.id));
                }
            }
        }
        if disagree.is_empty() || Instant::now() > agreed_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Followers first, the writer last: no failover while the others stop.
    let mut order: Vec<usize> = (0..NODES).filter(|i| *i != w).collect();
    order.push(w);
    let mut stops = Vec::new();
    for i in order {
        let m = member(&mut members, i)?;
        if let Some(h) = m.process.take() {
            stops.push((m.id.clone(), h.terminate().await?));
        }
    }
    drop(nats);

    found.info(
        "load",
        format!(
            "{NODES} nodes on one {NATS}, lease TTL {LEASE_TTL}; {} cycles ({writer_kills} killed the writer; kills per node {}), seed {}; \
             {} writes acknowledged, {} unanswered (node down), answered otherwise: {}; {SUBSCRIPTIONS} subscriptions",
            s.cluster_cycles,
            members.iter().map(|m| m.killed.to_string()).collect::<Vec<_>>().join("/"),
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
        "each subscription accepted 1..=eventsSinceSubscriptionStart (the writer's)",
        match drained {
            Some(d) => format!("accepted/events {} in {:.1} s (writer {writer_id})", caught_up.join(", "), d.as_secs_f64()),
            None => format!("accepted/events {} after {} s (gave up)", caught_up.join(", "), within.as_secs()),
        },
        Verdict::of(drained.is_some()),
    );
    found.row(
        "every node's copy caught up",
        "the writer's eventsSinceSubscriptionStart on every node within 10 s",
        if disagree.is_empty() { "all agree".to_string() } else { disagree.join("; ") },
        Verdict::of(disagree.is_empty()),
    );
    found.row(
        "writes acknowledged again after every writer kill",
        format!("within {} s", FAILOVER_WITHIN.as_secs()),
        format!("{} of {writer_kills}", writer_kills - no_writer_again),
        Verdict::of(no_writer_again == 0),
    );
    found.info("no writer after a writer kill (kill to the next write acknowledged)", min_median_max(gaps));
    found.row("nodes stay up between kills", "0 exits of their own", format!("{died}"), Verdict::of(died == 0));
    found.info("first start to ready (n0, n1, n2)", spread(first_ready));
    found.info("restart to ready", format!("{}; {early_kills} more killed during startup", spread(restarts)));
    let mut error_counts = Vec::new();
    let mut first_errors = Vec::new();
    for m in &members {
        let e = errors(&m.launch.log, usize::MAX);
        error_counts.push(format!("{} {}", m.id, e.len()));
        first_errors.extend(e.into_iter().take(1).map(|l| format!("{}: {l}", m.id)));
    }
    found.info(
        "ERROR lines in the nodes' logs (kills make some expected)",
        format!(
            "{}{}",
            error_counts.join(", "),
            if first_errors.is_empty() { String::new() } else { format!("; first: {}", first_errors.join(" / ")) }
        ),
    );
    // The logs outlive the scratch directory only when asked for.
    if let Some(keep) = std::env::var_os("HERALD_CHAOS_LOGS") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep)?;
        for m in &members {
            std::fs::copy(&m.launch.log, keep.join(format!("{}.log", m.id)))?;
        }
        std::fs::copy(scratch.file("nats.log"), keep.join("nats.log"))?;
    }
    let panicked: Vec<String> = members.iter().flat_map(|m| panics(&m.launch.log).into_iter().map(|l| format!("{}: {l}", m.id))).collect();
    found.row(
        "no panic in any node's log",
        "none",
        panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(panicked.is_empty()),
    );
    let clean = stops.iter().all(|(_, st)| st.is_some_and(|st| st.success()));
    found.row(
        "clean stop of every node after the run (SIGTERM)",
        "exit status 0",
        stops
            .iter()
            .map(|(id, st)| format!("{id}: {}", st.map_or_else(|| "still running after 20 s; killed".to_string(), |st| st.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        Verdict::of(clean && stops.len() == NODES),
    );
    Ok(Ran::Done)
}
