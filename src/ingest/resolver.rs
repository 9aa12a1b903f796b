//! What matching reads while a commit is being planned: the change itself (`SeenChange`) and,
//! through `resolve()`, the resources its criteria and filters reach (`CommitResolver`).
//!
//! Both show a Subscription only redacted (`secrets::redacted`): no `fhirPathCriteria`,
//! `queryCriteria` or `filterBy` can test a header value or a signing secret. Topics naming
//! Subscription are refused (`fhir::topic`), but `Resource` triggers still fire on them.
//!
//! A reference is looked up first among the resources of the transaction being committed
//! (their state as of this commit, or nothing if the transaction deletes them) and of the apply
//! group it joins (`ingest::group`), then in the store. Relative (`Patient/1`), versioned (`Patient/1/_history/2`) and absolute references
//! on Herald's own base resolve; references to other servers do not (Herald never fetches
//! over the network while committing). Resources loaded from the store live in an arena for
//! the length of the commit, so evaluation borrows them without copying per access.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use typed_arena::Arena;

use crate::fhir::fhirpath::Resolver;
use crate::fhir::subscription::secrets::{redact, redacted};
use crate::fhir::topic::Interaction;
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::matching::ResourceChange;
use crate::store::{Store, VersionRecord};

/// One written version as matching sees it: its states, a Subscription's redacted.
pub(super) struct SeenChange<'a> {
    record: &'a VersionRecord,
    interaction: Interaction,
    previous: Option<Cow<'a, Value>>,
    current: Option<Cow<'a, Value>>,
}

impl<'a> SeenChange<'a> {
    /// `record` is the version written, `previous` the state it replaces.
    pub(super) fn new(record: &'a VersionRecord, interaction: Interaction, previous: Option<&'a Value>) -> Self {
        SeenChange { record, interaction, previous: previous.map(redacted), current: record.resource.as_ref().map(redacted) }
    }

    pub(super) fn change(&self) -> ResourceChange<'_> {
        ResourceChange {
            resource_type: &self.record.resource_type,
            id: &self.record.id,
            interaction: self.interaction,
            previous: self.previous.as_deref(),
            current: self.current.as_deref(),
        }
    }
}

/// Resources written but not in the store yet: by the commit being planned (`Plan::pending`),
/// then by the earlier commits of its apply group (`Group::pending`). Keys are `Type/id`,
/// values the new state (`None`: deleted).
#[derive(Clone, Copy)]
pub(super) struct Pending<'c> {
    pub commit: &'c HashMap<String, Option<Value>>,
    pub group: &'c HashMap<String, Option<Value>>,
}

impl<'c> Pending<'c> {
    pub(super) fn get(&self, key: &str) -> Option<&'c Option<Value>> {
        self.commit.get(key).or_else(|| self.group.get(key))
    }

    /// Every key, once.
    pub(super) fn keys(&self) -> impl Iterator<Item = &'c String> + '_ {
        self.commit.keys().chain(self.group.keys().filter(|k| !self.commit.contains_key(k.as_str())))
    }

    /// The state an earlier commit of the group wrote as version `seq` of `Type/id`, if it did
    /// (a resource appears at most once in a group, so that version is the stored latest + 1).
    fn group_version(&self, store: &Store, ty: &str, id: &str, seq: u64) -> Option<&'c Option<Value>> {
        let state = self.group.get(&format!("{ty}/{id}"))?;
        let latest = store.current(ty, id).ok()?.map_or(0, |c| c.seq);
        (latest + 1 == seq).then_some(state)
    }
}

pub(super) struct CommitResolver<'c> {
    store: &'c Store,
    pending: Pending<'c>,
    base_url: &'c str,
    loaded: Arena<Value>,
}

impl<'c> CommitResolver<'c> {
    pub(super) fn new(store: &'c Store, pending: Pending<'c>, base_url: &'c str) -> Self {
        CommitResolver { store, pending, base_url, loaded: Arena::new() }
    }

    /// `(type, id, version)` of a reference on this server, or `None`.
    fn parse<'r>(&self, reference: &'r str) -> Option<(&'r str, &'r str, Option<u64>)> {
        let local = match reference.strip_prefix(self.base_url) {
            Some(rest) => rest.strip_prefix('/')?,
            None if reference.contains("://") || reference.starts_with("urn:") => return None,
            None => reference,
        };
        let mut parts = local.split('/');
        let ty = parts.next()?;
        let id = parts.next()?;
        let version = match (parts.next(), parts.next()) {
            (None, _) => None,
            (Some("_history"), Some(v)) => Some(v.parse().ok()?),
            _ => return None,
        };
        if parts.next().is_some() || !is_resource_type(ty) || !is_valid_id(id) {
            return None;
        }
        Some((ty, id, version))
    }
}

