//! S5: the cost of matching alone, in this process, with no HTTP, store or delivery, as
//! `benches/matching.rs` measures it: one Task topic, subscriptions `s{i}` filtered by
//! `owner=Organization/o{i}`, events that are Task updates whose owner is one of 1,024 owners
//! spread over the range (one match each). The time per `match_change` is the median of eleven
//! batches' means.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::fhir::subscription::{parse_subscription, SubscriptionLimits};
use herald::fhir::topic::{parse_topic, Interaction, TopicSpec};
use herald::matching::{match_change, ResourceChange};
use herald::registry::Registry;
use serde_json::{json, Value};

use crate::report::{count, Row};
use crate::Result;

const BASE: &str = "http://herald.test/fhir";
const TOPIC: &str = "http://herald.test/topic/task";

fn topic() -> Result<TopicSpec> {
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update", "delete"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "owner" }]
    });
    parse_topic("task", &topic).map_err(|issues| format!("topic: {issues:?}").into())
}

fn registry(n: usize) -> Result<Registry> {
    let limits = SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 };
    let mut registry = Registry::with_base_url(BASE);
    registry.put_topic(topic()?);
    for i in 0..n {
        let sub = json!({
            "resourceType": "Subscription", "status": "active", "topic": TOPIC,
            "channelType": { "code": "rest-hook" }, "endpoint": "https://receiver.test/hook", "content": "id-only",
            "contentType": "application/fhir+json",
            "filterBy": [{ "filterParameter": "owner", "value": format!("Organization/o{i}") }]
        });
        let spec = parse_subscription(&format!("s{i}"), &sub, &limits, 0).map_err(|e| format!("subscription: {e:?}"))?;
        let entry = registry.bind(spec).map_err(|e| format!("bind: {e:?}"))?;
        registry.put_subscription(Arc::new(entry));
    }
    Ok(registry)
}

fn task(owner: &str) -> Value {
    json!({
        "resourceType": "Task", "id": "t1", "meta": { "versionId": "2" }, "status": "requested", "intent": "order",
        "owner": { "reference": owner }, "requester": { "reference": "Organization/placer" },
        "focus": { "reference": "ServiceRequest/42" }, "for": { "reference": "Patient/p1" }
    })
}

fn matches(registry: &Registry, resource: &Value) -> usize {
    let change =
        ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Update, previous: None, current: Some(resource) };
    match_change(&change, registry, BASE, None, |_| true).matches.len()
}

struct Measured {
    per_event: Duration,
    build: Duration,
    matched: u64,
}

fn measure(n: usize, iterations: usize) -> Result<Measured> {
    let started = Instant::now();
    let registry = registry(n)?;
    let build = started.elapsed();
    let tasks: Vec<Value> = (0..1024).map(|k| task(&format!("Organization/o{}", (k * 7919) % n))).collect();
    let mut matched = 0u64;
    for t in tasks.iter().take(100) {
        let found = matches(&registry, t);
        if found != 1 {
            return Err(format!("S5 with {n} subscriptions: expected 1 match, found {found}").into());
        }
        matched += 1;
    }
    let batch = (iterations / 11).max(1);
    let mut means = Vec::with_capacity(11);
    let mut events = tasks.iter().cycle();
    for _ in 0..11 {
        let started = Instant::now();
        for t in events.by_ref().take(batch) {
            black_box(matches(&registry, black_box(t)));
        }
        means.push(started.elapsed() / u32::try_from(batch).unwrap_or(u32::MAX));
    }
    means.sort();
    Ok(Measured { per_event: means.get(5).copied().unwrap_or_default(), build, matched })
}

/// One row per size, then one for the ratio of the largest to the smallest.
pub fn run(sizes: &[usize], quick: bool) -> Result<Vec<Row>> {
    // Loads the R5 model and search parameters once, outside the figures.
    measure(100, 1_100)?;
    let iterations = if quick { 11_000 } else { 110_000 };
    let mut rows = Vec::new();
    let mut timed = Vec::new();
    for &n in sizes {
        let m = measure(n, iterations)?;
        let us = m.per_event.as_secs_f64() * 1e6;
        let mut row = Row {
            scenario: "S5".into(),
            what: format!("matching alone, {} subscriptions by owner (in-process)", count(n)),
            matches: Some(m.matched),
            ..Row::default()
        };
        row.notes.push(format!("{us:.2} µs per event (1 match); registry built in {:.2} s", m.build.as_secs_f64()));
        row.details.insert("subscriptions".into(), n.into());
        row.details.insert("per_event_us".into(), us.into());
        row.details.insert("registry_build_s".into(), m.build.as_secs_f64().into());
        timed.push((n, us));
        rows.push(row);
    }
    if let (Some(&(n0, first)), Some(&(n1, last))) = (timed.first(), timed.last()) {
        if timed.len() > 1 && first > 0.0 {
            let mut row = Row {
                scenario: "S5".into(),
                what: format!("ratio {} / {} subscriptions", count(n1), count(n0)),
                matches: rows.first().and_then(|r| r.matches),
                ..Row::default()
            };
            row.notes.push(format!("{:.2}× per event", last / first));
            row.details.insert("ratio".into(), (last / first).into());
            rows.push(row);
        }
    }
    Ok(rows)
}
