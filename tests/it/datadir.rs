//! Damaged, foreign and older data directories (issue #18), with the real binary: Herald
//! refuses what it must not serve (exit code 3, a plain message, no panic, nothing written),
//! and opens and upgrades a store written by the previous format.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::binary::{free_port, Herald};

/// Runs `herald serve` on `dir` and waits for it to exit (it must); its exit code and output.
async fn refused(dir: &Path) -> (Option<i32>, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut h = Herald::spawn(dir, free_port(), &[], Some(log.path()));
    let status = h.wait_exit(Duration::from_secs(30)).await;
    (status.code(), h.log_text())
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn another_programs_directory_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("postgresql.conf"), "# not ours\n").unwrap();
    std::fs::create_dir(dir.path().join("base")).unwrap();
    let before = names(dir.path());
    let (code, out) = refused(dir.path()).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("not a Herald store") && out.contains("postgresql.conf"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert_eq!(names(dir.path()), before, "nothing was written into it");
}

#[tokio::test]
async fn a_store_from_a_newer_herald_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = Herald::start(dir.path(), free_port()).await;
    h.terminate();
    let mut h = h;
    assert!(h.wait_exit(Duration::from_secs(30)).await.success());
    let marker = dir.path().join("herald-store.json");
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    m["format"] = json!(99);
    std::fs::write(&marker, m.to_string()).unwrap();
    let (code, out) = refused(dir.path()).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("newer Herald") && out.contains("99"), "{out}");
}

#[tokio::test]
async fn a_store_cut_short_is_refused_not_served_with_acknowledged_data_missing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let h = Herald::start(dir.path(), port).await;
    let client = reqwest::Client::new();
    for i in 0..300 {
        let task = json!({ "resourceType": "Task", "id": format!("t{i}"), "status": "requested", "intent": "order",
            "description": "x".repeat(200) });
        let r = client.put(format!("{}/Task/t{i}", h.base)).json(&task).send().await.unwrap();
        assert!(r.status().is_success());
    }
    h.terminate();
    let mut h = h;
    assert!(h.wait_exit(Duration::from_secs(30)).await.success());
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let (code, out) = refused(dir.path()).await;
    assert!(!out.contains("panicked"), "{out}");
    assert!(matches!(code, Some(1) | Some(3)), "exit {code:?}: {out}");
    assert!(out.contains("lost acknowledged data") || out.contains("storage engine"), "a plain reason: {out}");
}

