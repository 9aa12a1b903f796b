//! Conditional interactions: create (`If-None-Exist`), update and delete on a search, reads
//! answering 304, and transactions with `ifNoneExist`, conditional `request.url`s and
//! conditional references (with a JSON Patch entry in the same transaction); each count case (0, 1, several), a race of many clients on one
//! `If-None-Exist`, in R5 and R4.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestServer;

const FHIR: &str = "application/fhir+json";

fn patient(system: &str, value: &str, family: &str) -> Value {
    json!({ "resourceType": "Patient", "identifier": [{ "system": system, "value": value }], "name": [{ "family": family }] })
}

async fn start(version: &str) -> TestServer {
    let version = version.to_owned();
    TestServer::start_with(move |c| c.fhir.version = version).await
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (status, headers, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

async fn ids(server: &TestServer, query: &str) -> Vec<String> {
    let (s, bundle) = server.get(&format!("Patient?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    bundle["entry"].as_array().into_iter().flatten().map(|e| e["resource"]["id"].as_str().unwrap().to_owned()).collect()
}

async fn conditional_create(version: &str) {
    let server = start(version).await;
    let create = |body: Value, cond: &str| {
        server.client.post(server.url("Patient")).header("content-type", FHIR).header("if-none-exist", cond).json(&body)
    };
    // No match: created.
    let (s, h, first) = send(create(patient("urn:x", "42", "A"), "identifier=urn:x|42")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(h.contains_key("location"));
    // One match: 200 with the existing resource, nothing written.
    let (s, h, again) = send(create(patient("urn:x", "42", "B"), "identifier=urn:x|42")).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["name"][0]["family"], "A");
    assert_eq!(h["etag"], "W/\"1\"");
    assert_eq!(ids(&server, "identifier=urn:x|42").await, vec![id.clone()]);
    // Several matches: 412.
    let (s, _) = server.post("Patient", &patient("urn:x", "42", "C")).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, oo) = send(create(patient("urn:x", "42", "D"), "identifier=urn:x|42")).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "multiple-matches");
    assert_eq!(ids(&server, "identifier=urn:x|42").await.len(), 2);
    // A condition is strict: an unknown parameter or a result parameter is 400, not ignored.
    for bad in ["nonsense=1", "identifier=urn:x|42&_count=1", ""] {
        let (s, _, oo) = send(create(patient("urn:x", "43", "E"), bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
    }
    assert!(ids(&server, "identifier=urn:x|43").await.is_empty());
}

#[tokio::test]
async fn conditional_create_r5() {
    conditional_create("5.0.0").await;
}

#[tokio::test]
async fn conditional_create_r4() {
    conditional_create("4.0.1").await;
}

/// Twenty clients race one `If-None-Exist` (released together by a barrier, in several
/// rounds): one resource, one 201, every answer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_conditional_creates_make_exactly_one_resource() {
    let server = start("5.0.0").await;
    for round in 0..5 {
        let value = format!("{round}");
        let condition = format!("identifier=urn:race|{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let req = server
                .client
                .post(server.url("Patient"))
                .header("content-type", FHIR)
                .header("if-none-exist", condition.as_str())
                .json(&patient("urn:race", &value, &format!("racer{i}")));
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                send(req).await
            }));
        }
        let mut created = 0;
        let mut named = std::collections::BTreeSet::new();
        for t in tasks {
            let (s, _, body) = t.await.unwrap();
            assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s}: {body}");
            if s == StatusCode::CREATED {
                created += 1;
            }
            named.insert(body["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(created, 1, "round {round}");
        let stored = ids(&server, &condition).await;
        assert_eq!(stored.len(), 1, "round {round}");
        assert_eq!(named.into_iter().collect::<Vec<_>>(), stored);
    }
}

async fn conditional_update_and_delete(version: &str) {
    let server = start(version).await;
    let put =
        |query: &str, body: &Value| server.client.put(server.url(&format!("Patient?{query}"))).header("content-type", FHIR).json(body);
    // No match, no id: created with a server id.
    let (s, _, made) = send(put("identifier=urn:u|1", &patient("urn:u", "1", "A"))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    // One match: updated in place.
    let (s, _, updated) = send(put("identifier=urn:u|1", &patient("urn:u", "1", "B"))).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["meta"]["versionId"], "2");
    // The body's id must be the match's.
    let mut other = patient("urn:u", "1", "C");
    other["id"] = json!("someone-else");
    let (s, _, _) = send(put("identifier=urn:u|1", &other)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // No match with an id: created with that id; with the id of a resource that does not match: 409.
    let mut chosen = patient("urn:u", "2", "D");
    chosen["id"] = json!("chosen-id");
    let (s, _, made) = send(put("identifier=urn:u|2", &chosen)).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    assert_eq!(made["id"], "chosen-id");
    let mut clash = patient("urn:u", "3", "E");
    clash["id"] = json!(id);
    let (s, _, _) = send(put("identifier=urn:u|3", &clash)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Several matches: 412, nothing changed.
    let (s, _, oo) = send(put("identifier=urn:u|", &patient("urn:u", "9", "F"))).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{oo}");
    let (s, _) = server.delete("Patient?identifier=urn:u|").await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_eq!(ids(&server, "identifier=urn:u|").await.len(), 2);
    // Delete: one match deleted, no match 204 and nothing deleted.
    let (s, _) = server.delete("Patient?identifier=urn:u|2").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = server.get("Patient/chosen-id").await;
    assert_eq!(s, StatusCode::GONE);
    let (s, _) = server.delete("Patient?identifier=urn:u|2").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(ids(&server, "identifier=urn:u|").await, vec![id]);
    // No criteria: refused, never "delete everything".
    let (s, _) = server.delete("Patient").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conditional_update_and_delete_r5() {
    conditional_update_and_delete("5.0.0").await;
}

#[tokio::test]
async fn conditional_update_and_delete_r4() {
    conditional_update_and_delete("4.0.1").await;
}

async fn conditional_read(version: &str) {
    let server = start(version).await;
    let (_, made) = server.post("Patient", &patient("urn:r", "1", "A")).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let get = |path: String, name: &'static str, value: &str| server.client.get(server.url(&path)).header(name, value);
    let (s, h, body) = send(get(format!("Patient/{id}"), "if-none-match", "W/\"1\"")).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(body, Value::Null);
    assert_eq!(h["etag"], "W/\"1\"");
    let (s, _, _) = send(get(format!("Patient/{id}/_history/1"), "if-none-match", "W/\"1\"")).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, body) = send(get(format!("Patient/{id}"), "if-none-match", "W/\"7\"")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["id"], id.as_str());
    let (s, _, _) = send(get(format!("Patient/{id}"), "if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, _) = send(get(format!("Patient/{id}"), "if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")).await;
    assert_eq!(s, StatusCode::OK);
    // After an update the old ETag no longer matches.
    let mut body = made.clone();
    body["name"][0]["family"] = json!("B");
    let (s, _) = server.put(&format!("Patient/{id}"), &body).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(get(format!("Patient/{id}"), "if-none-match", "W/\"1\"")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn conditional_read_r5() {
    conditional_read("5.0.0").await;
}

#[tokio::test]
async fn conditional_read_r4() {
    conditional_read("4.0.1").await;
}

async fn transaction_with_conditions(version: &str) {
    let server = start(version).await;
    let (_, existing) = server.post("Patient", &patient("urn:t", "1", "Existing")).await;
    let existing_id = existing["id"].as_str().unwrap().to_owned();
    let (_, gone) = server.post("Patient", &patient("urn:t", "2", "ToDelete")).await;
    let gone_id = gone["id"].as_str().unwrap().to_owned();
    let obs = |subject: &str| json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": subject } });
    let (_, task) = server.post("Task", &json!({ "resourceType": "Task", "status": "requested", "intent": "order" })).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    // A JSON Patch entry (a Binary, as the specification carries it) that accepts the Task and
    // points it at the Patient this transaction creates.
    let ops = json!([
        { "op": "replace", "path": "/status", "value": "accepted" },
        { "op": "add", "path": "/focus", "value": { "reference": "urn:uuid:22222222-2222-2222-2222-222222222222" } }
    ]);
    use base64::Engine;
    let patch = json!({ "resourceType": "Binary", "contentType": "application/json-patch+json",
        "data": base64::engine::general_purpose::STANDARD.encode(ops.to_string()) });
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            // ifNoneExist matches: nothing written, its fullUrl names the existing Patient.
            { "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111", "resource": patient("urn:t", "1", "Dup"),
              "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:t|1" } },
            // ifNoneExist without a match: created.
            { "fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222", "resource": patient("urn:t", "3", "New"),
              "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:t|3" } },
            { "resource": obs("urn:uuid:11111111-1111-1111-1111-111111111111"), "request": { "method": "POST", "url": "Observation" } },
            { "resource": obs("Patient?identifier=urn:t|1"), "request": { "method": "POST", "url": "Observation" } },
            { "resource": obs("urn:uuid:22222222-2222-2222-2222-222222222222"), "request": { "method": "POST", "url": "Observation" } },
            { "resource": patient("urn:t", "1", "Updated"), "request": { "method": "PUT", "url": "Patient?identifier=urn:t|1" } },
            { "request": { "method": "DELETE", "url": "Patient?identifier=urn:t|2" } },
            { "resource": patch, "request": { "method": "PATCH", "url": format!("Task/{task_id}") } },
        ]
    });
    let (s, out) = server.post("", &bundle).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let entries = out["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "200 OK", "{out}");
    assert_eq!(entries[0]["resource"]["id"], existing_id.as_str());
    assert_eq!(entries[1]["response"]["status"], "201 Created");
    let new_id = entries[1]["resource"]["id"].as_str().unwrap().to_owned();
    assert_eq!(entries[2]["resource"]["subject"]["reference"], format!("Patient/{existing_id}"));
    assert_eq!(entries[3]["resource"]["subject"]["reference"], format!("Patient/{existing_id}"));
    assert_eq!(entries[4]["resource"]["subject"]["reference"], format!("Patient/{new_id}"));
    assert_eq!(entries[5]["resource"]["id"], existing_id.as_str());
    assert_eq!(entries[5]["resource"]["name"][0]["family"], "Updated");
    let (s, _) = server.get(&format!("Patient/{gone_id}")).await;
    assert_eq!(s, StatusCode::GONE);
    assert!(entries[7]["response"]["status"].as_str().unwrap().starts_with("200"), "{out}");
    let (_, patched) = server.get(&format!("Task/{task_id}")).await;
    assert_eq!((&patched["status"], &patched["meta"]["versionId"]), (&json!("accepted"), &json!("2")), "{patched}");
    assert_eq!(patched["focus"]["reference"], format!("Patient/{new_id}"), "the patch's urn:uuid names the created Patient");

    // A conditional reference matching nothing, or several: the transaction fails, nothing stored.
    let (_, before) = server.get("Observation?_summary=count").await;
    server.post("Patient", &patient("urn:t", "3", "Second")).await;
    for reference in ["Patient?identifier=urn:t|404", "Patient?identifier=urn:t|3"] {
        let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
            { "resource": obs("Patient/x"), "request": { "method": "POST", "url": "Observation" } },
            { "resource": obs(reference), "request": { "method": "POST", "url": "Observation" } },
        ]});
        let (s, oo) = server.post("", &bundle).await;
        assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{reference}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(oo["issue"][0]["expression"][0].as_str().unwrap().contains("entry[1]"), "{oo}");
    }
    let (_, after) = server.get("Observation?_summary=count").await;
    assert_eq!(before["total"], after["total"]);
}

#[tokio::test]
async fn transaction_with_conditions_r5() {
    transaction_with_conditions("5.0.0").await;
}

#[tokio::test]
async fn transaction_with_conditions_r4() {
    transaction_with_conditions("4.0.1").await;
}

/// `ifNoneExist` entries of concurrent transactions are atomic as `If-None-Exist` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_transactions_with_if_none_exist_make_one_resource() {
    let server = start("4.0.1").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = reqwest::Client::new();
        let url = server.url("");
        let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
            { "resource": patient("urn:tr", "1", "T"), "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:tr|1" } },
        ]});
        tasks.push(tokio::spawn(async move { send(client.post(url).header("content-type", FHIR).json(&bundle)).await }));
    }
    for t in tasks {
        let (s, _, body) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    assert_eq!(ids(&server, "identifier=urn:tr|1").await.len(), 1);
}

