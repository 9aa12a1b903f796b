//! Request bodies: `FhirBody` takes the raw bytes (size-limited by the router), checks the
//! media type, and parses a JSON object, answering every failure with an OperationOutcome
//! (nesting deeper than `MAX_JSON_DEPTH`: 400 `too-costly`). Media type parameters are
//! allowed; the `fhirVersion` one is checked for every FHIR route by `api::mime`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::Value;

use super::outcome::ApiError;
use crate::fhir::IssueType;

/// How deep serde_json lets arrays and objects nest (its fixed recursion limit).
pub const MAX_JSON_DEPTH: usize = 128;

/// A parsed JSON object body.
pub struct FhirBody(pub Value);

/// The body media types every FHIR write accepts (`_format`-style `json` is not a media type).
pub const FHIR_JSON_TYPES: &[&str] = &["application/fhir+json", "application/json", "application/json+fhir"];

/// Whether `ct` (parameters allowed) is one of `accepted`; no `Content-Type` is taken as JSON.
pub fn media_type_ok(ct: Option<&str>, accepted: &[&str]) -> bool {
    match ct {
        None => true,
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            accepted.contains(&mime.as_str())
        }
    }
}

/// The 415 for a body in a media type outside `accepted` (an XML body included: Herald
/// accepts JSON only). A body extractor with its own types (a JSON Patch body) calls
/// `media_type_ok` and this with them.
pub fn unsupported_media_type(ct: Option<&str>, accepted: &[&str]) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IssueType::NotSupported,
        format!("content type '{}' is not supported; this server accepts {}", ct.unwrap_or_default(), accepted.join(", ")),
    )
}

impl<S: Send + Sync> FromRequest<S> for FhirBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        if !media_type_ok(ct.as_deref(), FHIR_JSON_TYPES) {
            return Err(unsupported_media_type(ct.as_deref(), FHIR_JSON_TYPES));
        }
        let value = json_body(req, state, "a FHIR resource in JSON").await?;
        if !value.is_object() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Structure, "body must be a JSON object (a FHIR resource)"));
        }
        Ok(FhirBody(value))
    }
}

/// The request body as JSON: bounded by `server.max_body_bytes` (413), not empty, at most
/// `MAX_JSON_DEPTH` levels deep. `expected` names what an empty body should have been.
pub(super) async fn json_body<S: Send + Sync>(req: Request, state: &S, expected: &str) -> Result<Value, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooCostly,
                "request body is larger than this server accepts (server.max_body_bytes)",
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {rejection}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Structure,
            format!("the request body is empty; expected {expected}"),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json stops at `MAX_JSON_DEPTH` nested arrays and objects, so no later
        // recursive walk over a body (validation, FHIRPath, indexing) can run out of
        // stack; it reports that as a syntax error, told apart only by its text.
        if e.to_string().starts_with("recursion limit exceeded") {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::TooCostly,
                format!("body nests JSON arrays and objects deeper than {MAX_JSON_DEPTH} levels ({e})"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, IssueType::Structure, format!("body is not valid JSON: {e}"))
        }
    })
}
