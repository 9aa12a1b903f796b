//! Cluster mode end to end (`herald serve --nats ... --node-id ...`, `herald::cluster`): real
//! `herald` processes on a real JetStream server. One node wins the writer lease; writes sent
//! to any node are acknowledged, readable at once on the node that took them, and delivered
//! in order with gap-free numbers; after `kill -9` of the writer another node takes over,
//! nothing acknowledged is lost and no number is given twice; a node whose data directory was
//! wiped rebuilds it from the log and answers reads as the others do.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::crash::{assert_gapless_in_order, setup};
use crate::support::binary::{free_port, Herald};
use crate::support::nats::NatsCluster;
use crate::support::Receiver;

const TTL: &str = "2s";

fn spawn(nats: &NatsCluster, dir: &Path, port: u16, id: &str, log: &Path) -> Herald {
    spawn_with(nats, dir, port, id, log, &[])
}

fn spawn_with(nats: &NatsCluster, dir: &Path, port: u16, id: &str, log: &Path, env: &[(&str, &str)]) -> Herald {
    let urls = nats.urls();
    let replicas = nats.servers.len().min(3).to_string();
    let mut all = vec![("HERALD_CLUSTER__REPLICAS", replicas.as_str()), ("HERALD_CLUSTER__LEASE_TTL", TTL)];
    all.extend_from_slice(env);
    Herald::spawn_args(dir, port, &["--nats", &urls, "--node-id", id], &all, Some(log))
}

struct Nodes {
    ids: Vec<String>,
    nodes: Vec<Option<Herald>>,
    dirs: Vec<tempfile::TempDir>,
    ports: Vec<u16>,
    logs: std::path::PathBuf,
    _logs: Option<tempfile::TempDir>,
}

impl Nodes {
    async fn start(nats: &NatsCluster, n: usize) -> Nodes {
        Self::start_with(nats, n, &[]).await
    }

    async fn start_with(nats: &NatsCluster, n: usize, env: &[(&str, &str)]) -> Nodes {
        // The nodes' logs; kept for a look after the test with HERALD_KEEP_LOGS set.
        let guard = tempfile::Builder::new().prefix("herald-cluster-").tempdir().unwrap();
        let logs = guard.path().to_path_buf();
        let guard = if std::env::var_os("HERALD_KEEP_LOGS").is_some() {
            eprintln!("node logs in {}", guard.keep().display());
            None
        } else {
            Some(guard)
        };
        let mut nodes = Nodes { ids: Vec::new(), nodes: Vec::new(), dirs: Vec::new(), ports: Vec::new(), logs, _logs: guard };
        for i in 0..n {
            let id = format!("n{i}");
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let h = spawn_with(nats, dir.path(), port, &id, &nodes.logs.join(format!("{id}.log")), env);
            nodes.ids.push(id);
            nodes.dirs.push(dir);
            nodes.ports.push(port);
            nodes.nodes.push(Some(h));
        }
        for h in nodes.nodes.iter_mut().flatten() {
            h.wait_ready(Duration::from_secs(60)).await;
        }
        nodes
    }

    fn node(&self, i: usize) -> &Herald {
        self.nodes[i].as_ref().unwrap()
    }

    async fn restart(&mut self, nats: &NatsCluster, i: usize) {
        let log = self.logs.join(format!("{}.log", self.ids[i]));
        let mut h = spawn(nats, self.dirs[i].path(), self.ports[i], &self.ids[i], &log);
        h.wait_ready(Duration::from_secs(60)).await;
        self.nodes[i] = Some(h);
    }
}

/// The node id holding the writer lease now, as the lease bucket says.
async fn writer(nats: &NatsCluster) -> Option<String> {
    let client = crate::cluster_log::connect(nats).await;
    let js = async_nats::jetstream::new(client);
    let replicas = nats.servers.len().min(3);
    let leases = herald::cluster::LeaseBucket::open(&js, herald::cluster::LEASE_BUCKET, Duration::from_secs(2), replicas).await.ok()?;
    let holder = leases.holder(herald::cluster::WRITER_LEASE).await.ok()??;
    holder.split_once(' ').map(|(id, _)| id.to_string())
}

