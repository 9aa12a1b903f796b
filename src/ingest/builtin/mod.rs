//! Herald's built-in SubscriptionTopics for the clinical order workflows (issue #6): the JSON
//! files under `config/topics/`, embedded, installed into the store at start and read-only.
//!
//! In: the store, before the committer loads topics. Out: one new stored version of each
//! built-in topic whose shipped definition differs from the stored one (first start, or a
//! release that changed it), written like any other version (history, search index), so
//! `GET /fhir/SubscriptionTopic?url=...` (R4: `GET /fhir/Basic?code=SubscriptionTopic`) and the
//! CapabilityStatement see them.
//!
//! Versions: every definition is written R5-shaped, naming the elements and search
//! parameters of the version it is for: `config/topics/*.json` for R5, `config/topics/r4/`
//! for R4 and R4B (R4B changed none of the Task, Request and output elements and search
//! parameters these topics name; a unit test checks each set against each version's official
//! definitions). The instance's set is installed in its version's form
//! (`fhir::topic::stored::from_r5`: an R4 `Basic`, an R4B `SubscriptionTopic`).
//!
//! Identity: each built-in has a fixed id `herald-<name>` and url
//! `http://herald.dev/fhir/SubscriptionTopic/<name>`, the same in every version. A changed
//! definition is a new version of the same id, never a second resource with the same url.
//! Clients cannot write these ids (of the type topics are stored as: R4 `Basic`), nor any
//! topic whose url is under [`URL_PREFIX`] (which could otherwise shadow a built-in in
//! `Registry::resolve_topic`). It never deletes a stored built-in that a later release
//! stopped shipping; it retires it (see docs/workflows.md).

use serde_json::{json, Value};

use super::{IngestError, WriteMethod};
use crate::fhir::instant::Millis;
use crate::fhir::topic::parse_topic;
use crate::fhir::topic::stored::{self, topic_type};
use crate::fhir::version::instance;
use crate::fhir::{FhirVersion, Issue, IssueType};
use crate::store::records::FORMAT;
use crate::store::{Commit, Store, VersionRecord};

/// Canonical urls of built-in topics start with this; clients may not use it.
pub const URL_PREFIX: &str = "http://herald.dev/fhir/SubscriptionTopic/";

/// Ids of built-in topics start with this.
pub const ID_PREFIX: &str = "herald-";

/// The R5 definitions. When one changes, bump its `version`.
const SHIPPED_R5: [&str; 6] = [
    include_str!("../../../config/topics/coordination-task-changed.json"),
    include_str!("../../../config/topics/task-assigned.json"),
    include_str!("../../../config/topics/task-cancellation-requested.json"),
    include_str!("../../../config/topics/actionable-request-placed.json"),
    include_str!("../../../config/topics/request-completed-or-revoked.json"),
    include_str!("../../../config/topics/output-modified.json"),
];

/// The R4 and R4B definitions (R5-shaped, naming R4 elements). Same ids and urls.
const SHIPPED_R4: [&str; 6] = [
    include_str!("../../../config/topics/r4/coordination-task-changed.json"),
    include_str!("../../../config/topics/r4/task-assigned.json"),
    include_str!("../../../config/topics/r4/task-cancellation-requested.json"),
    include_str!("../../../config/topics/r4/actionable-request-placed.json"),
    include_str!("../../../config/topics/r4/request-completed-or-revoked.json"),
    include_str!("../../../config/topics/r4/output-modified.json"),
];

/// The definitions (R5-shaped JSON text) written for `version`.
pub(crate) fn definitions(version: FhirVersion) -> &'static [&'static str] {
    match version {
        FhirVersion::R4 | FhirVersion::R4B => &SHIPPED_R4,
        FhirVersion::R5 => &SHIPPED_R5,
    }
}

/// One built-in topic: its id and its resource as stored (in the version's form, with `id`,
/// without `meta`).
#[derive(Debug, Clone)]
pub struct Builtin {
    pub id: String,
    pub resource: Value,
}

/// `version`'s shipped topics that parse and validate, in its stored form. One that does not
/// is logged and left out (a unit test keeps that from shipping).
pub fn shipped_for(version: FhirVersion) -> Vec<Builtin> {
    let mut out = Vec::new();
    for text in definitions(version) {
        let topic: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "a built-in topic is not valid JSON; not installed");
                continue;
            }
        };
        let Some(id) = topic.get("id").and_then(Value::as_str).map(str::to_owned) else {
            tracing::error!("a built-in topic has no id; not installed");
            continue;
        };
        if let Err(issues) = parse_topic(&id, &topic) {
            tracing::error!(topic.id = %id, issues = issues.len(), "a built-in topic does not validate; not installed");
            continue;
        }
        match stored::from_r5(version, &topic) {
            Ok(resource) => out.push(Builtin { id, resource }),
            Err(issues) => {
                tracing::error!(topic.id = %id, issues = issues.len(), %version, "a built-in topic has no form in this version; not installed")
            }
        }
    }
    out
}

