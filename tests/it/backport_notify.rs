//! Notifications and Subscription operations of R4 and R4B instances, end to end: a real
//! server started with `fhir.version` 4.0.1 or 4.3.0, real rest-hook receivers and websocket
//! clients. Each behaviour runs once per version (`r4`, `r4b`), asserting what the Inferno
//! server suite asserts (../shared/fhir/backport/INFERNO-SERVER-CHECKS.md): block N (a
//! `history` Bundle, request/response on every entry, the status first and tagged with its
//! type and subscription), block H (Content-Type starting with the payload MIME type, every
//! channel header as written), the content-level checks 3.1.2.03-3.3.2.03, handshake and
//! heartbeat (4.01, 4.02) and `$status` (5.01).
//!
//! Subscriptions and checks come from `support::backport`; topics are Herald's built-ins,
//! present in every version.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::backport::{
    check_block_h, check_block_n, check_status_r4, resolves, server, subscribe, Sub, Version, AUTHORIZATION, TOPIC,
};
use crate::support::status::{self, Listed};
use crate::support::ws::{Binding, WsClient};
use crate::support::{Receiver, TestServer};

const T: Duration = Duration::from_secs(10);

/// Runs `$body` as one test per backport version (`<name>::r4`, `<name>::r4b`): the FHIR
/// version is chosen once per process, and nextest runs each test in its own.
macro_rules! per_version {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn r4() {
                super::$body(super::Version::R4).await
            }

            #[tokio::test]
            async fn r4b() {
                super::$body(super::Version::R4B).await
            }
        }
    };
}

