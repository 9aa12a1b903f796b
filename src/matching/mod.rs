//! Matching: which subscriptions does one resource change concern? Pure: no IO, no clock, no
//! failure. A filter that cannot be evaluated on a resource counts as not matching and is
//! reported in `MatchReport::diagnostics` for the caller to log and count.
//!
//! R5 semantics applied here (digest §2.3, §2.4): a topic fires when one of its resource
//! triggers names the changed type (or `Resource`) and lists the interaction (absent = all);
//! a subscription's filters are ANDed and apply only to resources of their type; they are
//! evaluated on the new state, or on the state before a delete.
//!
//! Cost today is O(subscriptions of the topics the change triggers); the indexed matcher of
//! issue #5 replaces `matches_filters` without changing this interface.

use serde_json::Value;

use crate::fhir::search::{reference_matches, token_matches};
use crate::fhir::topic::Interaction;
use crate::registry::{FilterKind, Registry, SubEntry};

/// One accepted change to one resource.
pub struct ResourceChange<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub interaction: Interaction,
    pub previous: Option<&'a Value>,
    pub current: Option<&'a Value>,
}

impl ResourceChange<'_> {
    /// The state filters are evaluated on.
    fn filter_subject(&self) -> Option<&Value> {
        match self.interaction {
            Interaction::Delete => self.previous,
            _ => self.current,
        }
    }
}

/// A subscription the change concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub subscription_id: String,
    pub topic_url: String,
}

#[derive(Debug, Default)]
pub struct MatchReport {
    pub matches: Vec<Match>,
    pub diagnostics: Vec<String>,
}

/// Finds the subscriptions `change` concerns. `counts(sub_id)` says whether a subscription's
/// status takes events now (requested, active and error do; off does not).
pub fn match_change(change: &ResourceChange<'_>, registry: &Registry, base_url: &str, counts: impl Fn(&str) -> bool) -> MatchReport {
    let mut report = MatchReport::default();
    for topic in registry.topics() {
        if !topic.fires_on(change.resource_type, change.interaction) {
            continue;
        }
        for sub in registry.subscribers(&topic.id) {
            if !counts(&sub.spec.id) {
                continue;
            }
            if matches_filters(sub, change, base_url, &mut report.diagnostics) {
                report.matches.push(Match { subscription_id: sub.spec.id.clone(), topic_url: topic.url.clone() });
            }
        }
    }
    report
}

fn matches_filters(sub: &SubEntry, change: &ResourceChange<'_>, base_url: &str, diagnostics: &mut Vec<String>) -> bool {
    let subject = change.filter_subject();
    sub.filters.iter().all(|filter| {
        let param = filter.param_for(change.resource_type).or_else(|| filter.param_for("Resource"));
        let Some(param) = param else {
            // R5: a filter only applies to resources of its type.
            return true;
        };
        let Some(resource) = subject else { return false };
        match param.values(change.resource_type, resource) {
            Ok(values) => match filter.kind {
                FilterKind::Token => token_matches(&values, &filter.value),
                FilterKind::Reference => reference_matches(&values, &filter.value, base_url),
            },
            Err(e) => {
                diagnostics
                    .push(format!("subscription {}: filter {} not evaluable on {}: {e}", sub.spec.id, param.code, change.resource_type));
                false
            }
        }
    })
}

#[cfg(test)]
mod tests;
