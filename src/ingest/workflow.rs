//! Workflow rules Herald can apply to writes when the operator asks: today, the FHIR Task
//! state machine on coordination Tasks (`ingest.enforce_task_state_machine`, off by default).
//!
//! A coordination Task is one whose `focus` names a request (ServiceRequest, MedicationRequest,
//! DeviceRequest, ... any `*Request`): the Task that placer and fulfiller share in the Clinical
//! Order Workflows pattern. The rule refuses only transitions the state machine cannot make:
//! leaving a final state (completed, cancelled, failed, rejected) other than to
//! entered-in-error, leaving entered-in-error, and going back to draft once requested. Moves
//! that skip intermediate states (requested straight to in-progress) are allowed, as the
//! workflow page allows. Nothing here changes a resource; a refusal is a 422 naming
//! `Task.status`.

use serde_json::Value;

use super::IngestError;
use crate::fhir::{Issue, IssueType};

const FINAL: [&str; 4] = ["completed", "cancelled", "failed", "rejected"];

/// Whether `task` is a coordination Task: its focus references a request resource.
pub(super) fn is_coordination_task(task: &Value) -> bool {
    task.pointer("/focus/reference")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').nth(1).or_else(|| r.split('/').next()))
        .is_some_and(|ty| ty.ends_with("Request") && ty != "Request")
        || task.pointer("/focus/type").and_then(Value::as_str).is_some_and(|ty| ty.ends_with("Request"))
}

/// Why moving from `from` to `to` is impossible, if it is.
fn forbidden(from: &str, to: &str) -> Option<String> {
    if from == to || to == "entered-in-error" && from != "entered-in-error" {
        return None;
    }
    if from == "entered-in-error" {
        return Some("a Task entered in error cannot change status".into());
    }
    if FINAL.contains(&from) {
        return Some(format!("'{from}' is a final status; only entered-in-error may follow it"));
    }
    if to == "draft" {
        return Some(format!("a Task cannot go back to draft from '{from}'"));
    }
    None
}

/// Refuse an impossible status change of a coordination Task (`previous` is its stored
/// current version, if any).
pub(super) fn check_task(previous: Option<&Value>, task: &Value) -> Result<(), IngestError> {
    let Some(previous) = previous.filter(|p| is_coordination_task(p) || is_coordination_task(task)) else { return Ok(()) };
    let (Some(from), Some(to)) = (previous.get("status").and_then(Value::as_str), task.get("status").and_then(Value::as_str)) else {
        return Ok(());
    };
    match forbidden(from, to) {
        None => Ok(()),
        Some(why) => Err(IngestError::Rejected(vec![Issue::at(
            IssueType::BusinessRule,
            "Task.status",
            format!("status change {from} -> {to} refused: {why} (ingest.enforce_task_state_machine is on)"),
        )])),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_impossible_transitions_of_coordination_tasks_are_refused() {
        let task = |status: &str, focus: &str| json!({ "resourceType": "Task", "status": status, "intent": "order", "focus": { "reference": focus } });
        let ok = |from: &str, to: &str| check_task(Some(&task(from, "ServiceRequest/1")), &task(to, "ServiceRequest/1")).is_ok();
        assert!(ok("requested", "accepted"));
        assert!(ok("requested", "in-progress"), "skipping states is allowed");
        assert!(ok("in-progress", "completed"));
        assert!(ok("completed", "entered-in-error"));
        assert!(ok("completed", "completed"), "an edit without a status change");
        assert!(!ok("completed", "in-progress"));
        assert!(!ok("cancelled", "requested"));
        assert!(!ok("requested", "draft"));
        assert!(!ok("entered-in-error", "requested"));
        // Not a coordination Task: stored as sent.
        assert!(check_task(Some(&task("completed", "Patient/1")), &task("in-progress", "Patient/1")).is_ok());
        assert!(is_coordination_task(&task("requested", "http://other.example/fhir/MedicationRequest/9")));
        assert!(check_task(None, &task("completed", "ServiceRequest/1")).is_ok(), "a create has no transition");
    }
}