/// Whether `id` names a built-in topic (shipped now, or in the reserved id space).
pub fn is_builtin_id(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// Whether a client-written topic (in the instance version's form) claims the built-in url
/// space.
pub fn claims_builtin_url(resource: &Value) -> bool {
    let version = instance();
    stored::canonical_url(version, topic_type(version), resource).is_some_and(|u| u.starts_with(URL_PREFIX))
}

/// Refuses a client write that would change a built-in topic or shadow one: any write to an
/// id under [`ID_PREFIX`] of the type topics are stored as (`ReadOnly`: the API answers 405),
/// and a create or update of another topic whose url is under [`URL_PREFIX`] (422).
pub(super) fn refuse_client_write(id: &str, method: WriteMethod, resource: Option<&Value>) -> Result<(), IngestError> {
    let ty = topic_type(instance());
    if is_builtin_id(id) {
        return Err(IngestError::ReadOnly(format!(
            "{ty}/{id} is one of Herald's built-in topics: it is read-only and changes only with a Herald release; \
             create your own topic (another url) to change it"
        )));
    }
    if method != WriteMethod::Delete && resource.is_some_and(claims_builtin_url) {
        return Err(IngestError::Rejected(vec![Issue::at(
            IssueType::BusinessRule,
            "SubscriptionTopic.url",
            format!("urls under {URL_PREFIX} are reserved for Herald's built-in topics"),
        )]));
    }
    Ok(())
}

/// The stored resource without what the store adds (`meta`), for comparison with the shipped one.
fn content(resource: &Value) -> Value {
    let mut v = resource.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("meta");
    }
    v
}

/// Plans a new version of every built-in whose stored current version is missing, deleted
/// or different from the shipped one: one commit per topic id, for the committer to apply
/// like any other (so that they are in its commit log). `base_url` is Herald's base, for
/// the search index.
pub(super) fn install(store: &Store, base_url: &str, now: Millis) -> Result<Vec<(String, Commit)>, IngestError> {
    install_for(instance(), store, base_url, now)
}

/// [`install`] for `version`'s set and form.
fn install_for(version: FhirVersion, store: &Store, base_url: &str, now: Millis) -> Result<Vec<(String, Commit)>, IngestError> {
    let ty = topic_type(version);
    let mut written = Vec::new();
    let shipped = shipped_for(version);
    for builtin in &shipped {
        let prev = store.latest(ty, &builtin.id)?;
        let live = prev.as_ref().filter(|p| !p.deleted).and_then(|p| p.resource.as_ref());
        if live.is_some_and(|r| content(r) == builtin.resource) {
            continue;
        }
        let commit = write(store, base_url, now, ty, &builtin.id, prev.as_ref(), builtin.resource.clone())?;
        let shipped_version = builtin.resource.get("version").cloned().unwrap_or(json!(null));
        tracing::info!(topic.id = %builtin.id, version = %shipped_version, "built-in topic installed");
        written.push((builtin.id.clone(), commit));
    }
    // A built-in an earlier release shipped and this one does not: retired (a new version with
    // status `retired`), so no new subscription binds to it while existing ones keep their
    // history; never deleted behind its subscribers' backs.
    for (id, cur) in store.list_current(ty, Some(ID_PREFIX), usize::MAX)? {
        if !id.starts_with(ID_PREFIX) {
            break;
        }
        if cur.deleted || shipped.iter().any(|b| b.id == id) {
            continue;
        }
        let Some(prev) = store.latest(ty, &id)? else { continue };
        let Some(resource) = prev.resource.as_ref() else { continue };
        // Through the R5 shape, since R4 keeps `status` in a modifier extension.
        let Some(Ok(mut topic)) = stored::to_r5(version, ty, resource) else { continue };
        if topic.get("status").and_then(Value::as_str) == Some("retired") {
            continue;
        }
        let Some(obj) = topic.as_object_mut() else { continue };
        obj.insert("status".into(), json!("retired"));
        obj.remove("meta");
        let Ok(resource) = stored::from_r5(version, &topic) else { continue };
        let commit = write(store, base_url, now, ty, &id, Some(&prev), resource)?;
        tracing::info!(topic.id = %id, "built-in topic no longer shipped; retired");
        written.push((id, commit));
    }
    Ok(written)
}

/// The commit storing `resource` as the next version of built-in topic `ty/id`, with its
/// index entries.
fn write(
    store: &Store,
    base_url: &str,
    now: Millis,
    ty: &str,
    id: &str,
    prev: Option<&VersionRecord>,
    mut resource: Value,
) -> Result<Commit, IngestError> {
    let seq = prev.map_or(1, |p| p.seq + 1);
    let version_id = seq.to_string();
    super::plan::meta_stamp(&mut resource, id, &version_id, now);
    let record = VersionRecord {
        v: FORMAT,
        resource_type: ty.into(),
        id: id.to_owned(),
        seq,
        version_id,
        last_updated: now,
        method: if prev.is_some() { "PUT" } else { "POST" }.into(),
        deleted: false,
        resource: Some(resource),
        full_url: None,
    };
    let mut commit = Commit::new();
    commit.put_version(&record)?;
    commit.index_version(store, &record, base_url)?;
    Ok(commit)
}

#[cfg(test)]
mod check;
#[cfg(test)]
mod codes;
#[cfg(test)]
mod tests;
