//! The R4/R4B `Subscription` with the Subscriptions Backport IG 1.1.0 profile
//! (`backport-subscription`), parsed into the same `SubscriptionSpec` as an R5 one.
//!
//! Where the R5 elements went:
//! - `topic` → `criteria` (required; the topic's canonical URL, optionally `|version`);
//! - `filterBy` → `backport-filter-criteria` extensions on `criteria` (`_criteria` in JSON),
//!   each a search-style string (syntax in the `criteria` submodule);
//! - `channelType` → `channel.type` (`rest-hook` or `websocket`; the `backport-channel-type`
//!   custom channel extension is refused);
//! - `endpoint` → `channel.endpoint`; `parameter` → `channel.header`, `Name: value` strings;
//! - `contentType` → `channel.payload`; `content` → the `backport-payload-content` extension on
//!   it (`_payload`);
//! - `heartbeatPeriod`, `timeout` → `backport-heartbeat-period`, `backport-timeout`
//!   (`valueUnsignedInt`); `maxCount` → `backport-max-count` (`valuePositiveInt`).
//!
//! Herald's choices where the IG leaves room:
//! - no `channel.payload`: no payload (R4's own meaning), i.e. content `empty`, delivered as
//!   `application/fhir+json`; a content extension without `channel.payload` is refused as
//!   ambiguous. `channel.payload` without the content extension: `id-only` (as R5's default),
//!   which `fill_defaults` writes into the stored resource;
//! - unknown extensions on `criteria`, `channel`, `channel.type` and `channel.payload` are
//!   refused, since each would change what the client gets (Inferno's test 6.01 sends a filter
//!   under a wrong URL and expects a refusal); so is any cross-version
//!   `http://hl7.org/fhir/<d>.<d>/StructureDefinition/extension-Subscription.*` extension,
//!   anywhere, and any `modifierExtension` on the resource or its channel;
//! - the R4 status codes only (`requested`, `active`, `error`, `off`); `reason` is required,
//!   as R4 makes it;
//! - R5 elements (`topic`, `channelType`, ...) in an R4 body are refused with a pointer to their
//!   R4 place, rather than stored and ignored.
//!
//! Herald's webhook-signing-secret extension on the resource works as in R5 (`secrets`).

use serde_json::{Map, Value};

use super::{rules, secrets, ChannelType, RequestedStatus, SubscriptionLimits, SubscriptionSpec};
use crate::fhir::instant::Millis;
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::version::FhirVersion;

mod channel;
mod criteria;

pub use criteria::parse_filter_criteria;

/// The profile a backport Subscription claims (`meta.profile`), advertised by the
/// CapabilityStatement.
pub const PROFILE_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
pub const FILTER_CRITERIA_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria";
pub const PAYLOAD_CONTENT_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
pub const HEARTBEAT_PERIOD_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period";
pub const TIMEOUT_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout";
pub const MAX_COUNT_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-max-count";
pub const CHANNEL_TYPE_URL: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type";

/// R5 elements a client may carry over by mistake, each with where R4 keeps it.
const R5_ELEMENTS: &[(&str, &str)] = &[
    ("topic", "criteria"),
    ("channelType", "channel.type"),
    ("endpoint", "channel.endpoint"),
    ("parameter", "channel.header ('Name: value' strings)"),
    ("contentType", "channel.payload"),
    ("content", "the backport-payload-content extension on channel.payload"),
    ("heartbeatPeriod", "the backport-heartbeat-period extension on channel"),
    ("timeout", "the backport-timeout extension on channel"),
    ("maxCount", "the backport-max-count extension on channel"),
    ("filterBy", "backport-filter-criteria extensions on criteria"),
];

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The extensions in `holder.extension` (an absent list is empty; a non-list is reported).
fn extensions<'a>(holder: Option<&'a Value>, path: &str, issues: &mut Vec<Issue>) -> &'a [Value] {
    match holder.and_then(|h| h.get("extension")) {
        None => &[],
        Some(Value::Array(list)) => list,
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, format!("{path}.extension"), "extension must be an array"));
            &[]
        }
    }
}

