//! Parsing one entry of a batch or transaction Bundle into a `Planned` write: its method,
//! target, resource or patch, `ifMatch`, and the condition a conditional entry depends on.

use serde_json::Value;

use crate::api::outcome::ApiError;
use crate::api::patch::{patched, PatchDoc};
use crate::api::rest::{check_body_type, parse_etag};
use crate::api::Shared;
use crate::auth::Principal;
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::fhir::{Issue, IssueType};
use crate::ingest::{WriteEntry, WriteMethod};

/// One parsed entry.
pub(super) struct Planned {
    pub index: usize,
    pub write: WriteEntry,
    pub full_url: Option<String>,
    /// The search a conditional entry depends on: `ifNoneExist` of a POST, the query of
    /// `PUT Type?query` or `DELETE Type?query` (resolved by `resolve_condition`).
    pub condition: Option<String>,
    /// A PATCH entry's patch, applied (`patch_planned`) once the caller may change the target.
    pub patch: Option<PatchDoc>,
    /// The answer of an entry its condition turned into no write (a POST whose
    /// `ifNoneExist` matched, a conditional DELETE that matched nothing).
    pub answered: Option<Value>,
}

pub(super) fn entry_error(index: usize, code: IssueType, msg: impl Into<String>) -> Issue {
    Issue::at(code, format!("Bundle.entry[{index}]"), msg)
}

/// Parses `request.url` (`Type`, `Type/id`, absolute on our base) into (type, id).
pub(super) fn parse_url(base: &str, url: &str) -> Option<(String, Option<String>)> {
    let rel = url.strip_prefix(base).map(|r| r.trim_start_matches('/')).unwrap_or(url);
    let rel = rel.split('?').next().unwrap_or(rel);
    let mut parts = rel.split('/');
    let ty = parts.next()?.to_string();
    let id = parts.next().map(str::to_string);
    if parts.next().is_some() {
        return None;
    }
    Some((ty, id))
}

