//! Topics with `fhirPathCriteria`, end to end: the criteria decide which changes notify,
//! with `%previous` empty on create and `%current` empty on delete, `resolve()` reads the
//! store and the transaction being committed, bad expressions are refused with their
//! position, and a runaway expression is stopped without stopping the server.
//!
//! Negative cases never sleep: each is followed by a change that does fire, and since a
//! subscription's events arrive in commit order, an unwanted event would arrive first.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Received, Receiver, TestServer};

const T: Duration = Duration::from_secs(10);

/// Posts a topic on `resource` for `interactions` with `criteria`; returns its url.
async fn criteria_topic(server: &TestServer, name: &str, resource: &str, interactions: &[&str], criteria: &str) -> String {
    let url = format!("http://example.org/topics/{name}");
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "resourceTrigger": [{ "resource": resource, "supportedInteraction": interactions, "fhirPathCriteria": criteria }],
        "notificationShape": [{ "resource": resource }]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    url
}

async fn subscribed(server: &TestServer, topic: &str, rx: &Receiver) {
    let id = server.subscribe(topic, &rx.url, json!({ "content": "full-resource" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
}

/// The focus resource of an event notification.
fn focus(n: &Received) -> &Value {
    &n.body["entry"][1]["resource"]
}

async fn task(server: &TestServer, id: &str, status: &str, extra: Value) -> StatusCode {
    let mut body = json!({ "resourceType": "Task", "id": id, "status": status, "intent": "order" });
    if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    let (s, b) = server.put(&format!("Task/{id}"), &body).await;
    assert!(s.is_success(), "{b}");
    s
}

#[tokio::test]
async fn completion_topic_fires_on_the_transition_to_completed_and_only_then() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let topic = criteria_topic(
        &server,
        "task-completed",
        "Task",
        &["create", "update"],
        "(%previous.id.empty() or %previous.status != 'completed') and %current.status = 'completed'",
    )
    .await;
    subscribed(&server, &topic, &rx).await;

    // Created not completed, then moved along but not to completed: no event.
    assert_eq!(task(&server, "a", "requested", json!({})).await, StatusCode::CREATED);
    task(&server, "a", "in-progress", json!({})).await;
    // The transition: one event, numbered 1.
    task(&server, "a", "completed", json!({})).await;
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![1]);
    assert_eq!((focus(&n)["id"].as_str(), focus(&n)["status"].as_str()), (Some("a"), Some("completed")));

    // Completed again (another change to a completed Task): no event. Then a Task created
    // already completed has no previous version and fires: it must be event 2.
    task(&server, "a", "completed", json!({ "description": "signed off" })).await;
    assert_eq!(task(&server, "b", "completed", json!({})).await, StatusCode::CREATED);
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![2], "the repeat update of a completed Task must not notify");
    assert_eq!(focus(&n)["id"], "b");

    // Deleting is not a listed interaction: the criteria are not even evaluated.
    let (s, _) = server.delete("Task/b").await;
    assert!(s.is_success());
    task(&server, "c", "in-progress", json!({})).await;
    task(&server, "c", "completed", json!({})).await;
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![3]);
    assert_eq!(focus(&n)["id"], "c");
}

