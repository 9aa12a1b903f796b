//! Readiness and graceful shutdown, through the real binary: `/healthz` answers while the
//! search index is rebuilt and `/readyz` does not; SIGTERM stops Herald within
//! `server.shutdown_grace` with exit status 0, losing no acknowledged write and no event, also
//! with writes in flight, a slow receiver, a bound websocket or a request that never ends.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crash::{assert_gapless_in_order, setup, TOPIC};
use crate::support::binary::{free_port, Herald};
use crate::support::ws::{kind, Binding, WsClient};
use crate::support::Receiver;

/// Posts `n` Tasks in transaction Bundles of 1,000.
async fn create_tasks(base: &str, n: usize) {
    let client = reqwest::Client::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(1_000);
        let entries: Vec<Value> = (0..batch)
            .map(|i| {
                json!({ "resource": { "resourceType": "Task", "status": "requested", "intent": "order",
                    "owner": { "reference": format!("Organization/lab-{}", i % 50) } },
                    "request": { "method": "POST", "url": "Task" } })
            })
            .collect();
        let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
        let r = client.post(base).header("content-type", "application/fhir+json").json(&bundle).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        left -= batch;
    }
}

async fn status_of(client: &reqwest::Client, url: &str) -> Option<StatusCode> {
    client.get(url).send().await.ok().map(|r| r.status())
}

/// Lines of `log` in order; panics naming the first of `wanted` that is missing or out of order.
fn assert_in_order(log: &str, wanted: &[&str]) {
    let mut from = 0;
    for w in wanted {
        match log.get(from..).and_then(|rest| rest.find(w)) {
            Some(at) => from += at + w.len(),
            None => panic!("log lacks {w:?} (after the lines before it); log:\n{log}"),
        }
    }
}

