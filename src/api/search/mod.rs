//! REST search: `GET /fhir/{type}?...` and `POST /fhir/{type}/_search` (form body), answered
//! with `searchset` Bundles.
//!
//! In: the query string (raw, so `+` in a time zone stays `+`, as in topic criteria) and the
//! form body, and `Prefer: handling=strict|lenient`. Out: matches paged by a (sort key, id)
//! cursor, included resources, and an `outcome` entry listing what was ignored. Semantics are
//! `fhir::search` (parse, then `clause_matches` on every candidate). In id order `walk` reads a
//! page from the index from the cursor and `total` counts only when asked; for another
//! `_sort`, `plan` finds every candidate (at most `max_scan`). `page` reads result-control
//! parameters; `render` shapes the Bundle. docs/search.md is the client's view. Searches run on
//! a blocking thread: they read sled and may read many resources.
//!
//! Unknown parameters are ignored and reported under `lenient` (the default, R5) and refused
//! with 400 under `strict`; an invalid value is always 400. More than `search.max_params`
//! parameters: 400 `too-costly`, before any is parsed.

pub mod context;
pub mod page;
pub mod plan;
pub mod render;
pub mod total;
pub mod walk;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use std::sync::Arc;

use super::access::{Access, Caller};
use super::outcome::{fhir_response, ApiError};
use super::rest::check_type;
use super::Shared;
use crate::auth::{Perm, Principal};
use crate::fhir::outcome::operation_outcome;
use crate::fhir::search::query::{decode, Query};
use crate::fhir::search::SearchParams;
use crate::fhir::{Issue, IssueType};
use crate::store::index::Position;
use context::StoreContext;
use page::{compare, encode_cursor, sort_key, Cursor, Options, SortValue, Total};
use plan::{Limits, SearchFailure};
use render::Found;

pub(super) async fn search(
    state: State<Shared>,
    Path(ty): Path<String>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let parts = split_raw(raw.as_deref().unwrap_or(""));
    run(state, principal, ty, &headers, parts).await
}

pub(super) async fn search_post(
    state: State<Shared>,
    Path(ty): Path<String>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: String,
) -> Result<Response, ApiError> {
    let mut parts = split_raw(raw.as_deref().unwrap_or(""));
    // A form body: `+` is a space and everything is percent-encoded.
    parts.extend(url::form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
    run(state, principal, ty, &headers, parts).await
}

/// `name=value` pairs of a raw query string, percent-decoded (`+` kept).
fn split_raw(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(n).into_owned(), decode(v).into_owned())
        })
        .collect()
}

/// Percent-encodes all but unreserved characters and `:/|,` (which decode back unchanged).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/|,".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn strict(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|p| p.split([';', ',']).any(|d| d.trim() == "handling=strict"))
}

/// What one search produced.
struct Outcome {
    page: Vec<Found>,
    included: Vec<Found>,
    total: Option<usize>,
    next: Option<Cursor>,
    previous: Option<Cursor>,
    notes: Vec<Issue>,
}

async fn run(
    State(state): State<Shared>,
    principal: Arc<Principal>,
    ty: String,
    headers: &HeaderMap,
    parts: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    Access::new(&state, &principal).require(&ty, Perm::Search)?;
    // Every parameter is parsed, and may be a chain, `_has` or an include to expand: bound them
    // before any of that work.
    if parts.len() > state.search.max_params {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::TooCostly,
            format!("this search has {} parameters; Herald accepts at most {} (search.max_params)", parts.len(), state.search.max_params),
        ));
    }
    let params = SearchParams::current().map_err(|e| ApiError::internal(&e))?;
    // `_include:iterate` is not a control parameter name `Query::parse` knows: take includes out.
    let (includes, rest): (Vec<_>, Vec<_>) =
        parts.iter().cloned().partition(|(n, _)| n.starts_with("_include") || n.starts_with("_revinclude"));
    let text: Vec<String> = rest.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect();
    let (query, errors) = Query::parse(&ty, &text.join("&"), params);
    let mut control = query.control.clone();
    control.extend(includes);
    let (opts, problems) = page::parse(&ty, &control, params);

    let strict = strict(headers);
    let mut refused = Vec::new();
    let mut ignored = Vec::new();
    for e in &errors {
        let issue =
            Issue::at(if e.is_unknown_parameter() { IssueType::NotSupported } else { IssueType::Value }, clause_name(e), e.to_string());
        if e.is_unknown_parameter() && !strict {
            ignored.push(issue);
        } else {
            refused.push(issue);
        }
    }
    for p in problems {
        if p.ignorable && !strict {
            ignored.push(p.issue);
        } else {
            refused.push(p.issue);
        }
    }
    if !refused.is_empty() {
        return Err(ApiError::issues(StatusCode::BAD_REQUEST, refused));
    }
    let ignored_names: Vec<String> = ignored.iter().filter_map(|i| i.expression.clone()).collect();
    let link_params: Vec<(String, String)> = parts
        .into_iter()
        .filter(|(n, _)| n != "_page" && !ignored_names.iter().any(|i| n == i || n.split(':').next() == Some(i.as_str())))
        .collect();
    let limits = state.search;
    let worker = state.clone();
    let q = query.clone();
    let o = opts.clone();
    let outcome = tokio::task::spawn_blocking(move || execute(&worker, &principal, &q, &o, &limits))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(ApiError::from)?;
    Ok(fhir_response(StatusCode::OK, &bundle(&state.base_url, &ty, &opts, &link_params, outcome, ignored)))
}

