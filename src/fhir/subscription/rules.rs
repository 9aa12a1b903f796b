//! The checks an R5 Subscription and a backport (R4/R4B) one share: endpoint syntax, header
//! names and values, the payload MIME type, bounded periods and counts, and `end`. Each check
//! reports at the element path its caller gives, since the same rule sits at different places
//! in the two shapes (`Subscription.endpoint` in R5, `Subscription.channel.endpoint` in R4).
//!
//! No message here contains a header value: it may be a credential.

use url::Url;

use super::ChannelHeader;
use crate::fhir::instant::{parse_instant, Millis};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::version::FhirVersion;
use crate::secret::Secret;

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

/// Longest header value accepted, in bytes.
const MAX_HEADER_VALUE: usize = 8192;

/// Longest endpoint URL accepted, in characters.
const MAX_ENDPOINT: usize = 2048;

/// The payload MIME types Herald renders notifications in.
pub const SUPPORTED_MIME: [&str; 2] = ["application/fhir+json", "application/json"];

pub(super) fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A rest-hook endpoint: an absolute http(s) URL with a host, no credentials, at most 2048
/// characters.
pub(super) fn endpoint(raw: &str, path: &str, issues: &mut Vec<Issue>) -> Option<Url> {
    let refuse = |issues: &mut Vec<Issue>, why: String| {
        issues.push(Issue::at(IssueType::Value, path, why));
        None
    };
    match Url::parse(raw) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            refuse(issues, format!("rest-hook endpoints must be http or https, not '{}'", u.scheme()))
        }
        Ok(u) if u.host_str().is_none() => refuse(issues, "the endpoint has no host".into()),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            refuse(issues, "credentials in the endpoint URL are refused; send them in a header instead".into())
        }
        Ok(_) if raw.len() > MAX_ENDPOINT => refuse(issues, format!("the endpoint URL is longer than {MAX_ENDPOINT} characters")),
        Ok(u) => Some(u),
        Err(e) => refuse(issues, format!("not a valid URL: {e}")),
    }
}

/// One header Herald sends on each rest-hook POST. `name_path` and `value_path` locate the two
/// parts (the same element in R4, where a header is one `Name: value` string).
pub(super) fn header(name: &str, value: &str, name_path: &str, value_path: &str, issues: &mut Vec<Issue>) -> Option<ChannelHeader> {
    let lower = name.to_ascii_lowercase();
    if !is_header_token(name) {
        issues.push(Issue::at(IssueType::Value, name_path, format!("'{name}' is not a valid HTTP header name")));
    } else if RESERVED_HEADERS.contains(&lower.as_str()) {
        issues.push(Issue::at(
            IssueType::BusinessRule,
            name_path,
            format!("header '{name}' is set by the server and cannot be overridden"),
        ));
    } else if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) || value.len() > MAX_HEADER_VALUE {
        // The value itself is never echoed: it may be a credential.
        issues.push(Issue::at(
            IssueType::Value,
            value_path,
            format!("header value contains line breaks or is longer than {MAX_HEADER_VALUE} bytes"),
        ));
    } else {
        return Some(ChannelHeader { name: name.to_string(), value: Secret::new(value.to_string()) });
    }
    None
}

/// The `major.minor` a `fhirVersion` MIME parameter names for `version`.
fn mime_version(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::R4 => "4.0",
        FhirVersion::R4B => "4.3",
        FhirVersion::R5 => "5.0",
    }
}

/// A payload MIME type: `application/fhir+json` or `application/json`, with parameters; a
/// `fhirVersion` parameter must name `version`. Returns the type as written, or `None` after
/// reporting why not.
pub(super) fn content_type(ct: &str, path: &str, version: FhirVersion, issues: &mut Vec<Issue>) -> Option<String> {
    let mut parts = ct.split(';').map(str::trim);
    let mime = parts.next().unwrap_or("").to_ascii_lowercase();
    let mut ok = SUPPORTED_MIME.contains(&mime.as_str());
    if !ok {
        issues.push(Issue::at(
            IssueType::NotSupported,
            path,
            format!("content type '{ct}' is not supported; use application/fhir+json (or application/json)"),
        ));
    }
    for param in parts {
        if let Some(v) = param.strip_prefix("fhirVersion=") {
            if !v.starts_with(mime_version(version)) {
                ok = false;
                issues.push(Issue::at(
                    IssueType::NotSupported,
                    path,
                    format!("fhirVersion={v} notifications are not produced by this server (FHIR {version} only)"),
                ));
            }
        }
    }
    ok.then(|| ct.to_string())
}

/// A whole number of seconds (or a count) within `min..=max`; `raw` is what the client wrote.
pub(super) fn bounded(raw: &serde_json::Value, path: &str, what: &str, (min, max): (u64, u64), issues: &mut Vec<Issue>) -> Option<u64> {
    match raw.as_u64() {
        Some(n) if n >= min && n <= max => Some(n),
        Some(n) => {
            issues.push(Issue::at(IssueType::BusinessRule, path, format!("{what} {n} is outside what this server allows ({min}..={max})")));
            None
        }
        None => {
            issues.push(Issue::at(IssueType::Structure, path, format!("{what} must be a non-negative integer")));
            None
        }
    }
}

/// `end`: an instant after `now`.
pub(super) fn end(text: &str, path: &str, now: Millis, issues: &mut Vec<Issue>) -> Option<Millis> {
    match parse_instant(text) {
        Some(ms) if ms <= now => {
            issues.push(Issue::at(IssueType::BusinessRule, path, format!("end {text} is already in the past")));
            None
        }
        Some(ms) => Some(ms),
        None => {
            issues.push(Issue::at(IssueType::Value, path, format!("'{text}' is not an instant (with time and zone)")));
            None
        }
    }
}
