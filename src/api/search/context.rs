//! What search needs from the store beyond the resource in hand: current versions (with the
//! server-owned Subscription status shown over the stored body, and its secrets redacted),
//! `resolve()` for chains, `referencing` for `_has` (through the reference index), and
//! ValueSets stored in Herald for `:in`/`:not-in`.
//!
//! In: a `Store`, Herald's base URL and, for an authenticated caller, what that caller may
//! see (`restricted`): every resource a search reads comes through `load`, so a resource the
//! caller may not see is absent for matching, totals, chains, `_has` and includes alike.
//! Out: resources and codes. It never writes. ValueSets
//! are expanded from `expansion.contains`, or from `compose.include[].concept` when every
//! include lists its codes; anything needing a terminology server (filters, whole code
//! systems, other value sets) is an error the caller reports, never a silent empty set.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::fhir::instant::now_millis;
use crate::fhir::search::include::local_target;
use crate::fhir::search::matcher::{Code, CodeHierarchy, SearchContext};
use crate::fhir::search::{normalize_reference_query, reference_matches, SearchError, SearchParam};
use crate::store::index::Probe;
use crate::store::{Store, StoreError};

/// Most resources one `_has` step reads.
const MAX_REFERENCING: usize = 1_000;

/// A ValueSet's codes, or why they cannot be had (see `SearchContext::value_set`).
type Expansion = Result<Option<Vec<Code>>, String>;

/// Whether the caller may see `(type, id, resource)`.
pub type Visible<'a> = Box<dyn Fn(&str, &str, &Value) -> bool + 'a>;

pub struct StoreContext<'a> {
    pub store: &'a Store,
    pub base_url: &'a str,
    value_sets: RefCell<HashMap<String, Expansion>>,
    /// The first store failure met inside a trait method (which cannot return it).
    pub failure: RefCell<Option<StoreError>>,
    /// What the caller may see; `None`: everything (anonymous access).
    visible: Option<Visible<'a>>,
}

impl<'a> StoreContext<'a> {
    pub fn new(store: &'a Store, base_url: &'a str) -> Self {
        StoreContext { store, base_url, value_sets: RefCell::new(HashMap::new()), failure: RefCell::new(None), visible: None }
    }

    /// The same context for a caller who may see only what `visible` admits.
    pub fn restricted(mut self, visible: Visible<'a>) -> Self {
        self.visible = Some(visible);
        self
    }

    /// Whether this context hides anything from its caller (totals then come from checked
    /// matches only, never from index counts).
    pub fn is_restricted(&self) -> bool {
        self.visible.is_some()
    }

    /// The current, live version of `Type/id` as a search sees it; `None` if absent or deleted.
    pub fn load(&self, resource_type: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let Some(rec) = self.store.latest(resource_type, id)? else { return Ok(None) };
        if rec.deleted {
            return Ok(None);
        }
        let Some(mut resource) = rec.resource else { return Ok(None) };
        if resource_type == "Subscription" {
            // The server owns Subscription.status (see rest::with_live_status).
            if let (Some(state), Some(obj)) = (self.store.sub_state(id)?, resource.as_object_mut()) {
                obj.insert("status".into(), json!(state.status.code_in(crate::fhir::version::instance())));
            }
            // Redacted here, where search reads it, rather than when rendering: criteria,
            // `_sort`, chains and `_include` all see the placeholder, so no search (a custom
            // SearchParameter on `Subscription.parameter.value`, say) can test a secret.
            crate::api::redact::subscription(&mut resource);
        }
        if self.visible.as_ref().is_some_and(|visible| !visible(resource_type, id, &resource)) {
            return Ok(None);
        }
        Ok(Some(resource))
    }

    fn note(&self, e: StoreError) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(e);
        }
    }

    /// A local reference (`Type/id`, optionally versioned or absolute on our base) as (type, id).
    pub fn local_target(&self, reference: &str) -> Option<(String, String)> {
        local_target(reference, self.base_url)
    }

    /// The stored canonical resource of `resource_type` with `url` (`url|version` picks a
    /// version), if any.
    fn canonical(&self, resource_type: &str, url: &str) -> Result<Option<Value>, String> {
        let (canonical, version) = match url.split_once('|') {
            Some((c, v)) => (c, Some(v)),
            None => (url, None),
        };
        let mut ids = BTreeSet::new();
        self.store
            .index_scan(resource_type, "url", &Probe::Equal(canonical.to_owned()), |id| {
                ids.insert(id.to_owned());
                ids.len() < 100
            })
            .map_err(|e| e.to_string())?;
        for id in ids {
            let Some(found) = self.load(resource_type, &id).map_err(|e| e.to_string())? else { continue };
            if found.get("url").and_then(Value::as_str) != Some(canonical) {
                continue;
            }
            if version.is_some() && found.get("version").and_then(Value::as_str) != version {
                continue;
            }
            return Ok(Some(found));
        }
        Ok(None)
    }

    fn expand(&self, url: &str) -> Expansion {
        let Some(vs) = self.canonical("ValueSet", url)? else { return Ok(None) };
        expand_value_set(url, &vs, &|system| self.canonical("CodeSystem", system).ok().flatten()).map(Some)
    }
}

