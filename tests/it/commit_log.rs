//! The commit log seam (`herald::commitlog`): a contract every `CommitLog` in the repository
//! must pass, a writer that acknowledges only what the log says is durable, and replay: the
//! log a writer produced, applied by a `Replica` to an empty store, gives the same store,
//! registry, subscription states and lanes (and the same `$status` and `$events` answers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::commitlog::{recording, CommitLog, Effect, LogCommit, LogError, MemoryLog, RecordingLog, SledLog};
use herald::fhir::subscription::SubscriptionLimits;
use herald::ingest::{self, CommitterConfig, Ingest, LaneCommand, LaneSink, LaneView, Replica, ResendRange, Retention};
use herald::ingest::{WriteEntry, WriteMethod};
use herald::store::{Store, StoredError, SubStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::{Receiver, TestServer};

const BASE: &str = "http://herald.test/fhir";
const T: Duration = Duration::from_secs(10);

pub(crate) fn limits() -> SubscriptionLimits {
    SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 }
}

// ---------------------------------------------------------------------------------------------
// The contract.

/// A log under test, the store its writer applies commits to, and how to read back what the
/// log holds (`None`: the store is its only record, as for `SledLog`).
struct Subject {
    name: &'static str,
    log: Arc<dyn CommitLog>,
    store: Store,
    read: Option<Box<dyn Fn() -> Vec<LogCommit> + Send + Sync>>,
    _dirs: Vec<tempfile::TempDir>,
    /// What the log needs alive while it is used (a NATS server, the runtime of its client).
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

/// Every `CommitLog` implementation in the repository, each over a fresh store. A new one is
/// one more entry here.
fn subjects() -> Vec<Subject> {
    let mut out = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log: Arc<dyn CommitLog> = Arc::new(SledLog::new(store.clone()));
        out.push(Subject { name: "sled", log, store, read: None, _dirs: vec![dir], _keep: vec![] });
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let memory = Arc::new(MemoryLog::new());
        let reader = memory.clone();
        out.push(Subject {
            name: "memory",
            log: memory,
            store,
            read: Some(Box::new(move || reader.commits().unwrap())),
            _dirs: vec![dir],
            _keep: vec![],
        });
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("commits");
        let store = Store::open(dir.path()).unwrap();
        let log: Arc<dyn CommitLog> = Arc::new(RecordingLog::new(Box::new(MemoryLog::new()), &path).unwrap());
        let reader = log.clone();
        out.push(Subject {
            name: "recording",
            log,
            store,
            read: Some(Box::new(move || {
                reader.make_durable().unwrap();
                recording::read(&path).unwrap()
            })),
            _dirs: vec![dir, files],
            _keep: vec![],
        });
    }
    // A JetStream stream on a real nats-server, when one is installed (CI installs it).
    if let Some(nats) = crate::support::nats::NatsCluster::single() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let log = Arc::new(runtime.block_on(async { crate::cluster_log::open(&crate::cluster_log::connect(&nats).await, 1).await }));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (reader, handle) = (log.clone(), runtime.handle().clone());
        out.push(Subject {
            name: "jetstream",
            log,
            store,
            read: Some(Box::new(move || {
                reader.make_durable().unwrap();
                handle.block_on(reader.read(1, usize::MAX)).unwrap()
            })),
            _dirs: vec![dir],
            _keep: vec![Box::new(runtime), Box::new(nats)],
        });
    }
    out
}

/// A commit of `n` puts, keys under the audit namespace (`a`, which nothing else reads here).
fn commit(seq: u64, n: usize) -> LogCommit {
    let ops = (0..n).map(|i| (format!("a{seq:08}-{i}").into_bytes(), Some(format!("{{\"seq\":{seq},\"i\":{i}}}").into_bytes()))).collect();
    LogCommit { seq, ops, effects: vec![Effect::Subscription(format!("s{seq}"))], lanes: vec![format!("s{seq}")] }
}

/// What the writer does with a commit: apply it to its store, then append it to the log.
fn write(s: &Subject, c: &LogCommit) -> Result<(), LogError> {
    s.store.apply_logged(c.seq, &c.ops).unwrap();
    s.log.append(c)
}

