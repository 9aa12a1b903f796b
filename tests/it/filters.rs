//! `filterBy` in every form, end to end: modifiers, comparators, several values, string and
//! date parameters, and the refusals a client gets when a filter cannot be honoured.
//!
//! Each subscription has its own receiver; every scenario ends with a Task that all filters
//! accept, so an event that should not have been sent would arrive before it (per-subscription
//! order), and no test sleeps to prove a negative.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};

const T: Duration = Duration::from_secs(10);
const TOPIC: &str = "http://example.org/topics/task-filters";

async fn topic(server: &TestServer) {
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }],
        "canFilterBy": [
            { "resource": "Task", "filterParameter": "status", "modifier": ["not"] },
            { "resource": "Task", "filterParameter": "authored-on", "comparator": ["eq", "gt", "lt", "ge", "le"] },
            { "resource": "Task", "filterParameter": "priority" },
            { "resource": "Task", "filterParameter": "code", "modifier": ["text", "in"] },
            { "resource": "Task", "filterParameter": "owner", "modifier": ["not", "identifier"] }
        ]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

fn filter(parameter: &str, comparator: Option<&str>, modifier: Option<&str>, value: &str) -> Value {
    let mut f = json!({ "resourceType": "Task", "filterParameter": parameter, "value": value });
    if let Some(c) = comparator {
        f["comparator"] = json!(c);
    }
    if let Some(m) = modifier {
        f["modifier"] = json!(m);
    }
    f
}

async fn subscribe(server: &TestServer, filters: Vec<Value>) -> Receiver {
    let rx = Receiver::start().await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "filterBy": filters, "content": "id-only" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    rx
}

async fn put_task(server: &TestServer, id: &str, body: Value) {
    let mut task = json!({ "resourceType": "Task", "id": id, "intent": "order", "status": "requested", "authoredOn": "2026-07-01" });
    if let (Some(t), Some(b)) = (task.as_object_mut(), body.as_object()) {
        t.extend(b.clone());
    }
    let (s, b) = server.put(&format!("Task/{id}"), &task).await;
    assert!(s.is_success(), "{b}");
}

/// Ids of the Tasks notified to `rx`, in order, up to and including `last`.
async fn notified_until(rx: &Receiver, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let n = rx.next_of("event-notification", T).await;
        let focus = n.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let done = focus == last;
        ids.push(focus);
        if done {
            return ids;
        }
    }
}

#[tokio::test]
async fn modifiers_comparators_and_several_values_select_the_right_changes() {
    let server = TestServer::start().await;
    topic(&server).await;
    let not_cancelled = subscribe(&server, vec![filter("status", None, Some("not"), "cancelled")]).await;
    let late = subscribe(&server, vec![filter("authored-on", Some("gt"), None, "2026-06-30")]).await;
    let urgent = subscribe(&server, vec![filter("priority", None, None, "urgent,stat")]).await;
    let lipids = subscribe(&server, vec![filter("code", None, Some("text"), "lipid")]).await;
    let not_lab =
        subscribe(&server, vec![filter("owner", None, Some("not"), "Organization/lab"), filter("priority", None, None, "urgent,stat")])
            .await;

    put_task(&server, "cancelled-early", json!({ "status": "cancelled", "authoredOn": "2026-01-15", "priority": "routine" })).await;
    put_task(
        &server,
        "urgent-lab",
        json!({ "priority": "urgent", "owner": { "reference": "Organization/lab" }, "authoredOn": "2026-06-30" }),
    )
    .await;
    put_task(&server, "lipid-stat", json!({ "priority": "stat", "code": { "text": "Lipid panel" }, "authoredOn": "2026-06-30T23:00:00Z" }))
        .await;
    // Accepted by every subscription: ends each sequence.
    put_task(
        &server,
        "last",
        json!({ "priority": "urgent", "code": { "text": "lipid panel, repeat" }, "owner": { "reference": "Organization/other" }, "authoredOn": "2026-08-01" }),
    )
    .await;

    assert_eq!(notified_until(&not_cancelled, "last").await, ["urgent-lab", "lipid-stat", "last"]);
    // 2026-06-30 is not after 2026-06-30; 23:00 on the 30th is not after the whole day either.
    assert_eq!(notified_until(&late, "last").await, ["last"]);
    assert_eq!(notified_until(&urgent, "last").await, ["urgent-lab", "lipid-stat", "last"]);
    assert_eq!(notified_until(&lipids, "last").await, ["lipid-stat", "last"]);
    assert_eq!(notified_until(&not_lab, "last").await, ["lipid-stat", "last"]);
}

