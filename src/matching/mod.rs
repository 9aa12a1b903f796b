//! Matching: which subscriptions does one resource change concern? Pure: no IO, no clock, no
//! failure. A filter that cannot be evaluated on a resource counts as not matching and is
//! reported in `MatchReport::diagnostics` for the caller to log and count.
//!
//! R5 semantics applied here (digest §2.3, §2.4): a topic fires when one of its resource
//! triggers names the changed type (or `Resource`) and lists the interaction (absent = all);
//! a subscription's filters are ANDed and apply only to resources of their type; they are
//! evaluated on the new state, or on the state before a delete.
//!
//! A trigger's `fhirPathCriteria` (compiled with the topic) is evaluated only for the
//! interactions the trigger lists, with `%previous` empty on create and `%current` empty on
//! delete (§2.3 items 21, 22); `%resource` is the current state, or the previous one on
//! delete. `resolve()` goes through the [`Resolver`] the caller passes, which is where any IO
//! happens (ingest reads its store and the transaction being committed); matching itself does
//! none. An evaluation that fails, including one stopped by its budget, does not fire, is
//! reported in the diagnostics and counted in [`criteria_errors_total`].
//!
//! Cost today is O(subscriptions of the topics the change triggers); the indexed matcher of
//! issue #5 replaces `matches_filters` without changing this interface.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::fhir::fhirpath::{Env, Resolver};
use crate::fhir::search::{reference_matches, token_matches};
use crate::fhir::topic::{Interaction, ResourceTrigger, TopicSpec};
use crate::registry::{FilterKind, Registry, SubEntry};

static CRITERIA_ERRORS: AtomicU64 = AtomicU64::new(0);

/// `fhirPathCriteria` evaluations that failed (error or budget) since the process started.
pub fn criteria_errors_total() -> u64 {
    CRITERIA_ERRORS.load(Ordering::Relaxed)
}

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
/// status takes events now (requested, active and error do; off does not). `resolver` serves
/// `resolve()` in `fhirPathCriteria`; without one, references resolve only inside the resource.
pub fn match_change<'a>(
    change: &ResourceChange<'a>,
    registry: &Registry,
    base_url: &str,
    resolver: Option<&'a dyn Resolver<'a>>,
    counts: impl Fn(&str) -> bool,
) -> MatchReport {
    let mut report = MatchReport::default();
    for topic in registry.topics() {
        if !topic_fires(topic, change, resolver, &mut report.diagnostics) {
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

/// Does any trigger of `topic` fire for `change`?
fn topic_fires<'a>(
    topic: &TopicSpec,
    change: &ResourceChange<'a>,
    resolver: Option<&'a dyn Resolver<'a>>,
    diagnostics: &mut Vec<String>,
) -> bool {
    topic.triggers.iter().any(|t| trigger_fires(topic, t, change, resolver, diagnostics))
}

fn trigger_fires<'a>(
    topic: &TopicSpec,
    trigger: &ResourceTrigger,
    change: &ResourceChange<'a>,
    resolver: Option<&'a dyn Resolver<'a>>,
    diagnostics: &mut Vec<String>,
) -> bool {
    if !trigger.fires_on(change.resource_type, change.interaction) {
        return false;
    }
    let Some(criteria) = &trigger.fhir_path else {
        return true;
    };
    let mut env =
        Env::new(change.current.or(change.previous)).with_variable("previous", change.previous).with_variable("current", change.current);
    if let Some(r) = resolver {
        env = env.with_resolver(r);
    }
    match criteria.0.evaluate_bool(&env) {
        Ok(result) => result == Some(true),
        Err(e) => {
            CRITERIA_ERRORS.fetch_add(1, Ordering::Relaxed);
            diagnostics.push(format!("topic {}: fhirPathCriteria not evaluable on {}/{}: {e}", topic.url, change.resource_type, change.id));
            false
        }
    }
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
