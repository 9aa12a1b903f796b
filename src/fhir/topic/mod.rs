//! `TopicSpec`: the parts of an R5 `SubscriptionTopic` that drive matching and notification,
//! parsed and validated from the stored JSON.
//!
//! Herald evaluates resource triggers by type, interaction, `fhirPathCriteria` and
//! `queryCriteria`, both compiled here, once, when the topic is stored; criteria that do not
//! compile are refused with the position or clause at fault. `eventTrigger`s are kept by code
//! and focus type; events come from Herald's own workflow detection (`ingest::workflow`). No
//! element may name `Subscription` (see `resource_type_at`).
//!
//! When a trigger has both `queryCriteria` and `fhirPathCriteria`, R5 calls them two
//! computable renderings of one concept, to be implemented consistently and never ANDed
//! (digest §2.3 item 22). Herald evaluates the `fhirPathCriteria` alone and ignores the
//! `queryCriteria`: FHIRPath sees `%previous` and `%current` directly and is exact for every
//! resource type, while the query form depends on which search parameters exist.
//!
//! R4 and R4B store topics in other shapes (an R4 `Basic` with cross-version extensions, the
//! R4B `SubscriptionTopic`); `basic` and `r4b` convert them to the R5 shape, and `stored`
//! says, per version, which stored resource is a topic and how to read it.

pub mod basic;
mod elements;
pub mod r4b;
pub mod stored;

use std::sync::Arc;

use serde_json::Value;

use super::fhirpath::Expression;
use super::outcome::{Issue, IssueType};
use super::search::include::{parse_shape_directive, Include};
use super::search::matcher::{clause_matches, SearchContext};
use super::search::query::Query;
use super::search::{SearchError, SearchParams};
use super::types::{is_resource_type, type_from_uri};

/// `restful-interaction` codes allowed in `resourceTrigger.supportedInteraction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interaction {
    Create,
    Update,
    Delete,
}

impl Interaction {
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Create => "create",
            Interaction::Update => "update",
            Interaction::Delete => "delete",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "create" => Some(Interaction::Create),
            "update" => Some(Interaction::Update),
            "delete" => Some(Interaction::Delete),
            _ => None,
        }
    }
}

/// One `eventTrigger`: a named business event (an HL7 v2 `A01`, Herald's
/// `workflow-event#output-modified`) whose focus is a resource of type `resource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTrigger {
    /// `event.coding` as (system, code); an event matches when it carries any of them.
    pub codes: Vec<(String, String)>,
    pub resource: String,
}

impl EventTrigger {
    pub fn fires_on(&self, system: &str, code: &str, resource_type: &str) -> bool {
        (self.resource == resource_type || self.resource == "Resource") && self.codes.iter().any(|(s, c)| s == system && c == code)
    }
}

/// One `resourceTrigger`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceTrigger {
    /// A concrete type name, or `Resource` for every type.
    pub resource: String,
    /// Empty means every interaction (R5: absent `supportedInteraction` = all).
    pub interactions: Vec<Interaction>,
    /// `fhirPathCriteria`, compiled; evaluated with `%previous` and `%current`.
    pub fhir_path: Option<Criteria>,
    /// `queryCriteria`, parsed; used when there is no `fhirPathCriteria`.
    pub query: Option<QueryCriteria>,
}

/// A parsed `queryCriteria` (digest §2.3 item 20).
#[derive(Clone, Debug)]
pub struct QueryCriteria {
    pub previous: Option<Arc<Query>>,
    pub current: Option<Arc<Query>>,
    /// `resultForCreate == test-passes`; `None` when absent.
    pub result_for_create: Option<bool>,
    /// `resultForDelete == test-passes`; `None` when absent.
    pub result_for_delete: Option<bool>,
    pub require_both: bool,
    /// The criteria as written, for equality.
    source: String,
}

