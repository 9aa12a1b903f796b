//! The `cluster` scenario (issue #22): S1's workload (Task updates, `--concurrency` in flight,
//! one id-only subscription matching every write, the same receiver) against Herald's cluster
//! mode, in three layouts, after S1 on single-node sled in the same invocation:
//! - `S1-1n-R1`: one node on one NATS server (stream and lease bucket R1): the commit log's
//!   cost alone, no forwarding.
//! - `S1-3n-R1`: three nodes on one NATS server; worker `w` writes through node `w % 3`, so two
//!   thirds of the writes are forwarded by a follower to the writer, and two followers apply
//!   the stream as well.
//! - `S1-3n-R3`: the same on three routed NATS servers, stream and lease bucket R3 (a write is
//!   acknowledged once two of three servers stored it).
//!
//! For each: fresh NATS servers (`nats`), fresh nodes (`herald serve --nats URLS --node-id nI`,
//! each on its own data directory, `HERALD_CLUSTER__REPLICAS` as the layout says), every node's
//! `/readyz`, then a write through every node acknowledged (a writer is elected and each node
//! forwards to it), then the same setup, window and drain as S1 (`scenarios::drive`). Nodes are
//! stopped with SIGTERM and the NATS servers killed afterwards; on error or ctrl-c, dropping
//! them kills them all, and the scratch directory goes at the end of the run either way.
//!
//! Herald CPU and peak RSS are summed over the nodes; nats-server's CPU is reported apart. On a
//! machine with few cores every process shares the same CPUs, so these rows show what
//! replication and forwarding cost, not how a cluster scales.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::ceiling::Ceilings;
use crate::herald::{Herald, Launch, Scratch};
use crate::nats::{self, Nats};
use crate::receiver::Receiver;
use crate::report::{ClusterFigures, Report, Row};
use crate::scenarios::{self, Target};
use crate::{setup, Result, Settings};

/// One cluster layout.
#[derive(Clone, Copy, Debug)]
struct Layout {
    id: &'static str,
    nodes: usize,
    /// NATS servers; the stream and the lease bucket have as many replicas.
    nats: usize,
}

const LAYOUTS: [Layout; 3] = [
    Layout { id: "S1-1n-R1", nodes: 1, nats: 1 },
    Layout { id: "S1-3n-R1", nodes: 3, nats: 1 },
    Layout { id: "S1-3n-R3", nodes: 3, nats: 3 },
];

/// The lease TTL the nodes get in `--quick` (unless `HERALD_CLUSTER__LEASE_TTL` is set): a
/// follower waits up to one TTL before it serves, and Herald's default is 10 s.
const QUICK_LEASE_TTL: &str = "3s";

/// How long a write through every node may take to be acknowledged after the nodes are ready.
const WRITER_WITHIN: Duration = Duration::from_secs(60);

/// Runs every layout and pushes its row; `sled` is S1's row of this run.
pub async fn run(
    client: &reqwest::Client,
    s: &Settings,
    scratch: &Scratch,
    sled: &Row,
    ceilings: &Ceilings,
    report: &mut Report,
) -> Result<()> {
    if !nats::available() {
        eprintln!("== cluster: nats-server is not on PATH; the cluster rows are skipped");
        report.push(Row {
            scenario: "cluster".into(),
            what: "S1 on cluster mode (1 node R1, 3 nodes R1, 3 nodes R3)".into(),
            notes: vec!["skipped: nats-server is not on PATH".into()],
            ..Row::default()
        });
        return Ok(());
    }
    for layout in LAYOUTS {
        let mut row = one(client, s, scratch, layout).await?;
        ceilings.apply(&mut row);
        let vs = |v: Option<f64>, of: Option<f64>| v.zip(of.filter(|r| *r > 0.0)).map(|(v, of)| v / of);
        if let Some(c) = row.cluster.as_mut() {
            c.writes_vs_sled = vs(row.writes_per_s, sled.writes_per_s);
            c.notifications_vs_sled = vs(row.notifications_per_s, sled.notifications_per_s);
        }
        report.push(row);
    }
    Ok(())
}

