//! Where the write path's index time goes (BENCHMARKS.md, 2026-11-27, index cost). For each
//! index set (`none`, the default set, `all`), writes N Tasks shaped like the HTTP load
//! (`examples/write_load/post_task.lua`) one commit per Task, as the committer does, then
//! updates each once (status changed), and reports per write: index keys, time computing
//! the entries, time adding them to the `Commit` (reading the previous entry list, diffing,
//! batch inserts and removals) and time applying the commit to sled (no flush: the flusher
//! groups those). Also counts the keys the layout before compaction would write (`raw`).
//!
//! Run: `cargo run --release --example index_cost -- [N]` (default 20,000). Figures only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use herald::fhir::search::SearchParams;
use herald::store::index::extract::{entries, indexed_params, raw_entries};
use herald::store::index::IndexSet;
use herald::store::{records, Commit, Store, VersionRecord};
use serde_json::{json, Value};

const BASE: &str = "http://127.0.0.1:8090/fhir";
const STATUSES: [&str; 5] = ["requested", "accepted", "in-progress", "completed", "ready"];

fn task(n: u64, seq: u64) -> VersionRecord {
    let id = format!("t{n:07}");
    let status = STATUSES[((n + seq) % 5) as usize];
    let resource = json!({
        "resourceType": "Task", "id": id, "meta": { "versionId": seq.to_string(), "lastUpdated": "2026-11-27T10:00:00.123Z" },
        "status": status, "intent": "order", "priority": "routine",
        "code": { "coding": [{ "system": "http://example.org/work", "code": "draw-blood" }] },
        "focus": { "reference": format!("ServiceRequest/sr-{n}") },
        "requester": { "reference": format!("Practitioner/pr-{}", n % 97) },
        "owner": { "reference": format!("Organization/lab-{}", n % 1000) },
        "description": format!("Draw blood for panel {n}")
    });
    VersionRecord {
        v: records::FORMAT,
        resource_type: "Task".into(),
        id,
        seq,
        version_id: seq.to_string(),
        last_updated: 1_795_000_000_000,
        method: "PUT".into(),
        deleted: false,
        resource: Some(resource),
        full_url: None,
    }
}

fn raw_key_count(resource: &Value) -> usize {
    indexed_params("Task").iter().filter_map(|p| raw_entries(p, "Task", resource, BASE)).map(|e| e.len()).sum()
}

#[derive(Default)]
struct Phase {
    compute: Duration,
    commit: Duration,
    apply: Duration,
    keys: usize,
    /// Index keys inserted or removed (entry list included): what the diff leaves to write.
    written: usize,
}

fn run(store: &Store, set: &IndexSet, n: u64, seq: u64) -> Phase {
    let mut ph = Phase::default();
    for i in 0..n {
        let rec = task(i, seq);
        let t0 = Instant::now();
        let e = entries(set, "Task", rec.resource.as_ref().unwrap(), BASE);
        ph.compute += t0.elapsed();
        ph.keys += e.len();
        let before = if seq > 1 { entries(set, "Task", task(i, seq - 1).resource.as_ref().unwrap(), BASE) } else { Vec::new() };
        let changed = e.iter().filter(|x| !before.contains(x)).count() + before.iter().filter(|x| !e.contains(x)).count();
        ph.written += changed + usize::from(changed > 0);
        let mut c = Commit::new();
        c.put_version(&rec).unwrap();
        let t1 = Instant::now();
        c.put_index(store, "Task", &rec.id, &e).unwrap();
        ph.commit += t1.elapsed();
        let t2 = Instant::now();
        store.apply(c).unwrap();
        ph.apply += t2.elapsed();
    }
    ph
}

fn us(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    SearchParams::r5().unwrap();
    let sample = task(1, 1);
    println!("Task keys in the layout before compaction, every parameter: {}", raw_key_count(sample.resource.as_ref().unwrap()));
    println!("| set | phase | keys/write | keys written | compute µs | commit µs | apply µs | total µs | writes/s (no flush) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, set) in [("none", IndexSet::none()), ("default", IndexSet::default()), ("all", IndexSet::All)] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_indexed(dir.path(), set.clone(), BASE).unwrap();
        for (phase, seq) in [("create", 1), ("update", 2)] {
            let started = Instant::now();
            let ph = run(&store, &set, n, seq);
            let wall = started.elapsed();
            println!(
                "| {name} | {phase} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
                ph.keys as f64 / n as f64,
                ph.written as f64 / n as f64,
                us(ph.compute, n),
                us(ph.commit, n),
                us(ph.apply, n),
                us(wall, n),
                n as f64 / wall.as_secs_f64()
            );
        }
        store.flush().unwrap();
        println!("|  | on disk | {} MiB |  |  |  |  |  |  |", store.size_on_disk().unwrap() / (1 << 20));
    }
}
