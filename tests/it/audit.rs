//! The audit trail through the real server (issue #11): who changed a subscription, each
//! delivery attempt, refused credentials, dead letters and status changes, read back through
//! `GET /admin/api/audit` and the `herald audit` command, with no secret in any of it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::operators::herald;
use crate::security::{call, secured, token};
use crate::support::{Receiver, TestServer};

const TOPIC: &str = "http://example.org/topics/audit-task";
const WAIT: Duration = Duration::from_secs(15);

async fn audit(server: &TestServer, query: &str) -> Value {
    let url = server.base.replace("/fhir", &format!("/admin/api/audit?{query}"));
    let resp = server.client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn entries(body: &Value) -> Vec<Value> {
    body["entries"].as_array().cloned().unwrap_or_default()
}

/// Polls the trail until `done` accepts its entries for `query`, or fails after `WAIT`.
async fn wait_audit(server: &TestServer, query: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = entries(&audit(server, query).await);
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "the audit trail never showed {what}; last: {found:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(entries: &[Value], action: &str, pred: impl Fn(&Value) -> bool) -> bool {
    entries.iter().any(|e| e["action"] == action && pred(e))
}

#[tokio::test]
async fn subscription_changes_deliveries_and_refused_credentials_are_recorded_without_secrets() {
    let server = secured().await;
    let receiver = Receiver::start().await;
    let owner = token("placer-7", "system/*.cruds", None, 600);
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(call(&server, Method::POST, "SubscriptionTopic", Some(&owner), Some(&topic)).await.0, StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": receiver.url, "contentType": "application/fhir+json",
        "parameter": [{ "name": "Authorization", "value": "Bearer receiver-secret-31" }] });
    let (s, created) = call(&server, Method::POST, "Subscription", Some(&owner), Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    receiver.next_of("handshake", WAIT).await;
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    assert_eq!(call(&server, Method::POST, "Task", Some(&owner), Some(&task)).await.0, StatusCode::CREATED);
    receiver.events(1, WAIT).await;
    // The attempt is recorded once Herald has the receiver's answer (and stored within the
    // writer's gathering interval): wait for it, so that the delete below comes after it.
    wait_audit(&server, &format!("subscription={id}&action=delivery"), "the event delivery", |e| {
        has(e, "delivery", |d| d["detail"]["kind"] == "event-notification")
    })
    .await;
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJjbGllbnRfaWQiOiJ4In0.forged-signature-55";
    assert_eq!(call(&server, Method::GET, "Task", Some(forged), None).await.0, StatusCode::UNAUTHORIZED);
    let (s, _) = call(&server, Method::DELETE, &format!("Subscription/{id}"), Some(&owner), None).await;
    assert!(s.is_success(), "{s}");

    let query = format!("subscription={id}");
    let trail = wait_audit(&server, &query, "the create, both deliveries and the delete", |e| {
        has(e, "delivery", |d| d["detail"]["kind"] == "event-notification") && has(e, "delete", |_| true)
    })
    .await;
    let create = trail.iter().find(|e| e["action"] == "create").expect("a create entry");
    assert_eq!(create["actor"], "jwt:placer-7", "a token client is named by its kind");
    assert_eq!(create["entity"], format!("Subscription/{id}/_history/1"));
    assert_eq!(create["outcome"], "success");
    let handshake = trail.iter().find(|e| e["action"] == "delivery" && e["detail"]["kind"] == "handshake").expect("the handshake");
    assert_eq!((handshake["actor"].as_str(), handshake["outcome"].as_str()), (Some("herald"), Some("success")));
    assert_eq!(handshake["detail"]["status"], 200);
    let event = trail.iter().find(|e| e["action"] == "delivery" && e["detail"]["kind"] == "event-notification").expect("the event");
    assert_eq!((event["detail"]["firstEvent"].as_u64(), event["detail"]["lastEvent"].as_u64()), (Some(1), Some(1)));
    assert!(has(&trail, "status", |e| e["detail"]["from"] == "requested" && e["detail"]["to"] == "active"), "{trail:#?}");
    let delete = trail.iter().find(|e| e["action"] == "delete").expect("a delete entry");
    assert_eq!(delete["actor"], "jwt:placer-7");
    // Oldest first, numbered in the order things happened.
    let seqs: Vec<u64> = trail.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(create["seq"].as_u64() < event["seq"].as_u64() && event["seq"].as_u64() < delete["seq"].as_u64());

    // Paging: after the create, the create is gone and the rest follows.
    let after = audit(&server, &format!("{query}&after={}", create["seq"])).await;
    assert!(entries(&after).iter().all(|e| e["seq"].as_u64() > create["seq"].as_u64()));
    assert!(has(&entries(&after), "delete", |_| true));

    let refused = wait_audit(&server, "action=credentials-refused", "the refused token", |e| !e.is_empty()).await;
    assert_eq!(refused[0]["detail"]["path"], "/fhir/Task");
    assert_eq!(refused[0]["outcome"], "failure");
    let everything = audit(&server, "limit=1000").await.to_string();
    for secret in ["receiver-secret-31", "forged-signature-55", &owner, "security-test-hs256-secret"] {
        assert!(!everything.contains(secret), "the audit trail shows a secret: {secret}");
    }

    // The command line reads the same trail.
    let (ok, out, err) = herald(&server, None, &["audit", "--subscription", &id, "--json"]).await;
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entries(&printed).len(), trail.len());
    let (ok, table, err) = herald(&server, None, &["audit", "--action", "create", "--actor", "jwt:placer-7"]).await;
    assert!(ok, "{err}");
    assert!(table.contains(&format!("Subscription/{id}/_history/1")), "{table}");
    assert!(!table.contains("delivery"), "{table}");
}

#[tokio::test]
async fn dead_letters_and_the_fall_into_error_are_recorded() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &receiver.url, json!({})).await;
    receiver.next_of("handshake", WAIT).await;
    receiver.set_status(500);
    server.create_task("requested", "Organization/lab").await;
    server.wait_status(&id, "error", WAIT).await;
    let trail = wait_audit(&server, &format!("subscription={id}"), "the dead letter and five failed attempts", |e| {
        has(e, "dead-letter", |_| true) && e.iter().filter(|x| x["action"] == "delivery" && x["outcome"] == "failure").count() >= 5
    })
    .await;
    let dead = trail.iter().find(|e| e["action"] == "dead-letter").unwrap();
    assert_eq!((dead["detail"]["from"].as_u64(), dead["detail"]["through"].as_u64()), (Some(1), Some(1)));
    assert_eq!(dead["detail"]["attempts"], 5);
    assert_eq!(dead["detail"]["error"], "error-response");
    assert!(has(&trail, "status", |e| e["detail"]["to"] == "error"), "{trail:#?}");
    let failed = trail.iter().filter(|e| e["action"] == "delivery" && e["outcome"] == "failure").count();
    assert_eq!(failed, 5, "one entry per failed attempt: {trail:#?}");
    assert!(trail.iter().filter(|e| e["action"] == "delivery" && e["outcome"] == "failure").all(|e| e["detail"]["status"] == 500));
    // The anonymous write of the subscription is attributed to `anonymous`.
    assert!(has(&trail, "create", |e| e["actor"] == "anonymous"), "{trail:#?}");
}
