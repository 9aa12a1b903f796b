//! Standard Webhooks signatures on rest-hook deliveries, verified by an independent
//! implementation: the `standardwebhooks` package from PyPI, run as a child process
//! (`tests/clients/verify_webhook.py`) on each captured request. Skipped with a note when
//! python3 or the package is missing, unless `HERALD_REQUIRE_WEBHOOK_VERIFIER` is set (CI).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Received, Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/task-signed";
const T: Duration = Duration::from_secs(10);
const EXT: &str = "http://herald.dev/fhir/StructureDefinition/webhook-signing-secret";
/// Two secrets (a rotation in progress) and one the subscription does not have.
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
const NEW: &str = "whsec_dGhpcmQtc2lnbmluZy1rZXktYWZ0ZXItcm90YXRpb24=";
const OTHER: &str = "whsec_c2Vjb25kLXNpZ25pbmcta2V5LWZvci1yb3RhdGlvbg==";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/verify_webhook.py")
}

/// Whether the verifier can run; panics when CI requires it and it cannot.
fn verifier_available() -> bool {
    let ok = Command::new("python3").args(["-c", "import standardwebhooks"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("HERALD_REQUIRE_WEBHOOK_VERIFIER").is_none(),
            "HERALD_REQUIRE_WEBHOOK_VERIFIER is set but python3 cannot import standardwebhooks (pip install standardwebhooks)"
        );
        eprintln!("skipped: python3 with the standardwebhooks package is needed (pip install standardwebhooks)");
    }
    ok
}

/// Runs the Python verifier on a captured request; `Err` carries its refusal.
fn verify(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let headers: serde_json::Map<String, Value> =
        headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?)))).collect();
    let input = json!({ "headers": headers, "body_base64": base64::engine::general_purpose::STANDARD.encode(body) });
    let mut child = Command::new("python3")
        .arg(script())
        .env("WEBHOOK_SECRET", secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child.stdin.take().expect("piped stdin").write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim());
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(said),
        _ => panic!("the verifier failed to run: {said}"),
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

fn assert_verifies(r: &Received, secrets: &[&str]) {
    for secret in secrets {
        if let Err(why) = verify(secret, &r.headers, &r.raw) {
            panic!("{} ({}) does not verify: {why}", r.kind(), header(r, "webhook-id"));
        }
    }
    assert!(verify(OTHER, &r.headers, &r.raw).is_err(), "a secret the subscription does not have verifies");
}

fn signed_subscription(secrets: &[&str]) -> Value {
    let extension: Vec<Value> = secrets.iter().map(|s| json!({ "url": EXT, "valueString": s })).collect();
    json!({ "extension": extension, "parameter": [{ "name": "Authorization", "value": "Bearer rx-token" }] })
}

