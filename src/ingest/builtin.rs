//! Herald's built-in SubscriptionTopics for the clinical order workflows (issue #6): the JSON
//! files under `config/topics/`, embedded, installed into the store at start and read-only.
//!
//! In: the store, before the committer loads topics. Out: one new stored version of each
//! built-in topic whose shipped definition differs from the stored one (first start, or a
//! release that changed it), written like any other version (history, search index), so
//! `GET /fhir/SubscriptionTopic?url=...` and the CapabilityStatement see them.
//!
//! Identity: each built-in has a fixed id `herald-<name>` and url
//! `http://herald.dev/fhir/SubscriptionTopic/<name>`. A changed definition is a new version of
//! the same id, never a second resource with the same url. Clients cannot write these ids, nor
//! any topic whose url is under [`URL_PREFIX`] (which could otherwise shadow a built-in in
//! `Registry::resolve_topic`). It never deletes or retires a stored built-in that a later
//! release stopped shipping (see docs/workflows.md).

use serde_json::{json, Value};

use super::{IngestError, WriteMethod};
use crate::fhir::instant::Millis;
use crate::fhir::topic::parse_topic;
use crate::fhir::{Issue, IssueType};
use crate::store::records::FORMAT;
use crate::store::{Commit, Store, VersionRecord};

/// Canonical urls of built-in topics start with this; clients may not use it.
pub const URL_PREFIX: &str = "http://herald.dev/fhir/SubscriptionTopic/";

/// Ids of built-in topics start with this.
pub const ID_PREFIX: &str = "herald-";

/// The shipped definitions. When one changes, bump its `version`.
const SHIPPED: [&str; 6] = [
    include_str!("../../config/topics/coordination-task-changed.json"),
    include_str!("../../config/topics/task-assigned.json"),
    include_str!("../../config/topics/task-cancellation-requested.json"),
    include_str!("../../config/topics/actionable-request-placed.json"),
    include_str!("../../config/topics/request-completed-or-revoked.json"),
    include_str!("../../config/topics/output-modified.json"),
];

/// One built-in topic: its id and its resource as shipped (with `id`, without `meta`).
#[derive(Debug, Clone)]
pub struct Builtin {
    pub id: String,
    pub resource: Value,
}

/// The shipped topics that parse and validate. One that does not is logged and left out (a
/// unit test keeps that from shipping).
pub fn shipped() -> Vec<Builtin> {
    let mut out = Vec::new();
    for text in SHIPPED {
        let resource: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "a built-in topic is not valid JSON; not installed");
                continue;
            }
        };
        let Some(id) = resource.get("id").and_then(Value::as_str).map(str::to_owned) else {
            tracing::error!("a built-in topic has no id; not installed");
            continue;
        };
        if let Err(issues) = parse_topic(&id, &resource) {
            tracing::error!(topic.id = %id, issues = issues.len(), "a built-in topic does not validate; not installed");
            continue;
        }
        out.push(Builtin { id, resource });
    }
    out
}

/// Whether `id` names a built-in topic (shipped now, or in the reserved id space).
pub fn is_builtin_id(id: &str) -> bool {
    id.starts_with(ID_PREFIX)
}

/// Whether a client-written topic claims the built-in url space.
pub fn claims_builtin_url(resource: &Value) -> bool {
    resource.get("url").and_then(Value::as_str).is_some_and(|u| u.starts_with(URL_PREFIX))
}