/// A Task whose focus is a ServiceRequest (the topic's shape includes `Task:focus`); returns
/// the Task's and the ServiceRequest's ids.
async fn task_with_focus(server: &TestServer) -> (String, String) {
    let (s, patient) = server.post("Patient", &json!({ "resourceType": "Patient", "active": true })).await;
    assert_eq!(s, StatusCode::CREATED, "{patient}");
    let subject = format!("Patient/{}", patient["id"].as_str().unwrap());
    let (s, order) = server
        .post(
            "ServiceRequest",
            &json!({ "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": { "reference": subject } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let task = json!({
        "resourceType": "Task", "status": "requested", "intent": "order",
        "focus": { "reference": format!("ServiceRequest/{order_id}") },
        "for": { "reference": subject },
        "owner": { "reference": "Organization/lab" }
    });
    let (s, task) = server.post("Task", &task).await;
    assert_eq!(s, StatusCode::CREATED, "{task}");
    (task["id"].as_str().unwrap().to_string(), order_id)
}

async fn handshake_then_events_at_every_content_level(version: Version) {
    let server = server(version).await;
    let receivers = [Receiver::start().await, Receiver::start().await, Receiver::start().await];
    let levels = ["empty", "id-only", "full-resource"];
    // One subscription asks for plain application/json (Inferno keeps it, with a warning).
    let payloads = ["application/fhir+json", "application/json", "application/fhir+json"];
    let mut ids = Vec::new();
    for ((rx, content), payload) in receivers.iter().zip(levels).zip(payloads) {
        let sub = Sub { payload, ..Sub::rest_hook(&rx.url, content) };
        let id = subscribe(&server, &sub).await;
        // 4.01: a handshake, `requested`, for every rest-hook subscription.
        let hs = rx.next_within(T).await;
        check_block_n(version, &hs.body, "handshake", Some("requested"), &id);
        assert_eq!(hs.body["entry"].as_array().unwrap().len(), 1);
        check_block_h(&hs, payload, &[AUTHORIZATION]);
        server.wait_status(&id, "active", T).await;
        ids.push(id);
    }
    let (task, order) = task_with_focus(&server).await;
    for (((rx, content), payload), id) in receivers.iter().zip(levels).zip(payloads).zip(&ids) {
        let n = rx.next_of("event-notification", T).await;
        // 1.2.02: block N with status active, block H.
        check_block_n(version, &n.body, "event-notification", Some("active"), id);
        check_block_h(&n, payload, &[AUTHORIZATION]);
        let st = n.status();
        let events = status::events(st);
        assert_eq!(events.iter().map(|e| e.number).collect::<Vec<_>>(), vec![1], "{content}");
        assert_eq!(status::events_since_start(st), "1");
        let entries = n.body["entry"].as_array().unwrap();
        match content {
            // 3.1.2.03
            "empty" => {
                assert!(status::topic(st).is_none(), "a topic at empty");
                assert_eq!(entries.len(), 1, "{}", n.body);
                assert_eq!(events[0], Listed { number: 1, focus: None, context: vec![], withheld: false });
            }
            // 3.2.2.03
            "id-only" => {
                assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
                assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{task}")), "{events:?}");
                assert!(events[0].context.iter().any(|c| c.ends_with(&format!("ServiceRequest/{order}"))), "{events:?}");
                for e in &entries[1..] {
                    assert!(e.get("resource").is_none() && e["fullUrl"].is_string(), "{e}");
                }
                assert_eq!(entries[1]["request"], json!({ "method": "POST", "url": "Task" }));
            }
            // 3.3.2.03
            _ => {
                assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
                let focus = events[0].focus.as_deref().unwrap();
                assert!(resolves(&n.body, focus), "focus {focus} resolves to no entry: {}", n.body);
                assert!(!events[0].context.is_empty());
                for c in &events[0].context {
                    assert!(resolves(&n.body, c), "additional-context {c} resolves to no entry: {}", n.body);
                }
                assert_eq!(entries[1]["resource"]["resourceType"], "Task");
                assert_eq!(entries[1]["resource"]["id"], json!(task));
            }
        }
    }
}
per_version!(handshake_then_events_at_every_content_level_pass_inferno_checks, handshake_then_events_at_every_content_level);

async fn heartbeats_only_for_subscriptions_that_asked(version: Version) {
    let server = server(version).await;
    let (beating, quiet) = (Receiver::start().await, Receiver::start().await);
    let a = subscribe(&server, &Sub { heartbeat: Some(1), ..Sub::rest_hook(&beating.url, "id-only") }).await;
    let b = subscribe(&server, &Sub::rest_hook(&quiet.url, "id-only")).await;
    server.wait_status(&a, "active", T).await;
    server.wait_status(&b, "active", T).await;
    // 4.02: block N with type heartbeat, only for the subscription that asked.
    let hb = beating.next_of("heartbeat", T).await;
    check_block_n(version, &hb.body, "heartbeat", Some("active"), &a);
    assert_eq!(hb.body["entry"].as_array().unwrap().len(), 1);
    beating.next_of("heartbeat", T).await;
    let kinds: Vec<String> = quiet.drain().await.iter().map(|r| r.kind().to_string()).collect();
    assert_eq!(kinds, vec!["handshake"], "no heartbeats without a heartbeat period");
}
per_version!(heartbeats_go_only_to_subscriptions_that_asked, heartbeats_only_for_subscriptions_that_asked);

async fn status_answers_a_searchset_of_version_statuses(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "empty")).await;
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    rx.next_of("event-notification", T).await;
    // 5.01: instance level.
    let (s, bundle) = server.get(&format!("Subscription/{id}/$status")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    let entry = &bundle["entry"][0];
    // bdl-3, bdl-4: no request or response in a searchset.
    assert!(entry.get("request").is_none() && entry.get("response").is_none(), "{entry}");
    assert_eq!(entry["search"]["mode"], "match");
    let st = &entry["resource"];
    assert_eq!(st["resourceType"], version.status_type());
    if version == Version::R4 {
        check_status_r4(st);
    }
    assert!(status::subscription_reference(st).ends_with(&format!("/{id}")));
    assert_eq!((status::kind(st), status::status_code(st)), ("query-status", "active"));
    assert_eq!(status::events_since_start(st), "1");
    // The topic is shown to the subscription's owner even at `empty`.
    assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
    // Type level, filtered by id and status.
    let other = subscribe(&server, &Sub::rest_hook("http://127.0.0.1:9/nobody", "id-only")).await;
    server.wait_status(&other, "error", T).await;
    let (_, all) = server.get("Subscription/$status").await;
    assert_eq!(all["type"], "searchset");
    assert_eq!(all["entry"].as_array().unwrap().len(), 2);
    let (_, errors) = server.get("Subscription/$status?status=error").await;
    let listed: Vec<String> = errors["entry"].as_array().unwrap().iter().map(|e| status::subscription_id(&e["resource"])).collect();
    assert_eq!(listed, vec![other.clone()]);
    let failed = &errors["entry"][0]["resource"];
    assert_eq!(status::error(failed).map(|(code, _)| code).as_deref(), Some("no-response"));
    let (_, mine) = server.get(&format!("Subscription/$status?id={id}")).await;
    assert_eq!(status::subscription_id(&mine["entry"][0]["resource"]), id);
}
per_version!(status_answers_a_searchset_of_version_statuses_without_request_or_response, status_answers_a_searchset_of_version_statuses);

async fn events_answers_a_history_query_event_bundle(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "id-only")).await;
    server.wait_status(&id, "active", T).await;
    let first = server.create_task("requested", "Organization/lab").await;
    server.create_task("requested", "Organization/lab").await;
    rx.events(2, T).await;
    let (s, bundle) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=1&content=full-resource")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    check_block_n(version, &bundle, "query-event", Some("active"), &id);
    let events = status::events(&bundle["entry"][0]["resource"]);
    assert_eq!(events.len(), 1);
    assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{first}")));
    assert_eq!(bundle["entry"][1]["resource"]["id"], json!(first));
}
per_version!(events_answers_a_history_bundle_of_query_events, events_answers_a_history_query_event_bundle);