fn url_of(ext: &Value) -> &str {
    ext.get("url").and_then(Value::as_str).unwrap_or_default()
}

/// The one `value[x]` of an extension, as (key, value).
fn value_of(ext: &Value) -> Option<(&str, &Value)> {
    ext.as_object()?.iter().find(|(k, _)| k.starts_with("value")).map(|(k, v)| (k.as_str(), v))
}

fn unknown_extension(path: String, url: &str, on: &str, supported: &str) -> Issue {
    Issue::at(IssueType::NotSupported, path, format!("extension '{url}' on {on} is not supported by this server; supported: {supported}"))
}

/// Whether `url` is a cross-version extension for Subscription elements
/// (`http://hl7.org/fhir/5.0/StructureDefinition/extension-Subscription.topic` and the like).
pub fn is_cross_version_subscription_extension(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://hl7.org/fhir/") else { return false };
    let Some((version, rest)) = rest.split_once('/') else { return false };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let versioned = version.split_once('.').is_some_and(|(major, minor)| numeric(major) && numeric(minor));
    versioned && rest.starts_with("StructureDefinition/extension-Subscription.")
}

/// Reports every cross-version Subscription extension in `v`, at any depth.
fn cross_version(v: &Value, path: &str, issues: &mut Vec<Issue>) {
    match v {
        Value::Object(obj) => {
            for (key, child) in obj {
                let name = key.strip_prefix('_').unwrap_or(key);
                if let ("extension" | "modifierExtension", Value::Array(list)) = (key.as_str(), child) {
                    for (i, ext) in list.iter().enumerate() {
                        let url = url_of(ext);
                        if is_cross_version_subscription_extension(url) {
                            issues.push(Issue::at(
                                IssueType::NotSupported,
                                format!("{path}.{key}[{i}]"),
                                format!(
                                    "cross-version extension '{url}' is not supported; an R4/R4B Subscription uses the Backport IG \
                                     1.1.0 elements and extensions"
                                ),
                            ));
                        }
                    }
                }
                cross_version(child, &format!("{path}.{name}"), issues);
            }
        }
        Value::Array(list) => list.iter().enumerate().for_each(|(i, item)| cross_version(item, &format!("{path}[{i}]"), issues)),
        _ => {}
    }
}

fn status(sub: &Value, issues: &mut Vec<Issue>) -> RequestedStatus {
    match str_at(sub, "status") {
        Some(code @ ("requested" | "active" | "error" | "off")) => RequestedStatus::from_code(code).unwrap_or(RequestedStatus::Requested),
        Some(code) => {
            issues.push(Issue::at(
                IssueType::Value,
                "Subscription.status",
                format!("'{code}' is not an R4 subscription status (requested, active, error, off)"),
            ));
            RequestedStatus::Requested
        }
        None => {
            issues.push(Issue::at(IssueType::Required, "Subscription.status", "status is required (clients write 'requested')"));
            RequestedStatus::Requested
        }
    }
}

/// `criteria`: the topic canonical, an absolute URL (optionally `|version`).
fn topic(sub: &Value, issues: &mut Vec<Issue>) -> String {
    let path = "Subscription.criteria";
    match sub.get("criteria") {
        Some(Value::String(text)) => {
            let url = text.split('|').next().unwrap_or(text);
            if !url.is_empty() && !url.contains(char::is_whitespace) && url::Url::parse(url).is_ok() {
                return text.clone();
            }
            issues.push(Issue::at(
                IssueType::Value,
                path,
                format!(
                    "criteria '{text}' is not a topic canonical URL; with the Backport IG, criteria names the SubscriptionTopic \
                     (R4 query criteria such as 'Observation?code=...' are not supported)"
                ),
            ));
        }
        Some(_) => issues.push(Issue::at(IssueType::Structure, path, "criteria must be a string")),
        None => issues.push(Issue::at(IssueType::Required, path, "criteria (the SubscriptionTopic canonical URL) is required")),
    }
    String::new()
}

