//! Matching tests: the indexed matcher against the exhaustive reference on random
//! subscriptions and changes (proptest), and the cases that shape the index by hand.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{match_change, match_change_exhaustive, MatchReport, ResourceChange};
use crate::fhir::subscription::{parse_subscription, SubscriptionLimits};
use crate::fhir::topic::{parse_topic, Interaction};
use crate::registry::Registry;

const BASE: &str = "http://herald.test/fhir";

fn limits() -> SubscriptionLimits {
    SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 }
}

/// `(id, triggers, canFilterBy)`; the url is `http://herald.test/topic/{id}`.
fn topic_defs() -> Vec<(&'static str, Value, Value)> {
    vec![
        (
            "a-task",
            json!([{ "resource": "Task" }]),
            json!([
                { "resource": "Task", "filterParameter": "owner" },
                { "resource": "Task", "filterParameter": "status" },
                { "resource": "Task", "filterParameter": "requester" },
                { "resource": "Task", "filterParameter": "subject" },
                { "resource": "Task", "filterParameter": "code" }
            ]),
        ),
        (
            "b-task-requested",
            json!([{ "resource": "Task", "supportedInteraction": ["create", "update"], "fhirPathCriteria": "%current.status = 'requested'" }]),
            json!([{ "resource": "Task", "filterParameter": "owner" }, { "resource": "Task", "filterParameter": "status" }]),
        ),
        (
            "c-orders",
            json!([
                { "resource": "Observation", "supportedInteraction": ["create", "update"] },
                { "resource": "ServiceRequest", "supportedInteraction": ["create", "update"] },
                { "resource": "Task", "supportedInteraction": ["delete"] }
            ]),
            json!([
                { "resource": "Observation", "filterParameter": "status" },
                { "resource": "ServiceRequest", "filterParameter": "status" },
                { "resource": "Task", "filterParameter": "status" },
                { "filterParameter": "subject" },
                { "filterParameter": "code" },
                { "resource": "ServiceRequest", "filterParameter": "requester" },
                { "resource": "Task", "filterParameter": "owner" }
            ]),
        ),
        (
            "d-anything",
            json!([{ "resource": "Resource" }]),
            json!([
                { "filterParameter": "_id" },
                { "resource": "Task", "filterParameter": "owner" },
                { "resource": "Observation", "filterParameter": "status" }
            ]),
        ),
    ]
}

/// The filters a subscription to each topic may use: `(resourceType, filterParameter)`.
fn filter_choices(topic: usize) -> &'static [(Option<&'static str>, &'static str)] {
    match topic {
        0 => &[(None, "owner"), (None, "status"), (None, "requester"), (None, "subject"), (None, "code"), (Some("Task"), "owner")],
        1 => &[(None, "owner"), (None, "status")],
        2 => &[
            (None, "status"),
            (Some("Observation"), "status"),
            (Some("ServiceRequest"), "status"),
            (Some("Task"), "status"),
            (None, "subject"),
            (Some("Observation"), "subject"),
            (None, "code"),
            (Some("ServiceRequest"), "requester"),
            (Some("Task"), "owner"),
        ],
        _ => &[(None, "_id"), (Some("Task"), "owner"), (Some("Observation"), "status")],
    }
}

/// Search values, per parameter: every form the token and reference rules know, including
/// absolute references on Herald's base and elsewhere, and values that match nothing.
fn value_pool(parameter: &str) -> &'static [&'static str] {
    match parameter {
        "status" => &[
            "requested",
            "accepted",
            "completed",
            "final",
            "preliminary",
            "active",
            "|requested",
            "http://hl7.org/fhir/task-status|requested",
            "|",
        ],
        "code" => &["1234-5", "http://loinc.org|1234-5", "http://loinc.org|", "|1234-5", "999", "http://snomed.info/sct|999", "|999"],
        "_id" => &["t1", "t2", "o1"],
        _ => &[
            "Organization/o1",
            "Organization/o2",
            "Practitioner/p1",
            "Patient/x1",
            "o1",
            "http://herald.test/fhir/Organization/o1",
            "http://herald.test/fhir/Organization/o1/_history/2",
            "http://other.test/fhir/Organization/o1",
            "Organization/o1/_history/2",
            "urn:uuid:1234",
        ],
    }
}

