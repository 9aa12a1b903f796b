//! Searches in id order (no `_sort`, or `_sort=_id`): a page is read from the index from the
//! cursor onwards and the walk stops once the page is full, so page N costs what page 1 costs
//! however many resources match.
//!
//! In: a parsed `Query`, the cursor's id and direction, `_count`, the limits. Out: the page,
//! whether more follows, and counts when a total is asked for. The driving stream is the most
//! selective clause that the index walks in id order (`_id`, token/reference/uri equality, see
//! `Store::index_walk`); without one, a clause with at most `max_scan` entries (a date, a
//! string prefix) is read whole and sorted, and otherwise the type's current ids are walked.
//! Every candidate then passes the other clauses' key lookups and `plan::check` (every clause,
//! and through `StoreContext::load` what the caller may see), so a cursor, which is only a
//! position, can never reach a resource the query and the caller would not.
//! One page examines at most `max_scan` candidates: when matches are sparse the page may come
//! back short, with a `next` link from where it stopped.

use std::collections::BTreeSet;

use super::context::StoreContext;
use super::plan::{admits, check, count_up_to, indexed_accesses, scan, Access, Driver, Limits, SearchFailure};
use super::render::Found;
use crate::fhir::search::query::Query;
use crate::store::index::{Position, Probe};
use crate::store::StoreError;

/// Most entries planning counts of a clause the index walks in id order: past it, any such
/// clause drives well enough (each page stops once full).
const PLAN_COUNT: usize = 10_000;
/// Entries of each clause counted in planning's first round.
const FIRST_COUNT: usize = 256;
/// Most driving keys counted for an estimated total.
pub const ESTIMATE_KEYS: usize = 10_000_000;

/// Where candidates come from, in id order.
enum Stream {
    /// Sorted and unique: `_id` values, or a small clause read whole.
    Ids(Vec<String>),
    /// Equality probes the index walks in id order.
    Index { code: String, probes: Vec<Probe> },
    /// Every current resource of the type.
    Scan,
}

/// A planned id-order search: the driving stream and the key lookups that narrow it.
pub struct Walk<'q> {
    stream: Stream,
    filters: Vec<Access>,
    query: &'q Query,
    pub driver: Driver,
}

/// What one page read.
pub struct Page {
    pub rows: Vec<Found>,
    /// A match beyond the page was seen.
    pub more: bool,
    /// The walk stopped at `max_scan` candidates, here, before the page was full or the
    /// stream ended.
    pub stopped_at: Option<String>,
    /// Candidates the walk examined: the page's cost, whatever the number of matches.
    pub examined: usize,
}

/// A bounded count of matches.
pub enum Counted {
    Exact(usize),
    /// The bound was reached: `matched` of the first `examined` candidates matched.
    Over {
        matched: usize,
        examined: usize,
    },
}

fn walkable(a: &Access) -> bool {
    match a {
        Access::Ids(_) => true,
        Access::Probes { probes, .. } => probes.iter().all(|p| matches!(p, Probe::Equal(_))),
    }
}

/// Plans `query` for an id-order walk. Counting clauses to choose the driver stops at the
/// best so far, at `FIRST_COUNT` in a first round, then at `PLAN_COUNT` for walkable clauses
/// and `max_scan` for the others; a lone walkable clause is not counted.
pub fn plan<'q>(ctx: &StoreContext<'_>, query: &'q Query, limits: &Limits) -> Result<Walk<'q>, SearchFailure> {
    let ty = query.resource_type.as_str();
    let mut accesses = indexed_accesses(ctx, query);
    // `_id` first, then walkable clauses: their counts are cheap and lower the cap for the rest.
    accesses.sort_by_key(|a| match a {
        Access::Ids(_) => 0,
        a if walkable(a) => 1,
        _ => 2,
    });
    let mut best: Option<(usize, usize)> = None;
    if let [a] = accesses.as_slice() {
        if walkable(a) {
            best = Some((0, 0));
        }
    }
    // A first round counts each clause only up to `FIRST_COUNT`: when one is that small, no
    // large clause is counted far whatever the order of the query's parameters.
    for round in [FIRST_COUNT, usize::MAX] {
        if best.is_some() {
            break;
        }
        let mut found: Option<(usize, usize)> = None;
        for (i, a) in accesses.iter().enumerate() {
            let limit = if walkable(a) { PLAN_COUNT } else { limits.max_scan }.saturating_add(1).min(round);
            let cap = found.map_or(limit, |(n, _)| n.min(limit));
            let n = count_up_to(ctx, ty, a, cap)?;
            if found.is_none_or(|(b, _)| n < b) {
                found = Some((n, i));
            }
        }
        match found {
            Some((n, _)) if n >= round => {}
            other => best = other.or(best),
        }
        if found.is_none() {
            break;
        }
    }
    let Some((count, chosen)) = best else { return Ok(Walk { stream: Stream::Scan, filters: Vec::new(), query, driver: Driver::Scan }) };
    let chosen = match accesses.get(chosen) {
        Some(a) if walkable(a) => chosen,
        Some(a) if count <= limits.max_scan => {
            // A small date or string clause: read it whole, narrow it, walk the sorted ids.
            let mut ids = BTreeSet::new();
            scan(ctx, ty, a, |id| {
                ids.insert(id.to_owned());
                true
            })?;
            let driver = match a {
                Access::Probes { code, .. } => Driver::Index(code.clone()),
                Access::Ids(_) => Driver::Ids,
            };
            let filters: Vec<Access> = accesses.iter().enumerate().filter(|(i, _)| *i != chosen).map(|(_, a)| a.clone()).collect();
            let mut kept = Vec::with_capacity(ids.len());
            for id in ids {
                if admitted(ctx, ty, &filters, &id)? {
                    kept.push(id);
                }
            }
            return Ok(Walk { stream: Stream::Ids(kept), filters: Vec::new(), query, driver });
        }
        // Only large clauses the index cannot walk in id order: walk the type.
        _ => match accesses.iter().position(walkable) {
            Some(i) => i,
            None => return Ok(Walk { stream: Stream::Scan, filters: accesses, query, driver: Driver::Scan }),
        },
    };
    let drive = accesses.remove(chosen);
    let (stream, driver) = match drive {
        Access::Ids(mut ids) => {
            ids.sort();
            ids.dedup();
            (Stream::Ids(ids), Driver::Ids)
        }
        Access::Probes { code, probes } => {
            let driver = Driver::Index(code.clone());
            (Stream::Index { code, probes }, driver)
        }
    };
    Ok(Walk { stream, filters: accesses, query, driver })
}

