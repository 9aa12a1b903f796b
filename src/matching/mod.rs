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
//! Cost (issue #5): O(subscribed topics with a trigger for the change's type + subscriptions the
//! registry's [`Index`](crate::registry::Index) files under the change's keys + subscriptions
//! it cannot file by key), not O(all subscriptions). `evaluations` evaluates each
//! SearchParameter at most once per change, for lookups and verification alike;
//! [`filter_matches`] is the one check of one filter. `exhaustive` keeps the plain
//! evaluate-every-subscription matcher as the reference the equivalence proptest and the
//! benchmark compare against. Matches come out by topic id, then subscription id.

mod evaluations;
mod exhaustive;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::fhir::fhirpath::{Env, Resolver};
use crate::fhir::search::matcher::{Code, SearchContext};
use crate::fhir::search::{SearchError, SearchParam};
use crate::fhir::topic::{Interaction, ResourceTrigger, TopicSpec};
use crate::registry::{BoundFilter, Registry, SubEntry};

pub use evaluations::Evaluations;
#[doc(hidden)]
pub use exhaustive::match_change_exhaustive;

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
    pub topic_id: String,
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
    let index = registry.index();
    if index.base_url().is_some_and(|b| b != base_url.trim_end_matches('/')) {
        // Reference keys were normalized against another base: only scanning is right.
        return match_change_exhaustive(change, registry, base_url, resolver, counts);
    }
    let mut report = MatchReport::default();
    let subject = change.filter_subject();
    let mut evaluations = Evaluations::new(change.resource_type, change.id, subject, base_url);
    for topic_id in index.topics_for(change.resource_type) {
        let Some(topic) = registry.topic(topic_id) else { continue };
        // A topic nobody subscribes to (the built-in ones, often) needs no criteria evaluated.
        if registry.subscriber_count(topic_id) == 0 {
            continue;
        }
        if !topic_fires(topic, change, resolver, base_url, &mut report.diagnostics) {
            continue;
        }
        select(topic, change.resource_type, subject.is_some(), registry, &mut evaluations, &counts, &mut report);
    }
    report
}

/// What matching a change of one resource type, and resolving its events' context, may read
/// besides the change's new state (the committer skips reading what is not needed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeReads {
    /// The previous state: a subscribed topic's trigger for the type has criteria
    /// (`%previous`, `queryCriteria`'s previous). Deletes always need it (filters look at it).
    pub previous: bool,
    /// Other resources: criteria may `resolve()` or chain, a notificationShape for the type
    /// includes or reverse-includes.
    pub others: bool,
}

/// `ChangeReads` for changes of `resource_type`, from the subscribed topics that may fire.
pub fn change_reads(registry: &Registry, resource_type: &str) -> ChangeReads {
    let mut reads = ChangeReads::default();
    for topic_id in registry.index().topics_for(resource_type) {
        let Some(topic) = registry.topic(topic_id) else { continue };
        if registry.subscriber_count(topic_id) == 0 {
            continue;
        }
        let criteria = topic
            .triggers
            .iter()
            .any(|t| (t.resource == resource_type || t.resource == "Resource") && (t.fhir_path.is_some() || t.query.is_some()));
        let shaped = topic
            .shapes
            .iter()
            .any(|s| (s.resource == resource_type || s.resource == "Resource") && !(s.includes.is_empty() && s.rev_includes.is_empty()));
        reads.previous |= criteria;
        reads.others |= criteria || shaped;
    }
    reads
}

/// Whether any subscribed topic, for any type, has criteria or a notificationShape that
/// includes: whether planning some change may read resources other than its own.
pub fn any_change_reads_others(registry: &Registry) -> bool {
    registry.topics().any(|topic| {
        registry.subscriber_count(&topic.id) > 0
            && (topic.triggers.iter().any(|t| t.fhir_path.is_some() || t.query.is_some())
                || topic.shapes.iter().any(|s| !(s.includes.is_empty() && s.rev_includes.is_empty())))
    })
}

/// A business event for `eventTrigger`s: its code, its focus, and the state of the focus the
/// subscriptions' filters are evaluated on.
pub struct TopicEvent<'a> {
    pub system: &'a str,
    pub code: &'a str,
    pub resource_type: &'a str,
    pub id: &'a str,
    pub filter_subject: Option<&'a Value>,
}

/// Finds the subscriptions an event concerns: topics with an `eventTrigger` for its code and
/// focus type, then their subscriptions' filters, exactly as for a resource change.
pub fn match_event(event: &TopicEvent<'_>, registry: &Registry, base_url: &str, counts: impl Fn(&str) -> bool) -> MatchReport {
    let mut report = MatchReport::default();
    let mut evaluations = Evaluations::new(event.resource_type, event.id, event.filter_subject, base_url);
    let mut topics: Vec<&Arc<TopicSpec>> =
        registry.topics().filter(|t| t.fires_on_event(event.system, event.code, event.resource_type)).collect();
    topics.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    for topic in topics {
        select(topic, event.resource_type, event.filter_subject.is_some(), registry, &mut evaluations, &counts, &mut report);
    }
    report
}