#[test]
fn every_commit_log_numbers_gap_free_keeps_order_and_refuses_anything_else() {
    for s in subjects() {
        let written: Vec<LogCommit> = (1..=5).map(|seq| commit(seq, seq as usize)).collect();
        for c in &written {
            write(&s, c).unwrap_or_else(|e| panic!("{}: commit {} refused: {e}", s.name, c.seq));
        }
        for bad in [7, 5, 1, 0] {
            let err = s.log.append(&commit(bad, 1)).expect_err(&format!("{}: commit {bad} after 5 was accepted", s.name));
            assert!(matches!(err, LogError::OutOfOrder { seq, last: 5 } if seq == bad), "{}: {err}", s.name);
        }
        let sixth = commit(6, 2);
        write(&s, &sixth).unwrap();
        if let Some(read) = &s.read {
            let mut expected = written.clone();
            expected.push(sixth);
            assert_eq!(read(), expected, "{}: the log holds exactly what was appended, in order", s.name);
        }
        // Atomic: every op of every commit is in the store, none of a refused one.
        let contents = s.store.contents(b"").unwrap();
        let keys: Vec<String> =
            contents.iter().filter(|(k, _)| k.first() == Some(&b'a')).map(|(k, _)| String::from_utf8_lossy(k).into()).collect();
        assert_eq!(keys.len(), 1 + 2 + 3 + 4 + 5 + 2, "{}: {keys:?}", s.name);
        assert!(!keys.iter().any(|k| k.starts_with("a00000007")), "{}", s.name);
    }
}

#[test]
fn every_commit_log_says_durable_only_what_make_durable_covered() {
    for s in subjects() {
        assert_eq!(s.log.durable_through(), 0, "{}", s.name);
        for seq in 1..=3 {
            write(&s, &commit(seq, 1)).unwrap();
        }
        assert_eq!(s.log.durable_through(), 0, "{}: nothing is durable before make_durable", s.name);
        assert_eq!(s.log.make_durable().unwrap(), 3, "{}", s.name);
        assert_eq!(s.log.durable_through(), 3, "{}", s.name);
        write(&s, &commit(4, 1)).unwrap();
        assert_eq!(s.log.durable_through(), 3, "{}: an append is not durable by itself", s.name);
        assert_eq!(s.log.make_durable().unwrap(), 4, "{}", s.name);
        assert_eq!(s.log.make_durable().unwrap(), 4, "{}: asking again changes nothing", s.name);
    }
}

