//! The operator dashboard end to end in headless Chromium (`tests/clients/dashboard.mjs`,
//! playwright-core with Debian's chromium): it lists the subscription, shows its dead letter
//! and delivery log, and its replay button delivers the dead letter. The screenshot goes to
//! Cargo's temporary directory for tests, not the repository. Skipped (with a note) when node,
//! chromium or the package are missing, unless `HERALD_REQUIRE_BROWSER` is set (CI sets it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(10);

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn missing() -> Option<&'static str> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed");
    }
    if !PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())).exists() {
        return Some("chromium is not installed (apt-get install chromium)");
    }
    if !clients_dir().join("node_modules/playwright-core/package.json").exists() {
        return Some("run `npm ci` in tests/clients to install playwright-core");
    }
    None
}

#[tokio::test]
async fn dashboard_shows_a_failing_subscription_and_replays_its_dead_letter() {
    if let Some(why) = missing() {
        assert!(std::env::var_os("HERALD_REQUIRE_BROWSER").is_none(), "HERALD_REQUIRE_BROWSER is set but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let server = TestServer::start_with(|c| c.delivery.max_attempts = 2).await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({})).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    // Event 1 is dead-lettered; the endpoint recovers and the client re-handshakes.
    rx.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    server.wait_status(&id, "error", T).await;
    rx.set_status(200);
    rx.drain().await;
    let (_, mut sub) = server.get(&format!("Subscription/{id}")).await;
    sub["status"] = json!("requested");
    server.put(&format!("Subscription/{id}"), &sub).await;
    assert_eq!(rx.next_of("handshake", T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{id}.png"));
    let origin = server.base.trim_end_matches("/fhir").to_string();
    let mut cmd = Command::new("node");
    cmd.arg("dashboard.mjs").arg(&origin).arg(&id).arg(&shot).current_dir(clients_dir());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dashboard.mjs failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let steps: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let step = |name: &str| steps.iter().find(|s| s["step"] == name).cloned().unwrap_or_else(|| panic!("no step {name}: {stdout}"));
    assert_eq!(step("panels")["active"], 1);
    assert!(step("panels")["topics"].as_u64().unwrap() >= 6, "built-in topics and ours are listed");
    assert_eq!(step("detail")["dead"], 1);
    assert!(step("detail")["failedShown"].as_u64().unwrap() >= 2, "both failed attempts are in the log: {stdout}");
    assert!(step("replay")["text"].as_str().unwrap().starts_with("1 dead letters"));
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    // The replayed event really reached the endpoint.
    assert_eq!(rx.next_of("event-notification", T).await.event_numbers(), [1]);
}
