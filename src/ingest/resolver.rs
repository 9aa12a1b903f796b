//! `resolve()` for `fhirPathCriteria` while a commit is being planned.
//!
//! A reference is looked up first among the resources of the transaction being committed
//! (their state as of this commit, or nothing if the transaction deletes them) and of the apply
//! group it joins (`ingest::group`), then in the store. Relative (`Patient/1`), versioned (`Patient/1/_history/2`) and absolute references
//! on Herald's own base resolve; references to other servers do not (Herald never fetches
//! over the network while committing). Resources loaded from the store live in an arena for
//! the length of the commit, so evaluation borrows them without copying per access.

use std::collections::HashMap;

use serde_json::Value;
use typed_arena::Arena;

use crate::fhir::fhirpath::Resolver;
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::store::Store;

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
                return state.as_ref();
            }
        }
        let record = match version {
            Some(seq) => match this.store.version(ty, id, seq).ok()? {
                Some(record) => record,
                None => return this.pending.group_version(this.store, ty, id, seq)?.as_ref(),
            },
            None => this.store.latest(ty, id).ok()??,
        };
        if record.deleted {
            return None;
        }
        Some(this.loaded.alloc(record.resource?))
    }
}
