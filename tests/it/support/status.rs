//! Reading a status resource in any FHIR version: an R5/R4B `SubscriptionStatus` or an R4
//! `backport-subscription-status-r4` `Parameters`. Receivers, websocket clients and `$status`
//! polling read notifications through these, so the same test steps serve every version.

use serde_json::Value;

/// An event as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub number: u64,
    pub focus: Option<String>,
    pub context: Vec<String>,
    /// Carries Herald's withheld mark.
    pub withheld: bool,
}

const WITHHELD_URL: &str = "http://herald.dev/fhir/StructureDefinition/withheld";

fn is_r4(status: &Value) -> bool {
    status["resourceType"] == "Parameters"
}

/// The R4 parameters named `name`.
pub fn params<'a>(status: &'a Value, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    status["parameter"].as_array().into_iter().flatten().filter(move |p| p["name"] == name)
}

fn param<'a>(status: &'a Value, name: &'a str) -> &'a Value {
    params(status, name).next().unwrap_or(&Value::Null)
}

fn reference(v: &Value) -> String {
    v["reference"].as_str().unwrap_or_default().to_owned()
}

/// `type`: handshake, heartbeat, event-notification, query-status, query-event.
pub fn kind(status: &Value) -> &str {
    if is_r4(status) {
        return param(status, "type")["valueCode"].as_str().unwrap_or("");
    }
    status["type"].as_str().unwrap_or("")
}

/// The subscription's `status` code.
pub fn status_code(status: &Value) -> &str {
    if is_r4(status) {
        return param(status, "status")["valueCode"].as_str().unwrap_or("");
    }
    status["status"].as_str().unwrap_or("")
}

/// The subscription reference.
pub fn subscription_reference(status: &Value) -> String {
    if is_r4(status) {
        return reference(&param(status, "subscription")["valueReference"]);
    }
    reference(&status["subscription"])
}

/// The subscription's id: the reference's last segment, as Inferno's listener reads it.
pub fn subscription_id(status: &Value) -> String {
    subscription_reference(status).rsplit('/').next().unwrap_or("").to_string()
}

/// `topic`, when present.
pub fn topic(status: &Value) -> Option<String> {
    let topic = if is_r4(status) { &param(status, "topic")["valueCanonical"] } else { &status["topic"] };
    topic.as_str().map(str::to_owned)
}

/// `eventsSinceSubscriptionStart`.
pub fn events_since_start(status: &Value) -> String {
    let count = if is_r4(status) {
        &param(status, "events-since-subscription-start")["valueString"]
    } else {
        &status["eventsSinceSubscriptionStart"]
    };
    count.as_str().unwrap_or_default().to_owned()
}

/// The first error's code and text.
pub fn error(status: &Value) -> Option<(String, String)> {
    let error = if is_r4(status) { &param(status, "error")["valueCodeableConcept"] } else { &status["error"][0] };
    let code = error["coding"][0]["code"].as_str()?;
    Some((code.to_owned(), error["text"].as_str().unwrap_or_default().to_owned()))
}

/// The events listed, in order.
pub fn events(status: &Value) -> Vec<Listed> {
    let number = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    if is_r4(status) {
        return params(status, "notification-event")
            .map(|e| {
                let parts = e["part"].as_array().cloned().unwrap_or_default();
                let part = |name: &str| parts.iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null);
                Listed {
                    number: number(&part("event-number")["valueString"]),
                    focus: parts.iter().find(|p| p["name"] == "focus").map(|p| reference(&p["valueReference"])),
                    context: parts.iter().filter(|p| p["name"] == "additional-context").map(|p| reference(&p["valueReference"])).collect(),
                    withheld: e["extension"][0]["url"] == WITHHELD_URL,
                }
            })
            .collect();
    }
    status["notificationEvent"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Listed {
            number: number(&e["eventNumber"]),
            focus: e.get("focus").map(reference),
            context: e["additionalContext"].as_array().into_iter().flatten().map(reference).collect(),
            withheld: e["extension"][0]["url"] == WITHHELD_URL,
        })
        .collect()
}

/// The event numbers listed, in order.
pub fn event_numbers(status: &Value) -> Vec<u64> {
    events(status).iter().map(|e| e.number).collect()
}
