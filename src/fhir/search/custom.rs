//! SearchParameter resources that users store in Herald, checked before they become custom
//! search parameters for topics (`canFilterBy.filterDefinition`, `queryCriteria`), filters and
//! REST search.
//!
//! In: a SearchParameter resource. Out: a [`SearchParam`] ready to register with
//! [`SearchParams::register_custom`], or every problem found, each with its location. The
//! expression must compile with Herald's FHIRPath engine for every base type, so a parameter
//! that would fail on each event is refused when it is written.

use serde_json::Value;

use super::params::{ParamType, SearchParam, SearchParamComponent, SearchParams};
use super::types::is_resource_type_of;
use crate::fhir::{Issue, IssueType};

fn is_code(code: &str) -> bool {
    let mut chars = code.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && code.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Check a SearchParameter resource as a custom parameter.
pub fn custom_param(resource: &Value, params: &SearchParams) -> Result<SearchParam, Vec<Issue>> {
    custom_param_replacing(resource, params, None)
}

/// `custom_param` for a SearchParameter resource whose stored version defined `replaced` (its
/// url before this update): that definition goes away with the update, so its code is free.
pub fn custom_param_replacing(resource: &Value, params: &SearchParams, replaced: Option<&str>) -> Result<SearchParam, Vec<Issue>> {
    let mut issues = Vec::new();
    let text = |key: &str| resource.get(key).and_then(Value::as_str).map(str::to_owned);
    let url = text("url").filter(|u| !u.trim().is_empty());
    if url.is_none() {
        issues.push(Issue::at(IssueType::Required, "SearchParameter.url", "a search parameter needs its canonical url"));
    }
    if let Some(u) = &url {
        if params.is_official(u) {
            issues.push(Issue::at(
                IssueType::BusinessRule,
                "SearchParameter.url",
                format!("'{u}' is an official {} search parameter; it cannot be redefined", params.version().name()),
            ));
        }
    }
    let code = text("code").filter(|c| is_code(c));
    if code.is_none() {
        issues.push(Issue::at(IssueType::Required, "SearchParameter.code", "a code of letters, digits, '-', '_' or '.' is required"));
    }
    let mut base = Vec::new();
    for (i, b) in resource.get("base").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match b.as_str() {
            Some(t) if is_resource_type_of(params.version(), t) || t == "Resource" || t == "DomainResource" => base.push(t.to_owned()),
            _ => issues.push(Issue::at(
                IssueType::Value,
                format!("SearchParameter.base[{i}]"),
                format!("{b} is not an {} resource type", params.version().name()),
            )),
        }
    }
    if base.is_empty() && !issues.iter().any(|i| i.expression.as_deref().is_some_and(|e| e.starts_with("SearchParameter.base"))) {
        issues.push(Issue::at(IssueType::Required, "SearchParameter.base", "at least one base resource type is required"));
    }
    let kind = match text("type").as_deref().and_then(ParamType::from_code) {
        Some(ParamType::Special) => {
            issues.push(Issue::at(
                IssueType::NotSupported,
                "SearchParameter.type",
                "special parameters need server code; Herald cannot run them",
            ));
            None
        }
        Some(kind) => Some(kind),
        None => {
            issues.push(Issue::at(IssueType::Value, "SearchParameter.type", "type must be a search-param-type code"));
            None
        }
    };
    let expression = text("expression");
    if expression.is_none() {
        issues.push(Issue::at(
            IssueType::Required,
            "SearchParameter.expression",
            "Herald evaluates parameters by their FHIRPath expression",
        ));
    }
    let mut components = Vec::new();
    for (i, c) in resource.get("component").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match (c.get("definition").and_then(Value::as_str), c.get("expression").and_then(Value::as_str)) {
            (Some(definition), Some(expr)) if params.by_url(definition).is_some() => {
                components.push(SearchParamComponent { definition: definition.to_owned(), expression: expr.to_owned() })
            }
            _ => issues.push(Issue::at(
                IssueType::Value,
                format!("SearchParameter.component[{i}]"),
                "a component needs the url of a known SearchParameter and an expression",
            )),
        }
    }
    if kind == Some(ParamType::Composite) && components.is_empty() {
        issues.push(Issue::at(IssueType::Required, "SearchParameter.component", "a composite parameter needs components"));
    }
    let targets: Vec<String> =
        resource.get("target").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
    let (Some(url), Some(code), Some(kind)) = (url, code, kind) else {
        return Err(issues);
    };
    for b in &base {
        if let Some(other) = params.code_taken(b, &code, &url).filter(|other| Some(other.as_str()) != replaced) {
            issues.push(Issue::at(
                IssueType::BusinessRule,
                "SearchParameter.code",
                format!("'{code}' on {b} is already defined by {other}"),
            ));
        }
    }
    let param = SearchParam::new(url, code, base, kind, expression, targets, components);
    for b in &param.base {
        let ty = if b == "Resource" || b == "DomainResource" { "Patient" } else { b.as_str() };
        if let Err(e) = param.path_for(ty) {
            issues.push(Issue::at(IssueType::Invalid, "SearchParameter.expression", e.to_string()));
            break;
        }
    }
    if issues.is_empty() {
        Ok(param)
    } else {
        Err(issues)
    }
}
