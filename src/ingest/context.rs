//! Additional context for events: a topic's `notificationShape` `include`/`revInclude`
//! directives resolved while the change is committed, so an event records the versions it
//! saw (digest §2.9; notifications render those versions, never today's).
//!
//! Reads go first to the transaction being committed (`Plan.pending`) and its apply group,
//! then to the store, as `resolver` does for `resolve()`. A resource written by this commit (or
//! its group) gets the version number the commit gives it: each resource appears at most once
//! in a transaction and in a group, so that is the stored latest plus one.

use std::collections::BTreeSet;

use serde_json::Value;

use super::resolver::Pending;
use crate::fhir::search::include::{self, Found, IncludeSource};
use crate::fhir::search::{normalize_reference_query, SearchParam};
use crate::fhir::topic::TopicSpec;
use crate::store::index::Probe;
use crate::store::{ContextRef, Store, StoreError};

/// Most resources one event carries as additional context.
pub(super) const MAX_CONTEXT: usize = 100;

pub(super) struct CommitIncludes<'c> {
    store: &'c Store,
    pending: Pending<'c>,
    base_url: &'c str,
}

impl<'c> CommitIncludes<'c> {
    pub(super) fn new(store: &'c Store, pending: Pending<'c>, base_url: &'c str) -> Self {
        CommitIncludes { store, pending, base_url }
    }
}

impl IncludeSource for CommitIncludes<'_> {
    type Error = StoreError;

    fn base_url(&self) -> &str {
        self.base_url
    }

    fn load(&self, resource_type: &str, id: &str) -> Result<Option<Value>, StoreError> {
        if let Some(state) = self.pending.get(&format!("{resource_type}/{id}")) {
            return Ok(state.clone());
        }
        Ok(self.store.latest(resource_type, id)?.filter(|r| !r.deleted).and_then(|r| r.resource))
    }

    fn referencing(&self, source: &str, param: &SearchParam, target: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids = BTreeSet::new();
        let prefix = format!("{source}/");
        ids.extend(self.pending.keys().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_owned));
        if let Some(key) = normalize_reference_query(target, self.base_url) {
            let scanned = self.store.index_scan(source, &param.code, &Probe::Equal(key), |sid| {
                ids.insert(sid.to_owned());
                ids.len() <= limit
            });
            match scanned {
                Ok(()) => {}
                // An unindexed parameter on a large store: the context is incomplete, the write
                // is not refused for it.
                Err(StoreError::ScanLimit { resource_type, code, limit }) => {
                    tracing::warn!(%resource_type, %code, limit, "revInclude on an unindexed parameter stopped at the scan limit; add it to [search] index");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// The context `topic`'s shapes give an event on `focus` (`Type`, `id`, its new state).
pub(super) fn event_context(
    store: &Store,
    pending: Pending<'_>,
    base_url: &str,
    topic: &TopicSpec,
    focus: (&str, &str, &Value),
) -> Result<Vec<ContextRef>, StoreError> {
    let (ty, id, resource) = focus;
    let shapes = topic.shapes.iter().filter(|s| s.resource == ty || s.resource == "Resource");
    let (mut includes, mut rev_includes) = (Vec::new(), Vec::new());
    for shape in shapes {
        includes.extend(shape.includes.iter().cloned());
        rev_includes.extend(shape.rev_includes.iter().cloned());
    }
    if includes.is_empty() && rev_includes.is_empty() {
        return Ok(Vec::new());
    }
    let src = CommitIncludes::new(store, pending, base_url);
    let seeds: Vec<Found> = vec![(ty.to_owned(), id.to_owned(), resource.clone())];
    let expansion = include::expand(&src, &includes, &rev_includes, &seeds, MAX_CONTEXT)?;
    if expansion.truncated {
        tracing::warn!(topic = %topic.url, max = MAX_CONTEXT, "notificationShape context stopped at the limit");
    }
    versions_of(store, pending, expansion.found)
}

/// Each found resource with the version it has once this commit is applied.
pub(super) fn versions_of(store: &Store, pending: Pending<'_>, found: Vec<Found>) -> Result<Vec<ContextRef>, StoreError> {
    let mut out = Vec::with_capacity(found.len());
    for (rty, rid, _) in found {
        let latest = store.latest(&rty, &rid)?;
        let seq = if pending.get(&format!("{rty}/{rid}")).is_some_and(Option::is_some) {
            latest.map_or(1, |r| r.seq + 1)
        } else {
            match latest {
                Some(r) if !r.deleted => r.seq,
                _ => continue,
            }
        };
        out.push(ContextRef { resource_type: rty, id: rid, seq });
    }
    Ok(out)
}
