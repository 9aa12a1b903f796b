//! Binding a `SubscriptionSpec` to its topic and resolving each filter to a SearchParameter
//! Herald can evaluate. Every problem is reported, each where the client wrote the filter
//! (`Subscription.filterBy[i]` in R5, the `backport-filter-criteria` extension in R4/R4B).

use crate::fhir::search::{ParamType, SearchParams};
use crate::fhir::subscription::SubscriptionSpec;
use crate::fhir::topic::{CanFilterBy, TopicSpec};
use crate::fhir::{Issue, IssueType};

use super::filter::{BoundFilter, FilterKind, FilterSemantics};
use super::{Registry, SubEntry};
use crate::fhir::search::query::{split_or, Modifier};
use crate::fhir::search::value::parse_value;
use crate::fhir::search::SearchParam;
use crate::fhir::subscription::Filter;

/// The types a topic's triggers fire for, `Resource` kept as is.
fn trigger_types(topic: &TopicSpec) -> Vec<String> {
    let mut types: Vec<String> = topic.trigger_types().chain(topic.event_types()).map(str::to_string).collect();
    types.sort();
    types.dedup();
    types
}

fn find_declared<'t>(topic: &'t TopicSpec, parameter: &str, resource_type: Option<&str>) -> Vec<&'t CanFilterBy> {
    topic
        .can_filter_by
        .iter()
        .filter(|c| c.filter_parameter == parameter)
        .filter(|c| match (resource_type, c.resource.as_deref()) {
            (Some(want), Some(have)) => want == have || have == "Resource",
            _ => true,
        })
        .collect()
}

