//! Binding a `SubscriptionSpec` to its topic and resolving each `filterBy` to a SearchParameter
//! Herald can evaluate. Every problem is reported, each at its `Subscription.filterBy[i]`.

use crate::fhir::search::{ParamType, SearchParams};
use crate::fhir::subscription::SubscriptionSpec;
use crate::fhir::topic::{CanFilterBy, TopicSpec};
use crate::fhir::{Issue, IssueType};

use super::filter::{BoundFilter, FilterKind};
use super::{Registry, SubEntry};

/// The types a topic's triggers fire for, `Resource` kept as is.
fn trigger_types(topic: &TopicSpec) -> Vec<String> {
    let mut types: Vec<String> = topic.trigger_types().map(str::to_string).collect();
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
            "Subscription.topic",
            format!("no SubscriptionTopic with canonical '{}' is known to this server", spec.topic),
        )]);
    };
    if topic.status == "retired" {
        issues.push(Issue::at(IssueType::BusinessRule, "Subscription.topic", format!("topic '{}' is retired", topic.url)));
    }
    let params = match SearchParams::r5() {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(Issue::new(IssueType::Exception, format!("search parameters unavailable: {e}")));
            None
        }
    };
    let types = trigger_types(topic);
    let mut filters = Vec::new();
    for (i, f) in spec.filters.iter().enumerate() {
        let path = format!("Subscription.filterBy[{i}]");
        let declared = find_declared(topic, &f.parameter, f.resource_type.as_deref());
        let Some(decl) = declared.first() else {
            issues.push(Issue::at(
                IssueType::BusinessRule,
                format!("{path}.filterParameter"),
                format!("topic '{}' does not declare filter '{}' in canFilterBy", topic.url, f.parameter),
            ));
            continue;
        };
        if let Some(cmp) = &f.comparator {
            if !decl.comparators.iter().any(|c| c == cmp) {
                issues.push(Issue::at(
                    IssueType::BusinessRule,
                    format!("{path}.comparator"),
                    format!("topic does not allow comparator '{cmp}' on '{}'", f.parameter),
                ));
                continue;
            }
            if cmp != "eq" {
                issues.push(Issue::at(
                    IssueType::NotSupported,
                    format!("{path}.comparator"),
                    format!("comparator '{cmp}' is not supported yet (only equality)"),
                ));
                continue;
            }
        }
        if let Some(m) = &f.modifier {
            if !decl.modifiers.iter().any(|x| x == m) {
                issues.push(Issue::at(
                    IssueType::BusinessRule,
                    format!("{path}.modifier"),
                    format!("topic does not allow modifier '{m}' on '{}'", f.parameter),
                ));
            } else {
                issues.push(Issue::at(
                    IssueType::NotSupported,
                    format!("{path}.modifier"),
                    format!("modifier '{m}' is not supported yet (only equality)"),
                ));
            }
            continue;
        }
        let Some(params) = params else { continue };
        // Which resource types the filter applies to: the filter's own resourceType, else the
        // canFilterBy resource, else every trigger type.
        let scope: Vec<String> = match (f.resource_type.as_deref(), decl.resource.as_deref()) {
            (Some(t), _) => vec![t.to_string()],
            (None, Some(t)) if t != "Resource" => vec![t.to_string()],
            _ => types.clone(),
        };
        let mut bound = Vec::new();
        let mut kind = None;
        let mut problem = None;
        for t in &scope {
            let param = match &decl.filter_definition {
                Some(url) => params.by_url(url),
                None => params.get(t, &f.parameter),
            };
            let Some(param) = param else { continue };
            let k = match param.kind {
                ParamType::Token => FilterKind::Token,
                ParamType::Reference => FilterKind::Reference,
                _ => {
                    problem = Some(format!(
                        "'{}' is a {:?} parameter; only token and reference filters are supported yet",
                        f.parameter, param.kind
                    ));
                    continue;
                }
            };
            if t != "Resource" {
                if let Err(e) = param.path_for(t) {
                    problem = Some(format!("cannot evaluate '{}' on {t}: {e}", f.parameter));
                    continue;
                }
            }
            kind = Some(k);
            bound.push((t.clone(), param));
        }
        match (kind, bound.is_empty()) {
            (Some(kind), false) => filters.push(BoundFilter { params: bound, kind, value: f.value.clone() }),
            _ => issues.push(Issue::at(
                IssueType::NotSupported,
                format!("{path}.filterParameter"),
                problem.unwrap_or_else(|| format!("no SearchParameter '{}' applies to {}", f.parameter, scope.join(", "))),
            )),
        }
    }
    if issues.is_empty() {
        Ok(SubEntry { topic_id: topic.id.clone(), topic_url: topic.url.clone(), spec, filters })
    } else {
        Err(issues)
    }
}
