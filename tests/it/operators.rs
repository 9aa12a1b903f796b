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

    // Delivery results reach the metrics just after the receiver answers, and the lane's
    // cursor reaches the store (`herald_pending_events`) a committer step later: wait for both.
    let deadline = Instant::now() + T;
    let text = loop {
        let (s, text) = scrape(&server, None).await;
        assert_eq!(s, StatusCode::OK);
        if sample(&text, "herald_deliveries_total{channel=\"rest-hook\",outcome=\"delivered\"}") == Some(3.0)
            && sample(&text, "herald_pending_events") == Some(0.0)
        {
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

/// Runs `herald <args>` (the real binary) against `server`, off the runtime thread.
pub(crate) async fn herald(server: &TestServer, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).env("HERALD_SERVER", &server.base).env_remove("HERALD_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("HERALD_ADMIN_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run herald");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn cli_status_subscriptions_and_topics_against_a_running_herald() {
    let server = TestServer::start_with(|c| c.admin.token = "cli-admin-token".into()).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [1]);
    let tok = Some("cli-admin-token");

    // Without the token the operator API refuses, and the CLI says so.
    let (ok, _, err) = herald(&server, None, &["status"]).await;
    assert!(!ok && err.contains("401"), "{err}");

    let (ok, out, err) = herald(&server, tok, &["status"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("subscriptions active") && l.trim_end().ends_with(" 1")), "{out}");
    let (ok, out, err) = herald(&server, tok, &["subscriptions", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with(&id) && l.contains("active") && l.contains(TOPIC)), "{out}");
    let (ok, out, err) = herald(&server, tok, &["subscriptions", "list", "--json"]).await;
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["events"], 1);
    let (ok, out, err) = herald(&server, tok, &["topics", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("1 ") && l.contains(TOPIC)), "{out}");
    assert!(out.contains("http://herald.dev/fhir/SubscriptionTopic/task-assigned"), "{out}");
    let (ok, out, err) = herald(&server, tok, &["subscriptions", "show", &id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("delivery log") && out.contains("event-notification") && out.contains("delivered"), "{out}");

    // Pause: off, nothing delivered; resume: a new handshake, then the events that waited.
    let (ok, out, err) = herald(&server, tok, &["subscriptions", "pause", &id]).await;
    assert!(ok && out.contains("is now off"), "{out}{err}");
    server.wait_status(&id, "off", T).await;
    let (ok, out, err) = herald(&server, tok, &["subscriptions", "resume", &id]).await;
    assert!(ok && out.contains("is now requested"), "{out}{err}");
    assert_eq!(rx.next_of("handshake", T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [2]);
}
