//! The index entries of one resource: what every indexed (`IndexSet`) token, reference, uri,
//! string and date SearchParameter of its type (official R5 set) selects in it, as keys.
//!
//! In: the index set, a resource type, the resource, Herald's base URL (absolute references to
//! it are local).
//! Out: sorted entries, bounded: a parameter selecting more than `MAX_PER_PARAM` keys, or
//! arriving after the resource already has `MAX_PER_RESOURCE`, is recorded as one `Overflow`
//! entry instead (the resource then stays a candidate for every probe of it). Values come
//! from `SearchParam::values`, the same evaluation `matcher::clause_matches` uses, so an
//! entry exists for every value a search could match. A parameter that cannot be evaluated on
//! the resource gets no entry: the matcher cannot match it either.
//!
//! A Subscription is indexed in its redacted form (`secrets::redacted`): its header values and
//! signing secrets get no entry, so no answer from the index alone (`_summary=count`, a
//! `_total`, a custom SearchParameter on `Subscription.parameter.value`) can count them.
//!
//! Keys are compacted (`compact`): the R5 equality keys of a value (`system|code`, `|code`,
//! `code`, `system|`; `Type/id`, `id`, `Type/id/_history/v`) become one key, the code or the
//! id, and a probe is mapped the same way, so a probe still finds every resource that has its
//! raw key (and some more, which the caller's check drops). A system-only token probe has no
//! compact key: the index does not answer it (`Store::index_answers`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

use super::{Entry, EntryKind, IndexSet};
use crate::fhir::search::matcher::date_ranges;
use crate::fhir::search::value::normalize_string;
use crate::fhir::search::{reference_keys, token_keys, ParamType, SearchParam, SearchParams};
use crate::fhir::subscription::secrets::redacted;
use crate::fhir::FhirVersion;

pub const MAX_PER_PARAM: usize = 64;
pub const MAX_PER_RESOURCE: usize = 512;

/// Whether parameters of this type get index entries.
pub fn indexed_kind(kind: ParamType) -> bool {
    matches!(kind, ParamType::Token | ParamType::Reference | ParamType::Uri | ParamType::String | ParamType::Date)
}

type ParamList = Arc<Vec<&'static SearchParam>>;

/// The indexed parameters of `resource_type` in the instance's FHIR version: those a search
/// by code on the type would use (`SearchParams::get`), `_id` aside (searched by key
/// directly). Computed once per type and version.
pub fn indexed_params(resource_type: &str) -> ParamList {
    indexed_params_of(crate::fhir::version::instance(), resource_type)
}

/// `indexed_params` in FHIR `version` (configuration is checked before the instance's
/// version is selected, so it names the version it reads).
pub fn indexed_params_of(version: FhirVersion, resource_type: &str) -> ParamList {
    static CACHE: OnceLock<RwLock<HashMap<(FhirVersion, String), ParamList>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(HashMap::new()));
    let key = (version, resource_type.to_owned());
    if let Some(list) = cache.read().ok().and_then(|c| c.get(&key).cloned()) {
        return list;
    }
    let mut list = Vec::new();
    if let Ok(params) = SearchParams::for_version(version) {
        for p in params.iter() {
            if p.code != "_id"
                && indexed_kind(p.kind)
                && p.applies_to(resource_type)
                && params.get(resource_type, &p.code).is_some_and(|chosen| std::ptr::eq(chosen, p))
            {
                list.push(p);
            }
        }
    }
    let list = Arc::new(list);
    if let Ok(mut c) = cache.write() {
        c.insert(key, list.clone());
    }
    list
}

/// The entries of `resource` (a `resource_type`) for the parameters `set` covers, sorted and
/// without duplicates. A Subscription's are those of its redacted form (see the module doc).
pub fn entries(set: &IndexSet, resource_type: &str, resource: &Value, base_url: &str) -> Vec<Entry> {
    let resource = redacted(resource);
    let resource = resource.as_ref();
    let mut out = Vec::new();
    for param in indexed_params(resource_type).iter() {
        if !set.covers(resource_type, &param.code) {
            continue;
        }
        let Ok(selected) = param.values(resource_type, resource) else { continue };
        if selected.is_empty() {
            continue;
        }
        let mut these = param_entries(param, &selected, base_url, true);
        these.sort();
        these.dedup();
        if these.len() > MAX_PER_PARAM || out.len() + these.len() > MAX_PER_RESOURCE {
            out.push(Entry::overflow(&param.code));
        } else {
            out.extend(these);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The entries of one parameter of `resource`, raw (every R5 equality key form, as a probe
/// before `compact`): what a scan for an unindexed parameter compares probes with. `None`
/// when the parameter cannot be evaluated on the resource.
pub fn raw_entries(param: &SearchParam, resource_type: &str, resource: &Value, base_url: &str) -> Option<Vec<Entry>> {
    let resource = redacted(resource);
    let selected = param.values(resource_type, &resource).ok()?;
    Some(param_entries(param, &selected, base_url, false))
}

fn param_entries(param: &SearchParam, selected: &[&Value], base_url: &str, compacted: bool) -> Vec<Entry> {
    let code = param.code.as_str();
    let equal = |keys: Vec<String>| -> Vec<Entry> {
        keys.iter()
            .filter_map(|k| if compacted { compact(param.kind, k) } else { Some(k.as_str()) })
            .map(|k| Entry::text(code, EntryKind::Equal, k))
            .collect()
    };
    match param.kind {
        ParamType::Token => equal(token_keys(selected)),
        ParamType::Reference => equal(reference_keys(selected, base_url)),
        ParamType::Uri => selected.iter().filter_map(|v| v.as_str()).map(|u| Entry::text(code, EntryKind::Equal, u)).collect(),
        ParamType::String => crate::fhir::search::matcher::strings(selected)
            .iter()
            .map(|s| Entry::text(code, EntryKind::Text, &normalize_string(s)))
            .collect(),
        ParamType::Date => date_ranges(selected)
            .iter()
            .flat_map(|r| [Entry::date(code, EntryKind::DateStart, r.start, r.end), Entry::date(code, EntryKind::DateEnd, r.end, r.start)])
            .collect(),
        _ => Vec::new(),
    }
}

/// The compact form of an R5 equality key of a parameter of `kind` (see the module doc):
/// a token key becomes its code (`None` for a system-only key), a local reference its id;
/// other keys stay as they are.
pub fn compact(kind: ParamType, key: &str) -> Option<&str> {
    match kind {
        ParamType::Token => {
            // Systems and codes are escaped (`\|`), so the separator is the one bare `|`.
            let mut bar = None;
            let mut escaped = false;
            for (i, c) in key.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '|' => bar = Some(i),
                    _ => {}
                }
            }
            match bar {
                None => Some(key),
                Some(at) => key.get(at + 1..).filter(|code| !code.is_empty()),
            }
        }
        ParamType::Reference => Some(local_id(key).unwrap_or(key)),
        _ => Some(key),
    }
}

/// The id of a local reference key `Type/id` or `Type/id/_history/v`.
fn local_id(key: &str) -> Option<&str> {
    if key.contains('|') {
        return None; // a canonical with a version
    }
    let mut parts = key.split('/');
    let (ty, id) = (parts.next()?, parts.next()?);
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => {}
        _ => return None,
    }
    (crate::fhir::types::is_resource_type(ty) && crate::fhir::types::is_valid_id(id)).then_some(id)
}
