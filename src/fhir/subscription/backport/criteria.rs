//! Backport filters: the `backport-filter-criteria` extensions on `Subscription.criteria`
//! (`_criteria.extension` in JSON), each a search-style string, into `Filter`s.
//!
//! Accepted syntax (the IG's example is `Encounter?patient=Patient/123`):
//!
//! ```text
//! criteria  = [ResourceType "?"] filter *("&" filter)
//! filter    = name [":" modifier] "=" value
//! ```
//!
//! - `ResourceType` scopes every filter of the string, as R5 `filterBy.resourceType` does;
//!   without it a filter applies to every resource type the topic allows it on.
//! - `name` is a search parameter code (letters, digits, `-`, `_`); chained (`a.b`) names are
//!   refused, and so is Inferno's `Encounter.patient=...` spelling, with a pointer to the IG's.
//! - `value` is as in a search URL: a comparator prefix (`ge2024-01-01`) and `,` (OR) keep their
//!   search meaning (the registry parses them against the SearchParameter); `%XX` escapes are
//!   decoded; `+` stays a plus (it is not a form-encoded space here).
//! - Several `&`-joined filters, and several extensions, all apply (AND), as R5 `filterBy`
//!   entries do.
//!
//! Whether the topic allows each filter is the registry's check (`registry::bind`).

use serde_json::Value;

use super::{extensions, url_of, value_of, FILTER_CRITERIA_URL};
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::subscription::{Filter, FilterSource};

const PATH: &str = "Subscription.criteria";

/// Every filter of every `backport-filter-criteria` extension on `criteria`; problems go to
/// `issues`, each at its extension.
pub(super) fn filters(sub: &Value, issues: &mut Vec<Issue>) -> Vec<Filter> {
    let mut out = Vec::new();
    if sub.get("_criteria").is_some_and(|c| !c.is_object()) {
        issues.push(Issue::at(IssueType::Structure, PATH, "_criteria must be an object holding the criteria's extensions"));
        return out;
    }
    for (i, ext) in extensions(sub.get("_criteria"), PATH, issues).iter().enumerate() {
        let at = format!("{PATH}.extension[{i}]");
        let url = url_of(ext);
        if url != FILTER_CRITERIA_URL {
            issues.push(Issue::at(
                IssueType::NotSupported,
                at,
                format!("extension '{url}' on Subscription.criteria is not supported; filters are {FILTER_CRITERIA_URL} extensions"),
            ));
            continue;
        }
        match value_of(ext) {
            Some(("valueString", Value::String(text))) => match parse_filter_criteria(text, FilterSource::Criteria(i)) {
                Ok(list) => out.extend(list),
                Err(why) => issues.push(Issue::at(IssueType::Value, format!("{at}.valueString"), why)),
            },
            _ => issues.push(Issue::at(IssueType::Structure, at, "backport-filter-criteria takes a valueString")),
        }
    }
    out
}

fn is_type_name(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_uppercase()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_param_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One criteria string (see the module doc) as filters, or why not.
pub fn parse_filter_criteria(text: &str, source: FilterSource) -> Result<Vec<Filter>, String> {
    let (resource_type, query) = match text.split_once('?') {
        Some((t, q)) if is_type_name(t) => (Some(t.to_string()), q),
        Some((t, _)) if !t.contains('=') => return Err(format!("'{t}' before '?' is not a resource type name")),
        _ => (None, text),
    };
    if query.trim().is_empty() {
        return Err("the filter criteria hold no filter; write e.g. Encounter?patient=Patient/123".into());
    }
    let mut out = Vec::new();
    for part in query.split('&') {
        let Some((key, raw_value)) = part.split_once('=') else {
            return Err(format!("'{part}' is not name=value (the IG's syntax is Type?name=value, e.g. Encounter?patient=Patient/123)"));
        };
        let key = percent_decode(key).ok_or_else(|| format!("'{key}' has a broken %-escape"))?;
        let value = percent_decode(raw_value).ok_or_else(|| format!("the value of '{key}' has a broken %-escape or is not UTF-8"))?;
        let (name, modifier) = match key.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (key.as_str(), None),
        };
        if !is_param_name(name) {
            let hint = match name.split_once('.') {
                Some((t, p)) if is_type_name(t) && resource_type.is_none() => format!("; write {t}?{p}=... (the IG's syntax)"),
                _ => String::new(),
            };
            return Err(format!("'{name}' is not a search parameter name{hint}"));
        }
        if modifier.is_some_and(|m| m.is_empty() || m.contains(char::is_whitespace)) {
            return Err(format!("'{key}' has an empty or malformed modifier"));
        }
        if value.is_empty() {
            return Err(format!("'{name}' has no value"));
        }
        out.push(Filter {
            resource_type: resource_type.clone(),
            parameter: name.to_string(),
            comparator: None,
            modifier: modifier.map(str::to_string),
            value,
            source,
        });
    }
    Ok(out)
}