/// The batch form of everything conditional: GET entries with `ifNoneMatch` and
/// `ifModifiedSince` answered 304 (or 200 when the condition fails), and `ifNoneExist`,
/// conditional PUT and conditional DELETE entries, each answered on its own.
async fn conditional_batch_entries(version: &str) {
    let server = start(version).await;
    let (_, made) = server.post("Patient", &patient("urn:b", "1", "A")).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let last_modified = made["meta"]["lastUpdated"].as_str().unwrap().to_owned();
    let url = format!("Patient/{id}");
    let get = |extra: Value| {
        let mut request = json!({ "method": "GET", "url": url });
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        json!({ "request": request })
    };
    let batch = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        get(json!({ "ifNoneMatch": "W/\"1\"" })),
        get(json!({ "ifNoneMatch": "W/\"9\"" })),
        get(json!({ "ifModifiedSince": last_modified })),
        get(json!({ "ifModifiedSince": "2001-01-01T00:00:00Z" })),
        get(json!({ "ifModifiedSince": "yesterday" })),
        { "request": { "method": "POST", "url": "Patient", "ifNoneMatch": "W/\"1\"" }, "resource": patient("urn:b", "x", "X") }
    ] });
    let (s, out) = server.post("", &batch).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let status = |i: usize| out["entry"][i]["response"]["status"].as_str().unwrap().to_owned();
    assert_eq!(status(0), "304 Not Modified", "{out}");
    assert_eq!(out["entry"][0]["response"]["etag"], "W/\"1\"");
    assert!(out["entry"][0].get("resource").is_none(), "{out}");
    assert_eq!(status(1), "200 OK", "{out}");
    assert_eq!(out["entry"][1]["resource"]["id"], id.as_str());
    assert_eq!(status(2), "304 Not Modified", "{out}");
    assert_eq!(status(3), "200 OK", "{out}");
    assert!(status(4).starts_with("400"), "{out}");
    assert!(status(5).starts_with("400"), "a conditional read header on a write: {out}");

    // ifNoneExist, conditional PUT and conditional DELETE: each entry decided on its own,
    // against what the entries before it committed.
    let (_, _) = server.post("Patient", &patient("urn:b", "del", "ToDelete")).await;
    let batch = json!({ "resourceType": "Bundle", "type": "batch", "entry": [
        { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:b|1" }, "resource": patient("urn:b", "1", "Again") },
        { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:b|2" }, "resource": patient("urn:b", "2", "New") },
        { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:b|2" }, "resource": patient("urn:b", "2", "Twice") },
        { "request": { "method": "PUT", "url": "Patient?identifier=urn:b|1" }, "resource": patient("urn:b", "1", "Updated") },
        { "request": { "method": "PUT", "url": "Patient?identifier=urn:b|3" }, "resource": patient("urn:b", "3", "Made") },
        { "request": { "method": "PUT", "url": "Patient?identifier=urn:b|" }, "resource": patient("urn:b", "9", "Several") },
        { "request": { "method": "DELETE", "url": "Patient?identifier=urn:b|del" } },
        { "request": { "method": "DELETE", "url": "Patient?identifier=urn:b|none" } },
        { "request": { "method": "POST", "url": "Patient", "ifNoneExist": "bogus=1" }, "resource": patient("urn:b", "4", "Bad") }
    ] });
    let (s, out) = server.post("", &batch).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let status = |i: usize| out["entry"][i]["response"]["status"].as_str().unwrap().to_owned();
    assert_eq!(status(0), "200 OK", "{out}");
    assert_eq!(out["entry"][0]["resource"]["id"], id.as_str());
    assert_eq!(out["entry"][0]["resource"]["name"][0]["family"], "A", "nothing written: {out}");
    assert_eq!(status(1), "201 Created", "{out}");
    assert_eq!(status(2), "200 OK", "the entry before created it: {out}");
    assert_eq!(out["entry"][2]["resource"]["id"], out["entry"][1]["resource"]["id"]);
    assert_eq!(status(3), "200 OK", "{out}");
    assert_eq!(out["entry"][3]["resource"]["id"], id.as_str());
    assert_eq!(out["entry"][3]["resource"]["meta"]["versionId"], "2");
    assert_eq!(status(4), "201 Created", "{out}");
    assert!(status(5).starts_with("412"), "{out}");
    assert!(status(6).starts_with("204"), "{out}");
    assert!(status(7).starts_with("204"), "{out}");
    assert!(status(8).starts_with("400"), "{out}");
    assert_eq!(ids(&server, "identifier=urn:b|del").await, Vec::<String>::new());
    assert_eq!(ids(&server, "identifier=urn:b|2").await.len(), 1);
    assert_eq!(ids(&server, "identifier=urn:b|1").await, vec![id]);
}

#[tokio::test]
async fn conditional_batch_entries_r5() {
    conditional_batch_entries("5.0.0").await;
}

#[tokio::test]
async fn conditional_batch_entries_r4() {
    conditional_batch_entries("4.0.1").await;
}