/// A store written by the release before data directories were marked (format 1 records,
/// no `herald-store.json`): `tests/fixtures/store-e3814ba.tar` holds one with a topic, a
/// websocket subscription and three Tasks (three events).
#[tokio::test]
async fn a_store_from_the_previous_release_opens_and_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-e3814ba.tar");
    let status = std::process::Command::new("tar").arg("-xf").arg(&fixture).arg("-C").arg(dir.path()).status().unwrap();
    assert!(status.success());
    let data = dir.path().join("data");
    assert!(!data.join("herald-store.json").exists());
    let h = Herald::start(&data, free_port()).await;
    let client = reqwest::Client::new();
    for i in 1..=3 {
        let r = client.get(format!("{}/Task/fixture-{i}", h.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "Task/fixture-{i}");
    }
    let st: serde_json::Value =
        client.get(format!("{}/Subscription/fixture-ws/$status", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "3", "{st}");
    let events: serde_json::Value =
        client.get(format!("{}/Subscription/fixture-ws/$events", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(events["entry"][0]["resource"]["notificationEvent"].as_array().map(Vec::len), Some(3), "{events}");
    // New writes continue the numbering.
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    assert_eq!(client.post(format!("{}/Task", h.base)).json(&task).send().await.unwrap().status(), StatusCode::CREATED);
    let st: serde_json::Value =
        client.get(format!("{}/Subscription/fixture-ws/$status", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "4", "{st}");
    assert!(data.join("herald-store.json").exists(), "adopted: the marker is written");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue #18: with the store on a filesystem that fills up, writes get 503 with an
/// OperationOutcome and Retry-After before sled runs out of space, reads keep working,
/// nothing acknowledged is lost, and writes resume by themselves once space returns.
#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(root.path(), "40m") else {
        eprintln!("SKIPPED a_full_disk_...: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let dir = root.path().join("store");
    let port = free_port();
    let h = Herald::start(&dir, port).await;
    let client = reqwest::Client::new();
    let task = |n: usize| json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": incompressible(n as u64, 8000) });
    let mut acked = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 20_000, "the disk never filled");
        let r = client.post(format!("{}/Task", h.base)).json(&task(acked.len())).send().await.unwrap();
        if r.status() == StatusCode::CREATED {
            let body: serde_json::Value = r.json().await.unwrap();
            acked.push(body["id"].as_str().unwrap().to_owned());
            continue;
        }
        break r;
    };
    assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refusal.headers().get("retry-after").is_some());
    let oo: serde_json::Value = refusal.json().await.unwrap();
    assert_eq!(oo["issue"][0]["code"], "transient", "{oo}");
    // Reads go on.
    for id in acked.iter().take(5).chain(acked.iter().rev().take(5)) {
        assert_eq!(client.get(format!("{}/Task/{id}", h.base)).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(client.get(format!("{}/Task?_count=1", h.base)).send().await.unwrap().status(), StatusCode::OK);
    // Space returns: writes resume without a restart.
    fs.resize("200m");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .post(format!("{}/Task", h.base))
            .json(&json!({ "resourceType": "Task", "status": "requested", "intent": "order" }))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::CREATED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "writes did not resume: {}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing acknowledged was lost, before or after a crash.
    h.kill9();
    let h = Herald::start(&dir, port).await;
    for id in &acked {
        let status = client.get(format!("{}/Task/{id}", h.base)).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "acknowledged Task/{id} is gone");
    }
    drop(h);
}

/// The backstop behind the free-space guard (here turned off): when sled itself fails to
/// write, the write is not acknowledged (503, never 500), and Herald serves again once it can,
/// with everything it acknowledged. sled answers a full disk one of two ways, and both are
/// exercised across runs: an error (Herald reopens the store from what is durable on the same
/// socket) or a flush that never returns (after `store.flush_timeout` Herald exits with status
/// 4 so its supervisor restarts it; this test plays the supervisor).
#[tokio::test]
async fn a_store_that_fails_to_write_is_reopened_from_what_is_durable() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(root.path(), "32m") else {
        eprintln!("SKIPPED a_store_that_fails_...: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let dir = root.path().join("store");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("herald.log");
    let port = free_port();
    let env = [("HERALD_STORE__MIN_FREE_MIB", "0"), ("HERALD_STORE__FLUSH_TIMEOUT", "5s"), ("HERALD_SERVER__SHUTDOWN_GRACE", "2s")];
    let mut h = Herald::start_with(&dir, port, &env, Some(&log)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let task = |n: usize| json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": incompressible(n as u64, 8000) });
    let mut acked = Vec::new();
    let mut refusals = 0;
    while refusals < 3 {
        assert!(acked.len() < 20_000, "the disk never filled");
        match client.post(format!("{}/Task", h.base)).json(&task(acked.len() + refusals)).send().await {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let body: serde_json::Value = r.json().await.unwrap();
                acked.push(body["id"].as_str().unwrap().to_owned());
            }
            Ok(r) => {
                assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "a storage failure is transient, not a 500");
                refusals += 1;
            }
            Err(_) => refusals += 1, // the store is being reopened, or the process has exited
        }
    }
    fs.resize("200m");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = h.exited() {
            assert_eq!(status.code(), Some(4), "only a flush that never returned ends the process; log:\n{}", h.log_text());
            h = Herald::start_with(&dir, port, &env, Some(&log)).await;
        }
        let small = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
        if let Ok(r) = client.post(format!("{}/Task", h.base)).json(&small).send().await {
            if r.status() == StatusCode::CREATED {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "Herald did not serve again once space returned; log:\n{}", h.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &acked {
        let status = client.get(format!("{}/Task/{id}", h.base)).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "acknowledged Task/{id} is gone");
    }
    drop(h);
}

/// `len` pseudo-random letters and digits, different for each `seed`: filler that fills a disk,
/// since the store compresses its pages (a run of one letter would take almost no room).
fn incompressible(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_".get((x >> 58) as usize).copied().unwrap_or(b'a'))
        })
        .collect()
}