/// Reference values found in resources.
const DATA_REFS: &[&str] = &[
    "Organization/o1",
    "Organization/o2",
    "Organization/o1/_history/2",
    "Practitioner/p1",
    "Patient/x1",
    "http://herald.test/fhir/Organization/o1",
    "http://herald.test/fhir/Organization/o2/_history/1",
    "http://other.test/fhir/Organization/o1",
    "urn:uuid:1234",
];
const DATA_STATUS: &[&str] = &["requested", "accepted", "completed", "final", "preliminary", "active"];
const DATA_IDS: &[&str] = &["t1", "t2", "r1"];
const RESOURCE_TYPES: &[&str] = &["Task", "Observation", "ServiceRequest"];

fn pick<'p>(pool: &[&'p str], at: u8) -> &'p str {
    pool.get(usize::from(at) % pool.len()).copied().unwrap_or_default()
}

fn coding(at: u8) -> Value {
    match at % 4 {
        0 => json!({ "system": "http://loinc.org", "code": "1234-5" }),
        1 => json!({ "system": "http://snomed.info/sct", "code": "999" }),
        2 => json!({ "code": "1234-5" }),
        _ => json!({ "system": "http://loinc.org", "code": "999" }),
    }
}

fn registry(base_known: bool) -> Registry {
    let mut registry = if base_known { Registry::with_base_url(BASE) } else { Registry::new() };
    for (id, triggers, can_filter_by) in topic_defs() {
        let topic = json!({
            "resourceType": "SubscriptionTopic", "url": format!("http://herald.test/topic/{id}"), "status": "active",
            "resourceTrigger": triggers, "canFilterBy": can_filter_by
        });
        registry.put_topic(parse_topic(id, &topic).unwrap());
    }
    registry
}

/// `filters`: `(resourceType, filterParameter, value)`.
fn subscribe(registry: &mut Registry, id: &str, topic: &str, filters: &[(Option<&str>, &str, &str)]) {
    let filter_by: Vec<Value> = filters
        .iter()
        .map(|(ty, p, v)| match ty {
            Some(ty) => json!({ "resourceType": ty, "filterParameter": p, "value": v }),
            None => json!({ "filterParameter": p, "value": v }),
        })
        .collect();
    let sub = json!({
        "resourceType": "Subscription", "status": "requested", "topic": format!("http://herald.test/topic/{topic}"),
        "channelType": { "code": "rest-hook" }, "endpoint": "http://127.0.0.1:9/hook", "content": "id-only",
        "contentType": "application/fhir+json", "filterBy": filter_by
    });
    let spec = parse_subscription(id, &sub, &limits(), 0).unwrap();
    let entry = registry.bind(spec).unwrap_or_else(|issues| panic!("{id} does not bind: {issues:?}"));
    registry.put_subscription(Arc::new(entry));
}

/// A resource of `ty` from pool indices; absent fields stay absent.
#[derive(Debug, Clone)]
struct Body {
    status: Option<u8>,
    refs: [Option<u8>; 3],
    codes: Vec<u8>,
}

fn body(ty: &str, id: &str, b: &Body) -> Value {
    let mut r = json!({ "resourceType": ty, "id": id });
    let reference = |at: Option<u8>| at.map(|at| json!({ "reference": pick(DATA_REFS, at) }));
    let fields: [(&str, Option<Value>); 4] = match ty {
        "Task" => [("owner", reference(b.refs[0])), ("requester", reference(b.refs[1])), ("for", reference(b.refs[2])), ("focus", None)],
        "Observation" => [("subject", reference(b.refs[2])), ("focus", reference(b.refs[0])), ("owner", None), ("requester", None)],
        _ => [("requester", reference(b.refs[1])), ("subject", reference(b.refs[2])), ("owner", None), ("focus", None)],
    };
    for (name, value) in fields {
        if let Some(value) = value {
            r[name] = value;
        }
    }
    if let Some(at) = b.status {
        r["status"] = json!(pick(DATA_STATUS, at));
    }
    if !b.codes.is_empty() {
        let codings: Vec<Value> = b.codes.iter().map(|c| coding(*c)).collect();
        r["code"] = if ty == "ServiceRequest" { json!({ "concept": { "coding": codings } }) } else { json!({ "coding": codings }) };
    }
    r
}