pub(super) fn plan_entry(state: &Shared, index: usize, entry: &Value) -> Result<Option<Planned>, Issue> {
    let request = entry
        .get("request")
        .ok_or_else(|| entry_error(index, IssueType::Required, "entry.request is required in a batch or transaction"))?;
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_error(index, IssueType::Required, "entry.request.url is required"))?;
    if (request.get("ifNoneMatch").is_some() || request.get("ifModifiedSince").is_some()) && method != "GET" {
        return Err(entry_error(index, IssueType::Invalid, "ifNoneMatch and ifModifiedSince apply to GET entries only"));
    }
    if let Some(since) = request.get("ifModifiedSince") {
        if since.as_str().and_then(crate::fhir::instant::parse_instant).is_none() {
            return Err(entry_error(index, IssueType::Invalid, format!("ifModifiedSince {since} is not an instant")));
        }
    }
    let if_none_exist = request.get("ifNoneExist").and_then(Value::as_str).map(str::to_owned);
    if if_none_exist.is_some() && method != "POST" {
        return Err(entry_error(index, IssueType::Invalid, "ifNoneExist applies to POST entries only"));
    }
    let url_condition = url.split_once('?').map(|(_, q)| q.to_owned()).filter(|_| method == "PUT" || method == "DELETE");
    if url.contains('?') && url_condition.is_none() && method != "GET" {
        return Err(entry_error(
            index,
            IssueType::NotSupported,
            format!("{method} {url}: a search in request.url is for PUT and DELETE only"),
        ));
    }
    let (ty, id) = parse_url(&state.base_url, url)
        .ok_or_else(|| entry_error(index, IssueType::Value, format!("cannot interpret request.url '{url}'")))?;
    if !is_resource_type(&ty) {
        return Err(entry_error(
            index,
            IssueType::NotFound,
            format!("'{ty}' is not an {} resource type", crate::fhir::version::instance().name()),
        ));
    }
    if let Some(id) = &id {
        if !is_valid_id(id) {
            return Err(entry_error(index, IssueType::Value, format!("'{id}' is not a valid id")));
        }
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(raw) => Some(parse_etag(raw).map_err(|_| entry_error(index, IssueType::Value, format!("ifMatch '{raw}' is not an ETag")))?),
        None => None,
    };
    let resource = entry.get("resource").cloned();
    let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let condition = if_none_exist.or(url_condition);
    let mut patch = None;
    let write = match (method, id) {
        ("GET", _) => return Ok(None),
        ("PUT", None) if condition.is_some() => {
            let r = resource.ok_or_else(|| entry_error(index, IssueType::Required, "a PUT entry needs a resource"))?;
            check_body_type(&r, &ty)
                .map_err(|e| entry_error(index, IssueType::Invalid, e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default()))?;
            // The id is the match's, or the body's, or a new one (`resolve_condition`).
            WriteEntry {
                method: WriteMethod::Update,
                resource_type: ty,
                id: String::new(),
                resource: Some(r),
                if_match,
                provenance_for: None,
                patched: false,
            }
        }
        ("DELETE", None) if condition.is_some() => WriteEntry {
            method: WriteMethod::Delete,
            resource_type: ty,
            id: String::new(),
            resource: None,
            if_match,
            provenance_for: None,
            patched: false,
        },
        ("POST", None) => {
            let r = resource.ok_or_else(|| entry_error(index, IssueType::Required, "a POST entry needs a resource"))?;
            check_body_type(&r, &ty)
                .map_err(|e| entry_error(index, IssueType::Invalid, e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default()))?;
            WriteEntry {
                method: WriteMethod::Create,
                resource_type: ty,
                id: uuid::Uuid::new_v4().to_string(),
                resource: Some(r),
                if_match,
                provenance_for: None,
                patched: false,
            }
        }
        ("PUT", Some(id)) => {
            let r = resource.ok_or_else(|| entry_error(index, IssueType::Required, "a PUT entry needs a resource"))?;
            check_body_type(&r, &ty)
                .map_err(|e| entry_error(index, IssueType::Invalid, e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default()))?;
            if r.get("id").and_then(Value::as_str).is_some_and(|rid| rid != id) {
                return Err(entry_error(index, IssueType::Invalid, "resource id does not match request.url"));
            }
            WriteEntry {
                method: WriteMethod::Update,
                resource_type: ty,
                id,
                resource: Some(r),
                if_match,
                provenance_for: None,
                patched: false,
            }
        }
        ("PATCH", Some(id)) => {
            let r =
                resource.ok_or_else(|| entry_error(index, IssueType::Required, "a PATCH entry needs a Binary or Parameters resource"))?;
            let doc = PatchDoc::of_entry(&r)
                .map_err(|e| entry_error(index, IssueType::Invalid, e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default()))?;
            patch = Some(doc);
            WriteEntry { method: WriteMethod::Update, resource_type: ty, id, resource: None, if_match, provenance_for: None, patched: true }
        }
        ("DELETE", Some(id)) => WriteEntry {
            method: WriteMethod::Delete,
            resource_type: ty,
            id,
            resource: None,
            if_match,
            provenance_for: None,
            patched: false,
        },
        _ => {
            return Err(entry_error(
                index,
                IssueType::NotSupported,
                format!("{method} {url} is not supported in a Bundle (use POST Type, PUT, PATCH or DELETE Type/id, GET)"),
            ))
        }
    };
    Ok(Some(Planned { index, write, full_url, condition, patch, answered: None }))
}

/// Applies a PATCH entry's patch to the current version of its target (which the caller must
/// see: 404 otherwise), making it an update of exactly that version.
pub(super) fn patch_planned(state: &Shared, principal: &Principal, p: &mut Planned) -> Result<(), ApiError> {
    let Some(doc) = p.patch.take() else { return Ok(()) };
    let (resource, version) = patched(state, principal, (&p.write.resource_type, &p.write.id), &doc, p.write.if_match.as_deref())?;
    p.write.resource = Some(resource);
    p.write.if_match = Some(version);
    Ok(())
}