impl PartialEq for QueryCriteria {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for QueryCriteria {}

impl QueryCriteria {
    /// Does a change pass? `previous`/`current` are the states before and after (`None` on
    /// create and delete respectively).
    ///
    /// R5: on update `previous` is tested on the old state and `current` on the new; on
    /// create the previous test's result is `resultForCreate`, on delete the current test's
    /// is `resultForDelete`; `requireBoth` ANDs the two results, otherwise they are ORed.
    /// The spec is silent on a test that is absent: Herald treats it as neutral (it neither
    /// passes nor blocks), so a topic with only `current` fires on what `current` says, and one
    /// with neither fires on every listed interaction. A test that cannot be run because its
    /// state does not exist (no previous version on create) and has no `resultFor*` fails.
    pub fn passes(
        &self,
        resource_type: &str,
        previous: Option<&Value>,
        current: Option<&Value>,
        ctx: &dyn SearchContext,
    ) -> Result<bool, SearchError> {
        let test =
            |query: &Option<Arc<Query>>, state: Option<&Value>, result_if_absent: Option<bool>| -> Result<Option<bool>, SearchError> {
                let Some(query) = query else {
                    return Ok(match (state, result_if_absent) {
                        (None, Some(r)) => Some(r),
                        _ => None,
                    });
                };
                let Some(resource) = state else {
                    return Ok(Some(result_if_absent.unwrap_or(false)));
                };
                for clause in &query.clauses {
                    if !clause_matches(clause, resource_type, resource, ctx)? {
                        return Ok(Some(false));
                    }
                }
                Ok(Some(true))
            };
        let before = test(&self.previous, previous, self.result_for_create)?;
        let after = test(&self.current, current, self.result_for_delete)?;
        Ok(match (before, after) {
            (None, None) => true,
            (Some(r), None) | (None, Some(r)) => r,
            (Some(a), Some(b)) => {
                if self.require_both {
                    a && b
                } else {
                    a || b
                }
            }
        })
    }
}

/// Parse `queryCriteria` of a trigger on `resource_type` at `path`, reporting every problem.
fn parse_query_criteria(resource_type: &str, value: &Value, path: &str, issues: &mut Vec<Issue>) -> Option<QueryCriteria> {
    let Some(params) = SearchParams::current().ok() else {
        issues.push(Issue::at(IssueType::Exception, path, "the search parameter definitions are unavailable"));
        return None;
    };
    let before = issues.len();
    let mut query = |key: &str| -> Option<Arc<Query>> {
        let text = value.get(key)?;
        let Some(text) = text.as_str() else {
            issues.push(Issue::at(IssueType::Structure, format!("{path}.{key}"), "expected a search string"));
            return None;
        };
        let (parsed, errors) = Query::parse(resource_type, text, params);
        for e in &errors {
            issues.push(Issue::at(IssueType::Invalid, format!("{path}.{key}"), format!("{e} (in {text:?})")));
        }
        if !parsed.control.is_empty() {
            let names: Vec<&str> = parsed.control.iter().map(|(n, _)| n.as_str()).collect();
            issues.push(Issue::at(
                IssueType::Invalid,
                format!("{path}.{key}"),
                format!("result parameters {names:?} have no meaning in criteria"),
            ));
        }
        Some(Arc::new(parsed))
    };
    let previous = query("previous");
    let current = query("current");
    let mut outcome = |key: &str| -> Option<bool> {
        match value.get(key).map(|v| v.as_str()) {
            None => None,
            Some(Some("test-passes")) => Some(true),
            Some(Some("test-fails")) => Some(false),
            Some(_) => {
                issues.push(Issue::at(IssueType::Value, format!("{path}.{key}"), "expected test-passes or test-fails"));
                None
            }
        }
    };
    let result_for_create = outcome("resultForCreate");
    let result_for_delete = outcome("resultForDelete");
    let require_both = match value.get("requireBoth") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            issues.push(Issue::at(IssueType::Structure, format!("{path}.requireBoth"), "expected a boolean"));
            false
        }
    };
    (issues.len() == before).then(|| QueryCriteria {
        previous,
        current,
        result_for_create,
        result_for_delete,
        require_both,
        source: value.to_string(),
    })
}

/// A compiled `fhirPathCriteria`, shared by every evaluation; equal when the text is.
#[derive(Clone, Debug)]
pub struct Criteria(pub Arc<Expression>);

impl PartialEq for Criteria {
    fn eq(&self, other: &Self) -> bool {
        self.0.source() == other.0.source()
    }
}

impl Eq for Criteria {}

impl ResourceTrigger {
    pub fn fires_on(&self, resource_type: &str, interaction: Interaction) -> bool {
        (self.resource == "Resource" || self.resource == resource_type)
            && (self.interactions.is_empty() || self.interactions.contains(&interaction))
    }
}

/// One `canFilterBy` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanFilterBy {
    pub resource: Option<String>,
    pub filter_parameter: String,
    pub filter_definition: Option<String>,
    pub comparators: Vec<String>,
    pub modifiers: Vec<String>,
}

/// One `notificationShape`: the directives as written and parsed.
#[derive(Clone, Debug)]
pub struct NotificationShape {
    pub resource: String,
    pub include: Vec<String>,
    pub rev_include: Vec<String>,
    pub includes: Vec<Include>,
    pub rev_includes: Vec<Include>,
}

impl PartialEq for NotificationShape {
    fn eq(&self, other: &Self) -> bool {
        // The parsed directives follow from the strings.
        self.resource == other.resource && self.include == other.include && self.rev_include == other.rev_include
    }
}

impl Eq for NotificationShape {}

