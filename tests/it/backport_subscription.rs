//! R4 and R4B Subscriptions (Subscriptions Backport IG 1.1.0) through a real R4 or R4B server:
//! create with the IG's example shape, the 201 body the conformance kit reads (groups 1 and 6 of
//! ../shared/fhir/backport/INFERNO-SERVER-CHECKS.md), read, update, delete, search, the
//! handshake after the create, secrets, and every refusal of the kit's rejection group.
//!
//! Each test starts its own server with `fhir.version` set; nextest runs each test in a
//! process of its own, so the process-wide version is per test. The topic is installed as an
//! R5/R4B-shaped SubscriptionTopic where the instance takes one, else (R4 once SubscriptionTopic
//! is no R4 resource type) as the IG's `Basic` wrapper (`install_topic`).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};
use herald::config::ApiKeySetting;

const T: Duration = Duration::from_secs(10);
const TOPIC: &str = "http://hl7.org/SubscriptionTopic/admission";
const IG: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
const KEY: &str = "key-placer";
const TOKEN: &str = "Bearer tok-r4-7d1e5b";

/// An R4 or R4B instance; with `keys`, one API-key client (`KEY`) may do everything.
async fn start(version: &str, keys: bool) -> TestServer {
    let version = version.to_owned();
    TestServer::start_with(move |c| {
        c.fhir.version = version;
        if keys {
            c.auth.api_keys =
                vec![ApiKeySetting { client: "placer".into(), sha256: herald::auth::api_key_digest(KEY), scopes: "system/*.cruds".into() }];
        }
    })
    .await
}

/// A request as the API-key client when `keyed`, else anonymous.
async fn call(server: &TestServer, keyed: bool, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut req = server.client.request(method, server.url(path)).header("accept", "application/fhir+json");
    if keyed {
        req = req.header("x-api-key", KEY);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/fhir+json").body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

/// The admission topic on Encounter, filterable by `patient` and `status`: an R5/R4B
/// SubscriptionTopic where the instance has that type, else the R4 `Basic` wrapper of the
/// IG's later guidance (cross-version extensions; example in
/// ../shared/fhir/examples/topics/subscriptions-backport/).
async fn install_topic(server: &TestServer, keyed: bool) {
    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Encounter", "supportedInteraction": ["create", "update"] }],
        "canFilterBy": [{ "resource": "Encounter", "filterParameter": "patient" }, { "resource": "Encounter", "filterParameter": "status" }]
    });
    let (s, b) = call(server, keyed, Method::POST, "SubscriptionTopic", Some(&topic)).await;
    if s == StatusCode::CREATED {
        return;
    }
    let x5 = |name: &str| format!("http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.{name}");
    let x43 = |name: &str| format!("http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic.{name}");
    let can_filter = |param: &str| {
        json!({ "url": x43("canFilterBy"), "extension": [
            { "url": "resource", "valueUri": "Encounter" }, { "url": "filterParameter", "valueString": param }] })
    };
    let basic = json!({
        "resourceType": "Basic",
        "modifierExtension": [{ "url": x5("status"), "valueCode": "active" }],
        "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
        "extension": [
            { "url": x5("url"), "valueUri": TOPIC },
            { "url": x43("resourceTrigger"), "extension": [
                { "url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/Encounter" },
                { "url": "supportedInteraction", "valueCode": "create" },
                { "url": "supportedInteraction", "valueCode": "update" }] },
            can_filter("patient"),
            can_filter("status")
        ]
    });
    let (s2, b2) = call(server, keyed, Method::POST, "Basic", Some(&basic)).await;
    assert_eq!(s2, StatusCode::CREATED, "the topic could be installed neither as a SubscriptionTopic ({s}: {b}) nor as a Basic: {b2}");
}

/// The IG's admission example (`Subscription-subscription-admission.json`) with the endpoint,
/// status, `end` and a header adjusted for a test.
fn admission(endpoint: &str) -> Value {
    json!({
        "resourceType": "Subscription",
        "meta": { "profile": [format!("{IG}/backport-subscription")] },
        "status": "requested",
        "end": "2099-12-31T12:00:00Z",
        "reason": "R4/B Example Topic-Based Subscription for Patient Admission",
        "criteria": TOPIC,
        "_criteria": { "extension": [{ "url": format!("{IG}/backport-filter-criteria"), "valueString": "Encounter?patient=Patient/123" }] },
        "channel": {
            "extension": [
                { "url": format!("{IG}/backport-heartbeat-period"), "valueUnsignedInt": 86400 },
                { "url": format!("{IG}/backport-timeout"), "valueUnsignedInt": 60 },
                { "url": format!("{IG}/backport-max-count"), "valuePositiveInt": 20 }
            ],
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{IG}/backport-payload-content"), "valueCode": "id-only" }] },
            "header": [format!("Authorization: {TOKEN}")]
        }
    })
}

