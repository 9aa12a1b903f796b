//! rest-hook delivery end to end: handshake, content shapes, headers, numbering, filters,
//! ordering, retries, isolation, heartbeats, end, dead letters and re-activation.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{versions, Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn handshake_makes_subscription_active() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    let hs = rx.next_within(T).await;
    assert_eq!(hs.body["type"], "subscription-notification");
    assert_eq!(hs.kind(), "handshake");
    assert_eq!(hs.status()["status"], "requested");
    assert_eq!(hs.status()["eventsSinceSubscriptionStart"], "0");
    assert_eq!(hs.subscription_id(), id);
    assert_eq!(hs.body["entry"].as_array().unwrap().len(), 1);
    assert!(hs.headers["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
    server.wait_status(&id, "active", T).await;
    let (_, read) = server.get(&format!("Subscription/{id}")).await;
    assert_eq!(read["status"], "active");
}

#[tokio::test]
async fn failed_handshake_puts_subscription_in_error() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    rx.set_status(500);
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    let st = server.wait_status(&id, "error", T).await;
    assert_eq!(st["error"][0]["coding"][0]["code"], "error-response");
    assert_eq!(st["error"][0]["coding"][0]["system"], "http://terminology.hl7.org/CodeSystem/subscription-error");
    // The refused handshake was retried on `delivery.handshake_retry_schedule` (three retries
    // in TestServer's configuration, as by default), all before the subscription went to error.
    let retries: Vec<String> = rx.drain().await.iter().map(|r| r.kind().to_string()).collect();
    assert_eq!(retries, vec!["handshake"; 3], "three retries of the refused handshake, nothing else");
    // Not retried further, not re-activated: events still count while in error.
    server.create_task("requested", "Organization/lab").await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let st = server.status_of(&id).await;
        if st["eventsSinceSubscriptionStart"] == "1" {
            assert_eq!(st["status"], "error");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "event not counted in error: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rx.drain().await.is_empty(), "nothing is sent to an error subscription");
}

#[tokio::test]
async fn a_handshake_refused_twice_then_accepted_leaves_the_subscription_active() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    // A receiver that is not ready yet (Inferno's listener before its test session waits).
    rx.refuse_next(2);
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    let attempts = [rx.next_within(T).await, rx.next_within(T).await, rx.next_within(T).await];
    for a in &attempts {
        assert_eq!((a.kind(), a.subscription_id()), ("handshake", id.clone()));
        assert_eq!(a.status()["status"], "requested");
    }
    // TestServer's schedule: 50 ms, then 100 ms.
    assert!(attempts[1].at.duration_since(attempts[0].at) >= Duration::from_millis(45), "retried too early");
    assert!(attempts[2].at.duration_since(attempts[1].at) >= Duration::from_millis(95), "retried too early");
    let st = server.wait_status(&id, "active", T).await;
    assert!(st.get("error").is_none(), "{st}");
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), vec![1]);
    assert!(rx.drain().await.iter().all(|r| r.kind() != "handshake"), "no handshake after the accepted one");
}

#[tokio::test]
async fn the_handshake_waits_for_the_created_answer_and_handshake_delay() {
    let server = TestServer::start_with(|c| c.delivery.handshake_delay = "400ms".into()).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let started = std::time::Instant::now();
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    let answered = std::time::Instant::now();
    let hs = rx.next_within(T).await;
    assert_eq!(hs.kind(), "handshake");
    assert!(hs.at > answered, "the handshake arrived before the 201");
    assert!(hs.at.duration_since(started) >= Duration::from_millis(400), "sent before handshake_delay");
    server.wait_status(&id, "active", T).await;
}

#[tokio::test]
async fn unreachable_endpoint_fails_handshake_with_no_response() {
    let server = TestServer::start().await;
    // Bind then drop: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &format!("http://127.0.0.1:{port}/hook"), json!({})).await;
    let st = server.wait_status(&id, "error", T).await;
    assert_eq!(st["error"][0]["coding"][0]["code"], "no-response");
}

