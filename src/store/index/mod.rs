//! Search indexes: key-only sled entries that let a search find candidate resources by lookup
//! or range scan instead of reading every resource of a type.
//!
//! In: the entries `extract` computes from a resource version (token, reference and uri values
//! as R5 equality keys, normalized strings, date ranges by start and by end). Out: candidate
//! ids for a `Probe`. The index is only a pre-filter: callers check every candidate against the
//! query itself, so a value cut to `MAX_VALUE_BYTES` or a parameter recorded as `Overflow`
//! (every value of it, too many to list) only widens the candidates, never loses one.
//!
//! Layout (prefix `i`, see `keys`): `type NUL code NUL kind escaped-value NUL id`, value empty.
//! `kind` is one byte: `=` equality, `s` string, `b` date by start (start, end), `e` date by
//! end (end, start), `*` overflow (no value). Dates are big-endian with the sign bit flipped,
//! so byte order is time order and `ge`/`lt`-style comparisons are range scans. Each resource
//! also keeps the list of its entries (prefix `x`), so a change removes exactly what the
//! previous version wrote, in the same `Commit` as the version itself.
//!
//! Only the parameters of the configured `IndexSet` get entries, with compacted equality keys
//! (`extract::compact`). `index_answers` says whether a probe can be answered from entries;
//! `index_scan` answers the others too, by reading the type's resources (slow, but the same
//! result), so `_has`, `_revinclude` and chains stay correct on unindexed parameters.

pub mod extract;
pub mod ordered;
pub mod set;

mod check;

pub use check::{IndexCheck, Progress, RebuildProgress, RebuildStep, PROGRESS_EVERY};
pub use ordered::Position;
pub use set::IndexSet;

use std::collections::HashMap;

/// Default for the most resources one lookup on an unindexed parameter reads (`_has`,
/// `_revinclude`, chains, ValueSet look-ups) before it gives up with [`StoreError::ScanLimit`].
pub const UNINDEXED_SCAN_LIMIT: usize = 100_000;

use super::{keys, Commit, Result, Store, StoreError, VersionRecord};
use crate::fhir::search::{ParamType, SearchParams};

/// The index set of an open store and the base URL its reference keys were computed with.
#[derive(Debug, Default)]
pub(crate) struct IndexConfig {
    pub(crate) set: IndexSet,
    pub(crate) base_url: String,
    /// Most resources one unindexed lookup reads (see [`Store::with_scan_limit`]).
    pub(crate) scan_limit: usize,
}

/// Longest value kept in a key; longer ones (and probes) are cut at a char boundary.
pub const MAX_VALUE_BYTES: usize = 200;
/// Format tag of the per-resource entry list.
const ENTRIES_FORMAT: u8 = 1;

/// How an entry's value is ordered and probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// Token, reference and uri values: R5 equality keys.
    Equal,
    /// Strings normalized by `fhir::search::value::normalize_string`, for prefix search.
    Text,
    /// A date range, ordered by start.
    DateStart,
    /// A date range, ordered by end.
    DateEnd,
    /// The parameter yielded too many values to list: the resource is a candidate for any probe.
    Overflow,
}

impl EntryKind {
    fn byte(self) -> u8 {
        match self {
            EntryKind::Equal => b'=',
            EntryKind::Text => b's',
            EntryKind::DateStart => b'b',
            EntryKind::DateEnd => b'e',
            EntryKind::Overflow => b'*',
        }
    }
}

/// One index entry of a resource, without its type and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub code: String,
    pub kind: EntryKind,
    pub value: Vec<u8>,
}

impl Entry {
    pub fn text(code: &str, kind: EntryKind, value: &str) -> Entry {
        Entry { code: code.to_owned(), kind, value: cut(value).as_bytes().to_vec() }
    }

