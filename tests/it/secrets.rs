//! No secret reaches logs or responses: Subscription header values and webhook signing secrets
//! appear only in the requests the receiver gets. Reads of every kind show `[redacted]`, a
//! write that sends `[redacted]` back keeps the stored value, and no search can test a secret.
//!
//! The log test installs a process-wide `tracing` subscriber (nextest runs each test in a
//! process of its own); under `cargo test` it would also capture other tests' logs, which
//! only makes its search wider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{Received, Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-secrets";
const T: Duration = Duration::from_secs(10);
const EXT: &str = "http://herald.dev/fhir/StructureDefinition/webhook-signing-secret";
const REDACTED: &str = "[redacted]";
/// The secrets under test: each is unique enough that finding it anywhere is a leak.
const TOKEN: &str = "Bearer tok-3f9c2a7d1e5b8064";
const SIGNING_SECRET: &str = "whsec_c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWstOTc=";
const SIGNING_KEY_BASE64: &str = "c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWstOTc=";

/// Everything every `tracing` subscriber-visible event and span wrote, as text.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs a global subscriber recording every level of every target, span opens and closes
/// with their fields included.
fn capture_logs() -> LogBuffer {
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this test process");
    buffer
}

/// Every response body the test saw, and every notification body the receiver got.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, (status, body): (StatusCode, Value)) -> (StatusCode, Value) {
        self.0.push(body.to_string());
        (status, body)
    }

    fn notification(&mut self, r: Received) -> Received {
        self.0.push(String::from_utf8_lossy(&r.raw).into_owned());
        r
    }
}

fn assert_redacted(sub: &Value) {
    assert_eq!(sub["resourceType"], "Subscription", "{sub}");
    assert_eq!(sub["parameter"][0]["name"], "Authorization", "{sub}");
    assert_eq!(sub["parameter"][0]["value"], REDACTED, "{sub}");
    assert_eq!(sub["extension"][0]["valueString"], REDACTED, "{sub}");
}

fn subscription(endpoint: &str) -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "topic": TOPIC,
        "channelType": { "code": "rest-hook" },
        "endpoint": endpoint,
        "content": "id-only",
        "parameter": [{ "name": "Authorization", "value": TOKEN }],
        "extension": [{ "url": EXT, "valueString": SIGNING_SECRET }]
    })
}

/// The receiver got the secrets where they belong: the header, and a signature by the key.
fn assert_carries_secrets(r: &Received) {
    assert_eq!(r.headers["authorization"], TOKEN, "{} lost its header", r.kind());
    let id = r.headers["webhook-id"].to_str().unwrap();
    let timestamp: u64 = r.headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = herald::fhir::subscription::SigningKey::parse(SIGNING_SECRET).unwrap();
    let expected = herald::channels::signing::signature(&[key], id, timestamp, &r.raw);
    assert_eq!(r.headers["webhook-signature"], expected.as_str(), "{} is not signed by the stored key", r.kind());
}

