//! The registry: the topics and subscriptions Herald knows, bound together and ready for
//! matching.
//!
//! It is owned by the committer (the single writer), which changes it in the same step that
//! stores a SubscriptionTopic or Subscription, so the matcher always sees exactly the
//! subscriptions committed before the change it matches. Memory holds no truth: `load` rebuilds
//! the registry from the stored resources at start.
//!
//! Binding a subscription checks what needs the topics: the topic exists and is usable, every
//! filter is declared by the topic's `canFilterBy` and is one Herald can evaluate today
//! (equality on token and reference SearchParameters; the full search engine is issue #5).
//! `filter` says what a bound filter means; `index` files subscriptions by their filters so
//! that matching looks them up (both kept in step with the maps here, in the same calls).

mod bind;
mod filter;
mod index;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::fhir::subscription::SubscriptionSpec;
use crate::fhir::topic::TopicSpec;
use crate::fhir::Issue;

pub use bind::bind_subscription;
pub use filter::{BoundFilter, FilterKind, IndexKey, KeySpace};
pub use index::{Index, KeyIndex, TypeIndex};

/// A subscription bound to its topic, with its filters resolved to SearchParameters.
#[derive(Debug)]
pub struct SubEntry {
    pub spec: SubscriptionSpec,
    pub topic_id: String,
    /// The topic's canonical url, as sent in `SubscriptionStatus.topic`.
    pub topic_url: String,
    pub filters: Vec<BoundFilter>,
}

/// Topics and subscriptions, indexed for matching.
#[derive(Default)]
pub struct Registry {
    topics: HashMap<String, Arc<TopicSpec>>,
    subs: HashMap<String, Arc<SubEntry>>,
    topic_subs: HashMap<String, BTreeSet<String>>,
    /// The subscriptions of `topic_subs`, filed for lookup by matching.
    index: Index,
}

impl Registry {
    /// A registry whose index does not know Herald's base: reference filters with absolute
    /// URLs are then scanned rather than looked up. Ingest uses [`Registry::with_base_url`].
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry whose index normalizes reference filters against `base_url`, Herald's own
    /// FHIR base; matching must then be asked with the same base (else it scans).
    pub fn with_base_url(base_url: &str) -> Self {
        Registry { index: Index::new(Some(base_url)), ..Registry::default() }
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn topic(&self, id: &str) -> Option<&Arc<TopicSpec>> {
        self.topics.get(id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicSpec>> {
        self.topics.values()
    }

    /// The topic a `Subscription.topic` canonical names: `url` or `url|version`. When several
    /// stored topics share a url, an `active` one wins, then the greatest id, so the choice is
    /// stable.
    pub fn resolve_topic(&self, canonical: &str) -> Option<&Arc<TopicSpec>> {
        let (url, version) = match canonical.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (canonical, None),
        };
        self.topics
            .values()
            .filter(|t| t.url == url && (version.is_none() || t.version.as_deref() == version))
            .max_by(|a, b| (a.status == "active", &a.id).cmp(&(b.status == "active", &b.id)))
    }

    pub fn put_topic(&mut self, topic: TopicSpec) {
        self.index.put_topic(&topic);
        self.topics.insert(topic.id.clone(), Arc::new(topic));
    }

    /// Subscriptions bound to a topic (by topic resource id).
    pub fn subscribers(&self, topic_id: &str) -> impl Iterator<Item = &Arc<SubEntry>> {
        self.topic_subs.get(topic_id).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.subs.get(id))
    }

    pub fn subscriber_count(&self, topic_id: &str) -> usize {
        self.topic_subs.get(topic_id).map_or(0, BTreeSet::len)
    }

    pub fn remove_topic(&mut self, id: &str) {
        self.topics.remove(id);
        self.topic_subs.remove(id);
        self.index.remove_topic(id);
    }

    pub fn subscription(&self, id: &str) -> Option<&Arc<SubEntry>> {
        self.subs.get(id)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &Arc<SubEntry>> {
        self.subs.values()
    }

    pub fn put_subscription(&mut self, entry: Arc<SubEntry>) {
        let id = entry.spec.id.clone();
        self.unfile(&id);
        self.topic_subs.entry(entry.topic_id.clone()).or_default().insert(id.clone());
        self.index.insert(&entry);
        self.subs.insert(id, entry);
    }

    pub fn remove_subscription(&mut self, id: &str) {
        self.unfile(id);
        self.subs.remove(id);
    }

    /// Takes a subscription out of its topic's set and the index. One whose topic was removed
    /// is in neither any more.
    fn unfile(&mut self, id: &str) {
        let Some(old) = self.subs.get(id) else { return };
        if self.topic_subs.get_mut(&old.topic_id).is_some_and(|set| set.remove(id)) {
            self.index.remove(old);
        }
    }

    /// Binds a parsed subscription against the current topics.
    /// Every topic and subscription as text, sorted: equal for two registries holding the
    /// same bound topics and subscriptions (the replay tests compare a replica's with the
    /// writer's). The index is derived from these, so it is left out.
    pub fn fingerprint(&self) -> Vec<String> {
        let mut out: Vec<String> = self.topics.iter().map(|(id, t)| format!("topic {id}: {t:?}")).collect();
        out.extend(self.subs.iter().map(|(id, e)| format!("subscription {id}: {e:?}")));
        out.extend(self.topic_subs.iter().map(|(t, subs)| format!("topic {t} subscribers: {subs:?}")));
        out.sort();
        out
    }

    pub fn bind(&self, spec: SubscriptionSpec) -> Result<SubEntry, Vec<Issue>> {
        bind_subscription(self, spec)
    }
}

#[cfg(test)]
mod tests;
