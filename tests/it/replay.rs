//! Recovering what was missed (issue #8): `$resend` by number and by instant, dead-letter
//! replay through the operation and the `herald dead` CLI (the real binary), and retention
//! with `$events` naming what is still kept.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(10);

/// Polls `check` until it holds, failing after `T`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + T;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn active_subscription(server: &TestServer, rx: &Receiver) -> String {
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    id
}

/// Runs `herald dead <args>` against `server`, off the runtime thread (which serves it).
async fn herald_cli(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["dead", "--server", &server.base]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run herald");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn resend_sends_stored_events_again_with_their_numbers_before_new_ones() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let id = active_subscription(&server, &rx).await;
    for _ in 0..3 {
        server.create_task("requested", "Organization/lab").await;
    }
    let first: Vec<u64> = rx.events(3, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(first, [1, 2, 3]);

    let (s, oo) = server.post(&format!("Subscription/{id}/$resend?eventsSinceNumber=1&eventsUntilNumber=2"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("2 events numbered 1 to 2"), "{oo}");
    let again: Vec<u64> = rx.events(2, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(again, [1, 2], "resent with their original numbers, in order");
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [4]);

    // By instant: everything from the first event's time on.
    let (_, events) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=1")).await;
    let since = events["entry"][0]["resource"]["notificationEvent"][0]["timestamp"].as_str().unwrap().to_string();
    let body = json!({ "resourceType": "Parameters", "parameter": [{ "name": "eventsSinceInstant", "valueInstant": since }] });
    let (s, oo) = server.post(&format!("Subscription/{id}/$resend"), &body).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("4 events numbered 1 to 4"), "{oo}");
    let all: Vec<u64> = rx.events(4, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(all, [1, 2, 3, 4]);

    // Bad inputs.
    for q in [
        "eventsSinceNumber=x",
        "eventsSinceNumber=3&eventsUntilNumber=1",
        "eventsSinceNumber=1&eventsSinceInstant=2026-01-01T00:00:00Z",
        "nosuch=1",
    ] {
        let (s, oo) = server.post(&format!("Subscription/{id}/$resend?{q}"), &json!({})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {oo}");
    }
    let (s, _) = server.post("Subscription/nope/$resend", &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_the_cli_once_the_endpoint_recovers() {
    let server = TestServer::start_with(|c| c.delivery.max_attempts = 2).await;
    let rx = Receiver::start().await;
    let id = active_subscription(&server, &rx).await;
    rx.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    server.wait_status(&id, "error", T).await;
    server.create_task("requested", "Organization/lab").await; // event 2: counted, not sent in error

    // Listed (by the operation and the CLI), without header values or payloads.
    let (s, dead) = server.get(&format!("Subscription/{id}/$dead-letters")).await;
    assert_eq!(s, StatusCode::OK, "{dead}");
    let letters = dead["parameter"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dead}");
    let (ok, table, err) = herald_cli(&server, &["list", &id]).await;
    assert!(ok, "{err}");
    assert!(table.lines().nth(1).is_some_and(|l| l.trim_start().starts_with("1 ") && l.contains("Task/")), "{table}");
    let (ok, shown, err) = herald_cli(&server, &["show", &id, "1"]).await;
    assert!(ok, "{err}");
    assert!(shown.contains("interaction") && shown.contains("create"), "{shown}");
    let (ok, _, err) = herald_cli(&server, &["show", &id, "9"]).await;
    assert!(!ok && err.contains("no dead letter 9"), "{err}");

    // The endpoint recovers; the client asks for a new handshake; event 2 follows.
    rx.set_status(200);
    rx.drain().await;
    let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
    sub["status"] = json!("requested");
    assert_eq!(server.put(&format!("Subscription/{id}"), &sub).await.0, StatusCode::OK);
    assert_eq!(rx.next_of("handshake", T).await.kind(), "handshake");
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [2]);

    // The operator replays the dead letter, waiting for it to be delivered.
    let (ok, out, err) = herald_cli(&server, &["replay", &id, "--wait"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("1 dead letters numbered 1 to 2") && out.contains("done"), "{out}");
    assert!(err.contains("replayed 1/1"), "progress: {err}");
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [1]);
    let (_, dead) = server.get(&format!("Subscription/{id}/$dead-letters")).await;
    assert!(dead.get("parameter").is_none_or(|p| p.as_array().is_some_and(Vec::is_empty)), "{dead}");
    let (ok, table, _) = herald_cli(&server, &["list", &id]).await;
    assert!(ok && table.contains("no dead letters"), "{table}");
}

#[tokio::test]
async fn retention_removes_delivered_events_and_events_names_what_is_kept() {
    let server = TestServer::start_with(|c| {
        c.subscriptions.events_keep = 2;
        c.subscriptions.events_prune_interval = "100ms".into();
    })
    .await;
    let rx = Receiver::start().await;
    let id = active_subscription(&server, &rx).await;
    for _ in 0..5 {
        server.create_task("requested", "Organization/lab").await;
    }
    assert_eq!(rx.events(5, T).await.iter().flat_map(|n| n.event_numbers()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let path = format!("Subscription/{id}/$events?eventsSinceNumber=1");
    // A sweep may run before the receiver's last acknowledgement is recorded (pruning 1 to 2
    // first): wait for the one that sees all five delivered.
    until("events 1 to 3 to be pruned", || async {
        let (s, oo) = server.get(&path).await;
        s == StatusCode::GONE && oo["issue"][0]["diagnostics"].as_str().is_some_and(|t| t.contains("events 1 to 3"))
    })
    .await;
    let (_, oo) = server.get(&path).await;
    let text = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(text.contains("events 1 to 3 are past retention") && text.contains("events 4 to 5 are kept"), "{text}");
    // Without a lower bound, $events starts at what is kept.
    let (s, b) = server.get(&format!("Subscription/{id}/$events")).await;
    assert_eq!(s, StatusCode::OK);
    let numbers: Vec<&Value> =
        b["entry"][0]["resource"]["notificationEvent"].as_array().unwrap().iter().map(|e| &e["eventNumber"]).collect();
    assert_eq!(numbers, [&json!("4"), &json!("5")]);
    // $resend into the pruned range is refused with the same facts.
    let (s, oo) = server.post(&format!("Subscription/{id}/$resend?eventsSinceNumber=2"), &json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
}

#[tokio::test]
async fn deleting_a_subscription_removes_its_events_and_off_keeps_them() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let id = active_subscription(&server, &rx).await;
    for _ in 0..2 {
        server.create_task("requested", "Organization/lab").await;
    }
    assert_eq!(rx.events(2, T).await.iter().flat_map(|n| n.event_numbers()).collect::<Vec<_>>(), [1, 2]);

    // Off: delivery stops, new changes are not numbered, stored events stay readable.
    let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
    sub["status"] = json!("off");
    assert_eq!(server.put(&format!("Subscription/{id}"), &sub).await.0, StatusCode::OK);
    server.wait_status(&id, "off", T).await;
    server.create_task("requested", "Organization/lab").await;
    let (s, b) = server.get(&format!("Subscription/{id}/$events")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["entry"][0]["resource"]["notificationEvent"].as_array().unwrap().len(), 2, "{b}");

    // Delete: the queue and its events go; the same id starts again from event 1.
    assert!(server.delete(&format!("Subscription/{id}")).await.0.is_success());
    assert_eq!(server.get(&format!("Subscription/{id}/$events")).await.0, StatusCode::NOT_FOUND);
    sub["status"] = json!("requested");
    assert!(server.put(&format!("Subscription/{id}"), &sub).await.0.is_success());
    assert_eq!(rx.next_of("handshake", T).await.status()["eventsSinceSubscriptionStart"], "0");
    server.wait_status(&id, "active", T).await;
    let (_, b) = server.get(&format!("Subscription/{id}/$events")).await;
    assert!(b["entry"][0]["resource"].get("notificationEvent").is_none(), "old events are gone: {b}");
    server.create_task("requested", "Organization/lab").await;
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [1]);
}

#[tokio::test]
async fn a_resend_never_overtakes_an_event_still_being_retried() {
    let server = TestServer::start_with(|c| {
        c.delivery.max_attempts = 1000;
        c.delivery.initial_interval = "100ms".into();
        c.delivery.max_interval = "100ms".into();
    })
    .await;
    let rx = Receiver::start().await;
    let id = active_subscription(&server, &rx).await;
    for _ in 0..2 {
        server.create_task("requested", "Organization/lab").await;
    }
    let first: Vec<u64> = rx.events(2, T).await.iter().flat_map(|n| n.event_numbers()).collect();
    assert_eq!(first, [1, 2]);
    // Event 3 is refused and retried; 4 to 6 wait behind it.
    rx.set_status(500);
    for _ in 0..4 {
        server.create_task("requested", "Organization/lab").await;
    }
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [3]);
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [3], "retried");
    // A resend from 4 must not send 4..6 ahead of 3: it waits for delivery to pass them, and
    // says so.
    let (s, oo) = server.post(&format!("Subscription/{id}/$resend?eventsSinceNumber=4"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    let text = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(text.contains("3 events numbered 4 to 6") && text.contains("from 4 on have not been accepted yet"), "{oo}");
    rx.set_status(200);
    // Every POST from now on, in arrival order, until the resent 6 arrives: 3 (still failing,
    // maybe several times) is accepted before any of 4..6; 4..6 arrive first in order, and
    // only then again.
    let mut seen = Vec::new();
    while seen.iter().filter(|&&n| n == 6).count() < 2 {
        let n = rx.next_of("event-notification", T).await;
        seen.extend(n.event_numbers());
    }
    let first_after_3 = seen.iter().position(|&n| n > 3).unwrap();
    assert!(seen[..first_after_3].contains(&3), "3 was not accepted before 4..6: {seen:?}");
    assert!(!seen[first_after_3..].contains(&3), "3 again after 4: {seen:?}");
    let tail = &seen[first_after_3..];
    let mut firsts: Vec<u64> = Vec::new();
    for &n in tail {
        if !firsts.contains(&n) {
            firsts.push(n);
        }
    }
    assert_eq!(firsts, [4, 5, 6], "first deliveries in order: {seen:?}");
    for n in [4, 5, 6] {
        let at = tail.iter().position(|&m| m == n).unwrap();
        assert_eq!(tail.iter().filter(|&&m| m == n).count(), 2, "{n} once delivered and once resent: {seen:?}");
        assert!(tail[..at].iter().all(|&m| m < n), "{n} first arrived after a later event: {seen:?}");
    }
}

/// Issue #18: deleting a subscription with a long backlog removes its events in bounded
/// commits (`subscriptions.purge_batch`); its id is not created again over leftovers.
#[tokio::test]
async fn a_deleted_backlog_goes_in_bounded_commits_and_never_leaks_into_the_id_reused() {
    let server = TestServer::start_with(|c| c.subscriptions.purge_batch = 3).await;
    let (rx, rx2) = (Receiver::start().await, Receiver::start().await);
    server.task_topic(TOPIC).await;
    let sub = |endpoint: &str| {
        json!({ "resourceType": "Subscription", "id": "backlog", "status": "requested", "topic": TOPIC, "content": "id-only",
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
            "endpoint": endpoint })
    };
    assert!(server.put("Subscription/backlog", &sub(&rx.url)).await.0.is_success());
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status("backlog", "active", T).await;
    rx.set_status(503);
    for _ in 0..11 {
        server.create_task("requested", "Organization/lab").await;
    }
    assert!(server.delete("Subscription/backlog").await.0.is_success());
    // Created again at once (for another endpoint): 409 while the old events are still being
    // removed, then 201.
    let deadline = Instant::now() + T;
    loop {
        let (s, body) = server.put("Subscription/backlog", &sub(&rx2.url)).await;
        if s.is_success() {
            break;
        }
        assert_eq!(s, StatusCode::CONFLICT, "{body}");
        assert!(Instant::now() < deadline, "the old backlog was never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rx2.next_within(T).await.kind(), "handshake");
    // The new incarnation starts empty: no old event is counted, listed or sent.
    let (_, events) = server.get("Subscription/backlog/$events").await;
    assert_eq!(events["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "0", "{events}");
    let task = server.create_task("requested", "Organization/lab").await;
    let n = rx2.next_of("event-notification", T).await;
    assert_eq!(n.event_numbers(), [1]);
    let focus = n.status()["notificationEvent"][0]["focus"]["reference"].as_str().unwrap().to_owned();
    assert!(focus.contains(&task), "{focus}");
    let (_, events) = server.get("Subscription/backlog/$events").await;
    let listed = events["entry"][0]["resource"]["notificationEvent"].as_array().map(Vec::len);
    assert_eq!(listed, Some(1), "only the new event is kept: {events}");
}

/// Issue #18: a type-level `$status` without ids reads at most `search.max_scan` subscriptions
/// and says where it stopped.
#[tokio::test]
async fn status_without_ids_is_bounded_and_says_where_it_stopped() {
    let server = TestServer::start_with(|c| c.search.max_scan = 3).await;
    server.task_topic(TOPIC).await;
    let ws = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" } });
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (s, b) = server.post("Subscription", &ws).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (s, all) = server.get("Subscription/$status").await;
    assert_eq!(s, StatusCode::OK);
    let entries = all["entry"].as_array().unwrap();
    let statuses = entries.iter().filter(|e| e["resource"]["resourceType"] == "SubscriptionStatus").count();
    assert_eq!(statuses, 3, "{all}");
    let note = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("a note says it stopped");
    assert!(note["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("stopped after 3"), "{all}");
    assert!(all.get("total").is_none(), "no total that is not known: {all}");
    // By id, every one is still reachable.
    let (_, one) = server.get(&format!("Subscription/$status?id={}", ids[4])).await;
    assert_eq!(one["total"], 1, "{one}");
}
