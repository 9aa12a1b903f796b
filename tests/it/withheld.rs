//! Authorization re-checked at send time (issue #11, digest §6.1): a subscriber whose grant
//! no longer covers an event's focus gets the event *withheld* (same number, no focus, no
//! context, the `withheld` extension), counted where operators see it; at `full-resource`,
//! context its grant cannot read is left out. Anonymous servers are unchanged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};
use herald::config::{ApiKeySetting, Config};

const SECRET: &str = "withheld-test-hs256-secret-0123456789";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://herald.example/fhir";
const TOPIC: &str = "http://example.org/topics/task-for-patient";
const WITHHELD: &str = "http://herald.dev/fhir/StructureDefinition/withheld";
const WAIT: Duration = Duration::from_secs(10);

fn token(client: &str, scope: &str, patient: Option<&str>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({ "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "client_id": client, "scope": scope });
    if let Some(p) = patient {
        claims["patient"] = json!(p);
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn key(client: &str, key: &str, scopes: &str) -> ApiKeySetting {
    ApiKeySetting { client: client.into(), sha256: herald::auth::api_key_digest(key), scopes: scopes.into() }
}

/// JWTs and an all-powerful `etl` key that writes the data; `keys` are more API keys.
fn secure(c: &mut Config, keys: Vec<ApiKeySetting>) {
    c.auth.issuer = ISSUER.into();
    c.auth.audience = AUDIENCE.into();
    c.auth.hs256_secrets = vec![SECRET.into()];
    c.auth.api_keys = vec![key("etl", "etl-key", "system/*.cruds")];
    c.auth.api_keys.extend(keys);
}

async fn call(server: &TestServer, method: Method, path: &str, bearer: &str, body: Option<&Value>) -> (StatusCode, Value) {
    let mut req = server.client.request(method, server.url(path)).header("accept", "application/fhir+json").bearer_auth(bearer);
    if let Some(b) = body {
        req = req.header("content-type", "application/fhir+json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn topic(server: &TestServer, bearer: &str, shape: Value) {
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }],
        "notificationShape": [shape] });
    let (s, b) = call(server, Method::POST, "SubscriptionTopic", bearer, Some(&topic)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// A rest-hook subscription at `content`, created by `bearer`, active once its handshake
/// arrived.
async fn subscribe(server: &TestServer, bearer: &str, rx: &Receiver, content: &str) -> String {
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": content,
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": rx.url, "contentType": "application/fhir+json" });
    let (s, b) = call(server, Method::POST, "Subscription", bearer, Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    rx.next_of("handshake", WAIT).await;
    b["id"].as_str().unwrap().to_owned()
}

fn task_for(patient: &str) -> Value {
    json!({ "resourceType": "Task", "status": "requested", "intent": "order", "for": { "reference": format!("Patient/{patient}") } })
}

async fn write(server: &TestServer, method: Method, path: &str, body: &Value) -> Value {
    let (s, b) = call(server, method, path, "etl-key", Some(body)).await;
    assert!(s.is_success(), "{s}: {b}");
    b
}

/// The next event notification's single event: (number, notificationEvent, bundle).
async fn next_event(rx: &Receiver) -> (u64, Value, Value) {
    let r = rx.next_of("event-notification", WAIT).await;
    let numbers = r.event_numbers();
    assert_eq!(numbers.len(), 1, "{}", r.body);
    (numbers[0], r.status()["notificationEvent"][0].clone(), r.body)
}

fn is_withheld(event: &Value) -> bool {
    event["extension"].as_array().is_some_and(|a| a.iter().any(|x| x["url"] == WITHHELD && x["valueCode"] == "not-authorized"))
}

/// The admin view of a subscription, polled until `withheld` is `n`.
async fn wait_withheld(server: &TestServer, id: &str, n: u64) -> Value {
    let url = server.base.replace("/fhir", &format!("/admin/api/subscriptions/{id}"));
    let deadline = Instant::now() + WAIT;
    loop {
        let body: Value = server.client.get(&url).send().await.unwrap().json().await.unwrap();
        if body["withheld"] == n {
            return body;
        }
        assert!(Instant::now() < deadline, "withheld never reached {n}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_moved_to_another_patient_is_withheld_from_a_patient_scoped_subscriber() {
    let server = TestServer::start_with(|c| secure(c, Vec::new())).await;
    let rx = Receiver::start().await;
    topic(&server, "etl-key", json!({ "resource": "Task" })).await;
    let app = token("app", "user/Subscription.cruds patient/Task.rs", Some("p1"));
    let id = subscribe(&server, &app, &rx, "full-resource").await;

    // Event 1: the Task is the patient's; it arrives with its focus.
    let task = write(&server, Method::POST, "Task", &task_for("p1")).await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let (n, event, bundle) = next_event(&rx).await;
    assert_eq!(n, 1);
    assert!(event.get("focus").is_some() && !is_withheld(&event), "{bundle}");
    assert_eq!(bundle["entry"][1]["resource"]["for"]["reference"], "Patient/p1");

    // Event 2: the Task now names another patient: withheld, not skipped.
    let mut moved = task.clone();
    moved["for"] = json!({ "reference": "Patient/p2" });
    write(&server, Method::PUT, &format!("Task/{task_id}"), &moved).await;
    let (n, event, bundle) = next_event(&rx).await;
    assert_eq!(n, 2, "the number is kept: no gap for the client to chase");
    assert!(is_withheld(&event), "{bundle}");
    assert!(event.get("focus").is_none() && event.get("additionalContext").is_none(), "{bundle}");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 1, "no entry reveals the Task: {bundle}");
    assert!(!bundle.to_string().contains("p2"), "{bundle}");

    // Event 3: the patient's own Task again, with its focus.
    write(&server, Method::POST, "Task", &task_for("p1")).await;
    let (n, event, _) = next_event(&rx).await;
    assert_eq!(n, 3);
    assert!(event.get("focus").is_some() && !is_withheld(&event));

    // `$events` renders the same decision; the count is durable state operators see.
    let (s, events) = call(&server, Method::GET, &format!("Subscription/{id}/$events?content=full-resource"), &app, None).await;
    assert_eq!(s, StatusCode::OK, "{events}");
    let list = events["entry"][0]["resource"]["notificationEvent"].as_array().unwrap().clone();
    assert_eq!(list.iter().map(|e| e["eventNumber"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(list.iter().map(is_withheld).collect::<Vec<_>>(), [false, true, false], "{events}");
    assert_eq!(events["entry"].as_array().unwrap().len(), 3, "status and the two covered Tasks: {events}");
    let admin = wait_withheld(&server, &id, 1).await;
    assert_eq!(admin["events"], 3, "{admin}");
    let metrics = server.client.get(server.base.replace("/fhir", "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("herald_events_withheld_total{resource_type=\"Task\"}")), "{metrics}");
    // The audit trail names the event and the type, not the resource.
    let trail: Value = server
        .client
        .get(server.base.replace("/fhir", &format!("/admin/api/audit?subscription={id}&action=withheld")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{trail}");
    assert_eq!((entries[0]["detail"]["event"].as_u64(), entries[0]["detail"]["resourceType"].as_str()), (Some(2), Some("Task")));
    assert!(!trail.to_string().contains("Task/"), "the trail names no resource: {trail}");
}

#[tokio::test]
async fn an_api_key_narrowed_across_a_restart_gets_later_events_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let lab = |scopes: &str| key("lab", "lab-key", scopes);
    let wide = lab("system/Subscription.cruds system/Task.rs");
    let first = TestServer::start_with(|c| {
        secure(c, vec![wide]);
        c.store.data_dir = path.clone();
    })
    .await;
    let rx = Receiver::start().await;
    topic(&first, "etl-key", json!({ "resource": "Task" })).await;
    let id = subscribe(&first, "lab-key", &rx, "id-only").await;
    write(&first, Method::POST, "Task", &task_for("p1")).await;
    let (n, event, _) = next_event(&rx).await;
    assert_eq!(n, 1);
    assert!(event.get("focus").is_some() && !is_withheld(&event));
    first.stop().await;

    // The operator takes Task reads away from the key; the subscription stays.
    let narrow = lab("system/Subscription.cruds");
    let second = TestServer::start_with(|c| {
        secure(c, vec![narrow]);
        c.store.data_dir = path.clone();
    })
    .await;
    write(&second, Method::POST, "Task", &task_for("p1")).await;
    // Delivery is at least once: if the first server stopped before recording event 1 as
    // delivered, the second sends it again (withheld now) before event 2.
    let (mut n, mut event, mut bundle) = next_event(&rx).await;
    let redelivered = n == 1;
    if redelivered {
        assert!(is_withheld(&event), "event 1 sent again under the narrowed key is withheld too: {bundle}");
        (n, event, bundle) = next_event(&rx).await;
    }
    assert_eq!(n, 2);
    assert!(is_withheld(&event) && event.get("focus").is_none(), "{bundle}");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 1, "{bundle}");
    let admin = wait_withheld(&second, &id, if redelivered { 2 } else { 1 }).await;
    assert_eq!(admin["status"], "active", "withholding is not a delivery failure: {admin}");
}

#[tokio::test]
async fn full_resource_leaves_out_context_the_grant_cannot_read() {
    let server = TestServer::start_with(|c| secure(c, Vec::new())).await;
    let rx = Receiver::start().await;
    topic(&server, "etl-key", json!({ "resource": "Task", "include": ["Task:focus", "Task:requester"] })).await;
    let app = token("app", "system/Subscription.cruds system/Task.rs system/Practitioner.r", None);
    let id = subscribe(&server, &app, &rx, "full-resource").await;
    write(&server, Method::PUT, "Practitioner/dr", &json!({ "resourceType": "Practitioner", "id": "dr" })).await;
    let order = json!({ "resourceType": "ServiceRequest", "id": "order", "status": "active", "intent": "order",
        "subject": { "reference": "Patient/p1" } });
    write(&server, Method::PUT, "ServiceRequest/order", &order).await;
    let mut task = task_for("p1");
    task["focus"] = json!({ "reference": "ServiceRequest/order" });
    task["requester"] = json!({ "reference": "Practitioner/dr" });
    write(&server, Method::POST, "Task", &task).await;

    let (n, event, bundle) = next_event(&rx).await;
    assert_eq!(n, 1);
    assert!(!is_withheld(&event), "{bundle}");
    let context: Vec<&str> = event["additionalContext"].as_array().unwrap().iter().map(|r| r["reference"].as_str().unwrap()).collect();
    assert_eq!(context.len(), 1, "{bundle}");
    assert!(context[0].ends_with("/Practitioner/dr"), "{bundle}");
    let types: Vec<&str> = bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["resourceType"].as_str()).collect();
    assert_eq!(types, ["SubscriptionStatus", "Task", "Practitioner"], "{bundle}");
    let urls: Vec<&str> = bundle["entry"].as_array().unwrap().iter().filter_map(|e| e["fullUrl"].as_str()).collect();
    assert!(!urls.iter().any(|u| u.contains("/ServiceRequest/")), "no entry, not even request/response only: {bundle}");
    wait_withheld(&server, &id, 0).await;
}

#[tokio::test]
async fn anonymous_subscribers_get_every_focus_and_context_unmarked() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }],
        "notificationShape": [{ "resource": "Task", "include": ["Task:focus"] }] });
    assert_eq!(server.post("SubscriptionTopic", &topic).await.0, StatusCode::CREATED);
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "full-resource" })).await;
    rx.next_of("handshake", WAIT).await;
    let order = json!({ "resourceType": "ServiceRequest", "id": "order", "status": "active", "intent": "order",
        "subject": { "reference": "Patient/p1" } });
    assert!(server.put("ServiceRequest/order", &order).await.0.is_success());
    let mut task = task_for("p1");
    task["focus"] = json!({ "reference": "ServiceRequest/order" });
    let (s, created) = server.post("Task", &task).await;
    assert_eq!(s, StatusCode::CREATED);
    let mut moved = created.clone();
    moved["for"] = json!({ "reference": "Patient/p2" });
    assert!(server.put(&format!("Task/{}", created["id"].as_str().unwrap()), &moved).await.0.is_success());
    for want in 1..=2 {
        let (n, event, bundle) = next_event(&rx).await;
        assert_eq!(n, want);
        assert!(event.get("focus").is_some() && event.get("additionalContext").is_some() && !is_withheld(&event), "{bundle}");
        assert_eq!(bundle["entry"].as_array().unwrap().len(), 3, "status, Task, ServiceRequest: {bundle}");
    }
    let admin = wait_withheld(&server, &id, 0).await;
    assert_eq!(admin["events"], 2, "{admin}");
}

