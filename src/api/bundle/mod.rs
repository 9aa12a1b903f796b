//! `POST /fhir` with a `batch` or `transaction` Bundle.
//!
//! Transaction: every entry is checked, ids are assigned to creates, `urn:uuid:` fullUrls are
//! rewritten wherever a `reference` names them, and the entries go to the committer as one
//! atomic commit, in the FHIR processing order (DELETE, POST, PUT and PATCH); a PATCH entry (a
//! `Binary` JSON Patch or a `Parameters` FHIRPath Patch, `patch`) is applied to the current
//! version and committed as an update of that version; any failure refuses the
//! whole Bundle and nothing is stored. Batch: each entry is its own commit and gets its own
//! response or OperationOutcome. GET entries are answered in a batch (a conditional read,
//! `ifNoneMatch` or `ifModifiedSince`, that holds is answered `304 Not Modified` as over
//! HTTP), refused in a transaction (their answers would not be isolated from its writes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::access::{Access, Caller};
use super::conditional;
use super::extract::FhirBody;
use super::outcome::{fhir_response, ApiError};
use super::rest::{check_replaced, guard_subscription, prefer_return, with_live_status, write_outcome, Return};
use super::{redact, Shared};
use crate::auth::{Perm, Principal};
use crate::fhir::instant::format_millis;
use crate::fhir::outcome::operation_outcome;
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::fhir::{Issue, IssueType};
use crate::ingest::{WriteEntry, WriteMethod, WriteResult};

mod entry;

use entry::{entry_error, parse_url, patch_planned, plan_entry, Planned};

/// Conditional references (`Type?query`) anywhere in `value`.
fn conditional_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                match v.as_str() {
                    Some(r) if k == "reference" => {
                        if r.split_once('?').is_some_and(|(ty, _)| is_resource_type(ty)) && !out.iter().any(|o| o == r) {
                            out.push(r.to_owned());
                        }
                    }
                    _ => conditional_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| conditional_references(v, out)),
        _ => {}
    }
}

/// The types whose gates the entries need (`conditional::gate`): those of their conditions
/// and of the conditional references in their resources.
fn gated_types(planned: &[Planned]) -> Vec<String> {
    let mut types = Vec::new();
    for p in planned {
        if p.condition.is_some() {
            types.push(p.write.resource_type.clone());
        }
        let mut refs = Vec::new();
        if let Some(r) = &p.write.resource {
            conditional_references(r, &mut refs);
        }
        types.extend(refs.iter().filter_map(|r| r.split_once('?')).map(|(ty, _)| ty.to_owned()));
    }
    types
}

/// The entry's errors, located at `Bundle.entry[index]`, with the status kept.
fn at_entry(index: usize, e: ApiError) -> ApiError {
    let issues = e.issues.into_iter().map(|i| entry_error(index, i.code, i.diagnostics)).collect();
    ApiError::issues(e.status, issues)
}

