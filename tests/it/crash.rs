//! Crash safety with the real binary: SIGKILL (`Child::kill`) at awkward moments, restart on
//! the same data dir, and check that every acknowledged write's event arrives, numbered without
//! gaps and in order (duplicates are allowed: delivery is at least once).

use std::collections::HashSet;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::binary::{free_port, Herald};
use crate::support::{versions, Receiver};

pub(crate) const TOPIC: &str = "http://example.org/topics/task-changed";

pub(crate) async fn setup(h: &Herald, endpoint: &str) -> String {
    setup_in(h, endpoint, versions::R5).await
}

/// `setup` in the shapes of FHIR `version`.
pub(crate) async fn setup_in(h: &Herald, endpoint: &str, version: &str) -> String {
    let client = reqwest::Client::new();
    if version != versions::R5 {
        let (ty, topic) = versions::topic(version, TOPIC, "Task", &[]);
        let r = client.post(format!("{}/{ty}", h.base)).json(&topic).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        let sub = versions::subscription(version, TOPIC, endpoint, "id-only", "Task", &[], &[]);
        let r = client.post(format!("{}/Subscription", h.base)).json(&sub).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: serde_json::Value = r.json().await.unwrap();
        return body["id"].as_str().unwrap().to_string();
    }
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(client.post(format!("{}/SubscriptionTopic", h.base)).json(&topic).send().await.unwrap().status(), StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "channelType": { "code": "rest-hook" }, "endpoint": endpoint, "content": "id-only" });
    let r = client.post(format!("{}/Subscription", h.base)).json(&sub).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: serde_json::Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// Receives until every id in `want` has been seen as a focus; returns the event numbers in
/// arrival order.
pub(crate) async fn collect(rx: &Receiver, want: &HashSet<String>, d: Duration) -> Vec<u64> {
    let deadline = Instant::now() + d;
    let mut seen = HashSet::new();
    let mut numbers = Vec::new();
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "missing {} acknowledged events after restart", want.difference(&seen).count());
        let r = rx.next_of("event-notification", left).await;
        numbers.extend(r.event_numbers());
        seen.extend(r.focus_ids());
    }
    numbers
}

/// First occurrences must be 1, 2, 3, ... (no gap, in order); repeats are redeliveries.
pub(crate) fn assert_gapless_in_order(numbers: &[u64]) {
    let mut next = 1;
    for &n in numbers {
        if n == next {
            next += 1;
        } else {
            assert!(n < next, "event {n} arrived before {next}: {numbers:?}");
        }
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_while_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rx = Receiver::start().await;
    let addr = rx.url.trim_start_matches("http://").trim_end_matches("/hook").to_string();
    let h = Herald::start(dir.path(), port).await;
    let sub = setup(&h, &rx.url).await;
    assert_eq!(rx.next_within(Duration::from_secs(10)).await.kind(), "handshake");
    let client = reqwest::Client::new();
    // Wait for active so that events queue for delivery rather than for the handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st: serde_json::Value =
            client.get(format!("{}/Subscription/{sub}/$status", h.base)).send().await.unwrap().json().await.unwrap();
        if st["entry"][0]["resource"]["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(rx); // receiver down
    let mut acked = HashSet::new();
    for i in 0..50 {
        let r = client
            .post(format!("{}/Task", h.base))
            .json(&json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": i.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let b: serde_json::Value = r.json().await.unwrap();
        acked.insert(b["id"].as_str().unwrap().to_string());
    }
    h.kill9();
    let h = Herald::start(dir.path(), port).await;
    let rx = Receiver::start_on(&addr).await;
    let numbers = collect(&rx, &acked, Duration::from_secs(30)).await;
    assert_gapless_in_order(&numbers);
    assert_eq!(numbers.iter().copied().max(), Some(50));
    let st: serde_json::Value = client.get(format!("{}/Subscription/{sub}/$status", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "50", "numbers did not restart");
}

#[tokio::test]
async fn every_acknowledged_write_is_delivered_after_kill_9_mid_burst() {
    kill_9_mid_burst(versions::R5).await;
}

#[tokio::test]
async fn every_acknowledged_write_is_delivered_after_kill_9_mid_burst_r4() {
    kill_9_mid_burst(versions::R4).await;
}

#[tokio::test]
async fn every_acknowledged_write_is_delivered_after_kill_9_mid_burst_r4b() {
    kill_9_mid_burst(versions::R4B).await;
}

async fn kill_9_mid_burst(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rx = Receiver::start().await;
    let env = [("HERALD_FHIR__VERSION", version)];
    let h = Herald::start_with(dir.path(), port, &env, None).await;
    setup_in(&h, &rx.url, version).await;
    assert_eq!(rx.next_within(Duration::from_secs(10)).await.kind(), "handshake");
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
                let sent = client
                    .post(format!("{base}/Task"))
                    .json(&json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": format!("{w}-{i}") }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        if let Ok(b) = r.json::<serde_json::Value>().await {
                            acked.lock().unwrap().insert(b["id"].as_str().unwrap().to_string());
                        }
                    }
                    _ => break, // the server died under us: this write was never acknowledged
                }
            }
        }));
    }
    // Kill once a few hundred writes were acknowledged, while writers are still sending.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "burst too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    let _h = Herald::start_with(dir.path(), port, &env, None).await;
    let numbers = collect(&rx, &acked, Duration::from_secs(60)).await;
    assert_gapless_in_order(&numbers);
}

