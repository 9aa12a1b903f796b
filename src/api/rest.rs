//! FHIR REST interactions on `/fhir/{type}[/{id}[/_history[/{vid}]]]` (search: `api::search`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::access::{Access, Caller};
use super::conditional;
use super::extract::FhirBody;
use super::outcome::{fhir_response, ApiError};
use super::{redact, Shared};
use crate::auth::{Perm, Principal};
use crate::channels::guard::{check_endpoint, stays_private};
use crate::fhir::instant::format_millis;
use crate::fhir::outcome::operation_outcome;
use crate::fhir::subscription::{fields, ContentLevel};
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::fhir::{Issue, IssueType};
use crate::ingest::{WriteEntry, WriteMethod, WriteResult};
use crate::store::{StoredGrant, VersionRecord};

pub(super) fn check_type(ty: &str) -> Result<(), ApiError> {
    if is_resource_type(ty) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("'{ty}' is not an {} resource type supported here", crate::fhir::version::instance().name())))
    }
}

pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("'{id}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})")))
    }
}

/// `If-Match: W/"3"` (or `"3"`) to versionId `3`.
pub(super) fn parse_etag(raw: &str) -> Result<String, ApiError> {
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(t);
    if t.is_empty() || t.contains('"') || t.contains(',') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Value, format!("If-Match '{raw}' is not an ETag like W/\"3\"")));
    }
    Ok(t.to_string())
}

/// `X-Provenance` (FHIR REST, http.html#provenance): a Provenance resource in JSON that the
/// server stores with the write, its `target` set to the version the write creates.
fn x_provenance(headers: &HeaderMap) -> Result<Option<Value>, ApiError> {
    let Some(raw) = headers.get("x-provenance") else { return Ok(None) };
    let bad = |why: &str| ApiError::issues(StatusCode::BAD_REQUEST, vec![Issue::at(IssueType::Invalid, "X-Provenance", why.to_string())]);
    let text = raw.to_str().map_err(|_| bad("X-Provenance is not text"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| bad(&format!("X-Provenance is not JSON: {e}")))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("Provenance") {
        return Err(bad("X-Provenance must hold a Provenance resource"));
    }
    Ok(Some(value))
}

/// Writes `entry`, with the `X-Provenance` resource in the same commit when one was sent.
pub(super) async fn write_with_provenance(
    state: &Shared,
    (actor, grant): (Option<String>, Option<StoredGrant>),
    entry: WriteEntry,
    headers: &HeaderMap,
) -> Result<WriteResult, ApiError> {
    let Some(provenance) = x_provenance(headers)? else {
        let mut results = state.ingest.write_all_as(vec![entry], false, actor, grant).await?;
        return results.pop().ok_or_else(|| ApiError::from(crate::ingest::IngestError::Unavailable));
    };
    let record = WriteEntry {
        method: WriteMethod::Create,
        resource_type: "Provenance".into(),
        id: uuid::Uuid::new_v4().to_string(),
        resource: Some(provenance),
        if_match: None,
        provenance_for: Some(0),
        patched: false,
    };
    let mut results = state.ingest.write_all_as(vec![entry, record], true, actor, grant).await?;
    results.truncate(1);
    results.pop().ok_or_else(|| ApiError::from(crate::ingest::IngestError::Unavailable))
}

pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v.to_str().map_err(|_| ApiError::bad_request("If-Match is not text")).and_then(parse_etag).map(Some),
    }
}

/// Checks body against the URL: resourceType must equal the path type.
pub(super) fn check_body_type(body: &Value, ty: &str) -> Result<(), ApiError> {
    match body.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == ty => Ok(()),
        Some(t) => Err(ApiError::issues(
            StatusCode::BAD_REQUEST,
            vec![Issue::at(IssueType::Invalid, "resourceType", format!("body is a {t} but the URL names {ty}"))],
        )),
        None => {
            Err(ApiError::issues(StatusCode::BAD_REQUEST, vec![Issue::at(IssueType::Required, "resourceType", "resourceType is missing")]))
        }
    }
}