#[test]
fn every_commit_log_covers_everything_appended_before_make_durable_under_concurrency() {
    for s in subjects() {
        let s = Arc::new(s);
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (s, appended) = (s.clone(), appended.clone());
            std::thread::spawn(move || {
                for seq in 1..=300 {
                    write(&s, &commit(seq, 1 + (seq as usize % 3))).unwrap();
                    appended.store(seq, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let before = appended.load(std::sync::atomic::Ordering::SeqCst);
            let durable = s.log.make_durable().unwrap();
            // The writer may be between appending a commit and counting it.
            let after = appended.load(std::sync::atomic::Ordering::SeqCst) + 1;
            assert!(durable >= before, "{}: make_durable answered {durable} with {before} appended before it", s.name);
            assert!(durable <= after, "{}: make_durable answered {durable} with only {after} appended", s.name);
            assert!(durable >= last, "{}: durable went back from {last} to {durable}", s.name);
            last = durable;
        }
        writer.join().unwrap();
        assert_eq!(s.log.make_durable().unwrap(), 300, "{}", s.name);
    }
}

#[test]
fn a_cut_or_damaged_recording_is_refused_not_half_read() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("commits");
    let log = RecordingLog::new(Box::new(MemoryLog::new()), &path).unwrap();
    for seq in 1..=3 {
        log.append(&commit(seq, 3)).unwrap();
    }
    log.make_durable().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(recording::read(&path).unwrap().len(), 3);
    for cut in [bytes.len() - 1, bytes.len() - 10, bytes.len() / 2, 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(recording::read(&path).is_err(), "a recording cut at {cut} of {} was read", bytes.len());
    }
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    assert!(matches!(recording::read(&path), Err(LogError::Corrupt(_))));
}

// ---------------------------------------------------------------------------------------------
// A writer on a log.

/// Remembers the last lane publication of each subscription.
#[derive(Default)]
struct Lanes(Mutex<HashMap<String, Option<String>>>);

/// A lane view as text: what the lane would act on (spec, topic, filters, state).
fn describe(view: &Option<LaneView>) -> Option<String> {
    view.as_ref().map(|v| format!("{:?} {:?}", v.entry, v.state))
}

impl LaneSink for Lanes {
    fn publish(&self, sub: &str, view: Option<LaneView>) {
        self.0.lock().unwrap().insert(sub.to_string(), describe(&view));
    }
}

struct Writer {
    ingest: Ingest,
    store: Store,
    log: Arc<MemoryLog>,
    lanes: Arc<Lanes>,
    stop: CancellationToken,
    tracker: TaskTracker,
    dir: tempfile::TempDir,
}

/// The committer settings of these tests (and `cluster_log`'s): base `BASE`, `limits()`,
/// retention in small batches, no flush delay.
pub(crate) fn committer_config() -> CommitterConfig {
    CommitterConfig {
        base_url: BASE.into(),
        limits: limits(),
        enforce_task_state_machine: false,
        retention: Retention { keep: 1000, max_age: Duration::from_secs(3600), interval: Duration::from_secs(3600), batch: 2 },
        entities: Default::default(),
        flush_delay: Duration::ZERO,
        store_lost: CancellationToken::new(),
        data_dir: std::path::PathBuf::new(),
        flush_timeout: Duration::from_secs(30),
        ack_linger: Duration::ZERO,
        min_free_bytes: 0,
        record_commits: None,
    }
}

impl Writer {
    fn start() -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ingest, queue) = ingest::channel(64);
        let cfg = committer_config();
        let log = Arc::new(MemoryLog::new());
        let lanes = Arc::new(Lanes::default());
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        ingest::spawn_with_log(store.clone(), log.clone(), cfg, queue, lanes.clone(), &tracker, stop.clone()).unwrap();
        Writer { ingest, store, log, lanes, stop, tracker, dir }
    }

    async fn stop(self) -> (Store, Arc<MemoryLog>, Arc<Lanes>, tempfile::TempDir) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        (self.store, self.log, self.lanes, self.dir)
    }

    async fn put(&self, resource: Value) -> u64 {
        let r = self.ingest.write(entry(WriteMethod::Update, resource)).await.unwrap();
        r.record.seq
    }
}

pub(crate) fn entry(method: WriteMethod, resource: Value) -> WriteEntry {
    WriteEntry {
        method,
        resource_type: resource["resourceType"].as_str().unwrap().to_string(),
        id: resource["id"].as_str().unwrap().to_string(),
        resource: Some(resource),
        if_match: None,
        provenance_for: None,
        patched: false,
    }
}

pub(crate) fn delete(ty: &str, id: &str) -> WriteEntry {
    WriteEntry {
        method: WriteMethod::Delete,
        resource_type: ty.into(),
        id: id.into(),
        resource: None,
        if_match: None,
        provenance_for: None,
        patched: false,
    }
}

#[tokio::test]
async fn a_write_is_acknowledged_only_once_the_log_says_it_is_durable() {
    let w = Writer::start();
    w.log.hold(true);
    let before = w.log.len();
    let ingest = w.ingest.clone();
    let mut reply = tokio::spawn(async move {
        ingest.write(entry(WriteMethod::Update, json!({ "resourceType": "Patient", "id": "p", "active": true }))).await
    });
    // The commit reaches the log; the reply waits for durability.
    crate::support::until("the write is appended", || async { w.log.len() > before }).await;
    let appended = w.log.len() as u64;
    assert!(w.log.durable_through() < appended);
    assert!(futures_util::FutureExt::now_or_never(&mut reply).is_none(), "answered before the log made the write durable");
    w.log.hold(false);
    let written = reply.await.unwrap().unwrap();
    assert_eq!(written.record.id, "p");
    assert!(w.log.durable_through() >= appended);

    // A log that fails: the write is not acknowledged.
    w.log.fail(true);
    let refused = w.ingest.write(entry(WriteMethod::Update, json!({ "resourceType": "Patient", "id": "q" }))).await;
    assert!(refused.is_err(), "a write was acknowledged although the log could not make it durable");
    w.stop().await;
}

pub(crate) fn topic(id: &str, url: &str) -> Value {
    json!({
        "resourceType": "SubscriptionTopic", "id": id, "url": url, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update", "delete"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "owner" }, { "resource": "Task", "filterParameter": "note-author" }],
        "notificationShape": [{ "resource": "Task", "include": ["Task:focus"] }]
    })
}

