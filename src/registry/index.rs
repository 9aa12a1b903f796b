//! The subscription index: which subscriptions a change can concern, found by lookup rather
//! than by evaluating every subscription of a topic (issue #5).
//!
//! Layout: topic id → one [`TypeIndex`] per resource type → per (SearchParameter, key space) a
//! map from normalized key to the subscriptions filed under it. Each subscription is filed in
//! each type's index exactly once:
//! - under ONE anchor filter, its most selective one that equality answers (the key with the
//!   fewest subscriptions when it is filed); its other filters are verified after lookup;
//! - in `everything` when none of its filters applies to the type (R5: filters apply to their
//!   own type only);
//! - in `scanned` when its filters apply but none can be looked up (comparators, modifiers);
//! - nowhere when one of its filters can match nothing.
//!
//! Types named by no subscription of a topic share its `other` index, where only filters bound
//! for `Resource` apply. Maintained with the registry by the committer; rebuilt from the store
//! at start, so it holds no truth of its own. Pure; no IO.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::fhir::search::SearchParam;
use crate::fhir::topic::TopicSpec;

use super::filter::{IndexKey, KeySpace};
use super::SubEntry;

/// Subscriptions by topic, resource type and filter key, plus topics by trigger type.
#[derive(Debug, Default)]
pub struct Index {
    /// Herald's FHIR base, without a trailing `/`, that reference keys were normalized against;
    /// `None` leaves absolute reference values to scanning.
    base_url: Option<String>,
    /// Trigger resource type (`Resource` for every type) → ids of topics with such a trigger.
    triggers: HashMap<String, BTreeSet<String>>,
    topics: HashMap<String, TopicIndex>,
}

#[derive(Debug, Default)]
struct TopicIndex {
    /// Concrete types some subscription's filters name: how many subscriptions name it, and
    /// the type's index.
    named: HashMap<String, (usize, TypeIndex)>,
    /// The index of every other type.
    other: TypeIndex,
}

/// The subscriptions of one topic as seen by changes of one resource type.
#[derive(Debug, Default, Clone)]
pub struct TypeIndex {
    /// No filter applies to the type: every change of it matches.
    everything: Vec<Arc<SubEntry>>,
    /// Filters apply but none is answered by lookup: checked on every change.
    scanned: Vec<Arc<SubEntry>>,
    /// Anchored subscriptions, one map per (parameter, key space); a handful per type.
    keyed: Vec<KeyIndex>,
}

/// Subscriptions anchored on one parameter, by normalized key.
#[derive(Debug, Clone)]
pub struct KeyIndex {
    param: &'static SearchParam,
    space: KeySpace,
    subs: HashMap<Box<str>, Vec<Arc<SubEntry>>>,
}

impl Index {
    /// `base_url` is Herald's own FHIR base; `None` when not known (absolute reference filter
    /// values are then scanned, not looked up).
    pub fn new(base_url: Option<&str>) -> Index {
        Index { base_url: base_url.map(|b| b.trim_end_matches('/').to_owned()), ..Index::default() }
    }

    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// Records (or replaces) the trigger types of `topic`.
    pub fn put_topic(&mut self, topic: &TopicSpec) {
        self.forget_triggers(&topic.id);
        for ty in topic.trigger_types() {
            self.triggers.entry(ty.to_owned()).or_default().insert(topic.id.clone());
        }
    }

    /// Forgets a topic and the subscriptions filed under it.
    pub fn remove_topic(&mut self, topic_id: &str) {
        self.forget_triggers(topic_id);
        self.topics.remove(topic_id);
    }

    fn forget_triggers(&mut self, topic_id: &str) {
        self.triggers.retain(|_, ids| {
            ids.remove(topic_id);
            !ids.is_empty()
        });
    }

    /// Files a subscription under its topic. It must not be filed already.
    pub fn insert(&mut self, sub: &Arc<SubEntry>) {
        let base = self.base_url.as_deref();
        self.topics.entry(sub.topic_id.clone()).or_default().insert(sub, base);
    }

    /// Unfiles a subscription: `sub` must be the entry that was inserted.
    pub fn remove(&mut self, sub: &SubEntry) {
        let base = self.base_url.as_deref();
        if let Some(topic) = self.topics.get_mut(&sub.topic_id) {
            topic.remove(sub, base);
        }
    }

    /// Ids of the topics with a trigger for `resource_type` (or for every type), sorted.
    pub fn topics_for(&self, resource_type: &str) -> Vec<&str> {
        let mut ids: Vec<&str> =
            [resource_type, "Resource"].iter().filter_map(|t| self.triggers.get(*t)).flatten().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The subscriptions of `topic_id` as seen by a change of `resource_type`.
    pub fn for_type(&self, topic_id: &str, resource_type: &str) -> Option<&TypeIndex> {
        let topic = self.topics.get(topic_id)?;
        Some(topic.named.get(resource_type).map_or(&topic.other, |(_, index)| index))
    }
}

/// The concrete types a subscription's filters name, without duplicates.
fn named_types(sub: &SubEntry) -> BTreeSet<&str> {
    sub.filters.iter().flat_map(|f| f.named_types()).collect()
}

impl TopicIndex {
    fn insert(&mut self, sub: &Arc<SubEntry>, base: Option<&str>) {
        for ty in named_types(sub) {
            // A type named for the first time starts as a copy of `other`: no subscription
            // filed so far names it, so only their `Resource` filters apply to it.
            let other = &self.other;
            let (count, _) = self.named.entry(ty.to_owned()).or_insert_with(|| (0, other.clone()));
            *count += 1;
        }
        for (ty, (_, index)) in &mut self.named {
            index.insert(sub, Some(ty), base);
        }
        self.other.insert(sub, None, base);
    }