#[tokio::test]
async fn a_websocket_subscriber_gets_uncovered_events_withheld_in_number_order() {
    use crate::support::ws::{event_numbers, Binding, WsClient};
    let server = TestServer::start_with(|c| secure(c, Vec::new())).await;
    topic(&server, "etl-key", json!({ "resource": "Task" })).await;
    let app = token("app", "user/Subscription.cruds patient/Task.rs", Some("p1"));
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" } });
    let (s, created) = call(&server, Method::POST, "Subscription", &app, Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, params) = call(&server, Method::GET, &format!("Subscription/{id}/$get-ws-binding-token"), &app, None).await;
    assert_eq!(s, StatusCode::OK, "{params}");
    let binding = Binding::from_parameters(&params);
    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind(&binding.token).await;
    ws.next_of("handshake", WAIT).await;

    write(&server, Method::POST, "Task", &task_for("p2")).await;
    write(&server, Method::POST, "Task", &task_for("p1")).await;
    let frames = ws.events(2, WAIT).await;
    let events: Vec<Value> =
        frames.iter().flat_map(|f| f["entry"][0]["resource"]["notificationEvent"].as_array().cloned().unwrap_or_default()).collect();
    assert_eq!(frames.iter().flat_map(event_numbers).collect::<Vec<_>>(), [1, 2]);
    assert!(is_withheld(&events[0]) && events[0].get("focus").is_none(), "{frames:?}");
    assert!(!is_withheld(&events[1]) && events[1].get("focus").is_some(), "{frames:?}");
    wait_withheld(&server, &id, 1).await;
}
