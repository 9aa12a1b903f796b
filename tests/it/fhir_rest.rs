//! FHIR REST: CRUD, versioning, history, transactions and batches, topics, $status, metadata,
//! and bad input of every kind answered with an OperationOutcome while nothing stored changes.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestServer;

#[tokio::test]
async fn create_read_update_with_if_match_history_vread_delete() {
    let server = TestServer::start().await;
    let (s, created) = server.post("Patient", &json!({ "resourceType": "Patient", "name": [{ "family": "Chalmers" }] })).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].is_string());

    let resp = server.client.get(server.url(&format!("Patient/{id}"))).send().await.unwrap();
    assert_eq!(resp.headers()["etag"], "W/\"1\"");
    assert!(resp.headers().contains_key("last-modified"));

    let mut body = created.clone();
    body["name"][0]["family"] = json!("Windsor");
    let resp = server.client.put(server.url(&format!("Patient/{id}"))).header("if-match", "W/\"1\"").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server.client.put(server.url(&format!("Patient/{id}"))).header("if-match", "W/\"1\"").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED, "stale If-Match");
    let oo: Value = resp.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "conflict");
    let resp = server.client.put(server.url(&format!("Patient/{id}"))).header("if-match", "\"\"").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "malformed If-Match");

    let (s, v1) = server.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v1["name"][0]["family"], "Chalmers");
    let (_, hist) = server.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(hist["type"], "history");
    let versions: Vec<&str> =
        hist["entry"].as_array().unwrap().iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, vec!["2", "1"]);

    let (s, _) = server.delete(&format!("Patient/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, oo) = server.get(&format!("Patient/{id}")).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(oo["issue"][0]["code"], "deleted");
    let (_, hist) = server.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(hist["entry"][0]["request"]["method"], "DELETE");

    // Update-as-create with a client id.
    let (s, b) = server.put("Patient/p-1", &json!({ "resourceType": "Patient", "id": "p-1" })).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn bad_input_gets_operation_outcomes_and_changes_nothing() {
    let server = TestServer::start_with(|c| c.server.max_body_bytes = 4096).await;
    let (_, created) = server.post("Task", &json!({ "resourceType": "Task", "status": "requested", "intent": "order" })).await;
    let id = created["id"].as_str().unwrap().to_string();
    let raw = |method: reqwest::Method, path: &str, body: &'static str| {
        server.client.request(method, server.url(path)).header("content-type", "application/fhir+json").body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (raw(reqwest::Method::POST, "Task", "{not json"), StatusCode::BAD_REQUEST),
        (raw(reqwest::Method::POST, "Task", "[1,2]"), StatusCode::BAD_REQUEST),
        (raw(reqwest::Method::POST, "Task", r#"{"resourceType":"Patient"}"#), StatusCode::BAD_REQUEST),
        (raw(reqwest::Method::POST, "Nonsense", r#"{"resourceType":"Nonsense"}"#), StatusCode::NOT_FOUND),
        (
            server
                .client
                .put(server.url(&format!("Task/{id}")))
                .json(&json!({ "resourceType": "Task", "id": "other", "status": "failed" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            server.client.put(server.url(&format!("Task/{id}"))).json(&json!({ "resourceType": "Task", "status": "failed" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            server
                .client
                .post(server.url("Task"))
                .header("content-type", "application/fhir+json")
                .body(format!("{{\"resourceType\":\"Task\",\"note\":\"{}\"}}", "x".repeat(8000))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (server.client.post(server.url("Task")).header("content-type", "text/plain").body("{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (server.client.get(server.url("Task/bad$id")), StatusCode::BAD_REQUEST),
        (server.client.get(server.url("Task/missing")), StatusCode::NOT_FOUND),
        // Unknown search parameters are refused under strict handling (lenient, the default, ignores them).
        (server.client.get(server.url("Task?unknown-param=1")).header("prefer", "handling=strict"), StatusCode::BAD_REQUEST),
        (server.client.patch(server.url("Task")), StatusCode::METHOD_NOT_ALLOWED),
        (
            server.client.post(server.url("SubscriptionStatus")).json(&json!({ "resourceType": "SubscriptionStatus" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            server.client.post(server.url("Subscription")).json(&json!({ "resourceType": "Subscription", "status": "requested" })),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (req, want) in cases {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, want, "{text}");
        if status != StatusCode::METHOD_NOT_ALLOWED {
            let oo: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
            assert_eq!(oo["resourceType"], "OperationOutcome", "{text}");
            assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().len() > 5);
        }
    }
    let (_, now) = server.get(&format!("Task/{id}")).await;
    assert_eq!(now["meta"]["versionId"], "1");
    assert_eq!(now["status"], "requested");
}

#[tokio::test]
async fn invalid_subscription_reports_every_problem() {
    let server = TestServer::start().await;
    server.task_topic("http://example.org/t").await;
    let (s, oo) = server
        .post(
            "Subscription",
            &json!({
                "resourceType": "Subscription", "status": "requested", "topic": "http://example.org/t",
                "channelType": { "code": "carrier-pigeon" }, "endpoint": "ftp://x", "content": "everything",
                "contentType": "application/fhir+xml", "heartbeatPeriod": 0, "maxCount": 0
            }),
        )
        .await;
    assert!(s.is_client_error(), "{oo}");
    let exprs: Vec<&str> = oo["issue"].as_array().unwrap().iter().filter_map(|i| i["expression"][0].as_str()).collect();
    for want in [
        "Subscription.channelType",
        "Subscription.endpoint",
        "Subscription.content",
        "Subscription.contentType",
        "Subscription.heartbeatPeriod",
        "Subscription.maxCount",
    ] {
        assert!(exprs.contains(&want), "{want} missing in {exprs:?}");
    }
    let (s, oo) = server
        .post("Subscription", &json!({ "resourceType": "Subscription", "status": "requested", "topic": "http://example.org/unknown", "channelType": { "code": "rest-hook" }, "endpoint": "http://127.0.0.1:9/x" }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "Subscription.topic");
    let (s, _) = server
        .post("Subscription", &json!({ "resourceType": "Subscription", "status": "requested", "topic": "http://example.org/t", "channelType": { "code": "email" } }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn topics_are_validated_searched_and_protected() {
    let server = TestServer::start().await;
    let (s, oo) = server
        .post(
            "SubscriptionTopic",
            &json!({
                "resourceType": "SubscriptionTopic", "url": "http://example.org/q", "status": "active",
                "resourceTrigger": [{ "resource": "Task", "queryCriteria": { "current": "status=completed&colour=red" } }]
            }),
        )
        .await;
    assert!(s.is_client_error(), "{oo}");
    assert_eq!(oo["issue"][0]["code"], "invalid");
    assert_eq!(oo["issue"][0]["expression"][0], "SubscriptionTopic.resourceTrigger[0].queryCriteria.current");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("colour"));
    let (s, _) = server
        .post(
            "SubscriptionTopic",
            &json!({
                "resourceType": "SubscriptionTopic", "url": "http://example.org/f", "status": "active",
                "resourceTrigger": [{ "resource": "Task", "fhirPathCriteria": "%current.status = 'completed'" }]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "fhirPathCriteria is evaluated (tests/it/topics.rs)");
    let (s, _) = server
        .post("SubscriptionTopic", &json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/x", "status": "active", "resourceTrigger": [{ "resource": "Nope" }] }))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The full StructureDefinition URL is a valid trigger resource (R5).
    let (s, topic) = server
        .post(
            "SubscriptionTopic",
            &json!({
                "resourceType": "SubscriptionTopic", "url": "http://example.org/full", "status": "active",
                "resourceTrigger": [{ "resource": "http://hl7.org/fhir/StructureDefinition/Task", "supportedInteraction": ["update"] }]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{topic}");
    server.task_topic("http://example.org/other").await;
    let (_, found) = server.get("SubscriptionTopic?url=http://example.org/full").await;
    assert_eq!(found["type"], "searchset");
    assert_eq!(found["total"], 1);
    assert_eq!(found["entry"][0]["resource"]["url"], "http://example.org/full");
    // A topic with subscriptions cannot be deleted.
    let tid = topic["id"].as_str().unwrap();
    server.subscribe("http://example.org/full", "http://127.0.0.1:9/hook", json!({})).await;
    let (s, _) = server.delete(&format!("SubscriptionTopic/{tid}")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (_, cs) = server.get("metadata").await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "5.0.0");
    let sub = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Subscription").unwrap();
    assert_eq!(sub["operation"][0]["name"], "status");
    assert!(sub["extension"].as_array().unwrap().iter().any(|e| e["valueCanonical"] == "http://example.org/full"));
}

#[tokio::test]
async fn transaction_is_all_or_nothing_with_urn_uuid_rewriting() {
    let server = TestServer::start().await;
    let tx = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": { "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": { "reference": "Patient/p" } }, "request": { "method": "POST", "url": "ServiceRequest" } },
            { "resource": { "resourceType": "Task", "status": "requested", "intent": "order", "focus": { "reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a" } }, "request": { "method": "POST", "url": "Task" } }
        ]
    });
    let (s, resp) = server.post("", &tx).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    let sr_id = resp["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(resp["entry"][1]["resource"]["focus"]["reference"], format!("ServiceRequest/{sr_id}").as_str());

    let (_, before) = server.get("Task").await;
    let count_before = before["total"].as_u64().unwrap();
    let bad = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            { "resource": { "resourceType": "Task", "status": "requested", "intent": "order" }, "request": { "method": "POST", "url": "Task" } },
            { "resource": { "resourceType": "Task", "id": "x", "status": "requested", "intent": "order" }, "request": { "method": "PUT", "url": "Task/x", "ifMatch": "W/\"7\"" } }
        ]
    });
    let (s, oo) = server.post("", &bad).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().starts_with("entry 1"), "{oo}");
    let (_, after) = server.get("Task").await;
    assert_eq!(after["total"].as_u64().unwrap(), count_before, "nothing of the failed transaction was stored");
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    let server = TestServer::start().await;
    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            { "resource": { "resourceType": "Task", "status": "requested", "intent": "order" }, "request": { "method": "POST", "url": "Task" } },
            { "request": { "method": "DELETE", "url": "Task/does-not-exist" } },
            { "request": { "method": "GET", "url": "Task/does-not-exist" } }
        ]
    });
    let (s, resp) = server.post("", &batch).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    assert_eq!(resp["type"], "batch-response");
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    assert!(resp["entry"][1]["response"]["status"].as_str().unwrap().starts_with("404"));
    assert_eq!(resp["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert!(resp["entry"][2]["response"]["status"].as_str().unwrap().starts_with("404"));
}

#[tokio::test]
async fn type_level_status_filters_by_id_and_status() {
    let server = TestServer::start().await;
    server.task_topic("http://example.org/t").await;
    let a = server.subscribe("http://example.org/t", "http://127.0.0.1:9/a", json!({})).await;
    let b = server.subscribe("http://example.org/t", "http://127.0.0.1:9/b", json!({})).await;
    server.wait_status(&a, "error", std::time::Duration::from_secs(10)).await;
    server.wait_status(&b, "error", std::time::Duration::from_secs(10)).await;
    let (_, all) = server.get("Subscription/$status").await;
    assert_eq!(all["type"], "searchset");
    assert_eq!(all["entry"].as_array().unwrap().len(), 2);
    for e in all["entry"].as_array().unwrap() {
        assert_eq!(e["resource"]["type"], "query-status");
        assert_eq!(e["search"]["mode"], "match");
    }
    let (_, one) = server.get(&format!("Subscription/$status?id={a}")).await;
    assert_eq!(one["entry"].as_array().unwrap().len(), 1);
    assert!(one["entry"][0]["resource"]["subscription"]["reference"].as_str().unwrap().ends_with(&a));
    let (_, none) = server.get(&format!("Subscription/$status?id={a},{b}&status=active")).await;
    assert_eq!(none["entry"].as_array().unwrap().len(), 0);
    let (s, _) = server
        .post("Subscription/$status", &json!({ "resourceType": "Parameters", "parameter": [{ "name": "id", "valueString": b }] }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = server.get("Subscription/nope/$status").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn task_state_machine_is_enforced_on_coordination_tasks_only_when_the_operator_asks() {
    let task = |status: &str, focus: &str| json!({ "resourceType": "Task", "id": "coord", "status": status, "intent": "order", "focus": { "reference": focus } });
    let strict = TestServer::start_with(|cfg| cfg.ingest.enforce_task_state_machine = true).await;
    assert!(strict.put("Task/coord", &task("in-progress", "ServiceRequest/1")).await.0.is_success());
    assert!(strict.put("Task/coord", &task("completed", "ServiceRequest/1")).await.0.is_success());
    let (s, oo) = strict.put("Task/coord", &task("in-progress", "ServiceRequest/1")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "business-rule");
    assert_eq!(oo["issue"][0]["expression"][0], "Task.status");
    let (_, stored) = strict.get("Task/coord").await;
    assert_eq!(stored["status"], "completed", "the refused write changed nothing");
    assert!(strict.put("Task/coord", &task("entered-in-error", "ServiceRequest/1")).await.0.is_success());

    // Off by default: the same sequence is stored as sent.
    let plain = TestServer::start().await;
    assert!(plain.put("Task/coord", &task("completed", "ServiceRequest/1")).await.0.is_success());
    assert!(plain.put("Task/coord", &task("in-progress", "ServiceRequest/1")).await.0.is_success());
}

#[tokio::test]
async fn a_stopped_server_releases_its_store_for_the_next_one() {
    // `herald::run` returning means the store is closed: a new server on the same data
    // directory starts at once and sees what the first one acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let first = TestServer::start_with(|cfg| cfg.store.data_dir = path.clone()).await;
    let (s, _) = first.put("Patient/kept", &json!({ "resourceType": "Patient", "id": "kept" })).await;
    assert!(s.is_success());
    first.stop().await;
    let path = dir.path().to_path_buf();
    let second = TestServer::start_with(|cfg| cfg.store.data_dir = path.clone()).await;
    let (s, body) = second.get("Patient/kept").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}
