//! The search index after kill -9: the real binary is killed mid-burst of creates, updates and
//! deletes, and the index must equal a full recomputation from the current resources (entries
//! are written in the same atomic batch as the version they describe).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::binary::{free_port, Herald};

#[tokio::test]
async fn search_index_matches_full_recomputation_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let h = Herald::start(dir.path(), port).await;
    let base = h.base.clone();
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("w{w}-{}", i % 40);
                let status = ["requested", "accepted", "completed"][(i % 3) as usize];
                let body = json!({
                    "resourceType": "Task", "id": id, "intent": "order",
                    "status": status,
                    "owner": { "reference": format!("Organization/lab-{}", i % 7) },
                    "authoredOn": format!("2026-0{}-1{}", 1 + i % 9, i % 10)
                });
                let sent = if i % 11 == 0 {
                    client.delete(format!("{base}/Task/{id}")).send().await
                } else {
                    client.put(format!("{base}/Task/{id}")).json(&body).send().await
                };
                match sent {
                    Ok(r) if r.status().is_success() => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::SeqCst) < 400 {
        assert!(Instant::now() < deadline, "burst too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        let _ = w.await;
    }
    {
        let store = herald::store::Store::open(dir.path()).unwrap();
        let check = store.check_index(&base).unwrap();
        assert!(check.is_consistent(), "index after kill -9: {check:?}");
        assert!(check.resources > 0 && check.expected > 0, "{check:?}");
    }
    // And the restarted server answers from it.
    let _h = Herald::start(dir.path(), port).await;
    let client = reqwest::Client::new();
    let b: Value = client.get(format!("{base}/Task?owner=Organization/lab-3&_total=accurate")).send().await.unwrap().json().await.unwrap();
    assert_eq!(b["type"], "searchset");
    for e in b["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "match") {
        assert_eq!(e["resource"]["owner"]["reference"], "Organization/lab-3");
    }
}