#[tokio::test]
async fn handshake_event_and_retry_verify_with_the_standard_webhooks_library() {
    if !verifier_available() {
        return;
    }
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, signed_subscription(&[OLD, NEW])).await;

    let handshake = rx.next_of("handshake", T).await;
    assert_verifies(&handshake, &[OLD, NEW]);
    let signatures = header(&handshake, "webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "one signature per secret: {signatures}");
    assert!(signatures.split(' ').all(|s| s.starts_with("v1,")), "{signatures}");
    let timestamp: u64 = header(&handshake, "webhook-timestamp").parse().expect("integer Unix seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(timestamp) < 60, "timestamp {timestamp} is not now ({now})");
    server.wait_status(&id, "active", T).await;

    // The first attempt at event 1 fails; the retry is the same message, signed afresh.
    rx.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    let failed = rx.next_of("event-notification", T).await;
    rx.set_status(200);
    let retried = rx.next_of("event-notification", T).await;
    assert_eq!(failed.event_numbers(), vec![1]);
    assert_eq!(retried.event_numbers(), vec![1]);
    assert_verifies(&failed, &[OLD, NEW]);
    assert_verifies(&retried, &[OLD, NEW]);
    assert_eq!(header(&failed, "webhook-id"), header(&retried, "webhook-id"), "a retry keeps the message id");
    assert_ne!(header(&handshake, "webhook-id"), header(&retried, "webhook-id"));

    // The next event is another message.
    server.create_task("requested", "Organization/lab").await;
    let second = rx.next_of("event-notification", T).await;
    assert_eq!(second.event_numbers(), vec![2]);
    assert_verifies(&second, &[NEW]);
    assert_ne!(header(&second, "webhook-id"), header(&retried, "webhook-id"));

    // A body changed in transit no longer verifies, nor does the right body under another id.
    let text = String::from_utf8(retried.raw.to_vec()).unwrap();
    let tampered = text.replacen(r#""eventNumber":"1""#, r#""eventNumber":"7""#, 1);
    assert_ne!(tampered, text, "the body has the compact eventNumber the test edits");
    let why = verify(OLD, &retried.headers, tampered.as_bytes()).expect_err("a tampered body verifies");
    assert!(why.contains("No matching signature"), "{why}");
    let mut other_id = retried.headers.clone();
    other_id.insert("webhook-id", header(&second, "webhook-id").parse().unwrap());
    assert!(verify(OLD, &other_id, &retried.raw).is_err(), "a signature verifies under another message id");
}

#[tokio::test]
async fn operator_secrets_sign_subscriptions_without_their_own() {
    if !verifier_available() {
        return;
    }
    let server = TestServer::start_with(|cfg| cfg.delivery.signing_secrets = herald::config::SigningSecrets(vec![OLD.into()])).await;
    let rx = Receiver::start().await;
    let plain = Receiver::start().await;
    server.task_topic(TOPIC).await;
    server.subscribe(TOPIC, &rx.url, json!({})).await;
    assert_verifies(&rx.next_of("handshake", T).await, &[OLD]);
    // A subscription's own secret replaces the operator's.
    server.subscribe(TOPIC, &plain.url, signed_subscription(&[NEW])).await;
    let own = plain.next_of("handshake", T).await;
    assert_verifies(&own, &[NEW]);
    assert!(verify(OLD, &own.headers, &own.raw).is_err());
}

#[tokio::test]
async fn unsigned_subscriptions_carry_no_signature_headers() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    server.subscribe(TOPIC, &rx.url, json!({})).await;
    let handshake = rx.next_of("handshake", T).await;
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(handshake.headers.get(name).is_none(), "{name} sent without a secret");
    }
}

#[tokio::test]
async fn bad_signing_secrets_are_refused_at_their_path_without_echoing_them() {
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    let short = "whsec_c2hvcnQtc2VjcmV0LXZhbHVl"; // 18 bytes
    let sub = |extension: Value| {
        json!({
            "resourceType": "Subscription", "status": "requested", "topic": TOPIC,
            "channelType": { "code": "rest-hook" }, "endpoint": "http://127.0.0.1:9/hook",
            "extension": extension
        })
    };
    let (s, b) = server.post("Subscription", &sub(json!([{ "url": EXT, "valueString": OLD }, { "url": EXT, "valueString": short }]))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["issue"][0]["expression"][0], "Subscription.extension[1].valueString", "{b}");
    assert!(!b.to_string().contains("c2hvcnQ"), "the secret is echoed: {b}");
    let (s, b) = server.post("Subscription", &sub(json!([{ "url": EXT, "valueString": "[redacted]" }]))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "nothing stored to keep on a create: {b}");
    assert_eq!(b["issue"][0]["expression"][0], "Subscription.extension[0].valueString", "{b}");
    let (s, b) = server
        .post(
            "Subscription",
            &json!({
                "resourceType": "Subscription", "status": "requested", "topic": TOPIC,
                "channelType": { "code": "rest-hook" }, "endpoint": "http://127.0.0.1:9/hook",
                "parameter": [{ "name": "webhook-signature", "value": "v1,forged" }]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_eq!(b["issue"][0]["expression"][0], "Subscription.parameter[0].name", "{b}");
}
