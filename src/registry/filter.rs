//! What a bound `filterBy` means, in the two forms matching needs: a check on the values its
//! SearchParameter selected in a resource ([`BoundFilter::matches`]), and, when equality
//! decides it, the key under which the index files the subscription ([`BoundFilter::index_key`])
//! together with the keys a resource's values produce ([`KeySpace::keys`]).
//!
//! The two forms must agree: `filter.matches(values)` is true exactly when the filter's
//! `IndexKey::Exact(space, key)` is among `space.keys(values)`. The equivalence proptest in
//! `matching` checks it. Plain token and reference equality is answered by key; every other
//! filter (comparators, modifiers, several values, string, date, number, quantity, uri,
//! composite) is decided by the search engine (`fhir::search::matcher::param_matches`), the same
//! code REST search and `queryCriteria` use, and `index_key` answers `Scan`. Pure; no IO.

use serde_json::Value;

use crate::fhir::search::matcher::{param_matches, NoContext};
use crate::fhir::search::query::Modifier;
use crate::fhir::search::value::SearchValue;
use crate::fhir::search::{normalize_reference_query, normalize_token_query, reference_keys, reference_matches, token_keys, token_matches};
use crate::fhir::search::{SearchError, SearchParam};

/// How a bound filter compares values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// Token equality with one value and no modifier: answered by key.
    Token,
    /// Reference equality with one value, no modifier (or `:[type]` folded in): by key.
    Reference,
    /// Anything else: decided by the search engine on every change.
    Search,
}

/// The parsed meaning of a filter on one of its parameters.
#[derive(Debug, Clone)]
pub struct FilterSemantics {
    pub modifier: Option<Modifier>,
    /// ORed.
    pub values: Vec<SearchValue>,
}

/// A filter resolved to the SearchParameter it evaluates, per resource type it applies to.
#[derive(Debug)]
pub struct BoundFilter {
    /// `(resource type, parameter)`: the filter applies to changes of these types only;
    /// `Resource` stands for every type.
    pub params: Vec<(String, &'static SearchParam)>,
    pub kind: FilterKind,
    /// The search value as written (with any comparator as its prefix).
    pub value: String,
    /// The parsed modifier and values, one per entry of `params` (same order).
    pub semantics: Vec<FilterSemantics>,
}

/// A family of index keys: values and search values normalized the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpace {
    /// `token_keys` / `normalize_token_query`.
    Token,
    /// `reference_keys` / `normalize_reference_query`, relative to Herald's base.
    Reference,
}

/// How the index can answer a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexKey {
    /// By lookup: the filter matches a resource exactly when `key` is among the resource's keys
    /// in `space`.
    Exact(KeySpace, String),
    /// Never: the search value can match nothing (for example `|` as a token).
    Never,
    /// Not by lookup: the filter is checked on every change (comparators, modifiers, or a
    /// value whose key depends on a base the index does not know).
    Scan,
}

impl BoundFilter {
    pub fn param_for(&self, resource_type: &str) -> Option<&'static SearchParam> {
        self.params.iter().find(|(t, _)| t == resource_type).map(|(_, p)| *p)
    }

    /// The parameter this filter evaluates on a change of `resource_type`: its own for the
    /// type, else one bound for every type. `None`: R5 applies a filter only to resources of
    /// its type, so it does not constrain this change.
    pub fn applicable_param(&self, resource_type: &str) -> Option<&'static SearchParam> {
        self.param_for(resource_type).or_else(|| self.param_for("Resource"))
    }

    /// The concrete resource types this filter names (`Resource` left out).
    pub fn named_types(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(t, _)| t.as_str()).filter(|t| *t != "Resource")
    }

    /// Whether the values `param` selected in a resource satisfy the filter. `base_url` is
    /// Herald's own FHIR base. Errors only for a filter the search engine cannot decide.
    pub fn matches(&self, param: &SearchParam, values: &[&Value], base_url: &str) -> Result<bool, SearchError> {
        match self.kind {
            FilterKind::Token => Ok(token_matches(values, &self.value)),
            FilterKind::Reference => Ok(reference_matches(values, &self.value, base_url)),
            FilterKind::Search => {
                let at = self.params.iter().position(|(_, p)| std::ptr::eq(*p, param));
                let Some(semantics) = at.and_then(|i| self.semantics.get(i)) else {
                    return Err(SearchError::Unsupported { url: param.url.clone(), what: "a filter bound to another parameter".into() });
                };
                param_matches(param, semantics.modifier.as_ref(), &semantics.values, values, &NoContext { base_url })
            }
        }
    }

    /// How the index can answer this filter. `base_url` is the base reference values are
    /// normalized against; `None` when unknown, which leaves absolute URLs to `Scan`.
    pub fn index_key(&self, base_url: Option<&str>) -> IndexKey {
        let exact = |space, key: Option<String>| key.map_or(IndexKey::Never, |k| IndexKey::Exact(space, k));
        match self.kind {
            FilterKind::Search => IndexKey::Scan,
            FilterKind::Token => exact(KeySpace::Token, normalize_token_query(&self.value)),
            FilterKind::Reference => match base_url {
                Some(base) => exact(KeySpace::Reference, normalize_reference_query(&self.value, base)),
                // Only an absolute http(s) value is read relative to the base; any other
                // normalizes the same under every base.
                None if self.value.starts_with("http://") || self.value.starts_with("https://") => IndexKey::Scan,
                None => exact(KeySpace::Reference, normalize_reference_query(&self.value, "")),
            },
        }
    }
}

impl KeySpace {
    /// The keys `values` produce in this space, sorted and without duplicates.
    pub fn keys(self, values: &[&Value], base_url: &str) -> Vec<String> {
        match self {
            KeySpace::Token => token_keys(values),
            KeySpace::Reference => reference_keys(values, base_url),
        }
    }
}