#[tokio::test]
async fn delete_topic_sees_the_previous_version_and_an_empty_current() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let topic = criteria_topic(&server, "task-withdrawn", "Task", &["delete"], "%current.empty() and %previous.status = 'cancelled'").await;
    let id = server.subscribe(&topic, &rx.url, json!({ "content": "id-only" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;

    task(&server, "keep", "requested", json!({})).await;
    task(&server, "gone", "cancelled", json!({})).await;
    // Deleting a Task that was not cancelled: no event; deleting the cancelled one: event 1.
    assert!(server.delete("Task/keep").await.0.is_success());
    assert!(server.delete("Task/gone").await.0.is_success());
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![1]);
    let focus_ref = n.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap();
    assert!(focus_ref.ends_with("Task/gone"), "{focus_ref}");
}

#[tokio::test]
async fn resolve_follows_task_focus_into_the_store_and_into_the_same_transaction() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let topic = criteria_topic(&server, "urgent-focus", "Task", &["create"], "%current.focus.resolve().priority = 'urgent'").await;
    subscribed(&server, &topic, &rx).await;

    let (s, _) = server.put("ServiceRequest/routine", &json!({ "resourceType": "ServiceRequest", "id": "routine", "status": "active", "intent": "order", "priority": "routine", "subject": { "reference": "Patient/p" } })).await;
    assert!(s.is_success());
    let (s, _) = server.put("ServiceRequest/urgent", &json!({ "resourceType": "ServiceRequest", "id": "urgent", "status": "active", "intent": "order", "priority": "urgent", "subject": { "reference": "Patient/p" } })).await;
    assert!(s.is_success());
    task(&server, "t-routine", "requested", json!({ "focus": { "reference": "ServiceRequest/routine" } })).await;
    task(&server, "t-missing", "requested", json!({ "focus": { "reference": "ServiceRequest/nowhere" } })).await;
    task(&server, "t-urgent", "requested", json!({ "focus": { "reference": "ServiceRequest/urgent" } })).await;
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![1]);
    assert_eq!(focus(&n)["id"], "t-urgent");

    // A transaction whose Task (listed first) points at a ServiceRequest created later in the
    // same Bundle: resolve() must see the transaction, not the store before it.
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:7f0c2f6e-3a4e-4f55-9a59-1f2d3c4b5a61",
              "resource": { "resourceType": "Task", "status": "requested", "intent": "order",
                            "focus": { "reference": "urn:uuid:0b9d7a52-6c1e-4e2f-8d3a-5e6f7a8b9c0d" } },
              "request": { "method": "POST", "url": "Task" } },
            { "fullUrl": "urn:uuid:0b9d7a52-6c1e-4e2f-8d3a-5e6f7a8b9c0d",
              "resource": { "resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "urgent",
                            "subject": { "reference": "Patient/p" } },
              "request": { "method": "POST", "url": "ServiceRequest" } }
        ]
    });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![2]);
    let sr_ref = focus(&n)["focus"]["reference"].as_str().unwrap();
    assert!(sr_ref.starts_with("ServiceRequest/"), "urn:uuid rewritten: {sr_ref}");
}

#[tokio::test]
async fn invalid_criteria_are_refused_with_the_position_of_the_error() {
    let server = TestServer::start().await;
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/bad", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "fhirPathCriteria": "%current.status = 'completed' and (" }]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert!(s.is_client_error(), "{s}: {b}");
    assert_eq!(b["resourceType"], "OperationOutcome");
    let issue = &b["issue"][0];
    assert_eq!(issue["code"], "invalid");
    assert_eq!(issue["expression"][0], "SubscriptionTopic.resourceTrigger[0].fhirPathCriteria");
    let text = issue["diagnostics"].as_str().unwrap();
    assert!(text.contains("syntax error at character 36"), "{text}");
    // Nothing was stored.
    let (s, b) = server.get("SubscriptionTopic?url=http://example.org/topics/bad").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 0, "{b}");
}

#[tokio::test]
async fn runaway_criteria_are_stopped_counted_and_do_not_block_other_topics() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let ten = "(1|2|3|4|5|6|7|8|9|10)";
    let runaway = format!("{ten}.select({ten}.select({ten}.select({ten}.select({ten}.select({ten}.select($this)))))).count() > 0");
    let slow = criteria_topic(&server, "runaway", "Task", &["create"], &runaway).await;
    let fine = criteria_topic(&server, "fine", "Task", &["create"], "%current.status = 'requested'").await;
    subscribed(&server, &slow, &rx).await;
    subscribed(&server, &fine, &rx).await;
    let before = herald::matching::criteria_errors_total();

    // The write is accepted; the runaway topic's evaluation fails within its budget; the
    // other topic still notifies.
    assert_eq!(task(&server, "x", "requested", json!({})).await, StatusCode::CREATED);
    let n = rx.next_of("event-notification", T).await;
    assert!(n.status()["topic"].as_str().unwrap().ends_with("/fine"), "{}", n.body);
    assert!(herald::matching::criteria_errors_total() > before, "the failed evaluation is counted");
    // The server still serves.
    let (s, _) = server.get("Task/x").await;
    assert_eq!(s, StatusCode::OK);
}