pub fn bind_subscription(registry: &Registry, spec: SubscriptionSpec) -> Result<SubEntry, Vec<Issue>> {
    let mut issues = Vec::new();
    let Some(topic) = registry.resolve_topic(&spec.topic) else {
        return Err(vec![Issue::at(
            IssueType::BusinessRule,
            spec.topic_path(),
            format!("no SubscriptionTopic with canonical '{}' is known to this server", spec.topic),
        )]);
    };
    if topic.status == "retired" {
        issues.push(Issue::at(IssueType::BusinessRule, spec.topic_path(), format!("topic '{}' is retired", topic.url)));
    }
    let params = match SearchParams::current() {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(Issue::new(IssueType::Exception, format!("search parameters unavailable: {e}")));
            None
        }
    };
    let types = trigger_types(topic);
    let mut filters = Vec::new();
    for f in &spec.filters {
        let path = |field: &str| f.source.path(field);
        let declared = find_declared(topic, &f.parameter, f.resource_type.as_deref());
        if declared.is_empty() {
            issues.push(Issue::at(
                IssueType::BusinessRule,
                path("filterParameter"),
                format!("topic '{}' does not declare filter '{}' in canFilterBy", topic.url, f.parameter),
            ));
            continue;
        }
        if let Some(cmp) = &f.comparator {
            if !declared.iter().all(|d| d.comparators.iter().any(|c| c == cmp)) {
                issues.push(Issue::at(
                    IssueType::BusinessRule,
                    path("comparator"),
                    format!("topic does not allow comparator '{cmp}' on '{}'", f.parameter),
                ));
                continue;
            }
        }
        if let Some(m) = &f.modifier {
            if !declared.iter().all(|d| d.modifiers.iter().any(|x| x == m)) {
                issues.push(Issue::at(
                    IssueType::BusinessRule,
                    path("modifier"),
                    format!("topic does not allow modifier '{m}' on '{}'", f.parameter),
                ));
                continue;
            }
        }
        let Some(params) = params else { continue };
        let scope = filter_scope(f.resource_type.as_deref(), &declared, &types);
        let mut bound = Vec::new();
        let mut semantics = Vec::new();
        let mut kinds = Vec::new();
        let mut problem = None;
        for (t, decl) in &scope {
            let param = match &decl.filter_definition {
                Some(url) => params.by_url(url),
                None => params.get(t, &f.parameter),
            };
            let Some(param) = param else { continue };
            if t != "Resource" {
                if let Err(e) = param.path_for(t) {
                    problem = Some((IssueType::NotSupported, "filterParameter", format!("cannot evaluate '{}' on {t}: {e}", f.parameter)));
                    continue;
                }
            }
            match filter_semantics(param, f, params) {
                Ok((kind, meaning)) => {
                    kinds.push(kind);
                    semantics.push(meaning);
                    bound.push((t.clone(), param));
                }
                Err((code, field, why)) => problem = Some((code, field, why)),
            }
        }
        match (problem, bound.is_empty()) {
            (None, false) => {
                // Key lookup only when every bound parameter agrees on one equality kind.
                let kind = match kinds.first() {
                    Some(k) if kinds.iter().all(|x| x == k) => *k,
                    _ => FilterKind::Search,
                };
                filters.push(BoundFilter { params: bound, kind, value: search_value(f), semantics });
            }
            (Some((code, field, why)), _) => issues.push(Issue::at(code, path(field), why)),
            (None, true) => issues.push(Issue::at(
                IssueType::NotSupported,
                path("filterParameter"),
                format!(
                    "no SearchParameter '{}' applies to {}",
                    f.parameter,
                    scope.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    if issues.is_empty() {
        Ok(SubEntry { topic_id: topic.id.clone(), topic_url: topic.url.clone(), spec, filters })
    } else {
        Err(issues)
    }
}

/// Which resource types a filter applies to, each with the `canFilterBy` entry that defines it
/// there: the filter's own `resourceType` (with the first declaration for it); else every
/// declaration of the parameter, each for its `resource` or, without one, for every trigger
/// type. R5: a filter without `resourceType` applies to every resource it can, so a topic that
/// declares `performer` once per Request type binds it on all of them; the first declaration
/// for a type wins.
fn filter_scope<'t>(own_type: Option<&str>, declared: &[&'t CanFilterBy], types: &[String]) -> Vec<(String, &'t CanFilterBy)> {
    let mut scope: Vec<(String, &'t CanFilterBy)> = Vec::new();
    let mut add = |t: &str, d: &'t CanFilterBy| {
        if !scope.iter().any(|(have, _)| have == t) {
            scope.push((t.to_string(), d));
        }
    };
    for decl in declared {
        match (own_type, decl.resource.as_deref()) {
            (Some(t), _) => {
                add(t, decl);
                break;
            }
            (None, Some(t)) if t != "Resource" => add(t, decl),
            _ => types.iter().for_each(|t| add(t, decl)),
        }
    }
    scope
}

/// The search value a filter stands for: its comparator as a prefix of its value (R5 filterBy
/// keeps them apart; search writes `gt2026-01-01`).
fn search_value(f: &Filter) -> String {
    match f.comparator.as_deref() {
        Some(cmp) if cmp != "eq" => format!("{cmp}{}", f.value),
        _ => f.value.clone(),
    }
}

type Refusal = (IssueType, &'static str, String);

/// What `f` means on `param`: whether key lookup can decide it, and its parsed modifier and
/// values; or why Herald refuses it, naming the field at fault.
fn filter_semantics(param: &SearchParam, f: &Filter, params: &'static SearchParams) -> Result<(FilterKind, FilterSemantics), Refusal> {
    let ordered = matches!(param.kind, ParamType::Date | ParamType::Number | ParamType::Quantity);
    if let Some(cmp) = f.comparator.as_deref() {
        if !matches!(cmp, "eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap") {
            return Err((IssueType::Value, "comparator", format!("'{cmp}' is not a search comparator")));
        }
        if cmp != "eq" && !ordered {
            return Err((
                IssueType::BusinessRule,
                "comparator",
                format!("comparator '{cmp}' applies to date, number and quantity parameters; '{}' is a {}", f.parameter, param.kind.code()),
            ));
        }
    }
    let modifier = match f.modifier.as_deref() {
        None => None,
        Some(m) => match Modifier::parse(m) {
            Some(parsed) if parsed.allowed_on(param.kind) => Some(parsed),
            _ => {
                return Err((
                    IssueType::BusinessRule,
                    "modifier",
                    format!("modifier '{m}' does not apply to {} parameter '{}'", param.kind.code(), f.parameter),
                ))
            }
        },
    };
    // Matching sees one resource, not the store: what needs a search of the store is refused.
    if let Some(m @ (Modifier::In | Modifier::NotIn | Modifier::Above | Modifier::Below)) = &modifier {
        if param.kind == ParamType::Token {
            return Err((
                IssueType::NotSupported,
                "modifier",
                format!(
                    "modifier '{}' on a token filter needs ValueSet or code system look-ups, which subscription filters do not do",
                    m.code()
                ),
            ));
        }
    }
    let value = search_value(f);
    let mut values = Vec::new();
    for part in split_or(&value) {
        values.push(parse_value(param, modifier.as_ref(), part, params).map_err(|why| (IssueType::Value, "value", why))?);
    }
    let single = values.len() == 1;
    let kind = match (param.kind, &modifier) {
        (ParamType::Token, None) if single => FilterKind::Token,
        (ParamType::Reference, None) if single => FilterKind::Reference,
        _ => FilterKind::Search,
    };
    Ok((kind, FilterSemantics { modifier, values }))
}
