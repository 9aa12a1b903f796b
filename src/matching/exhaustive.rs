//! The reference matcher: every subscription of every fired topic, every filter evaluated on
//! the resource, as Herald matched before the index (issue #5). Not used by ingest (except
//! when asked with a base the index was not built for); the equivalence proptest and the
//! matching benchmark compare the indexed matcher against it. Same contract as
//! [`match_change`](super::match_change), but a diagnostic per subscription and filter that
//! cannot be evaluated, and topics in no particular order.

use crate::fhir::fhirpath::Resolver;
use crate::registry::{Registry, SubEntry};

use super::{topic_fires, Match, MatchReport, ResourceChange};

#[doc(hidden)]
pub fn match_change_exhaustive<'a>(
    change: &ResourceChange<'a>,
    registry: &Registry,
    base_url: &str,
    resolver: Option<&'a dyn Resolver<'a>>,
    counts: impl Fn(&str) -> bool,
) -> MatchReport {
    let mut report = MatchReport::default();
    for topic in registry.topics() {
        if registry.subscriber_count(&topic.id) == 0 {
            continue;
        }
        if !topic_fires(topic, change, resolver, base_url, &mut report.diagnostics) {
            continue;
        }
        for sub in registry.subscribers(&topic.id) {
            if !counts(&sub.spec.id) {
                continue;
            }
            if matches_filters(sub, change, base_url, &mut report.diagnostics) {
                report.matches.push(Match {
                    subscription_id: sub.spec.id.clone(),
                    topic_id: topic.id.clone(),
                    topic_url: topic.url.clone(),
                });
            }
        }
    }
    report
}

fn matches_filters(sub: &SubEntry, change: &ResourceChange<'_>, base_url: &str, diagnostics: &mut Vec<String>) -> bool {
    let subject = change.filter_subject();
    sub.filters.iter().all(|filter| {
        let Some(param) = filter.applicable_param(change.resource_type) else {
            // R5: a filter only applies to resources of its type.
            return true;
        };
        let Some(resource) = subject else { return false };
        match param.values(change.resource_type, resource) {
            Ok(values) => match filter.matches(param, &values, base_url) {
                Ok(matched) => matched,
                Err(e) => {
                    diagnostics.push(format!("subscription {}: filter {} not decidable: {e}", sub.spec.id, param.code));
                    false
                }
            },
            Err(e) => {
                diagnostics
                    .push(format!("subscription {}: filter {} not evaluable on {}: {e}", sub.spec.id, param.code, change.resource_type));
                false
            }
        }
    })
}
