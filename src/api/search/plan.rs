//! The planner: which resources a query must look at, found through the search index.
//!
//! In: a parsed `Query`. Out: candidate ids (a superset of the matches), then the matches,
//! decided for every candidate by `matcher::clause_matches` on every clause, so that search
//! semantics live in one place and the index is only a pre-filter. Rules:
//! - a clause is indexable when it is `_id`, token/reference/uri equality (no modifier but
//!   `:[type]`), uri `:below`, string prefix (none or `:exact`), or a date with `eq`, `gt`,
//!   `ge`, `lt`, `le`, `sa` or `eb`; every value of the clause must be indexable;
//!   Subscription `status` never is (the server owns it, the stored body lags), nor a clause
//!   the store's index set does not answer (`Store::index_answers`: parameter not configured
//!   in `[search] index`, or a system-only token);
//! - of the indexable clauses the one with the fewest entries drives (counting stops at the
//!   best so far, so planning costs at most the winner's size); other equality clauses then
//!   drop candidates by key lookups before any resource is read;
//! - with no indexable clause the type's resources are scanned, up to `max_scan`; beyond it,
//!   and for a driving clause with more than `max_scan` entries, the answer is `too-costly`.
//!
//! `candidates` serves searches sorted by anything but id (`_sort`), which need every match;
//! id-order searches page through `walk` instead, with no such bound.

use std::collections::BTreeSet;

use serde_json::Value;

use super::context::StoreContext;
use crate::fhir::search::date::Prefix;
use crate::fhir::search::matcher::clause_matches;
use crate::fhir::search::query::{Clause, ClauseKind, Modifier, Query};
use crate::fhir::search::value::{normalize_string, SearchValue};
use crate::fhir::search::{normalize_reference_query, normalize_token_query, ParamType, SearchError};
use crate::store::index::{EntryKind, Probe};
use crate::store::StoreError;

/// Bounds on one search.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most candidates a search reads (index entries of the driving clause, or resources).
    pub max_scan: usize,
    /// Most resources `_include`/`_revinclude` add to one page.
    pub max_include: usize,
    /// Up to this many candidates, an accurate `total` is given by default.
    pub cheap_total: usize,
    /// Most candidates checked to count a total (`_total`, `_summary=count`).
    pub max_total: usize,
    /// Most `name=value` parameters one search may have.
    pub max_params: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchFailure {
    #[error("{0}")]
    TooCostly(String),
    /// The query asks for something Herald cannot decide (an unknown ValueSet...).
    #[error("{0}")]
    Unsupported(String),
    #[error("store failure during search")]
    Store(#[from] StoreError),
}

/// How a clause reaches the index.
#[derive(Debug, Clone)]
pub(super) enum Access {
    Ids(Vec<String>),
    Probes { code: String, probes: Vec<Probe> },
}

/// How candidates were found, for logs and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    Ids,
    Index(String),
    Scan,
}

pub struct Candidates {
    pub ids: BTreeSet<String>,
    pub driver: Driver,
}

fn date_probe(prefix: Prefix, start: i64, end: i64) -> Option<Probe> {
    Some(match prefix {
        Prefix::Eq => Probe::Start { lo: start, hi: end.saturating_add(1) },
        Prefix::Gt => Probe::End { lo: end.saturating_add(1), hi: i64::MAX },
        Prefix::Ge => Probe::End { lo: start, hi: i64::MAX },
        Prefix::Lt => Probe::Start { lo: i64::MIN, hi: start },
        Prefix::Le => Probe::Start { lo: i64::MIN, hi: end.saturating_add(1) },
        Prefix::Sa => Probe::Start { lo: end, hi: i64::MAX },
        Prefix::Eb => Probe::End { lo: i64::MIN, hi: start.saturating_add(1) },
        Prefix::Ne | Prefix::Ap => return None,
    })
}

