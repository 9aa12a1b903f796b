//! `PATCH /fhir/{type}/{id}` (FHIR http.html#patch), and the PATCH entries of batch and
//! transaction Bundles (`bundle`).
//!
//! Two formats: JSON Patch (RFC 6902, `application/json-patch+json`, applied by the
//! `json-patch` crate) and FHIRPath Patch (a `Parameters` body, `fhirpath`). A patch is
//! applied to the current version as the caller would read it (live Subscription status,
//! secrets redacted unless the caller is shown them), then written as an update of exactly
//! that version: validation, versioning, topic matching (`%previous` is the version patched),
//! Subscription guards and the committer's keeping of `[redacted]` secrets are the update's.
//! A write that lands between the read and the update makes the committer refuse it (the
//! version no longer matches); without a client `If-Match` the patch is read and applied again,
//! a few times, then answered 409.

mod fhirpath;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::Value;

use super::access::{Access, Caller};
use super::extract::FhirBody;
use super::outcome::ApiError;
use super::rest::{actor, check_id, check_type, if_match, prefer_return, with_live_status, write_with_provenance, written};
use super::{redact, Shared};
use crate::auth::{Perm, Principal};
use crate::fhir::{Issue, IssueType};
use crate::ingest::{WriteEntry, WriteMethod};

/// The media type of a JSON Patch document.
pub const JSON_PATCH: &str = "application/json-patch+json";

/// How many times a patch without a client `If-Match` is applied again after a concurrent
/// write changed the resource under it.
const ATTEMPTS: usize = 3;

/// A parsed patch document.
pub(super) enum PatchDoc {
    /// RFC 6902 operations.
    Json(json_patch::Patch),
    /// FHIRPath Patch operations, from a `Parameters` resource.
    FhirPath(Vec<fhirpath::Operation>),
}

impl PatchDoc {
    /// A JSON Patch document: an array of operations (400 otherwise).
    pub fn json(value: Value) -> Result<PatchDoc, ApiError> {
        if !value.is_array() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Structure, "a JSON Patch document is an array of operations"));
        }
        serde_json::from_value(value)
            .map(PatchDoc::Json)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, IssueType::Structure, format!("not a valid JSON Patch document: {e}")))
    }

    /// A FHIRPath Patch: a `Parameters` resource of `operation` parameters (400 otherwise).
    pub fn parameters(value: &Value) -> Result<PatchDoc, ApiError> {
        if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Invalid,
                format!("a FHIR PATCH body is a Parameters resource (FHIRPath Patch), or a JSON Patch sent as {JSON_PATCH}"),
            ));
        }
        fhirpath::parse(value).map(PatchDoc::FhirPath)
    }

    /// The patch a batch or transaction entry carries as its `resource`: a `Binary` holding a
    /// JSON Patch (`contentType` application/json-patch+json, `data` its base64), or a
    /// `Parameters` holding a FHIRPath Patch (400 otherwise).
    pub fn of_entry(resource: &Value) -> Result<PatchDoc, ApiError> {
        if resource.get("resourceType").and_then(Value::as_str) != Some("Binary") {
            return PatchDoc::parameters(resource);
        }
        let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, why);
        let ct = resource.get("contentType").and_then(Value::as_str).unwrap_or_default();
        if ct.split(';').next().unwrap_or_default().trim() != JSON_PATCH {
            return Err(bad(format!("a PATCH entry's Binary must have contentType {JSON_PATCH}, not '{ct}'")));
        }
        let data = resource.get("data").and_then(Value::as_str).unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("a PATCH entry's Binary.data is not base64: {e}")))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("a PATCH entry's Binary.data is not JSON: {e}")))?;
        PatchDoc::json(value)
    }

    /// `resource` as this patch changes it. A patch that cannot be applied (a failed `test`,
    /// a path that is not there) is 422; the original is left as it was.
    pub fn apply(&self, resource: &Value) -> Result<Value, ApiError> {
        let mut out = resource.clone();
        match self {
            PatchDoc::Json(ops) => {
                // `patch_unsafe` on a copy: a failure leaves the copy half done, and it is
                // dropped (`patch` rolls back in place, and would panic if it could not).
                json_patch::patch_unsafe(&mut out, ops).map_err(|e| {
                    ApiError::issues(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        vec![Issue::at(
                            IssueType::BusinessRule,
                            format!("operation {}", e.operation),
                            format!("JSON Patch operation {} ({}) failed: {}", e.operation, e.path, e.kind),
                        )],
                    )
                })?;
            }
            PatchDoc::FhirPath(ops) => fhirpath::apply(&mut out, ops)?,
        }
        Ok(out)
    }
}

