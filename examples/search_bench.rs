//! Search benchmark (issue #5; results in BENCHMARKS.md). Loads N Tasks (default 1,000,000)
//! with 1,000 owners and 5 statuses straight through the store's commit API in batches of
//! 5,000 (the HTTP path would take hours here), once with search-index entries and once
//! without, then measures `owner=X&status=requested`:
//! - through the planner (index), 1,000 queries over random owners, p50/p99;
//! - through the planner with the index disabled (a full scan of the type), a few queries;
//! - cursor paging: `status=requested&_count=10` at page 1 and after 90 % of the ids;
//! - through HTTP (`GET /fhir/Task?...` on `herald::run` over the indexed store), 1,000 queries.
//!
//! Run: `cargo run --release --example search_bench -- [N]`. No assertions: figures only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use herald::api::search::context::StoreContext;
use herald::api::search::plan::{all_matches, Limits};
use herald::api::search::walk;
use herald::fhir::search::query::Query;
use herald::fhir::search::SearchParams;
use herald::store::index::Position;
use herald::store::{records, Commit, Store, VersionRecord};
use serde_json::json;

const OWNERS: u64 = 1_000;
const STATUSES: [&str; 5] = ["requested", "accepted", "in-progress", "completed", "cancelled"];
const BATCH: u64 = 5_000;
const BASE: &str = "http://127.0.0.1:8080/fhir";

fn mix(i: u64) -> u64 {
    // splitmix64: owners and statuses spread evenly but not in id order.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn task(i: u64) -> VersionRecord {
    let h = mix(i);
    let id = format!("t{i:07}");
    let owner = h % OWNERS;
    let status = STATUSES[((h >> 20) % 5) as usize];
    let day = 1 + (h >> 32) % 28;
    VersionRecord {
        v: records::FORMAT,
        resource_type: "Task".into(),
        id: id.clone(),
        seq: 1,
        version_id: "1".into(),
        last_updated: 1_780_000_000_000 + i as i64,
        method: "POST".into(),
        deleted: false,
        resource: Some(json!({
            "resourceType": "Task", "id": id, "meta": { "versionId": "1", "lastUpdated": "2026-06-01T00:00:00Z" },
            "status": status, "intent": "order", "priority": "routine",
            "code": { "coding": [{ "system": "http://example.org/work", "code": "draw" }] },
            "focus": { "reference": format!("ServiceRequest/sr-{i}") },
            "for": { "reference": format!("Patient/p-{}", h % 50_000) },
            "owner": { "reference": format!("Organization/org-{owner}") },
            "authoredOn": format!("2026-05-{day:02}T10:00:00Z")
        })),
        full_url: None,
    }
}

