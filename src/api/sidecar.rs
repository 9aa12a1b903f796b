//! Side-car ingest: `POST /fhir/$ingest` lets another FHIR server feed Herald its changes
//! without Herald being its database. Accepted bodies:
//!
//! - a `history` Bundle as any server's `_history` returns it (newest first; Herald applies
//!   the entries oldest first);
//! - a notification Bundle from the upstream server's own rest-hook subscription: R5
//!   `subscription-notification`, or the R4B/R4 backport `history` Bundle whose first entry is
//!   a `SubscriptionStatus` or `Parameters` (applied in order; handshakes and heartbeats carry
//!   no changes and are simply acknowledged).
//!
//! Each entry becomes one change, idempotent on type/id/`meta.versionId` (an already-seen
//! version is skipped), with the previous state taken from what Herald last saw. The answer is
//! an OperationOutcome counting what was applied and skipped.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::access::{Access, Caller};
use super::extract::FhirBody;
use super::outcome::{fhir_response, ApiError};
use super::Shared;
use crate::auth::Perm;
use crate::fhir::instant::parse_instant;
use crate::fhir::outcome::operation_outcome;
use crate::fhir::{Issue, IssueType};
use crate::ingest::ExternalChange;

/// Type and id from an entry's resource, else its `request.url` or `fullUrl`.
fn locate(entry: &Value) -> Option<(String, String)> {
    if let Some(r) = entry.get("resource") {
        if let (Some(t), Some(i)) = (r.get("resourceType").and_then(Value::as_str), r.get("id").and_then(Value::as_str)) {
            return Some((t.to_string(), i.to_string()));
        }
    }
    for url in [entry.pointer("/request/url"), entry.get("fullUrl")].into_iter().flatten().filter_map(Value::as_str) {
        let path = url.split('?').next().unwrap_or(url);
        let path = path.split("/_history").next().unwrap_or(path);
        let mut parts = path.rsplit('/');
        if let (Some(id), Some(ty)) = (parts.next(), parts.next()) {
            if !id.is_empty() && !ty.is_empty() {
                return Some((ty.to_string(), id.to_string()));
            }
        }
    }
    None
}

fn etag_version(entry: &Value) -> Option<String> {
    let etag = entry.pointer("/response/etag").and_then(Value::as_str)?;
    let t = etag.trim().trim_start_matches("W/").trim_matches('"');
    (!t.is_empty()).then(|| t.to_string())
}

fn to_change(entry: &Value) -> Option<ExternalChange> {
    let (resource_type, id) = locate(entry)?;
    let method = entry.pointer("/request/method").and_then(Value::as_str).unwrap_or("PUT");
    let resource = entry.get("resource").cloned();
    let deleted = method == "DELETE" || resource.is_none();
    let version_id = resource
        .as_ref()
        .and_then(|r| r.pointer("/meta/versionId"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| etag_version(entry));
    let last_updated = resource
        .as_ref()
        .and_then(|r| r.pointer("/meta/lastUpdated"))
        .and_then(Value::as_str)
        .or_else(|| entry.pointer("/response/lastModified").and_then(Value::as_str))
        .and_then(parse_instant);
    let full_url = entry.get("fullUrl").and_then(Value::as_str).filter(|u| u.starts_with("http")).map(str::to_string);
    Some(ExternalChange { resource_type, id, version_id, deleted, resource, last_updated, full_url })
}

pub(super) async fn ingest(
    State(state): State<Shared>,
    Caller(principal): Caller,
    FhirBody(bundle): FhirBody,
) -> Result<Response, ApiError> {
    // A side-car feed writes any type of resource.
    Access::new(&state, &principal).require_everything(Perm::Create)?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request("$ingest takes a history or subscription-notification Bundle"));
    }
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let entries = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
    if entries.len() > state.max_bundle_entries {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            format!("{} entries; at most {} per Bundle", entries.len(), state.max_bundle_entries),
        ));
    }
    let first_type = entries.first().and_then(|e| e.pointer("/resource/resourceType")).and_then(Value::as_str);
    let is_notification =
        kind == "subscription-notification" || (kind == "history" && matches!(first_type, Some("SubscriptionStatus" | "Parameters")));
    let payload: Vec<&Value> = match (kind, is_notification) {
        (_, true) => entries.iter().skip(1).collect(),
        ("history", false) => entries.iter().rev().collect(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Value,
                format!("Bundle.type '{kind}' is not a history or subscription-notification Bundle"),
            ))
        }
    };
    let mut changes = Vec::new();
    let mut unreadable = Vec::new();
    for entry in payload {
        match to_change(entry) {
            Some(c) => changes.push(c),
            None => unreadable.push(entry.get("fullUrl").and_then(Value::as_str).unwrap_or("(no fullUrl)").to_string()),
        }
    }
    let summary = state.ingest.external(changes).await?;
    let mut issues = vec![Issue::info(format!(
        "applied {} change(s), {} event(s) matched; skipped {}",
        summary.applied,
        summary.events,
        summary.skipped.len() + unreadable.len()
    ))];
    issues.extend(summary.skipped.iter().map(|s| Issue::info(format!("skipped {s}"))));
    issues.extend(unreadable.iter().map(|u| Issue::info(format!("skipped {u}: entry names no resource type and id"))));
    Ok(fhir_response(StatusCode::OK, &json!(operation_outcome(&issues))))
}
