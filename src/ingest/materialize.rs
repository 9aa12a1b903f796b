//! Materializing: the registry and subscription states a store implies, and applying a
//! `commitlog::LogCommit` to a store with them.
//!
//! `rebuild` is how every start gets its registry and states: from the stored topics,
//! SearchParameters and Subscriptions, never from memory. `Replica::apply` is how a process
//! that did not plan a commit (a replay, a follower) applies it: the commit's ops go to its
//! store, each `Effect` reloads one registry entry from what is now stored, subscription
//! states follow the state writes among the ops, and the lanes the commit names are
//! republished from the result. The writer plans the same changes while it commits
//! (`committer`); applying its log to an empty store gives the same store, registry, states
//! and lanes (`tests/it/replay_log.rs`, `ingest::replica_tests`).

use std::collections::HashMap;
use std::sync::Arc;

use super::{subscriptions, IngestError, LaneView};
use crate::commitlog::{Effect, LogCommit};
use crate::fhir::search::custom::custom_param;
use crate::fhir::search::SearchParams;
use crate::fhir::subscription::SubscriptionLimits;
use crate::fhir::topic::stored as stored_topic;
use crate::registry::Registry;
use crate::store::{Store, SubState, SubStatus};

/// The registry and subscription states of what `store` holds (stored SearchParameters are
/// registered as custom search parameters on the way, before the topics that may name them).
pub(super) fn rebuild(
    store: &Store,
    base_url: &str,
    limits: &SubscriptionLimits,
) -> Result<(Registry, HashMap<String, SubState>), IngestError> {
    let mut registry = Registry::with_base_url(base_url);
    subscriptions::load_search_params(store)?;
    // Topics in the instance version's form (R4: the Basic resources coded as topics).
    let version = crate::fhir::version::instance();
    let topic_type = stored_topic::topic_type(version);
    for (id, cur) in store.list_current(topic_type, None, usize::MAX)? {
        if cur.deleted {
            continue;
        }
        let Some(rec) = store.version(topic_type, &id, cur.seq)? else { continue };
        let Some(resource) = rec.resource else { continue };
        match stored_topic::parse_stored(version, topic_type, &id, &resource) {
            None => {}
            Some(Ok(topic)) => registry.put_topic(topic),
            Some(Err(issues)) => tracing::error!(topic.id = %id, issues = issues.len(), "stored topic no longer valid; not loaded"),
        }
    }
    let mut states: HashMap<String, SubState> = store.sub_states()?.into_iter().collect();
    let mut loaded = 0usize;
    for (id, cur) in store.list_current("Subscription", None, usize::MAX)? {
        if cur.deleted {
            continue;
        }
        let Some(rec) = store.version("Subscription", &id, cur.seq)? else { continue };
        let Some(resource) = rec.resource else { continue };
        // `end` is checked by the lane at run time, not here: a past end turns it off.
        match subscriptions::parse_stored(&registry, &id, &resource, limits) {
            Ok(entry) => {
                states.entry(id.clone()).or_insert_with(|| SubState::new(SubStatus::Requested));
                registry.put_subscription(Arc::new(entry));
                loaded += 1;
            }
            Err(issues) => {
                let text = issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default();
                tracing::error!(subscription.id = %id, reason = %text, "stored subscription no longer binds; not loaded");
            }
        }
    }
    states.retain(|id, _| registry.subscription(id).is_some());
    tracing::info!(topics = registry.topics().count(), subscriptions = loaded, "registry rebuilt from store");
    Ok((registry, states))
}

/// A store with the registry and states it implies, kept in step by applying commits.
pub struct Replica {
    store: Store,
    registry: Registry,
    states: HashMap<String, SubState>,
    limits: SubscriptionLimits,
}

