//! FHIRPath Patch (fhirpatch.html): a `Parameters` resource of `operation` parameters.

use axum::http::StatusCode;
use serde_json::Value;

use crate::api::outcome::ApiError;
use crate::fhir::IssueType;

/// One parsed operation.
pub(crate) struct Operation;

pub(super) fn parse(_parameters: &Value) -> Result<Vec<Operation>, ApiError> {
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IssueType::NotSupported,
        "FHIRPath Patch is not supported yet; send a JSON Patch",
    ))
}

pub(super) fn apply(_resource: &mut Value, _ops: &[Operation]) -> Result<(), ApiError> {
    Ok(())
}
