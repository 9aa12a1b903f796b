//! Matching benchmark (issue #5): time per event and memory per subscription of the indexed
//! matcher (`matching::match_change`) against the exhaustive one it replaced
//! (`matching::match_change_exhaustive`), in the same run, on one Task topic with 1k, 10k and
//! 100k subscriptions filtered by `owner=Organization/o{i}` (and by owner plus `status`).
//!
//! Run: `CARGO_BUILD_JOBS=1 cargo bench --bench matching`. Figures go to BENCHMARKS.md; nothing
//! is asserted. Memory is counted by a global allocator that tracks the bytes requested and
//! not yet freed (malloc's own per-allocation overhead, 8-16 bytes on glibc, is not included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::fhir::subscription::{parse_subscription, SubscriptionLimits};
use herald::fhir::topic::{parse_topic, Interaction};
use herald::matching::{match_change, match_change_exhaustive, ResourceChange};
use herald::registry::{Index, Registry, SubEntry};
use serde_json::{json, Value};

/// Live heap bytes: requested and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(signed(layout.size()), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(signed(layout.size()), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(signed(layout.size()), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const BASE: &str = "http://herald.test/fhir";
const TOPIC: &str = "http://herald.test/topic/task";

type Failure = Box<dyn Error>;

fn topic() -> Result<herald::fhir::topic::TopicSpec, Failure> {
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update", "delete"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "owner" }, { "resource": "Task", "filterParameter": "status" }]
    });
    parse_topic("task", &topic).map_err(|issues| format!("topic: {issues:?}").into())
}

/// Parsed and bound subscriptions `s{i}` filtered by `owner=Organization/o{i}` (and
/// `status=requested` when `with_status`).
fn entries(registry: &Registry, n: usize, with_status: bool) -> Result<Vec<Arc<SubEntry>>, Failure> {
    let limits = SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut filters = vec![json!({ "filterParameter": "owner", "value": format!("Organization/o{i}") })];
        if with_status {
            filters.push(json!({ "filterParameter": "status", "value": "requested" }));
        }
        let sub = json!({
            "resourceType": "Subscription", "status": "active", "topic": TOPIC,
            "channelType": { "code": "rest-hook" }, "endpoint": "https://receiver.test/hook", "content": "id-only",
            "contentType": "application/fhir+json", "filterBy": filters
        });
        let spec = parse_subscription(&format!("s{i}"), &sub, &limits, 0).map_err(|e| format!("subscription: {e:?}"))?;
        out.push(Arc::new(registry.bind(spec).map_err(|e| format!("bind: {e:?}"))?));
    }
    Ok(out)
}

fn task(owner: &str) -> Value {
    json!({
        "resourceType": "Task", "id": "t1", "meta": { "versionId": "2" }, "status": "requested", "intent": "order",
        "owner": { "reference": owner }, "requester": { "reference": "Organization/placer" },
        "focus": { "reference": "ServiceRequest/42" }, "for": { "reference": "Patient/p1" }
    })
}

/// Time per `match_change`: the median of eleven batches' means, each of `iterations / 11` events
/// cycling through `tasks` (after checking the match count on a few), since the machine is
/// shared and noisy.
fn per_event(registry: &Registry, tasks: &[Value], iterations: usize, expect: usize, exhaustive: bool) -> Result<Duration, Failure> {
    let run = |resource: &Value| {
        let change =
            ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Update, previous: None, current: Some(resource) };
        if exhaustive {
            match_change_exhaustive(&change, registry, BASE, None, |_| true)
        } else {
            match_change(&change, registry, BASE, None, |_| true)
        }
    };
    for resource in tasks.iter().take(iterations.min(100)) {
        let found = run(resource).matches.len();
        if found != expect {
            return Err(format!("expected {expect} matches, found {found}").into());
        }
    }
    let batch = (iterations / 11).max(1);
    let mut means = Vec::new();
    let mut events = tasks.iter().cycle();
    for _ in 0..11 {
        let started = Instant::now();
        for resource in events.by_ref().take(batch) {
            black_box(run(black_box(resource)));
        }
        means.push(started.elapsed() / u32::try_from(batch).unwrap_or(u32::MAX));
    }
    means.sort();
    Ok(means.get(5).copied().unwrap_or_default())
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.2} µs")
    }
}

struct Row {
    n: usize,
    new_one: Duration,
    new_none: Duration,
    old_one: Duration,
    old_none: Duration,
    registry_bytes: f64,
    index_bytes: f64,
    put_time: Duration,
}

fn scenario(n: usize, with_status: bool) -> Result<Row, Failure> {
    let topic = topic()?;
    let before = live();
    let started = Instant::now();
    let mut registry = Registry::with_base_url(BASE);
    registry.put_topic(topic.clone());
    for entry in entries(&registry, n, with_status)? {
        registry.put_subscription(entry);
    }
    let build = started.elapsed();
    let registry_bytes = (live() - before) as f64 / n as f64;

    // The index alone, over the same entries (already allocated, so not counted again).
    let subs: Vec<Arc<SubEntry>> = registry.subscriptions().cloned().collect();
    let before = live();
    let started = Instant::now();
    let mut index = Index::new(Some(BASE));
    index.put_topic(&topic);
    for sub in &subs {
        index.insert(sub);
    }
    let put_time = started.elapsed() / u32::try_from(n).unwrap_or(u32::MAX);
    let index_bytes = (live() - before) as f64 / n as f64;
    black_box(&index);
    drop(index);
    eprintln!("n={n} status={with_status}: registry built in {build:?}");

    // 1,024 owners spread over the range (one match each), and 1,024 no subscription names.
    let hits: Vec<Value> = (0..1024).map(|k| task(&format!("Organization/o{}", (k * 7919) % n))).collect();
    let misses: Vec<Value> = (0..1024).map(|k| task(&format!("Organization/none{k}"))).collect();
    let new_iterations = 110_000;
    let old_iterations = (2_200_000 / n).max(22);
    Ok(Row {
        n,
        new_one: per_event(&registry, &hits, new_iterations, 1, false)?,
        new_none: per_event(&registry, &misses, new_iterations, 0, false)?,
        old_one: per_event(&registry, &hits, old_iterations, 1, true)?,
        old_none: per_event(&registry, &misses, old_iterations, 0, true)?,
        registry_bytes,
        index_bytes,
        put_time,
    })
}

fn main() -> Result<(), Failure> {
    // Loads the R5 model and search parameters and compiles the paths, so that one-off
    // statics are not counted against the first scenario.
    scenario(100, true)?;
    for (label, with_status) in [("owner=Organization/o{i}", false), ("owner=Organization/o{i} and status=requested", true)] {
        let mut rows = Vec::new();
        for n in [1_000, 10_000, 100_000] {
            rows.push(scenario(n, with_status)?);
        }
        println!("\nfilters: {label}\n");
        println!("| subscriptions | indexed, 1 match | indexed, 0 matches | exhaustive, 1 match | exhaustive, 0 matches | registry bytes/sub (incl. index) | index bytes/sub | index insert/sub |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
                r.n,
                micros(r.new_one),
                micros(r.new_none),
                micros(r.old_one),
                micros(r.old_none),
                r.registry_bytes,
                r.index_bytes,
                micros(r.put_time)
            );
        }
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-12);
            println!(
                "| ratio {}/{} | {:.2}× | {:.2}× | {:.0}× | {:.0}× | | | |",
                last.n,
                first.n,
                ratio(last.new_one, first.new_one),
                ratio(last.new_none, first.new_none),
                ratio(last.old_one, first.old_one),
                ratio(last.old_none, first.old_none)
            );
        }
    }
    Ok(())
}
