//! Shared outputs (Clinical Order Workflows, digest §7.3): detecting that an output a Task
//! lists was modified by someone other than its originator, the `output-modified` event of
//! the built-in topic `herald-output-modified`.
//!
//! Herald decides with what is recorded, never with guesses:
//! - **Who modified it** is the Provenance recorded for it: `agent.who` and `agent.onBehalfOf`
//!   of a Provenance whose `target` names the output (posted alone, in the transaction that
//!   changes the output, or with the change in an `X-Provenance` header). A change with no
//!   Provenance names nobody, so it never fires (an authenticated client id names a system,
//!   not the organization or practitioner an originator is).
//! - **The originator** is whoever the output's *first* version names as its source: the
//!   element in [`ORIGINATOR`] (`DiagnosticReport.performer`, `DocumentReference.author`...).
//!   Resources state their source (COW §7.3), and reading the first version rather than the
//!   current one means an amender cannot make itself the originator by editing that element.
//! - **An output** is a resource some Task lists in `Task.output` (looked up through the
//!   `Task.output` index, and the transaction being committed).
//!
//! The event's focus is the output at the version the Provenance names (else its current
//! version); subscriptions' filters are evaluated on the output's first version, so
//! `originator=Organization/lab` selects the changes to the lab's own outputs.

use serde_json::Value;

use super::context::{versions_of, CommitIncludes, MAX_CONTEXT};
use super::resolver::Pending;
use crate::fhir::search::include::{self, local_target, Found, Include};
use crate::fhir::search::{SearchParam, SearchParams};
use crate::store::{ContextRef, Store, StoreError};

/// The event code of the built-in `output-modified` trigger.
pub(super) const EVENT_SYSTEM: &str = "http://herald.dev/fhir/CodeSystem/workflow-event";
pub(super) const EVENT_CODE: &str = "output-modified";

/// Output types and the search parameter naming their originator.
pub(super) const ORIGINATOR: &[(&str, &str)] = &[
    ("DiagnosticReport", "performer"),
    ("Observation", "performer"),
    ("DocumentReference", "author"),
    ("QuestionnaireResponse", "author"),
    ("Composition", "author"),
    ("CarePlan", "custodian"),
    ("ServiceRequest", "requester"),
];

/// One detected modification.
pub(super) struct OutputModified {
    pub resource_type: String,
    pub id: String,
    /// The version the event shows.
    pub seq: u64,
    /// The output at that version.
    pub focus: Value,
    /// The output's first version: what filters are evaluated on.
    pub first: Value,
    /// The Tasks listing the output, as context after the Provenance.
    pub tasks: Vec<ContextRef>,
}

fn originator_param(resource_type: &str) -> Option<&'static SearchParam> {
    let (_, code) = ORIGINATOR.iter().find(|(t, _)| *t == resource_type)?;
    SearchParams::current().ok()?.get(resource_type, code)
}

/// `Type/id` of every local reference `nodes` hold.
fn local_refs(nodes: &[&Value], base_url: &str) -> Vec<(String, String)> {
    nodes
        .iter()
        .filter_map(|n| n.get("reference").and_then(Value::as_str).or_else(|| n.as_str()))
        .filter_map(|r| local_target(r, base_url))
        .collect()
}

/// The version number a `_history` reference names.
fn history_version(reference: &str) -> Option<u64> {
    let (_, v) = reference.rsplit_once("/_history/")?;
    v.parse().ok()
}

/// The modifications `provenance` (just written as `Provenance/prov_id`) records.
pub(super) fn detect(store: &Store, pending: Pending<'_>, base_url: &str, provenance: &Value) -> Result<Vec<OutputModified>, StoreError> {
    let agents: Vec<(String, String)> = provenance
        .get("agent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|a| [a.get("who"), a.get("onBehalfOf")])
        .flatten()
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .filter_map(|r| local_target(r, base_url))
        .collect();
    if agents.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(params) = SearchParams::current() else { return Ok(Vec::new()) };
    let Some(task_output) = params.get("Task", "output") else { return Ok(Vec::new()) };
    let listed_by = [Include { source: "Task".into(), param: Some(task_output), target: None, iterate: false }];
    let mut out: Vec<OutputModified> = Vec::new();
    let targets = provenance.get("target").and_then(Value::as_array).into_iter().flatten();
    for reference in targets.filter_map(|t| t.get("reference").and_then(Value::as_str)) {
        let Some((ty, id)) = local_target(reference, base_url) else { continue };
        let Some(originator) = originator_param(&ty) else { continue };
        if out.iter().any(|o| o.resource_type == ty && o.id == id) {
            continue;
        }
        let key = format!("{ty}/{id}");
        let latest = store.latest(&ty, &id)?;
        // The state and version the Provenance is about.
        let (seq, current) = match (history_version(reference), pending.get(&key)) {
            (Some(v), _) if latest.as_ref().is_some_and(|l| v <= l.seq) => {
                let Some(rec) = store.version(&ty, &id, v)? else { continue };
                (v, rec.resource)
            }
            (_, Some(state)) => (latest.as_ref().map_or(1, |l| l.seq + 1), state.clone()),
            (_, None) => match latest {
                Some(l) if !l.deleted => {
                    let Some(rec) = store.version(&ty, &id, l.seq)? else { continue };
                    (l.seq, rec.resource)
                }
                _ => continue,
            },
        };
        let Some(current) = current else { continue };
        let first = match store.version(&ty, &id, 1)? {
            Some(rec) => rec.resource,
            None => Some(current.clone()),
        };
        let Some(first) = first else { continue };
        let originators = originator.values(&ty, &first).map(|v| local_refs(&v, base_url)).unwrap_or_default();
        if originators.is_empty() || agents.iter().any(|a| originators.contains(a)) {
            continue;
        }
        let src = CommitIncludes::new(store, pending, base_url);
        let seeds: Vec<Found> = vec![(ty.clone(), id.clone(), current.clone())];
        let tasks = include::expand(&src, &[], &listed_by, &seeds, MAX_CONTEXT)?;
        if tasks.found.is_empty() {
            continue;
        }
        let tasks = versions_of(store, pending, tasks.found)?;
        out.push(OutputModified { resource_type: ty, id, seq, focus: current, first, tasks });
    }
    Ok(out)
}
