//! Notifications and Subscription operations of R4 and R4B instances, end to end: a real
//! server started with `fhir.version` 4.0.1 or 4.3.0, real rest-hook receivers and websocket
//! clients. Each behaviour runs once per version (`r4`, `r4b`), asserting what the Inferno
//! server suite asserts (../shared/fhir/backport/INFERNO-SERVER-CHECKS.md): block N (a
//! `history` Bundle, request/response on every entry, the status first and tagged with its
//! type and subscription), block H (Content-Type starting with the payload MIME type, every
//! channel header as written), the content-level checks 3.1.2.03-3.3.2.03, handshake and
//! heartbeat (4.01, 4.02) and `$status` (5.01).
//!
//! Subscriptions are created in the Backport IG's R4 form (`criteria`, `channel` with its
//! extensions). An instance that cannot parse that form yet refuses it, and `subscribe` then
//! creates the same subscription in its R5 form: what is under test here (the notifications and
//! operations) is the instance version's either way. Topics are Herald's built-ins, present in
//! every version.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::status::{self, Listed};
use crate::support::ws::{Binding, WsClient};
use crate::support::{Received, Receiver, TestServer};

const T: Duration = Duration::from_secs(10);
const TOPIC: &str = "http://herald.dev/fhir/SubscriptionTopic/coordination-task-changed";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
const STATUS_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";
/// The header Inferno adds to every Subscription it creates (block H2).
const AUTHORIZATION: &str = "Authorization: Bearer SAMPLE_TOKEN";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    R4,
    R4B,
}

impl Version {
    fn number(self) -> &'static str {
        match self {
            Version::R4 => "4.0.1",
            Version::R4B => "4.3.0",
        }
    }

    /// The status resource's type in this version.
    fn status_type(self) -> &'static str {
        match self {
            Version::R4 => "Parameters",
            Version::R4B => "SubscriptionStatus",
        }
    }

    fn bundle_profile(self) -> String {
        match self {
            Version::R4 => format!("{BACKPORT}/backport-subscription-notification-r4"),
            Version::R4B => format!("{BACKPORT}/backport-subscription-notification"),
        }
    }
}

/// Runs `$body` as one test per backport version (`<name>::r4`, `<name>::r4b`): the FHIR
/// version is chosen once per process, and nextest runs each test in its own.
macro_rules! per_version {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn r4() {
                super::$body(super::Version::R4).await
            }

            #[tokio::test]
            async fn r4b() {
                super::$body(super::Version::R4B).await
            }
        }
    };
}

async fn server(version: Version) -> TestServer {
    TestServer::start_with(|c| c.fhir.version = version.number().into()).await
}

/// A subscription to create.
struct Sub<'a> {
    /// `rest-hook` or `websocket`.
    channel: &'a str,
    endpoint: Option<&'a str>,
    content: &'a str,
    /// The payload MIME type.
    payload: &'a str,
    heartbeat: Option<u64>,
    headers: &'a [&'a str],
}

impl<'a> Sub<'a> {
    fn rest_hook(endpoint: &'a str, content: &'a str) -> Self {
        Sub {
            channel: "rest-hook",
            endpoint: Some(endpoint),
            content,
            payload: "application/fhir+json",
            heartbeat: None,
            headers: &[AUTHORIZATION],
        }
    }

    /// The Backport IG's R4/R4B form (`backport-subscription`).
    fn backport_form(&self) -> Value {
        let mut channel = json!({
            "type": self.channel,
            "payload": self.payload,
            "_payload": { "extension": [{ "url": format!("{BACKPORT}/backport-payload-content"), "valueCode": self.content }] },
            "header": self.headers,
        });
        if let Some(endpoint) = self.endpoint {
            channel["endpoint"] = json!(endpoint);
        }
        if let Some(period) = self.heartbeat {
            channel["extension"] = json!([{ "url": format!("{BACKPORT}/backport-heartbeat-period"), "valueUnsignedInt": period }]);
        }
        json!({
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Herald backport notification test",
            "criteria": TOPIC,
            "channel": channel,
        })
    }

    /// The same subscription in R5 form.
    fn r5_form(&self) -> Value {
        let mut sub = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "topic": TOPIC,
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": self.channel },
            "content": self.content,
            "contentType": self.payload,
            "parameter": self.headers.iter().map(|h| {
                let (name, value) = h.split_once(": ").unwrap();
                json!({ "name": name, "value": value })
            }).collect::<Vec<_>>(),
        });
        if let Some(endpoint) = self.endpoint {
            sub["endpoint"] = json!(endpoint);
        }
        if let Some(period) = self.heartbeat {
            sub["heartbeatPeriod"] = json!(period);
        }
        sub
    }
}