fn what(layout: Layout, concurrency: usize) -> String {
    let spread =
        if layout.nodes == 1 { "through 1 node".to_string() } else { format!("round-robin per worker over {} nodes", layout.nodes) };
    let servers = if layout.nats == 1 { "1 NATS server".to_string() } else { format!("{} NATS servers", layout.nats) };
    format!("S1 on cluster mode: {concurrency} in flight {spread}, {servers}, JetStream R{}", layout.nats)
}

async fn one(client: &reqwest::Client, s: &Settings, scratch: &Scratch, layout: Layout) -> Result<Row> {
    let mut spec = scenarios::s1(s);
    spec.id = layout.id;
    spec.what = what(layout, s.concurrency);
    eprintln!("== {}: {}", spec.id, spec.what);
    let dir = scratch.dir(&spec.id.to_lowercase())?;
    let receiver = Receiver::start().await?;
    let receipts = receiver.receipts.clone();
    let started = Instant::now();
    let nats = Nats::start(layout.nats, &dir, client).await?;
    let nats_ready = started.elapsed();

    let mut env = vec![("HERALD_CLUSTER__REPLICAS".to_string(), layout.nats.to_string())];
    if s.quick && std::env::var_os("HERALD_CLUSTER__LEASE_TTL").is_none() {
        env.push(("HERALD_CLUSTER__LEASE_TTL".into(), QUICK_LEASE_TTL.into()));
    }
    let mut nodes = Vec::with_capacity(layout.nodes);
    for i in 0..layout.nodes {
        let node_dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&node_dir)?;
        let launch = Launch {
            bin: s.herald.clone(),
            config: s.herald_config.clone(),
            args: vec!["--nats".into(), nats.urls(), "--node-id".into(), format!("n{i}")],
            env: env.clone(),
        };
        nodes.push(Herald::spawn(&launch, &node_dir)?);
    }

    let result = async {
        for node in &mut nodes {
            node.wait_ready(client).await?;
        }
        let ready = started.elapsed();
        let bases: Vec<String> = nodes.iter().map(|h| h.base.clone()).collect();
        setup::wait_writer(client, &bases, WRITER_WITHIN).await?;
        let writer = started.elapsed();
        let target = Target { nodes: &nodes, nats_pids: nats.pids() };
        let mut row = scenarios::drive(client, s, &spec, &target, &receiver).await?;
        // How long the layout took to come up, from the first nats-server started.
        row.details.insert("nats_ready_s".into(), nats_ready.as_secs_f64().into());
        row.details.insert("nodes_ready_s".into(), ready.as_secs_f64().into());
        row.details.insert("write_through_every_node_s".into(), writer.as_secs_f64().into());
        Ok::<Row, crate::Error>(row)
    }
    .await;
    let result: Result<Row> = result.map_err(|e| {
        let logs: Vec<String> = nodes.iter().enumerate().map(|(i, h)| format!("node n{i}:\n{}", h.log_tail())).collect();
        format!("{}: {e}\nThe nodes' logs end:\n{}\nThe NATS servers' logs end:\n{}", spec.id, logs.join("\n"), nats.log_tails()).into()
    });
    // The nodes first (a node whose NATS server is gone would retry until killed), then NATS.
    let stopped = join_all(nodes.into_iter().map(Herald::stop)).await;
    drop(nats);
    scratch.remove(&dir);
    let mut row = result?;
    let unclean = stopped.iter().filter(|s| !matches!(s, Ok(true))).count();
    if unclean > 0 {
        row.notes.push(format!("{unclean} of {} nodes did not stop cleanly on SIGTERM", layout.nodes));
    }
    if receipts.unkeyed() > 0 {
        row.notes.push(format!("{} notifications could not be joined to a write", receipts.unkeyed()));
    }
    let nats_cpu = row.details.remove("nats_cpu_percent").and_then(|v| v.as_f64());
    if layout.nodes > 1 {
        row.notes.push(format!("Herald CPU and peak RSS summed over the {} nodes", layout.nodes));
    }
    row.cluster = Some(ClusterFigures {
        nodes: layout.nodes,
        nats_servers: layout.nats,
        replicas: layout.nats,
        nats_cpu_percent: nats_cpu,
        ..ClusterFigures::default()
    });
    Ok(row)
}
