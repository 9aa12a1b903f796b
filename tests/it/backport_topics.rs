//! Topics, the CapabilityStatement and the `fhirVersion` MIME parameter on R4 and R4B
//! instances (Subscriptions Backport IG): the built-in topics in each version's form and
//! found by search, operator-loaded topics (the IG's R4 `Basic` and R4B `SubscriptionTopic`
//! examples) accepted and advertised, bad ones refused with 422, and 415/406 for another
//! FHIR version.
//!
//! The IG examples are read from `../shared/fhir/examples/topics`; without them those steps
//! print a note and pass, except under `CI=true`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestServer;

const BUILTIN: &str = "http://herald.dev/fhir/SubscriptionTopic/";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport";
const XV: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";
const TOPIC_CANONICAL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

/// An IG example under `../shared/fhir/examples/topics/`; `None` (with a note) when absent
/// outside CI.
fn example(path: &str) -> Option<Value> {
    let full = format!("{}/../shared/fhir/examples/topics/{path}", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read_to_string(&full) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(e) => {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{full} is missing under CI: {e}");
            eprintln!("note: {full} is absent ({e}); skipped");
            None
        }
    }
}

async fn r4() -> TestServer {
    TestServer::start_with(|cfg| cfg.fhir.version = "4.0.1".into()).await
}

async fn r4b() -> TestServer {
    TestServer::start_with(|cfg| cfg.fhir.version = "4.3.0".into()).await
}

/// The resources of a searchset.
fn found(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]).collect()
}

/// The topic canonicals the CapabilityStatement advertises on Subscription.
async fn advertised(server: &TestServer) -> Vec<String> {
    let (s, cs) = server.get("metadata").await;
    assert_eq!(s, StatusCode::OK);
    let sub = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Subscription").unwrap().clone();
    sub["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == TOPIC_CANONICAL)
        .map(|e| e["valueCanonical"].as_str().unwrap().to_owned())
        .collect()
}

/// A refusal: the status and an OperationOutcome whose text mentions `says`.
fn refused(status: StatusCode, body: &Value, expected: StatusCode, says: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert!(body.to_string().contains(says), "{says:?} not in {body}");
}

/// An R4 topic `Basic` with these extensions (status active).
fn basic_topic(url: &str, more: Value) -> Value {
    let mut extension = vec![json!({ "url": format!("{XV}url"), "valueUri": url })];
    extension.extend(more.as_array().cloned().unwrap_or_default());
    json!({
        "resourceType": "Basic",
        "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
        "modifierExtension": [{ "url": format!("{XV}status"), "valueCode": "active" }],
        "extension": extension
    })
}

fn task_trigger(criteria: &str) -> Value {
    json!({ "url": format!("{XV}resourceTrigger"), "extension": [
        { "url": "resource", "valueUri": "Task" },
        { "url": "supportedInteraction", "valueCode": "update" },
        { "url": "fhirPathCriteria", "valueString": criteria }
    ] })
}

#[tokio::test]
async fn r4_topics_are_basic_resources_found_by_code_loaded_by_operators_and_validated() {
    let server = r4().await;
    // The built-ins, as Basic resources coded SubscriptionTopic.
    let (s, bundle) = server.get("Basic?code=SubscriptionTopic").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let builtins = found(&bundle);
    assert_eq!(builtins.len(), 6, "{bundle}");
    assert!(builtins.iter().all(|b| b["resourceType"] == "Basic" && b["id"].as_str().unwrap().starts_with("herald-")));
    let (_, assigned) = server.get("Basic/herald-task-assigned").await;
    assert!(assigned["extension"].as_array().unwrap().iter().any(|e| e["valueUri"] == format!("{BUILTIN}task-assigned")));
    let (s, b) = server.get(&format!("SubscriptionTopic?url={BUILTIN}task-assigned")).await;
    assert!(s == StatusCode::NOT_FOUND || found(&b).is_empty(), "R4 stores no SubscriptionTopic: {b}");

    // A plain Basic stays a plain resource.
    let plain = json!({ "resourceType": "Basic", "code": { "coding": [{ "system": "http://example.org/kinds", "code": "referral" }] },
        "extension": [{ "url": format!("{XV}colour"), "valueString": "not read: this Basic is no topic" }] });
    let (s, b) = server.post("Basic", &plain).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The IG's R4 example, loaded by an operator.
    if let Some(topic) = example("subscriptions-backport/Basic-r4-encounter-complete.json") {
        let (s, b) = server.put("Basic/r4-encounter-complete", &topic).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (_, bundle) = server.get("Basic?code=SubscriptionTopic").await;
        assert_eq!(found(&bundle).len(), 7);
        let url = "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/r4-encounter-complete";
        assert!(advertised(&server).await.iter().any(|u| u == url), "a draft topic can be subscribed to, so it is advertised");
    }
    let mut own = basic_topic("http://example.org/topics/task-done", json!([task_trigger("%current.status = 'completed'")]));
    own["id"] = json!("task-done");
    let (s, b) = server.put("Basic/task-done", &own).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(advertised(&server).await.iter().any(|u| u == "http://example.org/topics/task-done"));

    // Refused with 422 and an OperationOutcome: a topic that does not convert or validate.
    let cases = [
        (basic_topic("http://example.org/bad-1", json!([task_trigger("%current.status = ")])), "fhirPathCriteria"),
        (
            basic_topic("http://example.org/bad-2", json!([{ "url": format!("{XV}colour"), "valueString": "red" }, task_trigger("true")])),
            "colour",
        ),
        (
            basic_topic(
                "http://example.org/bad-3",
                json!([{ "url": format!("{XV}resourceTrigger"), "extension": [{ "url": "resource", "valueUri": "Subscription" }] }]),
            ),
            "may not name Subscription",
        ),
        (basic_topic("http://example.org/bad-4", json!([])), "resourceTrigger"),
    ];
    for (topic, says) in cases {
        let (s, b) = server.post("Basic", &topic).await;
        refused(s, &b, StatusCode::UNPROCESSABLE_ENTITY, says);
    }
    let mut modifier = basic_topic("http://example.org/bad-5", json!([task_trigger("true")]));
    modifier["modifierExtension"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "url": "http://example.org/must-understand", "valueBoolean": true }));
    let (s, b) = server.post("Basic", &modifier).await;
    refused(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "must-understand");

    // The built-ins are read-only, and their url space is reserved, in R4 too.
    let (s, b) = server.put("Basic/herald-task-assigned", &assigned).await;
    refused(s, &b, StatusCode::METHOD_NOT_ALLOWED, "built-in");
    let (s, b) = server.post("Basic", &basic_topic(&format!("{BUILTIN}mine"), json!([task_trigger("true")]))).await;
    refused(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "reserved");

    // Recoded as a plain Basic, a topic stops being one.
    let mut recoded = own.clone();
    recoded["code"] = json!({ "coding": [{ "system": "http://example.org/kinds", "code": "note" }] });
    let (s, b) = server.put("Basic/task-done", &recoded).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!advertised(&server).await.iter().any(|u| u == "http://example.org/topics/task-done"));
    server.stop().await;
}