fn clause_name(e: &crate::fhir::search::query::QueryError) -> String {
    use crate::fhir::search::query::QueryError as E;
    match e {
        E::UnknownParameter { name, .. } | E::Modifier { name, .. } | E::Value { name, .. } => name.clone(),
        E::Syntax { text, .. } => text.split('=').next().unwrap_or(text).to_owned(),
    }
}

/// A page of matches with its total and links, before includes and shaping.
struct Matches {
    page: Vec<Found>,
    total: Option<usize>,
    next: Option<Cursor>,
    previous: Option<Cursor>,
}

/// Runs the search: the page (`walked` in id order, `sorted` otherwise), includes.
fn execute(
    state: &super::AppState,
    principal: &Principal,
    query: &Query,
    opts: &Options,
    limits: &Limits,
) -> Result<Outcome, SearchFailure> {
    let mut ctx = StoreContext::new(&state.store, &state.base_url);
    // An estimate counts index keys of the searched type: only for a caller who sees all of it.
    let estimable = Access::new(state, principal).sees_whole_type(&query.resource_type);
    if !principal.is_anonymous() {
        let access = Access::new(state, principal);
        ctx = ctx.restricted(Box::new(move |ty, id, resource| access.sees(ty, id, Some(resource))));
    }
    let mut errors = 0usize;
    let mut notes = Vec::new();
    let found = if opts.id_order() {
        walked(&ctx, query, opts, &total::Counting { limits, estimable }, &mut errors, &mut notes)?
    } else {
        sorted(&ctx, query, opts, limits, &mut errors)?
    };
    if errors > 0 {
        notes.push(Issue::info(format!("{errors} resource(s) could not be evaluated against this search and were left out")));
    }
    let included = render::includes(&ctx, opts, &found.page, limits.max_include, &mut notes)?;
    let page = found.page.into_iter().map(|(t, i, r)| (t, i, render::shape(opts, r))).collect();
    Ok(Outcome { page, included, total: found.total, next: found.next, previous: found.previous, notes })
}

/// Id order: the page is walked from the cursor (`walk`), the total counted only when asked
/// (`total`).
fn walked(
    ctx: &StoreContext<'_>,
    query: &Query,
    opts: &Options,
    counting: &total::Counting<'_>,
    errors: &mut usize,
    notes: &mut Vec<Issue>,
) -> Result<Matches, SearchFailure> {
    let ty = query.resource_type.as_str();
    let limits = counting.limits;
    let walk = walk::plan(ctx, query, limits)?;
    if opts.summary_count {
        let total = total::summary_count(&walk, ctx, opts, counting, errors, notes)?;
        return Ok(Matches { page: Vec::new(), total: Some(total), next: None, previous: None });
    }
    let back = opts.cursor.as_ref().is_some_and(|c| c.before);
    let from = Position { after: opts.cursor.as_ref().map(|c| c.id.as_str()), back };
    let mut found = walk.page(ctx, from, opts.count, limits.max_scan, errors)?;
    tracing::debug!(driver = ?walk.driver, examined = found.examined, "search.walk");
    if back {
        found.rows.reverse();
    }
    if let Some(at) = &found.stopped_at {
        notes.push(Issue::info(format!(
            "this page stopped after examining {} candidates (search.max_scan) at {ty}/{at}; follow the links for the rest",
            limits.max_scan
        )));
    }
    let cursor = |id: &str, before: bool| Cursor {
        before,
        key: opts.sort.iter().map(|_| SortValue::Str(id.to_owned())).collect(),
        id: id.to_owned(),
    };
    let first = found.rows.first().map(|(_, id, _)| id.as_str());
    let last = found.rows.last().map(|(_, id, _)| id.as_str());
    let here = opts.cursor.as_ref().map(|c| c.id.as_str());
    // A page ends at its last row when a match beyond it was seen, or where the walk stopped
    // (`max_scan`); the other end is its first row (the cursor itself on an empty page).
    let stopped = found.stopped_at.as_deref();
    let far = if found.more {
        if back {
            first
        } else {
            last
        }
    } else {
        stopped
    };
    let near = if back { last } else { first }.or(here);
    let (next, previous) = if back {
        (near.map(|id| cursor(id, false)), far.map(|id| cursor(id, true)))
    } else {
        (far.map(|id| cursor(id, false)), here.and(near).map(|id| cursor(id, true)))
    };
    let total = total::of_page(&walk, ctx, opts, counting, &found, errors, notes)?;
    Ok(Matches { page: found.rows, total, next, previous })
}