/// Resolves an entry's condition and its conditional references, under the gates of their
/// types (held by the caller until the entry's write is answered): the entry gets its id,
/// or an answer when it writes nothing. Conditional references become `Type/id`.
async fn resolve_condition(state: &Shared, principal: &Arc<Principal>, p: &mut Planned) -> Result<(), ApiError> {
    let ty = p.write.resource_type.clone();
    if let Some(query) = p.condition.clone() {
        match p.write.method {
            WriteMethod::Create => {
                let found = conditional::matches(state, principal, &ty, &query, "ifNoneExist").await?;
                match found.as_slice() {
                    [] => {}
                    [(id, _)] => {
                        let record = conditional::current(state, &ty, id)?;
                        let mut answer = response_entry(state, &WriteResult { record, created: false, changed: true }, false);
                        if let Some(s) = answer.pointer_mut("/response/status") {
                            *s = json!("200 OK");
                        }
                        p.write.id = id.clone();
                        p.answered = Some(answer);
                    }
                    many => return Err(conditional::several("ifNoneExist", &ty, &query, many.len())),
                }
            }
            WriteMethod::Update => {
                let found = conditional::matches(state, principal, &ty, &query, "conditional update").await?;
                let body_id = p.write.resource.as_ref().and_then(|r| r.get("id")).and_then(Value::as_str).map(str::to_owned);
                p.write.id = match found.as_slice() {
                    [] => match body_id {
                        Some(id) if is_valid_id(&id) => {
                            if conditional::current(state, &ty, &id).is_ok() {
                                return Err(ApiError::new(
                                    StatusCode::CONFLICT,
                                    IssueType::Conflict,
                                    format!("{ty}/{id} exists but does not match the condition; a conditional update does not replace it"),
                                ));
                            }
                            id
                        }
                        Some(id) => return Err(ApiError::bad_request(format!("'{id}' is not a valid id"))),
                        None => uuid::Uuid::new_v4().to_string(),
                    },
                    [(id, resource)] => {
                        if body_id.as_ref().is_some_and(|b| b != id) {
                            return Err(ApiError::bad_request(format!(
                                "body id does not match {ty}/{id}, the resource the condition matched"
                            )));
                        }
                        p.write.if_match = p.write.if_match.take().or_else(|| conditional::seen_version(resource));
                        id.clone()
                    }
                    many => return Err(conditional::several("conditional update", &ty, &query, many.len())),
                };
                let id = p.write.id.clone();
                if let Some(obj) = p.write.resource.as_mut().and_then(Value::as_object_mut) {
                    obj.insert("id".into(), json!(id));
                }
            }
            WriteMethod::Delete => {
                let found = conditional::matches(state, principal, &ty, &query, "conditional delete").await?;
                match found.as_slice() {
                    [] => p.answered = Some(json!({ "response": { "status": "204 No Content" } })),
                    [(id, resource)] => {
                        p.write.id = id.clone();
                        p.write.if_match = p.write.if_match.take().or_else(|| conditional::seen_version(resource));
                    }
                    many => return Err(conditional::several("conditional delete", &ty, &query, many.len())),
                }
            }
        }
    }
    let mut refs = Vec::new();
    if let Some(r) = &p.write.resource {
        conditional_references(r, &mut refs);
    }
    let mut map = HashMap::new();
    for reference in refs {
        let Some((target, query)) = reference.split_once('?') else { continue };
        let found = conditional::matches(state, principal, target, query, "conditional reference").await?;
        match found.as_slice() {
            [(id, _)] => {
                map.insert(reference.clone(), format!("{target}/{id}"));
            }
            [] => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    IssueType::NotFound,
                    format!("conditional reference '{reference}' matches no resource; it must match exactly one"),
                ))
            }
            many => return Err(conditional::several("conditional reference", target, query, many.len())),
        }
    }
    if let Some(r) = p.write.resource.as_mut() {
        rewrite_references(r, &map);
    }
    Ok(())
}

/// Rewrites every `"reference": "urn:uuid:..."` that names an entry of this Bundle.
fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                if k == "reference" {
                    if let Some(target) = v.as_str().and_then(|s| map.get(s)) {
                        *v = json!(target);
                        continue;
                    }
                }
                rewrite_references(v, map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

/// The response entry of a write or read; `shows_secrets`: the caller manages this
/// Subscription and is shown its secrets (reads only; writes never echo them).
fn response_entry(state: &Shared, r: &WriteResult, shows_secrets: bool) -> Value {
    let rec = &r.record;
    let status = if !r.changed || rec.deleted {
        "204 No Content"
    } else if r.created {
        "201 Created"
    } else {
        "200 OK"
    };
    let mut entry = json!({
        "response": {
            "status": status,
            "location": format!("{}/{}/_history/{}", rec.resource_type, rec.id, rec.version_id),
            "etag": format!("W/\"{}\"", rec.version_id),
            "lastModified": format_millis(rec.last_updated),
        }
    });
    if let (Some(res), Some(obj)) = (rec.resource.clone(), entry.as_object_mut()) {
        obj.insert("fullUrl".into(), json!(format!("{}/{}/{}", state.base_url, rec.resource_type, rec.id)));
        let mut res = with_live_status(state, res);
        if !shows_secrets {
            redact::subscription(&mut res);
        }
        obj.insert("resource".into(), res);
    }
    entry
}

/// `Prefer: return=` on a write entry's response (FHIR http.html#transaction-response):
/// `minimal` drops `resource`, `OperationOutcome` drops it and says what happened in
/// `response.outcome`, `representation` (the default) keeps it.
fn preferred(mut entry: Value, result: &WriteResult, ret: Return) -> Value {
    if ret == Return::Representation {
        return entry;
    }
    if let Some(obj) = entry.as_object_mut() {
        obj.remove("resource");
    }
    if ret == Return::Outcome {
        if let Some(response) = entry.get_mut("response").and_then(Value::as_object_mut) {
            response.insert("outcome".into(), operation_outcome(&[Issue::info(write_outcome(result))]));
        }
    }
    entry
}

/// A GET entry, checked as `GET /fhir/Type/id` is: the caller's scope and the stored
/// version (404 for what the caller may not see).
async fn read_entry(state: &Shared, principal: &Principal, entry: &Value) -> Value {
    let url = entry.pointer("/request/url").and_then(Value::as_str).unwrap_or("");
    let failed = |e: ApiError| {
        let status = format!("{} {}", e.status.as_u16(), e.status.canonical_reason().unwrap_or(""));
        json!({ "response": { "status": status.trim_end(), "outcome": operation_outcome(&e.issues) } })
    };
    let (ty, id) = match parse_url(&state.base_url, url) {
        Some((ty, Some(id))) if is_resource_type(&ty) && is_valid_id(&id) => (ty, id),
        _ => {
            return failed(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::NotSupported,
                format!("GET {url}: only reads (Type/id) are supported in a batch"),
            ))
        }
    };
    let access = Access::new(state, principal);
    match access.current(&ty, &id, Perm::Read) {
        Ok(rec) if entry.get("request").is_some_and(|r| conditional::entry_not_modified(r, &rec)) => json!({
            "response": {
                "status": "304 Not Modified",
                "etag": format!("W/\"{}\"", rec.version_id),
                "lastModified": format_millis(rec.last_updated),
            }
        }),
        Ok(rec) => {
            let shows_secrets = access.shows_secrets(&id);
            let mut e = response_entry(state, &WriteResult { record: rec, created: false, changed: true }, shows_secrets);
            if let Some(r) = e.pointer_mut("/response/status") {
                *r = json!("200 OK");
            }
            e
        }
        Err(e) => failed(e),
    }
}

