//! The resource versions events saw, read once for every subscriber that sends them.
//!
//! An event is numbered once per matching subscription, but every one of those events saw the
//! same stored version (`EventRecord.focus_seq`, `ContextRef.seq`). A lane sending event n of
//! its own lane reads that version; with 1,000 subscribers on one write that was 1,000 reads
//! and decodes of one record, and at `full-resource` 1,000 serializations of one resource.
//! [`VersionCache`] keeps the versions read most recently, shared ([`Version`] is an `Arc`):
//! the first lane reads the store, the others take the same record, and the JSON of its
//! resource as notifications carry it is written by the first that needs it
//! ([`Cached::rendered`]) and spliced by the rest.
//!
//! Why this is safe: a stored version never changes (history is keyed by type, id and
//! sequence, and written once), and the cache lives and dies with the outbox of one open store.
//! It is bounded by [`VersionCache::new`]'s byte budget (a weight per entry: the stored
//! record's length, times [`DECODED_FACTOR`] when read with its resource), evicting the
//! oldest first: lanes read versions in commit order, so the newest are the hot ones.
//!
//! What stays per subscriber: which of the shared versions it may see. Screening against its
//! grant (`channels::render::screen`) happens after, on the lane's own list of `Arc`s, so one
//! subscriber's grant never decides what another is sent. The cache does not read ahead.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::counter::Counter;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::ops::metrics::{metrics, SourceLabels};
use crate::store::{Store, StoreError, VersionRecord};

/// A stored version as lanes share it.
pub type Version = Arc<Cached>;

/// The memory of a version read with its resource, per byte stored: its decoded `Value`
/// (serde_json with `preserve_order`: a map entry, a key `String` and a `Value` per field,
/// about 3 times the JSON) and its JSON once written for notifications (once). An estimate
/// used only to weigh entries against the budget.
pub const DECODED_FACTOR: usize = 4;

/// One version, read once.
pub struct Cached {
    record: VersionRecord,
    /// Read with its resource (`Store::version`); otherwise only its head was read, and
    /// `record.resource` is `None` whatever the version holds.
    with_resource: bool,
    /// The resource as a notification carries it, written once (`rendered`).
    json: OnceLock<Option<Box<RawValue>>>,
}

impl Deref for Cached {
    type Target = VersionRecord;
    fn deref(&self) -> &VersionRecord {
        &self.record
    }
}

impl Cached {
    /// A version read outside the cache (tests, one-off reads).
    pub fn new(record: VersionRecord, with_resource: bool) -> Cached {
        Cached { record, with_resource, json: OnceLock::new() }
    }

    /// The resource as notifications carry it, written by `render` the first time any
    /// subscriber asks (`None`: no resource, or it could not be written).
    pub fn rendered(&self, render: impl FnOnce(&Value) -> Option<Box<RawValue>>) -> Option<&RawValue> {
        self.json.get_or_init(|| self.record.resource.as_ref().and_then(render)).as_deref()
    }
}

/// The key of a version: `Type/id` and its sequence.
type Key = (String, u64);

struct Entries {
    map: HashMap<Key, (Version, usize)>,
    /// Keys oldest first, for eviction.
    order: VecDeque<Key>,
    /// Sum of the weights in `map`.
    weight: usize,
}

/// Recently read versions, shared by every lane of one store (module doc).
pub struct VersionCache {
    entries: Mutex<Entries>,
    budget: usize,
    /// `herald_version_reads_total{from="cache"}` and `{from="store"}`, looked up once.
    from_cache: Counter,
    from_store: Counter,
}

impl VersionCache {
    /// A cache holding at most about `budget` bytes (0: keeps nothing, and every read goes to
    /// the store).
    pub fn new(budget: usize) -> VersionCache {
        let reads = |from: &str| metrics().version_reads.get_or_create(&SourceLabels { from: from.to_owned() }).clone();
        VersionCache {
            entries: Mutex::new(Entries { map: HashMap::new(), order: VecDeque::new(), weight: 0 }),
            budget,
            from_cache: reads("cache"),
            from_store: reads("store"),
        }
    }

    /// The version `seq` of `resource_type/id`, with its resource when `with_resource`; from
    /// the cache when it holds it (read with the resource, if that is asked for), else read
    /// from `store` and kept.
    pub fn get(&self, store: &Store, resource_type: &str, id: &str, seq: u64, with_resource: bool) -> Result<Option<Version>, StoreError> {
        let key = (self.budget > 0).then(|| (format!("{resource_type}/{id}"), seq));
        if let Some(hit) = key.as_ref().and_then(|key| self.lookup(key, with_resource)) {
            self.from_cache.inc();
            return Ok(Some(hit));
        }
        self.from_store.inc();
        let Some((record, stored_len)) = store.version_sized(resource_type, id, seq, with_resource)? else { return Ok(None) };
        let version = Arc::new(Cached::new(record, with_resource));
        if let Some(key) = key {
            self.keep(key, version.clone(), stored_len.saturating_mul(if with_resource { DECODED_FACTOR } else { 1 }));
        }
        Ok(Some(version))
    }

