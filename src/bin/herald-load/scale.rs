//! The `scale` scenario (issue #23): search and storage at queue-server scale.
//!
//! Herald is started on a fresh data directory and loaded through its REST API: `--scale-tasks`
//! Tasks (~250 bytes; owners spread over `OWNERS` organizations; statuses as a queue server
//! sees them, mostly completed, a fifth requested) in transaction Bundles of `BATCH` PUTs, and
//! `--scale-subscriptions` websocket Subscriptions filtered on owners no Task has (they weigh on
//! the registry without queuing events), `--concurrency` requests at a time. Then, one request
//! at a time, `searches` requests of each search (p50/p99), Herald's RSS, the data directory's
//! bytes, and the time from start to `/readyz` 200 after SIGTERM and after kill -9, on the same
//! data directory. It checks answers, not speeds: a search that is not 200, or a deep page that
//! is empty, fails the run.

use std::path::Path;
use std::time::Instant;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::client;
use crate::herald::{Herald, Launch, Scratch};
use crate::report::{count, num, Latency, Report, Row};
use crate::setup::{self, TOPIC};
use crate::{Result, Settings};

/// Organizations owning the Tasks (`Organization/lab-N`).
const OWNERS: u64 = 1_000;
/// PUT entries per transaction Bundle.
const BATCH: usize = 250;

/// Status of Task `i`: 60 % completed, 20 % requested, 10 % in-progress, 5 % accepted, 5 % cancelled.
fn status(i: u64) -> &'static str {
    match mix(i) % 20 {
        0..=11 => "completed",
        12..=15 => "requested",
        16 | 17 => "in-progress",
        18 => "accepted",
        _ => "cancelled",
    }
}

/// A cheap deterministic scramble, so neighbouring ids get different owners and statuses.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn task_id(i: u64) -> String {
    format!("scale-{i:08}")
}

/// Task `i`, about 250 bytes as JSON.
fn task(i: u64) -> Value {
    let m = mix(i);
    json!({
        "resourceType": "Task",
        "id": task_id(i),
        "status": status(i),
        "intent": "order",
        "owner": { "reference": format!("Organization/lab-{}", m % OWNERS) },
        "focus": { "reference": format!("ServiceRequest/sr-{i}") },
        "for": { "reference": format!("Patient/p-{:06}", (m >> 20) % 200_000) },
        "authoredOn": format!("2026-{:02}-{:02}T08:30:00Z", 1 + (m >> 8) % 12, 1 + (m >> 12) % 28),
        "description": "Lipid panel draw"
    })
}

fn subscription(i: usize) -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": TOPIC,
        "filterBy": [{ "resourceType": "Task", "filterParameter": "owner", "value": format!("Organization/watcher-{i}") }],
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" },
        "content": "id-only"
    })
}