/// Every code of a CodeSystem resource whose content is complete; `None` otherwise.
fn all_codes(cs: &Value) -> Option<Vec<String>> {
    fn walk(concepts: &Value, out: &mut Vec<String>, depth: usize) {
        for c in concepts.as_array().into_iter().flatten() {
            if let Some(code) = c.get("code").and_then(Value::as_str) {
                out.push(code.to_owned());
            }
            if depth < 32 {
                if let Some(children) = c.get("concept") {
                    walk(children, out, depth + 1);
                }
            }
        }
    }
    if cs.get("content").and_then(Value::as_str) != Some("complete") {
        return None;
    }
    let mut out = Vec::new();
    walk(cs.get("concept")?, &mut out, 0);
    Some(out)
}

/// The codes of a ValueSet resource, from its expansion or its compose: explicit codes, or a
/// whole code system Herald holds with complete content (`code_system` looks it up).
pub fn expand_value_set(url: &str, vs: &Value, code_system: &dyn Fn(&str) -> Option<Value>) -> Result<Vec<Code>, String> {
    fn contains(items: &Value, out: &mut Vec<Code>, depth: usize) {
        for item in items.as_array().into_iter().flatten() {
            if let Some(code) = item.get("code").and_then(Value::as_str) {
                out.push((item.get("system").and_then(Value::as_str).map(str::to_owned), code.to_owned()));
            }
            if depth < 16 {
                if let Some(nested) = item.get("contains") {
                    contains(nested, out, depth + 1);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(items) = vs.pointer("/expansion/contains") {
        contains(items, &mut out, 0);
        return Ok(out);
    }
    let needs_server = |what: &str| {
        format!("ValueSet {url} needs a terminology server to expand ({what}); Herald expands only explicit codes or a stored expansion")
    };
    let Some(compose) = vs.get("compose") else {
        return Err(needs_server("it has neither compose nor expansion"));
    };
    let listed = |part: &Value, at: &str| -> Result<Vec<Code>, String> {
        if part.get("filter").is_some() {
            return Err(needs_server(&format!("{at} uses filters")));
        }
        if part.get("valueSet").is_some() {
            return Err(needs_server(&format!("{at} includes other value sets")));
        }
        let system = part.get("system").and_then(Value::as_str).map(str::to_owned);
        let Some(concepts) = part.get("concept").and_then(Value::as_array) else {
            let whole = system.as_deref().and_then(code_system).and_then(|cs| all_codes(&cs));
            return match whole {
                Some(codes) => Ok(codes.into_iter().map(|c| (system.clone(), c)).collect()),
                None => Err(needs_server(&format!("{at} includes a whole code system Herald does not hold in full"))),
            };
        };
        Ok(concepts.iter().filter_map(|c| c.get("code").and_then(Value::as_str)).map(|c| (system.clone(), c.to_owned())).collect())
    };
    for (i, include) in compose.get("include").and_then(Value::as_array).into_iter().flatten().enumerate() {
        out.extend(listed(include, &format!("compose.include[{i}]"))?);
    }
    for (i, exclude) in compose.get("exclude").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let gone = listed(exclude, &format!("compose.exclude[{i}]"))?;
        out.retain(|c| !gone.contains(c));
    }
    Ok(out)
}

impl SearchContext for StoreContext<'_> {
    fn base_url(&self) -> &str {
        self.base_url
    }

    fn now_millis(&self) -> i64 {
        now_millis()
    }

    fn resolve(&self, reference: &str) -> Option<Value> {
        let (ty, id) = self.local_target(reference)?;
        self.load(&ty, &id).unwrap_or_else(|e| {
            self.note(e);
            None
        })
    }

    fn referencing(&self, source_type: &str, param: &SearchParam, target: &str) -> Result<Vec<Value>, SearchError> {
        let Some(key) = normalize_reference_query(target, self.base_url) else { return Ok(Vec::new()) };
        let mut ids = BTreeSet::new();
        let scanned = self.store.index_scan(source_type, &param.code, &Probe::Equal(key), |id| {
            ids.insert(id.to_owned());
            ids.len() < MAX_REFERENCING
        });
        if let Err(e) = scanned {
            self.note(e);
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for id in ids {
            match self.load(source_type, &id) {
                Ok(Some(resource)) => {
                    // The index is a pre-filter (overflowed entries, cut values): confirm.
                    if reference_matches(&param.values(source_type, &resource)?, target, self.base_url) {
                        out.push(resource);
                    }
                }
                Ok(None) => {}
                Err(e) => self.note(e),
            }
        }
        Ok(out)
    }

    fn code_system(&self, url: &str) -> Result<Option<CodeHierarchy>, String> {
        Ok(self.canonical("CodeSystem", url)?.map(|cs| CodeHierarchy::from_code_system(&cs)))
    }

    fn value_set(&self, url: &str) -> Result<Option<Vec<Code>>, String> {
        if let Some(known) = self.value_sets.borrow().get(url) {
            return known.clone();
        }
        let expanded = self.expand(url);
        self.value_sets.borrow_mut().insert(url.to_owned(), expanded.clone());
        expanded
    }
}