/// Posts a topic on Task with `queryCriteria`; returns its url.
async fn query_topic(server: &TestServer, name: &str, criteria: Value) -> String {
    let url = format!("http://example.org/topics/{name}");
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update", "delete"], "queryCriteria": criteria }]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    url
}

#[tokio::test]
async fn query_criteria_with_require_both_fire_on_the_transition_only() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let topic = query_topic(
        &server,
        "task-started",
        json!({ "previous": "status:not=in-progress", "current": "status=in-progress", "requireBoth": true,
                "resultForCreate": "test-passes", "resultForDelete": "test-fails" }),
    )
    .await;
    subscribed(&server, &topic, &rx).await;

    task(&server, "q", "requested", json!({})).await; // create: previous passes, current fails
    task(&server, "q", "in-progress", json!({})).await; // the transition: event 1
    let n = rx.next_of("event-notification", T).await;
    assert_eq!((n.event_numbers(), focus(&n)["status"].as_str()), (vec![1], Some("in-progress")));
    task(&server, "q", "in-progress", json!({ "description": "edited" })).await; // previous fails
    assert!(server.delete("Task/q").await.0.is_success()); // delete: resultForDelete test-fails
    task(&server, "r", "in-progress", json!({})).await; // create already in progress: event 2
    let n = rx.next_of("event-notification", T).await;
    assert_eq!((n.event_numbers(), focus(&n)["id"].as_str()), (vec![2], Some("r")));
}

#[tokio::test]
async fn query_criteria_without_require_both_fire_on_either_test() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    // Only `current`, and deletes pass: the Da Vinci PCT shape.
    let topic = query_topic(
        &server,
        "task-done-or-gone",
        json!({ "current": "status=completed", "resultForDelete": "test-passes", "requireBoth": false }),
    )
    .await;
    let id = server.subscribe(&topic, &rx.url, json!({ "content": "id-only" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;

    task(&server, "s", "requested", json!({})).await; // current fails
    task(&server, "s", "completed", json!({})).await; // event 1
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![1]);
    task(&server, "u", "requested", json!({})).await; // current fails
    assert!(server.delete("Task/u").await.0.is_success()); // delete passes: event 2
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![2]);
    let focus_ref = n.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap();
    assert!(focus_ref.ends_with("Task/u"), "{focus_ref}");
}

/// notificationShape directives with `:iterate` and reverse includes, at `id-only`: the
/// context is listed and has entries with `fullUrl`, `request` and `response`, no resource.
/// Malformed directives refuse the topic with the element at fault.
#[tokio::test]
async fn notification_shape_includes_iterate_and_revincludes_at_id_only() {
    let server = TestServer::start().await;
    let url = "http://example.org/topics/shaped";
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create"] }],
        "notificationShape": [{ "resource": "Task",
            "include": ["Task:focus&iterate=ServiceRequest.subject", "Task:nosuch"],
            "revInclude": ["Provenance:target"] }]
    });
    assert_eq!(server.post("SubscriptionTopic", &topic).await.0, StatusCode::CREATED);
    let bad = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/bad", "status": "active",
        "resourceTrigger": [{ "resource": "Task" }], "notificationShape": [{ "resource": "Task", "include": ["Task"] }] });
    let (s, oo) = server.post("SubscriptionTopic", &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "SubscriptionTopic.notificationShape[0].include[0]", "{oo}");

    let rx = Receiver::start().await;
    let id = server.subscribe(url, &rx.url, json!({})).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;

    let put = |path: &'static str, body: Value| {
        let server = &server;
        async move { assert!(server.put(path, &body).await.0.is_success()) }
    };
    put("Patient/pat", json!({ "resourceType": "Patient", "id": "pat" })).await;
    put(
        "ServiceRequest/sr",
        json!({ "resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
                                     "subject": { "reference": "Patient/pat" } }),
    )
    .await;
    // A Provenance pointing at the Task, created with it in one transaction.
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": { "resourceType": "Task", "id": "t", "status": "requested", "intent": "order", "focus": { "reference": "ServiceRequest/sr" } },
          "request": { "method": "PUT", "url": "Task/t" } },
        { "resource": { "resourceType": "Provenance", "id": "pv", "target": [{ "reference": "Task/t" }], "recorded": "2026-11-27T10:00:00Z",
                        "agent": [{ "who": { "reference": "Organization/placer" } }] },
          "request": { "method": "PUT", "url": "Provenance/pv" } } ] });
    let (s, b) = server.post("", &tx).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let n = rx.next_of("event-notification", T).await;
    let context: Vec<&str> = n.status()["notificationEvent"][0]["additionalContext"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reference"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ["ServiceRequest/sr", "Provenance/pv", "Patient/pat"].iter().map(|p| server.url(p)).collect();
    assert_eq!(context, want);
    let entries = n.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{}", n.body);
    for e in &entries[2..] {
        assert!(e.get("resource").is_none(), "id-only carries no resources: {e}");
        assert_eq!(e["request"]["method"], "GET");
        assert_eq!(e["response"]["status"], "200");
    }
    assert_eq!(entries[3]["response"]["etag"], "W/\"1\"", "the Provenance at the version this commit gave it");
}

