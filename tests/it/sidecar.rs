//! Side-car ingest: another server's `_history` Bundle and its full-resource notifications
//! become changes, idempotent on type/id/versionId.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Receiver, TestServer};

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
