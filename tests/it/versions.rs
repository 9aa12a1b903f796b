//! One FHIR version per instance (issue 19): an R4 (4.0.1) and an R4B (4.3.0) instance start,
//! store their version's Tasks (with elements R5 renamed or dropped), answer searches through
//! the index (`owner`, `status`) and through FHIRPath expressions typed by their own model
//! (`performer` reads R4's `Task.performerType`, `patient` resolves `Task.for`), and know their
//! own resource types. A data directory written by an R5 instance is refused by a 4.0.1 start
//! of the real binary.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::binary::{free_port, Herald};
use crate::support::TestServer;

const PERFORMER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/task-performer-type";

async fn search(server: &TestServer, query: &str) -> Vec<String> {
    let resp = server.client.get(server.url(query)).header("prefer", "handling=strict").send().await.unwrap();
    let status = resp.status();
    let bundle: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{query}: {bundle}");
    assert_eq!(bundle["type"], "searchset", "{query}");
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// An R4/R4B Task: `performerType` and `reasonCode` are R4 elements (R5 has
/// `requestedPerformer` and `reason`).
fn r4_task(status: &str, owner: &str, patient: &str, performer: &str) -> Value {
    json!({
        "resourceType": "Task", "status": status, "intent": "order",
        "for": { "reference": format!("Patient/{patient}") },
        "owner": { "reference": owner },
        "performerType": [{ "coding": [{ "system": PERFORMER_TYPE, "code": performer }] }],
        "reasonCode": { "text": "follow-up" }
    })
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
    ids.sort();
    ids
}

async fn create(server: &TestServer, body: &Value) -> String {
    let (s, b) = server.post(body["resourceType"].as_str().unwrap(), body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn r4_style_instance_serves_its_own_tasks(version: &str, r5_only: &str, own_only: &str) {
    let server = TestServer::start_with(|c| c.fhir.version = version.into()).await;
    let a = create(&server, &r4_task("requested", "Organization/lab", "p1", "performer")).await;
    let b = create(&server, &r4_task("in-progress", "Organization/lab", "p2", "reviewer")).await;
    let c = create(&server, &r4_task("requested", "Organization/other", "p1", "reviewer")).await;

    // Stored as written: the R4 elements come back.
    let (s, stored) = server.get(&format!("Task/{a}")).await;
    assert_eq!(s, StatusCode::OK, "{stored}");
    assert_eq!(stored["performerType"][0]["coding"][0]["code"], "performer", "{stored}");
    assert_eq!(stored["reasonCode"]["text"], "follow-up", "{stored}");

    let found = |query: &'static str| search(&server, query);
    assert_eq!(found("Task?owner=Organization/lab&status=requested").await, sorted(&[&a]));
    assert_eq!(found("Task?owner=Organization/lab").await, sorted(&[&a, &b]));
    assert_eq!(found("Task?status=requested").await, sorted(&[&a, &c]));
    // `performer` is R4's Task.performerType, a name the R5 model does not know.
    let by_performer = format!("Task?performer={PERFORMER_TYPE}|reviewer");
    assert_eq!(search(&server, &by_performer).await, sorted(&[&b, &c]));
    assert_eq!(found("Task?performer=performer&owner=Organization/lab").await, sorted(&[&a]));
    // `patient` is `Task.for.where(resolve() is Patient)`; `subject` is `Task.for`.
    assert_eq!(found("Task?patient=Patient/p1").await, sorted(&[&a, &c]));
    assert_eq!(found("Task?subject=Patient/p2&status=in-progress").await, sorted(&[&b]));

    // The instance's own resource types.
    let (s, body) = server.get(&format!("{r5_only}?_id=x")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{r5_only} is not a FHIR {version} resource type: {body}");
    let (s, body) = server
        .post(
            own_only,
            &json!({ "resourceType": own_only, "status": "active",
        "subject": { "reference": "Patient/p1" }, "device": { "reference": "Device/d1" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{own_only} is a FHIR {version} resource type: {body}");
    server.stop().await;
}

#[tokio::test]
async fn an_r4_instance_stores_and_searches_r4_tasks() {
    // R4 has DeviceUseStatement (R5: DeviceUsage); Transport is R5 only.
    r4_style_instance_serves_its_own_tasks("4.0.1", "Transport", "DeviceUseStatement").await;
}

#[tokio::test]
async fn an_r4b_instance_stores_and_searches_r4b_tasks() {
    r4_style_instance_serves_its_own_tasks("4.3.0", "Transport", "DeviceUseStatement").await;
}

// One version per process: each instance in a test of its own.
#[tokio::test]
async fn subscription_status_is_no_r4_resource_type() {
    let r4 = TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await;
    let (s, body) = r4.get("SubscriptionStatus?_id=x").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    r4.stop().await;
}

#[tokio::test]
async fn subscription_status_is_an_r4b_resource_type() {
    let r4b = TestServer::start_with(|c| c.fhir.version = "4.3.0".into()).await;
    let (s, body) = r4b.get("SubscriptionStatus?_id=x").await;
    assert_ne!(s, StatusCode::NOT_FOUND, "{body}");
    r4b.stop().await;
}

#[tokio::test]
async fn a_data_directory_written_as_r5_is_refused_by_a_4_0_1_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut r5 = Herald::start(dir.path(), free_port()).await;
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/Task", r5.base)).json(&json!({ "resourceType": "Task", "status": "requested", "intent": "order" }));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::CREATED);
    r5.terminate();
    assert!(r5.wait_exit(Duration::from_secs(30)).await.success());
    let marker = std::fs::read(dir.path().join("herald-store.json")).unwrap();

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut r4 = Herald::spawn_args(dir.path(), free_port(), &["--fhir-version", "4.0.1"], &[], Some(log.path()));
    let status = r4.wait_exit(Duration::from_secs(30)).await;
    let out = r4.log_text();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(out.contains("holds FHIR 5.0.0 resources") && out.contains("4.0.1"), "a plain reason: {out}");
    assert!(out.contains("--fhir-version 5.0.0"), "the way out: {out}");
    assert!(!out.contains("panicked"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("herald-store.json")).unwrap(), marker, "the marker is left as it was");

    // The same directory still serves R5, with its Task.
    let r5 = Herald::start_with(dir.path(), free_port(), &[], None).await;
    let bundle: Value = client.get(format!("{}/Task", r5.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(bundle["total"], 1, "{bundle}");
}

/// `search.index` is checked against the configured version's SearchParameters: an R4-only
/// parameter is accepted by an R4 start (and used), and the R4 default set serves R4's own
/// look-ups (`Basic?code=SubscriptionTopic`).
#[tokio::test]
async fn an_r4_index_configuration_names_r4_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "[search]\nindex = [\"default\", \"DeviceUseStatement.subject\"]\n").unwrap();
    let store = dir.path().join("store");
    let config_arg = config.display().to_string();
    let mut h = Herald::spawn_args(&store, free_port(), &["--fhir-version", "4.0.1", "--config", &config_arg], &[], None);
    h.wait_ready(Duration::from_secs(60)).await;
    let client = reqwest::Client::new();
    let statement = json!({ "resourceType": "DeviceUseStatement", "status": "active",
        "subject": { "reference": "Patient/p7" }, "device": { "reference": "Device/d1" } });
    let r = client.post(format!("{}/DeviceUseStatement", h.base)).json(&statement).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let found: Value = client.get(format!("{}/DeviceUseStatement?subject=Patient/p7", h.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    let topics: Value =
        client.get(format!("{}/Basic?code=SubscriptionTopic&_summary=count", h.base)).send().await.unwrap().json().await.unwrap();
    assert!(topics["total"].as_u64().unwrap() >= 6, "the built-ins are found by code: {topics}");
    h.terminate();
    assert!(h.wait_exit(Duration::from_secs(30)).await.success());
}
