//! Topics as each FHIR version stores them, and the R5-shaped view Herald reads them through.
//!
//! | version | stored as | a topic when | converted by |
//! |---|---|---|---|
//! | R4 | `Basic` | `code` is `SubscriptionTopic` (fhir-types) | `basic` |
//! | R4B | `SubscriptionTopic` (R4B shape) | always | `r4b` |
//! | R5 | `SubscriptionTopic` | always | (none) |
//!
//! Every stage that treats stored resources as topics (the committer's registry updates, the
//! rebuild at start, built-in installation, the CapabilityStatement, the dashboard) asks here,
//! so that the rule "which stored resource is a topic, and what does it say" is written once.

use serde_json::Value;

use super::{basic, parse_topic, r4b, TopicSpec};
use crate::fhir::{FhirVersion, Issue};

/// The resource type `version` stores topics as.
pub fn topic_type(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::R4 => "Basic",
        FhirVersion::R4B | FhirVersion::R5 => "SubscriptionTopic",
    }
}

/// Whether a resource of type `ty` is a topic in `version` (`resource` is its content; for
/// R4 a `Basic` is a topic only when its code says so).
pub fn is_topic(version: FhirVersion, ty: &str, resource: &Value) -> bool {
    ty == topic_type(version) && (version != FhirVersion::R4 || basic::is_topic(resource))
}

/// The R5-shaped JSON of a stored topic; `None` when the resource is not a topic.
pub fn to_r5(version: FhirVersion, ty: &str, resource: &Value) -> Option<Result<Value, Vec<Issue>>> {
    if !is_topic(version, ty, resource) {
        return None;
    }
    Some(match version {
        FhirVersion::R4 => basic::to_r5(resource),
        FhirVersion::R4B => r4b::to_r5(resource),
        FhirVersion::R5 => Ok(resource.clone()),
    })
}

/// The form `version` stores an R5-shaped topic in.
pub fn from_r5(version: FhirVersion, topic: &Value) -> Result<Value, Vec<Issue>> {
    match version {
        FhirVersion::R4 => basic::from_r5(topic),
        FhirVersion::R4B => r4b::from_r5(topic),
        FhirVersion::R5 => Ok(topic.clone()),
    }
}

/// Converts and validates a stored topic; `None` when the resource is not a topic.
pub fn parse_stored(version: FhirVersion, ty: &str, id: &str, resource: &Value) -> Option<Result<TopicSpec, Vec<Issue>>> {
    Some(to_r5(version, ty, resource)?.and_then(|r5| parse_topic(id, &r5)))
}

/// A stored topic's canonical `url`, whatever its form; `None` when it is not a topic or
/// has no url.
pub fn canonical_url(version: FhirVersion, ty: &str, resource: &Value) -> Option<String> {
    let r5 = to_r5(version, ty, resource)?.ok()?;
    r5.get("url").and_then(Value::as_str).map(str::to_owned)
}
