//! Walks in id order: the ids an equality probe selects, or a type's current ids, from a
//! position onwards (or backwards), lazily, so a search page costs what the page reads.
//!
//! In: a type, a parameter, equality probes and a position (an id, exclusive). Out: ids, each
//! once, ascending (or descending), until the visitor says stop. Equality entries of one value
//! are already in id order (`type NUL code NUL = value NUL id`), so each probe and the
//! parameter's overflow entries are one sled range each, and the walk merges them. Other
//! probes (string prefixes, dates) are ordered by value first: `index_walk` declines them
//! (`Ok(false)`) and the caller plans differently.

use std::ops::Bound;

use super::{probe_range, EntryKind, Probe};
use crate::store::{keys, Result, Store};

/// Where a walk starts and which way it goes.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    /// Start strictly after this id (strictly before it when `back`); `None`: from an end.
    pub after: Option<&'a str>,
    /// Descending id order.
    pub back: bool,
}

type Ids = Box<dyn Iterator<Item = Result<String>>>;

/// The ids of the keys of `[start, end)` that follow `prefix`, from `from`, in `from`'s order.
fn range_ids(store: &Store, prefix: Vec<u8>, end: Vec<u8>, from: Position<'_>) -> Ids {
    let at = |id: &str| {
        let mut k = prefix.clone();
        k.extend_from_slice(id.as_bytes());
        k
    };
    let (lo, hi) = match (from.after, from.back) {
        (Some(id), false) => (Bound::Excluded(at(id)), Bound::Excluded(end)),
        (Some(id), true) => (Bound::Included(prefix.clone()), Bound::Excluded(at(id))),
        (None, _) => (Bound::Included(prefix.clone()), Bound::Excluded(end)),
    };
    let skip = prefix.len();
    let keys = store.tree.range::<Vec<u8>, _>((lo, hi)).keys();
    let to_id = move |item: std::result::Result<sled::IVec, sled::Error>| -> Result<String> {
        let key = item?;
        Ok(String::from_utf8_lossy(key.get(skip..).unwrap_or_default()).into_owned())
    };
    if from.back {
        Box::new(keys.rev().map(to_id))
    } else {
        Box::new(keys.map(to_id))
    }
}

/// Merges id-ordered streams into one, each id once, stopping when `visit` returns false.
fn merge(mut streams: Vec<Ids>, back: bool, mut visit: impl FnMut(&str) -> bool) -> Result<()> {
    let mut heads: Vec<Option<String>> = Vec::with_capacity(streams.len());
    for s in &mut streams {
        heads.push(s.next().transpose()?);
    }
    loop {
        let next = heads.iter().flatten().fold(None::<&String>, |best, id| match best {
            Some(b) if (back && b >= id) || (!back && b <= id) => Some(b),
            _ => Some(id),
        });
        let Some(id) = next.cloned() else { return Ok(()) };
        for (head, stream) in heads.iter_mut().zip(streams.iter_mut()) {
            if head.as_deref() == Some(id.as_str()) {
                *head = stream.next().transpose()?;
            }
        }
        if !visit(&id) {
            return Ok(());
        }
    }
}

impl Store {
    /// Visits, in id order from `from`, each id that one of the equality `probes` on `code`
    /// selects (or whose parameter overflowed), once, until `visit` returns false.
    /// `Ok(false)` without visiting anything when the index cannot walk these probes in id
    /// order (not equality, or not answered from entries).
    pub fn index_walk(
        &self,
        resource_type: &str,
        code: &str,
        probes: &[Probe],
        from: Position<'_>,
        visit: impl FnMut(&str) -> bool,
    ) -> Result<bool> {
        let mut streams = Vec::with_capacity(probes.len() + 1);
        for p in probes {
            let Some(answer @ Probe::Equal(_)) = self.answerable(resource_type, code, p) else { return Ok(false) };
            let (start, end) = probe_range(resource_type, code, &answer);
            streams.push(range_ids(self, start, end, from));
        }
        let mut overflow = keys::index_param_prefix(resource_type, code);
        overflow.push(EntryKind::Overflow.byte());
        overflow.push(0);
        let end = super::prefix_end(&overflow);
        streams.push(range_ids(self, overflow, end, from));
        merge(streams, from.back, visit)?;
        Ok(true)
    }

    /// Visits the ids of the current resources of a type (deleted ones included: callers skip
    /// them when they load the version) in id order from `from`, until `visit` returns false.
    pub fn current_walk(&self, resource_type: &str, from: Position<'_>, visit: impl FnMut(&str) -> bool) -> Result<()> {
        let prefix = keys::current_type_prefix(resource_type);
        let end = super::prefix_end(&prefix);
        merge(vec![range_ids(self, prefix, end, from)], from.back, visit)
    }
}
