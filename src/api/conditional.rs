//! Conditional interactions (FHIR http.html#ccreate, #cond-update, #cdelete, #cread and
//! conditional references in transactions): the search that decides what a condition names,
//! the gate that makes that decision and the write it leads to one step, and the handlers of
//! `PUT /fhir/{type}?query` and `DELETE /fhir/{type}?query`.
//!
//! **Atomicity.** Every conditional write on a resource type (`If-None-Exist`, conditional
//! update and delete, a transaction with `ifNoneExist`, a conditional `request.url` or a
//! conditional reference) holds that type's gate from the search that decides it until the
//! committer has answered its write, i.e. until the write is durable and visible to the next
//! search. Two conditional writes on the same type therefore never interleave: the later one's
//! search sees the earlier one's commit, so clients racing the same `If-None-Exist` create
//! exactly one resource. The gate is per type, not per query string, because two different
//! queries can match the same resource. A conditional update or delete that found one match
//! writes with `If-Match` set to the version its search saw (unless the client sent one), so
//! a plain write landing in between makes it fail with 412 rather than overwrite what the
//! search did not see. Plain creates are not gated: they carry no condition. The gates are
//! process-wide (one Herald serves one store), held in ascending type order (no deadlock).
//!
//! **Visibility.** The search runs through the caller's restricted `StoreContext`: what the
//! caller may not see (another client's Subscriptions, another patient's resources) is never
//! matched, so a condition can neither find nor change it. A condition must also be allowed
//! to search the type.
//!
//! **Strictness.** A condition is parsed strictly: an unknown parameter, a bad value or a
//! result parameter (`_count`, `_sort`, ...) is 400, never ignored, since ignoring a clause
//! would widen what the condition matches. An empty condition is 400.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::OwnedMutexGuard;

use super::access::{Access, Caller};
use super::extract::FhirBody;
use super::outcome::ApiError;
use super::rest::{self, check_body_type, check_id, check_replaced, check_type, guard_subscription};
use super::search::context::StoreContext;
use super::search::plan;
use super::{redact, Shared};
use crate::auth::{Perm, Principal};
use crate::fhir::search::query::Query;
use crate::fhir::search::SearchParams;
use crate::fhir::{Issue, IssueType};
use crate::ingest::{WriteEntry, WriteMethod, WriteResult};
use crate::store::VersionRecord;

type Gates = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

static GATES: LazyLock<Gates> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The gates of some resource types, held until dropped.
pub(super) struct Held(#[allow(dead_code)] Vec<OwnedMutexGuard<()>>);

/// Takes the gates of `types` (in ascending order), waiting for whoever holds them.
pub(super) async fn gate(types: impl IntoIterator<Item = String>) -> Held {
    let types: BTreeSet<String> = types.into_iter().collect();
    let mut held = Vec::with_capacity(types.len());
    for ty in types {
        let lock = GATES.lock().unwrap_or_else(PoisonError::into_inner).entry(ty).or_default().clone();
        held.push(lock.lock_owned().await);
    }
    Held(held)
}

/// The resources of `ty` the caller may see that `query` (a search string, `?` optional)
/// matches, in id order. `what` names the interaction in errors.
pub(super) async fn matches(
    state: &Shared,
    principal: &Arc<Principal>,
    ty: &str,
    query: &str,
    what: &str,
) -> Result<Vec<(String, Value)>, ApiError> {
    Access::new(state, principal).require(ty, Perm::Search)?;
    let text = query.trim().trim_start_matches('?').to_owned();
    let clauses = text.split('&').filter(|p| !p.is_empty()).count();
    if clauses == 0 {
        return Err(ApiError::bad_request(format!("a {what} needs search criteria")));
    }
    if clauses > state.search.max_params {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::TooCostly,
            format!("this {what} has {clauses} parameters; Herald accepts at most {} (search.max_params)", state.search.max_params),
        ));
    }
    let params = SearchParams::current().map_err(|e| ApiError::internal(&e))?;
    let (parsed, errors) = Query::parse(ty, &text, params);
    let mut issues: Vec<Issue> = errors.iter().map(|e| Issue::new(IssueType::Value, format!("{what}: {e}"))).collect();
    for (name, _) in &parsed.control {
        issues
            .push(Issue::new(IssueType::NotSupported, format!("{what}: '{name}' is a result parameter and has no meaning in a condition")));
    }
    if !issues.is_empty() {
        return Err(ApiError::issues(StatusCode::BAD_REQUEST, issues));
    }
    if parsed.clauses.is_empty() {
        return Err(ApiError::bad_request(format!("a {what} needs search criteria")));
    }
    let worker = state.clone();
    let who = principal.clone();
    tokio::task::spawn_blocking(move || {
        let mut ctx = StoreContext::new(&worker.store, &worker.base_url);
        if !who.is_anonymous() {
            let access = Access::new(&worker, &who);
            ctx = ctx.restricted(Box::new(move |ty, id, resource| access.sees(ty, id, Some(resource))));
        }
        let found = plan::all_matches(&ctx, &parsed, &worker.search, true).map_err(ApiError::from)?;
        if let Some(e) = ctx.failure.borrow_mut().take() {
            return Err(ApiError::internal(&e));
        }
        Ok(found)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
}

/// 412: a condition matched more than one resource.
pub(super) fn several(what: &str, ty: &str, query: &str, n: usize) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        IssueType::MultipleMatches,
        format!("{what} '{ty}?{}' matches {n} resources; it must match at most one", query.trim_start_matches('?')),
    )
}