#[tokio::test]
async fn r4b_topics_are_r4b_subscription_topics_searchable_by_the_igs_parameters() {
    let server = r4b().await;
    let (s, bundle) = server.get(&format!("SubscriptionTopic?url={BUILTIN}task-assigned")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let topics = found(&bundle);
    assert_eq!(topics.len(), 1, "{bundle}");
    assert_eq!(topics[0]["id"], "herald-task-assigned");
    assert!(topics[0].get("name").is_none(), "R4B has no SubscriptionTopic.name");
    let (_, bundle) = server.get("SubscriptionTopic?title=Task%20assigned").await;
    assert_eq!(found(&bundle).len(), 1, "{bundle}");

    if let Some(topic) = example("subscriptions-backport/SubscriptionTopic-r4b-encounter-complete.json") {
        let (s, b) = server.put("SubscriptionTopic/r4b-encounter-complete", &topic).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let url = "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/r4b-encounter-complete";
        for query in [
            format!("url={url}"),
            format!("derived-or-self={url}"),
            "resource=Encounter".to_owned(),
            "trigger-description=Triggered%20when%20an%20encounter".to_owned(),
        ] {
            let (s, bundle) = server.get(&format!("SubscriptionTopic?{query}")).await;
            assert_eq!(s, StatusCode::OK, "{bundle}");
            let ids: Vec<&str> = found(&bundle).iter().filter_map(|t| t["id"].as_str()).collect();
            assert_eq!(ids, ["r4b-encounter-complete"], "{query}");
        }
        assert!(advertised(&server).await.iter().any(|u| u == url));
    }

    let bad = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/bad", "status": "active",
        "resourceTrigger": [{ "resource": "Subscription" }] });
    let (s, b) = server.post("SubscriptionTopic", &bad).await;
    refused(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "may not name Subscription");
    // R4B's modifier codes mix comparators in; they are read as R5 comparators.
    let own = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/r4b", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["update"] }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "modified", "modifier": ["gt", "lt"] }] });
    let (s, b) = server.post("SubscriptionTopic", &own).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["canFilterBy"][0]["modifier"], json!(["gt", "lt"]), "stored as written, in R4B shape");
    server.stop().await;
}