fn load(store: &Store, n: u64, index: bool) -> Duration {
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut c = Commit::new();
        for j in i..(i + BATCH).min(n) {
            let rec = task(j);
            c.put_version(&rec).unwrap();
            if index {
                c.index_version(store, &rec, BASE).unwrap();
            }
        }
        store.apply(c).unwrap();
        i += BATCH;
        if i % 100_000 == 0 {
            store.flush().unwrap();
            eprintln!("  {} loaded {i} in {:.1?}", if index { "indexed" } else { "plain" }, started.elapsed());
        }
    }
    store.flush().unwrap();
    started.elapsed()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let n: u64 = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1_000_000);
    let queries: usize = 1_000;
    let params = SearchParams::r5().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (dir_idx, dir_plain) = (root.path().join("indexed"), root.path().join("plain"));

    eprintln!("loading {n} Tasks without index entries");
    let plain = Store::open(&dir_plain).unwrap();
    let t_plain = load(&plain, n, false);
    let size_plain = plain.size_on_disk().unwrap();
    drop(plain);
    eprintln!("loading {n} Tasks with index entries");
    let store = Store::open(&dir_idx).unwrap();
    let t_idx = load(&store, n, true);
    let size_idx = store.size_on_disk().unwrap();
    println!("load: {n} Tasks, batches of {BATCH}");
    println!(
        "  without index: {:.1?} = {:.0} writes/s, {:.0} MiB on disk",
        t_plain,
        n as f64 / t_plain.as_secs_f64(),
        size_plain as f64 / 1048576.0
    );
    println!(
        "  with index:    {:.1?} = {:.0} writes/s, {:.0} MiB on disk",
        t_idx,
        n as f64 / t_idx.as_secs_f64(),
        size_idx as f64 / 1048576.0
    );

    let limits = Limits { max_scan: usize::MAX, max_include: 1000, cheap_total: 1000, max_total: 10_000, max_params: usize::MAX };
    let ctx = StoreContext::new(&store, BASE);
    let mut lat = Vec::with_capacity(queries);
    let mut matched = 0usize;
    for q in 0..queries {
        let owner = mix(q as u64 + 7_777) % OWNERS;
        let started = Instant::now();
        let (query, errors) = Query::parse("Task", &format!("owner=Organization/org-{owner}&status=requested"), params);
        assert!(errors.is_empty());
        let found = all_matches(&ctx, &query, &limits, true).unwrap();
        lat.push(started.elapsed());
        matched += found.len();
    }
    let (p50, p99) = percentiles(lat);
    println!(
        "planner, index: {queries} queries, {:.0} matches each on average: p50 {:.2?}, p99 {:.2?}",
        matched as f64 / queries as f64,
        p50,
        p99
    );

    // Cursor paging (issue #23): a page of 10 `status=requested` (a fifth of the Tasks) costs
    // the same at the start and deep in the result, whatever the number of matches.
    let (query, _) = Query::parse("Task", "status=requested", params);
    for (name, after) in [("page 1", None), ("after 90 % of the ids", Some(format!("t{:07}", n * 9 / 10)))] {
        let mut lat = Vec::with_capacity(queries);
        for _ in 0..queries {
            let started = Instant::now();
            let walk = walk::plan(&ctx, &query, &limits).unwrap();
            let page = walk.page(&ctx, Position { after: after.as_deref(), back: false }, 10, limits.max_scan, &mut 0).unwrap();
            lat.push(started.elapsed());
            assert_eq!(page.rows.len(), 10);
        }
        let (p50, p99) = percentiles(lat);
        println!("walk, status=requested&_count=10, {name}: {queries} pages: p50 {p50:.2?}, p99 {p99:.2?}");
    }

    let scans = 5;
    let mut lat = Vec::new();
    for q in 0..scans {
        let owner = mix(q as u64 + 7_777) % OWNERS;
        let (query, _) = Query::parse("Task", &format!("owner=Organization/org-{owner}&status=requested"), params);
        let started = Instant::now();
        let found = all_matches(&ctx, &query, &limits, false).unwrap();
        lat.push(started.elapsed());
        assert!(!found.is_empty());
    }
    let (p50, _) = percentiles(lat.clone());
    println!("planner, full scan (index disabled): {scans} queries: p50 {:.2?}, max {:.2?}", p50, lat.iter().max().unwrap());
    drop(ctx);
    drop(store);

    // HTTP: the real server over the indexed store.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut cfg = herald::config::Config::load(None, Vec::<(String, String)>::new(), &Default::default()).unwrap();
        cfg.store.data_dir = dir_idx.clone();
        cfg.log.level = "warn".into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(herald::run(cfg, listener, async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        loop {
            if client.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut lat = Vec::with_capacity(queries);
        for q in 0..queries {
            let owner = mix(q as u64 + 7_777) % OWNERS;
            let started = Instant::now();
            let r = client.get(format!("http://{addr}/fhir/Task?owner=Organization/org-{owner}&status=requested")).send().await.unwrap();
            assert!(r.status().is_success());
            let _ = r.bytes().await.unwrap();
            lat.push(started.elapsed());
        }
        let (p50, p99) = percentiles(lat);
        println!(
            "HTTP GET /fhir/Task?owner=..&status=requested (first page of 50, total): {queries} queries: p50 {:.2?}, p99 {:.2?}",
            p50, p99
        );
        let _ = stop.send(());
        let _ = server.await;
    });
}
