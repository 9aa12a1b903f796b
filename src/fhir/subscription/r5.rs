//! The R5 `Subscription` shape: `topic`, `channelType`, `endpoint`, `parameter` (headers),
//! `content`/`contentType`, `heartbeatPeriod`, `timeout`, `maxCount`, `filterBy`.

use serde_json::Value;

use super::{
    rules, secrets, ChannelType, ContentLevel, Filter, FilterSource, RequestedStatus, SubscriptionLimits, SubscriptionSpec, CHANNEL_SYSTEM,
    DEFAULT_CONTENT_TYPE,
};
use crate::fhir::instant::Millis;
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::version::FhirVersion;

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Parses and validates an R5 Subscription; `now` decides whether `end` is already past.
pub fn parse(id: &str, sub: &Value, limits: &SubscriptionLimits, now: Millis) -> Result<SubscriptionSpec, Vec<Issue>> {
    let mut issues = Vec::new();

    let requested_status = match str_at(sub, "status") {
        Some(code) => RequestedStatus::from_code(code).unwrap_or_else(|| {
            issues.push(Issue::at(IssueType::Value, "Subscription.status", format!("'{code}' is not a subscription status")));
            RequestedStatus::Requested
        }),
        None => {
            issues.push(Issue::at(IssueType::Required, "Subscription.status", "status is required (clients write 'requested')"));
            RequestedStatus::Requested
        }
    };

    let topic = match str_at(sub, "topic") {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => {
            issues.push(Issue::at(IssueType::Required, "Subscription.topic", "topic (a SubscriptionTopic canonical url) is required"));
            String::new()
        }
    };

    let channel = match sub.get("channelType") {
        Some(coding) => {
            let system = str_at(coding, "system");
            let code = str_at(coding, "code");
            match (system, code) {
                (Some(CHANNEL_SYSTEM) | None, Some("rest-hook")) => Some(ChannelType::RestHook),
                (Some(CHANNEL_SYSTEM) | None, Some("websocket")) => Some(ChannelType::Websocket),
                (Some(CHANNEL_SYSTEM) | None, Some(other @ ("email" | "message"))) => {
                    issues.push(Issue::at(
                        IssueType::NotSupported,
                        "Subscription.channelType",
                        format!("channel '{other}' is not supported by this server yet; use rest-hook or websocket"),
                    ));
                    None
                }
                _ => {
                    issues.push(Issue::at(
                        IssueType::NotSupported,
                        "Subscription.channelType",
                        format!(
                            "unknown channel type {}|{}; supported: {CHANNEL_SYSTEM}|rest-hook and websocket",
                            system.unwrap_or(""),
                            code.unwrap_or("")
                        ),
                    ));
                    None
                }
            }
        }
        None => {
            issues.push(Issue::at(IssueType::Required, "Subscription.channelType", "channelType is required"));
            None
        }
    };

    // R5: a websocket subscription needs no endpoint (delivery goes to bound sockets).
    let endpoint = match str_at(sub, "endpoint").filter(|_| channel != Some(ChannelType::Websocket)) {
        Some(raw) => rules::endpoint(raw, "Subscription.endpoint", &mut issues),
        None => {
            if channel == Some(ChannelType::RestHook) {
                issues.push(Issue::at(IssueType::Required, "Subscription.endpoint", "a rest-hook subscription needs an endpoint"));
            }
            None
        }
    };

    let mut headers = Vec::new();
    if sub.get("header").is_some() {
        issues.push(Issue::at(
            IssueType::Structure,
            "Subscription.header",
            "'header' is from R5 ballots; R5 uses 'parameter' ({name, value}) for rest-hook headers",
        ));
    }
    if let Some(params) = sub.get("parameter") {
        let list = params.as_array().map(Vec::as_slice).unwrap_or(&[]);
        if !params.is_array() {
            issues.push(Issue::at(IssueType::Structure, "Subscription.parameter", "parameter must be an array"));
        }
        for (i, p) in list.iter().enumerate() {
            let path = format!("Subscription.parameter[{i}]");
            match (str_at(p, "name"), str_at(p, "value")) {
                (Some(name), Some(value)) => {
                    let (name_path, value_path) = (format!("{path}.name"), format!("{path}.value"));
                    headers.extend(rules::header(name, value, &name_path, &value_path, &mut issues));
                }
                _ => issues.push(Issue::at(IssueType::Required, path, "each parameter needs a string name and value")),
            }
        }
    }

    let signing_keys = secrets::signing_keys(sub, &mut issues);

    let seconds = |key: &str, max: u64, issues: &mut Vec<Issue>| {
        sub.get(key).and_then(|raw| rules::bounded(raw, &format!("Subscription.{key}"), key, (1, max), issues))
    };
    let heartbeat_period_secs = seconds("heartbeatPeriod", limits.max_heartbeat_secs, &mut issues);
    let timeout_secs = seconds("timeout", limits.max_timeout_secs, &mut issues);

    let max_count = match sub.get("maxCount") {
        None => limits.default_max_count,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= limits.max_count => n,
            _ => {
                issues.push(Issue::at(
                    IssueType::BusinessRule,
                    "Subscription.maxCount",
                    format!("maxCount must be a positive integer no greater than {}", limits.max_count),
                ));
                1
            }
        },
    };

    let content_type = match str_at(sub, "contentType") {
        None => DEFAULT_CONTENT_TYPE.to_string(),
        Some(ct) => rules::content_type(ct, "Subscription.contentType", FhirVersion::R5, &mut issues).unwrap_or_default(),
    };

    let content = match str_at(sub, "content") {
        None => ContentLevel::IdOnly,
        Some(code) => ContentLevel::from_code(code).unwrap_or_else(|| {
            issues.push(Issue::at(IssueType::Value, "Subscription.content", format!("'{code}' is not empty, id-only or full-resource")));
            ContentLevel::IdOnly
        }),
    };

    let end = str_at(sub, "end").and_then(|text| rules::end(text, "Subscription.end", now, &mut issues));

    let mut filters = Vec::new();
    if let Some(list) = sub.get("filterBy").and_then(Value::as_array) {
        for (i, f) in list.iter().enumerate() {
            let path = format!("Subscription.filterBy[{i}]");
            let (Some(parameter), Some(value)) = (str_at(f, "filterParameter"), str_at(f, "value")) else {
                issues.push(Issue::at(IssueType::Required, path, "each filter needs filterParameter and value"));
                continue;
            };
            let comparator = str_at(f, "comparator").map(str::to_string);
            let modifier = str_at(f, "modifier").map(str::to_string);
            if comparator.is_some() && modifier.is_some() {
                issues.push(Issue::at(IssueType::Invalid, path, "a filter may have a comparator or a modifier, not both (scr-1)"));
                continue;
            }
            filters.push(Filter {
                source: FilterSource::FilterBy(i),
                resource_type: str_at(f, "resourceType").map(|t| crate::fhir::types::type_from_uri(t).to_string()),
                parameter: parameter.to_string(),
                comparator,
                modifier,
                value: value.to_string(),
            });
        }
    }

    let identifier = sub.get("identifier").and_then(Value::as_array).and_then(|a| a.first()).cloned();

    let endpoint_ok = endpoint.is_some() || channel == Some(ChannelType::Websocket);
    match (issues.is_empty() && endpoint_ok, channel) {
        (true, Some(channel)) => Ok(SubscriptionSpec {
            id: id.to_string(),
            version: FhirVersion::R5,
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
            identifier,
        }),
        _ => Err(issues),
    }
}