#[tokio::test]
async fn no_secret_reaches_logs_or_responses_through_a_full_delivery_cycle() {
    let logs = capture_logs();
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    let mut seen = Seen::default();
    seen.keep(
        server
            .post(
                "SubscriptionTopic",
                &json!({
                    "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
                    "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update"] }]
                }),
            )
            .await,
    );

    // Create: the response is redacted; the handshake carries the secrets.
    let (s, created) = seen.keep(server.post("Subscription", &subscription(&rx.url)).await);
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_redacted(&created);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_carries_secrets(&seen.notification(rx.next_of("handshake", T).await));
    server.wait_status(&id, "active", T).await;

    // An event, refused once with a 500, then retried.
    rx.set_status(500);
    let (_, task) = seen.keep(server.post("Task", &json!({ "resourceType": "Task", "status": "requested", "intent": "order" })).await);
    assert_carries_secrets(&seen.notification(rx.next_of("event-notification", T).await));
    rx.set_status(200);
    assert_carries_secrets(&seen.notification(rx.next_of("event-notification", T).await));

    // GET, edit, PUT: the placeholders keep the stored secrets. The new header makes the
    // subscription handshake again, with the kept secrets.
    let (_, mut read) = seen.keep(server.get(&format!("Subscription/{id}")).await);
    assert_redacted(&read);
    read["parameter"].as_array_mut().unwrap().push(json!({ "name": "X-Tenant", "value": "north" }));
    let (s, updated) = seen.keep(server.put(&format!("Subscription/{id}"), &read).await);
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_redacted(&updated);
    let handshake = seen.notification(rx.next_of("handshake", T).await);
    assert_carries_secrets(&handshake);
    assert_eq!(handshake.headers["x-tenant"], "north");
    server.wait_status(&id, "active", T).await;

    // The same round trip inside a transaction, with a write that makes an event.
    let (_, read) = seen.keep(server.get(&format!("Subscription/{id}")).await);
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": read, "request": { "method": "PUT", "url": format!("Subscription/{id}") } },
        { "resource": { "resourceType": "Task", "status": "requested", "intent": "order", "focus": { "reference": format!("Subscription/{id}") } },
          "request": { "method": "POST", "url": "Task" } }
    ] });
    let (s, response) = seen.keep(server.post("", &tx).await);
    assert_eq!(s, StatusCode::OK, "{response}");
    assert_redacted(&response["entry"][0]["resource"]);
    let event = seen.notification(rx.next_of("event-notification", T).await);
    assert_eq!(event.event_numbers(), vec![2]);
    assert_carries_secrets(&event);
    let focused = response["entry"][1]["resource"]["id"].as_str().unwrap().to_owned();

    // Every other way to read a Subscription.
    let (_, b) = seen.keep(server.get(&format!("Subscription/{id}/_history/1")).await);
    assert_redacted(&b);
    let (_, b) = seen.keep(server.get(&format!("Subscription/{id}/_history")).await);
    for entry in b["entry"].as_array().unwrap() {
        assert_redacted(&entry["resource"]);
    }
    let (_, b) = seen.keep(server.get(&format!("Subscription?_id={id}")).await);
    assert_redacted(&b["entry"][0]["resource"]);
    let (_, b) = seen.keep(server.get(&format!("Task?_id={focused}&_include=Task:focus")).await);
    let included = b["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "include").expect("the Subscription is included");
    assert_redacted(&included["resource"]);
    let batch = json!({ "resourceType": "Bundle", "type": "batch", "entry": [{ "request": { "method": "GET", "url": format!("Subscription/{id}") } }] });
    let (_, b) = seen.keep(server.post("", &batch).await);
    assert_redacted(&b["entry"][0]["resource"]);
    seen.keep(server.get(&format!("Subscription/{id}/$status")).await);
    seen.keep(server.get(&format!("Subscription/{id}/$events")).await);
    let task_id = task["id"].as_str().unwrap();
    seen.keep(server.get(&format!("Task/{task_id}")).await);

    let logs = logs.text();
    assert!(logs.contains("channels.deliver") && logs.contains("http.request"), "the capture missed Herald's spans:\n{logs}");
    let token_part = TOKEN.trim_start_matches("Bearer ");
    for secret in [token_part, SIGNING_SECRET, SIGNING_KEY_BASE64] {
        assert!(!logs.contains(secret), "a secret reached the logs");
        for body in &seen.0 {
            assert!(!body.contains(secret), "a secret reached a response or notification body: {body}");
        }
    }
}

#[tokio::test]
async fn a_search_cannot_test_a_secret_value() {
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    // A custom parameter over the header values: the search sees only the placeholder.
    let (s, b) = server
        .post(
            "SearchParameter",
            &json!({ "resourceType": "SearchParameter", "url": "http://example.org/sp/header-value", "name": "HeaderValue",
                     "status": "active", "description": "Subscription header values", "code": "header-value",
                     "base": ["Subscription"], "type": "string", "expression": "Subscription.parameter.value" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = server.post("Subscription", &subscription("http://127.0.0.1:9/hook")).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let count = |b: &Value| b["entry"].as_array().map_or(0, |e| e.iter().filter(|e| e["search"]["mode"] == "match").count());
    let (s, b) = server.get("Subscription?header-value=Bearer").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(count(&b), 0, "a search matched on a secret: {b}");
    let (_, b) = server.get(&format!("Subscription?header-value:exact={}", urlencode(TOKEN))).await;
    assert_eq!(count(&b), 0, "a search matched on a secret: {b}");
    let (_, b) = server.get(&format!("Subscription?header-value:exact={}", urlencode(REDACTED))).await;
    assert_eq!(count(&b), 1, "{b}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