#[tokio::test]
async fn healthz_answers_and_readyz_waits_while_the_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let tasks = 10_000;
    let mut h = Herald::start(&dir, port).await;
    create_tasks(&h.base, tasks).await;
    h.terminate();
    assert!(h.wait_exit(Duration::from_secs(15)).await.success());

    // Another index set: the next start rebuilds the index. A SIGTERM as soon as the process
    // is live stops it cleanly in the middle of start-up; the rebuild starts over next time.
    let all = [("HERALD_SEARCH__INDEX", "all")];
    let log = tmp.path().join("interrupted.log");
    let mut h = Herald::spawn(&dir, port, &all, Some(&log));
    let client = reqwest::Client::new();
    let healthz = format!("{}/healthz", h.root);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&client, &healthz).await != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "never live; log:\n{}", h.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    h.terminate();
    assert!(h.wait_exit(Duration::from_secs(15)).await.success(), "log:\n{}", h.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(10), "not within the default grace of 10 s");
    assert_in_order(&h.log_text(), &["listening; starting", "stopped during start-up"]);

    let log = tmp.path().join("rebuild.log");
    let mut h = Herald::spawn(&dir, port, &all, Some(&log));
    let readyz = format!("{}/readyz", h.root);
    let metadata = format!("{}/metadata", h.base);
    let mut live_not_ready = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "never ready; log:\n{}", h.log_text());
        let (live, ready) = (status_of(&client, &healthz).await, status_of(&client, &readyz).await);
        if ready == Some(StatusCode::OK) {
            break;
        }
        if live == Some(StatusCode::OK) && ready == Some(StatusCode::SERVICE_UNAVAILABLE) {
            live_not_ready += 1;
            if live_not_ready == 1 {
                // FHIR requests wait for readiness too: 503, transient, Retry-After.
                let r = client.get(&metadata).send().await.unwrap();
                if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
                    let outcome: Value = r.json().await.unwrap();
                    assert_eq!(outcome["issue"][0]["code"], "transient", "{outcome}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(live_not_ready > 0, "never saw /healthz 200 with /readyz 503 during the rebuild; log:\n{}", h.log_text());
    assert_eq!(status_of(&client, &healthz).await, Some(StatusCode::OK));
    assert_eq!(status_of(&client, &metadata).await, Some(StatusCode::OK));
    assert_in_order(
        &h.log_text(),
        &[
            "listening; starting",
            "rebuilding it",
            "search index rebuild: writing entries",
            "search index rebuild: checking",
            "search index rebuilt",
            "Herald ready",
        ],
    );
    // The rebuilt index answers: `intent` is indexed only in the "all" set.
    let r: Value = client.get(format!("{}/Task?intent=order&_summary=count", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["total"], tasks, "{r}");
    h.terminate();
    assert!(h.wait_exit(Duration::from_secs(15)).await.success());
}

/// Polls `$status` until the subscription is `active`.
async fn wait_active(client: &reqwest::Client, base: &str, sub: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: Value = client.get(format!("{base}/Subscription/{sub}/$status")).send().await.unwrap().json().await.unwrap();
        let st = st["entry"][0]["resource"].clone();
        if st["status"] == "active" {
            return st;
        }
        assert!(Instant::now() < deadline, "not active: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_mid_burst_with_a_slow_receiver_exits_0_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let grace = Duration::from_secs(8);
    // Attempts may last a minute: only shutdown itself can cut one short.
    let env = [("HERALD_SERVER__SHUTDOWN_GRACE", "8s"), ("HERALD_DELIVERY__DEFAULT_TIMEOUT", "60s")];
    let log = tmp.path().join("herald.log");
    let rx = Receiver::start().await;
    let mut h = Herald::start_with(&dir, port, &env, Some(&log)).await;
    let sub = setup(&h, &rx.url).await;
    assert_eq!(rx.next_within(Duration::from_secs(10)).await.kind(), "handshake");
    let client = reqwest::Client::new();
    wait_active(&client, &h.base, &sub).await;
    rx.set_delay(Duration::from_secs(60));

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (acked, stop, base) = (acked.clone(), stop.clone(), h.base.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": format!("{w}-{i}") });
                match client.post(format!("{base}/Task")).json(&task).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Value>().await {
                        Ok(b) => {
                            acked.lock().unwrap().insert(b["id"].as_str().unwrap().to_string());
                        }
                        Err(_) => break, // cut off before the whole answer arrived
                    },
                    // Refused (stopping) or cut off: not acknowledged.
                    _ => break,
                }
            }
        }));
    }
    // SIGTERM while writers are sending and an event is in flight at the slow receiver.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 || rx.in_flight() == 0 {
        assert!(Instant::now() < deadline, "burst too slow or nothing in flight at the receiver");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signalled = Instant::now();
    h.terminate();
    let status = h.wait_exit(grace + Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert!(status.success(), "exit status {status}; log:\n{}", h.log_text());
    assert!(took < grace, "stopped after {took:?}, grace {grace:?}");
    let text = h.log_text();
    assert_in_order(&text, &["Herald ready", "shutting down", "Herald stopped"]);
    assert!(!text.contains("shutdown_grace"), "a shutdown step overran the grace period:\n{text}");
    let acked = acked.lock().unwrap().clone();

    rx.set_delay(Duration::ZERO);
    let h = Herald::start_with(&dir, port, &env, Some(&log)).await;
    for id in &acked {
        let r = client.get(format!("{}/Task/{id}", h.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged Task/{id} is missing after restart");
    }
    // Every event (acknowledged writes, and writes committed while their client was being cut
    // off) arrives after restart, numbered 1..=n without gaps, in order.
    let st: Value = client.get(format!("{}/Subscription/{sub}/$status", h.base)).send().await.unwrap().json().await.unwrap();
    let n: u64 = st["entry"][0]["resource"]["eventsSinceSubscriptionStart"].as_str().unwrap().parse().unwrap();
    assert!(n >= acked.len() as u64, "{n} events for {} acknowledged writes", acked.len());
    let mut numbers = Vec::new();
    let mut foci = HashSet::new();
    let mut seen = BTreeSet::new();
    while seen.len() < n as usize {
        let r = rx.next_of("event-notification", Duration::from_secs(60)).await;
        numbers.extend(r.event_numbers());
        seen.extend(r.event_numbers());
        for e in r.status()["notificationEvent"].as_array().unwrap() {
            foci.insert(e["focus"]["reference"].as_str().unwrap().rsplit('/').next().unwrap().to_string());
        }
    }
    assert_gapless_in_order(&numbers);
    assert_eq!(seen.last(), Some(&n));
    assert!(acked.is_subset(&foci), "{} acknowledged writes were never notified", acked.difference(&foci).count());
    // Numbering goes on from where it stopped.
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    assert_eq!(client.post(format!("{}/Task", h.base)).json(&task).send().await.unwrap().status(), StatusCode::CREATED);
    loop {
        let r = rx.next_of("event-notification", Duration::from_secs(10)).await;
        if r.event_numbers().contains(&(n + 1)) {
            break;
        }
        assert!(r.event_numbers().iter().all(|&e| e <= n), "{:?} after {n}", r.event_numbers());
    }
}

#[tokio::test]
async fn sigterm_closes_bound_websockets_with_1001_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("herald.log");
    let mut h = Herald::start_with(&tmp.path().join("data"), port, &[("HERALD_SERVER__SHUTDOWN_GRACE", "5s")], Some(&log)).await;
    let client = reqwest::Client::new();
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(client.post(format!("{}/SubscriptionTopic", h.base)).json(&topic).send().await.unwrap().status(), StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC,
        "channelType": { "code": "websocket" }, "content": "id-only" });
    let created: Value = client.post(format!("{}/Subscription", h.base)).json(&sub).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let p: Value = client.get(format!("{}/Subscription/{id}/$get-ws-binding-token", h.base)).send().await.unwrap().json().await.unwrap();
    let binding = Binding::from_parameters(&p);
    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind(&binding.token).await;
    assert_eq!(kind(&ws.next_json(Duration::from_secs(5)).await), "handshake");
    let signalled = Instant::now();
    h.terminate();
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(1001), "going away");
    let status = h.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}; log:\n{}", h.log_text());
    assert!(signalled.elapsed() < Duration::from_secs(5), "{:?}", signalled.elapsed());
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_period_when_a_request_never_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = tmp.path().join("herald.log");
    let grace = Duration::from_secs(2);
    let mut h = Herald::start_with(&tmp.path().join("data"), port, &[("HERALD_SERVER__SHUTDOWN_GRACE", "2s")], Some(&log)).await;
    // A create whose body never comes. `100 Continue` arrives once the handler reads the body,
    // so the request is in flight when the signal is sent.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = "POST /fhir/Task HTTP/1.1\r\nHost: herald\r\nContent-Type: application/fhir+json\r\n\
                Content-Length: 100\r\nExpect: 100-continue\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let signalled = Instant::now();
    h.terminate();
    let status = h.wait_exit(grace + Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", h.log_text());
    assert!(took >= grace, "the open request was not waited for: {took:?}");
    assert!(took < grace + Duration::from_secs(2), "took {took:?} for a grace of {grace:?}");
    assert_in_order(&h.log_text(), &["shutting down", "were cut off", "Herald stopped"]);
    drop(conn);
}
