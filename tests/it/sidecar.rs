//! Side-car ingest: another server's `_history` Bundle and its full-resource notifications
//! become changes, idempotent on type/id/versionId.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{versions, Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn history_bundle_is_applied_oldest_first_and_idempotently() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "full-resource" })).await;
    server.wait_status(&id, "active", T).await;
    // As `GET [upstream]/Task/_history` returns it: newest first.
    let history = json!({
        "resourceType": "Bundle", "type": "history",
        "entry": [
            { "fullUrl": "http://upstream.example/fhir/Task/t1", "resource": { "resourceType": "Task", "id": "t1", "meta": { "versionId": "2", "lastUpdated": "2026-01-02T00:00:00Z" }, "status": "accepted", "intent": "order" }, "request": { "method": "PUT", "url": "Task/t1" }, "response": { "status": "200" } },
            { "fullUrl": "http://upstream.example/fhir/Task/t1", "resource": { "resourceType": "Task", "id": "t1", "meta": { "versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z" }, "status": "requested", "intent": "order" }, "request": { "method": "POST", "url": "Task" }, "response": { "status": "201" } }
        ]
    });
    let (s, oo) = server.post("$ingest", &history).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    let got = rx.events(2, T).await;
    assert_eq!(got[0].body["entry"][1]["resource"]["status"], "requested");
    assert_eq!(got[0].body["entry"][1]["request"]["method"], "POST");
    assert_eq!(got[0].body["entry"][1]["fullUrl"], "http://upstream.example/fhir/Task/t1");
    assert_eq!(got[1].body["entry"][1]["resource"]["status"], "accepted");
    assert_eq!(got[1].body["entry"][1]["request"]["method"], "PUT");
    let (_, t1) = server.get("Task/t1").await;
    assert_eq!(t1["meta"]["versionId"], "2", "upstream meta kept");
    // Replaying the same feed changes nothing.
    let (s, oo) = server.post("$ingest", &history).await;
    assert_eq!(s, StatusCode::OK);
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().starts_with("applied 0"), "{oo}");
    assert_eq!(server.status_of(&id).await["eventsSinceSubscriptionStart"], "2");
}