#[tokio::test]
async fn custom_search_parameters_are_reloaded_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let client = reqwest::Client::new();
    let h = Herald::start(dir.path(), port).await;
    let param = json!({ "resourceType": "SearchParameter", "url": "http://example.org/sp/lab-section", "name": "LabSection",
        "status": "active", "description": "lab section", "code": "lab-section", "base": ["Task"], "type": "token",
        "expression": "Task.extension('http://example.org/lab-section').value" });
    let r = client.post(format!("{}/SearchParameter", h.base)).json(&param).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order",
        "extension": [{ "url": "http://example.org/lab-section", "valueCode": "chemistry" }] });
    let r = client.post(format!("{}/Task", h.base)).json(&task).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    h.kill9();

    let h = Herald::start(dir.path(), port).await;
    // A topic whose queryCriteria names the custom parameter parses only if it was reloaded.
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/chem", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "queryCriteria": { "current": "lab-section=chemistry" } }] });
    let r = client.post(format!("{}/SubscriptionTopic", h.base)).json(&topic).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let bundle: Value = client.get(format!("{}/Task?lab-section=chemistry", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(bundle["entry"].as_array().map(|e| e.iter().filter(|x| x["search"]["mode"] == "match").count()), Some(1), "{bundle}");
}

/// Reads see only durable state: with every group flush held back (testing knob
/// `store.dangerous_flush_delay`, which also stops sled's own flush timer), a read of a write
/// that is applied but not yet flushed does not answer; a `kill -9` in that window loses the
/// write, and nobody was ever shown it.
#[tokio::test]
async fn a_read_never_shows_a_version_a_crash_can_still_lose() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let delay = [("HERALD_STORE__DANGEROUS_FLUSH_DELAY", "5s")];
    let h = Herald::start_with(dir.path(), port, &delay, None).await;
    let client = reqwest::Client::new();
    let task = json!({ "resourceType": "Task", "id": "rc-1", "status": "requested", "intent": "order" });
    let put = tokio::spawn({
        let (client, url) = (client.clone(), format!("{}/Task/rc-1", h.base));
        async move { client.put(url).json(&task).send().await.map(|r| r.status()) }
    });
    // The committer has planned (and so applied) the write once it counts it.
    let metrics = format!("{}/metrics", h.root);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l.starts_with("herald_writes_total") && l.contains("Task") && !l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "the write was never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read = tokio::spawn({
        let (client, url) = (client.clone(), format!("{}/Task/rc-1", h.base));
        async move {
            let r = client.get(url).send().await?;
            let status = r.status();
            r.text().await.map(|body| (status, body, Instant::now()))
        }
    });
    // Nothing is flushed for 5 s; the read must still be waiting when Herald dies.
    let waited = tokio::time::timeout(Duration::from_millis(700), async {
        while !read.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let killed_at = Instant::now();
    h.kill9();
    match read.await.unwrap() {
        Ok((status, body, at)) => {
            panic!("the read answered {status} before the write was durable ({:?} before the kill): {body}", killed_at - at)
        }
        Err(_) => assert!(waited.is_err(), "the read ended without an answer before the kill"),
    }
    assert!(put.await.unwrap().is_err(), "the write was acknowledged before it was flushed");
    // After the restart the write is gone, as nobody was told otherwise.
    let h = Herald::start(dir.path(), port).await;
    let status = client.get(format!("{}/Task/rc-1", h.base)).send().await.unwrap().status();
    assert_eq!(status, StatusCode::NOT_FOUND, "an unacknowledged, unflushed write survived; this test shows nothing then");
}
