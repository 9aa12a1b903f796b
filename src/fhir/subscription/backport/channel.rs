//! The backport `channel`: `type` (with the refused custom-channel extension), `header`
//! strings, `payload` with its content extension, and the heartbeat, timeout and max-count
//! extensions with their exact value types. See the parent module for the rules' reasons.

use serde_json::Value;

use super::{extensions, unknown_extension, url_of, value_of};
use super::{CHANNEL_TYPE_URL, HEARTBEAT_PERIOD_URL, MAX_COUNT_URL, PAYLOAD_CONTENT_URL, TIMEOUT_URL};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::subscription::{rules, ChannelHeader, ChannelType, ContentLevel, SubscriptionLimits};
use crate::fhir::subscription::{DEFAULT_CONTENT_TYPE, SUPPORTED_MIME};
use crate::fhir::version::FhirVersion;

pub(super) fn channel_type(channel: &Value, issues: &mut Vec<Issue>) -> Option<ChannelType> {
    let path = "Subscription.channel.type";
    for (i, ext) in extensions(channel.get("_type"), path, issues).iter().enumerate() {
        let at = format!("{path}.extension[{i}]");
        match url_of(ext) {
            CHANNEL_TYPE_URL => issues.push(Issue::at(
                IssueType::NotSupported,
                at,
                "custom channel types (backport-channel-type) are not supported by this server; use rest-hook or websocket",
            )),
            url => issues.push(unknown_extension(at, url, path, "none")),
        }
    }
    match channel.get("type") {
        Some(Value::String(code)) => match code.as_str() {
            "rest-hook" => return Some(ChannelType::RestHook),
            "websocket" => return Some(ChannelType::Websocket),
            other @ ("email" | "sms" | "message") => issues.push(Issue::at(
                IssueType::NotSupported,
                path,
                format!("channel '{other}' is not supported by this server; use rest-hook or websocket"),
            )),
            other => issues.push(Issue::at(
                IssueType::NotSupported,
                path,
                format!("unknown channel type '{other}'; supported: rest-hook and websocket"),
            )),
        },
        Some(_) => issues.push(Issue::at(IssueType::Structure, path, "channel.type must be a code (a string)")),
        None => issues.push(Issue::at(IssueType::Required, path, "channel.type is required")),
    }
    None
}

/// `channel.header`: `Name: value` strings (split at the first colon; the value's surrounding
/// blanks are not part of it).
pub(super) fn headers(channel: &Value, issues: &mut Vec<Issue>) -> Vec<ChannelHeader> {
    let mut out = Vec::new();
    let list = match channel.get("header") {
        None => return out,
        Some(Value::Array(list)) => list,
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, "Subscription.channel.header", "channel.header must be an array of strings"));
            return out;
        }
    };
    for (i, h) in list.iter().enumerate() {
        let path = format!("Subscription.channel.header[{i}]");
        match h.as_str().and_then(|s| s.split_once(':')) {
            // Not echoed either: a string without a proper name may be a credential with a colon.
            Some((name, _)) if !rules::is_header_token(name) => issues.push(Issue::at(
                IssueType::Value,
                path,
                "the part before the first colon is not a valid HTTP header name (each header is a string 'Name: value')",
            )),
            Some((name, value)) => out.extend(rules::header(name, value.trim_matches([' ', '\t']), &path, &path, issues)),
            // The string is not echoed: without a name it may be the credential itself.
            None => {
                issues.push(Issue::at(IssueType::Value, path, "each header is a string 'Name: value' (a header name, a colon, the value)"))
            }
        }
    }
    out
}

/// `channel.payload` and its content extension: (MIME type, content level).
pub(super) fn payload(channel: &Value, version: FhirVersion, issues: &mut Vec<Issue>) -> (String, ContentLevel) {
    let path = "Subscription.channel.payload";
    let (mut content, mut seen) = (None, false);
    for (i, ext) in extensions(channel.get("_payload"), path, issues).iter().enumerate() {
        let at = format!("{path}.extension[{i}]");
        let url = url_of(ext);
        let repeated = url == PAYLOAD_CONTENT_URL && std::mem::replace(&mut seen, true);
        match (url, value_of(ext)) {
            (PAYLOAD_CONTENT_URL, _) if repeated => {
                issues.push(Issue::at(IssueType::Structure, at, "backport-payload-content may appear once"));
            }
            (PAYLOAD_CONTENT_URL, Some(("valueCode", Value::String(code)))) => match ContentLevel::from_code(code) {
                Some(level) => content = Some(level),
                None => issues.push(Issue::at(
                    IssueType::Value,
                    format!("{at}.valueCode"),
                    format!("'{code}' is not empty, id-only or full-resource"),
                )),
            },
            (PAYLOAD_CONTENT_URL, _) => {
                issues.push(Issue::at(
                    IssueType::Structure,
                    at,
                    "backport-payload-content takes a valueCode (empty, id-only, full-resource)",
                ));
            }
            (url, _) => issues.push(unknown_extension(at, url, path, PAYLOAD_CONTENT_URL)),
        }
    }
    match channel.get("payload") {
        None if seen => {
            issues.push(Issue::at(
                IssueType::Required,
                path,
                format!("a content level needs channel.payload, the MIME type to send it in ({})", SUPPORTED_MIME.join(" or ")),
            ));
            (DEFAULT_CONTENT_TYPE.to_string(), ContentLevel::Empty)
        }
        None => (DEFAULT_CONTENT_TYPE.to_string(), ContentLevel::Empty),
        Some(Value::String(ct)) => {
            (rules::content_type(ct, path, version, issues).unwrap_or_default(), content.unwrap_or(ContentLevel::IdOnly))
        }
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, path, "channel.payload must be a MIME type (a string)"));
            (String::new(), ContentLevel::IdOnly)
        }
    }
}

/// The channel extensions: (heartbeat period, timeout, max count).
pub(super) fn channel_extensions(channel: &Value, limits: &SubscriptionLimits, issues: &mut Vec<Issue>) -> (Option<u64>, Option<u64>, u64) {
    let path = "Subscription.channel";
    let (mut heartbeat, mut timeout, mut max_count) = (None, None, None);
    let supported = format!("{HEARTBEAT_PERIOD_URL}, {TIMEOUT_URL}, {MAX_COUNT_URL}");
    for (i, ext) in extensions(Some(channel), path, issues).iter().enumerate() {
        let at = format!("{path}.extension[{i}]");
        let url = url_of(ext);
        let (slot, value_type, what, max) = match url {
            HEARTBEAT_PERIOD_URL => (&mut heartbeat, "valueUnsignedInt", "heartbeat period", limits.max_heartbeat_secs),
            TIMEOUT_URL => (&mut timeout, "valueUnsignedInt", "timeout", limits.max_timeout_secs),
            MAX_COUNT_URL => (&mut max_count, "valuePositiveInt", "max count", limits.max_count),
            _ => {
                issues.push(unknown_extension(at, url, path, &supported));
                continue;
            }
        };
        if slot.is_some() {
            issues.push(Issue::at(IssueType::Structure, at, format!("the {what} extension may appear once")));
            continue;
        }
        match value_of(ext) {
            Some((key, raw)) if key == value_type => *slot = Some(rules::bounded(raw, &format!("{at}.{key}"), what, (1, max), issues)),
            _ => issues.push(Issue::at(IssueType::Structure, at, format!("the {what} extension takes a {value_type}"))),
        }
    }
    (heartbeat.flatten(), timeout.flatten(), max_count.flatten().unwrap_or(limits.default_max_count))
}
