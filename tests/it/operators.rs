//! Operator surfaces through the real server (issue #10): `/metrics` after real writes and
//! deliveries, its protection, and what it must never show.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(10);

async fn scrape(server: &TestServer, token: Option<&str>) -> (StatusCode, String) {
    let url = server.base.trim_end_matches("/fhir").to_string() + "/metrics";
    let mut req = server.client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

/// The value of the sample `line_start` (name and labels as exported), if present.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_writes_events_and_deliveries_and_never_show_secrets() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id =
        server.subscribe(TOPIC, &rx.url, json!({ "parameter": [{ "name": "Authorization", "value": "Bearer receiver-secret-42" }] })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    for _ in 0..3 {
        server.create_task("requested", "Organization/lab").await;
    }
    assert_eq!(rx.events(3, T).await.len(), 3);

    // Delivery results reach the metrics just after the receiver answers: wait for them.
    let deadline = Instant::now() + T;
    let text = loop {
        let (s, text) = scrape(&server, None).await;
        assert_eq!(s, StatusCode::OK);
        if sample(&text, "herald_deliveries_total{channel=\"rest-hook\",outcome=\"delivered\"}") == Some(3.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "deliveries never reached 3:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&text, "herald_writes_total{resource_type=\"Task\",interaction=\"create\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, &format!("herald_events_total{{topic=\"{TOPIC}\"}}")), Some(3.0), "{text}");
    assert_eq!(sample(&text, &format!("herald_topic_triggers_total{{topic=\"{TOPIC}\"}}")), Some(3.0), "{text}");
    assert_eq!(sample(&text, "herald_subscriptions{status=\"active\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "herald_pending_events"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "herald_delivery_latency_seconds_count{channel=\"rest-hook\"}"), Some(3.0), "{text}");
    assert!(sample(&text, "herald_flush_batch_commits_count").is_some_and(|n| n >= 1.0), "{text}");
    assert!(sample(&text, "herald_store_size_bytes").is_some_and(|n| n > 0.0), "{text}");
    assert!(text.contains("herald_http_requests_total{method=\"POST\",route=\"/fhir/{type}\",status=\"2xx\"}"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(!text.contains("receiver-secret-42"), "a header value reached the metrics");

    // A backlog shows per subscription (top N) with the age of its oldest event.
    rx.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    let deadline = Instant::now() + T;
    loop {
        let (_, text) = scrape(&server, None).await;
        if sample(&text, &format!("herald_queue_depth{{subscription=\"{id}\"}}")) == Some(1.0) {
            assert!(sample(&text, &format!("herald_oldest_pending_age_seconds{{subscription=\"{id}\"}}")).is_some(), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no queue_depth for {id}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_need_the_admin_token_when_one_is_set() {
    let server = TestServer::start_with(|c| c.admin.token = "admin-token-7".into()).await;
    assert_eq!(scrape(&server, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&server, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    let (s, text) = scrape(&server, Some("admin-token-7")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!text.contains("admin-token-7"));
    // The FHIR API is not behind the admin token.
    assert_eq!(server.get("metadata").await.0, StatusCode::OK);
}