/// A write entry is checked as the route it stands for (`POST Type`, `PUT` or `DELETE
/// Type/id`): the scope, and the stored version it replaces (404 for what the caller may not
/// see). The committer checks the patient compartment again when it applies the entry.
fn entry_allowed(state: &Shared, principal: &Principal, write: &WriteEntry) -> Result<(), ApiError> {
    let perm = perm_of(write.method);
    match write.method {
        WriteMethod::Create => Access::new(state, principal).require(&write.resource_type, perm),
        WriteMethod::Update | WriteMethod::Delete => check_replaced(state, principal, &write.resource_type, &write.id, perm),
    }
}

/// The permission an entry's write asks for.
fn perm_of(method: WriteMethod) -> Perm {
    match method {
        WriteMethod::Create => Perm::Create,
        WriteMethod::Update => Perm::Update,
        WriteMethod::Delete => Perm::Delete,
    }
}

pub(super) async fn batch_or_transaction(
    State(state): State<Shared>,
    Caller(principal): Caller,
    headers: axum::http::HeaderMap,
    FhirBody(bundle): FhirBody,
) -> Result<Response, ApiError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, "POST to the base URL takes a batch or transaction Bundle"));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let entries = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
    if entries.len() > state.max_bundle_entries {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            format!("{} entries; this server accepts at most {}", entries.len(), state.max_bundle_entries),
        ));
    }
    match kind {
        "transaction" => transaction(&state, &principal, entries, prefer_return(&headers)).await,
        "batch" => batch(&state, &principal, entries, prefer_return(&headers)).await,
        other => Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Value, format!("Bundle.type '{other}' cannot be processed here; use batch or transaction (or $ingest for history and notification Bundles)"))),
    }
}