/// Creates `sub` (see the module header on its two forms); returns its id.
async fn subscribe(server: &TestServer, sub: &Sub<'_>) -> String {
    let (s, body) = server.post("Subscription", &sub.backport_form()).await;
    let (s, body) = if s == StatusCode::CREATED {
        (s, body)
    } else {
        assert!(s.is_client_error(), "the backport form was answered {s}: {body}");
        eprintln!("note: this instance refused the backport form ({s}); creating the R5 form");
        server.post("Subscription", &sub.r5_form()).await
    };
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let want = if sub.channel == "websocket" { "active" } else { "requested" };
    assert_eq!(body["status"], want, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Block N: a `history` Bundle declaring its backport profile, request and response on every
/// entry, entry 1 the version's status resource reading `Subscription/<id>/$status`, with the
/// expected type, status and subscription.
fn check_block_n(version: Version, bundle: &Value, kind: &str, status: Option<&str>, sub: &str) {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "history", "{bundle}");
    assert_eq!(bundle["meta"]["profile"][0], json!(version.bundle_profile()));
    let entries = bundle["entry"].as_array().expect("entries");
    for (i, e) in entries.iter().enumerate() {
        assert!(e["request"].is_object() && e["response"].is_object(), "entry {i} lacks request or response: {bundle}");
    }
    let first = &entries[0];
    assert_eq!(first["request"]["method"], "GET");
    assert!(first["request"]["url"].as_str().unwrap().ends_with(&format!("Subscription/{sub}/$status")), "{first}");
    assert_eq!(first["response"]["status"], "200");
    assert!(first["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    let resource = &first["resource"];
    assert_eq!(resource["resourceType"], version.status_type());
    if version == Version::R4 {
        check_status_r4(resource);
    }
    assert_eq!(status::kind(resource), kind);
    if let Some(want) = status {
        assert_eq!(status::status_code(resource), want);
    }
    assert_eq!(status::subscription_id(resource), sub);
}

/// What `backport-subscription-status-r4` requires of the Parameters (the unit tests in
/// `notify` check it against the profile's differential; this is the wire copy).
fn check_status_r4(params: &Value) {
    assert_eq!(params["meta"]["profile"][0], STATUS_R4);
    let one = |name: &str, value: &str| {
        let found: Vec<&Value> = status::params(params, name).collect();
        assert_eq!(found.len(), 1, "{name}: {params}");
        assert!(found[0].get(value).is_some(), "{name} is not a {value}: {params}");
    };
    one("subscription", "valueReference");
    one("status", "valueCode");
    one("type", "valueCode");
    for p in status::params(params, "events-since-subscription-start") {
        assert!(p["valueString"].is_string(), "{p}");
    }
    for p in status::params(params, "topic") {
        assert!(p["valueCanonical"].is_string(), "{p}");
    }
    for e in status::params(params, "notification-event") {
        for part in e["part"].as_array().unwrap() {
            let key = match part["name"].as_str().unwrap() {
                "event-number" => "valueString",
                "timestamp" => "valueInstant",
                "focus" | "additional-context" => "valueReference",
                other => panic!("unknown notification-event part {other}"),
            };
            assert!(part.get(key).is_some(), "{part}");
        }
    }
}

/// Block H: Content-Type starts with the payload MIME type; every channel header arrives as
/// written (name before the first ": ").
fn check_block_h(r: &Received, payload: &str, headers: &[&str]) {
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with(payload), "Content-Type {content_type} for payload {payload}");
    for h in headers {
        let (name, value) = h.split_once(": ").unwrap();
        assert_eq!(r.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "header {name}");
    }
}

/// Inferno 3.3.2.03: a reference matches an entry whose resource's `Type/id` it contains.
fn resolves(bundle: &Value, reference: &str) -> bool {
    bundle["entry"].as_array().unwrap().iter().skip(1).any(|e| {
        let r = &e["resource"];
        r.is_object() && reference.contains(&format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()))
    })
}

/// A Task whose focus is a ServiceRequest (the topic's shape includes `Task:focus`); returns
/// the Task's and the ServiceRequest's ids.
async fn task_with_focus(server: &TestServer) -> (String, String) {
    let (s, patient) = server.post("Patient", &json!({ "resourceType": "Patient", "active": true })).await;
    assert_eq!(s, StatusCode::CREATED, "{patient}");
    let subject = format!("Patient/{}", patient["id"].as_str().unwrap());
    let (s, order) = server
        .post(
            "ServiceRequest",
            &json!({ "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": { "reference": subject } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();
    let task = json!({
        "resourceType": "Task", "status": "requested", "intent": "order",
        "focus": { "reference": format!("ServiceRequest/{order_id}") },
        "for": { "reference": subject },
        "owner": { "reference": "Organization/lab" }
    });
    let (s, task) = server.post("Task", &task).await;
    assert_eq!(s, StatusCode::CREATED, "{task}");
    (task["id"].as_str().unwrap().to_string(), order_id)
}

async fn handshake_then_events_at_every_content_level(version: Version) {
    let server = server(version).await;
    let receivers = [Receiver::start().await, Receiver::start().await, Receiver::start().await];
    let levels = ["empty", "id-only", "full-resource"];
    // One subscription asks for plain application/json (Inferno keeps it, with a warning).
    let payloads = ["application/fhir+json", "application/json", "application/fhir+json"];
    let mut ids = Vec::new();
    for ((rx, content), payload) in receivers.iter().zip(levels).zip(payloads) {
        let sub = Sub { payload, ..Sub::rest_hook(&rx.url, content) };
        let id = subscribe(&server, &sub).await;
        // 4.01: a handshake, `requested`, for every rest-hook subscription.
        let hs = rx.next_within(T).await;
        check_block_n(version, &hs.body, "handshake", Some("requested"), &id);
        assert_eq!(hs.body["entry"].as_array().unwrap().len(), 1);
        check_block_h(&hs, payload, &[AUTHORIZATION]);
        server.wait_status(&id, "active", T).await;
        ids.push(id);
    }
    let (task, order) = task_with_focus(&server).await;
    for (((rx, content), payload), id) in receivers.iter().zip(levels).zip(payloads).zip(&ids) {
        let n = rx.next_of("event-notification", T).await;
        // 1.2.02: block N with status active, block H.
        check_block_n(version, &n.body, "event-notification", Some("active"), id);
        check_block_h(&n, payload, &[AUTHORIZATION]);
        let st = n.status();
        let events = status::events(st);
        assert_eq!(events.iter().map(|e| e.number).collect::<Vec<_>>(), vec![1], "{content}");
        assert_eq!(status::events_since_start(st), "1");
        let entries = n.body["entry"].as_array().unwrap();
        match content {
            // 3.1.2.03
            "empty" => {
                assert!(status::topic(st).is_none(), "a topic at empty");
                assert_eq!(entries.len(), 1, "{}", n.body);
                assert_eq!(events[0], Listed { number: 1, focus: None, context: vec![], withheld: false });
            }
            // 3.2.2.03
            "id-only" => {
                assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
                assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{task}")), "{events:?}");
                assert!(events[0].context.iter().any(|c| c.ends_with(&format!("ServiceRequest/{order}"))), "{events:?}");
                for e in &entries[1..] {
                    assert!(e.get("resource").is_none() && e["fullUrl"].is_string(), "{e}");
                }
                assert_eq!(entries[1]["request"], json!({ "method": "POST", "url": "Task" }));
            }
            // 3.3.2.03
            _ => {
                assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
                let focus = events[0].focus.as_deref().unwrap();
                assert!(resolves(&n.body, focus), "focus {focus} resolves to no entry: {}", n.body);
                assert!(!events[0].context.is_empty());
                for c in &events[0].context {
                    assert!(resolves(&n.body, c), "additional-context {c} resolves to no entry: {}", n.body);
                }
                assert_eq!(entries[1]["resource"]["resourceType"], "Task");
                assert_eq!(entries[1]["resource"]["id"], json!(task));
            }
        }
    }
}
per_version!(handshake_then_events_at_every_content_level_pass_inferno_checks, handshake_then_events_at_every_content_level);

async fn heartbeats_only_for_subscriptions_that_asked(version: Version) {
    let server = server(version).await;
    let (beating, quiet) = (Receiver::start().await, Receiver::start().await);
    let a = subscribe(&server, &Sub { heartbeat: Some(1), ..Sub::rest_hook(&beating.url, "id-only") }).await;
    let b = subscribe(&server, &Sub::rest_hook(&quiet.url, "id-only")).await;
    server.wait_status(&a, "active", T).await;
    server.wait_status(&b, "active", T).await;
    // 4.02: block N with type heartbeat, only for the subscription that asked.
    let hb = beating.next_of("heartbeat", T).await;
    check_block_n(version, &hb.body, "heartbeat", Some("active"), &a);
    assert_eq!(hb.body["entry"].as_array().unwrap().len(), 1);
    beating.next_of("heartbeat", T).await;
    let kinds: Vec<String> = quiet.drain().await.iter().map(|r| r.kind().to_string()).collect();
    assert_eq!(kinds, vec!["handshake"], "no heartbeats without a heartbeat period");
}
per_version!(heartbeats_go_only_to_subscriptions_that_asked, heartbeats_only_for_subscriptions_that_asked);

async fn status_answers_a_searchset_of_version_statuses(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "empty")).await;
    server.wait_status(&id, "active", T).await;
    server.create_task("requested", "Organization/lab").await;
    rx.next_of("event-notification", T).await;
    // 5.01: instance level.
    let (s, bundle) = server.get(&format!("Subscription/{id}/$status")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    let entry = &bundle["entry"][0];
    // bdl-3, bdl-4: no request or response in a searchset.
    assert!(entry.get("request").is_none() && entry.get("response").is_none(), "{entry}");
    assert_eq!(entry["search"]["mode"], "match");
    let st = &entry["resource"];
    assert_eq!(st["resourceType"], version.status_type());
    if version == Version::R4 {
        check_status_r4(st);
    }
    assert!(status::subscription_reference(st).ends_with(&format!("/{id}")));
    assert_eq!((status::kind(st), status::status_code(st)), ("query-status", "active"));
    assert_eq!(status::events_since_start(st), "1");
    // The topic is shown to the subscription's owner even at `empty`.
    assert_eq!(status::topic(st).as_deref(), Some(TOPIC));
    // Type level, filtered by id and status.
    let other = subscribe(&server, &Sub::rest_hook("http://127.0.0.1:9/nobody", "id-only")).await;
    server.wait_status(&other, "error", T).await;
    let (_, all) = server.get("Subscription/$status").await;
    assert_eq!(all["type"], "searchset");
    assert_eq!(all["entry"].as_array().unwrap().len(), 2);
    let (_, errors) = server.get("Subscription/$status?status=error").await;
    let listed: Vec<String> = errors["entry"].as_array().unwrap().iter().map(|e| status::subscription_id(&e["resource"])).collect();
    assert_eq!(listed, vec![other.clone()]);
    let failed = &errors["entry"][0]["resource"];
    assert_eq!(status::error(failed).map(|(code, _)| code).as_deref(), Some("no-response"));
    let (_, mine) = server.get(&format!("Subscription/$status?id={id}")).await;
    assert_eq!(status::subscription_id(&mine["entry"][0]["resource"]), id);
}
per_version!(status_answers_a_searchset_of_version_statuses_without_request_or_response, status_answers_a_searchset_of_version_statuses);

async fn events_answers_a_history_query_event_bundle(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "id-only")).await;
    server.wait_status(&id, "active", T).await;
    let first = server.create_task("requested", "Organization/lab").await;
    server.create_task("requested", "Organization/lab").await;
    rx.events(2, T).await;
    let (s, bundle) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=1&eventsUntilNumber=1&content=full-resource")).await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    check_block_n(version, &bundle, "query-event", Some("active"), &id);
    let events = status::events(&bundle["entry"][0]["resource"]);
    assert_eq!(events.len(), 1);
    assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{first}")));
    assert_eq!(bundle["entry"][1]["resource"]["id"], json!(first));
}
per_version!(events_answers_a_history_bundle_of_query_events, events_answers_a_history_query_event_bundle);

async fn refused_handshakes_are_retried(version: Version) {
    let server = server(version).await;
    let rx = Receiver::start().await;
    // Inferno's listener answers 500 until its session waits (INFERNO-SERVER-CHECKS §0 Timing).
    rx.refuse_next(2);
    let id = subscribe(&server, &Sub::rest_hook(&rx.url, "id-only")).await;
    for _ in 0..3 {
        let hs = rx.next_within(T).await;
        check_block_n(version, &hs.body, "handshake", Some("requested"), &id);
    }
    server.wait_status(&id, "active", T).await;
}
per_version!(a_handshake_refused_twice_is_retried_until_accepted, refused_handshakes_are_retried);

async fn websocket_frames_carry_the_version_bundle(version: Version) {
    let server = server(version).await;
    let id = subscribe(&server, &Sub { channel: "websocket", endpoint: None, headers: &[], ..Sub::rest_hook("", "id-only") }).await;
    let (s, params) = server.get(&format!("Subscription/{id}/$get-ws-binding-token")).await;
    assert_eq!(s, StatusCode::OK, "{params}");
    // backport-subscription-get-ws-binding-token: token, expiration, subscription, websocket-url.
    assert_eq!(params["resourceType"], "Parameters");
    let binding = Binding::from_parameters(&params);
    assert_eq!(binding.subscriptions, vec![id.clone()]);
    assert!(binding.url.starts_with("ws://"));
    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind(&binding.token).await;
    let hs = ws.next_of("handshake", T).await;
    check_block_n(version, &hs, "handshake", None, &id);
    let task = server.create_task("requested", "Organization/lab").await;
    let n = ws.next_of("event-notification", T).await;
    check_block_n(version, &n, "event-notification", Some("active"), &id);
    let events = status::events(&n["entry"][0]["resource"]);
    assert_eq!(events[0].number, 1);
    assert!(events[0].focus.as_deref().unwrap().ends_with(&format!("Task/{task}")));
    ws.close().await;
}
per_version!(websocket_frames_are_the_version_bundles, websocket_frames_carry_the_version_bundle);
