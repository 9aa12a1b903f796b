//! `Issue`: one finding about a request, as an `OperationOutcome.issue` will carry it.
//!
//! Validation anywhere in Herald reports every issue it finds as a `Vec<Issue>`; only
//! `api::outcome` decides which HTTP status goes with them.

use serde_json::{json, Value};

/// `OperationOutcome.issue.code` values Herald uses (R5 `issue-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueType {
    Structure,
    Invalid,
    Required,
    Value,
    BusinessRule,
    NotSupported,
    NotFound,
    Deleted,
    Conflict,
    /// A condition (conditional create, update, delete or reference) matched several resources.
    MultipleMatches,
    TooCostly,
    Transient,
    Exception,
    Informational,
    /// An unknown or expired credential (a websocket binding token).
    Security,
    /// Too many requests (rate limit).
    Throttled,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Structure => "structure",
            IssueType::Invalid => "invalid",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::BusinessRule => "business-rule",
            IssueType::NotSupported => "not-supported",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::Conflict => "conflict",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::TooCostly => "too-costly",
            IssueType::Transient => "transient",
            IssueType::Exception => "exception",
            IssueType::Informational => "informational",
            IssueType::Security => "security",
            IssueType::Throttled => "throttled",
        }
    }
}

/// One problem (or note) with its FHIRPath-like location, e.g. `Subscription.filterBy[0]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: Option<String>,
    /// `information` rather than `error`: reported, not refused.
    pub informational: bool,
}

impl Issue {
    pub fn new(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue { code, diagnostics: diagnostics.into(), expression: None, informational: false }
    }

    pub fn at(code: IssueType, expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        Issue { code, diagnostics: diagnostics.into(), expression: Some(expression.into()), informational: false }
    }

    pub fn info(diagnostics: impl Into<String>) -> Self {
        Issue { code: IssueType::Informational, diagnostics: diagnostics.into(), expression: None, informational: true }
    }

    fn to_json(&self) -> Value {
        let mut issue = json!({
            "severity": if self.informational { "information" } else { "error" },
            "code": self.code.code(),
            "diagnostics": self.diagnostics,
        });
        if let (Some(expr), Some(obj)) = (&self.expression, issue.as_object_mut()) {
            obj.insert("expression".into(), json!([expr]));
        }
        issue
    }
}

/// An `OperationOutcome` resource holding `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}
