//! The Inferno subscriptions test kit's R4 server suite, item by item
//! (`../shared/fhir/backport/INFERNO-SERVER-CHECKS.md`), against a real R4 Herald with the
//! kit's listener behaviour (`support::inferno`): bearer-token session matching, refusal
//! before the session waits, tagging by the first `Parameters` entry. Every notification and
//! every resource the kit validates is checked against the IG's profiles
//! (`support::profile`). The same walk runs on an R4B instance where the kit's checks have an
//! R4B meaning (SubscriptionStatus instead of Parameters).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::backport;
use crate::support::inferno::{Listener, Tagged};
use crate::support::profile::Definitions;
use crate::support::TestServer;

const NOTIFICATION_TOKEN: &str = "notification-token-7f3a";
const CLIENT_KEY: &str = "inferno-client-key";
const TOPIC: &str = "http://example.org/topics/encounter-changed";
const IG: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const WAIT: Duration = Duration::from_secs(20);

/// What differs between the R4 and R4B walks.
#[derive(Clone, Copy)]
struct Version {
    number: &'static str,
    defs: &'static str,
    notification_profile: &'static str,
    status_type: &'static str,
}

const R4: Version =
    Version { number: "4.0.1", defs: "r4", notification_profile: "backport-subscription-notification-r4", status_type: "Parameters" };
const R4B: Version =
    Version { number: "4.3.0", defs: "r4b", notification_profile: "backport-subscription-notification", status_type: "SubscriptionStatus" };

struct Kit {
    server: TestServer,
    client: reqwest::Client,
    listener: Listener,
    defs: &'static Definitions,
    v: Version,
}

fn ext(url: &str, value: Value) -> Value {
    let mut e = json!({ "url": url });
    if let Value::Object(v) = value {
        e.as_object_mut().unwrap().extend(v);
    }
    e
}

/// The workflow topic as an operator loads it: a `Basic` in R4 (cross-version extensions),
/// a `SubscriptionTopic` in R4B.
fn topic(v: Version) -> (String, Value) {
    if v.number == "4.0.1" {
        let x = |name: &str| format!("http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.{name}");
        let basic = json!({
            "resourceType": "Basic",
            "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
            "extension": [
                ext(&x("url"), json!({ "valueUri": TOPIC })),
                ext(&x("status"), json!({ "valueCode": "active" })),
                ext(&x("title"), json!({ "valueString": "Encounter changed" })),
                { "url": x("resourceTrigger"), "extension": [
                    { "url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/Encounter" },
                    { "url": "supportedInteraction", "valueCode": "create" },
                    { "url": "supportedInteraction", "valueCode": "update" }
                ] },
                { "url": x("canFilterBy"), "extension": [
                    { "url": "resource", "valueUri": "Encounter" },
                    { "url": "filterParameter", "valueString": "patient" }
                ] },
                { "url": x("notificationShape"), "extension": [
                    { "url": "resource", "valueUri": "Encounter" },
                    { "url": "include", "valueString": "Encounter:patient" }
                ] }
            ]
        });
        ("Basic".into(), basic)
    } else {
        let topic = json!({
            "resourceType": "SubscriptionTopic",
            "url": TOPIC,
            "status": "active",
            "title": "Encounter changed",
            "resourceTrigger": [{ "resource": "http://hl7.org/fhir/StructureDefinition/Encounter", "supportedInteraction": ["create", "update"] }],
            "canFilterBy": [{ "resource": "Encounter", "filterParameter": "patient" }],
            "notificationShape": [{ "resource": "Encounter", "include": ["Encounter:patient"] }]
        });
        ("SubscriptionTopic".into(), topic)
    }
}

/// The tester's Subscription input, as the kit's presets shape it (before the kit's rewrites).
fn subscription_input(content: &str, endpoint: &str) -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Inferno workflow",
        "criteria": TOPIC,
        "_criteria": { "extension": [
            { "url": format!("{IG}backport-filter-criteria"), "valueString": "Encounter?patient=Patient/123" }
        ] },
        "channel": {
            "extension": [
                { "url": format!("{IG}backport-timeout"), "valueUnsignedInt": 60 },
                { "url": format!("{IG}backport-max-count"), "valuePositiveInt": 20 }
            ],
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{IG}backport-payload-content"), "valueCode": content }] },
            "header": [format!("Authorization: Bearer {NOTIFICATION_TOKEN}")]
        }
    })
}

