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
