//! Driving R4 and R4B instances as the Inferno server suite does
//! (../shared/fhir/backport/INFERNO-SERVER-CHECKS.md): creating backport Subscriptions, and
//! the checks it makes on every notification (block N, block H, status-r4, reference
//! resolution). `tests/it/backport_notify.rs` uses them; a walk through the whole checklist can
//! reuse them.
//!
//! Subscriptions are created in the Backport IG's R4 form (`criteria`, `channel` with its
//! extensions).

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::status;
use super::{Received, TestServer};

/// The built-in topic on coordination Tasks, present in every version.
pub const TOPIC: &str = "http://herald.dev/fhir/SubscriptionTopic/coordination-task-changed";
pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
pub const STATUS_R4: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";
/// The header Inferno adds to every Subscription it creates (block H2).
pub const AUTHORIZATION: &str = "Authorization: Bearer SAMPLE_TOKEN";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    R4,
    R4B,
}

impl Version {
    pub fn number(self) -> &'static str {
        match self {
            Version::R4 => "4.0.1",
            Version::R4B => "4.3.0",
        }
    }

    /// The status resource's type in this version.
    pub fn status_type(self) -> &'static str {
        match self {
            Version::R4 => "Parameters",
            Version::R4B => "SubscriptionStatus",
        }
    }

    pub fn bundle_profile(self) -> String {
        match self {
            Version::R4 => format!("{BACKPORT}/backport-subscription-notification-r4"),
            Version::R4B => format!("{BACKPORT}/backport-subscription-notification"),
        }
    }
}

pub async fn server(version: Version) -> TestServer {
    TestServer::start_with(|c| c.fhir.version = version.number().into()).await
}

/// A subscription to create.
pub struct Sub<'a> {
    /// `rest-hook` or `websocket`.
    pub channel: &'a str,
    pub endpoint: Option<&'a str>,
    pub content: &'a str,
    /// The payload MIME type.
    pub payload: &'a str,
    pub heartbeat: Option<u64>,
    pub headers: &'a [&'a str],
}

impl<'a> Sub<'a> {
    pub fn rest_hook(endpoint: &'a str, content: &'a str) -> Self {
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
    pub fn backport_form(&self) -> Value {
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
}

/// Creates `sub` in its Backport IG form; returns its id.
pub async fn subscribe(server: &TestServer, sub: &Sub<'_>) -> String {
    let (s, body) = server.post("Subscription", &sub.backport_form()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let want = if sub.channel == "websocket" { "active" } else { "requested" };
    assert_eq!(body["status"], want, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Block N: a `history` Bundle declaring its backport profile, request and response on every
/// entry, entry 1 the version's status resource reading `Subscription/<id>/$status`, with the
/// expected type, status and subscription.
pub fn check_block_n(version: Version, bundle: &Value, kind: &str, status: Option<&str>, sub: &str) {
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
pub fn check_status_r4(params: &Value) {
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
pub fn check_block_h(r: &Received, payload: &str, headers: &[&str]) {
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with(payload), "Content-Type {content_type} for payload {payload}");
    for h in headers {
        let (name, value) = h.split_once(": ").unwrap();
        assert_eq!(r.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "header {name}");
    }
}

/// Inferno 3.3.2.03: a reference matches an entry whose resource's `Type/id` it contains.
pub fn resolves(bundle: &Value, reference: &str) -> bool {
    bundle["entry"].as_array().into_iter().flatten().skip(1).any(|e| {
        if reference.starts_with("urn:") {
            return e["fullUrl"] == reference;
        }
        let r = &e["resource"];
        r.is_object() && reference.contains(&format!("{}/{}", r["resourceType"].as_str().unwrap_or(""), r["id"].as_str().unwrap_or("")))
    })
}
