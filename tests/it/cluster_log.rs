//! The JetStream commit log (`herald::commitlog::JetStreamLog`) against real NATS servers
//! (`support::nats`): a deposed writer is fenced by the stream and never reports anything
//! durable after the fence point; with a three-server cluster and replicas 3, appends go on
//! being acknowledged while a server is SIGKILLed and the restarted server catches up; and a
//! `Replica` applying what a writer (`ingest::spawn_with_log`) published gets the writer's
//! store. The contract suite of every `CommitLog` runs on it too (`commit_log::subjects`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::commitlog::{CommitLog, Effect, JetStreamLog, LogCommit, LogError, LogStream};
use herald::ingest::{self, LaneCommand, LaneSink, LaneView, Replica, WriteMethod};
use herald::store::{Store, SubStatus};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commit_log::{assert_same_rows, committer_config, delete, entry, limits, rows, subscription, task, topic};
use crate::support::nats::NatsCluster;

const BASE: &str = "http://herald.test/fhir";

/// A client of `nats` (all its servers), retried while the servers settle.
pub async fn connect(nats: &NatsCluster) -> async_nats::Client {
    let urls: Vec<String> = nats.urls().split(',').map(String::from).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match async_nats::connect(urls.clone()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connecting to {urls:?}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to {urls:?}: {e}"),
        }
    }
}

/// Opens the log on `stream` (replicas `replicas`), retried while the cluster elects leaders.
pub async fn open(client: &async_nats::Client, replicas: usize) -> JetStreamLog {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match JetStreamLog::open(client.clone(), &LogStream::new("HERALD_LOG", "herald.log", replicas)).await {
            Ok(log) => return log,
            Err(e) if Instant::now() < deadline => {
                eprintln!("opening the log: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot open the log: {e:?}"),
        }
    }
}

fn commit(seq: u64, writer: &str) -> LogCommit {
    LogCommit {
        seq,
        ops: vec![(format!("a{seq:08}").into_bytes(), Some(format!("{{\"by\":\"{writer}\"}}").into_bytes()))],
        effects: vec![Effect::Subscription(format!("s{seq}"))],
        lanes: vec![],
    }
}

