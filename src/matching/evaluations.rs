//! The per-change cache of SearchParameter results: each parameter's expression is evaluated
//! at most once per change (one resource version), and its index keys derived at most once per
//! key space, however many lookups and filter checks need them.
//!
//! In: the changed type and id, the state filters look at, Herald's base. Out: the values a
//! parameter selects, or `None` when it cannot be evaluated, which is reported once in the
//! diagnostics. Lives for one `match_change` call; pure.

use serde_json::Value;

use crate::fhir::search::SearchParam;
use crate::registry::KeySpace;

/// SearchParameter results on one resource version, computed on first use.
pub struct Evaluations<'c> {
    resource_type: &'c str,
    id: &'c str,
    resource: Option<&'c Value>,
    base_url: &'c str,
    /// A handful per change (one per parameter some filter uses): a linear scan is cheapest.
    entries: Vec<Entry<'c>>,
}

struct Entry<'c> {
    param: &'static SearchParam,
    /// `None`: not evaluable on this resource (already reported).
    values: Option<Vec<&'c Value>>,
    keys: Vec<(KeySpace, Vec<String>)>,
}

impl<'c> Evaluations<'c> {
    /// `resource` is the state filters look at; `None` (a delete without its previous state)
    /// selects nothing.
    pub fn new(resource_type: &'c str, id: &'c str, resource: Option<&'c Value>, base_url: &'c str) -> Self {
        Evaluations { resource_type, id, resource, base_url, entries: Vec::new() }
    }

    pub fn resource_type(&self) -> &'c str {
        self.resource_type
    }

    pub fn base_url(&self) -> &'c str {
        self.base_url
    }

    fn entry(&mut self, param: &'static SearchParam, diagnostics: &mut Vec<String>) -> Option<&mut Entry<'c>> {
        if let Some(at) = self.entries.iter().position(|e| e.param.url == param.url) {
            return self.entries.get_mut(at);
        }
        let values = match self.resource.map(|r| param.values(self.resource_type, r)) {
            Some(Ok(values)) => Some(values),
            Some(Err(e)) => {
                diagnostics.push(format!(
                    "filter {} not evaluable on {}/{}: {e}; subscriptions filtering on it do not match",
                    param.code, self.resource_type, self.id
                ));
                None
            }
            None => None,
        };
        self.entries.push(Entry { param, values, keys: Vec::new() });
        self.entries.last_mut()
    }

    /// The values `param` selects in the resource; `None` when it cannot be evaluated.
    pub fn values(&mut self, param: &'static SearchParam, diagnostics: &mut Vec<String>) -> Option<&[&'c Value]> {
        self.entry(param, diagnostics)?.values.as_deref()
    }

    /// The resource's keys for `param` in `space` (see `KeySpace::keys`); empty when the
    /// parameter cannot be evaluated.
    pub fn keys(&mut self, param: &'static SearchParam, space: KeySpace, diagnostics: &mut Vec<String>) -> &[String] {
        let base_url = self.base_url;
        let Some(entry) = self.entry(param, diagnostics) else { return &[] };
        let Some(values) = entry.values.as_deref() else { return &[] };
        if let Some(at) = entry.keys.iter().position(|(s, _)| *s == space) {
            return entry.keys.get(at).map_or(&[], |(_, keys)| keys.as_slice());
        }
        let keys = space.keys(values, base_url);
        entry.keys.push((space, keys));
        entry.keys.last().map_or(&[], |(_, keys)| keys.as_slice())
    }
}