/// The version a search saw, for `If-Match`.
pub(super) fn seen_version(resource: &Value) -> Option<String> {
    resource.pointer("/meta/versionId").and_then(Value::as_str).map(str::to_owned)
}

/// The current record of `ty/id`, for answering with an existing resource.
pub(super) fn current(state: &Shared, ty: &str, id: &str) -> Result<VersionRecord, ApiError> {
    state
        .store
        .latest(ty, id)
        .map_err(|e| ApiError::internal(&e))?
        .filter(|r| !r.deleted)
        .ok_or_else(|| ApiError::not_found(format!("{ty}/{id} not found")))
}

/// `PUT /fhir/{type}?query`: no match creates (with the body's id if it has one and no such
/// resource exists, 409 if it exists; a server id otherwise), one match updates it (the body's
/// id, if any, must be its id), several are 412.
pub(super) async fn update(
    State(state): State<Shared>,
    Path(ty): Path<String>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    FhirBody(mut body): FhirBody,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    Access::new(&state, &principal).require(&ty, Perm::Update)?;
    check_body_type(&body, &ty)?;
    let query = raw.unwrap_or_default();
    let body_id = body.get("id").and_then(Value::as_str).map(str::to_owned);
    let mut if_match = rest::if_match(&headers)?;
    let gate = gate([ty.clone()]).await;
    let found = matches(&state, &principal, &ty, &query, "conditional update").await?;
    let id = match found.as_slice() {
        [] => match body_id {
            Some(id) => {
                check_id(&id)?;
                check_replaced(&state, &principal, &ty, &id, Perm::Update)?;
                if state.store.latest(&ty, &id).map_err(|e| ApiError::internal(&e))?.is_some_and(|r| !r.deleted) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        IssueType::Conflict,
                        format!("{ty}/{id} exists but does not match the condition; a conditional update does not replace it"),
                    ));
                }
                id
            }
            None => uuid::Uuid::new_v4().to_string(),
        },
        [(id, resource)] => {
            if body_id.as_ref().is_some_and(|b| b != id) {
                return Err(ApiError::issues(
                    StatusCode::BAD_REQUEST,
                    vec![Issue::at(
                        IssueType::Invalid,
                        "id",
                        format!("body id does not match {ty}/{id}, the resource the condition matched"),
                    )],
                ));
            }
            check_replaced(&state, &principal, &ty, id, Perm::Update)?;
            if_match = if_match.or_else(|| seen_version(resource));
            id.clone()
        }
        many => return Err(several("conditional update", &ty, &query, many.len())),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("id".into(), json!(id));
    }
    guard_subscription(&state, &ty, &body).await?;
    let sent = redact::sent_headers(&body);
    let entry = WriteEntry {
        method: WriteMethod::Update,
        resource_type: ty,
        id,
        resource: Some(body),
        if_match,
        provenance_for: None,
        patched: false,
    };
    let result = rest::write_with_provenance(&state, rest::actor(&principal), entry, &headers).await?;
    drop(gate);
    Ok(rest::written(&state, &principal, result, rest::prefer_return(&headers), &sent))
}