/// How `clause` on `resource_type` can use the index, if it can.
pub(super) fn access(clause: &Clause, resource_type: &str, base_url: &str) -> Option<Access> {
    let ClauseKind::Param { param, modifier, values } = &clause.kind else { return None };
    if resource_type == "Subscription" && param.code == "status" {
        return None;
    }
    if param.code == "_id" {
        if modifier.is_some() {
            return None;
        }
        let ids = values.iter().map(|v| if let SearchValue::Token(t) = v { Some(t.trim_start_matches('|').to_owned()) } else { None });
        return ids.collect::<Option<Vec<_>>>().map(Access::Ids);
    }
    let mut probes = Vec::with_capacity(values.len());
    for value in values {
        let probe = match (param.kind, modifier, value) {
            (ParamType::Token, None, SearchValue::Token(q)) => match normalize_token_query(q) {
                Some(key) => Probe::Equal(key),
                None => continue, // matches nothing
            },
            (ParamType::Reference, None | Some(Modifier::Type(_)), SearchValue::Reference(q)) => {
                match normalize_reference_query(q, base_url) {
                    Some(key) => Probe::Equal(key),
                    None => continue,
                }
            }
            (ParamType::Uri, None, SearchValue::Uri(q)) => Probe::Equal(q.clone()),
            (ParamType::Uri, Some(Modifier::Below), SearchValue::Uri(q)) => Probe::Prefix(EntryKind::Equal, q.clone()),
            (ParamType::String, None, SearchValue::String(q)) => Probe::Prefix(EntryKind::Text, q.clone()),
            (ParamType::String, Some(Modifier::Exact), SearchValue::String(q)) => Probe::Prefix(EntryKind::Text, normalize_string(q)),
            (ParamType::Date, None, SearchValue::Date { prefix, range }) => date_probe(*prefix, range.start, range.end)?,
            _ => return None,
        };
        probes.push(probe);
    }
    Some(Access::Probes { code: param.code.clone(), probes })
}

/// Does `access` select `id` by key lookups alone? `None` when it cannot say (not equality).
pub(super) fn admits(ctx: &StoreContext<'_>, resource_type: &str, access: &Access, id: &str) -> Result<Option<bool>, StoreError> {
    match access {
        Access::Ids(ids) => Ok(Some(ids.iter().any(|i| i == id))),
        Access::Probes { code, probes } => {
            for p in probes {
                let Probe::Equal(key) = p else { return Ok(None) };
                if ctx.store.index_contains(resource_type, code, key, id)? {
                    return Ok(Some(true));
                }
            }
            Ok(Some(false))
        }
    }
}