    fn lookup(&self, key: &Key, with_resource: bool) -> Option<Version> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (version, _) = entries.map.get(key)?;
        (version.with_resource || !with_resource).then(|| version.clone())
    }

    fn keep(&self, key: Key, version: Version, weight: usize) {
        if weight > self.budget {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Entries { map, order, weight: total } = &mut *entries;
        if map.get(&key).is_some_and(|(held, _)| held.with_resource || !version.with_resource) {
            // Another lane read it meanwhile, as fully or more: keep that one.
            return;
        }
        match map.insert(key.clone(), (version, weight)) {
            // A head read earlier, replaced by the full read: same place in the order.
            Some((_, old)) => *total = total.saturating_sub(old),
            None => order.push_back(key),
        }
        *total = total.saturating_add(weight);
        while *total > self.budget {
            let Some(oldest) = order.pop_front() else { break };
            if let Some((_, w)) = map.remove(&oldest) {
                *total = total.saturating_sub(w);
            }
        }
    }

    /// Versions held now, and their weight (tests, diagnostics).
    pub fn held(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        (entries.map.len(), entries.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;
    use serde_json::json;

    fn task(id: &str, seq: u64, note: &str) -> VersionRecord {
        let mut v = crate::store::tests::version(id, seq);
        v.resource = Some(json!({ "resourceType": "Task", "id": id, "note": [{ "text": note }] }));
        v
    }

    fn stored(versions: &[VersionRecord]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut c = Commit::new();
        for v in versions {
            c.put_version(v).unwrap();
        }
        store.apply(c).unwrap();
        (dir, store)
    }

    #[test]
    fn every_reader_of_a_version_gets_the_one_read_and_the_one_rendering() {
        let (_dir, store) = stored(&[task("a", 1, "first")]);
        let cache = VersionCache::new(1 << 20);
        let first = cache.get(&store, "Task", "a", 1, true).unwrap().unwrap();
        let second = cache.get(&store, "Task", "a", 1, true).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let mut renders = 0;
        let mut render = |r: &Value| {
            renders += 1;
            RawValue::from_string(r.to_string()).ok()
        };
        let one = first.rendered(&mut render).map(|r| r.get().to_owned());
        let two = second.rendered(&mut render).map(|r| r.get().to_owned());
        assert_eq!(renders, 1);
        assert_eq!(one, two);
        assert!(one.unwrap().contains("\"first\""));
    }

    #[test]
    fn a_head_read_is_not_served_to_a_reader_that_needs_the_resource() {
        let (_dir, store) = stored(&[task("a", 1, "body")]);
        let cache = VersionCache::new(1 << 20);
        let head = cache.get(&store, "Task", "a", 1, false).unwrap().unwrap();
        assert!(head.resource.is_none());
        // A head-only reader may take the head again; one that needs the resource reads it.
        assert!(Arc::ptr_eq(&head, &cache.get(&store, "Task", "a", 1, false).unwrap().unwrap()));
        let full = cache.get(&store, "Task", "a", 1, true).unwrap().unwrap();
        assert_eq!(full.resource.as_ref().unwrap()["note"][0]["text"], "body");
        // The full read replaced the head, and serves both kinds of reader now.
        assert!(Arc::ptr_eq(&full, &cache.get(&store, "Task", "a", 1, false).unwrap().unwrap()));
        assert_eq!(cache.held().0, 1);
    }

    #[test]
    fn the_budget_bounds_what_is_held_and_the_oldest_go_first() {
        let versions: Vec<_> = (1..=20).map(|seq| task("a", seq, &"x".repeat(200))).collect();
        let (_dir, store) = stored(&versions);
        let one = {
            let probe = VersionCache::new(usize::MAX);
            probe.get(&store, "Task", "a", 1, true).unwrap();
            probe.held().1
        };
        // Room for five (the later versions' records are a few bytes longer: two-digit ids).
        let budget = (one + 4 * DECODED_FACTOR) * 5;
        let cache = VersionCache::new(budget);
        for seq in 1..=20 {
            let v = cache.get(&store, "Task", "a", seq, true).unwrap().unwrap();
            assert_eq!(v.seq, seq);
        }
        let (held, weight) = cache.held();
        assert!(weight <= budget, "{weight} > {budget}");
        assert_eq!(held, 5);
        // The newest are kept: reading 20 again is a hit (same Arc), 1 is a new read.
        let again = cache.get(&store, "Task", "a", 20, true).unwrap().unwrap();
        assert!(Arc::ptr_eq(&again, &cache.get(&store, "Task", "a", 20, true).unwrap().unwrap()));
        let old = cache.get(&store, "Task", "a", 1, true).unwrap().unwrap();
        assert_eq!(old.seq, 1);
        // A version heavier than the whole budget is read and handed out, never kept.
        let tiny = VersionCache::new(1);
        assert!(tiny.get(&store, "Task", "a", 3, true).unwrap().is_some());
        assert_eq!(tiny.held(), (0, 0));
        // Nothing stored: nothing cached.
        assert!(cache.get(&store, "Task", "missing", 1, true).unwrap().is_none());
    }
}