/// `make_durable` on a blocking thread, as the flusher calls it.
async fn durable(log: &Arc<JetStreamLog>) -> Result<u64, LogError> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.make_durable()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_appends_behind_another_is_fenced_by_the_stream_and_never_durable_again() {
    let Some(nats) = NatsCluster::single() else { return };
    let client = connect(&nats).await;
    let a = Arc::new(open(&client, 1).await);
    let b = Arc::new(open(&client, 1).await);
    assert_eq!((a.last_seq(), b.last_seq()), (0, 0));

    // Both continue from an empty stream: A appends 1 first, B's 1 is refused.
    a.append(&commit(1, "a")).unwrap();
    assert_eq!(durable(&a).await.unwrap(), 1);
    b.append(&commit(1, "b")).unwrap();
    let err = durable(&b).await.expect_err("a second commit 1 was made durable");
    assert!(err.to_string().contains("failed") && format!("{err:?}").contains("fenced: the stream holds seq 1"), "{err:?}");
    assert_eq!(b.durable_through(), 0);
    // Broken for good: nothing appends, nothing more is durable.
    assert!(matches!(b.append(&commit(2, "b")), Err(LogError::Failed(_))));
    assert!(durable(&b).await.is_err());

    // A writer opened behind A (at 1) pipelines three commits while A appends 2 and 3: its
    // first is refused, and so are the ones behind it, although the third expects seq 3,
    // which the stream then holds (it is A's, not its own predecessor).
    let c = Arc::new(open(&client, 1).await);
    assert_eq!(c.last_seq(), 1);
    for seq in 2..=3 {
        a.append(&commit(seq, "a")).unwrap();
    }
    assert_eq!(durable(&a).await.unwrap(), 3);
    for seq in 2..=4 {
        // The refusal of C's 2 may come back before C appends 3 or 4: then C is already broken
        // and refuses them itself.
        if let Err(e) = c.append(&commit(seq, "c")) {
            assert!(seq > 2 && format!("{e:?}").contains("fenced"), "append {seq}: {e:?}");
            break;
        }
    }
    let err = durable(&c).await.expect_err("a deposed writer's commits were made durable");
    assert!(format!("{err:?}").contains("fenced"), "{err:?}");
    // A goes on at 4: had C's 4 landed on A's 3, A's 4 would be refused.
    a.append(&commit(4, "a")).unwrap();
    assert_eq!(durable(&a).await.unwrap(), 4);
    let held = a.read(1, 100).await.unwrap();
    assert_eq!(held, (1..=4).map(|seq| commit(seq, "a")).collect::<Vec<_>>(), "the stream holds A's commits only");
    assert_eq!(c.durable_through(), 1, "nothing after the fence point is durable for C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_servers_and_replicas_3_appends_are_acked_while_a_server_is_killed_and_it_catches_up() {
    let Some(mut nats) = NatsCluster::three() else { return };
    let client = connect(&nats).await;
    let log = Arc::new(open(&client, 3).await);
    let started = Instant::now();
    for seq in 1..=200 {
        log.append(&commit(seq, "w")).unwrap();
    }
    assert_eq!(durable(&log).await.unwrap(), 200);
    let r3 = started.elapsed();

    // Kill the stream's leader (the hardest case: an election before the next ack).
    let js = async_nats::jetstream::new(client.clone());
    let info = js.get_stream("HERALD_LOG").await.unwrap().get_info().await.unwrap();
    let leader = info.cluster.and_then(|c| c.leader).expect("the stream has a leader");
    let victim = nats.servers.iter().position(|s| s.name == leader).unwrap();
    nats.kill(victim);
    let killed = Instant::now();
    for seq in 201..=400 {
        log.append(&commit(seq, "w")).unwrap();
        if seq % 50 == 0 {
            assert_eq!(durable(&log).await.unwrap(), seq, "appends go on being acknowledged with {leader} dead");
        }
    }
    let failover = killed.elapsed();

    nats.restart(victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = nats.servers[victim].stream_last_seq("HERALD_LOG");
        if last == Some(400) {
            break;
        }
        assert!(Instant::now() < deadline, "{leader} restarted holds {last:?} of 400");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let commits = log.read(1, 1000).await.unwrap();
    assert_eq!(commits.len(), 400);
    assert!(commits.iter().enumerate().all(|(i, c)| c.seq == i as u64 + 1));
    println!("figures: R3, 200 pipelined commits acknowledged in {r3:?}; 200 more across the leader's SIGKILL in {failover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_r1_append_latency_one_at_a_time_and_pipelined_throughput() {
    let Some(nats) = NatsCluster::single() else { return };
    let client = connect(&nats).await;
    let log = Arc::new(open(&client, 1).await);
    let started = Instant::now();
    let mut lat = Vec::new();
    for seq in 1..=200 {
        let one = Instant::now();
        log.append(&commit(seq, "w")).unwrap();
        assert_eq!(durable(&log).await.unwrap(), seq);
        lat.push(one.elapsed());
    }
    let one_by_one = started.elapsed();
    let started = Instant::now();
    for seq in 201..=2200 {
        log.append(&commit(seq, "w")).unwrap();
    }
    assert_eq!(durable(&log).await.unwrap(), 2200);
    let pipelined = started.elapsed();
    lat.sort();
    println!(
        "figures: R1, append+make_durable one at a time: {one_by_one:?} for 200 (median {:?}, p99 {:?}); 2000 pipelined: {pipelined:?} ({:.0} commits/s)",
        lat[100],
        lat[197],
        2000.0 / pipelined.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// A writer on the JetStream log, and a replica of it.

struct NoLanes;

impl LaneSink for NoLanes {
    fn publish(&self, _sub: &str, _view: Option<LaneView>) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_applying_what_a_writer_published_to_jetstream_gets_the_writers_store() {
    let Some(nats) = NatsCluster::single() else { return };
    let client = connect(&nats).await;
    let log = Arc::new(open(&client, 1).await);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (ingest, queue) = ingest::channel(64);
    let cfg = committer_config();
    let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
    ingest::spawn_with_log(store.clone(), log.clone(), cfg, queue, Arc::new(NoLanes), &tracker, stop.clone()).unwrap();

    let topic_url = "http://herald.test/topics/tasks";
    ingest.write(entry(WriteMethod::Update, topic("tasks", topic_url))).await.unwrap();
    for (id, filter) in [("all", None), ("lab", Some(("owner", "Organization/lab")))] {
        ingest.write(entry(WriteMethod::Update, subscription(id, topic_url, filter))).await.unwrap();
        let state = store.sub_state(id).unwrap().unwrap();
        ingest
            .lane(
                state.incarnation,
                LaneCommand::Status { sub: id.into(), generation: state.generation, status: SubStatus::Active, error: None },
            )
            .await;
    }
    for i in 0..6 {
        let owner = if i % 2 == 0 { "Organization/lab" } else { "Organization/clinic" };
        ingest.write(entry(WriteMethod::Update, task(&format!("t{i}"), owner, "requested"))).await.unwrap();
    }
    let pair = vec![
        entry(WriteMethod::Update, task("x1", "Organization/lab", "requested")),
        entry(WriteMethod::Update, task("x2", "Organization/clinic", "requested")),
    ];
    ingest.write_all(pair, true).await.unwrap();
    let all = store.sub_state("all").unwrap().unwrap();
    ingest.lane(all.incarnation, LaneCommand::Delivered { sub: "all".into(), through: 3, at: 1_700_000_000_000 }).await;
    ingest.write(delete("Task", "t5")).await.unwrap();
    // A last awaited write: every lane report before it is committed and durable.
    ingest.write(entry(WriteMethod::Update, json!({ "resourceType": "Patient", "id": "p" }))).await.unwrap();
    stop.cancel();
    tracker.close();
    tracker.wait().await;

    let commits = log.read(1, usize::MAX).await.unwrap();
    assert!(commits.len() > 10, "{} commits", commits.len());
    assert_eq!(commits.last().map(|c| c.seq), Some(log.durable_through()));
    let fresh = tempfile::tempdir().unwrap();
    let mut replica = Replica::open(Store::open(fresh.path()).unwrap(), BASE, limits()).unwrap();
    for c in &commits {
        replica.apply(c).unwrap();
    }
    assert_same_rows(&rows(&store, b"m"), &rows(replica.store(), b"m"), "the replica against the writer");
    let original = Replica::open(store.clone(), BASE, limits()).unwrap();
    assert_eq!(original.registry().fingerprint(), replica.registry().fingerprint());
    assert_eq!(original.states(), replica.states());
}