#[derive(Debug, Clone)]
struct Change {
    ty: u8,
    id: u8,
    interaction: Interaction,
    previous: Option<Body>,
    current: Option<Body>,
}

#[derive(Debug, Clone)]
enum Op {
    /// Put subscription `s{slot}` on topic `topic` with `(choice, value)` filters.
    Put {
        slot: u8,
        topic: u8,
        filters: Vec<(u8, u8)>,
    },
    Remove {
        slot: u8,
    },
    Event(Change),
}

fn body_strategy() -> impl Strategy<Value = Body> {
    (
        proptest::option::of(any::<u8>()),
        [proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>()), proptest::option::of(any::<u8>())],
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(status, refs, codes)| Body { status, refs, codes })
}

fn change_strategy() -> impl Strategy<Value = Change> {
    (any::<u8>(), any::<u8>(), 0u8..3, body_strategy(), body_strategy(), any::<bool>()).prop_map(|(ty, id, i, previous, current, lost)| {
        let interaction = [Interaction::Create, Interaction::Update, Interaction::Delete][usize::from(i)];
        let (previous, current) = match interaction {
            Interaction::Create => (None, Some(current)),
            Interaction::Update => (Some(previous), Some(current)),
            // A delete whose previous state is unknown (side-car) now and then.
            Interaction::Delete => ((!lost).then_some(previous), None),
        };
        Change { ty, id, interaction, previous, current }
    })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 0u8..4, prop::collection::vec((any::<u8>(), any::<u8>()), 0..4))
            .prop_map(|(slot, topic, filters)| Op::Put { slot, topic, filters }),
        1 => (0u8..12).prop_map(|slot| Op::Remove { slot }),
        3 => change_strategy().prop_map(Op::Event),
    ]
}

/// Applies `op`; for an event, returns both matchers' reports.
fn apply(registry: &mut Registry, op: &Op, off: &[bool]) -> Option<(MatchReport, MatchReport)> {
    match op {
        Op::Put { slot, topic, filters } => {
            let (topic_id, ..) = topic_defs().swap_remove(usize::from(*topic));
            let choices = filter_choices(usize::from(*topic));
            let filters: Vec<(Option<&str>, &str, &str)> = filters
                .iter()
                .map(|(c, v)| {
                    let (ty, parameter) = choices[usize::from(*c) % choices.len()];
                    (ty, parameter, pick(value_pool(parameter), *v))
                })
                .collect();
            subscribe(registry, &format!("s{slot:02}"), topic_id, &filters);
            None
        }
        Op::Remove { slot } => {
            registry.remove_subscription(&format!("s{slot:02}"));
            None
        }
        Op::Event(c) => {
            let ty = pick(RESOURCE_TYPES, c.ty);
            let id = pick(DATA_IDS, c.id);
            let previous = c.previous.as_ref().map(|b| body(ty, id, b));
            let current = c.current.as_ref().map(|b| body(ty, id, b));
            let change = ResourceChange {
                resource_type: ty,
                id,
                interaction: c.interaction,
                previous: previous.as_ref(),
                current: current.as_ref(),
            };
            let counts = |sub: &str| sub.get(1..).and_then(|n| n.parse::<usize>().ok()).is_none_or(|n| !off[n]);
            let indexed = match_change(&change, registry, BASE, None, counts);
            let exhaustive = match_change_exhaustive(&change, registry, BASE, None, counts);
            Some((indexed, exhaustive))
        }
    }
}