async fn wait_writer(nats: &NatsCluster, not: Option<&str>, d: Duration) -> String {
    let deadline = Instant::now() + d;
    loop {
        if let Some(w) = writer(nats).await {
            if Some(w.as_str()) != not {
                return w;
            }
        }
        assert!(Instant::now() < deadline, "no new writer within {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives until every id in `want` was a focus; returns the event numbers in arrival order
/// and records which Task each number named, failing if a number comes back naming another.
async fn receive(rx: &Receiver, want: &HashSet<String>, given: &mut std::collections::HashMap<u64, String>, d: Duration) -> Vec<u64> {
    let deadline = Instant::now() + d;
    let mut seen = HashSet::new();
    let mut numbers = Vec::new();
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} acknowledged writes never notified", want.difference(&seen).count());
        let r = rx.next_of("event-notification", left).await;
        let (ns, focus) = (r.event_numbers(), r.focus_ids());
        assert_eq!(ns.len(), focus.len(), "one focus per event (id-only, maxCount 1)");
        for (n, f) in ns.iter().zip(&focus) {
            let first = given.entry(*n).or_insert_with(|| f.clone());
            assert_eq!(first, f, "event number {n} was given to two changes");
        }
        numbers.extend(ns);
        seen.extend(focus);
    }
    numbers
}

fn task(id: &str) -> Value {
    json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order" })
}

/// PUTs `Task/id` through `base`, retrying 503 and connection errors until `d` passes;
/// returns when it was acknowledged.
async fn put_until_acked(client: &reqwest::Client, base: &str, id: &str, d: Duration) -> Instant {
    let deadline = Instant::now() + d;
    loop {
        match client.put(format!("{base}/Task/{id}")).json(&task(id)).send().await {
            Ok(r) if r.status().is_success() => return Instant::now(),
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(r) => panic!("PUT Task/{id} through {base}: {} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "PUT Task/{id} through {base} not acknowledged within {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts PUTting `Task/<prefix>0..n` through `base`, each retried until acknowledged, and
/// returns once `Task/<prefix><landed>` is readable there (the burst is under way); the task
/// yields the ids acknowledged.
async fn burst(client: &reqwest::Client, base: &str, prefix: &str, n: usize, landed: usize) -> tokio::task::JoinHandle<HashSet<String>> {
    let (c, b, p) = (client.clone(), base.to_owned(), prefix.to_owned());
    let handle = tokio::spawn(async move {
        let mut ids = HashSet::new();
        for i in 0..n {
            let id = format!("{p}{i}");
            put_until_acked(&c, &b, &id, Duration::from_secs(60)).await;
            ids.insert(id);
        }
        ids
    });
    let probe = format!("{base}/Task/{prefix}{landed}");
    crate::support::until("the burst's first writes acknowledged", || {
        let (client, probe) = (client.clone(), probe.clone());
        async move { client.get(&probe).send().await.is_ok_and(|r| r.status() == StatusCode::OK) }
    })
    .await;
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_node_are_delivered_in_order_and_survive_kill_9_of_the_writer() {
    let Some(nats) = NatsCluster::single() else { return };
    let mut nodes = Nodes::start(&nats, 3).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let follower = (w + 1) % 3;
    let rx = Receiver::start().await;
    // Topic and subscription created through a follower: forwarded to the writer.
    let sub = setup(nodes.node(follower), &rx.url).await;
    rx.next_of("handshake", Duration::from_secs(20)).await;

    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    for i in 0..30 {
        let at = i % 3;
        let id = format!("a{i}");
        let base = nodes.node(at).base.clone();
        let r = client.put(format!("{base}/Task/{id}")).json(&task(&id)).send().await.unwrap();
        assert!(r.status().is_success(), "PUT through node {at}: {} {}", r.status(), r.text().await.unwrap());
        // Read your writes on the node that took the write.
        let read = client.get(format!("{base}/Task/{id}")).send().await.unwrap();
        assert_eq!(read.status(), StatusCode::OK, "Task/{id} not readable on node {at} right after its write");
        acked.insert(id);
    }
    let mut given = std::collections::HashMap::new();
    let numbers = receive(&rx, &acked, &mut given, Duration::from_secs(30)).await;
    assert_gapless_in_order(&numbers);
    // Followers serve the subscription's state from their own copy.
    for i in 0..3 {
        let r = client.get(format!("{}/Subscription/{sub}/$events", nodes.node(i).base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "$events on node {i}");
    }

    // kill -9 of the writer mid-burst: writes go on through a follower.
    let survivor = nodes.node(follower).base.clone();
    // Let some of the burst land first.
    let burst = burst(&client, &survivor, "b", 40, 9).await;
    let killed = Instant::now();
    nodes.nodes[w].take().unwrap().kill9();
    let second = wait_writer(&nats, Some(&first), Duration::from_secs(30)).await;
    let failover = killed.elapsed();
    let ids: HashSet<String> = burst.await.unwrap();
    acked.extend(ids.iter().cloned());
    let all = receive(&rx, &ids, &mut given, Duration::from_secs(60)).await;
    let mut numbers = numbers;
    numbers.extend(all);
    assert_gapless_in_order(&numbers);
    // A write retried after the writer died may have landed twice (two events); every number
    // still names one change only.
    assert!(given.len() >= acked.len());
    println!(
        "figures: writer {first} killed; {second} holds the lease after {failover:?} (lease TTL {TTL}); {} writes acknowledged",
        acked.len()
    );

    // The killed node comes back: its former writer store is rebuilt from the log.
    nodes.restart(&nats, w).await;
    for id in ["a0", "a29", "b39"] {
        let a = client.get(format!("{}/Task/{id}", nodes.node(w).base)).send().await.unwrap();
        assert_eq!(a.status(), StatusCode::OK, "Task/{id} on the restarted node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_from_the_log_and_answers_reads_identically() {
    let Some(nats) = NatsCluster::single() else { return };
    let mut nodes = Nodes::start(&nats, 2).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let f = 1 - w;
    let client = reqwest::Client::new();
    for i in 0..20 {
        put_until_acked(&client, &nodes.node(i % 2).base, &format!("t{}", i % 7), Duration::from_secs(10)).await;
    }
    let r = client.delete(format!("{}/Task/t3", nodes.node(f).base)).send().await.unwrap();
    assert!(r.status().is_success());
    // Wipe the follower and start it again.
    nodes.nodes[f].take().unwrap().kill9();
    let dir = nodes.dirs[f].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    nodes.restart(&nats, f).await;
    // A write through the writer afterwards, read through the rejoined node's forwarding.
    put_until_acked(&client, &nodes.node(f).base, "t-last", Duration::from_secs(10)).await;
    let strip = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
            o.remove("meta");
            o.remove("link");
        }
        v
    };
    for path in ["Task/t0", "Task/t3", "Task/t6/_history", "Task?_sort=_id&_count=50", "Task/t-last"] {
        let a = client.get(format!("{}/{path}", nodes.node(w).base)).send().await.unwrap();
        let b = client.get(format!("{}/{path}", nodes.node(f).base)).send().await.unwrap();
        assert_eq!(a.status(), b.status(), "{path}");
        let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
        if path.starts_with("Task?") || path.contains("_history") {
            // fullUrl names each node's own base; the resources must be the same.
            let resources = |v: Value| v["entry"].as_array().map(|e| e.iter().map(|x| x["resource"].clone()).collect::<Vec<_>>());
            assert_eq!(resources(strip(a)), resources(strip(b)), "{path}");
        } else {
            assert_eq!(a, b, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_nats_servers_and_replicas_3_writes_go_on_when_one_nats_server_is_killed() {
    let Some(mut nats) = NatsCluster::three() else { return };
    let nodes = Nodes::start(&nats, 3).await;
    let first = wait_writer(&nats, None, Duration::from_secs(30)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let follower = (w + 1) % 3;
    let rx = Receiver::start().await;
    setup(nodes.node(follower), &rx.url).await;
    rx.next_of("handshake", Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    let mut before = HashSet::new();
    for i in 0..10 {
        let id = format!("c{i}");
        put_until_acked(&client, &nodes.node(i % 3).base, &id, Duration::from_secs(30)).await;
        before.insert(id);
    }
    let mut given = std::collections::HashMap::new();
    let mut numbers = receive(&rx, &before, &mut given, Duration::from_secs(30)).await;
    // One NATS server dies (the first, which every node's client likely talks to).
    nats.kill(0);
    let killed = Instant::now();
    let mut after = HashSet::new();
    for i in 10..30 {
        let id = format!("c{i}");
        put_until_acked(&client, &nodes.node(i % 3).base, &id, Duration::from_secs(60)).await;
        after.insert(id);
    }
    let took = killed.elapsed();
    numbers.extend(receive(&rx, &after, &mut given, Duration::from_secs(60)).await);
    assert_gapless_in_order(&numbers);
    println!("figures: R3, one NATS server SIGKILLed: 20 writes through the three nodes acknowledged in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_writer_is_replaced_and_once_it_wakes_up_it_cannot_append_and_rejoins_as_a_follower() {
    let Some(nats) = NatsCluster::single() else { return };
    let nodes = Nodes::start(&nats, 2).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let f = 1 - w;
    let rx = Receiver::start().await;
    setup(nodes.node(f), &rx.url).await;
    rx.next_of("handshake", Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    let mut given = std::collections::HashMap::new();
    let before: HashSet<String> = (0..5).map(|i| format!("p{i}")).collect();
    for id in &before {
        put_until_acked(&client, &nodes.node(i_of(id) % 2).base, id, Duration::from_secs(10)).await;
    }
    let mut numbers = receive(&rx, &before, &mut given, Duration::from_secs(30)).await;

    // The writer freezes: its port still takes connections, nothing answers them, and it stops
    // renewing its lease. A write through the follower hangs in forwarding until the follower
    // takes the lease, then is answered 503 and retried against the new writer.
    nodes.node(w).pause();
    let frozen = Instant::now();
    let acked_at = put_until_acked(&client, &nodes.node(f).base, "q0", Duration::from_secs(60)).await;
    let failover = acked_at - frozen;
    assert_eq!(wait_writer(&nats, Some(&first), Duration::from_secs(1)).await, nodes.ids[f]);
    let mut after: HashSet<String> = HashSet::from(["q0".to_string()]);
    for i in 1..5 {
        let id = format!("q{i}");
        put_until_acked(&client, &nodes.node(f).base, &id, Duration::from_secs(10)).await;
        after.insert(id);
    }

    // The old writer wakes up: its lease is gone, so it leaves the writer role (anything it
    // still tries to append is refused by the stream), rebuilds its store from the log and
    // forwards writes to the new writer.
    nodes.node(w).resume();
    for i in 5..10 {
        let id = format!("q{i}");
        put_until_acked(&client, &nodes.node(w).base, &id, Duration::from_secs(60)).await;
        after.insert(id);
    }
    numbers.extend(receive(&rx, &after, &mut given, Duration::from_secs(60)).await);
    assert_gapless_in_order(&numbers);
    assert_eq!(wait_writer(&nats, None, Duration::from_secs(1)).await, nodes.ids[f], "the woken writer took the lease back");
    for id in ["p0", "q0", "q9"] {
        let a: Value = client.get(format!("{}/Task/{id}", nodes.node(w).base)).send().await.unwrap().json().await.unwrap();
        let b: Value = client.get(format!("{}/Task/{id}", nodes.node(f).base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(a, b, "Task/{id} differs between the nodes");
    }
    println!("figures: writer frozen (SIGSTOP); a write through the follower acknowledged {failover:?} later (lease TTL {TTL})");
}

/// The number in an id like `p3`.
fn i_of(id: &str) -> usize {
    id[1..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_starts_from_the_newest_snapshot_and_the_stream_is_trimmed_below_the_one_before() {
    let Some(nats) = NatsCluster::single() else { return };
    let every = [("HERALD_CLUSTER__SNAPSHOT_EVERY", "15")];
    let nodes = Nodes::start_with(&nats, 2, &every).await;
    wait_writer(&nats, None, Duration::from_secs(20)).await;
    let client = reqwest::Client::new();
    for i in 0..80 {
        put_until_acked(&client, &nodes.node(i % 2).base, &format!("s{}", i % 25), Duration::from_secs(10)).await;
    }
    let r = client.delete(format!("{}/Task/s7", nodes.node(0).base)).send().await.unwrap();
    assert!(r.status().is_success());
    // A snapshot was taken and the log trimmed below the one before it.
    let reader = {
        let client = crate::cluster_log::connect(&nats).await;
        herald::commitlog::LogReader::open(client, &herald::commitlog::LogStream::new("HERALD_LOG", "herald.log", 1)).await.unwrap()
    };
    crate::support::until("the commit log trimmed below a snapshot", || {
        let reader = reader.clone();
        async move { reader.first_seq().await.unwrap() > 1 }
    })
    .await;
    let first = reader.first_seq().await.unwrap();
    // A third node with an empty data dir joins: it cannot replay from commit 1.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = nodes.logs.join("n2.log");
    let mut third = spawn_with(&nats, dir.path(), port, "n2", &log, &every);
    third.wait_ready(Duration::from_secs(60)).await;
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("store restored from the snapshot"),
        "the new node did not start from a snapshot"
    );
    put_until_acked(&client, &third.base, "s-after", Duration::from_secs(10)).await;
    for path in ["Task/s0", "Task/s7", "Task/s24", "Task/s-after", "Task/s3/_history"] {
        let a = client.get(format!("{}/{path}", nodes.node(0).base)).send().await.unwrap();
        let b = client.get(format!("{}/{path}", third.base)).send().await.unwrap();
        assert_eq!(a.status(), b.status(), "{path}");
        let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
        if path.contains("_history") {
            let resources = |v: &Value| v["entry"].as_array().map(|e| e.iter().map(|x| x["resource"].clone()).collect::<Vec<_>>());
            assert_eq!(resources(&a), resources(&b), "{path}");
        } else {
            assert_eq!(a, b, "{path}");
        }
    }
    println!("figures: snapshots every 15 commits; the log starts at commit {first}; a new node restored the snapshot and answered reads like the others");
}

/// Starts a node on `nats` that must stop by itself: waits up to 30 s for it to exit and
/// returns its status and what it wrote (stdout and stderr); fails if it keeps running.
async fn node_that_exits(nats: &NatsCluster, listen: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--nats", &nats.urls(), "--node-id", "n0"])
        .env_remove("RUST_LOG")
        .env_remove("HERALD_CLUSTER__REPLICAS")
        .envs(env.iter().copied())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node kept running; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (status, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test]
async fn a_cluster_node_that_cannot_serve_its_configuration_exits_instead_of_retrying() {
    let Some(nats) = NatsCluster::single() else { return };
    // Listening beyond loopback without [auth]: refused at start, on a cluster node as on one.
    let (status, text) = node_that_exits(&nats, "0.0.0.0:0", &[("HERALD_CLUSTER__REPLICAS", "1")]).await;
    assert!(!status.success());
    assert!(text.contains("no authentication is configured"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_bound_on_a_follower_gets_its_subscriptions_frames_in_order() {
    use crate::support::ws::{event_numbers, Binding, WsClient};
    let Some(nats) = NatsCluster::single() else { return };
    let nodes = Nodes::start(&nats, 2).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let f = 1 - nodes.ids.iter().position(|id| *id == first).unwrap();
    let base = nodes.node(f).base.clone();
    let client = reqwest::Client::new();
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": crate::crash::TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(client.post(format!("{base}/SubscriptionTopic")).json(&topic).send().await.unwrap().status(), StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": crate::crash::TOPIC,
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" }, "content": "id-only" });
    let created: Value = client.post(format!("{base}/Subscription")).json(&sub).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    // The token comes through the follower (from the writer, which delivers); the socket is
    // opened on the follower's own endpoint, as a client behind a load balancer would.
    let answer = client.get(format!("{base}/Subscription/{id}/$get-ws-binding-token")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let binding = Binding::from_parameters(&answer.json().await.unwrap());
    let mut ws = WsClient::connect(&format!("ws://127.0.0.1:{}/fhir/$subscription-ws", nodes.ports[f])).await;
    ws.bind(&binding.token).await;
    ws.next_of("handshake", Duration::from_secs(10)).await;
    for i in 0..10 {
        put_until_acked(&client, &nodes.node(i % 2).base, &format!("w{i}"), Duration::from_secs(10)).await;
    }
    let frames = ws.events(10, Duration::from_secs(20)).await;
    let numbers: Vec<u64> = frames.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn three_replicas_on_one_unclustered_nats_server_is_refused_with_the_setting_to_change() {
    let Some(nats) = NatsCluster::single() else { return };
    let (status, text) = node_that_exits(&nats, "127.0.0.1:0", &[]).await;
    assert!(!status.success());
    assert!(text.contains("cluster.replicas = 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_any_node_waits_for_the_log_seq_a_write_returned() {
    let Some(nats) = NatsCluster::single() else { return };
    let nodes = Nodes::start_with(&nats, 2, &[("HERALD_CLUSTER__FORWARD_TIMEOUT", "1s")]).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let f = 1 - w;
    let client = reqwest::Client::new();
    // Written on the writer, read on the follower with the seq the write returned.
    let r = client.put(format!("{}/Task/rw", nodes.node(w).base)).json(&task("rw")).send().await.unwrap();
    assert!(r.status().is_success());
    let seq: u64 = r.headers()["x-herald-log-seq"].to_str().unwrap().parse().unwrap();
    assert!(seq > 0);
    let read = client.get(format!("{}/Task/rw", nodes.node(f).base)).header("X-Herald-Min-Log-Seq", seq.to_string()).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    // A forwarded write carries the writer's seq too.
    let r = client.put(format!("{}/Task/rw2", nodes.node(f).base)).json(&task("rw2")).send().await.unwrap();
    assert!(r.status().is_success());
    let seq2: u64 = r.headers()["x-herald-log-seq"].to_str().unwrap().parse().unwrap();
    assert!(seq2 > seq);
    // A seq nobody has reached: 503 after the bound, not a stale answer; garbage: 400.
    let ahead = client
        .get(format!("{}/Task/rw", nodes.node(f).base))
        .header("X-Herald-Min-Log-Seq", (seq2 + 1000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ahead.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ahead.headers().contains_key("retry-after"));
    let bad = client.get(format!("{}/Task/rw", nodes.node(f).base)).header("X-Herald-Min-Log-Seq", "soon").send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// The delivery node's deliveries: `herald_deliveries_total` for rest-hook, delivered.
async fn delivered_by(client: &reqwest::Client, h: &Herald) -> f64 {
    let text = client.get(format!("{}/metrics", h.root)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("herald_deliveries_total{channel=\"rest-hook\",outcome=\"delivered\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_spread_over_the_nodes_and_a_killed_delivery_nodes_shards_move_in_order() {
    let Some(nats) = NatsCluster::single() else { return };
    let mut nodes = Nodes::start_with(&nats, 3, &[("HERALD_CLUSTER__SHARDS", "6")]).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    // Every node holds some shards before the subscriptions exist.
    for i in 0..3 {
        let log = nodes.logs.join(format!("{}.log", nodes.ids[i]));
        crate::support::until("every node holds a delivery shard", || {
            let log = log.clone();
            async move { std::fs::read_to_string(&log).is_ok_and(|t| t.contains("took a delivery shard")) }
        })
        .await;
    }
    let client = reqwest::Client::new();
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": crate::crash::TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    let r = client.post(format!("{}/SubscriptionTopic", nodes.node(w).base)).json(&topic).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut receivers = Vec::new();
    for i in 0..9 {
        let rx = Receiver::start().await;
        let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": crate::crash::TOPIC,
            "channelType": { "code": "rest-hook" }, "endpoint": rx.url, "content": "id-only" });
        let r = client.post(format!("{}/Subscription", nodes.node(i % 3).base)).json(&sub).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
        receivers.push(rx);
    }
    for rx in &receivers {
        rx.next_of("handshake", Duration::from_secs(30)).await;
    }
    let mut ids = HashSet::new();
    for i in 0..15 {
        let id = format!("s{i}");
        put_until_acked(&client, &nodes.node(i % 3).base, &id, Duration::from_secs(30)).await;
        ids.insert(id);
    }
    let mut numbers = Vec::new();
    for rx in &receivers {
        let mut given = std::collections::HashMap::new();
        let got = receive(rx, &ids, &mut given, Duration::from_secs(30)).await;
        assert_gapless_in_order(&got);
        numbers.push(got);
    }
    let mut by_node = Vec::new();
    for i in 0..3 {
        by_node.push(delivered_by(&client, nodes.node(i)).await);
    }
    let delivering = by_node.iter().filter(|&&n| n > 0.0).count();
    assert!(delivering >= 2, "deliveries by node {by_node:?}: one node delivered everything");

    // kill -9 of a node that delivers (not the writer) mid-burst: its shards move, and its
    // subscriptions' events arrive in order, none missing.
    let d = (0..3).find(|&i| i != w && by_node[i] > 0.0).expect("a follower delivers");
    let burst = burst(&client, &nodes.node(w).base, "t", 30, 5).await;
    let killed = Instant::now();
    nodes.nodes[d].take().unwrap().kill9();
    let later = burst.await.unwrap();
    for (rx, seen) in receivers.iter().zip(numbers.iter_mut()) {
        let mut given = std::collections::HashMap::new();
        let got = receive(rx, &later, &mut given, Duration::from_secs(60)).await;
        seen.extend(got);
        assert_gapless_in_order(seen);
    }
    println!("figures: node {} killed; every subscription had all 45 events {:?} later", nodes.ids[d], killed.elapsed());
}

/// Sends a lane report as a delivery node would (`herald::cluster::reports`); the writer's answer.
async fn report_as(client: &async_nats::Client, node: &str, sub: &str, incarnation: u64, through: u64) -> String {
    let report = json!({ "node": node, "incarnation": incarnation,
        "command": { "kind": "delivered", "sub": sub, "through": through, "at": 0 } });
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(herald::cluster::reports::SUBJECT, serde_json::to_vec(&report).unwrap().into()),
    )
    .await
    .expect("the writer answers lane reports")
    .expect("a writer takes lane reports");
    String::from_utf8_lossy(&answer.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_report_from_a_node_that_does_not_hold_the_shard_is_refused_and_moves_no_cursor() {
    let Some(nats) = NatsCluster::single() else { return };
    let nodes = Nodes::start_with(&nats, 2, &[("HERALD_CLUSTER__SHARDS", "2")]).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let w = nodes.ids.iter().position(|id| *id == first).unwrap();
    let rx = Receiver::start().await;
    let sub = setup(nodes.node(w), &rx.url).await;
    rx.next_of("handshake", Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let base = nodes.node(w).base.clone();
    let mut given = std::collections::HashMap::new();
    let ids: HashSet<String> = (0..3).map(|i| format!("f{i}")).collect();
    for id in &ids {
        put_until_acked(&client, &base, id, Duration::from_secs(30)).await;
    }
    let mut numbers = receive(&rx, &ids, &mut given, Duration::from_secs(30)).await;
    // The receiver fails from now on: events 4 and 5 wait, retried.
    rx.set_status(503);
    let later: HashSet<String> = (3..5).map(|i| format!("f{i}")).collect(); // events 4 and 5
    for id in &later {
        put_until_acked(&client, &base, id, Duration::from_secs(30)).await;
    }
    // Event 4 was tried (and refused) at least once before anyone reports anything.
    loop {
        let r = rx.next_of("event-notification", Duration::from_secs(30)).await;
        if r.event_numbers().contains(&4) {
            break;
        }
    }
    let nats_client = crate::cluster_log::connect(&nats).await;
    // A node that holds no shard of this subscription says 4 and 5 were delivered, under every
    // incarnation the subscription may have (the version seq that created it, not exposed).
    for incarnation in 1..=200 {
        assert_eq!(report_as(&nats_client, "ghost", &sub, incarnation, 5).await, "stale");
    }
    // The holder's own report is taken (the same request, from the node the lease names).
    let js = async_nats::jetstream::new(nats_client.clone());
    let leases = herald::cluster::LeaseBucket::open(&js, herald::cluster::LEASE_BUCKET, Duration::from_secs(2), 1).await.unwrap();
    let key = herald::cluster::shards::shard_key(herald::cluster::shards::shard_of(&sub, 2));
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        if let Some(h) = leases.holder(&key).await.unwrap() {
            break h;
        }
        assert!(Instant::now() < deadline, "nobody holds {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report_as(&nats_client, &holder, &sub, 1, 3).await, "ok");
    // A write after the reports: the writer's one queue took the reports first, so once the
    // write is acknowledged, the writer's record of the subscription shows what they did.
    put_until_acked(&client, &base, "f5", Duration::from_secs(30)).await;
    let detail: Value =
        client.get(format!("{}/admin/api/subscriptions/{sub}", nodes.node(w).root)).send().await.unwrap().json().await.unwrap();
    let row = if detail["subscription"].is_object() { &detail["subscription"] } else { &detail };
    assert_eq!(row["deliveredThrough"], 3, "{detail}");
    // Nothing was skipped: once the receiver answers again, 4 and 5 are accepted, in order.
    rx.set_status(200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(numbers.contains(&4) && numbers.contains(&5)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "events 4 and 5 were never accepted: {numbers:?}");
        let r = rx.next_of("event-notification", left).await;
        if r.answered == 200 {
            numbers.extend(r.event_numbers());
        }
    }
    assert_gapless_in_order(&numbers);
}

/// A gauge from a node's `/metrics`.
async fn node_gauge(client: &reqwest::Client, h: &Herald, name: &str) -> i64 {
    let text = client.get(format!("{}/metrics", h.root)).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// `server.max_body_memory_mib` on a follower: the writes it forwards hold their bodies in its
/// memory too, so they take from its budget, and one that does not fit waits, then goes
/// through (as `edge::a_body_that_does_not_fit_the_body_memory_budget_waits_for_room_then_goes_through`
/// on one node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_holds_forwarded_bodies_within_its_body_memory_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(nats) = NatsCluster::single() else { return };
    let nodes =
        Nodes::start_with(&nats, 2, &[("HERALD_SERVER__MAX_BODY_MEMORY_MIB", "1"), ("HERALD_SERVER__MAX_BODY_BYTES", "2097152")]).await;
    let first = wait_writer(&nats, None, Duration::from_secs(20)).await;
    let f = 1 - nodes.ids.iter().position(|id| *id == first).unwrap();
    let follower = nodes.node(f);
    let client = reqwest::Client::new();
    let task = |id: &str, pad: usize| json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order", "description": "x".repeat(pad) });
    // A client declares a body of about 900 KiB to the follower and sends a first part only.
    let big = serde_json::to_vec(&task("slow", 900 * 1024)).unwrap();
    let mut slow = crate::edge::half_sent_put(([127, 0, 0, 1], nodes.ports[f]).into(), "Task/slow", &big).await;
    let share = i64::try_from(big.len().div_ceil(1024) * 1024).unwrap();
    crate::support::until("the forwarded body holds its share of the follower's budget", || async {
        node_gauge(&client, follower, "herald_body_memory_bytes").await == share
    })
    .await;
    // A second write of 200 KiB to the follower does not fit: it waits, unread.
    let (c, url, body) = (client.clone(), format!("{}/Task/quick", follower.base), task("quick", 200 * 1024));
    let quick = tokio::spawn(async move { c.put(url).header("content-type", "application/fhir+json").json(&body).send().await });
    crate::support::until("the second forwarded write waits for room", || async {
        node_gauge(&client, follower, "herald_body_memory_waiting").await == 1
    })
    .await;
    assert!(!quick.is_finished(), "the second write was answered while the follower's budget was spent");
    // The first body completes: both are forwarded, written and answered; the budget is whole.
    slow.write_all(&big[1000..]).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut answer)).await.unwrap().unwrap();
    let status_line = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(status_line.starts_with("HTTP/1.1 201"), "{status_line}");
    let quick = tokio::time::timeout(Duration::from_secs(20), quick).await.unwrap().unwrap().unwrap();
    assert_eq!(quick.status(), StatusCode::CREATED);
    crate::support::until("the follower's budget is whole again", || async {
        node_gauge(&client, follower, "herald_body_memory_bytes").await == 0
            && node_gauge(&client, follower, "herald_body_memory_waiting").await == 0
    })
    .await;
    let stored: Value = client.get(format!("{}/Task/slow", nodes.node(1 - f).base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(stored["description"].as_str().map(str::len), Some(900 * 1024));
}