#[tokio::test]
async fn upstream_notification_bundles_are_applied() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    let status = json!({ "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification", "subscription": { "reference": "http://upstream.example/fhir/Subscription/s" } });
    // A handshake carries no change and is simply accepted.
    let mut hs = status.clone();
    hs["type"] = json!("handshake");
    let (s, _) = server.post("$ingest", &json!({ "resourceType": "Bundle", "type": "subscription-notification", "entry": [{ "fullUrl": "urn:uuid:1", "resource": hs }] })).await;
    assert_eq!(s, StatusCode::OK);
    let note = json!({ "resourceType": "Bundle", "type": "subscription-notification", "entry": [
        { "fullUrl": "urn:uuid:2", "resource": status },
        { "fullUrl": "http://upstream.example/fhir/Task/t9", "resource": { "resourceType": "Task", "id": "t9", "meta": { "versionId": "5" }, "status": "completed", "intent": "order" }, "request": { "method": "PUT", "url": "Task/t9" }, "response": { "status": "200" } }
    ]});
    let (s, oo) = server.post("$ingest", &note).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    let got = rx.next_of("event-notification", T).await;
    assert_eq!(got.body["entry"][1]["request"]["method"], "POST", "first sight of t9 is a create");
    // Same version again (at-least-once upstream): skipped.
    server.post("$ingest", &note).await;
    // A deletion announced by id-only entry.
    let del = json!({ "resourceType": "Bundle", "type": "subscription-notification", "entry": [
        { "fullUrl": "urn:uuid:3", "resource": status },
        { "fullUrl": "http://upstream.example/fhir/Task/t9", "request": { "method": "DELETE", "url": "Task/t9" }, "response": { "status": "204", "etag": "W/\"6\"" } }
    ]});
    server.post("$ingest", &del).await;
    let got = rx.next_of("event-notification", T).await;
    assert_eq!(got.event_numbers(), vec![2]);
    assert_eq!(got.body["entry"][1]["request"]["method"], "DELETE");
    let (s, _) = server.get("Task/t9").await;
    assert_eq!(s, StatusCode::GONE);
    let (s, _) = server.post("$ingest", &json!({ "resourceType": "Bundle", "type": "collection" })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// One upstream event-notification for `Task/<id>` at version `v`, in the shape of FHIR
/// `upstream` (R4: `Parameters` status in a `history` Bundle; R4B: `SubscriptionStatus` in a
/// `history` Bundle; R5: a `subscription-notification` Bundle).
fn upstream_notification(upstream: &str, id: &str, v: u32) -> serde_json::Value {
    let sub = "http://upstream.example/fhir/Subscription/s";
    let status_request = json!({ "method": "GET", "url": format!("{sub}/$status") });
    let task = json!({ "fullUrl": format!("http://upstream.example/fhir/Task/{id}"),
        "resource": { "resourceType": "Task", "id": id, "meta": { "versionId": v.to_string() }, "status": "requested", "intent": "order" },
        "request": { "method": "PUT", "url": format!("Task/{id}") }, "response": { "status": "200" } });
    match upstream {
        versions::R4 => json!({ "resourceType": "Bundle", "type": "history", "entry": [
            { "fullUrl": "urn:uuid:9a1c", "resource": { "resourceType": "Parameters", "parameter": [
                { "name": "subscription", "valueReference": { "reference": sub } },
                { "name": "status", "valueCode": "active" },
                { "name": "type", "valueCode": "event-notification" },
                { "name": "events-since-subscription-start", "valueString": v.to_string() },
                { "name": "notification-event", "part": [
                    { "name": "event-number", "valueString": v.to_string() },
                    { "name": "focus", "valueReference": { "reference": format!("http://upstream.example/fhir/Task/{id}") } } ] } ] },
              "request": status_request, "response": { "status": "200" } },
            task ] }),
        versions::R4B => json!({ "resourceType": "Bundle", "type": "history", "entry": [
            { "fullUrl": "urn:uuid:9a1d", "resource": { "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
                "eventsSinceSubscriptionStart": v.to_string(), "subscription": { "reference": sub },
                "notificationEvent": [{ "eventNumber": v.to_string(), "focus": { "reference": format!("http://upstream.example/fhir/Task/{id}") } }] },
              "request": status_request, "response": { "status": "200" } },
            task ] }),
        _ => json!({ "resourceType": "Bundle", "type": "subscription-notification", "entry": [
            { "fullUrl": "urn:uuid:9a1e", "resource": { "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
                "eventsSinceSubscriptionStart": v.to_string(), "subscription": { "reference": sub },
                "notificationEvent": [{ "eventNumber": v.to_string(), "focus": { "reference": format!("http://upstream.example/fhir/Task/{id}") } }] } },
            task ] }),
    }
}

/// The side-car takes R4, R4B and R5 upstream notifications whatever version it serves.
async fn upstream_notifications_of_every_version(instance: &str) {
    let server = TestServer::start_with(|c| c.fhir.version = instance.into()).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    for (n, upstream) in [versions::R4, versions::R4B, versions::R5].into_iter().enumerate() {
        let task = format!("up-{n}");
        let (s, oo) = server.post("$ingest", &upstream_notification(upstream, &task, 1)).await;
        assert_eq!(s, StatusCode::OK, "{upstream} into {instance}: {oo}");
        let got = rx.next_of("event-notification", T).await;
        assert_eq!(got.focus_ids(), vec![task.clone()], "{upstream} into {instance}");
        let (s, stored) = server.get(&format!("Task/{task}")).await;
        assert_eq!((s, &stored["meta"]["versionId"]), (StatusCode::OK, &json!("1")), "{upstream} into {instance}");
    }
}

#[tokio::test]
async fn upstream_notifications_of_every_version_reach_an_r4_instance() {
    upstream_notifications_of_every_version(versions::R4).await;
}

#[tokio::test]
async fn upstream_notifications_of_every_version_reach_an_r4b_instance() {
    upstream_notifications_of_every_version(versions::R4B).await;
}

#[tokio::test]
async fn upstream_notifications_of_every_version_reach_an_r5_instance() {
    upstream_notifications_of_every_version(versions::R5).await;
}