    pub fn date(code: &str, kind: EntryKind, first: i64, second: i64) -> Entry {
        let mut value = Vec::with_capacity(16);
        value.extend_from_slice(&time_bytes(first));
        value.extend_from_slice(&time_bytes(second));
        Entry { code: code.to_owned(), kind, value }
    }

    pub fn overflow(code: &str) -> Entry {
        Entry { code: code.to_owned(), kind: EntryKind::Overflow, value: Vec::new() }
    }

    /// `code NUL kind escaped-value`: the key without `i type NUL` and `NUL id`.
    fn suffix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.code.len() + self.value.len() + 4);
        out.extend_from_slice(self.code.as_bytes());
        out.push(0);
        out.push(self.kind.byte());
        escape_into(&self.value, &mut out);
        out
    }
}

/// What a search asks the index for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Equality keys (token, reference, uri) equal to this one.
    Equal(String),
    /// Values of `kind` that start with this text (string prefix search, uri `:below`).
    Prefix(EntryKind, String),
    /// Date ranges whose start is in `[lo, hi)`.
    Start { lo: i64, hi: i64 },
    /// Date ranges whose end is in `[lo, hi)`.
    End { lo: i64, hi: i64 },
}

/// A value cut to `MAX_VALUE_BYTES` at a char boundary.
pub fn cut(text: &str) -> &str {
    if text.len() <= MAX_VALUE_BYTES {
        return text;
    }
    let mut end = MAX_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// Big-endian with the sign bit flipped: byte order is numeric order.
fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// `00` to `01 01` and `01` to `01 02`: no NUL inside, order and prefixes kept.
fn escape_into(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            _ => out.push(b),
        }
    }
}

