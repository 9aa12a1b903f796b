//! `SubscriptionSpec`: a validated R5 `Subscription`, everything delivery needs in typed form.
//!
//! This file checks what can be checked from the resource alone (channel, endpoint syntax,
//! content, headers, periods, `end`). Whether the topic exists and the filters are allowed by
//! it is the registry's job; whether the endpoint's address is allowed is the channel guard's.
//!
//! Secrets (header values, webhook signing secrets) are parsed, redacted and kept across
//! updates by `secrets`.
//!
//! Defaults Herald applies and echoes back in the stored resource: `content` = `id-only`
//! (the R5 security guidance's usual recommendation), `contentType` = `application/fhir+json`.

use serde_json::Value;
use url::Url;

use super::instant::{parse_instant, Millis};
use super::outcome::{Issue, IssueType};
use crate::secret::Secret;

pub mod secrets;

pub use secrets::SigningKey;

pub const CHANNEL_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/subscription-channel-type";

/// Channels Herald delivers on today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelType {
    RestHook,
    /// R5 websocket: no endpoint; clients bind sockets with `$get-ws-binding-token` tokens.
    Websocket,
}

impl ChannelType {
    pub fn code(self) -> &'static str {
        match self {
            ChannelType::RestHook => "rest-hook",
            ChannelType::Websocket => "websocket",
        }
    }
}

/// `subscription-payload-content`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentLevel {
    Empty,
    IdOnly,
    FullResource,
}

impl ContentLevel {
    pub fn code(self) -> &'static str {
        match self {
            ContentLevel::Empty => "empty",
            ContentLevel::IdOnly => "id-only",
            ContentLevel::FullResource => "full-resource",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "empty" => Some(ContentLevel::Empty),
            "id-only" => Some(ContentLevel::IdOnly),
            "full-resource" => Some(ContentLevel::FullResource),
            _ => None,
        }
    }
}

/// The `status` a client wrote; the server decides what it becomes (see `registry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedStatus {
    Requested,
    Active,
    Error,
    Off,
    EnteredInError,
}

impl RequestedStatus {
    fn from_code(code: &str) -> Option<Self> {
        match code {
            "requested" => Some(RequestedStatus::Requested),
            "active" => Some(RequestedStatus::Active),
            "error" => Some(RequestedStatus::Error),
            "off" => Some(RequestedStatus::Off),
            "entered-in-error" => Some(RequestedStatus::EnteredInError),
            _ => None,
        }
    }
}

/// One `filterBy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: Option<String>,
    pub parameter: String,
    pub comparator: Option<String>,
    pub modifier: Option<String>,
    pub value: String,
}

/// One `parameter`, sent as an HTTP header on rest-hook. The value is a secret: it often
/// carries the receiver's bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelHeader {
    pub name: String,
    pub value: Secret<String>,
}

/// Bounds the operator sets on what a Subscription may ask for.
#[derive(Clone, Debug)]
pub struct SubscriptionLimits {
    pub max_timeout_secs: u64,
    pub max_heartbeat_secs: u64,
    pub max_count: u64,
}

/// A validated Subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    pub id: String,
    /// `topic` as written: a canonical, optionally `url|version`.
    pub topic: String,
    pub requested_status: RequestedStatus,
    pub channel: ChannelType,
    /// The rest-hook endpoint; `None` for websocket, which needs none (a websocket
    /// subscription's `endpoint`, if any, is ignored).
    pub endpoint: Option<Url>,
    pub headers: Vec<ChannelHeader>,
    /// Standard Webhooks keys from the webhook-signing-secret extension, in order; every one
    /// signs each rest-hook POST (rotation). Empty: the operator's default keys, if any.
    pub signing_keys: Vec<SigningKey>,
    pub heartbeat_period_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub content_type: String,
    pub content: ContentLevel,
    /// Events per notification bundle; 1 when `maxCount` is absent.
    pub max_count: u64,
    pub end: Option<Millis>,
    pub filters: Vec<Filter>,
    /// First `identifier`, echoed in `SubscriptionStatus.subscription.identifier` (COW).
    pub identifier: Option<Value>,
}

impl SubscriptionSpec {
    /// The canonical url part of `topic` (before any `|version`).
    pub fn topic_url(&self) -> &str {
        self.topic.split('|').next().unwrap_or(&self.topic)
    }

    pub fn topic_version(&self) -> Option<&str> {
        self.topic.split_once('|').map(|(_, v)| v)
    }
}

/// Headers a subscription may not set: they belong to the HTTP exchange itself, or to the
/// Standard Webhooks signature Herald adds.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn seconds_at(v: &Value, key: &str, max: u64, min: u64, issues: &mut Vec<Issue>) -> Option<u64> {
    let raw = v.get(key)?;
    match raw.as_u64() {
        Some(n) if n >= min && n <= max => Some(n),
        Some(n) => {
            issues.push(Issue::at(
                IssueType::BusinessRule,
                format!("Subscription.{key}"),
                format!("{key} {n} is outside what this server allows ({min}..={max})"),
            ));
            None
        }
        None => {
            issues.push(Issue::at(IssueType::Structure, format!("Subscription.{key}"), format!("{key} must be a non-negative integer")));
            None
        }
    }
}

fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses and validates a Subscription; `now` decides whether `end` is already past.
pub fn parse_subscription(id: &str, sub: &Value, limits: &SubscriptionLimits, now: Millis) -> Result<SubscriptionSpec, Vec<Issue>> {
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
        Some(raw) => match Url::parse(raw) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                issues.push(Issue::at(
                    IssueType::Value,
                    "Subscription.endpoint",
                    format!("rest-hook endpoints must be http or https, not '{}'", u.scheme()),
                ));
                None
            }
            Ok(u) if u.host_str().is_none() => {
                issues.push(Issue::at(IssueType::Value, "Subscription.endpoint", "the endpoint has no host"));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                issues.push(Issue::at(
                    IssueType::Value,
                    "Subscription.endpoint",
                    "credentials in the endpoint URL are refused; send them in a parameter (header) instead",
                ));
                None
            }
            Ok(u) if raw.len() > 2048 => {
                let _ = u;
                issues.push(Issue::at(IssueType::Value, "Subscription.endpoint", "the endpoint URL is longer than 2048 characters"));
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                issues.push(Issue::at(IssueType::Value, "Subscription.endpoint", format!("not a valid URL: {e}")));
                None
            }
        },
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
                    let lower = name.to_ascii_lowercase();
                    if !is_header_token(name) {
                        issues.push(Issue::at(
                            IssueType::Value,
                            format!("{path}.name"),
                            format!("'{name}' is not a valid HTTP header name"),
                        ));
                    } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                        issues.push(Issue::at(
                            IssueType::BusinessRule,
                            format!("{path}.name"),
                            format!("header '{name}' is set by the server and cannot be overridden"),
                        ));
                    } else if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) || value.len() > 8192 {
                        // The value itself is never echoed: it may be a credential.
                        issues.push(Issue::at(
                            IssueType::Value,
                            format!("{path}.value"),
                            "header value contains line breaks or is longer than 8192 bytes",
                        ));
                    } else {
                        headers.push(ChannelHeader { name: name.to_string(), value: Secret::new(value.to_string()) });
                    }
                }
                _ => issues.push(Issue::at(IssueType::Required, path, "each parameter needs a string name and value")),
            }
        }
    }

    let signing_keys = secrets::signing_keys(sub, &mut issues);

    let heartbeat_period_secs = seconds_at(sub, "heartbeatPeriod", limits.max_heartbeat_secs, 1, &mut issues);
    let timeout_secs = seconds_at(sub, "timeout", limits.max_timeout_secs, 1, &mut issues);

    let max_count = match sub.get("maxCount") {
        None => 1,
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
        None => "application/fhir+json".to_string(),
        Some(ct) => {
            let mut parts = ct.split(';').map(str::trim);
            let mime = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut ok = matches!(mime.as_str(), "application/fhir+json" | "application/json");
            if !ok {
                issues.push(Issue::at(
                    IssueType::NotSupported,
                    "Subscription.contentType",
                    format!("content type '{ct}' is not supported; use application/fhir+json"),
                ));
            }
            for param in parts {
                if let Some(version) = param.strip_prefix("fhirVersion=") {
                    if !version.starts_with("5.0") {
                        ok = false;
                        issues.push(Issue::at(
                            IssueType::NotSupported,
                            "Subscription.contentType",
                            format!("fhirVersion={version} notifications are not produced by this server (R5 only)"),
                        ));
                    }
                }
            }
            if ok {
                ct.to_string()
            } else {
                String::new()
            }
        }
    };

    let content = match str_at(sub, "content") {
        None => ContentLevel::IdOnly,
        Some(code) => ContentLevel::from_code(code).unwrap_or_else(|| {
            issues.push(Issue::at(IssueType::Value, "Subscription.content", format!("'{code}' is not empty, id-only or full-resource")));
            ContentLevel::IdOnly
        }),
    };

    let end = match str_at(sub, "end") {
        None => None,
        Some(text) => match parse_instant(text) {
            Some(ms) if ms <= now => {
                issues.push(Issue::at(IssueType::BusinessRule, "Subscription.end", format!("end {text} is already in the past")));
                None
            }
            Some(ms) => Some(ms),
            None => {
                issues.push(Issue::at(IssueType::Value, "Subscription.end", format!("'{text}' is not an instant (with time and zone)")));
                None
            }
        },
    };

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
                resource_type: str_at(f, "resourceType").map(|t| super::types::type_from_uri(t).to_string()),
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

#[cfg(test)]
mod tests;