/// Any other order: every candidate (at most `max_scan`) is checked and sorted, so the total
/// is exact and free.
fn sorted(ctx: &StoreContext<'_>, query: &Query, opts: &Options, limits: &Limits, errors: &mut usize) -> Result<Matches, SearchFailure> {
    let ty = query.resource_type.as_str();
    let found = plan::candidates(ctx, query, limits, true)?;
    tracing::debug!(driver = ?found.driver, candidates = found.ids.len(), "search.sorted");
    let mut all: Vec<(Vec<SortValue>, String, Value)> = Vec::new();
    for id in &found.ids {
        if let Some(r) = plan::check(ctx, query, id, errors)? {
            all.push((sort_key(&opts.sort, ty, id, &r), id.clone(), r));
        }
    }
    all.sort_by(|a, b| compare(&opts.sort, (&a.0, &a.1), (&b.0, &b.1)));
    let position = |c: &Cursor| all.partition_point(|(k, id, _)| compare(&opts.sort, (k, id), (&c.key, &c.id)).is_le());
    let before = |c: &Cursor| all.partition_point(|(k, id, _)| compare(&opts.sort, (k, id), (&c.key, &c.id)).is_lt());
    let (start, end) = match &opts.cursor {
        Some(c) if c.before => {
            let end = before(c);
            (end.saturating_sub(opts.count), end)
        }
        Some(c) => {
            let start = position(c);
            (start, start.saturating_add(opts.count).min(all.len()))
        }
        None => (0, opts.count.min(all.len())),
    };
    let total = all.len();
    let cursor_at = |i: usize, before: bool| all.get(i).map(|(k, id, _)| Cursor { before, key: k.clone(), id: id.clone() });
    let next = if end < total && end > start { cursor_at(end - 1, false) } else { None };
    let previous = if start > 0 && end > start { cursor_at(start, true) } else { None };
    let page: Vec<Found> = if opts.summary_count {
        Vec::new()
    } else {
        all.into_iter().skip(start).take(end - start).map(|(_, id, r)| (ty.to_owned(), id, r)).collect()
    };
    let shown_total = (opts.total != Total::None || opts.summary_count).then_some(total);
    Ok(Matches { page, total: shown_total, next, previous })
}

fn link(base: &str, ty: &str, params: &[(String, String)], cursor: Option<&Cursor>) -> String {
    let mut parts: Vec<String> = params.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect();
    if let Some(c) = cursor {
        parts.push(format!("_page={}", encode(&encode_cursor(c))));
    }
    if parts.is_empty() {
        format!("{base}/{ty}")
    } else {
        format!("{base}/{ty}?{}", parts.join("&"))
    }
}

fn bundle(base: &str, ty: &str, opts: &Options, params: &[(String, String)], outcome: Outcome, ignored: Vec<Issue>) -> Value {
    let mut links = vec![json!({ "relation": "self", "url": link(base, ty, params, opts.cursor.as_ref()) })];
    if let Some(c) = &outcome.next {
        links.push(json!({ "relation": "next", "url": link(base, ty, params, Some(c)) }));
    }
    if let Some(c) = &outcome.previous {
        links.push(json!({ "relation": "previous", "url": link(base, ty, params, Some(c)) }));
    }
    let mut entries: Vec<Value> = outcome.page.iter().map(|f| render::entry(base, f, "match")).collect();
    entries.extend(outcome.included.iter().map(|f| render::entry(base, f, "include")));
    let mut notes: Vec<Issue> = ignored
        .into_iter()
        .map(|mut i| {
            i.diagnostics = format!("ignored: {}", i.diagnostics);
            i.informational = true;
            i
        })
        .collect();
    notes.extend(outcome.notes);
    if !notes.is_empty() {
        entries.push(json!({ "resource": operation_outcome(&notes), "search": { "mode": "outcome" } }));
    }
    let mut b = json!({ "resourceType": "Bundle", "type": "searchset", "link": links });
    if let Some(obj) = b.as_object_mut() {
        // FHIR JSON has no empty arrays: a search without matches has no `entry`.
        if !entries.is_empty() {
            obj.insert("entry".into(), Value::Array(entries));
        }
        if let Some(total) = outcome.total {
            obj.insert("total".into(), json!(total));
        }
    }
    b
}

#[cfg(test)]
mod tests;