/// Every element of `sent` is in `got` with the same value (`got` may add `id`, `meta`
/// fields and, where noted, a live `status`).
fn assert_echoed(sent: &Value, got: &Value, except: &[&str]) {
    for (key, value) in sent.as_object().unwrap() {
        if key == "meta" || except.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(&got[key], value, "'{key}' was not echoed exactly:\n{got}");
    }
    assert_eq!(got["meta"]["profile"], sent["meta"]["profile"], "{got}");
}

/// The subscription's live status as a read shows it, polled until `want` or `T`.
async fn wait_status(server: &TestServer, keyed: bool, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (s, b) = call(server, keyed, Method::GET, &format!("Subscription/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if b["status"] == want {
            return b;
        }
        assert!(Instant::now() < deadline, "Subscription/{id} did not reach {want}: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Create (the 201 body the kit reads), handshake, read, update, search, delete, as the
/// authenticated owner, who sees its own header values.
async fn lifecycle(version: &str) {
    let server = start(version, true).await;
    install_topic(&server, true).await;
    let rx = Receiver::start().await;
    let sent = admission(&rx.url);

    let (s, created) = call(&server, true, Method::POST, "Subscription", Some(&sent)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["resourceType"], "Subscription");
    assert_eq!(created["status"], "requested", "kit 1.1.03: a rest-hook subscription answers requested");
    assert_eq!(created["channel"]["type"], "rest-hook");
    assert_echoed(&sent, &created, &[]);
    let id = created["id"].as_str().unwrap().to_owned();

    // The handshake comes after the 201, with the header exactly as the 201 shows it.
    let handshake = rx.next_within(T).await;
    assert_eq!(handshake.headers["authorization"], TOKEN);
    assert!(handshake.headers["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
    let read = wait_status(&server, true, &id, "active").await;
    assert_echoed(&sent, &read, &["status"]);

    // Update: a second filter, another content level; the stored resource follows.
    let mut changed = read.clone();
    changed["_criteria"]["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "url": format!("{IG}/backport-filter-criteria"), "valueString": "Encounter?status=in-progress" }));
    changed["channel"]["_payload"]["extension"][0]["valueCode"] = json!("full-resource");
    let (s, updated) = call(&server, true, Method::PUT, &format!("Subscription/{id}"), Some(&changed)).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_echoed(&changed, &updated, &["status"]);
    let (_, reread) = call(&server, true, Method::GET, &format!("Subscription/{id}"), None).await;
    assert_eq!(reread["_criteria"], changed["_criteria"]);
    assert_eq!(reread["channel"]["_payload"]["extension"][0]["valueCode"], "full-resource");

    // Search by status; by _id.
    let (s, found) = call(&server, true, Method::GET, "Subscription?status=active", None).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let ids: Vec<&str> = found["entry"].as_array().into_iter().flatten().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()], "{found}");
    let (_, none) = call(&server, true, Method::GET, "Subscription?status=off", None).await;
    assert_eq!(none["entry"].as_array().map_or(0, Vec::len), 0, "{none}");

    // Delete.
    let (s, _) = call(&server, true, Method::DELETE, &format!("Subscription/{id}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&server, true, Method::GET, &format!("Subscription/{id}"), None).await;
    assert!(s == StatusCode::GONE || s == StatusCode::NOT_FOUND, "{s}");
    server.stop().await;
}

#[tokio::test]
async fn r4_backport_subscription_lifecycle() {
    lifecycle("4.0.1").await;
}

#[tokio::test]
async fn r4b_backport_subscription_lifecycle() {
    lifecycle("4.3.0").await;
}

/// `url` in R4 and R4B searches `Subscription.channel.endpoint`; the instance's
/// SearchParameters must be the version's for this to find anything.
async fn search_by_url(version: &str) {
    let server = start(version, true).await;
    install_topic(&server, true).await;
    let rx = Receiver::start().await;
    let (s, created) = call(&server, true, Method::POST, "Subscription", Some(&admission(&rx.url))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let url = url::form_urlencoded::byte_serialize(rx.url.as_bytes()).collect::<String>();
    let (s, found) = call(&server, true, Method::GET, &format!("Subscription?url={url}"), None).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["entry"][0]["resource"]["id"], created["id"], "{found}");
    let (_, none) = call(&server, true, Method::GET, "Subscription?url=https%3A%2F%2Felsewhere.example%2Fhook", None).await;
    assert_eq!(none["entry"].as_array().map_or(0, Vec::len), 0, "{none}");
}

#[tokio::test]
async fn r4_search_by_url_finds_the_channel_endpoint() {
    search_by_url("4.0.1").await;
}

#[tokio::test]
async fn r4b_search_by_url_finds_the_channel_endpoint() {
    search_by_url("4.3.0").await;
}

/// Anonymous callers (no authentication configured) get back, in a write's answer, the header
/// strings that very request sent (the kit compares deliveries with the 201 body) and nothing
/// else: reads, searches and values kept through a placeholder stay redacted. The receiver gets
/// them, and a read, edit, write round trip keeps them.
#[tokio::test]
async fn r4_header_values_are_redacted_for_anonymous_callers_and_kept_across_updates() {
    let server = start("4.0.1", false).await;
    install_topic(&server, false).await;
    let rx = Receiver::start().await;
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&admission(&rx.url))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["channel"]["header"], json!([format!("Authorization: {TOKEN}")]), "the 201 echoes what was sent");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(rx.next_within(T).await.headers["authorization"], TOKEN);
    let mut read = wait_status(&server, false, &id, "active").await;
    assert_eq!(read["channel"]["header"], json!(["Authorization: [redacted]"]));

    // A new header makes it handshake again, with the kept value.
    read["channel"]["header"].as_array_mut().unwrap().push(json!("X-Tenant: north"));
    let (s, updated) = call(&server, false, Method::PUT, &format!("Subscription/{id}"), Some(&read)).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["channel"]["header"], json!(["Authorization: [redacted]", "X-Tenant: north"]), "only what this request sent");
    let again = rx.next_within(T).await;
    assert_eq!(again.headers["authorization"], TOKEN);
    assert_eq!(again.headers["x-tenant"], "north");
    let (_, searched) = call(&server, false, Method::GET, &format!("Subscription?_id={id}"), None).await;
    assert!(!searched.to_string().contains("tok-r4") && !searched.to_string().contains("north"), "{searched}");
}

#[tokio::test]
async fn r4_websocket_subscriptions_are_active_at_once_and_need_no_endpoint() {
    let server = start("4.0.1", false).await;
    install_topic(&server, false).await;
    let mut sub = admission("unused");
    sub["channel"]["type"] = json!("websocket");
    sub["channel"].as_object_mut().unwrap().remove("endpoint");
    sub["channel"].as_object_mut().unwrap().remove("header");
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "active");
}

#[tokio::test]
async fn r4_subscription_without_payload_is_stored_as_sent() {
    let server = start("4.0.1", false).await;
    install_topic(&server, false).await;
    let rx = Receiver::start().await;
    let mut sub = admission(&rx.url);
    let channel = sub["channel"].as_object_mut().unwrap();
    channel.remove("payload");
    channel.remove("_payload");
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert!(created["channel"].get("payload").is_none() && created["channel"].get("_payload").is_none(), "{created}");
    // With a MIME type but no content level, the id-only Herald applies is written back.
    let mut sub = admission(&rx.url);
    sub["channel"].as_object_mut().unwrap().remove("_payload");
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["channel"]["_payload"]["extension"][0]["valueCode"], "id-only", "{created}");
}

/// The answer to a refused create: a 4xx OperationOutcome with an issue at `path`.
fn assert_refused(case: &str, (status, body): &(StatusCode, Value), path: &str) {
    assert!(status.is_client_error(), "{case}: answered {status}: {body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{case}: {body}");
    let paths: Vec<&str> = body["issue"].as_array().unwrap().iter().filter_map(|i| i["expression"][0].as_str()).collect();
    assert!(paths.contains(&path), "{case}: no issue at {path}: {body}");
}

/// Kit group 6 and Herald's other refusals, each an edit of the workflow Subscription.
async fn rejections(version: &str) {
    let server = start(version, false).await;
    install_topic(&server, false).await;
    let rx = Receiver::start().await;
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "6.01 cross-version filter extension",
            Box::new(|s| {
                s["_criteria"] = json!({ "extension": [{
                    "url": "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria",
                    "valueString": "Encounter.patient=Patient/123" }] })
            }),
            "Subscription.criteria.extension[0]",
        ),
        ("6.02 unknown topic", Box::new(|s| s["criteria"] = json!("http://example.org/topics/unknown")), "Subscription.criteria"),
        (
            "6.03 filter the topic does not allow",
            Box::new(|s| s["_criteria"]["extension"][0]["valueString"] = json!("Encounter?class=IMP")),
            "Subscription.criteria.extension[0].valueString",
        ),
        (
            "6.03 malformed filter",
            Box::new(|s| s["_criteria"]["extension"][0]["valueString"] = json!("Encounter?patient")),
            "Subscription.criteria.extension[0].valueString",
        ),
        (
            "6.03 filter on a type the topic does not allow it on",
            Box::new(|s| s["_criteria"]["extension"][0]["valueString"] = json!("Observation.patient=Patient/123")),
            "Subscription.criteria.extension[0].valueString",
        ),
        ("6.04 channel type", Box::new(|s| s["channel"]["type"] = json!("email")), "Subscription.channel.type"),
        (
            "6.05 channel endpoint",
            Box::new(|s| s["channel"]["endpoint"] = json!("ftp://example.org/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            "6.06 payload type",
            Box::new(|s| s["channel"]["payload"] = json!("application/unsupported+payload")),
            "Subscription.channel.payload",
        ),
        (
            "6.07 channel and payload",
            Box::new(|s| {
                s["channel"]["type"] = json!("message");
                s["channel"]["payload"] = json!("application/fhir+xml");
            }),
            "Subscription.channel.type",
        ),
        (
            "custom channel type",
            Box::new(|s| {
                s["channel"]["_type"] = json!({ "extension": [{ "url": format!("{IG}/backport-channel-type"),
                    "valueCoding": { "system": "http://example.org/subscription-channel-type", "code": "zulip" } }] })
            }),
            "Subscription.channel.type.extension[0]",
        ),
        (
            "cross-version Subscription extension",
            Box::new(|s| {
                s["extension"] =
                    json!([{ "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.topic", "valueCanonical": TOPIC }])
            }),
            "Subscription.extension[0]",
        ),
        (
            "heartbeat with the wrong value type",
            Box::new(|s| s["channel"]["extension"][0] = json!({ "url": format!("{IG}/backport-heartbeat-period"), "valueInteger": 5 })),
            "Subscription.channel.extension[0]",
        ),
        (
            "unknown content level",
            Box::new(|s| s["channel"]["_payload"]["extension"][0]["valueCode"] = json!("all")),
            "Subscription.channel.payload.extension[0].valueCode",
        ),
        (
            "missing reason",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("reason");
            }),
            "Subscription.reason",
        ),
        ("R5 status code", Box::new(|s| s["status"] = json!("entered-in-error")), "Subscription.status"),
        ("R5 element", Box::new(|s| s["topic"] = json!(TOPIC)), "Subscription.topic"),
    ];
    for (case, edit, path) in cases {
        let mut sub = admission(&rx.url);
        edit(&mut sub);
        let answer = call(&server, false, Method::POST, "Subscription", Some(&sub)).await;
        assert_refused(case, &answer, path);
    }
    // None of them was stored, and nothing was sent.
    let (_, all) = call(&server, false, Method::GET, "Subscription", None).await;
    assert_eq!(all["entry"].as_array().map_or(0, Vec::len), 0, "{all}");
    assert!(rx.drain().await.is_empty());
    // An update is checked the same way.
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&admission(&rx.url))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let mut bad = created.clone();
    bad["channel"]["payload"] = json!("text/plain");
    let answer = call(&server, false, Method::PUT, &format!("Subscription/{}", created["id"].as_str().unwrap()), Some(&bad)).await;
    assert_refused("update with an unsupported payload type", &answer, "Subscription.channel.payload");
}