/// Creation- and update-time endpoint check for Subscriptions (the connect-time guard repeats it),
/// on a Subscription of either shape (`fields`).
pub(super) async fn guard_subscription(state: &Shared, ty: &str, body: &Value) -> Result<(), ApiError> {
    // A websocket subscription's endpoint is ignored, so it is not checked either.
    if ty != "Subscription" || fields::channel_code(body) == Some("websocket") {
        return Ok(());
    }
    let Some(url) = fields::endpoint(body).and_then(|s| url::Url::parse(s).ok()) else {
        return Ok(()); // absence or syntax is reported by validation with the rest
    };
    let at = if fields::is_backport(body) { "Subscription.channel.endpoint" } else { "Subscription.endpoint" };
    check_endpoint(&url, &state.policy)
        .await
        .map_err(|e| ApiError::issues(StatusCode::UNPROCESSABLE_ENTITY, vec![Issue::at(IssueType::BusinessRule, at, e.to_string())]))?;
    // Digest §6: full resources only over a secure channel. Plain http is accepted where it
    // does not cross a public network (loopback or private addresses the operator allowed),
    // or when the operator says so (`delivery.allow_plain_http`).
    let full = fields::content(body) == Some(ContentLevel::FullResource);
    if full && url.scheme() == "http" && !state.allow_plain_http && !stays_private(&url).await {
        return Err(ApiError::issues(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![Issue::at(
                IssueType::Security,
                at,
                "full-resource content needs an https endpoint (or an operator setting delivery.allow_plain_http)",
            )],
        ));
    }
    Ok(())
}

/// Current status of a Subscription overlaid on its stored body: the server owns `status`,
/// written in the instance version's codes (`SubStatus::code_in`).
pub(super) fn with_live_status(state: &Shared, mut resource: Value) -> Value {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Subscription") {
        if let Some(id) = resource.get("id").and_then(Value::as_str).map(str::to_string) {
            if let Ok(Some(s)) = state.store.sub_state(&id) {
                if let Some(obj) = resource.as_object_mut() {
                    let version = crate::fhir::version::instance();
                    obj.insert("status".into(), json!(s.status.code_in(version)));
                    // R4/R4B `Subscription.error` ("latest error note") is the server's: the
                    // reason while in error, absent otherwise.
                    if version.is_backport() {
                        match s.error.as_ref().filter(|_| s.status == crate::store::SubStatus::Error) {
                            Some(e) => obj.insert("error".into(), json!(format!("{}: {}", e.code, e.text))),
                            None => obj.remove("error"),
                        };
                    }
                }
            }
        }
    }
    resource
}

pub(super) fn version_headers(resp: &mut Response, rec: &VersionRecord) {
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", rec.version_id)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    let lm = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(rec.last_updated) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok());
    if let Some(Ok(v)) = lm.map(|s| HeaderValue::from_str(&s.replace("+0000", "GMT"))) {
        resp.headers_mut().insert(header::LAST_MODIFIED, v);
    }
}

/// Whether the answer to a write of `Subscription/{id}` shows its secrets. R5: never (the
/// owner reads them back with a GET). R4/R4B: to the authenticated client that owns it, as a
/// read shows them, because Backport IG clients (and the conformance kit, which checks every
/// notification against the `channel.header` of the 201 body) take the created Subscription
/// from that body. Anyone else gets them redacted in every version.
fn write_shows_secrets(state: &Shared, principal: &Principal, id: &str) -> bool {
    crate::fhir::version::instance().is_backport() && Access::new(state, principal).shows_secrets(id)
}