pub(crate) fn subscription(id: &str, topic: &str, filter: Option<(&str, &str)>) -> Value {
    let mut sub = json!({
        "resourceType": "Subscription", "id": id, "status": "requested", "topic": topic,
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": "http://127.0.0.1:9/hook", "content": "id-only", "contentType": "application/fhir+json"
    });
    if let Some((param, value)) = filter {
        sub["filterBy"] = json!([{ "filterParameter": param, "value": value }]);
    }
    sub
}

pub(crate) fn task(id: &str, owner: &str, status: &str) -> Value {
    json!({ "resourceType": "Task", "id": id, "status": status, "intent": "order", "owner": { "reference": owner },
            "focus": { "reference": "ServiceRequest/sr" }, "note": [{ "authorString": owner, "text": "n" }] })
}

fn error(code: &str) -> StoredError {
    StoredError { code: code.into(), text: format!("{code} from the endpoint"), at: 1_700_000_000_000 }
}

/// A workload touching every kind of commit: topics, a custom SearchParameter (and its url
/// changing), subscriptions with filters, matched writes, a transaction, deliveries, retries,
/// dead letters and the error they cause, a dead-letter replay and a resend, withheld events,
/// status changes, retention, deletes of resources, of a subscription (its events purged in
/// bounded commits) and of a topic.
async fn mixed_workload(w: &Writer) {
    w.put(
        json!({ "resourceType": "SearchParameter", "id": "note-author", "url": "http://herald.test/sp/note-author", "name": "note-author",
                  "status": "active", "description": "Task note author", "code": "note-author", "base": ["Task"], "type": "string",
                  "expression": "Task.note.author.ofType(string)" }),
    )
    .await;
    w.put(topic("tasks", "http://herald.test/topics/tasks")).await;
    w.put(topic("spare", "http://herald.test/topics/spare")).await;
    w.put(json!({ "resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order", "subject": { "reference": "Patient/p" } }))
        .await;
    let topic_url = "http://herald.test/topics/tasks";
    w.put(subscription("all", topic_url, None)).await;
    w.put(subscription("lab", topic_url, Some(("owner", "Organization/lab")))).await;
    w.put(subscription("noted", topic_url, Some(("note-author", "Organization/clinic")))).await;
    w.put(subscription("gone", topic_url, None)).await;
    w.put(subscription("spare", "http://herald.test/topics/spare", None)).await;
    let states = |id: &str| w.store.sub_state(id).unwrap().unwrap();
    let inc = |id: &str| states(id).incarnation;
    for id in ["all", "lab", "noted", "gone"] {
        w.ingest
            .lane(
                inc(id),
                LaneCommand::Status { sub: id.into(), generation: states(id).generation, status: SubStatus::Active, error: None },
            )
            .await;
    }
    for i in 0..6 {
        let owner = if i % 2 == 0 { "Organization/lab" } else { "Organization/clinic" };
        w.put(task(&format!("t{i}"), owner, "requested")).await;
    }
    w.put(task("t0", "Organization/lab", "in-progress")).await;
    w.ingest
        .write_all(
            vec![
                entry(WriteMethod::Update, task("x1", "Organization/lab", "requested")),
                entry(WriteMethod::Update, task("x2", "Organization/clinic", "requested")),
            ],
            true,
        )
        .await
        .unwrap();
    w.ingest.write(delete("Task", "t5")).await.unwrap();
    // Delivery results, as lanes report them.
    let now = 1_700_000_000_000;
    w.ingest.lane(inc("all"), LaneCommand::Delivered { sub: "all".into(), through: 4, at: now }).await;
    w.ingest
        .lane(inc("all"), LaneCommand::Retry { sub: "all".into(), attempts: 2, next_attempt_at: now + 500, first_failure_at: now })
        .await;
    w.ingest.lane(inc("lab"), LaneCommand::Withheld { sub: "lab".into(), events: vec![(1, "Task".into()), (2, "Task".into())] }).await;
    w.ingest
        .lane(
            inc("lab"),
            LaneCommand::Dead {
                sub: "lab".into(),
                generation: states("lab").generation,
                through: 3,
                attempts: 5,
                error: error("error-response"),
            },
        )
        .await;
    w.ingest.lane(inc("noted"), LaneCommand::Delivered { sub: "noted".into(), through: 100, at: now }).await;
    // A later awaited request is committed after every lane report before it.
    w.put(json!({ "resourceType": "Patient", "id": "p" })).await;
    w.ingest.resend("lab", ResendRange::Numbers { since: Some(1), until: Some(3) }, true, Some("operator".into())).await.unwrap();
    w.ingest.lane(inc("lab"), LaneCommand::Resent { sub: "lab".into(), id: states("lab").resend.unwrap().id, through: 2 }).await;
    w.ingest.resend("all", ResendRange::Numbers { since: Some(1), until: Some(2) }, false, None).await.unwrap();
    w.ingest
        .lane(
            inc("all"),
            LaneCommand::ResendAbandoned { sub: "all".into(), id: states("all").resend.unwrap().id, error: error("no-response") },
        )
        .await;
    w.ingest.lane(inc("all"), LaneCommand::Delivered { sub: "all".into(), through: 8, at: now + 1000 }).await;
    // A SearchParameter a filter uses keeps its definition; an unused one changes its url,
    // then goes. A subscription, then a topic, goes.
    let moved = json!({ "resourceType": "SearchParameter", "id": "note-author", "url": "http://herald.test/sp/note-author-2", "name": "note-author",
                        "status": "active", "description": "Task note author", "code": "note-author", "base": ["Task"], "type": "string",
                        "expression": "Task.note.author.ofType(string)" });
    let refused = w.ingest.write(entry(WriteMethod::Update, moved)).await;
    assert!(matches!(refused, Err(ingest::IngestError::Conflict(_))), "{refused:?}");
    assert!(matches!(w.ingest.write(delete("SearchParameter", "note-author")).await, Err(ingest::IngestError::Conflict(_))));
    let unused = |url: &str| {
        json!({ "resourceType": "SearchParameter", "id": "due", "url": url, "name": "due", "status": "active",
                                     "description": "Task due", "code": "due", "base": ["Task"], "type": "date",
                                     "expression": "Task.restriction.period.end" })
    };
    w.put(unused("http://herald.test/sp/due")).await;
    w.put(unused("http://herald.test/sp/due-2")).await;
    w.ingest.write(delete("SearchParameter", "due")).await.unwrap();
    w.ingest.write(delete("Subscription", "gone")).await.unwrap();
    w.ingest.write(delete("Subscription", "spare")).await.unwrap();
    w.ingest.write(delete("SubscriptionTopic", "spare")).await.unwrap();
    w.put(task("t1", "Organization/clinic", "completed")).await;
    // Purges of "gone" run while idle, two events per commit: wait until they are done.
    crate::support::until("the deleted subscription's events are purged", || async { w.store.purges().unwrap().is_empty() }).await;
    w.put(json!({ "resourceType": "Patient", "id": "p", "active": true })).await;
}