impl Kit {
    async fn start(v: Version) -> Option<Kit> {
        let defs = Definitions::of(v.defs)?;
        let server = TestServer::start_with(|c| {
            c.fhir.version = v.number.into();
            c.auth.api_keys = vec![herald::config::ApiKeySetting {
                client: "inferno".into(),
                sha256: herald::auth::api_key_digest(CLIENT_KEY),
                scopes: "system/*.cruds".into(),
            }];
            c.subscriptions.max_heartbeat_period = "24h".into();
        })
        .await;
        let client = reqwest::Client::new();
        let listener = Listener::start(NOTIFICATION_TOKEN).await;
        let kit = Kit { server, client, listener, defs, v };
        let (ty, body) = topic(v);
        let (status, created) = kit.send(reqwest::Method::POST, &ty, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "topic: {created}");
        Some(kit)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.server.url(path)).bearer_auth(CLIENT_KEY);
        if let Some(b) = body {
            req = req.header("content-type", "application/fhir+json").body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// 1.1.02: POST the Subscription, and only once the 201 is parsed, start waiting.
    async fn create(&self, sub: &Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, "Subscription", Some(sub)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body["id"].is_string(), "{body}");
        self.listener.wait();
        body
    }

    fn profile(&self, name: &str) -> String {
        format!("{IG}{name}")
    }

    fn valid(&self, resource: &Value, profile: &str) {
        let errors = self.defs.check(resource, &self.profile(profile));
        assert!(errors.is_empty(), "{profile}: {errors:#?}\n{resource:#}");
    }

    /// The status resource of a notification, and its parameters by name (R4) or fields (R4B)
    /// in one view: (type, status, events).
    fn status_of(&self, bundle: &Value) -> Value {
        bundle["entry"][0]["resource"].clone()
    }

    /// Common block N for one notification.
    fn block_n(&self, n: &Tagged, kind: &str, status: Option<&str>, id: &str) {
        let b = &n.body;
        assert_eq!(b["resourceType"], "Bundle", "N1");
        assert_eq!(b["type"], "history", "N2");
        let entries = b["entry"].as_array().expect("N3: entries");
        assert!(!entries.is_empty(), "N3");
        let url = entries[0]["request"]["url"].as_str().expect("N4: request");
        assert!(url.ends_with(&format!("Subscription/{id}/$status")), "N4: {url}");
        assert!(entries[0]["response"].is_object(), "N4: response");
        for e in &entries[1..] {
            assert!(e["request"].is_object() && e["response"].is_object(), "N5: {e}");
        }
        let st = self.status_of(b);
        assert_eq!(st["resourceType"], self.v.status_type, "N6");
        if self.v.status_type == "Parameters" {
            self.valid(&st, "backport-subscription-status-r4");
        } else {
            assert!(self.defs.check_base(&st).is_empty(), "N6: {:?}", self.defs.check_base(&st));
        }
        assert_eq!(n.kind, kind, "N7");
        if let Some(s) = status {
            assert_eq!(status_field(&st, "status"), Some(s.to_owned()), "N8");
        }
        self.valid(b, self.v.notification_profile);
    }

    /// Common block H: Content-Type and every `channel.header` of the returned Subscription.
    fn block_h(&self, n: &Tagged, returned: &Value) {
        let ct = n.headers.get("content-type").and_then(|v| v.to_str().ok()).expect("H1: Content-Type");
        let payload = returned["channel"]["payload"].as_str().unwrap();
        assert!(ct.starts_with(payload), "H1: {ct} for {payload}");
        let headers = returned["channel"]["header"].as_array().expect("H2: the returned Subscription has channel.header");
        for h in headers {
            let (name, value) = h.as_str().unwrap().split_once(": ").unwrap();
            let got = n.headers.get(name).and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(value), "H2: header {name}");
        }
    }

    async fn encounter(&self, patient: &str) -> String {
        let (s, b) = self
            .send(
                reqwest::Method::POST,
                "Encounter",
                Some(&json!({ "resourceType": "Encounter", "status": "in-progress",
                    "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP" },
                    "subject": { "reference": format!("Patient/{patient}") } })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_owned()
    }
}