/// The answer to a create or update: the stored resource as written (secrets as
/// `write_shows_secrets` says), nothing under `Prefer: return=minimal`, or an
/// OperationOutcome saying what happened under `return=OperationOutcome`.
///
/// `sent` are the R4/R4B `channel.header` strings the request itself carried: the answer shows
/// those to whoever sent them (the caller set them; a value kept from storage through a
/// `[redacted]` placeholder stays hidden), so that an anonymous Backport IG client on a
/// loopback instance gets back the headers it will be sent.
pub(super) fn written(state: &Shared, principal: &Principal, mut result: WriteResult, ret: Return, sent: &[String]) -> Response {
    let status = if result.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut resp = match ret {
        Return::Minimal => status.into_response(),
        Return::Outcome => fhir_response(status, &operation_outcome(&[Issue::info(write_outcome(&result))])),
        Return::Representation => {
            let mut body = result.record.resource.take().map(|r| with_live_status(state, r)).unwrap_or(Value::Null);
            if result.record.resource_type != "Subscription" || !write_shows_secrets(state, principal, &result.record.id) {
                let stored = body.pointer("/channel/header").cloned();
                redact::subscription(&mut body);
                if crate::fhir::version::instance().is_backport() {
                    redact::echo_sent_headers(&mut body, stored.as_ref(), sent);
                }
            }
            fhir_response(status, &body)
        }
    };
    let rec = &result.record;
    version_headers(&mut resp, rec);
    if result.created {
        if let Ok(v) = HeaderValue::from_str(&format!("{}/{}/{}/_history/{}", state.base_url, rec.resource_type, rec.id, rec.version_id)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    resp
}

/// What a write did, in words, for `Prefer: return=OperationOutcome`.
pub(super) fn write_outcome(result: &WriteResult) -> String {
    let rec = &result.record;
    let what = format!("{}/{}", rec.resource_type, rec.id);
    match (rec.deleted, result.changed, result.created) {
        (true, true, _) => format!("deleted {what} (version {})", rec.version_id),
        (true, false, _) => format!("{what} was already deleted or never existed; nothing changed"),
        (false, _, true) => format!("created {what} (version {})", rec.version_id),
        (false, true, false) => format!("updated {what} (version {})", rec.version_id),
        (false, false, false) => format!("{what} is unchanged (version {})", rec.version_id),
    }
}

/// `Prefer: return=` (FHIR http.html#ops): what the answer to a write holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Return {
    /// No body.
    Minimal,
    /// The resource as stored (the default).
    Representation,
    /// An OperationOutcome describing the outcome.
    Outcome,
}

/// The `return` preference of a request (`Prefer` may carry others, `handling=lenient`).
pub(super) fn prefer_return(headers: &HeaderMap) -> Return {
    for value in headers.get_all("prefer") {
        for pref in value.to_str().unwrap_or("").split([',', ';']) {
            let Some((name, v)) = pref.split_once('=') else { continue };
            if name.trim().eq_ignore_ascii_case("return") {
                match v.trim().trim_matches('"') {
                    "minimal" => return Return::Minimal,
                    "representation" => return Return::Representation,
                    "OperationOutcome" => return Return::Outcome,
                    _ => {}
                }
            }
        }
    }
    Return::Representation
}

/// The authenticated client a write is made for (`None`: anonymous), and its grant.
pub(super) fn actor(principal: &Principal) -> (Option<String>, Option<StoredGrant>) {
    (principal.client.clone().filter(|c| !c.is_empty()), super::access::grant_of(principal))
}

pub(super) async fn create(
    State(state): State<Shared>,
    Path(ty): Path<String>,
    Caller(principal): Caller,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    Access::new(&state, &principal).require(&ty, Perm::Create)?;
    check_body_type(&body, &ty)?;
    // Conditional create: the type's gate is held from the search to the commit
    // (`api::conditional`); one match is answered with it, unchanged.
    let gate = match headers.get("if-none-exist") {
        None => None,
        Some(raw) => {
            let query = raw.to_str().map_err(|_| ApiError::bad_request("If-None-Exist is not text"))?.to_owned();
            let gate = conditional::gate([ty.clone()]).await;
            match conditional::matches(&state, &principal, &ty, &query, "conditional create").await?.as_slice() {
                [] => Some(gate),
                [(id, _)] => {
                    let record = conditional::current(&state, &ty, id)?;
                    let existing = WriteResult { record, created: false, changed: false };
                    return Ok(written(&state, &principal, existing, prefer_return(&headers), &[]));
                }
                many => return Err(conditional::several("conditional create", &ty, &query, many.len())),
            }
        }
    };
    guard_subscription(&state, &ty, &body).await?;
    let sent = redact::sent_headers(&body);
    let id = uuid::Uuid::new_v4().to_string();
    let entry = WriteEntry {
        method: WriteMethod::Create,
        resource_type: ty,
        id,
        resource: Some(body),
        if_match: None,
        provenance_for: None,
        patched: false,
    };
    let result = write_with_provenance(&state, actor(&principal), entry, &headers).await?;
    drop(gate);
    Ok(written(&state, &principal, result, prefer_return(&headers), &sent))
}

/// The stored version an update or delete replaces must be one the caller may see (its
/// patient compartment, its own Subscription): otherwise 404, as for an unknown id. The
/// committer checks the compartment again under its lock (`ingest::committer`).
pub(super) fn check_replaced(state: &Shared, principal: &Principal, ty: &str, id: &str, perm: Perm) -> Result<(), ApiError> {
    let access = Access::new(state, principal);
    access.require(ty, perm)?;
    if principal.is_anonymous() {
        return Ok(());
    }
    let stored = state.store.latest(ty, id).map_err(store_err)?;
    let live = stored.as_ref().filter(|r| !r.deleted).and_then(|r| r.resource.as_ref());
    match live {
        Some(r) if !access.sees(ty, id, Some(r)) => Err(ApiError::not_found(format!("{ty}/{id} not found"))),
        _ => Ok(()),
    }
}

pub(super) async fn update(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    Caller(principal): Caller,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    check_replaced(&state, &principal, &ty, &id, Perm::Update)?;
    check_body_type(&body, &ty)?;
    match body.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(ApiError::issues(
                StatusCode::BAD_REQUEST,
                vec![Issue::at(IssueType::Invalid, "id", format!("body id '{body_id}' does not match the URL id '{id}'"))],
            ));
        }
        None => {
            return Err(ApiError::issues(
                StatusCode::BAD_REQUEST,
                vec![Issue::at(IssueType::Required, "id", "an update must carry the resource id in the body")],
            ))
        }
    }
    let if_match = if_match(&headers)?;
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
    let result = write_with_provenance(&state, actor(&principal), entry, &headers).await?;
    Ok(written(&state, &principal, result, prefer_return(&headers), &sent))
}