impl Replica {
    /// The replica of what `store` holds now.
    pub fn open(store: Store, base_url: &str, limits: SubscriptionLimits) -> Result<Self, IngestError> {
        let (registry, states) = rebuild(&store, base_url, &limits)?;
        Ok(Replica { store, registry, states, limits })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn states(&self) -> &HashMap<String, SubState> {
        &self.states
    }

    /// The lane view of `sub` as it is now (`None`: gone).
    pub fn lane_view(&self, sub: &str) -> Option<LaneView> {
        match (self.registry.subscription(sub), self.states.get(sub)) {
            (Some(entry), Some(state)) => Some(LaneView { entry: entry.clone(), state: state.clone() }),
            _ => None,
        }
    }

    /// Every subscription's lane view.
    pub fn lane_views(&self) -> Vec<(String, LaneView)> {
        self.states.keys().filter_map(|sub| self.lane_view(sub).map(|v| (sub.clone(), v))).collect()
    }

    /// Applies `commit` (module doc) and returns the lanes it tells, as they now are (`None`:
    /// the subscription is gone).
    pub fn apply(&mut self, commit: &LogCommit) -> Result<Vec<(String, Option<LaneView>)>, IngestError> {
        self.store.apply_logged(commit.seq, &commit.ops)?;
        for op in &commit.ops {
            match crate::store::sub_state_write(op)? {
                Some((sub, Some(state))) => {
                    self.states.insert(sub, state);
                }
                Some((sub, None)) => {
                    self.states.remove(&sub);
                }
                None => {}
            }
        }
        for effect in &commit.effects {
            self.reload(effect)?;
        }
        Ok(commit.lanes.iter().map(|sub| (sub.clone(), self.lane_view(sub))).collect())
    }

    /// Reloads the registry entry `effect` names from the store.
    fn reload(&mut self, effect: &Effect) -> Result<(), IngestError> {
        match effect {
            Effect::Topic(id) => {
                let version = crate::fhir::version::instance();
                let ty = stored_topic::topic_type(version);
                let live = self.store.latest(ty, id)?.filter(|r| !r.deleted).and_then(|r| r.resource);
                match live.as_ref().and_then(|r| stored_topic::parse_stored(version, ty, id, r)) {
                    Some(Ok(topic)) => self.registry.put_topic(topic),
                    Some(Err(issues)) => {
                        tracing::error!(topic.id = %id, issues = issues.len(), "a replicated topic does not parse; not loaded");
                        self.registry.remove_topic(id);
                    }
                    None => self.registry.remove_topic(id),
                }
            }
            Effect::Subscription(id) => {
                let live = self.store.latest("Subscription", id)?.filter(|r| !r.deleted).and_then(|r| r.resource);
                match live {
                    Some(resource) => match subscriptions::parse_stored(&self.registry, id, &resource, &self.limits) {
                        Ok(entry) => {
                            self.registry.put_subscription(Arc::new(entry));
                            if !self.states.contains_key(id) {
                                if let Some(state) = self.store.sub_state(id)? {
                                    self.states.insert(id.clone(), state);
                                }
                            }
                        }
                        Err(issues) => {
                            let text = issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default();
                            tracing::error!(subscription.id = %id, reason = %text, "a replicated subscription does not bind; not loaded");
                            self.registry.remove_subscription(id);
                            self.states.remove(id);
                        }
                    },
                    None => {
                        self.registry.remove_subscription(id);
                        self.states.remove(id);
                    }
                }
            }
            Effect::SearchParameter { id, retired_url } => {
                let Ok(params) = SearchParams::current() else { return Ok(()) };
                if let Some(url) = retired_url {
                    params.unregister_custom(url);
                }
                let live = self.store.latest("SearchParameter", id)?.filter(|r| !r.deleted).and_then(|r| r.resource);
                if let Some(resource) = live {
                    match custom_param(&resource, params) {
                        Ok(param) => params.register_custom(param),
                        Err(_) => tracing::error!(resource.id = %id, "a replicated SearchParameter does not check; not registered"),
                    }
                }
            }
        }
        Ok(())
    }
}