fn entry_key(resource_type: &str, suffix: &[u8], id: &str) -> Vec<u8> {
    let mut key = keys::index_type_prefix(resource_type);
    key.extend_from_slice(suffix);
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The id at the end of an index key (after its last NUL).
fn id_of(key: &[u8]) -> Option<&str> {
    let at = key.iter().rposition(|&b| b == 0)?;
    std::str::from_utf8(key.get(at + 1..)?).ok()
}

fn encode_entries(suffixes: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![ENTRIES_FORMAT];
    for s in suffixes {
        // Suffixes are bounded (code + escaped value of at most 2 * MAX_VALUE_BYTES + 16).
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(s.get(..usize::from(len)).unwrap_or(s));
    }
    out
}

fn decode_entries(key: &[u8], bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let corrupt = || StoreError::CorruptIndex { key: keys::display(key) };
    let (&format, mut rest) = bytes.split_first().ok_or_else(corrupt)?;
    if format != ENTRIES_FORMAT {
        return Err(corrupt());
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or_else(corrupt)?;
        let len = usize::from(u16::from_be_bytes([*len.first().ok_or_else(corrupt)?, *len.get(1).ok_or_else(corrupt)?]));
        let (suffix, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        out.push(suffix.to_vec());
        rest = tail;
    }
    Ok(out)
}

/// Index entries written earlier in the same commit, by resource (a transaction may write one
/// resource twice; the second write must remove what the first added, not what the store has).
pub(crate) type PendingEntries = HashMap<(String, String), Vec<Vec<u8>>>;

impl Commit {
    /// Replaces the index entries of `record`'s resource with those of this version (none for a
    /// deletion). Call it with every version written, in the same commit.
    pub fn index_version(&mut self, store: &Store, record: &VersionRecord, base_url: &str) -> Result<()> {
        let entries = match (&record.resource, record.deleted) {
            (Some(resource), false) => extract::entries(&store.index.set, &record.resource_type, resource, base_url),
            _ => Vec::new(),
        };
        self.put_index(store, &record.resource_type, &record.id, &entries)
    }

    /// Replaces the index entries of one resource with `entries`.
    pub fn put_index(&mut self, store: &Store, resource_type: &str, id: &str, entries: &[Entry]) -> Result<()> {
        let list_key = keys::index_entries(resource_type, id);
        let slot = (resource_type.to_owned(), id.to_owned());
        let previous = match self.index_pending.remove(&slot) {
            Some(p) => p,
            None => match store.tree.get(&list_key)? {
                Some(bytes) => decode_entries(&list_key, &bytes)?,
                None => Vec::new(),
            },
        };
        let mut suffixes: Vec<Vec<u8>> = entries.iter().map(Entry::suffix).collect();
        suffixes.sort();
        suffixes.dedup();
        // Removals first: a batch keeps the last operation on a key, so unchanged entries stay.
        for old in &previous {
            if suffixes.binary_search(old).is_err() {
                self.remove(entry_key(resource_type, old, id));
            }
        }
        for new in &suffixes {
            if previous.binary_search(new).is_err() {
                self.insert_raw(entry_key(resource_type, new, id), Vec::new());
            }
        }
        if suffixes.is_empty() {
            if !previous.is_empty() {
                self.remove(list_key);
            }
        } else if suffixes != previous {
            self.insert_raw(list_key, encode_entries(&suffixes));
        }
        self.index_pending.insert(slot, suffixes);
        Ok(())
    }
}

impl Store {
    /// Calls `visit` with the id of every entry of parameter `code` on `resource_type` that
    /// `probe` selects, then with every id whose parameter overflowed; stops when `visit`
    /// returns false. Ids may repeat (a resource with several matching values).
    pub fn index_scan(&self, resource_type: &str, code: &str, probe: &Probe, mut visit: impl FnMut(&str) -> bool) -> Result<()> {
        let Some(probe) = self.answerable(resource_type, code, probe) else {
            return self.scan_unindexed(resource_type, code, probe, visit);
        };
        let (start, end) = probe_range(resource_type, code, &probe);
        for item in self.tree.range(start..end).keys() {
            let key = item?;
            if let Some(id) = id_of(&key) {
                if !visit(id) {
                    return Ok(());
                }
            }
        }
        let mut overflow = keys::index_param_prefix(resource_type, code);
        overflow.push(EntryKind::Overflow.byte());
        overflow.push(0);
        for item in self.tree.scan_prefix(&overflow).keys() {
            let key = item?;
            if let Some(id) = id_of(&key) {
                if !visit(id) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// This store, reading at most `limit` resources for any one lookup on an unindexed
    /// parameter (the operator's `search.max_scan`).
    pub fn with_scan_limit(mut self, limit: usize) -> Store {
        let current = &self.index;
        self.index =
            std::sync::Arc::new(IndexConfig { set: current.set.clone(), base_url: current.base_url.clone(), scan_limit: limit.max(1) });
        self
    }

    /// Whether `probe` on parameter `code` of `resource_type` is answered from index entries
    /// (the parameter is in the index set and the probe has a compact key). The planner only
    /// drives or narrows by such probes; `index_scan` answers the others by reading resources.
    pub fn index_answers(&self, resource_type: &str, code: &str, probe: &Probe) -> bool {
        self.answerable(resource_type, code, probe).is_some()
    }

    /// The probe as the stored entries answer it (equality keys compacted), if they can.
    fn answerable(&self, resource_type: &str, code: &str, probe: &Probe) -> Option<Probe> {
        if !self.index.set.covers(resource_type, code) {
            return None;
        }
        let kind = SearchParams::current().ok().and_then(|p| p.get(resource_type, code)).map(|p| p.kind);
        match (probe, kind) {
            (Probe::Equal(key), Some(kind)) => extract::compact(kind, key).map(|k| Probe::Equal(k.to_owned())),
            (Probe::Prefix(EntryKind::Equal, _), Some(ParamType::Token | ParamType::Reference)) => None,
            _ => Some(probe.clone()),
        }
    }

    /// `index_scan` for a probe the entries cannot answer: reads every current resource of the
    /// type and compares the probe with the raw entries of `code`, as a full index would.
    fn scan_unindexed(&self, resource_type: &str, code: &str, probe: &Probe, mut visit: impl FnMut(&str) -> bool) -> Result<()> {
        let Some(param) = SearchParams::current().ok().and_then(|p| p.get(resource_type, code)) else { return Ok(()) };
        let (start, end) = probe_range(resource_type, code, probe);
        let mut after: Option<String> = None;
        let mut read = 0usize;
        loop {
            let page = self.list_current(resource_type, after.as_deref(), 1_000)?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            read += page.len();
            let limit = self.index.scan_limit;
            if read > limit {
                return Err(StoreError::ScanLimit { resource_type: resource_type.to_owned(), code: code.to_owned(), limit });
            }
            for (id, cur) in page {
                if cur.deleted {
                    continue;
                }
                let Some(resource) = self.version(resource_type, &id, cur.seq)?.and_then(|r| r.resource) else { continue };
                let Some(raw) = extract::raw_entries(param, resource_type, &resource, &self.index.base_url) else { continue };
                let hit = raw.iter().any(|e| {
                    let key = entry_key(resource_type, &e.suffix(), &id);
                    start <= key && key < end
                });
                if hit && !visit(&id) {
                    return Ok(());
                }
            }
        }
    }

    /// Whether `id` has the equality entry `value` for parameter `code` (or overflowed on it).
    /// True, too, when the index does not answer that probe: the caller checks the resource.
    pub fn index_contains(&self, resource_type: &str, code: &str, value: &str, id: &str) -> Result<bool> {
        let Some(Probe::Equal(value)) = self.answerable(resource_type, code, &Probe::Equal(value.to_owned())) else { return Ok(true) };
        let exact = Entry::text(code, EntryKind::Equal, &value);
        if self.tree.contains_key(entry_key(resource_type, &exact.suffix(), id))? {
            return Ok(true);
        }
        Ok(self.tree.contains_key(entry_key(resource_type, &Entry::overflow(code).suffix(), id))?)
    }

    /// Ids of the current resources of a type, in id order, after `after`, at most `limit`
    /// (deleted ones included: callers skip them when they load the version).
    pub fn current_ids(&self, resource_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let prefix = keys::current_type_prefix(resource_type);
        let start = match after {
            Some(id) => {
                let mut k = keys::current(resource_type, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.tree.range(start..).keys() {
            let k = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(String::from_utf8_lossy(k.get(prefix.len()..).unwrap_or_default()).into_owned());
        }
        Ok(out)
    }
}

/// The key range `[start, end)` of the entries of `code` that `probe` selects.
fn probe_range(resource_type: &str, code: &str, probe: &Probe) -> (Vec<u8>, Vec<u8>) {
    let prefix = keys::index_param_prefix(resource_type, code);
    let with = |kind: EntryKind, bytes: &[u8]| {
        let mut k = prefix.clone();
        k.push(kind.byte());
        escape_into(bytes, &mut k);
        k
    };
    match probe {
        Probe::Equal(text) => {
            let mut k = with(EntryKind::Equal, cut(text).as_bytes());
            k.push(0);
            let mut upper = k.clone();
            upper.pop();
            upper.push(1);
            (k, upper)
        }
        Probe::Prefix(kind, text) => {
            let k = with(*kind, cut(text).as_bytes());
            let upper = prefix_end(&k);
            (k, upper)
        }
        Probe::Start { lo, hi } | Probe::End { lo, hi } => {
            let kind = if matches!(probe, Probe::Start { .. }) { EntryKind::DateStart } else { EntryKind::DateEnd };
            let lower = if *lo == i64::MIN { with(kind, &[]) } else { with(kind, &time_bytes(*lo)) };
            let upper = if *hi == i64::MAX { prefix_end(&with(kind, &[])) } else { with(kind, &time_bytes(*hi)) };
            (lower, upper)
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests;
