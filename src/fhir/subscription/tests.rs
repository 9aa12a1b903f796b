//! Subscription parsing: defaults, limits, and the official R5 example.

use serde_json::{json, Value};

use super::*;

fn limits() -> SubscriptionLimits {
    SubscriptionLimits { max_timeout_secs: 60, max_heartbeat_secs: 3600, max_count: 100, default_max_count: 1 }
}

fn base() -> Value {
    json!({ "resourceType": "Subscription", "status": "requested", "topic": "http://x/t|2", "channelType": { "code": "rest-hook" }, "endpoint": "https://rx.example/hook" })
}

#[test]
fn defaults_are_id_only_fhir_json_and_one_event_per_bundle() {
    let s = parse_subscription("s", &base(), &limits(), 0).unwrap();
    assert_eq!(s.content, ContentLevel::IdOnly);
    assert_eq!(s.content_type, "application/fhir+json");
    assert_eq!(s.max_count, 1);
    assert_eq!(s.topic_url(), "http://x/t");
    assert_eq!(s.topic_version(), Some("2"));
}

#[test]
fn websocket_needs_no_endpoint_and_ignores_one() {
    let mut sub = base();
    sub["channelType"] = json!({ "system": CHANNEL_SYSTEM, "code": "websocket" });
    sub.as_object_mut().unwrap().remove("endpoint");
    let s = parse_subscription("s", &sub, &limits(), 0).unwrap();
    assert_eq!(s.channel, ChannelType::Websocket);
    assert!(s.endpoint.is_none());
    sub["endpoint"] = json!("wss://ignored.example/socket");
    assert!(parse_subscription("s", &sub, &limits(), 0).unwrap().endpoint.is_none());
    sub["channelType"] = json!({ "code": "email" });
    assert!(parse_subscription("s", &sub, &limits(), 0).is_err());
    let mut rest = base();
    rest.as_object_mut().unwrap().remove("endpoint");
    let issues = parse_subscription("s", &rest, &limits(), 0).unwrap_err();
    assert_eq!(issues[0].expression.as_deref(), Some("Subscription.endpoint"));
}

#[test]
fn official_example_parses_with_its_filter() {
    let Some(mut sub) = crate::testdata::fhir_json("examples/r5/Subscription-example.json") else { return };
    // The example has no endpoint (it is a fragment); give it one.
    sub["endpoint"] = json!("https://rx.example/hook");
    let s = parse_subscription("example", &sub, &limits(), 0).unwrap();
    assert_eq!(s.filters[0].resource_type.as_deref(), Some("Encounter"));
    assert_eq!(s.filters[0].parameter, "patient");
    assert!(s.identifier.is_some());
}

#[test]
fn limits_and_reserved_headers_are_enforced_without_echoing_secrets() {
    let mut sub = base();
    sub["timeout"] = json!(61);
    sub["heartbeatPeriod"] = json!(0);
    sub["maxCount"] = json!(101);
    sub["parameter"] = json!([{ "name": "Content-Type", "value": "text/plain" }, { "name": "X-Key", "value": "abc\r\ndef-secret" }]);
    let issues = parse_subscription("s", &sub, &limits(), 0).unwrap_err();
    let exprs: Vec<String> = issues.iter().filter_map(|i| i.expression.clone()).collect();
    for want in [
        "Subscription.timeout",
        "Subscription.heartbeatPeriod",
        "Subscription.maxCount",
        "Subscription.parameter[0].name",
        "Subscription.parameter[1].value",
    ] {
        assert!(exprs.iter().any(|e| e == want), "{want} not in {exprs:?}");
    }
    assert!(issues.iter().all(|i| !i.diagnostics.contains("secret")), "header values are never echoed");
}

#[test]
fn header_values_are_secret_in_debug_output() {
    let mut sub = base();
    sub["parameter"] = json!([{ "name": "Authorization", "value": "Bearer hunter2" }]);
    let s = parse_subscription("s", &sub, &limits(), 0).unwrap();
    assert!(!format!("{s:?}").contains("hunter2"));
}