/// Refuses a client write that would change a built-in topic or shadow one: any write to an
/// id under [`ID_PREFIX`] (`ReadOnly`: the API answers 405), and a create or update of another
/// topic whose url is under [`URL_PREFIX`] (422).
pub(super) fn refuse_client_write(id: &str, method: WriteMethod, resource: Option<&Value>) -> Result<(), IngestError> {
    if is_builtin_id(id) {
        return Err(IngestError::ReadOnly(format!(
            "SubscriptionTopic/{id} is one of Herald's built-in topics: it is read-only and changes only with a Herald release; \
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

/// Writes a new version of every built-in whose stored current version is missing, deleted
/// or different from the shipped one. Returns the ids written. `base_url` is Herald's base,
/// for the search index.
pub(super) fn install(store: &Store, base_url: &str, now: Millis) -> Result<Vec<String>, IngestError> {
    let mut written = Vec::new();
    let shipped = shipped();
    for builtin in &shipped {
        let prev = store.latest("SubscriptionTopic", &builtin.id)?;
        let live = prev.as_ref().filter(|p| !p.deleted).and_then(|p| p.resource.as_ref());
        if live.is_some_and(|r| content(r) == builtin.resource) {
            continue;
        }
        write(store, base_url, now, &builtin.id, prev.as_ref(), builtin.resource.clone())?;
        let shipped_version = builtin.resource.get("version").cloned().unwrap_or(json!(null));
        tracing::info!(topic.id = %builtin.id, version = %shipped_version, "built-in topic installed");
        written.push(builtin.id.clone());
    }
    // A built-in an earlier release shipped and this one does not: retired (a new version with
    // status `retired`), so no new subscription binds to it while existing ones keep their
    // history; never deleted behind its subscribers' backs.
    for (id, cur) in store.list_current("SubscriptionTopic", Some(ID_PREFIX), usize::MAX)? {
        if !id.starts_with(ID_PREFIX) {
            break;
        }
        if cur.deleted || shipped.iter().any(|b| b.id == id) {
            continue;
        }
        let Some(prev) = store.latest("SubscriptionTopic", &id)? else { continue };
        let Some(mut resource) = prev.resource.clone() else { continue };
        if resource.get("status").and_then(Value::as_str) == Some("retired") {
            continue;
        }
        let Some(obj) = resource.as_object_mut() else { continue };
        obj.insert("status".into(), json!("retired"));
        write(store, base_url, now, &id, Some(&prev), resource)?;
        tracing::info!(topic.id = %id, "built-in topic no longer shipped; retired");
        written.push(id);
    }
    Ok(written)
}

/// Store `resource` as the next version of built-in topic `id`, with its index entries.
fn write(
    store: &Store,
    base_url: &str,
    now: Millis,
    id: &str,
    prev: Option<&VersionRecord>,
    mut resource: Value,
) -> Result<(), IngestError> {
    let seq = prev.map_or(1, |p| p.seq + 1);
    let version_id = seq.to_string();
    super::committer::meta_stamp(&mut resource, id, &version_id, now);
    let record = VersionRecord {
        v: FORMAT,
        resource_type: "SubscriptionTopic".into(),
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
    store.apply(commit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_topic_parses_with_its_reserved_id_and_url() {
        assert_eq!(shipped().len(), SHIPPED.len(), "a shipped topic failed to parse; see the log");
        for b in shipped() {
            let url = b.resource["url"].as_str().unwrap_or_default();
            let name = url.strip_prefix(URL_PREFIX).unwrap_or_default();
            assert!(!name.is_empty(), "{url} is outside {URL_PREFIX}");
            assert_eq!(b.id, format!("{ID_PREFIX}{name}"), "id and url name must agree");
            assert!(b.resource["version"].is_string() && b.resource["description"].is_string() && b.resource["title"].is_string());
            assert_eq!(b.resource["status"], "active");
            for t in b.resource["resourceTrigger"].as_array().into_iter().flatten() {
                assert!(t["description"].is_string(), "{url}: every trigger says when it fires");
            }
        }
    }

    #[test]
    fn install_writes_once_then_only_when_the_shipped_definition_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let all = shipped().len();
        assert_eq!(install(&store, "http://h/fhir", 1).unwrap().len(), all);
        assert!(install(&store, "http://h/fhir", 2).unwrap().is_empty(), "an unchanged definition is not rewritten");

        // An older release's definition is stored: the next start writes version 3 of the
        // same id, and nothing else.
        let id = "herald-task-assigned";
        let mut old = store.latest("SubscriptionTopic", id).unwrap().unwrap();
        old.seq = 2;
        old.version_id = "2".into();
        if let Some(r) = old.resource.as_mut() {
            r["version"] = json!("0.9.0");
        }
        let mut commit = Commit::new();
        commit.put_version(&old).unwrap();
        store.apply(commit).unwrap();
        assert_eq!(install(&store, "http://h/fhir", 3).unwrap(), vec![id.to_string()]);
        let now = store.latest("SubscriptionTopic", id).unwrap().unwrap();
        assert_eq!((now.seq, now.resource.unwrap()["version"].as_str()), (3, Some("1.0.0")));
        assert_eq!(store.history("SubscriptionTopic", id, 10).unwrap().len(), 3);

        // A built-in this release no longer ships is retired once, not deleted.
        let mut gone = store.latest("SubscriptionTopic", id).unwrap().unwrap();
        gone.id = "herald-dropped-topic".into();
        gone.seq = 1;
        gone.version_id = "1".into();
        let mut commit = Commit::new();
        commit.put_version(&gone).unwrap();
        store.apply(commit).unwrap();
        assert_eq!(install(&store, "http://h/fhir", 4).unwrap(), vec!["herald-dropped-topic".to_string()]);
        let retired = store.latest("SubscriptionTopic", "herald-dropped-topic").unwrap().unwrap();
        assert_eq!((retired.seq, retired.resource.unwrap()["status"].as_str()), (2, Some("retired")));
        assert!(install(&store, "http://h/fhir", 5).unwrap().is_empty(), "retired once");
    }
}