/// A store as comparable rows: every key and value except the namespaces `except`.
pub(crate) fn rows(store: &Store, except: &[u8]) -> Vec<(String, String)> {
    store
        .contents(except)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into(), String::from_utf8_lossy(&v).into()))
        .collect()
}

pub(crate) fn assert_same_rows(a: &[(String, String)], b: &[(String, String)], what: &str) {
    let diff: Vec<_> = a.iter().filter(|r| !b.contains(r)).chain(b.iter().filter(|r| !a.contains(r))).take(5).collect();
    assert!(diff.is_empty() && a.len() == b.len(), "{what}: {} vs {} rows; first differences: {diff:?}", a.len(), b.len());
}

#[tokio::test]
async fn replaying_the_log_of_a_mixed_workload_gives_the_same_store_registry_states_and_lanes() {
    let w = Writer::start();
    mixed_workload(&w).await;
    let (store, log, lanes, _dir) = w.stop().await;
    let commits = log.commits().unwrap();
    assert!(commits.len() > 30, "{} commits", commits.len());
    assert!(commits.windows(2).all(|p| p[1].seq == p[0].seq + 1), "gap-free sequence");
    assert!(commits
        .iter()
        .any(|c| c.effects.iter().any(|e| matches!(e, Effect::SearchParameter { retired_url: Some(u), .. } if u.ends_with("/due")))));

    let fresh = tempfile::tempdir().unwrap();
    let mut replica = Replica::open(Store::open(fresh.path()).unwrap(), BASE, limits()).unwrap();
    let mut told: HashMap<String, Option<String>> = HashMap::new();
    for c in &commits {
        for (sub, view) in replica.apply(c).unwrap() {
            told.insert(sub, describe(&view));
        }
    }
    // The same store, byte for byte, but its own metadata (identity, flush marks).
    assert_same_rows(&rows(&store, b"m"), &rows(replica.store(), b"m"), "store");
    // The same registry and states as the writer's store implies (what a restart loads), and
    // the same lanes as the writer last published.
    let original = Replica::open(store.clone(), BASE, limits()).unwrap();
    assert_eq!(original.registry().fingerprint(), replica.registry().fingerprint(), "registry");
    assert_eq!(original.states(), replica.states(), "subscription states");
    let published = lanes.0.lock().unwrap().clone();
    for (sub, view) in &told {
        let writer = published.get(sub).cloned().flatten().unwrap_or_default();
        let replica = view.clone().unwrap_or_default();
        let at = writer.chars().zip(replica.chars()).position(|(a, b)| a != b).unwrap_or(writer.len().min(replica.len()));
        let from = at.saturating_sub(80);
        assert!(
            published.get(sub) == Some(view),
            "lane of {sub} differs at {at}: writer …{}… replica …{}…",
            writer.get(from..(at + 120).min(writer.len())).unwrap_or_default(),
            replica.get(from..(at + 120).min(replica.len())).unwrap_or_default()
        );
    }
    for sub in ["all", "lab", "noted", "gone", "spare"] {
        assert!(told.contains_key(sub), "the replica told no lane of {sub}");
    }
    assert_eq!(told.get("gone"), Some(&None));
    assert!(replica.registry().subscription("gone").is_none() && replica.registry().topic("spare").is_none());
}

