//! Backport filters: the `backport-filter-criteria` extensions on `Subscription.criteria`
//! (`_criteria.extension` in JSON), each a search-style string, into `Filter`s.
//!
//! The string is read by `search::query::parse_filter_criteria`, which takes the three forms
//! published for the backport (issue #5):
//!
//! ```text
//! Type?name[:modifier]=value[&name2=value2...]   the IG 1.1.0 form, e.g. Encounter?patient=Patient/123
//! Type.name[:modifier]=value                     earlier ballots' form, and the conformance kit's presets
//! name[:modifier]=value
//! ```
//!
//! - `Type` scopes every filter of the string, as R5 `filterBy.resourceType` does; without it a
//!   filter applies to every resource type the topic allows it on.
//! - `name` must be a search parameter code (letters, digits, `-`, `_`): chained names are
//!   refused. A modifier must not be empty, nor a value.
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
use crate::fhir::search::query;
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

fn is_param_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One criteria string (see the module doc) as filters, or why not.
pub fn parse_filter_criteria(text: &str, source: FilterSource) -> Result<Vec<Filter>, String> {
    let criteria = query::parse_filter_criteria(text)
        .map_err(|why| format!("{why} (the IG's syntax is Type?name=value, e.g. Encounter?patient=Patient/123)"))?;
    let mut out = Vec::with_capacity(criteria.len());
    for c in criteria {
        if !is_param_name(&c.parameter) {
            return Err(format!("'{}' is not a search parameter name (chained parameters are not supported)", c.parameter));
        }
        if c.modifier.as_deref().is_some_and(|m| m.is_empty() || m.contains(char::is_whitespace)) {
            return Err(format!("'{}' has an empty or malformed modifier", c.parameter));
        }
        if c.value.is_empty() {
            return Err(format!("'{}' has no value", c.parameter));
        }
        out.push(Filter {
            resource_type: c.resource_type,
            parameter: c.parameter,
            comparator: None,
            modifier: c.modifier,
            value: c.value,
            source,
        });
    }
    Ok(out)
}