/// The body of a PATCH: JSON Patch by its media type, otherwise a FHIR JSON body (as for any
/// other interaction) holding a FHIRPath Patch.
pub(super) struct PatchBody(pub PatchDoc);

impl<S: Send + Sync> FromRequest<S> for PatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if mime != JSON_PATCH {
            let FhirBody(body) = FhirBody::from_request(req, state).await?;
            return PatchDoc::parameters(&body).map(PatchBody);
        }
        let value = super::extract::json_body(req, state, "a JSON Patch document").await?;
        PatchDoc::json(value).map(PatchBody)
    }
}

/// `ty/id` as `doc` changes it, from the current version the caller may see (404 otherwise,
/// 412 when it is not `expected`), with the version it was patched from. The result keeps its
/// type and id (422 otherwise); everything else is checked when it is written.
pub(super) fn patched(
    state: &Shared,
    principal: &Principal,
    (ty, id): (&str, &str),
    doc: &PatchDoc,
    expected: Option<&str>,
) -> Result<(Value, String), ApiError> {
    let access = Access::new(state, principal);
    let rec = access.current(ty, id, Perm::Update)?;
    if let Some(expected) = expected.filter(|e| *e != rec.version_id) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            IssueType::Conflict,
            format!("If-Match version {expected} does not match the current version {}", rec.version_id),
        ));
    }
    let mut base = with_live_status(state, rec.resource.clone().unwrap_or(Value::Null));
    if !access.shows_secrets(id) {
        redact::subscription(&mut base);
    }
    let out = doc.apply(&base)?;
    let refused =
        |at: &str, what: String| ApiError::issues(StatusCode::UNPROCESSABLE_ENTITY, vec![Issue::at(IssueType::BusinessRule, at, what)]);
    if out.get("resourceType").and_then(Value::as_str) != Some(ty) {
        return Err(refused("resourceType", format!("a patch may not change resourceType (of {ty}/{id})")));
    }
    if out.get("id").and_then(Value::as_str) != Some(id) {
        return Err(refused("id", format!("a patch may not change or remove the id of {ty}/{id}")));
    }
    Ok((out, rec.version_id))
}

pub(super) async fn patch(
    State(state): State<Shared>,
    Path((ty, id)): Path<(String, String)>,
    Caller(principal): Caller,
    headers: HeaderMap,
    PatchBody(doc): PatchBody,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_id(&id)?;
    let client_if_match = if_match(&headers)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (resource, version) = patched(&state, &principal, (&ty, &id), &doc, client_if_match.as_deref())?;
        super::rest::guard_subscription(&state, &ty, &resource).await?;
        let sent = redact::sent_headers(&resource);
        let entry = WriteEntry {
            method: WriteMethod::Update,
            resource_type: ty.clone(),
            id: id.clone(),
            resource: Some(resource),
            if_match: Some(version),
            provenance_for: None,
            patched: true,
        };
        match write_with_provenance(&state, actor(&principal), entry, &headers).await {
            Ok(result) => return Ok(written(&state, &principal, result, prefer_return(&headers), &sent)),
            // Changed since it was read: the client's If-Match no longer holds, or, without
            // one, apply the patch to the new version.
            Err(e) if e.status == StatusCode::PRECONDITION_FAILED && client_if_match.is_none() => {
                if attempt >= ATTEMPTS {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        IssueType::Conflict,
                        format!("{ty}/{id} kept changing while the patch was applied ({ATTEMPTS} attempts); try again"),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
}
