//! What one commit will do, planned before anything is applied, and what planning may read.
//!
//! A `Plan` collects a commit's store writes, the subscription states it changes, its registry
//! changes and which lanes to tell; the committer merges it only when the commit applies, so a
//! refused request leaves no trace, in the store or in memory. A `View` is what every planning
//! step reads: the store as applied so far, the registry, the subscription states, the
//! resources of the open apply group, and configuration. Planners take a `View` and a `Plan`
//! and nothing else, so no planning file reaches back into the committer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};

use super::resolver::Pending;
use super::settings::CommitterConfig;
use crate::commitlog::Effect;
use crate::fhir::instant::{format_millis, Millis};
use crate::fhir::search::{SearchParam, SearchParams};
use crate::fhir::topic::stored as stored_topic;
use crate::fhir::topic::TopicSpec;
use crate::outbox::SledOutbox;
use crate::registry::{Registry, SubEntry};
use crate::store::{Commit, Store, StoredGrant, SubState};

/// A registry change planned with a commit.
pub(crate) enum RegistryOp {
    PutTopic(TopicSpec),
    RemoveTopic(String),
    PutSub(Arc<SubEntry>),
    RemoveSub(String),
    /// SearchParameter `id` becomes (or stops being, under `url`) a custom search parameter.
    PutSearchParam {
        id: String,
        param: Box<SearchParam>,
    },
    RemoveSearchParam {
        id: String,
        url: String,
    },
}

impl RegistryOp {
    pub fn apply(self, registry: &mut Registry) {
        match self {
            RegistryOp::PutTopic(t) => registry.put_topic(t),
            RegistryOp::RemoveTopic(id) => registry.remove_topic(&id),
            RegistryOp::PutSub(e) => registry.put_subscription(e),
            RegistryOp::RemoveSub(id) => registry.remove_subscription(&id),
            RegistryOp::PutSearchParam { param, .. } => {
                if let Ok(params) = SearchParams::current() {
                    params.register_custom(*param);
                }
            }
            RegistryOp::RemoveSearchParam { url, .. } => {
                if let Ok(params) = SearchParams::current() {
                    params.unregister_custom(&url);
                }
            }
        }
    }
}

/// Side effects of one commit, merged into the committer only if the commit applies.
#[derive(Default)]
pub(super) struct Plan {
    pub commit: Commit,
    pub states: HashMap<String, SubState>,
    pub registry_ops: Vec<RegistryOp>,
    /// Subscriptions whose lane must be republished.
    pub touched: Vec<String>,
    /// Subscriptions removed.
    pub removed: Vec<String>,
    /// Resources of a multi-entry transaction (`Type/id` to their state in this commit), so
    /// that `resolve()` in topic criteria sees the transaction, not the store before it.
    pub pending: HashMap<String, Option<Value>>,
    /// The authenticated client making the writes (`None`: anonymous, or Herald itself).
    pub actor: Option<String>,
    /// What the actor is granted; recorded with the Subscriptions it creates or updates.
    pub grant: Option<StoredGrant>,
    /// Deleted subscriptions with events left to remove after this commit.
    pub purging: Vec<String>,
}

impl Plan {
    pub(super) fn touch(&mut self, sub: &str) {
        if !self.touched.iter().any(|s| s == sub) {
            self.touched.push(sub.to_string());
        }
    }