/// Parses and validates an R4 or R4B Subscription with the backport profile; `now` decides
/// whether `end` is already past.
pub fn parse(
    version: FhirVersion,
    id: &str,
    sub: &Value,
    limits: &SubscriptionLimits,
    now: Millis,
) -> Result<SubscriptionSpec, Vec<Issue>> {
    let mut issues = Vec::new();
    for (r5, r4) in R5_ELEMENTS {
        if sub.get(r5).is_some() {
            issues.push(Issue::at(
                IssueType::Structure,
                format!("Subscription.{r5}"),
                format!("'{r5}' is an R5 element; this server speaks FHIR {version}, where it is {r4} (Subscriptions Backport IG)"),
            ));
        }
    }
    cross_version(sub, "Subscription", &mut issues);
    let channel = match sub.get("channel") {
        Some(ch @ Value::Object(_)) => ch,
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, "Subscription.channel", "channel must be an object"));
            &Value::Null
        }
        None => {
            issues.push(Issue::at(IssueType::Required, "Subscription.channel", "channel is required"));
            &Value::Null
        }
    };
    for (holder, path) in [(sub, "Subscription"), (channel, "Subscription.channel")] {
        if holder.get("modifierExtension").is_some() {
            issues.push(Issue::at(
                IssueType::NotSupported,
                format!("{path}.modifierExtension"),
                "modifier extensions change the meaning of a Subscription; this server understands none",
            ));
        }
    }

    let requested_status = status(sub, &mut issues);
    if str_at(sub, "reason").is_none_or(|r| r.trim().is_empty()) {
        issues.push(Issue::at(IssueType::Required, "Subscription.reason", "reason is required in R4 (why the subscription exists)"));
    }
    let topic = topic(sub, &mut issues);
    let filters = criteria::filters(sub, &mut issues);

    let channel_type = channel::channel_type(channel, &mut issues);
    // As in R5, a websocket subscription needs no endpoint and any endpoint it has is ignored.
    let endpoint = match channel.get("endpoint").filter(|_| channel_type != Some(ChannelType::Websocket)) {
        Some(Value::String(raw)) => rules::endpoint(raw, "Subscription.channel.endpoint", &mut issues),
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, "Subscription.channel.endpoint", "channel.endpoint must be a URL (a string)"));
            None
        }
        None => {
            if channel_type == Some(ChannelType::RestHook) {
                issues.push(Issue::at(
                    IssueType::Required,
                    "Subscription.channel.endpoint",
                    "a rest-hook subscription needs channel.endpoint",
                ));
            }
            None
        }
    };
    let headers = channel::headers(channel, &mut issues);
    let (content_type, content) = channel::payload(channel, version, &mut issues);
    let (heartbeat_period_secs, timeout_secs, max_count) = channel::channel_extensions(channel, limits, &mut issues);
    let signing_keys = secrets::signing_keys(sub, &mut issues);
    let end = str_at(sub, "end").and_then(|text| rules::end(text, "Subscription.end", now, &mut issues));

    match (issues.is_empty(), channel_type) {
        (true, Some(channel)) => Ok(SubscriptionSpec {
            id: id.to_string(),
            version,
            topic,
            requested_status,
            channel,
            endpoint,
            headers,
            signing_keys,
            heartbeat_period_secs,
            timeout_secs,
            content_type,
            content,
            max_count,
            end,
            filters,
            identifier: None,
        }),
        _ => Err(issues),
    }
}

/// Writes the content level Herald applies into a stored backport Subscription that has a
/// `channel.payload` without one (`id-only`); nothing else changes.
pub fn fill_defaults(resource: &mut Value, spec: &SubscriptionSpec) {
    let Some(channel) = resource.get_mut("channel").and_then(Value::as_object_mut) else { return };
    if !channel.contains_key("payload") {
        return;
    }
    let holder = channel.entry("_payload").or_insert_with(|| Value::Object(Map::new()));
    let Some(holder) = holder.as_object_mut() else { return };
    let list = holder.entry("extension").or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else { return };
    if !list.iter().any(|e| url_of(e) == PAYLOAD_CONTENT_URL) {
        list.push(serde_json::json!({ "url": PAYLOAD_CONTENT_URL, "valueCode": spec.content.code() }));
    }
}

#[cfg(test)]
mod tests;