#[tokio::test]
async fn id_only_bundle_has_focus_and_request_without_resource() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "id-only" })).await;
    server.wait_status(&id, "active", T).await;
    let task = server.create_task("requested", "Organization/lab").await;
    let n = rx.next_of("event-notification", T).await;
    let status = n.status();
    assert_eq!(status["resourceType"], "SubscriptionStatus");
    assert_eq!(status["status"], "active");
    assert_eq!(status["eventsSinceSubscriptionStart"], "1");
    assert_eq!(status["topic"], TOPIC);
    let ev = &status["notificationEvent"][0];
    assert_eq!(ev["eventNumber"], "1");
    assert!(ev["timestamp"].is_string());
    let focus = format!("{}/Task/{task}", server.base);
    assert_eq!(ev["focus"]["reference"], focus.as_str());
    assert!(n.body["entry"][0]["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    let entries = n.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["fullUrl"], focus.as_str());
    assert!(entries[1].get("resource").is_none());
    assert_eq!(entries[1]["request"]["method"], "POST");
    assert_eq!(entries[1]["request"]["url"], "Task");
    assert_eq!(entries[1]["response"]["status"], "201");
}

#[tokio::test]
async fn empty_bundle_has_only_the_status_without_focus_or_topic() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "empty" })).await;
    let hs = rx.next_within(T).await;
    assert!(hs.status().get("topic").is_none(), "no topic at empty, handshake included");
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.body["entry"].as_array().unwrap().len(), 1);
    let ev = &n.status()["notificationEvent"][0];
    assert_eq!(ev["eventNumber"], "1");
    assert!(ev.get("focus").is_none());
    assert!(ev.get("additionalContext").is_none());
    assert!(n.status().get("topic").is_none());
}

#[tokio::test]
async fn full_resource_bundle_carries_the_event_version() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "full-resource" })).await;
    server.wait_status(&id, "active", T).await;
    let task = server.create_task("requested", "Organization/lab").await;
    let (s, _) =
        server.put(&format!("Task/{task}"), &json!({ "resourceType": "Task", "id": task, "status": "accepted", "intent": "order" })).await;
    assert_eq!(s, StatusCode::OK);
    let got = rx.events(2, T).await;
    let first = &got[0].body["entry"][1];
    assert_eq!(first["resource"]["status"], "requested", "event 1 renders version 1, not today's");
    assert_eq!(first["resource"]["meta"]["versionId"], "1");
    assert_eq!(first["response"]["etag"], "W/\"1\"");
    let second = &got[1].body["entry"][1];
    assert_eq!(second["resource"]["status"], "accepted");
    assert_eq!(second["request"]["method"], "PUT");
    // Every focus resolves to an entry (Inferno's full-resource check).
    for r in &got {
        let focus = r.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap().to_string();
        assert!(r.body["entry"].as_array().unwrap().iter().any(|e| e["fullUrl"] == focus.as_str() && e.get("resource").is_some()));
    }
    // A delete has no resource to carry: request/response only.
    server.delete(&format!("Task/{task}")).await;
    let del = rx.next_of("event-notification", T).await;
    assert_eq!(del.body["entry"][1]["request"]["method"], "DELETE");
    assert!(del.body["entry"][1].get("resource").is_none());
}

#[tokio::test]
async fn parameters_are_sent_as_headers_and_subscription_identifier_is_echoed() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server
        .subscribe(
            TOPIC,
            &rx.url,
            json!({
                "parameter": [{ "name": "Authorization", "value": "Bearer s3cr3t-token" }, { "name": "X-Tenant", "value": "north" }],
                "identifier": [{ "system": "urn:example:subs", "value": "placer-1" }]
            }),
        )
        .await;
    let hs = rx.next_within(T).await;
    assert_eq!(hs.headers["authorization"], "Bearer s3cr3t-token");
    assert_eq!(hs.headers["x-tenant"], "north");
    assert_eq!(hs.status()["subscription"]["identifier"]["value"], "placer-1");
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.headers["authorization"], "Bearer s3cr3t-token");
}

#[tokio::test]
async fn filters_select_only_matching_resources() {
    let server = TestServer::start().await;
    let lab = Receiver::start().await;
    let other = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let a = server.subscribe(TOPIC, &lab.url, json!({ "filterBy": [{ "filterParameter": "owner", "value": "Organization/lab-1" }] })).await;
    let b = server
        .subscribe(
            TOPIC,
            &other.url,
            json!({ "filterBy": [
            { "filterParameter": "owner", "value": "Organization/lab-2" },
            { "filterParameter": "status", "value": "accepted" }
        ] }),
        )
        .await;
    server.wait_status(&a, "active", T).await;
    server.wait_status(&b, "active", T).await;
    let t1 = server.create_task("requested", "Organization/lab-1").await;
    server.create_task("requested", "Organization/lab-2").await; // status does not match b
    let t3 = server.create_task("accepted", "Organization/lab-2").await;
    let got = lab.next_of("event-notification", T).await;
    assert!(got.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap().ends_with(&format!("Task/{t1}")));
    let got = other.next_of("event-notification", T).await;
    assert!(got.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap().ends_with(&format!("Task/{t3}")));
    assert_eq!(got.event_numbers(), vec![1]);
    assert_eq!(server.status_of(&a).await["eventsSinceSubscriptionStart"], "1");
    assert_eq!(server.status_of(&b).await["eventsSinceSubscriptionStart"], "1");
}

