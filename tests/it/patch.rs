//! PATCH: JSON Patch (RFC 6902) and FHIRPath Patch on an instance, and PATCH entries in
//! batch and transaction Bundles. A patch is an update of the version it was applied to:
//! versioned, validated, matched against topics with that version as `%previous`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};

const T: Duration = Duration::from_secs(10);
const JSON_PATCH: &str = "application/json-patch+json";

async fn patch(server: &TestServer, path: &str, content_type: &str, body: &Value, if_match: Option<&str>) -> (StatusCode, Value) {
    let mut req = server.client.patch(server.url(path)).header("content-type", content_type).body(body.to_string());
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn task(server: &TestServer) -> String {
    let (s, b) = server.post("Task", &json!({ "resourceType": "Task", "status": "requested", "intent": "order" })).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn json_patch_moves_a_task_and_refuses_what_it_must(server: TestServer) {
    let id = task(&server).await;
    let path = format!("Task/{id}");
    let accept = json!([
        { "op": "test", "path": "/status", "value": "requested" },
        { "op": "replace", "path": "/status", "value": "accepted" },
        { "op": "add", "path": "/businessStatus", "value": { "text": "queued" } },
        { "op": "add", "path": "/input", "value": [{ "type": { "text": "a" }, "valueString": "x" }] },
        { "op": "copy", "from": "/input/0", "path": "/input/-" },
        { "op": "move", "from": "/input/1", "path": "/input/0" },
        { "op": "remove", "path": "/input/1" }
    ]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &accept, Some("W/\"1\"")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!((b["status"].as_str(), b["meta"]["versionId"].as_str()), (Some("accepted"), Some("2")));
    assert_eq!(b["businessStatus"]["text"], "queued");
    assert_eq!(b["input"].as_array().map(Vec::len), Some(1));
    let (_, read) = server.get(&path).await;
    assert_eq!(read["status"], "accepted");

    // Stale If-Match: 412, nothing written.
    let start = json!([{ "op": "replace", "path": "/status", "value": "in-progress" }]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &start, Some("W/\"1\"")).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{b}");
    assert_eq!(b["resourceType"], "OperationOutcome");
    // A failed test: 422, nothing written.
    let guarded =
        json!([{ "op": "test", "path": "/status", "value": "requested" }, { "op": "replace", "path": "/status", "value": "failed" }]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &guarded, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["resourceType"], "OperationOutcome");
    // The id and the type are the URL's.
    for ops in [
        json!([{ "op": "replace", "path": "/id", "value": "other" }]),
        json!([{ "op": "remove", "path": "/id" }]),
        json!([{ "op": "replace", "path": "/resourceType", "value": "Patient" }]),
    ] {
        let (s, b) = patch(&server, &path, JSON_PATCH, &ops, None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{ops}: {b}");
    }
    // Not a patch document, an unknown operation, a path that is not there, an unknown Task.
    let (s, _) = patch(&server, &path, JSON_PATCH, &json!({ "op": "remove" }), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = patch(&server, &path, JSON_PATCH, &json!([{ "op": "explode", "path": "/status" }]), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = patch(&server, &path, JSON_PATCH, &json!([{ "op": "remove", "path": "/note/0" }]), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = patch(&server, "Task/missing", JSON_PATCH, &start, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, read) = server.get(&path).await;
    assert_eq!((read["status"].as_str(), read["meta"]["versionId"].as_str()), (Some("accepted"), Some("2")), "{read}");

    // Prefer: return=minimal answers without a body, with the new ETag.
    let resp = server
        .client
        .patch(server.url(&path))
        .header("content-type", JSON_PATCH)
        .header("prefer", "return=minimal")
        .body(start.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["etag"], "W/\"3\"");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn json_patch_moves_a_task_and_refuses_what_it_must_r5() {
    json_patch_moves_a_task_and_refuses_what_it_must(TestServer::start().await).await;
}

#[tokio::test]
async fn json_patch_moves_a_task_and_refuses_what_it_must_r4() {
    json_patch_moves_a_task_and_refuses_what_it_must(TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await).await;
}

#[tokio::test]
async fn a_patch_notifies_with_the_patched_version_as_current_and_the_one_before_as_previous() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let url = "http://example.org/topics/task-started";
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["update"],
            "fhirPathCriteria": "%previous.status = 'requested' and %current.status = 'in-progress'" }],
        "notificationShape": [{ "resource": "Task" }]
    });
    let (s, b) = server.post("SubscriptionTopic", &topic).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let sub = server.subscribe(url, &rx.url, json!({ "content": "full-resource" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&sub, "active", T).await;

    let id = task(&server).await;
    let ops = json!([{ "op": "replace", "path": "/status", "value": "in-progress" }]);
    let (s, b) = patch(&server, &format!("Task/{id}"), JSON_PATCH, &ops, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let n = rx.next_of("event-notification", T).await;
    let focus = &n.body["entry"][1]["resource"];
    assert_eq!((focus["id"].as_str(), focus["status"].as_str()), (Some(id.as_str()), Some("in-progress")), "{}", n.body);
    assert_eq!(focus["meta"]["versionId"], "2");
}

/// A JSON Patch as a Bundle entry carries it: a Binary with the patch in `data`.
fn binary(ops: &Value) -> Value {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
    json!({ "resourceType": "Binary", "contentType": JSON_PATCH, "data": data })
}

async fn patch_entries_in_transactions_and_batches(server: TestServer) {
    let id = task(&server).await;
    let url = format!("Task/{id}");
    // One transaction: a new Patient, and the Task patched to be for it (its urn:uuid
    // rewritten) and started.
    let ops = json!([
        { "op": "replace", "path": "/status", "value": "in-progress" },
        { "op": "add", "path": "/for", "value": { "reference": "urn:uuid:0b3c7a36-5f0e-4d55-8a43-1f2e3d4c5b6a" } }
    ]);
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "request": { "method": "PATCH", "url": url, "ifMatch": "W/\"1\"" }, "resource": binary(&ops) },
        { "fullUrl": "urn:uuid:0b3c7a36-5f0e-4d55-8a43-1f2e3d4c5b6a", "request": { "method": "POST", "url": "Patient" },
          "resource": { "resourceType": "Patient", "name": [{ "family": "Patched" }] } }
    ] });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["entry"][0]["response"]["status"], "200 OK", "{b}");
    assert_eq!(b["entry"][0]["response"]["etag"], "W/\"2\"");
    let patient = b["entry"][1]["response"]["location"].as_str().unwrap().split("/_history").next().unwrap().to_owned();
    let (_, read) = server.get(&url).await;
    assert_eq!((read["status"].as_str(), read["for"]["reference"].as_str()), (Some("in-progress"), Some(patient.as_str())), "{read}");

    // A stale ifMatch or a failed test refuses the whole transaction: nothing is stored.
    let stale = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "request": { "method": "PATCH", "url": url, "ifMatch": "W/\"1\"" }, "resource": binary(&json!([{ "op": "remove", "path": "/for" }])) },
        { "request": { "method": "POST", "url": "Patient" }, "resource": { "resourceType": "Patient" } }
    ] });
    let (s, b) = server.post("", &stale).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{b}");
    let failing = json!([{ "op": "test", "path": "/status", "value": "requested" }, { "op": "remove", "path": "/for" }]);
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "request": { "method": "PATCH", "url": url }, "resource": binary(&failing) }
    ] });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // A Binary that is not a JSON Patch: 400.
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "request": { "method": "PATCH", "url": url }, "resource": { "resourceType": "Binary", "contentType": "text/plain", "data": "eA==" } }
    ] });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (_, read) = server.get(&url).await;
    assert_eq!(read["meta"]["versionId"], "2", "{read}");

    // A batch: each entry on its own.
    let done = json!([{ "op": "replace", "path": "/status", "value": "completed" }]);
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "request": { "method": "PATCH", "url": url }, "resource": binary(&failing) },
        { "request": { "method": "PATCH", "url": url }, "resource": binary(&done) },
        { "request": { "method": "PATCH", "url": "Task/missing" }, "resource": binary(&done) }
    ] });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let statuses: Vec<&str> = b["entry"].as_array().unwrap().iter().map(|e| e["response"]["status"].as_str().unwrap_or("")).collect();
    assert!(statuses[0].starts_with("422") && statuses[1] == "200 OK" && statuses[2].starts_with("404"), "{statuses:?}");
    assert_eq!(b["entry"][1]["resource"]["status"], "completed");
}

