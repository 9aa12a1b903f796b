//! The one place errors become HTTP responses: status codes and `OperationOutcome` issues.
//!
//! | case | status | issue code |
//! |---|---|---|
//! | unparsable body, wrong `resourceType`, bad id, bad search parameter | 400 | `structure`, `invalid`, `value` |
//! | `_sort` search over more than `search.max_scan` candidates; `_total=accurate` past `search.max_total` | 400 | `too-costly` |
//! | search Herald cannot decide (ValueSet needing a terminology server) | 422 | `not-supported` |
//! | valid FHIR refused by a rule (unknown topic, unsupported channel or filter) | 422 | `business-rule`, `not-supported` |
//! | unknown type or id | 404 | `not-found` |
//! | deleted resource | 410 | `deleted` |
//! | write to a read-only resource (a built-in SubscriptionTopic) | 405 + `Allow: GET` | `not-supported` |
//! | `If-Match` mismatch / conflicting state | 412 / 409 | `conflict` |
//! | body too large / wrong media type | 413 / 415 | `too-costly` / `not-supported` |
//! | write path stopped or store unavailable | 503 + `Retry-After` | `transient` |
//! | anything else | 500 | `exception`, a generic text and the request id |
//!
//! `IntoResponse` builds the response only; internal causes are logged here at `error` with
//! their source chain (never sent to the caller).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::search::plan::SearchFailure;
use crate::fhir::outcome::operation_outcome;
use crate::fhir::{Issue, IssueType};
use crate::ingest::IngestError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: IssueType, diagnostics: impl Into<String>) -> Self {
        ApiError { status, issues: vec![Issue::new(code, diagnostics)] }
    }

    pub fn issues(status: StatusCode, issues: Vec<Issue>) -> Self {
        ApiError { status, issues }
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, IssueType::Invalid, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, IssueType::NotFound, diagnostics)
    }

    /// Logs the cause with its chain and answers a detail-free 500.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %crate::error_chain(err), "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueType::Exception, "internal server error; see the server log for this request")
    }
}

pub fn fhir_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json; charset=utf-8"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = fhir_response(self.status, &operation_outcome(&self.issues));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // 405 must say what the target allows: GET, for a read-only resource (the router's own
        // 405s keep their Allow header; see `fhir_errors`).
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        resp
    }
}

impl From<SearchFailure> for ApiError {
    fn from(err: SearchFailure) -> Self {
        match err {
            SearchFailure::TooCostly(text) => ApiError::new(StatusCode::BAD_REQUEST, IssueType::TooCostly, text),
            SearchFailure::Unsupported(text) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, IssueType::NotSupported, text),
            SearchFailure::Store(e @ StoreError::ScanLimit { .. }) => {
                ApiError::new(StatusCode::BAD_REQUEST, IssueType::TooCostly, e.to_string())
            }
            SearchFailure::Store(e) => ApiError::internal(&e),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Invalid(issues) => ApiError::issues(StatusCode::BAD_REQUEST, issues),
            IngestError::Rejected(issues) => ApiError::issues(StatusCode::UNPROCESSABLE_ENTITY, issues),
            IngestError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            IngestError::VersionMismatch { expected, actual } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                IssueType::Conflict,
                format!("If-Match version {expected} does not match the current version {actual}"),
            ),
            IngestError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, IssueType::Conflict, what),
            // RFC 9110 §15.5.6: the target resource does not support the method, permanently
            // (FHIR http.html uses 405 for deletes refused on principle, 409 for transient,
            // resource-specific refusals; 403 would suggest other credentials could succeed).
            IngestError::ReadOnly(what) => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, IssueType::NotSupported, what),
            IngestError::Forbidden(what) => ApiError::new(StatusCode::FORBIDDEN, IssueType::Security, what),
            IngestError::Entry { index, source } => {
                let mut inner = ApiError::from(*source);
                for issue in &mut inner.issues {
                    issue.diagnostics = format!("entry {index}: {}", issue.diagnostics);
                    if issue.expression.is_none() {
                        issue.expression = Some(format!("Bundle.entry[{index}]"));
                    }
                }
                inner
            }
            IngestError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "the write path is not available (shutting down or storage failure); retry",
            ),
            IngestError::StorageFull => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "the disk holding the store is nearly full; writes resume once space is freed",
            ),
            // The storage engine failed (a full disk): nothing was acknowledged, and Herald
            // reopens the store; the client retries.
            IngestError::Store(crate::store::StoreError::Engine(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient, "storage is failing (full or unwritable); retry")
            }
            IngestError::Store(e) => ApiError::internal(&e),
            // The log stopped taking commits (a cluster writer that lost its lease and was
            // fenced, NATS unreachable past the retry window, a failing disk): nothing was
            // acknowledged, and the node leaves the role or reopens the store; the client retries.
            IngestError::Log(crate::commitlog::LogError::Failed(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient, "the commit log is not taking writes here now; retry")
            }
            IngestError::Log(e) => ApiError::internal(&e),
        }
    }
}
