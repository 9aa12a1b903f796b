//! The committer's apply groups (`ingest::group`): requests queued behind one another are
//! planned into one sled batch, and each one must still see what the earlier ones wrote.
//! These tests drive `herald::ingest` directly on a current-thread runtime, so that every
//! request is queued before the committer runs and all of them land in one group.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::fhir::subscription::SubscriptionLimits;
use herald::ingest::{self, CommitterConfig, Ingest, LaneCommand, LaneSink, LaneView, Retention, WriteEntry, WriteMethod};
use herald::store::Store;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BASE: &str = "http://herald.test/fhir";

/// Remembers every lane publication.
#[derive(Default)]
struct Published(Mutex<Vec<(String, Option<u64>)>>);

impl LaneSink for Published {
    fn publish(&self, sub: &str, view: Option<LaneView>) {
        self.0.lock().unwrap().push((sub.to_string(), view.map(|v| v.state.events_since_start)));
    }
}

struct Committer {
    ingest: Ingest,
    store: Store,
    stop: CancellationToken,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

impl Committer {
    fn start(sink: Arc<Published>) -> Committer {
        Self::start_lingering(sink, Duration::ZERO)
    }

    /// With `delivery.ack_linger` set to `ack_linger`.
    fn start_lingering(sink: Arc<Published>, ack_linger: Duration) -> Committer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ingest, queue) = ingest::channel(64);
        let cfg = CommitterConfig {
            base_url: BASE.into(),
            limits: SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 },
            enforce_task_state_machine: false,
            retention: Retention { keep: 1000, max_age: Duration::from_secs(3600), interval: Duration::from_secs(3600), batch: 10_000 },
            entities: Default::default(),
            flush_delay: Duration::ZERO,
            store_lost: CancellationToken::new(),
            data_dir: std::path::PathBuf::new(),
            flush_timeout: Duration::from_secs(30),
            ack_linger,
            min_free_bytes: 0,
            record_commits: None,
        };
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        ingest::spawn(store.clone(), cfg, queue, sink, &tracker, stop.clone()).unwrap();
        Committer { ingest, store, stop, tracker, _dir: dir }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn put(resource: Value) -> WriteEntry {
    WriteEntry {
        method: WriteMethod::Update,
        resource_type: resource["resourceType"].as_str().unwrap().to_string(),
        id: resource["id"].as_str().unwrap().to_string(),
        resource: Some(resource),
        if_match: None,
        provenance_for: None,
        patched: false,
    }
}

fn request(id: &str, priority: &str) -> Value {
    json!({ "resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order", "priority": priority, "subject": { "reference": "Patient/p" } })
}

fn task(id: &str, status: &str, focus: &str) -> Value {
    json!({ "resourceType": "Task", "id": id, "status": status, "intent": "order", "focus": { "reference": focus } })
}

/// A topic on Task writes whose focus resolves to an urgent request, carrying the focus as
/// additional context, and a subscription to it (left `requested`: it counts events).
async fn subscribed(c: &Committer) -> String {
    let topic = json!({
        "resourceType": "SubscriptionTopic", "id": "urgent", "url": "http://example.org/topics/urgent", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"],
                              "fhirPathCriteria": "%current.focus.resolve().priority = 'urgent'" }],
        "notificationShape": [{ "resource": "Task", "include": ["Task:focus"] }]
    });
    subscribe_to(c, topic).await
}

/// Stores `topic` and subscription `s` to it (left `requested`: it counts events).
async fn subscribe_to(c: &Committer, topic: Value) -> String {
    let url = topic["url"].clone();
    c.ingest.write(put(topic)).await.unwrap();
    let sub = json!({
        "resourceType": "Subscription", "id": "s", "status": "requested", "topic": url,
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": "http://127.0.0.1:9/hook", "content": "id-only", "contentType": "application/fhir+json"
    });
    c.ingest.write(put(sub)).await.unwrap();
    "s".to_string()
}