#[tokio::test]
async fn patch_entries_in_transactions_and_batches_r5() {
    patch_entries_in_transactions_and_batches(TestServer::start().await).await;
}

#[tokio::test]
async fn patch_entries_in_transactions_and_batches_r4() {
    patch_entries_in_transactions_and_batches(TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await).await;
}

/// One FHIRPath Patch operation parameter from its parts.
fn op(parts: Value) -> Value {
    json!({ "name": "operation", "part": parts })
}

fn fhirpath_patch(ops: Vec<Value>) -> Value {
    json!({ "resourceType": "Parameters", "parameter": ops })
}

async fn fhirpath_patch_adds_inserts_moves_replaces_and_deletes(server: TestServer) {
    let (s, b) = server
        .post(
            "Task",
            &json!({ "resourceType": "Task", "status": "requested", "intent": "order",
                "note": [{ "text": "first" }], "input": [{ "type": { "text": "a" }, "valueString": "x" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    let path = format!("Task/{id}");
    let ops = fhirpath_patch(vec![
        op(
            json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Task.status" }, { "name": "value", "valueCode": "accepted" }]),
        ),
        op(
            json!([{ "name": "type", "valueCode": "add" }, { "name": "path", "valueString": "Task" }, { "name": "name", "valueString": "businessStatus" },
            { "name": "value", "valueCodeableConcept": { "text": "queued" } }]),
        ),
        // An element with children, given as parts; `note` repeats, so it is appended.
        op(
            json!([{ "name": "type", "valueCode": "add" }, { "name": "path", "valueString": "Task" }, { "name": "name", "valueString": "note" },
            { "name": "value", "part": [{ "name": "text", "valueMarkdown": "third" }] }]),
        ),
        op(
            json!([{ "name": "type", "valueCode": "insert" }, { "name": "path", "valueString": "Task.note" }, { "name": "index", "valueInteger": 1 },
            { "name": "value", "valueAnnotation": { "text": "second" } }]),
        ),
        op(json!([{ "name": "type", "valueCode": "move" }, { "name": "path", "valueString": "Task.note" },
            { "name": "source", "valueInteger": 2 }, { "name": "destination", "valueInteger": 0 }])),
        // A choice changes type.
        op(
            json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Task.input.where(type.text = 'a').value" },
            { "name": "value", "valueInteger": 7 }]),
        ),
        op(
            json!([{ "name": "type", "valueCode": "add" }, { "name": "path", "valueString": "Task" }, { "name": "name", "valueString": "input" },
            { "name": "value", "part": [{ "name": "type", "valueCodeableConcept": { "text": "b" } }, { "name": "value", "valueBoolean": true }] }]),
        ),
        op(json!([{ "name": "type", "valueCode": "delete" }, { "name": "path", "valueString": "Task.priority" }])),
    ]);
    let (s, b) = patch(&server, &path, "application/fhir+json", &ops, Some("W/\"1\"")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "accepted", "{b}");
    assert_eq!(b["businessStatus"]["text"], "queued", "{b}");
    let notes: Vec<&str> = b["note"].as_array().unwrap().iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert_eq!(notes, ["third", "first", "second"], "{b}");
    assert_eq!(b["input"][0], json!({ "type": { "text": "a" }, "valueInteger": 7 }), "{b}");
    assert_eq!(b["input"][1], json!({ "type": { "text": "b" }, "valueBoolean": true }), "{b}");
    assert_eq!(b["meta"]["versionId"], "2");

    // Delete an item of a list, then the last one: the empty list goes too.
    let del = |path: &str| op(json!([{ "name": "type", "valueCode": "delete" }, { "name": "path", "valueString": path }]));
    let (s, b) =
        patch(&server, &path, "application/fhir+json", &fhirpath_patch(vec![del("Task.input[1]"), del("Task.input[0]")]), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("input").is_none(), "{b}");

    // Refused: several targets for a replace, an unknown operation, a bad path, the id.
    let replace_notes = op(
        json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Task.note" }, { "name": "value", "valueAnnotation": { "text": "x" } }]),
    );
    let (s, b) = patch(&server, &path, "application/fhir+json", &fhirpath_patch(vec![replace_notes]), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let unknown = op(json!([{ "name": "type", "valueCode": "frobnicate" }, { "name": "path", "valueString": "Task" }]));
    let (s, _) = patch(&server, &path, "application/fhir+json", &fhirpath_patch(vec![unknown]), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = patch(&server, &path, "application/fhir+json", &fhirpath_patch(vec![del("Task.(")]), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = patch(&server, &path, "application/fhir+json", &fhirpath_patch(vec![del("Task.id")]), None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = patch(&server, &path, "application/fhir+json", &json!({ "resourceType": "Task" }), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, read) = server.get(&path).await;
    assert_eq!(read["meta"]["versionId"], "3", "{read}");

    // In a batch, as a Parameters entry.
    let start = op(
        json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Task.status" }, { "name": "value", "valueCode": "in-progress" }]),
    );
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "request": { "method": "PATCH", "url": path, "ifMatch": "W/\"3\"" }, "resource": fhirpath_patch(vec![start]) }
    ] });
    let (s, b) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["entry"][0]["response"]["status"], "200 OK", "{b}");
    assert_eq!(b["entry"][0]["resource"]["status"], "in-progress", "{b}");
}

#[tokio::test]
async fn fhirpath_patch_adds_inserts_moves_replaces_and_deletes_r5() {
    fhirpath_patch_adds_inserts_moves_replaces_and_deletes(TestServer::start().await).await;
}

#[tokio::test]
async fn fhirpath_patch_adds_inserts_moves_replaces_and_deletes_r4() {
    fhirpath_patch_adds_inserts_moves_replaces_and_deletes(TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await).await;
}

#[tokio::test]
async fn a_patched_subscription_keeps_its_secrets_and_its_endpoint_guard() {
    const TOKEN: &str = "Bearer tok-patch-5a1e";
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let url = "http://example.org/topics/task-any";
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": url, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }] });
    assert_eq!(server.post("SubscriptionTopic", &topic).await.0, StatusCode::CREATED);
    let sub = server.subscribe(url, &rx.url, json!({ "parameter": [{ "name": "Authorization", "value": TOKEN }] })).await;
    assert_eq!(rx.next_of("handshake", T).await.headers["authorization"], TOKEN);
    server.wait_status(&sub, "active", T).await;
    let path = format!("Subscription/{sub}");

    // The patch sees what a read shows: a test of the secret itself fails.
    let probe = json!([{ "op": "test", "path": "/parameter/0/value", "value": TOKEN }]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &probe, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(!b.to_string().contains("tok-patch"), "{b}");
    // A new header: the answer is redacted, the stored secret is kept and sent.
    let add = json!([{ "op": "add", "path": "/parameter/-", "value": { "name": "X-Tenant", "value": "north" } }]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &add, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["parameter"][0]["value"], "[redacted]", "{b}");
    let handshake = rx.next_of("handshake", T).await;
    assert_eq!((handshake.headers["authorization"].to_str().unwrap(), handshake.headers["x-tenant"].to_str().unwrap()), (TOKEN, "north"));
    // The endpoint guard of a PUT applies.
    let hostile = json!([{ "op": "replace", "path": "/endpoint", "value": "http://169.254.169.254/latest/meta-data" }]);
    let (s, b) = patch(&server, &path, JSON_PATCH, &hostile, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    // Validation of a Subscription applies: no topic, no Subscription.
    let (s, b) = patch(&server, &path, JSON_PATCH, &json!([{ "op": "remove", "path": "/topic" }]), None).await;
    assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY, "{s}: {b}");
}

/// The methods `_history` records: each version's `request.method` says how it was made,
/// `PATCH` for a patch over HTTP or in a transaction or batch, `PUT` for an update.
async fn history_records_patch_as_patch(server: TestServer) {
    let id = task(&server).await;
    let url = format!("Task/{id}");
    let describe = |text: &str| json!([{ "op": "add", "path": "/description", "value": text }]);
    let (s, b) = patch(&server, &url, JSON_PATCH, &describe("v2"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, mut current) = server.get(&url).await;
    current["description"] = json!("v3");
    let (s, _) = server.put(&url, &current).await;
    assert_eq!(s, StatusCode::OK);
    let fp = fhirpath_patch(vec![op(
        json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Task.description" }, { "name": "value", "valueString": "v4" }]),
    )]);
    let (s, b) = patch(&server, &url, "application/fhir+json", &fp, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for kind in ["transaction", "batch"] {
        let bundle = json!({ "resourceType": "Bundle", "type": kind, "entry": [
            { "request": { "method": "PATCH", "url": url }, "resource": binary(&describe(kind)) }
        ] });
        let (s, b) = server.post("", &bundle).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["entry"][0]["response"]["status"], "200 OK", "{b}");
        let (s, _) = patch(&server, &url, JSON_PATCH, &describe("again"), None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, history) = server.get(&format!("{url}/_history")).await;
    assert_eq!(s, StatusCode::OK, "{history}");
    // Newest first: v8 patch, v7 batch patch, v6 patch, v5 transaction patch, v4 FHIRPath
    // patch, v3 PUT, v2 patch, v1 POST.
    let methods: Vec<(&str, &str)> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["resource"]["meta"]["versionId"].as_str().unwrap(), e["request"]["method"].as_str().unwrap()))
        .collect();
    assert_eq!(
        methods,
        [("8", "PATCH"), ("7", "PATCH"), ("6", "PATCH"), ("5", "PATCH"), ("4", "PATCH"), ("3", "PUT"), ("2", "PATCH"), ("1", "POST")],
        "{history}"
    );
    // The request URL of a patch is the instance, as for PUT.
    assert_eq!(history["entry"][0]["request"]["url"], history["entry"][5]["request"]["url"], "{history}");
}

#[tokio::test]
async fn history_records_patch_as_patch_r5() {
    history_records_patch_as_patch(TestServer::start().await).await;
}

#[tokio::test]
async fn history_records_patch_as_patch_r4() {
    history_records_patch_as_patch(TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await).await;
}

/// FHIRPath Patch where the target is not (yet) a value: `insert` into a list that is absent
/// (at index 0 only), and a primitive that carries only extensions (`_birthDate`).
async fn fhirpath_patch_absent_lists_and_extension_only_primitives(server: TestServer) {
    let ext = json!({ "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown" }] });
    let (s, b) = server
        .post("Patient", &json!({ "resourceType": "Patient", "_birthDate": ext, "_gender": ext, "name": [{ "family": "Doe" }] }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let path = format!("Patient/{}", b["id"].as_str().unwrap());
    let fp = |parts: Value| fhirpath_patch(vec![op(parts)]);

    // Insert at 0 into the absent Patient.telecom, and into HumanName.given of the one name.
    let ops = fhirpath_patch(vec![
        op(
            json!([{ "name": "type", "valueCode": "insert" }, { "name": "path", "valueString": "Patient.telecom" }, { "name": "index", "valueInteger": 0 },
            { "name": "value", "valueContactPoint": { "system": "phone", "value": "555" } }]),
        ),
        op(
            json!([{ "name": "type", "valueCode": "insert" }, { "name": "path", "valueString": "Patient.name.where(family = 'Doe').given" },
            { "name": "index", "valueInteger": 0 }, { "name": "value", "valueString": "Jane" }]),
        ),
    ]);
    let (s, b) = patch(&server, &path, "application/fhir+json", &ops, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["telecom"], json!([{ "system": "phone", "value": "555" }]), "{b}");
    assert_eq!(b["name"][0]["given"], json!(["Jane"]), "{b}");
    // Past index 0 of an absent list, a name that does not repeat, a parent that is not one element: 422.
    for (p, value) in [
        ("Patient.photo", json!({ "name": "index", "valueInteger": 1 })),
        ("Patient.maritalStatus", json!({ "name": "index", "valueInteger": 0 })),
        ("Patient.contact.telecom", json!({ "name": "index", "valueInteger": 0 })),
    ] {
        let body = fp(json!([{ "name": "type", "valueCode": "insert" }, { "name": "path", "valueString": p }, value,
            { "name": "value", "valueAttachment": { "url": "http://x" } }]));
        let (s, oo) = patch(&server, &path, "application/fhir+json", &body, None).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}: {oo}");
    }
    // `add` into an absent list makes it.
    let body = fp(
        json!([{ "name": "type", "valueCode": "add" }, { "name": "path", "valueString": "Patient" }, { "name": "name", "valueString": "photo" },
        { "name": "value", "valueAttachment": { "url": "http://x/photo" } }]),
    );
    let (s, b) = patch(&server, &path, "application/fhir+json", &body, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["photo"], json!([{ "url": "http://x/photo" }]), "{b}");

    // A primitive with only an extension: replace gives it a value beside the extension;
    // delete removes it with its extension.
    let body = fp(
        json!([{ "name": "type", "valueCode": "replace" }, { "name": "path", "valueString": "Patient.birthDate" }, { "name": "value", "valueDate": "1970-01-01" }]),
    );
    let (s, b) = patch(&server, &path, "application/fhir+json", &body, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["birthDate"], "1970-01-01", "{b}");
    assert_eq!(b["_birthDate"], ext, "{b}");
    let body = fp(json!([{ "name": "type", "valueCode": "delete" }, { "name": "path", "valueString": "Patient.gender" }]));
    let (s, b) = patch(&server, &path, "application/fhir+json", &body, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("gender").is_none() && b.get("_gender").is_none(), "{b}");
    // Deleting a primitive with a value and an extension removes both.
    let body = fp(json!([{ "name": "type", "valueCode": "delete" }, { "name": "path", "valueString": "Patient.birthDate" }]));
    let (s, b) = patch(&server, &path, "application/fhir+json", &body, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("birthDate").is_none() && b.get("_birthDate").is_none(), "{b}");
}

#[tokio::test]
async fn fhirpath_patch_absent_lists_and_extension_only_primitives_r5() {
    fhirpath_patch_absent_lists_and_extension_only_primitives(TestServer::start().await).await;
}

#[tokio::test]
async fn fhirpath_patch_absent_lists_and_extension_only_primitives_r4() {
    fhirpath_patch_absent_lists_and_extension_only_primitives(TestServer::start_with(|c| c.fhir.version = "4.0.1".into()).await).await;
}