async fn refused_handshakes_are_retried(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    // Inferno's listener answers 500 until its session waits (INFERNO-SERVER-CHECKS §0 Timing).
    rx.refuse_next(2);
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "id-only")).await;
    for _ in 0..3 {
        let hs = rx.next_within(T).await;
        check_block_n(version, &hs.body, "handshake", Some("requested"), &id);
    }
    server.wait_status(&id, "active", T).await;
}
per_version!(a_handshake_refused_twice_is_retried_until_accepted, refused_handshakes_are_retried);

async fn websocket_frames_carry_the_version_bundle(version: Version) {
    let server = server(version).await;
    let id = subscribe(&server, &Sub { channel: "websocket", endpoint: None, headers: &[], ..Sub::rest_hook("", "id-only") }).await;
    let (s, params) = server.get(&format!("Subscription/{id}/$get-ws-binding-token")).await;
    assert_eq!(s, StatusCode::OK, "{params}");
    // backport-subscription-get-ws-binding-token: token, expiration, subscription, websocket-url.
    assert_eq!(params["resourceType"], "Parameters");
    let binding = Binding::from_parameters(&params);
    assert_eq!(binding.subscriptions, vec![id.clone()]);
    assert!(binding.url.starts_with("ws://"));
    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind(&binding.token).await;
    let hs = ws.next_of("handshake", T).await;
    check_block_n(version, &hs, "handshake", None, &id);
    let task = server.create_task("requested", "Organization/lab").await;
    let n = ws.next_of("event-notification", T).await;
    check_block_n(version, &n, "event-notification", Some("active"), &id);
    let events = status::events(&n["entry"][0]["resource"]);
    assert_eq!(events[0].number, 1);
    assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{task}")));
    ws.close().await;
}
per_version!(websocket_frames_are_the_version_bundles, websocket_frames_carry_the_version_bundle);