/// A validated topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub id: String,
    pub url: String,
    pub version: Option<String>,
    pub status: String,
    pub triggers: Vec<ResourceTrigger>,
    pub event_triggers: Vec<EventTrigger>,
    pub can_filter_by: Vec<CanFilterBy>,
    pub shapes: Vec<NotificationShape>,
}

impl TopicSpec {
    /// The concrete types this topic can fire for (`Resource` expands to nothing here; callers
    /// treat it as "any").
    pub fn trigger_types(&self) -> impl Iterator<Item = &str> {
        self.triggers.iter().map(|t| t.resource.as_str())
    }

    /// The focus types of its event triggers.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.event_triggers.iter().map(|t| t.resource.as_str())
    }

    pub fn fires_on_event(&self, system: &str, code: &str, resource_type: &str) -> bool {
        self.event_triggers.iter().any(|t| t.fires_on(system, code, resource_type))
    }

    pub fn fires_on(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.triggers.iter().any(|t| t.fires_on(resource_type, interaction))
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn array_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn strings_at(v: &Value, key: &str, path: &str, issues: &mut Vec<Issue>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in array_at(v, key).iter().enumerate() {
        match item.as_str() {
            Some(s) => out.push(s.to_string()),
            None => issues.push(Issue::at(IssueType::Structure, format!("{path}.{key}[{i}]"), "expected a string")),
        }
    }
    out
}

/// A topic's resource type (a trigger's, a filter's or a shape's), by name or
/// StructureDefinition URL. `Subscription` is refused, whatever the auth mode: a Subscription
/// carries its client's endpoint and header secrets, so a topic on it would tell every
/// subscriber about every other client's subscriptions (docs/decisions.md).
fn resource_type_at(uri: &str, path: &str, allow_any: bool, issues: &mut Vec<Issue>) -> Option<String> {
    let name = type_from_uri(uri);
    if name == "Subscription" {
        issues.push(Issue::at(
            IssueType::BusinessRule,
            path,
            "a topic may not name Subscription: Subscriptions carry other clients' endpoints and secrets",
        ));
        return None;
    }
    if (allow_any && name == "Resource") || is_resource_type(name) {
        Some(name.to_string())
    } else {
        issues.push(Issue::at(IssueType::Value, path, format!("'{uri}' is not an R5 resource type (nor its StructureDefinition URL)")));
        None
    }
}

/// Parses and validates a SubscriptionTopic; returns every issue found.
pub fn parse_topic(id: &str, topic: &Value) -> Result<TopicSpec, Vec<Issue>> {
    let mut issues = Vec::new();
    let url = match str_at(topic, "url") {
        Some(u) if !u.trim().is_empty() => u.to_string(),
        _ => {
            issues.push(Issue::at(IssueType::Required, "SubscriptionTopic.url", "a topic needs its canonical url"));
            String::new()
        }
    };
    let status = match str_at(topic, "status") {
        Some(s @ ("draft" | "active" | "retired" | "unknown")) => s.to_string(),
        Some(other) => {
            issues.push(Issue::at(
                IssueType::Value,
                "SubscriptionTopic.status",
                format!("'{other}' is not a publication status (draft | active | retired | unknown)"),
            ));
            String::new()
        }
        None => {
            issues.push(Issue::at(IssueType::Required, "SubscriptionTopic.status", "status is required"));
            String::new()
        }
    };

    let mut event_triggers = Vec::new();
    for (i, t) in array_at(topic, "eventTrigger").iter().enumerate() {
        let path = format!("SubscriptionTopic.eventTrigger[{i}]");
        let codes: Vec<(String, String)> = t
            .get("event")
            .map(|e| array_at(e, "coding"))
            .unwrap_or_default()
            .iter()
            .filter_map(|c| Some((str_at(c, "system")?.to_owned(), str_at(c, "code")?.to_owned())))
            .collect();
        if codes.is_empty() {
            issues.push(Issue::at(IssueType::Required, format!("{path}.event"), "an event trigger needs a coding with system and code"));
        }
        let resource = match str_at(t, "resource") {
            Some(uri) => resource_type_at(uri, &format!("{path}.resource"), true, &mut issues),
            None => {
                issues.push(Issue::at(IssueType::Required, format!("{path}.resource"), "resource is required"));
                None
            }
        };
        if let Some(resource) = resource {
            event_triggers.push(EventTrigger { codes, resource });
        }
    }

    let mut triggers = Vec::new();
    let raw_triggers = array_at(topic, "resourceTrigger");
    if raw_triggers.is_empty() && event_triggers.is_empty() && issues.is_empty() {
        issues.push(Issue::at(
            IssueType::Required,
            "SubscriptionTopic.resourceTrigger",
            "a topic needs at least one resourceTrigger or eventTrigger",
        ));
    }
    for (i, t) in raw_triggers.iter().enumerate() {
        let path = format!("SubscriptionTopic.resourceTrigger[{i}]");
        let fhir_path = match t.get("fhirPathCriteria") {
            None => None,
            Some(Value::String(text)) => match Expression::parse(text) {
                Ok(expr) => Some(Criteria(Arc::new(expr))),
                Err(e) => {
                    issues.push(Issue::at(
                        IssueType::Invalid,
                        format!("{path}.fhirPathCriteria"),
                        format!("FHIRPath {} at character {} of {text:?}: {}", e.class, e.position + 1, e.kind),
                    ));
                    None
                }
            },
            Some(_) => {
                issues.push(Issue::at(IssueType::Structure, format!("{path}.fhirPathCriteria"), "expected a string"));
                None
            }
        };
        let resource = match str_at(t, "resource") {
            Some(uri) => resource_type_at(uri, &format!("{path}.resource"), true, &mut issues),
            None => {
                issues.push(Issue::at(IssueType::Required, format!("{path}.resource"), "resource is required"));
                None
            }
        };
        let query = match (t.get("queryCriteria"), &resource) {
            (Some(q), Some(ty)) => parse_query_criteria(ty, q, &format!("{path}.queryCriteria"), &mut issues),
            _ => None,
        };
        let mut interactions = Vec::new();
        for (j, code) in strings_at(t, "supportedInteraction", &path, &mut issues).iter().enumerate() {
            match Interaction::from_code(code) {
                Some(x) if !interactions.contains(&x) => interactions.push(x),
                Some(_) => {}
                None => issues.push(Issue::at(
                    IssueType::Value,
                    format!("{path}.supportedInteraction[{j}]"),
                    format!("'{code}' is not create, update or delete"),
                )),
            }
        }
        if let Some(resource) = resource {
            triggers.push(ResourceTrigger { resource, interactions, fhir_path, query });
        }
    }

    let mut can_filter_by = Vec::new();
    for (i, f) in array_at(topic, "canFilterBy").iter().enumerate() {
        let path = format!("SubscriptionTopic.canFilterBy[{i}]");
        let resource = str_at(f, "resource").and_then(|uri| resource_type_at(uri, &format!("{path}.resource"), true, &mut issues));
        let Some(filter_parameter) = str_at(f, "filterParameter").filter(|p| !p.is_empty()) else {
            issues.push(Issue::at(IssueType::Required, format!("{path}.filterParameter"), "filterParameter is required"));
            continue;
        };
        can_filter_by.push(CanFilterBy {
            resource,
            filter_parameter: filter_parameter.to_string(),
            filter_definition: str_at(f, "filterDefinition").map(str::to_string),
            comparators: strings_at(f, "comparator", &path, &mut issues),
            modifiers: strings_at(f, "modifier", &path, &mut issues),
        });
    }

    let mut shapes = Vec::new();
    for (i, s) in array_at(topic, "notificationShape").iter().enumerate() {
        let path = format!("SubscriptionTopic.notificationShape[{i}]");
        let Some(resource) = str_at(s, "resource").and_then(|uri| resource_type_at(uri, &format!("{path}.resource"), true, &mut issues))
        else {
            if str_at(s, "resource").is_none() {
                issues.push(Issue::at(IssueType::Required, format!("{path}.resource"), "resource is required"));
            }
            continue;
        };
        let include = strings_at(s, "include", &path, &mut issues);
        let rev_include = strings_at(s, "revInclude", &path, &mut issues);
        let mut directives = |texts: &[String], element: &str, reverse: bool| -> Vec<Include> {
            let Ok(params) = SearchParams::current() else { return Vec::new() };
            let mut out = Vec::new();
            for (j, text) in texts.iter().enumerate() {
                match parse_shape_directive(text, reverse, params) {
                    Ok(list) => out.extend(list),
                    // R5 §2.9: includes are best effort and clients cope with them missing; a
                    // parameter this server does not know is skipped, not a reason to refuse
                    // a published topic.
                    Err(e) if e.unsupported => {
                        tracing::info!(topic = id, at = %format!("{path}.{element}[{j}]"), reason = %e.message, "notificationShape directive skipped");
                    }
                    Err(e) => issues.push(Issue::at(IssueType::Invalid, format!("{path}.{element}[{j}]"), e.message)),
                }
            }
            out
        };
        let includes = directives(&include, "include", false);
        let rev_includes = directives(&rev_include, "revInclude", true);
        shapes.push(NotificationShape { resource, include, rev_include, includes, rev_includes });
    }

    if issues.is_empty() {
        Ok(TopicSpec {
            id: id.to_string(),
            url,
            version: str_at(topic, "version").map(str::to_string),
            status,
            triggers,
            event_triggers,
            can_filter_by,
            shapes,
        })
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod convert_tests;
#[cfg(test)]
mod tests;