#[tokio::test]
async fn a_grouped_write_sees_the_resources_written_before_it_in_its_group() {
    let sink = Arc::new(Published::default());
    let c = Committer::start(sink.clone());
    let sub = subscribed(&c).await;
    c.ingest.write(put(request("sr", "routine"))).await.unwrap();

    // One group: the request turns urgent, then two Tasks point at it. Every write is queued
    // before the committer runs.
    let (a, b, t1, t2) = tokio::join!(
        c.ingest.write(put(request("sr", "urgent"))),
        c.ingest.write(put(task("t1", "requested", "ServiceRequest/sr"))),
        c.ingest.write(put(task("t2", "requested", "ServiceRequest/sr"))),
        c.ingest.write(put(request("other", "urgent"))),
    );
    for r in [&a, &b, &t1, &t2] {
        assert!(r.is_ok(), "{r:?}");
    }
    let (r1, r2, r3, r4) = tokio::join!(
        c.ingest.write(put(request("sr", "routine"))),
        c.ingest.write(put(task("t3", "requested", "ServiceRequest/sr"))),
        // The same resource again: the group is applied before it is planned.
        c.ingest.write(put(request("sr", "urgent"))),
        c.ingest.write(put(task("t4", "requested", "ServiceRequest/sr"))),
    );
    for r in [&r1, &r2, &r3, &r4] {
        assert!(r.is_ok(), "{r:?}");
    }

    let events = c.store.events(&sub, 1, 10).unwrap();
    let seen: Vec<(u64, &str, u64)> = events.iter().map(|e| (e.number, e.focus_id.as_str(), e.focus_seq)).collect();
    // t1 and t2 saw the urgent version 2 written before them in their group, t3 the routine
    // version 3, t4 the urgent version 4.
    assert_eq!(seen, vec![(1, "t1", 1), (2, "t2", 1), (3, "t4", 1)]);
    let context: Vec<Vec<(&str, &str, u64)>> =
        events.iter().map(|e| e.context.iter().map(|r| (r.resource_type.as_str(), r.id.as_str(), r.seq)).collect()).collect();
    assert_eq!(context, vec![vec![("ServiceRequest", "sr", 2)], vec![("ServiceRequest", "sr", 2)], vec![("ServiceRequest", "sr", 4)]]);
    let state = c.store.sub_state(&sub).unwrap().unwrap();
    assert_eq!(state.events_since_start, 3);
    assert_eq!(c.store.latest("ServiceRequest", "sr").unwrap().unwrap().seq, 4);
    let published = sink.0.lock().unwrap().clone();
    assert!(published.iter().any(|(s, n)| s == &sub && *n == Some(3)), "{published:?}");
    c.stop().await;
}

#[tokio::test]
async fn without_criteria_or_shapes_a_group_keeps_only_keys_and_still_numbers_every_version() {
    let sink = Arc::new(Published::default());
    let c = Committer::start(sink.clone());
    let topic = json!({
        "resourceType": "SubscriptionTopic", "id": "plain", "url": "http://example.org/topics/plain", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }],
        "notificationShape": [{ "resource": "Task" }]
    });
    subscribe_to(&c, topic).await;

    // The same Task three times and another once, all queued before the committer runs: the
    // group is applied before each repeated write, so each sees the version before it.
    let (a, b, d, e) = tokio::join!(
        c.ingest.write(put(task("t", "requested", "ServiceRequest/x"))),
        c.ingest.write(put(task("u", "requested", "ServiceRequest/x"))),
        c.ingest.write(put(task("t", "in-progress", "ServiceRequest/x"))),
        c.ingest.write(put(task("t", "completed", "ServiceRequest/x"))),
    );
    let seqs: Vec<u64> = [a, b, d, e].into_iter().map(|r| r.unwrap().record.seq).collect();
    assert_eq!(seqs, vec![1, 1, 2, 3]);
    let events = c.store.events("s", 1, 10).unwrap();
    let seen: Vec<(u64, &str, u64, &str)> =
        events.iter().map(|e| (e.number, e.focus_id.as_str(), e.focus_seq, e.interaction.as_str())).collect();
    assert_eq!(seen, vec![(1, "t", 1, "create"), (2, "u", 1, "create"), (3, "t", 2, "update"), (4, "t", 3, "update")]);
    assert_eq!(c.store.sub_state("s").unwrap().unwrap().events_since_start, 4);
    c.stop().await;
}

/// `delivery.ack_linger`: delivery results nobody waits for are held for more, but they never
/// hold a write (it is answered at once and carries them into the store), and the ones still
/// held when the committer stops are written then. The linger here is an hour, so a write held
/// by it, or results dropped at the stop, fail the test.
#[tokio::test]
async fn held_delivery_results_never_hold_a_write_and_are_written_with_it_or_at_the_stop() {
    let sink = Arc::new(Published::default());
    let c = Committer::start_lingering(sink.clone(), Duration::from_secs(3600));
    let topic = json!({
        "resourceType": "SubscriptionTopic", "id": "any", "url": "http://example.org/topics/any-task", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }]
    });
    let sub = subscribe_to(&c, topic).await;
    for n in 1..=3 {
        c.ingest.write(put(task(&format!("t{n}"), "requested", "ServiceRequest/x"))).await.unwrap();
    }
    let state = || c.store.sub_state(&sub).unwrap().unwrap();
    let incarnation = state().incarnation;
    assert_eq!((state().events_since_start, state().delivered_through), (3, 0));

    c.ingest.lane(incarnation, LaneCommand::Delivered { sub: sub.clone(), through: 1, at: 1 }).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), c.ingest.write(put(task("t4", "requested", "ServiceRequest/x")))).await;
    answered.expect("a write waited for held delivery results").unwrap();
    assert_eq!((state().events_since_start, state().delivered_through), (4, 1), "the held result went in with the write");

    c.ingest.lane(incarnation, LaneCommand::Delivered { sub: sub.clone(), through: 3, at: 2 }).await;
    let store = c.store.clone();
    c.stop().await;
    assert_eq!(store.sub_state(&sub).unwrap().unwrap().delivered_through, 3, "a result held at the stop was written");
}
