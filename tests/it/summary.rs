//! `_summary=true` and `_summary=text` on read, vread and search, in R5 and R4: the summary
//! elements of the base definition (plus the mandatory ones) and nothing else, marked
//! SUBSETTED; `_elements` beside them is a 400.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::versions::{R4, R5};
use crate::support::TestServer;

async fn server(version: &str) -> TestServer {
    let v = version.to_owned();
    TestServer::start_with(move |c| c.fhir.version = v).await
}

fn subsetted(r: &Value) -> bool {
    r["meta"]["tag"].as_array().is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
}

fn task() -> Value {
    json!({
        "resourceType": "Task",
        "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">order</div>" },
        "identifier": [{ "system": "urn:x", "value": "42" }],
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "description": "take a sample",
        "input": [{ "type": { "text": "specimen" }, "valueString": "blood" }]
    })
}

/// `r` is the summary of `whole`: Task.status, intent and description kept; input, priority,
/// identifier and text gone.
fn task_summary(r: &Value, whole: &Value) {
    assert!(subsetted(r), "{r}");
    for kept in ["id", "status", "intent", "description"] {
        assert_eq!(r[kept], whole[kept], "{kept}: {r}");
    }
    for gone in ["input", "priority", "identifier", "text"] {
        assert!(r.get(gone).is_none(), "{gone}: {r}");
    }
    assert_eq!(r["meta"]["versionId"], whole["meta"]["versionId"]);
}

/// `r` is the text summary of `whole`: text, id, meta and the mandatory status and intent.
fn task_text(r: &Value, whole: &Value) {
    assert!(subsetted(r), "{r}");
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "intent", "meta", "resourceType", "status", "text"], "{r}");
    assert_eq!(r["text"], whole["text"]);
}

async fn summaries(version: &str) {
    let server = server(version).await;
    let (s, created) = server.post("Task", &task()).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, _) = server
        .put(&format!("Task/{id}"), &{
            let mut t = task();
            t["id"] = json!(id);
            t["status"] = json!("accepted");
            t
        })
        .await;
    assert_eq!(s, StatusCode::OK);

    for path in [format!("Task/{id}"), format!("Task/{id}/_history/1")] {
        let (_, whole) = server.get(&path).await;
        assert!(!subsetted(&whole));
        let (s, r) = server.get(&format!("{path}?_summary=true")).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        task_summary(&r, &whole);
        let (s, r) = server.get(&format!("{path}?_summary=text")).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        task_text(&r, &whole);
        let (s, oo) = server.get(&format!("{path}?_summary=true&_elements=status")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
        assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("_elements"), "{oo}");
    }
    let (_, v1) = server.get(&format!("Task/{id}/_history/1?_summary=true")).await;
    assert_eq!(v1["status"], "requested");

    // Search: each match shaped the same way; the Bundle itself is whole.
    let (_, whole) = server.get(&format!("Task/{id}")).await;
    let (s, bundle) = server.get("Task?status=accepted&_summary=true").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    assert_eq!(bundle["resourceType"], "Bundle");
    task_summary(&bundle["entry"][0]["resource"], &whole);
    let (s, bundle) = server.get("Task?_summary=text").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    task_text(&bundle["entry"][0]["resource"], &whole);
    let (s, oo) = server.get("Task?_summary=text&_elements=status").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");

    // Patient.photo is not a summary element; name is, and inside it the datatype's own flags.
    let patient = json!({
        "resourceType": "Patient",
        "photo": [{ "contentType": "image/png", "data": "AAAA" }],
        "name": [{ "family": "Doe", "extension": [{ "url": "urn:x", "valueString": "x" }] }],
        "gender": "other"
    });
    let (s, created) = server.post("Patient", &patient).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (_, r) = server.get(&format!("Patient/{}?_summary=true", created["id"].as_str().unwrap())).await;
    assert!(r.get("photo").is_none() && subsetted(&r), "{r}");
    assert_eq!(r["name"], json!([{ "family": "Doe" }]), "{r}");
    assert_eq!(r["gender"], "other");
}

#[tokio::test]
async fn summary_true_and_text_r5() {
    summaries(R5).await;
}

#[tokio::test]
async fn summary_true_and_text_r4() {
    summaries(R4).await;
}