/// Visits the ids `access` selects, until `visit` says stop.
pub(super) fn scan(
    ctx: &StoreContext<'_>,
    resource_type: &str,
    access: &Access,
    mut visit: impl FnMut(&str) -> bool,
) -> Result<(), StoreError> {
    match access {
        Access::Ids(ids) => {
            for id in ids {
                if !visit(id) {
                    break;
                }
            }
            Ok(())
        }
        Access::Probes { code, probes } => {
            let mut go = true;
            for p in probes {
                ctx.store.index_scan(resource_type, code, p, |id| {
                    go = visit(id);
                    go
                })?;
                if !go {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// The index accesses of `query`'s clauses that the index can answer.
pub(super) fn indexed_accesses(ctx: &StoreContext<'_>, query: &Query) -> Vec<Access> {
    let ty = query.resource_type.as_str();
    let answered = |a: &Access| match a {
        Access::Ids(_) => true,
        Access::Probes { code, probes } => probes.iter().all(|p| ctx.store.index_answers(ty, code, p)),
    };
    query.clauses.iter().filter_map(|c| access(c, ty, ctx.base_url)).filter(answered).collect()
}

/// How many ids `a` yields, counted only up to `cap`.
pub(super) fn count_up_to(ctx: &StoreContext<'_>, ty: &str, a: &Access, cap: usize) -> Result<usize, StoreError> {
    if let Access::Ids(ids) = a {
        return Ok(ids.len());
    }
    let mut n = 0usize;
    scan(ctx, ty, a, |_| {
        n += 1;
        n < cap
    })?;
    Ok(n)
}

/// Candidate ids for `query`: every resource that may match, and no more than `max_scan`.
pub fn candidates(ctx: &StoreContext<'_>, query: &Query, limits: &Limits, use_index: bool) -> Result<Candidates, SearchFailure> {
    let ty = query.resource_type.as_str();
    let accesses: Vec<Access> = if use_index { indexed_accesses(ctx, query) } else { Vec::new() };
    // Pick the smallest, counting each only up to the best so far.
    let mut best: Option<(usize, usize)> = None;
    for (i, a) in accesses.iter().enumerate() {
        let cap = best.map_or(limits.max_scan.saturating_add(1), |(n, _)| n);
        let n = count_up_to(ctx, ty, a, cap)?;
        if best.is_none_or(|(b, _)| n < b) {
            best = Some((n, i));
        }
    }
    let Some((count, driving)) = best else {
        let ids = ctx.store.current_ids(ty, None, limits.max_scan.saturating_add(1))?;
        if ids.len() > limits.max_scan {
            return Err(SearchFailure::TooCostly(format!(
                "this search has no indexed clause and {ty} holds more than {} resources; add a token, reference, date or string clause",
                limits.max_scan
            )));
        }
        return Ok(Candidates { ids: ids.into_iter().collect(), driver: Driver::Scan });
    };
    if count > limits.max_scan {
        return Err(SearchFailure::TooCostly(format!(
            "the most selective clause of this search matches more than {} {ty} resources; narrow it",
            limits.max_scan
        )));
    }
    let Some(drive) = accesses.get(driving) else { return Ok(Candidates { ids: BTreeSet::new(), driver: Driver::Scan }) };
    let mut ids = BTreeSet::new();
    scan(ctx, ty, drive, |id| {
        ids.insert(id.to_owned());
        true
    })?;
    for (i, other) in accesses.iter().enumerate() {
        if i == driving {
            continue;
        }
        let mut kept = BTreeSet::new();
        for id in ids {
            if admits(ctx, ty, other, &id)?.unwrap_or(true) {
                kept.insert(id);
            }
        }
        ids = kept;
    }
    let driver = match drive {
        Access::Ids(_) => Driver::Ids,
        Access::Probes { code, .. } => Driver::Index(code.clone()),
    };
    Ok(Candidates { ids, driver })
}

/// The current resource `id` if it satisfies every clause of `query`. An evaluation error on
/// one resource counts as no match (counted in `errors`); an unsupported request fails all.
pub fn check(ctx: &StoreContext<'_>, query: &Query, id: &str, errors: &mut usize) -> Result<Option<Value>, SearchFailure> {
    let ty = query.resource_type.as_str();
    let Some(resource) = ctx.load(ty, id)? else { return Ok(None) };
    for clause in &query.clauses {
        let outcome = clause_matches(clause, ty, &resource, ctx);
        // A store failure inside the context (a scan limit, an engine error) voids the answer,
        // whatever the clause concluded without the data it could not read.
        if let Some(e) = ctx.failure.borrow_mut().take() {
            return Err(SearchFailure::Store(e));
        }
        match outcome {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(SearchError::Unsupported { what, .. }) => {
                return Err(SearchFailure::Unsupported(format!("{}: {what}", clause.text)));
            }
            Err(_) => {
                *errors += 1;
                return Ok(None);
            }
        }
    }
    Ok(Some(resource))
}

/// Every match of `query` in id order (for benchmarks and small result sets).
pub fn all_matches(ctx: &StoreContext<'_>, query: &Query, limits: &Limits, use_index: bool) -> Result<Vec<(String, Value)>, SearchFailure> {
    let found = candidates(ctx, query, limits, use_index)?;
    let mut errors = 0;
    let mut out = Vec::new();
    for id in found.ids {
        if let Some(r) = check(ctx, query, &id, &mut errors)? {
            out.push((id, r));
        }
    }
    Ok(out)
}