/// A field of an R4 status Parameters or an R4B SubscriptionStatus, as a string.
fn status_field(st: &Value, name: &str) -> Option<String> {
    crate::support::versions::field(st, name)
}

/// The notification events of a status: (focus reference, additional-context references).
fn events(st: &Value) -> Vec<(Option<String>, Vec<String>)> {
    crate::support::status::events(st).into_iter().map(|e| (e.focus, e.context)).collect()
}

async fn walk(v: Version) {
    let Some(kit) = Kit::start(v).await else { return };
    let endpoint = kit.listener.url.clone();

    // 1.1.01: the input conforms to backport-subscription.
    let workflow = subscription_input("id-only", &endpoint);
    kit.valid(&workflow, "backport-subscription");

    // 1.1.02 / 1.1.03: 201, the full Subscription back, rest-hook and requested.
    let returned = kit.create(&workflow).await;
    let id = returned["id"].as_str().unwrap().to_owned();
    assert_eq!((returned["channel"]["type"].as_str(), returned["status"].as_str()), (Some("rest-hook"), Some("requested")), "1.1.03");
    kit.valid(&returned, "backport-subscription");
    for key in ["criteria", "_criteria"] {
        assert_eq!(returned[key], workflow[key], "the 201 echoes {key}");
    }
    for key in ["type", "payload", "_payload", "header", "extension", "endpoint"] {
        assert_eq!(returned["channel"][key], workflow["channel"][key], "the 201 echoes channel.{key}");
    }

    // 4.01 for this one: the handshake arrives although the listener refused everything
    // before it waited.
    let handshake = kit.listener.next_of("handshake", &id, WAIT).await;
    kit.block_n(&handshake, "handshake", Some("requested"), &id);

    // 1.2.01 / 1.2.02: an event-notification with block N and block H.
    kit.encounter("123").await;
    let event = kit.listener.next_of("event-notification", &id, WAIT).await;
    kit.block_n(&event, "event-notification", Some("active"), &id);
    kit.block_h(&event, &returned);
    // id-only (3.2.2.03): focus on the first event; later entries without resource, with fullUrl.
    let st = kit.status_of(&event.body);
    let evs = events(&st);
    assert!(!evs.is_empty() && evs[0].0.is_some(), "3.2.2.03 focus");
    for e in &event.body["entry"].as_array().unwrap()[1..] {
        assert!(e.get("resource").is_none() && e["fullUrl"].is_string(), "3.2.2.03 entry {e}");
    }

    // 2.01 / 2.02: the CapabilityStatement.
    let (s, cs) = kit.send(reqwest::Method::GET, "metadata", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    let base_errors = kit.defs.check_base(&cs);
    assert!(base_errors.is_empty(), "2.01 validates: {base_errors:#?}");
    assert_eq!(cs["fhirVersion"], v.number);
    let server = cs["rest"].as_array().unwrap().iter().find(|r| r["mode"] == "server").expect("2.01 rest server");
    let sub_res = server["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Subscription").expect("2.01 Subscription");
    let profiles: Vec<&str> = sub_res["supportedProfile"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(profiles.contains(&kit.profile("backport-subscription").as_str()), "2.01 supportedProfile {profiles:?}");
    let canonicals: Vec<&Value> = sub_res["extension"]
        .as_array()
        .expect("2.02 extensions")
        .iter()
        .filter(|e| e["url"] == kit.profile("capabilitystatement-subscriptiontopic-canonical"))
        .map(|e| &e["valueCanonical"])
        .collect();
    assert!(canonicals.contains(&&returned["criteria"]), "2.02: {canonicals:?}");

    // 3.1: empty.
    let returned_empty = kit.create(&subscription_input("empty", &endpoint)).await;
    let empty_id = returned_empty["id"].as_str().unwrap().to_owned();
    kit.listener.next_of("handshake", &empty_id, WAIT).await;
    // 3.3: full-resource, with a heartbeat (4.02).
    let mut full = subscription_input("full-resource", &endpoint);
    full["channel"]["extension"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "url": format!("{IG}backport-heartbeat-period"), "valueUnsignedInt": 1 }));
    kit.valid(&full, "backport-subscription");
    let returned_full = kit.create(&full).await;
    let full_id = returned_full["id"].as_str().unwrap().to_owned();
    kit.listener.next_of("handshake", &full_id, WAIT).await;

    kit.encounter("123").await;
    let empty_event = kit.listener.next_of("event-notification", &empty_id, WAIT).await;
    kit.block_n(&empty_event, "event-notification", Some("active"), &empty_id);
    kit.block_h(&empty_event, &returned_empty);
    let st = kit.status_of(&empty_event.body);
    assert_eq!(empty_event.body["entry"].as_array().unwrap().len(), 1, "3.1.2.03 only the status");
    let evs = events(&st);
    assert!(!evs.is_empty(), "3.1.2.03 notification-event");
    assert!(evs.iter().all(|(f, c)| f.is_none() && c.is_empty()), "3.1.2.03 no focus or context");
    assert_eq!(status_field(&st, "topic"), None, "3.1.2.03 (warning): no topic at empty");

    let full_event = kit.listener.next_of("event-notification", &full_id, WAIT).await;
    kit.block_n(&full_event, "event-notification", Some("active"), &full_id);
    kit.block_h(&full_event, &returned_full);
    let st = kit.status_of(&full_event.body);
    assert!(status_field(&st, "topic").is_some(), "3.3.2.03 (warning): topic at full-resource");
    let entries = full_event.body["entry"].as_array().unwrap()[1..].to_vec();
    let evs = events(&st);
    assert!(!evs.is_empty(), "3.3.2.03 notification-event");
    for (focus, context) in &evs {
        let focus = focus.as_deref().expect("3.3.2.03 focus");
        assert!(backport::resolves(&full_event.body, focus), "3.3.2.03 focus {focus} resolves");
        for c in context {
            assert!(backport::resolves(&full_event.body, c), "3.3.2.03 additional-context {c} resolves");
        }
    }
    for e in &entries {
        if e["resource"].is_object() {
            let errors = kit.defs.check_base(&e["resource"]);
            assert!(errors.is_empty(), "3.3.2.03 entry validates: {errors:#?}");
        }
    }

    // 4.02: heartbeats only for Subscriptions that asked for them.
    let heartbeat = kit.listener.next_of("heartbeat", &full_id, WAIT).await;
    kit.block_n(&heartbeat, "heartbeat", None, &full_id);
    for t in kit.listener.accepted().await {
        if t.kind == "heartbeat" {
            assert_eq!(t.subscription, full_id, "4.02: a heartbeat for a Subscription without heartbeatPeriod");
        }
    }

    // 5.01: $status.
    let (s, st) = kit.send(reqwest::Method::GET, &format!("Subscription/{id}/$status"), None).await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["resourceType"], "Bundle");
    assert_eq!(st["type"], "searchset", "5.01");
    assert!(kit.defs.check_base(&st).is_empty(), "5.01 validates: {:?}", kit.defs.check_base(&st));
    let entries = st["entry"].as_array().unwrap();
    assert!(entries.iter().all(|e| e.get("request").is_none() && e.get("response").is_none()), "5.01 bdl-3/4");
    let found = entries
        .iter()
        .map(|e| &e["resource"])
        .find(|r| {
            r["resourceType"] == v.status_type
                && status_field(r, "subscription").is_some_and(|s| s.contains(&format!("/{id}")) || s.ends_with(&id))
        })
        .expect("5.01 a status for the subscription");
    if v.status_type == "Parameters" {
        kit.valid(found, "backport-subscription-status-r4");
    }

    // 6.x: rejection, from the raw input.
    let raw = subscription_input("id-only", "https://inferno.example/listener");
    let rejects = |edited: Value, path: &[&str], status: StatusCode, body: &Value| {
        if status != StatusCode::CREATED {
            assert!(status.is_client_error(), "{status}: {body}");
            assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
            return;
        }
        let mut sent = &edited;
        let mut got = body;
        for p in path {
            sent = &sent[*p];
            got = &got[*p];
        }
        assert_ne!(sent, got, "{path:?} was neither rejected nor altered");
    };
    // 6.01 cross-version extension: never 201.
    let mut cross = raw.clone();
    cross["_criteria"] = json!({ "extension": [{ "url": "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/backport-filter-criteria", "valueString": "Encounter.patient=Patient/123" }] });
    let (s, b) = kit.send(reqwest::Method::POST, "Subscription", Some(&cross)).await;
    assert!(s.is_client_error(), "6.01: {s} {b}");
    assert_eq!(b["resourceType"], "OperationOutcome");
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("6.02 topic", json!({ "criteria": "http://example.org/topics/no-such-topic" }), vec!["criteria"]),
        (
            "6.03 filter",
            json!({ "_criteria": { "extension": [{ "url": format!("{IG}backport-filter-criteria"), "valueString": "Encounter?no-such-param=1" }] } }),
            vec!["_criteria"],
        ),
        ("6.04 channel type", json!({ "channel": { "type": "carrier-pigeon" } }), vec!["channel", "type"]),
        ("6.05 endpoint", json!({ "channel": { "endpoint": "ftp://inferno.example/listener" } }), vec!["channel", "endpoint"]),
        ("6.06 payload", json!({ "channel": { "payload": "application/unsupported+payload" } }), vec!["channel", "payload"]),
        ("6.07 combination", json!({ "channel": { "type": "email", "payload": "application/fhir+json" } }), vec!["channel", "type"]),
    ];
    for (name, edit, path) in cases {
        let mut edited = raw.clone();
        merge(&mut edited, &edit);
        let (s, b) = kit.send(reqwest::Method::POST, "Subscription", Some(&edited)).await;
        println!("{name}: {s}");
        rejects(edited, &path, s, &b);
    }

    // Every other resource the kit or a client reads back validates against the base
    // definitions of the version: reads, searches, both levels of $status, $events, topics,
    // the CapabilityStatement (above) and the OperationOutcomes of refusals.
    let topic_search =
        if v.number == "4.0.1" { "Basic?code=SubscriptionTopic".to_owned() } else { format!("SubscriptionTopic?url={TOPIC}") };
    for path in [
        format!("Subscription/{id}"),
        format!("Subscription?_id={id}"),
        "Subscription?status=active".to_owned(),
        "Subscription/$status".to_owned(),
        format!("Subscription/{full_id}/$events"),
        format!("Subscription/{id}/$events?eventsSinceNumber=1&content=full-resource"),
        topic_search,
        "Encounter?patient=Patient/none".to_owned(),
        "Subscription/no-such-id".to_owned(),
    ] {
        let (s, body) = kit.send(reqwest::Method::GET, &path, None).await;
        assert!(s == StatusCode::OK || s == StatusCode::NOT_FOUND, "{path}: {s} {body}");
        let errors = kit.defs.check_base(&body);
        assert!(errors.is_empty(), "{path} validates: {errors:#?}\n{body:#}");
    }
    let (_, refused) = kit.send(reqwest::Method::POST, "Subscription", Some(&cross)).await;
    assert!(kit.defs.check_base(&refused).is_empty(), "{:?}", kit.defs.check_base(&refused));

    // Every accepted notification validates against the notification profile.
    assert!(!kit.listener.accepted().await.is_empty());
    for t in kit.listener.accepted().await {
        kit.valid(&t.body, v.notification_profile);
    }
}

fn merge(into: &mut Value, edit: &Value) {
    match (into, edit) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[tokio::test]
async fn r4_instance_passes_every_server_check_of_the_kit() {
    walk(R4).await;
}

#[tokio::test]
async fn r4b_instance_passes_the_kits_checks_in_r4b_shapes() {
    walk(R4B).await;
}