/// `(topic id, subscription id)` of each match, in report order.
fn keyed(registry: &Registry, report: &MatchReport) -> Vec<(String, String)> {
    report
        .matches
        .iter()
        .map(|m| {
            let sub = registry.subscription(&m.subscription_id).unwrap();
            assert_eq!(m.topic_url, sub.topic_url);
            (sub.topic_id.clone(), m.subscription_id.clone())
        })
        .collect()
}

proptest! {
    /// The index answers exactly what evaluating every subscription answers, in topic-then-
    /// subscription order, whatever subscriptions come and go. 256 cases by default;
    /// `PROPTEST_CASES` raises it.
    #[test]
    fn indexed_matching_equals_evaluating_every_subscription(
        ops in prop::collection::vec(op_strategy(), 1..40),
        off in prop::collection::vec(prop::bool::weighted(0.15), 12),
        base_known in any::<bool>(),
    ) {
        let mut registry = registry(base_known);
        for op in &ops {
            let Some((indexed, exhaustive)) = apply(&mut registry, op, &off) else { continue };
            let got = keyed(&registry, &indexed);
            let mut want = keyed(&registry, &exhaustive);
            want.sort();
            prop_assert_eq!(got, want, "{:?}", op);
            prop_assert_eq!(indexed.diagnostics.is_empty(), exhaustive.diagnostics.is_empty());
        }
    }
}

fn task(owner: &str, status: &str) -> Value {
    json!({ "resourceType": "Task", "id": "t1", "status": status, "owner": { "reference": owner } })
}

fn matched(registry: &Registry, resource: &Value) -> Vec<String> {
    let change =
        ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Update, previous: None, current: Some(resource) };
    match_change(&change, registry, BASE, None, |_| true).matches.into_iter().map(|m| m.subscription_id).collect()
}

#[test]
fn owner_filters_are_looked_up_not_evaluated_one_by_one() {
    let mut registry = registry(true);
    for i in 0..50 {
        subscribe(&mut registry, &format!("s{i:02}"), "a-task", &[(None, "owner", &format!("Organization/o{i}"))]);
    }
    subscribe(&mut registry, "z-all", "a-task", &[]);
    let index = registry.index().for_type("a-task", "Task").unwrap();
    assert_eq!(index.keyed().len(), 1);
    assert_eq!(index.keyed()[0].get("Organization/o7").len(), 1);
    assert_eq!(index.everything().len(), 1);
    assert!(index.scanned().is_empty());
    assert_eq!(matched(&registry, &task("Organization/o7", "requested")), ["s07", "z-all"]);
    assert_eq!(matched(&registry, &task("http://herald.test/fhir/Organization/o8", "requested")), ["s08", "z-all"]);
    assert_eq!(matched(&registry, &task("Organization/none", "requested")), ["z-all"]);
}

#[test]
fn each_subscription_is_anchored_on_its_most_selective_filter() {
    let mut registry = registry(true);
    for i in 0..10 {
        let owner = format!("Organization/o{i}");
        subscribe(&mut registry, &format!("s{i}"), "a-task", &[(None, "status", "requested"), (None, "owner", &owner)]);
    }
    let index = registry.index().for_type("a-task", "Task").unwrap();
    let on = |code: &str| {
        index
            .keyed()
            .iter()
            .filter(|k| k.param().code == code)
            .map(|k| k.get(if code == "status" { "requested" } else { "Organization/o3" }).len())
            .sum::<usize>()
    };
    // The first one found both keys empty and took its first filter; the rest chose owner.
    assert_eq!(on("status"), 1);
    assert_eq!(on("owner"), 1);
    assert_eq!(matched(&registry, &task("Organization/o3", "requested")), ["s3"]);
    assert!(matched(&registry, &task("Organization/o3", "accepted")).is_empty());
    assert_eq!(matched(&registry, &task("Organization/o0", "requested")), ["s0"]);
    assert!(matched(&registry, &task("Organization/o0", "accepted")).is_empty());
}