#[tokio::test]
async fn a_replica_that_crashed_between_append_and_apply_resumes_from_what_it_recorded() {
    let w = Writer::start();
    mixed_workload(&w).await;
    let (store, log, _lanes, _dir) = w.stop().await;
    let commits = log.durable_commits().unwrap();
    let half = commits.len() / 2;

    // Applies the first half, records (flushes) a quarter, then "crashes": the log holds
    // commits the store never applied, and the store may hold some past what it recorded.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut replica = Replica::open(Store::open(dir.path()).unwrap(), BASE, limits()).unwrap();
        for (i, c) in commits.iter().take(half).enumerate() {
            replica.apply(c).unwrap();
            if i + 1 == half / 2 {
                replica.store().flush().unwrap();
            }
        }
    }
    let reopened = crate::support::when_unlocked(|| Store::open(dir.path()));
    let recorded = reopened.log_seq();
    assert!(recorded >= (half / 2) as u64 && recorded <= half as u64, "recorded {recorded} of {half}");
    let mut replica = Replica::open(reopened, BASE, limits()).unwrap();
    for c in commits.iter().filter(|c| c.seq > recorded) {
        replica.apply(c).unwrap();
    }
    assert_same_rows(&rows(&store, b"m"), &rows(replica.store(), b"m"), "store after resuming");
    let original = Replica::open(store.clone(), BASE, limits()).unwrap();
    assert_eq!(original.registry().fingerprint(), replica.registry().fingerprint());
    assert_eq!(original.states(), replica.states());
}

// ---------------------------------------------------------------------------------------------
// The log of a running server, with real lanes.

/// An answer of a server as comparable JSON: the bundle's own id, timestamp and meta, which
/// every answer makes anew, left out, and each uuid (the ids of generated resources, which
/// every answer makes anew too, and of subscriptions) named by its order of appearance.
fn normalized(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        for k in ["id", "timestamp", "meta"] {
            obj.remove(k);
        }
    }
    let text = v.to_string();
    let uuid = regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let mut seen: Vec<String> = Vec::new();
    let renamed = uuid.replace_all(&text, |c: &regex::Captures| {
        let u = c[0].to_string();
        let n = seen.iter().position(|s| *s == u).unwrap_or_else(|| {
            seen.push(u);
            seen.len() - 1
        });
        format!("uuid-{n}")
    });
    serde_json::from_str(&renamed).unwrap()
}