/// Adds the subscriptions of `topic` whose filters pass for a change of `resource_type`.
fn select(
    topic: &TopicSpec,
    resource_type: &str,
    has_subject: bool,
    registry: &Registry,
    evaluations: &mut Evaluations<'_>,
    counts: &impl Fn(&str) -> bool,
    report: &mut MatchReport,
) {
    let Some(subs) = registry.index().for_type(&topic.id, resource_type) else { return };
    let mut found: Vec<&Arc<SubEntry>> = subs.everything().iter().filter(|s| counts(&s.spec.id)).collect();
    // Without a state to filter on, every applicable filter fails (R5 filters look at the
    // new state, or the old one on delete).
    if has_subject {
        let mut candidates: Vec<&Arc<SubEntry>> = Vec::new();
        for keyed in subs.keyed() {
            for key in evaluations.keys(keyed.param(), keyed.space(), &mut report.diagnostics) {
                candidates.extend(keyed.get(key));
            }
        }
        candidates.extend(subs.scanned());
        for sub in candidates {
            if counts(&sub.spec.id) && filters_match(sub, evaluations, &mut report.diagnostics) {
                found.push(sub);
            }
        }
    }
    found.sort_unstable_by(|a, b| a.spec.id.cmp(&b.spec.id));
    found.dedup_by(|a, b| a.spec.id == b.spec.id);
    report.matches.extend(found.into_iter().map(|s| Match {
        subscription_id: s.spec.id.clone(),
        topic_id: topic.id.clone(),
        topic_url: topic.url.clone(),
    }));
}

/// Does any trigger of `topic` fire for `change`?
fn topic_fires<'a>(
    topic: &TopicSpec,
    change: &ResourceChange<'a>,
    resolver: Option<&'a dyn Resolver<'a>>,
    base_url: &str,
    diagnostics: &mut Vec<String>,
) -> bool {
    topic.triggers.iter().any(|t| trigger_fires(topic, t, change, resolver, base_url, diagnostics))
}

fn trigger_fires<'a>(
    topic: &TopicSpec,
    trigger: &ResourceTrigger,
    change: &ResourceChange<'a>,
    resolver: Option<&'a dyn Resolver<'a>>,
    base_url: &str,
    diagnostics: &mut Vec<String>,
) -> bool {
    if !trigger.fires_on(change.resource_type, change.interaction) {
        return false;
    }
    let Some(criteria) = &trigger.fhir_path else {
        let Some(query) = &trigger.query else {
            return true;
        };
        let ctx = CriteriaContext { resolver, base_url };
        return match query.passes(change.resource_type, change.previous, change.current, &ctx) {
            Ok(passed) => passed,
            Err(e) => {
                CRITERIA_ERRORS.fetch_add(1, Ordering::Relaxed);
                diagnostics
                    .push(format!("topic {}: queryCriteria not evaluable on {}/{}: {e}", topic.url, change.resource_type, change.id));
                false
            }
        };
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

/// Whether every filter of `sub` that applies to the change's type holds.
fn filters_match(sub: &SubEntry, evaluations: &mut Evaluations<'_>, diagnostics: &mut Vec<String>) -> bool {
    sub.filters.iter().all(|filter| match filter.applicable_param(evaluations.resource_type()) {
        // R5: a filter only applies to resources of its type.
        None => true,
        Some(param) => filter_matches(filter, param, evaluations, diagnostics),
    })
}

/// The one check of one filter against the change, on the values `param` selects (evaluated
/// once per change and shared). A parameter that cannot be evaluated fails the filter; it is
/// reported once per change in `diagnostics`.
pub fn filter_matches(
    filter: &BoundFilter,
    param: &'static SearchParam,
    evaluations: &mut Evaluations<'_>,
    diagnostics: &mut Vec<String>,
) -> bool {
    let base_url = evaluations.base_url();
    let Some(values) = evaluations.values(param, diagnostics) else { return false };
    match filter.matches(param, values, base_url) {
        Ok(matched) => matched,
        Err(e) => {
            diagnostics.push(format!("filter {} not decidable on {}: {e}", param.code, evaluations.resource_type()));
            false
        }
    }
}

#[cfg(test)]
mod tests;

/// What `queryCriteria` may reach while matching: chained references through the commit's
/// resolver. `_has` and `:in` need a search of the store, which matching does not do; such
/// criteria fail (and are counted) rather than silently passing or failing.
struct CriteriaContext<'a, 'b> {
    resolver: Option<&'a dyn Resolver<'a>>,
    base_url: &'b str,
}

impl SearchContext for CriteriaContext<'_, '_> {
    fn base_url(&self) -> &str {
        self.base_url
    }

    fn now_millis(&self) -> i64 {
        crate::fhir::instant::now_millis()
    }

    fn resolve(&self, reference: &str) -> Option<Value> {
        self.resolver.and_then(|r| r.resolve(reference)).cloned()
    }

    fn referencing(&self, source_type: &str, param: &SearchParam, _target: &str) -> Result<Vec<Value>, SearchError> {
        Err(SearchError::Unsupported { url: param.url.clone(), what: format!("_has:{source_type} in topic criteria") })
    }

    fn value_set(&self, url: &str) -> Result<Option<Vec<Code>>, String> {
        Err(format!("ValueSet {url} in topic criteria needs a store search, which matching does not do"))
    }
}