pub(super) async fn delete(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    Caller(principal): Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    check_replaced(&state, &principal, &ty, &id, Perm::Delete)?;
    let if_match = if_match(&headers)?;
    let entry =
        WriteEntry { method: WriteMethod::Delete, resource_type: ty, id, resource: None, if_match, provenance_for: None, patched: false };
    let (actor, grant) = actor(&principal);
    let result = state
        .ingest
        .write_all_as(vec![entry], false, actor, grant)
        .await?
        .pop()
        .ok_or_else(|| ApiError::from(crate::ingest::IngestError::Unavailable))?;
    let mut resp = match prefer_return(&headers) {
        Return::Outcome => fhir_response(StatusCode::OK, &operation_outcome(&[Issue::info(write_outcome(&result))])),
        Return::Minimal | Return::Representation => StatusCode::NO_CONTENT.into_response(),
    };
    if result.changed {
        version_headers(&mut resp, &result.record);
    }
    Ok(resp)
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::internal(&e)
}

/// `_summary` (`true`, `text`, `data`, `false`) and `_elements` on a read or vread, parsed and
/// applied as a search does (`search::page::parse`, `search::render::shape`); `None`: the
/// whole resource. `_summary=count` is for searches (400 `not-supported`).
fn subsetting(ty: &str, raw: Option<&str>) -> Result<Option<super::search::page::Options>, ApiError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .filter(|(n, _)| n == "_summary" || n == "_elements")
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Ok(None);
    }
    if pairs.iter().any(|(n, v)| n == "_summary" && v == "count") {
        return Err(ApiError::issues(
            StatusCode::BAD_REQUEST,
            vec![Issue::at(IssueType::NotSupported, "_summary", "_summary=count applies to searches, not to a read")],
        ));
    }
    let params = crate::fhir::search::SearchParams::current().map_err(|e| ApiError::internal(&e))?;
    let (opts, problems) = super::search::page::parse(ty, &pairs, params);
    if !problems.is_empty() {
        return Err(ApiError::issues(StatusCode::BAD_REQUEST, problems.into_iter().map(|p| p.issue).collect()));
    }
    Ok(Some(opts))
}

pub(super) async fn read(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    let subset = subsetting(&ty, raw.as_deref())?;
    let access = Access::new(&state, &principal);
    let rec = access.current(&ty, &id, Perm::Read)?;
    if let Some(unchanged) = conditional::not_modified(&headers, &rec) {
        return Ok(unchanged);
    }
    let resource = rec.resource.clone().unwrap_or(Value::Null);
    let mut body = with_live_status(&state, resource);
    // Secrets are shown to the authenticated client that owns the Subscription, no one else.
    if !access.shows_secrets(&id) {
        redact::subscription(&mut body);
    }
    if let Some(opts) = &subset {
        body = super::search::render::shape(opts, body);
    }
    let mut resp = fhir_response(StatusCode::OK, &body);
    version_headers(&mut resp, &rec);
    Ok(resp)
}