async fn admin(server: &TestServer, id: &str) -> Value {
    let url = server.base.replace("/fhir", &format!("/admin/api/subscriptions/{id}"));
    server.client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_servers_recorded_log_replays_into_a_store_that_answers_status_and_events_identically() {
    let files = tempfile::tempdir().unwrap();
    let record = files.path().join("commits");
    let record_path = record.display().to_string();
    let a = TestServer::start_in(tempfile::tempdir().unwrap(), |c| {
        c.server.base_url = BASE.into();
        c.store.record_commits = record_path.clone();
    })
    .await;
    let ok = Receiver::start().await;
    let failing = Receiver::start().await;
    let topic = "http://herald.test/topics/replayed";
    a.task_topic(topic).await;
    let all = a.subscribe(topic, &ok.url, json!({})).await;
    let full = a.subscribe(topic, &ok.url, json!({ "content": "full-resource" })).await;
    let lab = a.subscribe(topic, &failing.url, json!({ "filterBy": [{ "filterParameter": "owner", "value": "Organization/lab" }] })).await;
    for id in [&all, &full, &lab] {
        a.wait_status(id, "active", T).await;
    }
    failing.set_status(500);
    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(a.create_task("requested", if i % 2 == 0 { "Organization/lab" } else { "Organization/clinic" }).await);
    }
    let (s, b) = a
        .put(
            &format!("Task/{}", tasks[0]),
            &json!({ "resourceType": "Task", "id": tasks[0], "status": "in-progress", "intent": "order",
                                                            "owner": { "reference": "Organization/lab" } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = a.delete(&format!("Task/{}", tasks[3])).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    a.wait_status(&lab, "error", T).await;
    let (s, oo) = a.post(&format!("Subscription/{all}/$resend?eventsSinceNumber=1&eventsUntilNumber=2"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{oo}");
    // Quiet before stopping: every event accepted, no resend left (`lab` is in error, where
    // events are numbered and kept but not sent).
    for id in [&all, &full] {
        crate::support::until("delivery settles", || async {
            let row = admin(&a, id).await;
            row["pending"] == 0 && row["resending"] == false
        })
        .await;
    }
    let dir_a = a.stop_keeping().await;

    let commits = recording::read(&record).unwrap();
    assert!(commits.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    let dir_b = tempfile::tempdir().unwrap();
    {
        let mut replica = Replica::open(Store::open(dir_b.path()).unwrap(), BASE, limits()).unwrap();
        for c in &commits {
            replica.apply(c).unwrap();
        }
        replica.store().flush_and_record().unwrap();
        let original = crate::support::when_unlocked(|| Store::open(dir_a.path()));
        // Delivery attempts are audited outside commits (node-local); everything else is equal,
        // and every audited change of the replica is the original's, under the same number.
        assert_same_rows(&rows(&original, b"ma"), &rows(replica.store(), b"ma"), "store");
        let audit_a = rows(&original, b"");
        let audit_b: Vec<_> = rows(replica.store(), b"").into_iter().filter(|(k, _)| k.starts_with('a')).collect();
        assert!(!audit_b.is_empty());
        assert!(audit_b.iter().all(|r| audit_a.contains(r)), "an audit entry of the replica differs from the original's");
        let rebuilt = Replica::open(original, BASE, limits()).unwrap();
        assert_eq!(rebuilt.registry().fingerprint(), replica.registry().fingerprint());
        assert_eq!(rebuilt.states(), replica.states());
    }

    // Both directories served again: the same answers.
    let a = TestServer::start_in(dir_a, |c| c.server.base_url = BASE.into()).await;
    let b = TestServer::start_in(dir_b, |c| c.server.base_url = BASE.into()).await;
    for id in [&all, &full, &lab] {
        for path in [
            format!("Subscription/{id}/$status"),
            format!("Subscription/{id}/$events"),
            format!("Subscription/{id}/$events?content=full-resource"),
            format!("Subscription/{id}"),
        ] {
            let (sa, ba) = a.get(&path).await;
            let (sb, bb) = b.get(&path).await;
            assert_eq!(sa, StatusCode::OK, "{path}: {ba}");
            assert_eq!((sa, normalized(ba)), (sb, normalized(bb)), "{path}");
        }
    }
    let (_, history_a) = a.get("Task/_history").await;
    let (_, history_b) = b.get("Task/_history").await;
    assert_eq!(normalized(history_a), normalized(history_b));
    a.stop().await;
    b.stop().await;
}