async fn transaction(state: &Shared, principal: &Arc<Principal>, entries: Vec<Value>, ret: Return) -> Result<Response, ApiError> {
    let mut issues = Vec::new();
    let mut planned = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match plan_entry(state, index, entry) {
            Ok(Some(p)) => planned.push(p),
            Ok(None) => {
                issues.push(entry_error(index, IssueType::NotSupported, "GET entries are not supported inside a transaction; use a batch"))
            }
            Err(issue) => issues.push(issue),
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::issues(StatusCode::BAD_REQUEST, issues));
    }
    // Conditions and conditional references are resolved under their types' gates, held
    // until the commit is answered (`api::conditional`).
    let gate = conditional::gate(gated_types(&planned)).await;
    for p in &mut planned {
        resolve_condition(state, principal, p).await.map_err(|e| at_entry(p.index, e))?;
    }
    let answered: Vec<(usize, Value)> = planned.iter().filter_map(|p| p.answered.clone().map(|a| (p.index, a))).collect();
    let (unwritten, mut planned): (Vec<Planned>, Vec<Planned>) = planned.into_iter().partition(|p| p.answered.is_some());
    for p in &mut planned {
        if let Err(e) = entry_allowed(state, principal, &p.write).and_then(|()| patch_planned(state, principal, p)) {
            return Err(at_entry(p.index, e));
        }
    }
    let mut seen = HashSet::new();
    for p in &planned {
        if !seen.insert((p.write.resource_type.clone(), p.write.id.clone())) {
            issues.push(entry_error(
                p.index,
                IssueType::Invalid,
                format!("{}/{} appears more than once in the transaction", p.write.resource_type, p.write.id),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::issues(StatusCode::BAD_REQUEST, issues));
    }
    let map: HashMap<String, String> = planned
        .iter()
        .chain(unwritten.iter().filter(|p| p.write.method == WriteMethod::Create))
        .filter_map(|p| {
            p.full_url
                .as_ref()
                .filter(|u| u.starts_with("urn:uuid:") || u.starts_with("urn:oid:"))
                .map(|u| (u.clone(), format!("{}/{}", p.write.resource_type, p.write.id)))
        })
        .collect();
    for p in &mut planned {
        if let Some(r) = p.write.resource.as_mut() {
            rewrite_references(r, &map);
        }
        if let Some(r) = &p.write.resource {
            guard_subscription(state, &p.write.resource_type, r).await.map_err(|mut e| {
                for i in &mut e.issues {
                    i.diagnostics = format!("entry {}: {}", p.index, i.diagnostics);
                }
                e
            })?;
        }
    }
    // FHIR transaction processing order: DELETE, then POST, then PUT.
    let rank = |m: WriteMethod| match m {
        WriteMethod::Delete => 0,
        WriteMethod::Create => 1,
        WriteMethod::Update => 2,
    };
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| planned.get(i).map_or(3, |p| rank(p.write.method)));
    let writes: Vec<WriteEntry> = order.iter().filter_map(|&i| planned.get(i).map(|p| p.write.clone())).collect();
    let results = state.ingest.write_all_as(writes, true, principal.client.clone(), super::access::grant_of(principal)).await.map_err(
        |e| match e {
            crate::ingest::IngestError::Entry { index, source } => {
                let original = order.get(index).and_then(|&i| planned.get(i)).map_or(index, |p| p.index);
                ApiError::from(crate::ingest::IngestError::Entry { index: original, source })
            }
            other => ApiError::from(other),
        },
    )?;
    drop(gate);
    let mut out = vec![Value::Null; entries.len()];
    for (pos, result) in order.iter().zip(results.iter()) {
        if let Some(slot) = planned.get(*pos).and_then(|p| out.get_mut(p.index)) {
            *slot = preferred(response_entry(state, result, false), result, ret);
        }
    }
    for (index, answer) in answered {
        if let Some(slot) = out.get_mut(index) {
            *slot = answer;
        }
    }
    Ok(fhir_response(StatusCode::OK, &json!({ "resourceType": "Bundle", "type": "transaction-response", "entry": out })))
}

async fn batch(state: &Shared, principal: &Arc<Principal>, entries: Vec<Value>, ret: Return) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let failed = |e: ApiError| {
            let status = format!("{} {}", e.status.as_u16(), e.status.canonical_reason().unwrap_or(""));
            json!({ "response": { "status": status.trim_end(), "outcome": operation_outcome(&e.issues) } })
        };
        let response = match plan_entry(state, index, entry) {
            Ok(None) => read_entry(state, principal, entry).await,
            Err(issue) => failed(ApiError::issues(StatusCode::BAD_REQUEST, vec![issue])),
            Ok(Some(mut p)) => {
                let gate = conditional::gate(gated_types(std::slice::from_ref(&p))).await;
                if let Err(e) = resolve_condition(state, principal, &mut p).await {
                    out.push(failed(e));
                    continue;
                }
                if let Some(answer) = p.answered.take() {
                    out.push(answer);
                    continue;
                }
                if let Err(e) = entry_allowed(state, principal, &p.write).and_then(|()| patch_planned(state, principal, &mut p)) {
                    out.push(failed(e));
                    continue;
                }
                let guarded = match &p.write.resource {
                    Some(r) => guard_subscription(state, &p.write.resource_type, r).await,
                    None => Ok(()),
                };
                let answer = match guarded {
                    Err(e) => failed(e),
                    Ok(()) => match state
                        .ingest
                        .write_all_as(vec![p.write], false, principal.client.clone(), super::access::grant_of(principal))
                        .await
                        .map(|mut r| r.pop())
                    {
                        Ok(Some(r)) => preferred(response_entry(state, &r, false), &r, ret),
                        Ok(None) => failed(ApiError::from(crate::ingest::IngestError::Unavailable)),
                        Err(e) => failed(ApiError::from(e)),
                    },
                };
                drop(gate);
                answer
            }
        };
        out.push(response);
    }
    Ok(fhir_response(StatusCode::OK, &json!({ "resourceType": "Bundle", "type": "batch-response", "entry": out })))
}