#[tokio::test]
async fn unknown_or_undeclared_filters_are_refused() {
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    let sub = |filters: serde_json::Value| {
        json!({
            "resourceType": "Subscription", "status": "requested", "topic": TOPIC,
            "channelType": { "code": "rest-hook" }, "endpoint": "http://127.0.0.1:9/hook",
            "filterBy": filters
        })
    };
    let (s, b) = server.post("Subscription", &sub(json!([{ "filterParameter": "focus", "value": "ServiceRequest/1" }]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["issue"][0]["expression"][0], "Subscription.filterBy[0].filterParameter");
    let (s, b) = server.post("Subscription", &sub(json!([{ "filterParameter": "status", "modifier": "not", "value": "done" }]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

#[tokio::test]
async fn receipt_order_equals_event_order_under_concurrent_writers() {
    receipt_order_under_concurrent_writers(versions::R5).await;
}

#[tokio::test]
async fn receipt_order_equals_event_order_under_concurrent_writers_r4() {
    receipt_order_under_concurrent_writers(versions::R4).await;
}

#[tokio::test]
async fn receipt_order_equals_event_order_under_concurrent_writers_r4b() {
    receipt_order_under_concurrent_writers(versions::R4B).await;
}

async fn receipt_order_under_concurrent_writers(version: &str) {
    let server = TestServer::start_with(|c| c.fhir.version = version.into()).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    let base = server.base.clone();
    let mut writers = Vec::new();
    for w in 0..8 {
        let base = base.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..25 {
                let r = client
                    .post(format!("{base}/Task"))
                    .json(&json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": format!("w{w}-{i}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let got = rx.events(200, Duration::from_secs(30)).await;
    let numbers: Vec<u64> = got.iter().flat_map(|r| r.event_numbers()).collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
}

#[tokio::test]
async fn retries_after_500_keep_number_and_order() {
    retries_keep_number_and_order(versions::R5).await;
}

#[tokio::test]
async fn retries_after_500_keep_number_and_order_r4() {
    retries_keep_number_and_order(versions::R4).await;
}

#[tokio::test]
async fn retries_after_500_keep_number_and_order_r4b() {
    retries_keep_number_and_order(versions::R4B).await;
}

async fn retries_keep_number_and_order(version: &str) {
    let server = TestServer::start_with(|c| c.fhir.version = version.into()).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    rx.next_of("handshake", T).await;
    rx.set_status(503);
    server.create_task("requested", "Organization/lab").await;
    server.create_task("requested", "Organization/lab").await;
    // Two refused attempts at event 1, then the endpoint recovers.
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), vec![1]);
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), vec![1]);
    rx.set_status(200);
    let mut seen = Vec::new();
    while seen.last() != Some(&2) {
        seen.extend(rx.next_of("event-notification", T).await.event_numbers());
    }
    // Event 2 only ever follows an accepted event 1.
    let first_two = seen.iter().position(|&n| n == 2).unwrap();
    assert!(seen[..first_two].iter().all(|&n| n == 1), "{seen:?}");
    assert_eq!(versions::field(&server.status_of(&id).await, "status").as_deref(), Some("active"));
}

#[tokio::test]
async fn failing_endpoint_does_not_delay_a_healthy_one() {
    let server = TestServer::start_with(|c| {
        c.delivery.default_timeout = "5s".into();
    })
    .await;
    // The slow endpoint accepts the connection and never answers.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}/hook", slow.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = slow.accept().await {
            conns.push(c);
        }
    });
    let healthy = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let stuck = server.subscribe(TOPIC, &slow_url, json!({ "timeout": 5 })).await;
    let ok = server.subscribe(TOPIC, &healthy.url, json!({})).await;
    server.wait_status(&ok, "active", T).await;
    let started = std::time::Instant::now();
    for _ in 0..5 {
        server.create_task("requested", "Organization/lab").await;
    }
    let got = healthy.events(5, T).await;
    let elapsed = got.last().unwrap().at.duration_since(started);
    assert!(elapsed < Duration::from_secs(5), "healthy lane waited on the stuck one: {elapsed:?}");
    assert_eq!(server.status_of(&stuck).await["status"], "requested", "stuck handshake still in flight");
}

#[tokio::test]
async fn heartbeats_only_when_requested() {
    let server = TestServer::start().await;
    let beating = Receiver::start().await;
    let quiet = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let a = server.subscribe(TOPIC, &beating.url, json!({ "heartbeatPeriod": 1 })).await;
    let b = server.subscribe(TOPIC, &quiet.url, json!({})).await;
    server.wait_status(&a, "active", T).await;
    server.wait_status(&b, "active", T).await;
    let h1 = beating.next_of("heartbeat", T).await;
    let h2 = beating.next_of("heartbeat", T).await;
    assert_eq!(h1.status()["status"], "active");
    assert_eq!(h1.status()["eventsSinceSubscriptionStart"], "0");
    assert!(h2.at.duration_since(h1.at) >= Duration::from_millis(900));
    let quiet_got: Vec<String> = quiet.drain().await.iter().map(|r| r.kind().to_string()).collect();
    assert_eq!(quiet_got, vec!["handshake".to_string()], "no heartbeats without heartbeatPeriod");
}

#[tokio::test]
async fn end_turns_subscription_off_and_stops_counting() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let end = herald::fhir::instant::format_millis(herald::fhir::instant::now_millis() + 1500);
    let id = server.subscribe(TOPIC, &rx.url, json!({ "end": end })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "off", T).await;
    server.create_task("requested", "Organization/lab").await;
    let st = server.status_of(&id).await;
    assert_eq!(st["eventsSinceSubscriptionStart"], "0");
    // A Subscription whose end has already passed is refused.
    let (s, b) = server
        .post("Subscription", &json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "channelType": { "code": "rest-hook" }, "endpoint": rx.url, "end": "2001-01-01T00:00:00Z" }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

#[tokio::test]
async fn exhausted_retries_dead_letter_then_reset_delivers_the_rest() {
    let server = TestServer::start_with(|c| c.delivery.max_attempts = 2).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    rx.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    let st = server.wait_status(&id, "error", T).await;
    assert_eq!(st["error"][0]["coding"][0]["code"], "error-response");
    // Still counting in error.
    server.create_task("requested", "Organization/lab").await;
    let deadline = std::time::Instant::now() + T;
    while server.status_of(&id).await["eventsSinceSubscriptionStart"] != "2" {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rx.set_status(200);
    rx.drain().await;
    // The client asks for a new handshake: it comes with the current count, then event 2.
    let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
    sub["status"] = json!("requested");
    let (s, b) = server.put(&format!("Subscription/{id}"), &sub).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let hs = rx.next_of("handshake", T).await;
    assert_eq!(hs.status()["eventsSinceSubscriptionStart"], "2");
    let n = rx.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), vec![2], "event 1 is dead-lettered, event 2 follows");
    let st = server.wait_status(&id, "active", T).await;
    assert!(st.get("error").is_none());
}

#[tokio::test]
async fn loopback_endpoints_are_refused_without_operator_allowlist() {
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks.clear()).await;
    server.task_topic(TOPIC).await;
    for endpoint in ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/hook", "http://169.254.169.254/latest"] {
        let (s, b) = server
            .post("Subscription", &json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "channelType": { "code": "rest-hook" }, "endpoint": endpoint }))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{endpoint}: {b}");
        assert_eq!(b["issue"][0]["expression"][0], "Subscription.endpoint");
    }
}