/// `DELETE /fhir/{type}?query` (single-delete mode): no match is 204 with nothing deleted,
/// one match deletes it, several are 412.
pub(super) async fn delete(
    State(state): State<Shared>,
    Path(ty): Path<String>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    Access::new(&state, &principal).require(&ty, Perm::Delete)?;
    let query = raw.unwrap_or_default();
    let client_match = rest::if_match(&headers)?;
    let gate = gate([ty.clone()]).await;
    let found = matches(&state, &principal, &ty, &query, "conditional delete").await?;
    let (id, resource) = match found.as_slice() {
        [] => return Ok(StatusCode::NO_CONTENT.into_response()),
        [(id, resource)] => (id.clone(), resource),
        many => return Err(several("conditional delete", &ty, &query, many.len())),
    };
    check_replaced(&state, &principal, &ty, &id, Perm::Delete)?;
    let if_match = client_match.or_else(|| seen_version(resource));
    let entry =
        WriteEntry { method: WriteMethod::Delete, resource_type: ty, id, resource: None, if_match, provenance_for: None, patched: false };
    let (actor, grant) = rest::actor(&principal);
    let result: WriteResult = state
        .ingest
        .write_all_as(vec![entry], false, actor, grant)
        .await?
        .pop()
        .ok_or_else(|| ApiError::from(crate::ingest::IngestError::Unavailable))?;
    drop(gate);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if result.changed {
        rest::version_headers(&mut resp, &result.record);
    }
    Ok(resp)
}

/// Conditional read: 304 Not Modified when `If-None-Match` names `rec`'s version, or (without
/// `If-None-Match`) when `If-Modified-Since` is not older than its last update (HTTP dates
/// have whole seconds). `None`: answer as usual.
pub(super) fn not_modified(headers: &HeaderMap, rec: &VersionRecord) -> Option<Response> {
    let fresh = if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        etag_matches(tags.to_str().ok()?, rec)
    } else {
        let since = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
        let since = http_date_seconds(since)?;
        rec.last_updated.div_euclid(1000) <= since
    };
    if !fresh {
        return None;
    }
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    rest::version_headers(&mut resp, rec);
    Some(resp)
}

/// `If-None-Match` (a list of ETags, or `*`) names the version of `rec`.
fn etag_matches(tags: &str, rec: &VersionRecord) -> bool {
    tags.split(',').map(str::trim).any(|t| t == "*" || rest::parse_etag(t).is_ok_and(|v| v == rec.version_id))
}

/// A conditional read in a batch (`Bundle.entry.request.ifNoneMatch`, or else
/// `ifModifiedSince`, an instant): whether it holds for `rec`, so the entry is answered
/// `304 Not Modified` as the HTTP form is. Unlike the header, `ifModifiedSince` is compared
/// to the millisecond, as instants are precise. Neither present: `false`.
pub(super) fn entry_not_modified(request: &Value, rec: &VersionRecord) -> bool {
    if let Some(tags) = request.get("ifNoneMatch").and_then(Value::as_str) {
        return etag_matches(tags, rec);
    }
    request
        .get("ifModifiedSince")
        .and_then(Value::as_str)
        .and_then(crate::fhir::instant::parse_instant)
        .is_some_and(|since| rec.last_updated <= since)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) as Unix seconds.
fn http_date_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_suffix("GMT").map(|t| format!("{t}+0000")).unwrap_or_else(|| text.to_owned());
    time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc2822).ok().map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::http_date_seconds;

    #[test]
    fn http_dates_parse() {
        assert_eq!(http_date_seconds("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date_seconds("yesterday"), None);
    }
}