#[tokio::test]
async fn filters_herald_cannot_honour_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    topic(&server).await;
    let cases = [
        (filter("status", Some("gt"), None, "requested"), "comparator", "business-rule"),
        (filter("status", None, Some("exact"), "requested"), "modifier", "business-rule"),
        (filter("authored-on", Some("gt"), None, "yesterday"), "value", "value"),
        (filter("code", None, Some("in"), "http://example.org/ValueSet/x"), "modifier", "not-supported"),
        (filter("intent", None, None, "order"), "filterParameter", "business-rule"),
    ];
    for (f, field, code) in cases {
        let sub = json!({
            "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "filterBy": [f],
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
            "endpoint": "http://127.0.0.1:9/hook", "content": "id-only"
        });
        let (s, oo) = server.post("Subscription", &sub).await;
        assert!(s.is_client_error(), "{f}: {s} {oo}");
        let issue = &oo["issue"][0];
        assert_eq!(issue["expression"][0], format!("Subscription.filterBy[0].{field}"), "{f}: {oo}");
        assert_eq!(issue["code"], code, "{f}: {oo}");
    }
}

const LAB_SECTION: &str = "http://example.org/fhir/StructureDefinition/lab-section";

fn lab_task(id: &str, section: &str) -> Value {
    json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order",
            "extension": [{ "url": LAB_SECTION, "valueCode": section }] })
}

#[tokio::test]
async fn a_custom_search_parameter_filters_subscriptions_and_searches() {
    let server = TestServer::start().await;
    let param_url = "http://example.org/SearchParameter/task-lab-section";
    let (s, b) = server
        .post(
            "SearchParameter",
            &json!({ "resourceType": "SearchParameter", "url": param_url, "name": "LabSection", "status": "active",
                     "description": "The lab section a Task is routed to", "code": "lab-section", "base": ["Task"], "type": "token",
                     "expression": format!("Task.extension('{LAB_SECTION}').value") }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/lab-work", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "lab-section", "filterDefinition": param_url }]
    });
    assert_eq!(server.post("SubscriptionTopic", &topic).await.0, StatusCode::CREATED);
    let rx = Receiver::start().await;
    let id = server
        .subscribe(
            "http://example.org/topics/lab-work",
            &rx.url,
            json!({ "filterBy": [{ "resourceType": "Task", "filterParameter": "lab-section", "value": "chemistry" }] }),
        )
        .await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;

    for (id, section) in [("h1", "haematology"), ("c1", "chemistry"), ("h2", "haematology"), ("c2", "chemistry")] {
        let (s, b) = server.put(&format!("Task/{id}"), &lab_task(id, section)).await;
        assert!(s.is_success(), "{b}");
    }
    assert_eq!(notified_until(&rx, "c2").await, ["c1", "c2"]);

    // The same parameter in REST search.
    let (s, bundle) = server.get("Task?lab-section=chemistry&_sort=_id").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let ids: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
}

#[tokio::test]
async fn bad_search_parameters_are_refused_with_their_location() {
    let server = TestServer::start().await;
    let base = json!({ "resourceType": "SearchParameter", "name": "X", "status": "active", "description": "x", "base": ["Task"], "type": "token" });
    let with = |extra: Value| {
        let mut p = base.clone();
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    };
    let cases = [
        (with(json!({ "url": "http://example.org/sp/a", "code": "a", "expression": "Task.extension(" })), "SearchParameter.expression"),
        (
            with(json!({ "url": "http://hl7.org/fhir/SearchParameter/Task-status", "code": "status2", "expression": "Task.status" })),
            "SearchParameter.url",
        ),
        (with(json!({ "url": "http://example.org/sp/b", "code": "status", "expression": "Task.status" })), "SearchParameter.code"),
        (with(json!({ "url": "http://example.org/sp/c", "code": "c" })), "SearchParameter.expression"),
    ];
    for (resource, location) in cases {
        let (s, oo) = server.post("SearchParameter", &resource).await;
        assert!(s.is_client_error(), "{resource}: {s} {oo}");
        assert_eq!(oo["issue"][0]["expression"][0], location, "{oo}");
    }
}