/// Whether every filter's key lookups admit `id` (those that cannot say admit it).
fn admitted(ctx: &StoreContext<'_>, ty: &str, filters: &[Access], id: &str) -> Result<bool, StoreError> {
    for f in filters {
        if admits(ctx, ty, f, id)? == Some(false) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Walk<'_> {
    /// Visits candidate ids from `from` in its direction until `visit` says stop or fails.
    fn walk(
        &self,
        ctx: &StoreContext<'_>,
        from: Position<'_>,
        mut visit: impl FnMut(&str) -> Result<bool, SearchFailure>,
    ) -> Result<(), SearchFailure> {
        let ty = self.query.resource_type.as_str();
        let mut failure = None;
        let mut go = |id: &str| match visit(id) {
            Ok(more) => more,
            Err(e) => {
                failure = Some(e);
                false
            }
        };
        match &self.stream {
            Stream::Ids(ids) => {
                let start = match from.after {
                    Some(a) if from.back => ids.partition_point(|id| id.as_str() < a),
                    Some(a) => ids.partition_point(|id| id.as_str() <= a),
                    None if from.back => ids.len(),
                    None => 0,
                };
                if from.back {
                    let mut before = ids.get(..start).unwrap_or_default().iter().rev();
                    before.try_for_each(|id| go(id).then_some(()));
                } else {
                    let mut after = ids.get(start..).unwrap_or_default().iter();
                    after.try_for_each(|id| go(id).then_some(()));
                }
            }
            Stream::Index { code, probes } => {
                // `plan` drives only by probes the index walks; a refusal here is a planning bug.
                if !ctx.store.index_walk(ty, code, probes, from, &mut go)? {
                    return Err(SearchFailure::Unsupported(format!("{code}: the index cannot walk this clause in id order")));
                }
            }
            Stream::Scan => ctx.store.current_walk(ty, from, &mut go)?,
        }
        failure.map_or(Ok(()), Err)
    }

    /// The match `id`, if it passes the filters and every clause as the caller sees it.
    fn matched(&self, ctx: &StoreContext<'_>, id: &str, errors: &mut usize) -> Result<Option<serde_json::Value>, SearchFailure> {
        let ty = self.query.resource_type.as_str();
        if !admitted(ctx, ty, &self.filters, id)? {
            return Ok(None);
        }
        check(ctx, self.query, id, errors)
    }

    /// Up to `count` matches from `from`, examining at most `max_scan` candidates.
    pub fn page(
        &self,
        ctx: &StoreContext<'_>,
        from: Position<'_>,
        count: usize,
        max_scan: usize,
        errors: &mut usize,
    ) -> Result<Page, SearchFailure> {
        let ty = self.query.resource_type.as_str();
        let mut page = Page { rows: Vec::new(), more: false, stopped_at: None, examined: 0 };
        self.walk(ctx, from, |id| {
            page.examined += 1;
            if let Some(r) = self.matched(ctx, id, errors)? {
                if page.rows.len() == count {
                    page.more = true;
                    return Ok(false);
                }
                page.rows.push((ty.to_owned(), id.to_owned(), r));
            }
            if page.examined >= max_scan {
                page.stopped_at = Some(id.to_owned());
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(page)
    }

    /// Matches counted by checking at most `limit` candidates.
    pub fn count(&self, ctx: &StoreContext<'_>, limit: usize, errors: &mut usize) -> Result<Counted, SearchFailure> {
        let (mut matched, mut examined, mut over) = (0usize, 0usize, false);
        self.walk(ctx, Position { after: None, back: false }, |id| {
            if examined == limit {
                over = true;
                return Ok(false);
            }
            examined += 1;
            if self.matched(ctx, id, errors)?.is_some() {
                matched += 1;
            }
            Ok(true)
        })?;
        Ok(if over { Counted::Over { matched, examined } } else { Counted::Exact(matched) })
    }

    /// Driving candidates, keys only (no resource read), up to `limit`.
    pub fn candidates_up_to(&self, ctx: &StoreContext<'_>, limit: usize) -> Result<usize, SearchFailure> {
        let mut n = 0usize;
        self.walk(ctx, Position { after: None, back: false }, |_| {
            n += 1;
            Ok(n < limit)
        })?;
        Ok(n)
    }
}