    fn remove(&mut self, sub: &SubEntry, base: Option<&str>) {
        for (ty, (_, index)) in &mut self.named {
            index.remove(sub, Some(ty), base);
        }
        self.other.remove(sub, None, base);
        for ty in named_types(sub) {
            if let Some((count, _)) = self.named.get_mut(ty) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.named.remove(ty);
                }
            }
        }
    }
}

/// The key a filter of `sub` is looked up by in the index of `resource_type` (`None`: types no
/// filter names), if the filter applies there.
fn applicable<'s>(
    sub: &'s SubEntry,
    resource_type: Option<&'s str>,
    base: Option<&'s str>,
) -> impl Iterator<Item = (&'static SearchParam, IndexKey)> + 's {
    sub.filters.iter().filter_map(move |f| {
        let param = match resource_type {
            Some(ty) => f.applicable_param(ty),
            None => f.param_for("Resource"),
        }?;
        Some((param, f.index_key(base)))
    })
}

impl TypeIndex {
    pub fn everything(&self) -> &[Arc<SubEntry>] {
        &self.everything
    }

    pub fn scanned(&self) -> &[Arc<SubEntry>] {
        &self.scanned
    }

    pub fn keyed(&self) -> &[KeyIndex] {
        &self.keyed
    }

    fn key_index(&self, param: &SearchParam, space: KeySpace) -> Option<&KeyIndex> {
        self.keyed.iter().find(|k| k.space == space && k.param.url == param.url)
    }

    fn insert(&mut self, sub: &Arc<SubEntry>, resource_type: Option<&str>, base: Option<&str>) {
        let mut anchor: Option<(usize, &'static SearchParam, KeySpace, String)> = None;
        let mut applies = false;
        for (param, key) in applicable(sub, resource_type, base) {
            applies = true;
            match key {
                IndexKey::Never => return,
                IndexKey::Scan => {}
                IndexKey::Exact(space, key) => {
                    let load = self.key_index(param, space).map_or(0, |k| k.get(&key).len());
                    if anchor.as_ref().is_none_or(|(best, ..)| load < *best) {
                        anchor = Some((load, param, space, key));
                    }
                }
            }
        }
        match anchor {
            Some((_, param, space, key)) => {
                let at = match self.keyed.iter().position(|k| k.space == space && k.param.url == param.url) {
                    Some(at) => at,
                    None => {
                        self.keyed.push(KeyIndex { param, space, subs: HashMap::new() });
                        self.keyed.len() - 1
                    }
                };
                if let Some(k) = self.keyed.get_mut(at) {
                    k.subs.entry(key.into_boxed_str()).or_default().push(Arc::clone(sub));
                }
            }
            None if applies => self.scanned.push(Arc::clone(sub)),
            None => self.everything.push(Arc::clone(sub)),
        }
    }

    /// Removes `sub` from wherever `insert` could have put it.
    fn remove(&mut self, sub: &SubEntry, resource_type: Option<&str>, base: Option<&str>) {
        let id = sub.spec.id.as_str();
        remove_from(&mut self.everything, id);
        remove_from(&mut self.scanned, id);
        for (param, key) in applicable(sub, resource_type, base) {
            let IndexKey::Exact(space, key) = key else { continue };
            let Some(k) = self.keyed.iter_mut().find(|k| k.space == space && k.param.url == param.url) else { continue };
            if let Some(list) = k.subs.get_mut(key.as_str()) {
                remove_from(list, id);
                if list.is_empty() {
                    k.subs.remove(key.as_str());
                }
            }
        }
        self.keyed.retain(|k| !k.subs.is_empty());
    }
}

impl KeyIndex {
    pub fn param(&self) -> &'static SearchParam {
        self.param
    }

    pub fn space(&self) -> KeySpace {
        self.space
    }

    /// The subscriptions anchored under `key`.
    pub fn get(&self, key: &str) -> &[Arc<SubEntry>] {
        self.subs.get(key).map_or(&[], Vec::as_slice)
    }
}

/// Lists are in no order (matching sorts what it finds), so filing is a push; taking out scans
/// the one list the subscription can be in, which only a client's write to it does.
fn remove_from(list: &mut Vec<Arc<SubEntry>>, id: &str) {
    if let Some(at) = list.iter().position(|e| e.spec.id == id) {
        list.swap_remove(at);
    }
}