/// `$emit`: a business event fires the topics whose `eventTrigger` lists its code for the
/// focus type, filtered on the focus like any change; context and shape travel with it.
#[tokio::test]
async fn emitted_events_fire_event_trigger_topics_with_filters_and_context() {
    let server = TestServer::start().await;
    let url = "http://example.org/topics/admission";
    let a01 = json!({ "system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": "A01" });
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "eventTrigger": [{ "event": { "coding": [a01] }, "resource": "http://hl7.org/fhir/StructureDefinition/Encounter" }],
        "canFilterBy": [{ "resource": "Encounter", "filterParameter": "patient" }],
        "notificationShape": [{ "resource": "Encounter", "include": ["Encounter:patient"] }]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let rx = Receiver::start().await;
    let id = server
        .subscribe(
            url,
            &rx.url,
            json!({ "content": "full-resource", "filterBy": [{ "filterParameter": "patient", "value": "Patient/p1" }] }),
        )
        .await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    for p in ["p1", "p2"] {
        assert!(server.put(&format!("Patient/{p}"), &json!({ "resourceType": "Patient", "id": p })).await.0.is_success());
    }
    assert!(server.put("Practitioner/dr", &json!({ "resourceType": "Practitioner", "id": "dr" })).await.0.is_success());

    let emit = |event: Value, focus: Value, context: &[&str]| {
        let mut parameter = vec![json!({ "name": "event", "valueCoding": event }), focus];
        parameter.extend(context.iter().map(|r| json!({ "name": "context", "valueReference": { "reference": r } })));
        json!({ "resourceType": "Parameters", "parameter": parameter })
    };
    let encounter =
        |p: &str| json!({ "resourceType": "Encounter", "status": "in-progress", "subject": { "reference": format!("Patient/{p}") } });
    let notified = |b: &Value| b["parameter"].as_array().unwrap().iter().find(|p| p["name"] == "notified").unwrap()["valueInteger"].clone();

    // Another patient's admission, and another event code: nobody is told.
    let (s, b) =
        server.post("SubscriptionTopic/$emit", &emit(a01.clone(), json!({ "name": "focus", "resource": encounter("p2") }), &[])).await;
    assert_eq!((s, notified(&b)), (StatusCode::OK, json!(0)), "{b}");
    let a03 = json!({ "system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": "A03" });
    let (s, b) = server.post("SubscriptionTopic/$emit", &emit(a03, json!({ "name": "focus", "resource": encounter("p1") }), &[])).await;
    assert_eq!((s, notified(&b)), (StatusCode::OK, json!(0)), "{b}");
    // p1's admission, the Encounter sent with the event: stored, then notified with its patient.
    let (s, b) =
        server.post("SubscriptionTopic/$emit", &emit(a01.clone(), json!({ "name": "focus", "resource": encounter("p1") }), &[])).await;
    assert_eq!((s, notified(&b)), (StatusCode::OK, json!(1)), "{b}");
    assert_eq!(b["parameter"][2], json!({ "name": "topic", "valueCanonical": url }));
    let focus_ref = b["parameter"][0]["valueReference"]["reference"].as_str().unwrap().to_string();
    let enc_id = focus_ref.split('/').nth(1).unwrap().to_string();
    // The same Encounter by reference, with a practitioner as context.
    let by_ref = json!({ "name": "focus", "valueReference": { "reference": format!("Encounter/{enc_id}") } });
    let (s, b) = server.post("SubscriptionTopic/$emit", &emit(a01.clone(), by_ref, &["Practitioner/dr"])).await;
    assert_eq!((s, notified(&b)), (StatusCode::OK, json!(1)), "{b}");

    let got = rx.events(2, T).await;
    assert_eq!(got.iter().flat_map(|n| n.event_numbers()).collect::<Vec<_>>(), [1, 2]);
    let first = &got[0];
    assert_eq!(first.body["entry"][1]["resource"]["id"], enc_id.as_str());
    assert_eq!(first.body["entry"][1]["request"]["method"], "GET");
    assert_eq!(first.status()["notificationEvent"][0]["additionalContext"], json!([{ "reference": server.url("Patient/p1") }]));
    let second = got[1].status()["notificationEvent"][0]["additionalContext"].clone();
    assert_eq!(second, json!([{ "reference": server.url("Practitioner/dr") }, { "reference": server.url("Patient/p1") }]));

    // Bad requests change nothing.
    let (s, oo) = server.post("SubscriptionTopic/$emit", &json!({ "resourceType": "Parameters", "parameter": [] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    let missing = json!({ "name": "focus", "valueReference": { "reference": "Encounter/nope" } });
    let (s, oo) = server.post("SubscriptionTopic/$emit", &emit(a01.clone(), missing, &[])).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{oo}");
    let (s, oo) = server
        .post("SubscriptionTopic/$emit", &emit(a01, json!({ "name": "focus", "resource": encounter("p1") }), &["Patient/nope"]))
        .await;
    assert!(s.is_client_error(), "{s} {oo}");
    let (_, found) = server.get("Encounter?_summary=count").await;
    assert_eq!(found["total"], 3, "the refused event stored no Encounter: {found}");
}

#[tokio::test]
async fn topics_naming_subscription_are_refused_on_create_and_update_in_every_auth_mode() {
    let on_subscription = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/subs", "status": "active",
        "resourceTrigger": [{ "resource": "http://hl7.org/fhir/StructureDefinition/Subscription" }],
        "canFilterBy": [{ "resource": "Subscription", "filterParameter": "url" }],
        "notificationShape": [{ "resource": "Subscription" }] });
    let refused = |s: StatusCode, oo: &Value| {
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
        let issues = oo["issue"].as_array().unwrap();
        let at: Vec<&str> = issues.iter().filter_map(|i| i["expression"][0].as_str()).collect();
        for want in [
            "SubscriptionTopic.resourceTrigger[0].resource",
            "SubscriptionTopic.canFilterBy[0].resource",
            "SubscriptionTopic.notificationShape[0].resource",
        ] {
            assert!(at.contains(&want), "{want} not in {oo}");
        }
        assert!(issues.iter().all(|i| i["code"] == "business-rule"), "{oo}");
    };

    // Anonymous (no [auth]): create, then update of a valid topic.
    let server = TestServer::start().await;
    let (s, oo) = server.post("SubscriptionTopic", &on_subscription).await;
    refused(s, &oo);
    let (s, topic) = server
        .put(
            "SubscriptionTopic/t1",
            &json!({ "resourceType": "SubscriptionTopic", "id": "t1",
        "url": "http://example.org/topics/tasks", "status": "active", "resourceTrigger": [{ "resource": "Task" }] }),
        )
        .await;
    assert!(s.is_success(), "{topic}");
    let mut changed = on_subscription.clone();
    changed["id"] = json!("t1");
    let (s, oo) = server.put("SubscriptionTopic/t1", &changed).await;
    refused(s, &oo);
    let (_, stored) = server.get("SubscriptionTopic/t1").await;
    assert_eq!(stored["resourceTrigger"][0]["resource"], "Task", "the refused update changed nothing");

    // Authenticated, with every scope.
    let server = crate::security::secured().await;
    let admin = crate::security::token("admin", "system/*.cruds", None, 600);
    let (s, oo) = crate::security::call(&server, reqwest::Method::POST, "SubscriptionTopic", Some(&admin), Some(&on_subscription)).await;
    refused(s, &oo);
}