impl<'r> Resolver<'r> for &'r CommitResolver<'_> {
    fn resolve(&self, reference: &str) -> Option<&'r Value> {
        let this: &'r CommitResolver<'_> = self;
        let (ty, id, version) = this.parse(reference)?;
        if version.is_none() {
            if let Some(state) = this.pending.get(&format!("{ty}/{id}")) {
                return this.seen(state.as_ref()?);
            }
        }
        let record = match version {
            Some(seq) => match this.store.version(ty, id, seq).ok()? {
                Some(record) => record,
                None => return this.seen(this.pending.group_version(this.store, ty, id, seq)?.as_ref()?),
            },
            None => this.store.latest(ty, id).ok()??,
        };
        if record.deleted {
            return None;
        }
        let mut resource = record.resource?;
        redact(&mut resource);
        Some(this.loaded.alloc(resource))
    }
}

impl<'c> CommitResolver<'c> {
    /// A pending state as criteria may see it: borrowed, or a redacted copy of a Subscription.
    fn seen<'r>(&'r self, state: &'c Value) -> Option<&'r Value> {
        match redacted(state) {
            Cow::Borrowed(state) => Some(state),
            Cow::Owned(copy) => Some(self.loaded.alloc(copy)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fhir::fhirpath::{Env, Expression};

    const SECRET: &str = "Bearer seen-secret-19";

    fn version(resource: Value) -> VersionRecord {
        VersionRecord {
            v: crate::store::records::FORMAT,
            resource_type: resource["resourceType"].as_str().unwrap().into(),
            id: "x".into(),
            seq: 2,
            version_id: "2".into(),
            last_updated: 1,
            method: "PUT".into(),
            deleted: false,
            resource: Some(resource),
            full_url: None,
        }
    }

    fn subscription(status: &str) -> Value {
        json!({ "resourceType": "Subscription", "id": "x", "status": status, "topic": "http://t",
            "parameter": [{ "name": "Authorization", "value": SECRET }],
            "extension": [{ "url": crate::fhir::subscription::secrets::SIGNING_SECRET_URL,
                "valueString": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=" }] })
    }

    #[test]
    fn matching_sees_a_subscription_change_without_its_secrets() {
        let previous = subscription("requested");
        let record = version(subscription("active"));
        let seen = SeenChange::new(&record, Interaction::Update, Some(&previous));
        let change = seen.change();
        for state in [change.previous.unwrap(), change.current.unwrap()] {
            let text = state.to_string();
            assert!(!text.contains("seen-secret") && !text.contains("whsec_"), "{text}");
        }
        assert_eq!(change.current.unwrap()["status"], "active", "everything else is there");
        // Criteria that would test the secret cannot: it is not in what they evaluate.
        let criteria = Expression::parse(&format!("%current.parameter.value = '{SECRET}'")).unwrap();
        let env = Env::new(change.current).with_variable("current", change.current);
        assert_eq!(criteria.evaluate_bool(&env).unwrap(), Some(false));
    }

    #[test]
    fn resolve_reaches_a_subscription_only_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let commit: HashMap<String, Option<Value>> = [("Subscription/x".to_string(), Some(subscription("active")))].into();
        let group = HashMap::new();
        let resolver = CommitResolver::new(&store, Pending { commit: &commit, group: &group }, "http://h/fhir");
        let task = json!({ "resourceType": "Task", "id": "t", "focus": { "reference": "Subscription/x" } });
        let criteria = Expression::parse(&format!("%current.focus.resolve().parameter.value = '{SECRET}'")).unwrap();
        let resolver_ref = &resolver;
        let env = Env::new(Some(&task)).with_variable("current", Some(&task)).with_resolver(&resolver_ref);
        assert_eq!(criteria.evaluate_bool(&env).unwrap(), Some(false));
        let status = Expression::parse("%current.focus.resolve().status = 'active'").unwrap();
        assert_eq!(status.evaluate_bool(&env).unwrap(), Some(true), "the reference still resolves");
    }

    #[test]
    fn other_changes_are_matched_as_written_without_a_copy() {
        let previous = json!({ "resourceType": "Task", "id": "x", "parameter": [{ "value": "kept" }] });
        let record = version(json!({ "resourceType": "Task", "id": "x", "status": "requested" }));
        let seen = SeenChange::new(&record, Interaction::Update, Some(&previous));
        let change = seen.change();
        assert!(std::ptr::eq(change.previous.unwrap(), &previous));
        assert!(std::ptr::eq(change.current.unwrap(), record.resource.as_ref().unwrap()));
    }
}