#[tokio::test]
async fn r4_rejections_of_the_kit_and_herald_are_4xx_operation_outcomes() {
    rejections("4.0.1").await;
}

#[tokio::test]
async fn r4b_rejections_of_the_kit_and_herald_are_4xx_operation_outcomes() {
    rejections("4.3.0").await;
}

/// R4's `Subscription.error` is the server's note while the subscription is in error, and is
/// gone once the client has re-requested it and it works again.
#[tokio::test]
async fn r4_error_note_follows_the_live_state() {
    let server = start("4.0.1", false).await;
    install_topic(&server, false).await;
    let rx = Receiver::start().await;
    rx.set_status(500);
    let (s, created) = call(&server, false, Method::POST, "Subscription", Some(&admission(&rx.url))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created.get("error").is_none(), "{created}");
    let failed = wait_status(&server, false, &id, "error").await;
    let note = failed["error"].as_str().expect("an error note while in error");
    assert!(note.contains("500"), "{note}");
    rx.set_status(200);
    let mut again = failed.clone();
    again["status"] = json!("requested");
    let (s, updated) = call(&server, false, Method::PUT, &format!("Subscription/{id}"), Some(&again)).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    let active = wait_status(&server, false, &id, "active").await;
    assert!(active.get("error").is_none(), "{active}");
}