async fn send(req: reqwest::RequestBuilder) -> Result<Value> {
    let resp = req.header("content-type", "application/fhir+json").header("accept", "application/fhir+json").send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("{status}: {}", text.chars().take(500).collect::<String>()).into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// Stores Tasks `0..n` in transactions (one commit each), `concurrency` at a time.
async fn load_tasks(client: &reqwest::Client, base: &str, n: u64, concurrency: usize) -> Result<()> {
    let batches: Vec<(u64, u64)> = (0..n).step_by(BATCH).map(|from| (from, (from + BATCH as u64).min(n))).collect();
    stream::iter(batches)
        .map(|(from, to)| async move {
            let entries: Vec<Value> = (from..to)
                .map(|i| json!({ "resource": task(i), "request": { "method": "PUT", "url": format!("Task/{}", task_id(i)) } }))
                .collect();
            let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
            let answer = send(client.post(base).body(bundle.to_string())).await?;
            let refused = answer
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| !e.pointer("/response/status").and_then(Value::as_str).unwrap_or("").starts_with('2'));
            if let Some(e) = refused.into_iter().next() {
                return Err::<(), crate::Error>(format!("a transaction entry was refused: {e}").into());
            }
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn subscribe(client: &reqwest::Client, base: &str, n: usize, concurrency: usize) -> Result<()> {
    let url = format!("{base}/Subscription");
    stream::iter(0..n)
        .map(|i| send(client.post(&url).body(subscription(i).to_string())))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<Value>>()
        .await?;
    Ok(())
}

fn next_link(bundle: &Value) -> Option<String> {
    let links = bundle.get("link")?.as_array()?;
    links.iter().find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?.get("url")?.as_str().map(str::to_owned)
}

/// Times `n` requests, one at a time; `url(k)` gives the k-th. Every answer must be 200 and
/// pass `check`.
async fn timed(client: &reqwest::Client, n: usize, url: impl Fn(usize) -> String, check: impl Fn(&Value) -> bool) -> Result<Latency> {
    let mut h: Histogram<u64> = client::histogram()?;
    for k in 0..n {
        let u = url(k);
        let t = Instant::now();
        let answer = send(client.get(&u)).await.map_err(|e| format!("GET {u}: {e}"))?;
        client::record(&mut h, t.elapsed());
        if !check(&answer) {
            return Err(format!("GET {u}: unexpected answer: {}", answer.to_string().chars().take(500).collect::<String>()).into());
        }
    }
    Latency::of(&h, false).ok_or_else(|| "no search was timed".into())
}

fn entries(b: &Value) -> usize {
    b.get("entry")
        .and_then(Value::as_array)
        .map_or(0, |e| e.iter().filter(|e| e.pointer("/search/mode").and_then(Value::as_str) == Some("match")).count())
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(path) else { return 0 };
    read.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One search row: its name and latency, for the table and the JSON details.
fn latency_json(l: &Latency) -> Value {
    json!({ "p50_ms": l.p50_ms, "p99_ms": l.p99_ms, "samples": l.samples })
}

pub async fn run(client: &reqwest::Client, s: &Settings, scratch: &Scratch, report: &mut Report) -> Result<()> {
    let dir = scratch.dir("scale")?;
    let launch = Launch { bin: s.herald.clone(), config: s.herald_config.clone(), ..Launch::default() };
    let mut herald = Herald::spawn(&launch, &dir)?;
    herald.wait_ready(client).await?;
    let base = herald.base.clone();
    let n = s.scale_tasks;
    eprintln!("   scale: loading {} Tasks and {} subscriptions", count(usize::try_from(n)?), count(s.scale_subscriptions));
    let t = Instant::now();
    load_tasks(client, &base, n, s.concurrency).await?;
    let tasks_per_s = n as f64 / t.elapsed().as_secs_f64();
    setup::create_topic(client, &base).await?;
    let t = Instant::now();
    subscribe(client, &base, s.scale_subscriptions, s.concurrency).await?;
    let subs_per_s = s.scale_subscriptions as f64 / t.elapsed().as_secs_f64();

    let r = if s.quick { 20 } else { 300 };
    let (deep_pages, deep_count) = if s.quick { (2, 100) } else { (100, 1_000) };
    let mut searches: Vec<(String, Latency)> = Vec::new();
    let owner = |k: usize| format!("Organization/lab-{}", mix(k as u64) % OWNERS);
    let l = timed(
        client,
        r,
        |k| format!("{base}/Task?owner={}&status=requested", owner(k)),
        |b| b.get("type").and_then(Value::as_str) == Some("searchset"),
    )
    .await?;
    searches.push(("Task?owner=X&status=requested".into(), l));
    let l = timed(client, r, |k| format!("{base}/Task?_id={}", task_id(mix(k as u64) % n.max(1))), |b| entries(b) == 1).await?;
    searches.push(("Task?_id=X".into(), l));
    let first = format!("{base}/Task?status=requested&_count=10");
    let l = timed(client, r, |_| first.clone(), |b| entries(b) == 10 && next_link(b).is_some()).await?;
    searches.push(("Task?status=requested&_count=10 (page 1)".into(), l));
    // A deep position: follow `next` links of 1,000 matches per page (100 with --quick), then
    // ask for 10 there.
    let mut deep = format!("{base}/Task?status=requested&_count={deep_count}");
    let mut skipped = 0usize;
    for _ in 0..deep_pages {
        let page = send(client.get(&deep)).await?;
        skipped += entries(&page);
        deep = next_link(&page).ok_or("the requested Tasks ended before the deep page")?;
    }
    let deep = deep.replace(&format!("_count={deep_count}"), "_count=10");
    let l = timed(client, r, |_| deep.clone(), |b| entries(b) == 10).await?;
    searches.push((format!("Task?status=requested&_count=10 (after {} matches, via next)", count(skipped)), l));
    let l = timed(
        client,
        r.div_ceil(10).max(3),
        |_| format!("{base}/Task?_summary=count"),
        |b| b.get("total").and_then(Value::as_u64).is_some(),
    )
    .await?;
    searches.push(("Task?_summary=count".into(), l));
    let counted = send(client.get(format!("{base}/Task?_summary=count"))).await?;

    let rss = herald.rss_mib()?;
    let peak = herald.peak_rss_mib()?;
    let data = dir.join("data");
    let bytes = dir_bytes(&data);
    let t = Instant::now();
    let clean = herald.stop().await?;
    let stop_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut herald = Herald::spawn(&launch, &dir)?;
    herald.wait_ready(client).await?;
    let after_term_s = t.elapsed().as_secs_f64();
    drop(herald); // SIGKILL
    let t = Instant::now();
    let mut herald = Herald::spawn(&launch, &dir)?;
    herald.wait_ready(client).await?;
    let after_kill_s = t.elapsed().as_secs_f64();
    let again = send(client.get(format!("{base_now}/Task?_id={}", task_id(0), base_now = herald.base))).await?;
    if entries(&again) != 1 {
        return Err("after kill -9 the first Task is gone".into());
    }
    herald.stop().await?;
    scratch.remove(&dir);

    let mut details = Map::new();
    details.insert("tasks".into(), json!(n));
    details.insert("subscriptions".into(), json!(s.scale_subscriptions));
    details.insert("tasks_loaded_per_s".into(), json!(tasks_per_s));
    details.insert("subscriptions_created_per_s".into(), json!(subs_per_s));
    details.insert("searches".into(), Value::Object(searches.iter().map(|(q, l)| (q.clone(), latency_json(l))).collect()));
    details.insert("summary_count_total".into(), counted.get("total").cloned().unwrap_or(Value::Null));
    details.insert("rss_mib".into(), json!(rss));
    details.insert("data_dir_bytes".into(), json!(bytes));
    details.insert("stop_after_sigterm_s".into(), json!(stop_s));
    details.insert("stopped_cleanly".into(), json!(clean));
    details.insert("ready_after_sigterm_s".into(), json!(after_term_s));
    details.insert("ready_after_kill9_s".into(), json!(after_kill_s));
    let mut notes: Vec<String> = searches.iter().map(|(q, l)| format!("{q} {} / {} ms", num(l.p50_ms), num(l.p99_ms))).collect();
    notes.push(format!("RSS {} MiB, data dir {} MiB", num(rss), num(bytes as f64 / 1_048_576.0)));
    notes.push(format!("ready after SIGTERM {} s, after kill -9 {} s", num(after_term_s), num(after_kill_s)));
    report.push(Row {
        scenario: "scale".into(),
        what: format!(
            "{} Tasks ({} loaded/s), {} subscriptions ({}/s); {} searches each, one at a time",
            count(usize::try_from(n)?),
            num(tasks_per_s),
            count(s.scale_subscriptions),
            num(subs_per_s),
            r
        ),
        herald_peak_rss_mib: Some(peak),
        matches: counted.get("total").and_then(Value::as_u64),
        notes,
        details,
        ..Row::default()
    });
    Ok(())
}

/// The scale rows as their own table: one line per search, then storage and restarts.
pub fn table(rows: &[Row], t: &mut String) {
    use std::fmt::Write as _;
    for r in rows.iter().filter(|r| r.scenario == "scale") {
        let d = &r.details;
        let _ = writeln!(t, "\nScale: {}\n", r.what);
        t.push_str("| measure | p50 | p99 |\n|---|---|---|\n");
        for (q, l) in d.get("searches").and_then(Value::as_object).into_iter().flatten() {
            let ms = |k: &str| l[k].as_f64().map_or_else(|| "—".into(), |v| format!("{} ms", num(v)));
            let _ = writeln!(t, "| {q} | {} | {} |", ms("p50_ms"), ms("p99_ms"));
        }
        let f = |k: &str| d.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let _ = writeln!(
            t,
            "| Herald RSS after the searches | {} MiB | peak {} MiB |",
            num(f("rss_mib")),
            num(r.herald_peak_rss_mib.unwrap_or(f64::NAN))
        );
        let _ = writeln!(t, "| data directory | {} MiB | |", num(f("data_dir_bytes") / 1_048_576.0));
        let _ = writeln!(
            t,
            "| start to /readyz 200 after SIGTERM (stop took {} s) | {} s | |",
            num(f("stop_after_sigterm_s")),
            num(f("ready_after_sigterm_s"))
        );
        let _ = writeln!(t, "| start to /readyz 200 after kill -9 | {} s | |", num(f("ready_after_kill9_s")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_about_250_bytes_and_a_fifth_requested() {
        let sizes: Vec<usize> = (0..1000).map(|i| task(i).to_string().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((220..=300).contains(&mean), "{mean}");
        let requested = (0..10_000).filter(|i| status(*i) == "requested").count();
        assert!((1_800..=2_200).contains(&requested), "{requested}");
    }
}