/// The CapabilityStatement of an instance of `version` (one version per process, so one
/// test each).
async fn capability_statement_of(version: &'static str, instantiates: Option<String>, topic_entry: &str) {
    let server = TestServer::start_with(|cfg| cfg.fhir.version = version.into()).await;
    let (s, cs) = server.get("metadata").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cs["fhirVersion"], version);
    assert_eq!(cs["rest"][0]["mode"], "server");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    let entry = |ty: &str| resources.iter().find(|r| r["type"] == ty);
    let sub = entry("Subscription").unwrap();
    let topics = advertised(&server).await;
    for name in ["coordination-task-changed", "task-assigned", "task-cancellation-requested", "actionable-request-placed"] {
        assert!(topics.contains(&format!("{BUILTIN}{name}")), "{version}: {name} advertised");
    }
    assert!(entry(topic_entry).is_some(), "{version}: {topic_entry} listed");
    assert!(entry("SubscriptionStatus").is_none());
    match instantiates {
        Some(server_cs) => {
            assert_eq!(cs["instantiates"], json!([server_cs]));
            // Kit test 2.01: a non-empty supportedProfile naming backport-subscription.
            assert_eq!(sub["supportedProfile"], json!([format!("{BACKPORT}/StructureDefinition/backport-subscription")]));
            let ops: Vec<&str> = sub["operation"].as_array().unwrap().iter().filter_map(|o| o["definition"].as_str()).collect();
            assert_eq!(
                ops,
                ["status", "events", "get-ws-binding-token"].map(|o| format!("{BACKPORT}/OperationDefinition/backport-subscription-{o}"))
            );
        }
        None => assert!(cs.get("instantiates").is_none()),
    }
    if version == "4.0.1" {
        assert!(entry("SubscriptionTopic").is_none(), "R4 has no SubscriptionTopic");
    }
    // Every type listed is one of the version's, once the model of the version is served.
    let model = herald::fhir::model::Model::current().unwrap();
    if model.fhir_version() == version {
        for r in resources {
            let ty = r["type"].as_str().unwrap();
            assert!(model.is_resource(ty), "{version} has no resource type {ty}");
        }
    } else {
        eprintln!("note: the model is FHIR {}, not {version}; the types listed were not checked", model.fhir_version());
    }
    server.stop().await;
}

#[tokio::test]
async fn the_r4_capability_statement_instantiates_the_r4_backport_server_and_lists_basic_topics() {
    capability_statement_of("4.0.1", Some(format!("{BACKPORT}/CapabilityStatement/backport-subscription-server-r4")), "Basic").await;
}

#[tokio::test]
async fn the_r4b_capability_statement_instantiates_the_backport_server_and_lists_subscription_topics() {
    capability_statement_of("4.3.0", Some(format!("{BACKPORT}/CapabilityStatement/backport-subscription-server")), "SubscriptionTopic")
        .await;
}

#[tokio::test]
async fn the_r5_capability_statement_advertises_topics_in_the_same_extension() {
    capability_statement_of("5.0.0", None, "SubscriptionTopic").await;
}

#[tokio::test]
async fn another_fhir_version_in_content_type_is_415_and_in_accept_406() {
    let server = r4().await;
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    let post = |ct: &'static str| server.client.post(server.url("Task")).header("content-type", ct).json(&task).send();

    let resp = post("application/fhir+json; fhirVersion=5.0").await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let oo: Value = resp.json().await.unwrap();
    refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, &oo, StatusCode::UNSUPPORTED_MEDIA_TYPE, "4.0.1");
    let (_, all) = server.get("Task").await;
    assert_eq!(all["total"], 0, "nothing was written");

    let resp = post("application/fhir+json; fhirVersion=4.0").await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("fhirVersion=4.0"), "the version asked for is named back");

    let get = |accept: &'static str| server.client.get(server.url("Task")).header("accept", accept).send();
    let resp = get("application/fhir+json; fhirVersion=4.3").await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
    let oo: Value = resp.json().await.unwrap();
    refused(StatusCode::NOT_ACCEPTABLE, &oo, StatusCode::NOT_ACCEPTABLE, "4.0.1");
    let resp = get("application/fhir+json; fhirVersion=4.0").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/fhir+json; charset=utf-8; fhirVersion=4.0");
    let resp = get("application/fhir+json").await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/fhir+json; charset=utf-8", "unchanged when not asked");
    let resp = server.client.get(server.url("metadata")).header("accept", "application/fhir+json; fhirVersion=5.0").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE, "the CapabilityStatement too");
    server.stop().await;
}

#[tokio::test]
async fn r4_topics_and_built_ins_survive_a_restart_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let r4 = |cfg: &mut herald::config::Config, path: &std::path::Path| {
        cfg.fhir.version = "4.0.1".into();
        cfg.store.data_dir = path.to_path_buf();
    };
    let first = TestServer::start_with(|cfg| r4(cfg, &path)).await;
    let mut own = basic_topic("http://example.org/topics/kept", json!([task_trigger("%current.status = 'completed'")]));
    own["id"] = json!("kept");
    let (s, b) = first.put("Basic/kept", &own).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    first.stop().await;

    let second = TestServer::start_with(|cfg| r4(cfg, &path)).await;
    assert!(advertised(&second).await.iter().any(|u| u == "http://example.org/topics/kept"));
    // The built-ins were not written again: an unchanged definition keeps its version.
    let (_, history) = second.get("Basic/herald-task-assigned/_history").await;
    assert_eq!(history["entry"].as_array().map(Vec::len), Some(1), "{history}");
    let (_, bundle) = second.get("Basic?code=SubscriptionTopic").await;
    assert_eq!(found(&bundle).len(), 7);
    second.stop().await;
}
