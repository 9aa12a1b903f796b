//! The search index after kill -9: the real binary is killed mid-burst of creates, updates and
//! deletes, and the index must equal a full recomputation from the current resources (entries
//! are written in the same atomic batch as the version they describe).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(dir: &std::path::Path, port: u16) -> Herald {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("HERALD_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let h = Herald(child);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            if r.status() == StatusCode::OK {
                return h;
            }
        }
        assert!(Instant::now() < deadline, "herald did not become healthy");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn search_index_matches_full_recomputation_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let mut h = start(dir.path(), port).await;
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
    h.0.kill().unwrap(); // SIGKILL
    h.0.wait().unwrap();
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
    let _h = start(dir.path(), port).await;
    let client = reqwest::Client::new();
    let b: Value = client.get(format!("{base}/Task?owner=Organization/lab-3&_total=accurate")).send().await.unwrap().json().await.unwrap();
    assert_eq!(b["type"], "searchset");
    for e in b["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "match") {
        assert_eq!(e["resource"]["owner"]["reference"], "Organization/lab-3");
    }
}
