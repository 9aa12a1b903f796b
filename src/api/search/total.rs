//! `Bundle.total` for id-order searches: computed only when asked for, and then bounded.
//!
//! In: a planned `Walk`, the `_total`/`_summary` options and the page just read. Out: the
//! total or none, and an informational note when it is an estimate. Rules (docs/search.md):
//! - no `_total`: a total only when it is free or cheap: the first page holds every match, or
//!   the driving clause has at most `search.cheap_total` candidates (counted by key);
//! - `_total=none`: never;
//! - `_total=accurate`: every candidate checked, up to `search.max_total`; beyond it 400
//!   `too-costly` (Herald does not call a guess accurate);
//! - `_total=estimate` and `_summary=count`: exact up to `search.max_total` candidates; beyond
//!   it the share of matches among those checked times the driving clause's key count (up to
//!   `walk::ESTIMATE_KEYS`), with a note. A caller who may not see every resource of the type
//!   (a patient compartment; Subscriptions of other clients) gets no estimate, since index
//!   counts include what it may not read: no total, or for `_summary=count` 400 `too-costly`.

use super::context::StoreContext;
use super::page::{Options, Total};
use super::plan::{Limits, SearchFailure};
use super::walk::{Counted, Page, Walk, ESTIMATE_KEYS};
use crate::fhir::Issue;

/// What counting may do for one search.
pub struct Counting<'a> {
    pub limits: &'a Limits,
    /// The caller sees every resource of the searched type, so an estimate from index counts
    /// tells it nothing it could not read (`Access::sees_whole_type`).
    pub estimable: bool,
}

/// The total to show beside `page`, if any.
pub fn of_page(
    walk: &Walk<'_>,
    ctx: &StoreContext<'_>,
    opts: &Options,
    counting: &Counting<'_>,
    page: &Page,
    errors: &mut usize,
    notes: &mut Vec<Issue>,
) -> Result<Option<usize>, SearchFailure> {
    let limits = counting.limits;
    match opts.total {
        Total::None => Ok(None),
        Total::Default => {
            if opts.cursor.is_none() && !page.more && page.stopped_at.is_none() {
                return Ok(Some(page.rows.len()));
            }
            if walk.candidates_up_to(ctx, limits.cheap_total.saturating_add(1))? > limits.cheap_total {
                return Ok(None);
            }
            Ok(match walk.count(ctx, limits.cheap_total, errors)? {
                Counted::Exact(n) => Some(n),
                Counted::Over { .. } => None,
            })
        }
        Total::Accurate => accurate(walk, ctx, limits, errors).map(Some),
        Total::Estimate => estimate(walk, ctx, counting, errors, notes),
    }
}

/// The total of `_summary=count`: accurate when `_total=accurate` asks for it, else estimated
/// beyond `max_total`.
pub fn summary_count(
    walk: &Walk<'_>,
    ctx: &StoreContext<'_>,
    opts: &Options,
    counting: &Counting<'_>,
    errors: &mut usize,
    notes: &mut Vec<Issue>,
) -> Result<usize, SearchFailure> {
    let limits = counting.limits;
    if opts.total == Total::Accurate {
        return accurate(walk, ctx, limits, errors);
    }
    estimate(walk, ctx, counting, errors, notes)?.ok_or_else(|| {
        SearchFailure::TooCostly(format!(
            "more than {} candidates to count (search.max_total), and a count estimated from the index could include resources \
             this client may not read; narrow the search",
            limits.max_total
        ))
    })
}

fn accurate(walk: &Walk<'_>, ctx: &StoreContext<'_>, limits: &Limits, errors: &mut usize) -> Result<usize, SearchFailure> {
    match walk.count(ctx, limits.max_total, errors)? {
        Counted::Exact(n) => Ok(n),
        Counted::Over { .. } => Err(SearchFailure::TooCostly(format!(
            "an accurate total needs more than {} candidates checked (search.max_total); use _total=estimate or narrow the search",
            limits.max_total
        ))),
    }
}

fn estimate(
    walk: &Walk<'_>,
    ctx: &StoreContext<'_>,
    counting: &Counting<'_>,
    errors: &mut usize,
    notes: &mut Vec<Issue>,
) -> Result<Option<usize>, SearchFailure> {
    let limits = counting.limits;
    let (matched, examined) = match walk.count(ctx, limits.max_total, errors)? {
        Counted::Exact(n) => return Ok(Some(n)),
        Counted::Over { matched, examined } => (matched, examined),
    };
    if !counting.estimable {
        notes.push(Issue::info(format!(
            "no total: more than {} candidates (search.max_total), and an estimate from the index could count resources this client may not read",
            limits.max_total
        )));
        return Ok(None);
    }
    let keys = walk.candidates_up_to(ctx, ESTIMATE_KEYS)?;
    let share = (matched as u128).saturating_mul(keys as u128) / (examined.max(1) as u128);
    let total = usize::try_from(share).unwrap_or(usize::MAX);
    let floor = if keys >= ESTIMATE_KEYS { "at least " } else { "" };
    notes.push(Issue::info(format!(
        "Bundle.total is an estimate: {matched} of the first {examined} candidates matched, of {floor}{keys} candidates in the index"
    )));
    Ok(Some(total))
}