    /// What a replica must reload after applying this plan's writes (`commitlog::Effect`).
    pub(super) fn effects(&self) -> Vec<Effect> {
        let mut out: Vec<Effect> = Vec::new();
        for op in &self.registry_ops {
            let effect = match op {
                RegistryOp::PutTopic(t) => Effect::Topic(t.id.clone()),
                RegistryOp::RemoveTopic(id) => Effect::Topic(id.clone()),
                RegistryOp::PutSub(e) => Effect::Subscription(e.spec.id.clone()),
                RegistryOp::RemoveSub(id) => Effect::Subscription(id.clone()),
                RegistryOp::PutSearchParam { id, .. } => Effect::SearchParameter { id: id.clone(), retired_url: None },
                RegistryOp::RemoveSearchParam { id, url } => Effect::SearchParameter { id: id.clone(), retired_url: Some(url.clone()) },
            };
            // One effect per registry entry: a SearchParameter that retired a url and put a
            // new one is one effect naming the retired url.
            match (&effect, out.iter_mut().find(|e| same_target(e, &effect))) {
                (Effect::SearchParameter { retired_url: Some(url), .. }, Some(Effect::SearchParameter { retired_url, .. })) => {
                    *retired_url = Some(url.clone());
                }
                (_, Some(_)) => {}
                (_, None) => out.push(effect),
            }
        }
        out
    }

    /// The lanes to tell once applied: removed subscriptions, then touched ones.
    pub(super) fn lanes(&self) -> Vec<String> {
        let mut out = self.removed.clone();
        out.extend(self.touched.iter().filter(|s| !self.removed.contains(s)).cloned());
        out
    }
}

fn same_target(a: &Effect, b: &Effect) -> bool {
    match (a, b) {
        (Effect::Topic(x), Effect::Topic(y)) | (Effect::Subscription(x), Effect::Subscription(y)) => x == y,
        (Effect::SearchParameter { id: x, .. }, Effect::SearchParameter { id: y, .. }) => x == y,
        _ => false,
    }
}

/// What planning reads. Everything is as of the last apply, plus the open group's resources.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub store: &'a Store,
    pub outbox: &'a SledOutbox,
    pub registry: &'a Registry,
    pub states: &'a HashMap<String, SubState>,
    /// Resources the open apply group wrote (`group::Group::pending`).
    pub group_pending: &'a HashMap<String, Option<Value>>,
    /// Deleted subscriptions whose events are still being removed.
    pub purges: &'a VecDeque<String>,
    pub cfg: &'a CommitterConfig,
}

impl<'a> View<'a> {
    /// A subscription's state as `plan` leaves it.
    pub(super) fn state(&self, plan: &Plan, sub: &str) -> Option<SubState> {
        plan.states.get(sub).or_else(|| self.states.get(sub)).cloned()
    }

    /// What `resolve()` and notificationShape read before the store while `plan` is planned.
    pub(super) fn pending<'p>(&self, plan: &'p Plan) -> Pending<'p>
    where
        'a: 'p,
    {
        Pending { commit: &plan.pending, group: self.group_pending }
    }

    /// Most events one commit removes (`subscriptions.purge_batch`).
    pub(super) fn purge_batch(&self) -> usize {
        usize::try_from(self.cfg.retention.batch).unwrap_or(usize::MAX)
    }

    /// Whether `Subscription/{id}`'s events from a deleted incarnation are still being removed.
    pub(super) fn purging(&self, sub: &str) -> bool {
        self.purges.iter().any(|s| s == sub)
    }
}

/// Whether a write of `ty` (its new content `resource`; `None` for a delete) can change the
/// registry: Subscriptions, SearchParameters and topics. In R4 a topic is a `Basic` coded
/// as one; a deleted `Basic` counts too, as its content is gone (a plain Basic's delete is
/// then audited as well, which is harmless).
pub(super) fn changes_registry(ty: &str, resource: Option<&Value>) -> bool {
    let version = crate::fhir::version::instance();
    match ty {
        "Subscription" | "SubscriptionTopic" | "SearchParameter" => true,
        _ => ty == stored_topic::topic_type(version) && resource.is_none_or(|r| stored_topic::is_topic(version, ty, r)),
    }
}

/// Sets a resource's `id`, `meta.versionId` and `meta.lastUpdated` as stored.
pub(super) fn meta_stamp(resource: &mut Value, id: &str, version_id: &str, last_updated: Millis) {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), json!(id));
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        if let Some(m) = meta.as_object_mut() {
            m.insert("versionId".into(), json!(version_id));
            m.insert("lastUpdated".into(), json!(format_millis(last_updated)));
        }
    }
}
