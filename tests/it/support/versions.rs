//! The same test in every FHIR version: the shapes of a topic, a rest-hook Subscription and a
//! notification's status in R4 (Basic-wrapped topic, backport Subscription, `Parameters`
//! status), R4B (`SubscriptionTopic`, backport Subscription, `SubscriptionStatus`) and R5.

use serde_json::{json, Value};

pub const R4: &str = "4.0.1";
pub const R4B: &str = "4.3.0";
pub const R5: &str = "5.0.0";

const IG: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const XV: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";

/// A topic on `resource` (create, update, delete) filterable by `filters`, and the type it is
/// POSTed as.
pub fn topic(version: &str, url: &str, resource: &str, filters: &[&str]) -> (&'static str, Value) {
    if version == R4 {
        let mut ext = vec![
            json!({ "url": format!("{XV}url"), "valueUri": url }),
            json!({ "url": format!("{XV}status"), "valueCode": "active" }),
            json!({ "url": format!("{XV}resourceTrigger"), "extension": [
                { "url": "resource", "valueUri": resource },
                { "url": "supportedInteraction", "valueCode": "create" },
                { "url": "supportedInteraction", "valueCode": "update" },
                { "url": "supportedInteraction", "valueCode": "delete" }
            ] }),
            json!({ "url": format!("{XV}notificationShape"), "extension": [{ "url": "resource", "valueUri": resource }] }),
        ];
        for f in filters {
            ext.push(json!({ "url": format!("{XV}canFilterBy"), "extension": [
                { "url": "resource", "valueUri": resource }, { "url": "filterParameter", "valueString": f }
            ] }));
        }
        let basic = json!({
            "resourceType": "Basic",
            "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
            "extension": ext
        });
        return ("Basic", basic);
    }
    let topic = json!({
        "resourceType": "SubscriptionTopic",
        "url": url,
        "status": "active",
        "resourceTrigger": [{ "resource": resource, "supportedInteraction": ["create", "update", "delete"] }],
        "canFilterBy": filters.iter().map(|f| json!({ "resource": resource, "filterParameter": f })).collect::<Vec<_>>(),
        "notificationShape": [{ "resource": resource }]
    });
    ("SubscriptionTopic", topic)
}

/// A rest-hook Subscription to `topic` at `endpoint`, with `content`, `filters` (parameter,
/// value) on `resource` and `headers` (name, value).
pub fn subscription(
    version: &str,
    topic: &str,
    endpoint: &str,
    content: &str,
    resource: &str,
    filters: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Value {
    if version == R5 {
        return json!({
            "resourceType": "Subscription",
            "status": "requested",
            "topic": topic,
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
            "endpoint": endpoint,
            "content": content,
            "contentType": "application/fhir+json",
            "filterBy": filters.iter().map(|(p, v)| json!({ "resourceType": resource, "filterParameter": p, "value": v })).collect::<Vec<_>>(),
            "parameter": headers.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect::<Vec<_>>()
        });
    }
    let mut sub = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{IG}backport-payload-content"), "valueCode": content }] }
        }
    });
    if !filters.is_empty() {
        let ext: Vec<Value> = filters
            .iter()
            .map(|(p, v)| json!({ "url": format!("{IG}backport-filter-criteria"), "valueString": format!("{resource}?{p}={v}") }))
            .collect();
        sub["_criteria"] = json!({ "extension": ext });
    }
    if !headers.is_empty() {
        sub["channel"]["header"] = headers.iter().map(|(n, v)| Value::String(format!("{n}: {v}"))).collect();
    }
    sub
}

/// A field of a status resource (R5/R4B `SubscriptionStatus` or R4 `Parameters`) as text:
/// `status`, `type`, `topic`, `events-since-subscription-start`, `subscription` (the reference).
pub fn field(status: &Value, name: &str) -> Option<String> {
    let text = match name {
        "status" => super::status::status_code(status).to_owned(),
        "type" => super::status::kind(status).to_owned(),
        "topic" => return super::status::topic(status),
        "events-since-subscription-start" => super::status::events_since_start(status),
        "subscription" => super::status::subscription_reference(status),
        other => panic!("no status field {other}"),
    };
    (!text.is_empty()).then_some(text)
}

/// The notification events of a status: (event number, focus reference).
pub fn events(status: &Value) -> Vec<(u64, Option<String>)> {
    super::status::events(status).into_iter().map(|e| (e.number, e.focus)).collect()
}

/// A websocket Subscription to `topic` with `headers`, in `version`'s shape.
pub fn websocket_subscription(version: &str, topic: &str, status: &str, headers: &[(&str, &str)]) -> Value {
    let mut sub = subscription(version, topic, "https://unused.example/", "id-only", "Task", &[], headers);
    sub["status"] = status.into();
    if version == R5 {
        sub["channelType"]["code"] = "websocket".into();
        sub.as_object_mut().unwrap().remove("endpoint");
    } else {
        sub["channel"]["type"] = "websocket".into();
        sub["channel"].as_object_mut().unwrap().remove("endpoint");
    }
    sub
}

/// The header values a stored Subscription shows (R5 `parameter[].value`, backport
/// `channel.header` after `": "`), in order.
pub fn header_values(sub: &Value) -> Vec<String> {
    if sub["parameter"].is_array() {
        return sub["parameter"].as_array().unwrap().iter().filter_map(|p| p["value"].as_str().map(str::to_owned)).collect();
    }
    sub["channel"]["header"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str()?.split_once(": ").map(|(_, v)| v.to_owned()))
        .collect()
}
