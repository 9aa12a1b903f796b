//! Herald driven by stock third-party clients (Medplum's subscription manager, fhir-kit-client
//! over the REST API), run as child processes when their runtime and
//! packages are installed (CI: `npm ci` in `tests/clients`), skipped with a note otherwise.
//!
//! Medplum's `SubscriptionManager` (`@medplum/core`) is used unmodified, configured only
//! through its own options; `tests/clients/medplum_subscribe.mjs` says which and why.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::ws::{event_numbers, kind};
use crate::support::TestServer;

const TOPIC: &str = "http://example.org/topics/medplum-task";

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Node's major version, if `node` runs.
fn node_major() -> Option<u32> {
    let out = Command::new("node").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}

async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(30), lines.recv()).await.ok().flatten()
}

#[tokio::test]
async fn medplum_subscription_manager_binds_and_receives_events() {
    let Some(major) = node_major() else {
        eprintln!("skipped: node is not installed");
        return;
    };
    if !clients_dir().join("node_modules/@medplum/core/package.json").exists() {
        eprintln!("skipped: run `npm ci` in tests/clients to install @medplum/core");
        return;
    }
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    // The websocket-url comes from a real $get-ws-binding-token answer.
    let probe = server.subscribe_ws(TOPIC, json!({})).await;
    let url = server.ws_token(&probe).await.url;
    let origin = server.base.trim_end_matches("/fhir").to_string();

    let mut cmd = Command::new("node");
    if major < 22 {
        cmd.arg("--experimental-websocket"); // global WebSocket, built in from node 22
    }
    let mut child = cmd
        .arg("medplum_subscribe.mjs")
        .args([&origin, &url, TOPIC])
        .current_dir(clients_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, mut lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("connected"), "Medplum's client never got a handshake");
    server.create_task("requested", "Organization/a").await;
    let line = next_line(&mut lines).await.expect("no event reached Medplum's client");
    let bundle: Value = serde_json::from_str(line.strip_prefix("event ").expect("an event line")).unwrap();
    assert_eq!(kind(&bundle), "event-notification");
    assert_eq!(event_numbers(&bundle), vec![1]);
    let sub = bundle["entry"][0]["resource"]["subscription"]["reference"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let (_, created) = server.get(&format!("Subscription/{sub}")).await;
    assert_eq!(created["criteria"], "Task", "the subscription Medplum's client created itself: {created}");
    assert_eq!(created["status"], "active");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// Steps of `fhir_kit.mjs` beyond the default ones: `--conditional` (If-None-Exist) and
/// `--patch` (JSON Patch), both served now.
const FHIR_KIT_EXTRA_STEPS: &[&str] = &["--conditional", "--patch"];

/// fhir-kit-client (npm), unmodified, through create, conditional create, read, update, patch,
/// vread, search, history, transaction and delete (`tests/clients/fhir_kit.mjs`), in `version`.
async fn fhir_kit_client(version: &str) {
    if node_major().is_none() {
        eprintln!("skipped: node is not installed");
        return;
    }
    if !clients_dir().join("node_modules/fhir-kit-client/package.json").exists() {
        eprintln!("skipped: run `npm ci` in tests/clients to install fhir-kit-client");
        return;
    }
    let v = version.to_owned();
    let server = TestServer::start_with(move |c| c.fhir.version = v).await;
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg("fhir_kit.mjs").arg(&base).args(FHIR_KIT_EXTRA_STEPS).current_dir(clients_dir()).output()
    })
    .await
    .unwrap()
    .expect("node starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{version}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for step in
        ["metadata", "create", "read", "update", "vread", "search", "history", "transaction", "delete", "conditional-create", "patch"]
    {
        assert!(stdout.lines().any(|l| l == format!("ok {step}")), "{version}: no `ok {step}` in\n{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("done"), "{version}: {stdout}");
}

#[tokio::test]
async fn fhir_kit_client_drives_the_rest_api_r5() {
    fhir_kit_client(crate::support::versions::R5).await;
}

#[tokio::test]
async fn fhir_kit_client_drives_the_rest_api_r4() {
    fhir_kit_client(crate::support::versions::R4).await;
}