#[test]
fn replacing_and_removing_subscriptions_leaves_nothing_behind() {
    let mut registry = registry(true);
    subscribe(&mut registry, "s1", "a-task", &[(None, "owner", "Organization/o1")]);
    subscribe(&mut registry, "s1", "a-task", &[(None, "owner", "Organization/o2")]);
    assert!(matched(&registry, &task("Organization/o1", "requested")).is_empty());
    assert_eq!(matched(&registry, &task("Organization/o2", "requested")), ["s1"]);
    subscribe(&mut registry, "s1", "c-orders", &[(Some("Task"), "owner", "Organization/o2")]);
    assert!(registry.index().for_type("a-task", "Task").unwrap().keyed().is_empty());
    registry.remove_subscription("s1");
    let orders = registry.index().for_type("c-orders", "Task").unwrap();
    assert!(orders.keyed().is_empty() && orders.everything().is_empty() && orders.scanned().is_empty());
}

#[test]
fn a_filter_on_one_type_lets_every_change_of_the_others_through() {
    let mut registry = registry(true);
    subscribe(&mut registry, "s1", "c-orders", &[(Some("Task"), "owner", "Organization/o1")]);
    let index = registry.index();
    assert_eq!(index.for_type("c-orders", "Task").unwrap().keyed().len(), 1);
    assert_eq!(index.for_type("c-orders", "Observation").unwrap().everything().len(), 1);
    let obs = json!({ "resourceType": "Observation", "id": "r1", "status": "final" });
    let change =
        ResourceChange { resource_type: "Observation", id: "r1", interaction: Interaction::Create, previous: None, current: Some(&obs) };
    assert_eq!(match_change(&change, &registry, BASE, None, |_| true).matches.len(), 1);
}

#[test]
fn absolute_reference_filters_are_scanned_when_the_base_is_unknown() {
    let mut registry = registry(false);
    subscribe(&mut registry, "s1", "a-task", &[(None, "owner", "http://herald.test/fhir/Organization/o1")]);
    subscribe(&mut registry, "s2", "a-task", &[(None, "owner", "Organization/o1")]);
    let index = registry.index().for_type("a-task", "Task").unwrap();
    assert_eq!(index.scanned().len(), 1);
    assert_eq!(matched(&registry, &task("Organization/o1", "requested")), ["s1", "s2"]);
}

#[test]
fn matching_with_another_base_than_the_index_falls_back_to_scanning() {
    let mut registry = registry(true);
    subscribe(&mut registry, "s1", "a-task", &[(None, "owner", "http://herald.test/fhir/Organization/o1")]);
    let resource = task("http://elsewhere.test/fhir/Organization/o1", "requested");
    let change =
        ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Create, previous: None, current: Some(&resource) };
    // Under its own base, elsewhere.test's Organization/o1 is local; the subscription's value is not.
    assert!(match_change(&change, &registry, "http://elsewhere.test/fhir", None, |_| true).matches.is_empty());
    let local = task("Organization/o1", "requested");
    let change =
        ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Create, previous: None, current: Some(&local) };
    assert!(match_change(&change, &registry, "http://elsewhere.test/fhir", None, |_| true).matches.is_empty());
    assert_eq!(match_change(&change, &registry, BASE, None, |_| true).matches.len(), 1);
}

#[test]
fn an_unevaluable_filter_matches_nothing_and_is_reported_once_per_change() {
    let mut registry = registry(true);
    for i in 0..5 {
        subscribe(&mut registry, &format!("s{i}"), "a-task", &[(None, "owner", "Organization/o1")]);
    }
    subscribe(&mut registry, "z-all", "a-task", &[]);
    // A "Task" change whose body says otherwise cannot be searched as a Task.
    let wrong = json!({ "resourceType": "Observation", "id": "t1", "status": "requested" });
    let change =
        ResourceChange { resource_type: "Task", id: "t1", interaction: Interaction::Create, previous: None, current: Some(&wrong) };
    let report = match_change(&change, &registry, BASE, None, |_| true);
    assert_eq!(report.matches.iter().map(|m| m.subscription_id.as_str()).collect::<Vec<_>>(), ["z-all"]);
    assert_eq!(report.diagnostics.len(), 1, "{:?}", report.diagnostics);
    assert!(report.diagnostics[0].contains("owner"), "{:?}", report.diagnostics);
}