#[tokio::test]
async fn max_count_batches_pending_events_in_order() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    rx.set_status(500);
    let id = server.subscribe(TOPIC, &rx.url, json!({ "maxCount": 3 })).await;
    server.wait_status(&id, "error", T).await;
    for _ in 0..7 {
        server.create_task("requested", "Organization/lab").await;
    }
    rx.set_status(200);
    let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
    sub["status"] = json!("requested");
    server.put(&format!("Subscription/{id}"), &sub).await;
    let got = rx.events(7, T).await;
    let sizes: Vec<usize> = got.iter().map(|r| r.event_numbers().len()).collect();
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    let numbers: Vec<u64> = got.iter().flat_map(|r| r.event_numbers()).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
    let last = got.last().unwrap();
    assert_eq!(last.status()["eventsSinceSubscriptionStart"], "7");
}

/// Polls until `cond` holds, failing after `T`.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + T;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue #18: a lane whose subscription was deleted while an attempt was in flight must not
/// touch the subscription that reuses the id: its late acknowledgement does not move the new
/// incarnation's cursor, and it sends the new incarnation nothing.
#[tokio::test]
async fn a_lane_of_a_deleted_subscription_cannot_touch_the_id_reused() {
    let server = TestServer::start().await;
    let (old_rx, new_rx) = (Receiver::start().await, Receiver::start().await);
    server.task_topic(TOPIC).await;
    let sub = |endpoint: &str| {
        json!({ "resourceType": "Subscription", "id": "reused", "status": "requested", "topic": TOPIC, "content": "id-only",
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
            "endpoint": endpoint })
    };
    assert!(server.put("Subscription/reused", &sub(&old_rx.url)).await.0.is_success());
    assert_eq!(old_rx.next_within(T).await.kind(), "handshake");
    server.wait_status("reused", "active", T).await;
    for _ in 0..3 {
        server.create_task("requested", "Organization/lab").await;
    }
    let first: Vec<u64> = old_rx.events(3, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(first, [1, 2, 3]);
    // Event 4 goes out to a receiver that holds it for a while.
    old_rx.set_delay(Duration::from_millis(1500));
    server.create_task("requested", "Organization/lab").await;
    wait_for("event 4 in flight", || old_rx.in_flight() == 1).await;
    // Meanwhile the subscription is deleted and its id created again for another endpoint,
    // which is slow too, so that the old attempt ends while the new lane is still early on.
    assert!(server.delete("Subscription/reused").await.0.is_success());
    new_rx.set_delay(Duration::from_millis(400));
    assert!(server.put("Subscription/reused", &sub(&new_rx.url)).await.0.is_success());
    for _ in 0..5 {
        server.create_task("requested", "Organization/lab").await;
    }
    // The old attempt completes (and is acknowledged by the old receiver) first. Two more
    // writes publish the subscription's state to its lane after that late acknowledgement
    // reached the committer (a lane learns the state only when it is published).
    let late = old_rx.next_of("event-notification", T).await;
    assert_eq!(late.event_numbers(), [4]);
    for _ in 0..2 {
        server.create_task("requested", "Organization/lab").await;
    }
    // The new incarnation gets its handshake and all seven events, 1 to 7, in order, none
    // skipped by the old lane's late acknowledgement of "through 4".
    assert_eq!(new_rx.next_within(T).await.kind(), "handshake");
    let numbers: Vec<u64> = new_rx.events(7, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
    let st = server.wait_status("reused", "active", T).await;
    assert_eq!(st["eventsSinceSubscriptionStart"], "7");
    // And nothing of the new incarnation ever went to the old endpoint.
    old_rx.set_delay(Duration::ZERO);
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(new_rx.next_of("event-notification", T).await.event_numbers(), [8]);
    let stray = old_rx.drain().await;
    assert!(stray.is_empty(), "the old endpoint got {} more notifications", stray.len());
}

/// `subscriptions.default_max_count`: the operator's `maxCount` for Subscriptions that give
/// none. With the default (1) a backlog goes out one event per notification; with 3, in
/// batches of up to 3, in order, numbers unchanged.
#[tokio::test]
async fn the_operator_default_max_count_batches_subscriptions_that_give_none() {
    for (default, most) in [(1u64, 1usize), (3, 3)] {
        let server = TestServer::start_with(|cfg| cfg.subscriptions.default_max_count = default).await;
        let rx = Receiver::start().await;
        server.task_topic(TOPIC).await;
        rx.set_status(500);
        let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
        server.wait_status(&id, "error", T).await;
        for _ in 0..7 {
            server.create_task("requested", "Organization/lab").await;
        }
        rx.set_status(200);
        let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
        assert!(sub.get("maxCount").is_none(), "the stored Subscription stays as written: {sub}");
        sub["status"] = json!("requested");
        server.put(&format!("Subscription/{id}"), &sub).await;
        let got = rx.events(7, T).await;
        let sizes: Vec<usize> = got.iter().map(|r| r.event_numbers().len()).collect();
        assert!(sizes.iter().all(|&n| n <= most), "default {default}: {sizes:?}");
        assert_eq!(sizes.iter().any(|&n| n > 1), most > 1, "default {default}: {sizes:?}");
        let numbers: Vec<u64> = got.iter().flat_map(|r| r.event_numbers()).collect();
        assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
    }
}

/// `herald_version_reads_total{from}`: versions lanes read to send events, by source.
async fn version_reads(server: &TestServer) -> (u64, u64) {
    let text = server.client.get(server.base.replace("/fhir", "/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |from: &str| {
        let prefix = format!("herald_version_reads_total{{from=\"{from}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    (count("store"), count("cache"))
}

/// One write, `fanout` full-resource subscribers on one delivery thread: each gets the same
/// resource; returns the version reads the write cost (store, cache).
async fn fan_out_one_write(version_cache_mib: usize, fanout: usize) -> (u64, u64) {
    let server = TestServer::start_with(|cfg| {
        cfg.delivery.threads = 1;
        cfg.delivery.version_cache_mib = version_cache_mib;
    })
    .await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let mut ids = Vec::new();
    for _ in 0..fanout {
        ids.push(server.subscribe(TOPIC, &rx.url, json!({ "content": "full-resource" })).await);
    }
    for id in &ids {
        server.wait_status(id, "active", T).await;
    }
    let before = version_reads(&server).await;
    let task = server.create_task("requested", "Organization/lab").await;
    let got = rx.events(fanout, T).await;
    let mut to: Vec<String> = got.iter().map(|r| r.subscription_id()).collect();
    to.sort();
    ids.sort();
    assert_eq!(to, ids, "one event-notification to each subscriber");
    let resources: Vec<String> = got.iter().map(|r| r.body["entry"][1]["resource"].to_string()).collect();
    assert!(resources.iter().all(|r| r == &resources[0]), "every subscriber gets the same resource: {resources:?}");
    let first: serde_json::Value = serde_json::from_str(&resources[0]).unwrap();
    assert_eq!((first["id"].as_str(), first["status"].as_str()), (Some(task.as_str()), Some("requested")));
    assert_eq!(first["meta"]["versionId"], "1");
    let after = version_reads(&server).await;
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test]
async fn one_write_to_many_subscribers_is_read_once_and_each_gets_the_same_resource() {
    // With the cache (the default), the first lane reads the version from the store and the
    // other seven share that read (and its written JSON).
    assert_eq!(fan_out_one_write(16, 8).await, (1, 7));
    // Without it, every lane reads its own: what the cache saves.
    assert_eq!(fan_out_one_write(0, 8).await, (8, 0));
}

#[tokio::test]
async fn a_clean_stop_mid_drain_sends_again_at_most_the_attempt_in_flight() {
    const N: u64 = 150;
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    server.wait_status(&id, "active", T).await;
    // One transaction: all N events are durable before the first is sent, so the lane drains a
    // backlog (reporting every 64 acceptances, never "caught up") when the stop comes.
    let entries: Vec<serde_json::Value> = (0..N)
        .map(|_| {
            json!({
                "resource": { "resourceType": "Task", "status": "requested", "intent": "order", "owner": { "reference": "Organization/lab" } },
                "request": { "method": "POST", "url": "Task" }
            })
        })
        .collect();
    rx.set_delay(Duration::from_millis(2));
    let (s, b) = server.post("", &json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut numbers: Vec<u64> = rx.events(100, T).await.iter().flat_map(|r| r.event_numbers()).collect();
    let dir = server.stop_keeping().await;
    // What arrived while it stopped, the attempt in flight included.
    numbers.extend(rx.drain().await.iter().filter(|r| r.kind() == "event-notification").flat_map(|r| r.event_numbers()));
    let before_restart = numbers.len();
    assert!(before_restart < N as usize, "the stop came after the drain ({before_restart} of {N}): nothing was tested");
    assert_eq!(numbers, (1..=before_restart as u64).collect::<Vec<_>>(), "in order, no gap, before the stop");
    rx.set_delay(Duration::ZERO);
    let server = TestServer::start_in(dir, |_| {}).await;
    while numbers.last() != Some(&N) {
        numbers.extend(rx.next_of("event-notification", T).await.event_numbers());
    }
    // After the restart: in order from where the committer's cursor was, through N.
    let after = &numbers[before_restart..];
    assert_eq!(after.to_vec(), (after[0]..=N).collect::<Vec<_>>(), "in order, no gap, after the restart");
    assert!(after[0] <= before_restart as u64 + 1, "events lost across the stop: {numbers:?}");
    let resent = before_restart as u64 + 1 - after[0];
    assert!(resent <= 1, "{resent} accepted events sent again after a clean stop ({before_restart} before it): {numbers:?}");
    server.stop().await;
}