/// Versions of `ty/id` the caller may see, newest first, at most `limit`: each version is
/// checked on its own content (a resource may have moved into or out of a compartment).
fn visible_history(state: &Shared, principal: &Principal, ty: &str, id: &str, limit: usize) -> Result<Vec<VersionRecord>, ApiError> {
    let access = Access::new(state, principal);
    access.require(ty, Perm::Read)?;
    let versions = state.store.history(ty, id, limit).map_err(store_err)?;
    if principal.is_anonymous() {
        return Ok(versions);
    }
    // A deletion is shown when the caller could see the version it deleted.
    let mut out = Vec::with_capacity(versions.len());
    for (i, v) in versions.iter().enumerate() {
        let shown = match &v.resource {
            Some(r) => access.sees(ty, id, Some(r)),
            None => versions.get(i + 1).and_then(|prev| prev.resource.as_ref()).is_some_and(|r| access.sees(ty, id, Some(r))),
        };
        if shown {
            out.push(v.clone());
        }
    }
    Ok(out)
}

pub(super) async fn vread(
    State(state): State<Shared>,
    Path((ty, id, vid)): Path<(String, String, String)>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    let subset = subsetting(&ty, raw.as_deref())?;
    let access = Access::new(&state, &principal);
    access.require(&ty, Perm::Read)?;
    let missing = || ApiError::not_found(format!("{ty}/{id} has no version {vid}"));
    let rec = state.store.version_by_id(&ty, &id, &vid).map_err(store_err)?.ok_or_else(missing)?;
    // The version asked for is the data touched; a deletion shows when the version it deleted
    // would (`visible_history`).
    let shown = match &rec.resource {
        Some(r) => access.sees(&ty, &id, Some(r)),
        None => {
            let before = rec.seq.checked_sub(1).map(|seq| state.store.version(&ty, &id, seq)).transpose().map_err(store_err)?.flatten();
            principal.is_anonymous() || before.and_then(|b| b.resource).is_some_and(|r| access.sees(&ty, &id, Some(&r)))
        }
    };
    if !shown {
        return Err(missing());
    }
    let Some(mut resource) = rec.resource.clone() else {
        return Err(ApiError::new(StatusCode::GONE, IssueType::Deleted, format!("version {vid} of {ty}/{id} is a deletion")));
    };
    if let Some(unchanged) = conditional::not_modified(&headers, &rec) {
        return Ok(unchanged);
    }
    redact::subscription(&mut resource);
    if let Some(opts) = &subset {
        resource = super::search::render::shape(opts, resource);
    }
    let mut resp = fhir_response(StatusCode::OK, &resource);
    version_headers(&mut resp, &rec);
    Ok(resp)
}

pub(super) fn history_entry(base: &str, rec: &VersionRecord) -> Value {
    let url = format!("{base}/{}/{}", rec.resource_type, rec.id);
    let mut entry = json!({
        "fullUrl": url,
        "request": { "method": rec.method, "url": if rec.method == "POST" { rec.resource_type.clone() } else { format!("{}/{}", rec.resource_type, rec.id) } },
        "response": {
            "status": match rec.method.as_str() { "POST" => "201", "DELETE" => "204", _ => "200" },
            "etag": format!("W/\"{}\"", rec.version_id),
            "lastModified": format_millis(rec.last_updated),
        },
    });
    if let (Some(r), Some(obj)) = (&rec.resource, entry.as_object_mut()) {
        let mut r = r.clone();
        redact::subscription(&mut r);
        obj.insert("resource".into(), r);
    }
    entry
}

pub(super) async fn history(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    Caller(principal): Caller,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    let count = match q.get("_count") {
        Some(c) => {
            c.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| ApiError::bad_request("_count must be 1..1000"))?
        }
        None => 100,
    };
    let versions = visible_history(&state, &principal, &ty, &id, count)?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("{ty}/{id} not found")));
    }
    let entries: Vec<Value> = versions.iter().map(|v| history_entry(&state.base_url, v)).collect();
    Ok(fhir_response(StatusCode::OK, &json!({ "resourceType": "Bundle", "type": "history", "entry": entries })))
}
