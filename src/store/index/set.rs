//! Which SearchParameters get index entries (`[search] index`), and the fingerprint that ties
//! an index on disk to the set and key layout it was built with.
//!
//! In: the configured spec (`"default"`, `"all"`, `"none"`, or a list of `Type.code`,
//! `Type.*`, `"default"` entries). Out: an `IndexSet` the write path and the readers share.
//! A parameter outside the set has no entries; searches on it still answer correctly through
//! the planner's other clauses or its bounded scan, and `Store::index_scan` scans for it.
//! The fingerprint is stored in the store (`keys::meta`); a store opened under another set is
//! rebuilt at startup (`Store::open_indexed`), so an index never answers for a set it was not
//! built with.

use std::collections::{BTreeMap, BTreeSet};

use super::extract::indexed_params_of;
use crate::fhir::FhirVersion;

/// Version of the key layout (`extract` compacts token and reference keys since 2).
const LAYOUT: &str = "herald-index/2";

/// The default set, sized for the queue-server workload: what placers, fulfillers and
/// subscription filters look Tasks and their orders up by. `Subscription.status` is left out
/// on purpose: the server owns it and the planner never uses the stored body for it.
const DEFAULT: &[(&str, &[&str])] = &[
    (
        "Task",
        &[
            "_lastUpdated",
            "authored-on",
            "based-on",
            "business-status",
            "code",
            "focus",
            "identifier",
            "output",
            "owner",
            "part-of",
            "patient",
            "requester",
            "status",
            "subject",
        ],
    ),
    (
        "ServiceRequest",
        &["_lastUpdated", "authored", "based-on", "code-concept", "identifier", "patient", "performer", "requester", "status", "subject"],
    ),
    ("DiagnosticReport", &["_lastUpdated", "based-on", "code", "date", "identifier", "patient", "status", "subject"]),
    ("Observation", &["_lastUpdated", "based-on", "code", "date", "identifier", "patient", "status", "subject"]),
    ("Patient", &["_lastUpdated", "birthdate", "family", "given", "identifier", "name"]),
    ("Practitioner", &["identifier", "name"]),
    ("Organization", &["identifier", "name"]),
    ("Encounter", &["identifier", "patient", "status", "subject"]),
    ("Provenance", &["_lastUpdated", "agent", "target"]),
    ("SubscriptionTopic", &["status", "url"]),
    ("Subscription", &["topic"]),
    ("ValueSet", &["url"]),
    ("CodeSystem", &["url"]),
];

/// The indexed parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexSet {
    /// Every token, reference, uri, string and date parameter of every type.
    All,
    /// These parameter codes, by resource type (empty: no index entries at all).
    Only(BTreeMap<String, BTreeSet<String>>),
}

/// What R4 and R4B index beyond the entries of `DEFAULT` they have: their ServiceRequest
/// `code` (R5 split it into `code-concept` and `code-reference`) and `Basic.code`, by which
/// R4 clients find topics (`Basic?code=SubscriptionTopic`).
const BACKPORT_EXTRA: &[(&str, &str)] = &[("ServiceRequest", "code"), ("Basic", "code")];

impl Default for IndexSet {
    /// The default set of the instance's FHIR version.
    fn default() -> Self {
        IndexSet::default_for(crate::fhir::version::instance())
    }
}

impl IndexSet {
    /// The default set in FHIR `version`: the entries of `DEFAULT` the version has (R4 has no
    /// `SubscriptionTopic`, no `ServiceRequest.code-concept`), plus `BACKPORT_EXTRA` in R4/R4B.
    pub fn default_for(version: FhirVersion) -> IndexSet {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let extra: &[(&str, &str)] = if version.is_backport() { BACKPORT_EXTRA } else { &[] };
        let wanted = DEFAULT.iter().flat_map(|(ty, codes)| codes.iter().map(move |c| (*ty, *c))).chain(extra.iter().copied());
        for (ty, code) in wanted {
            if indexed_params_of(version, ty).iter().any(|p| p.code == code) {
                map.entry(ty.to_owned()).or_default().insert(code.to_owned());
            }
        }
        IndexSet::Only(map)
    }
}

impl IndexSet {
    pub fn none() -> IndexSet {
        IndexSet::Only(BTreeMap::new())
    }

    /// Parses a configured spec; the error names the entry that is not an indexable parameter.
    pub fn from_spec<S: AsRef<str>>(spec: &[S]) -> Result<IndexSet, String> {
        IndexSet::from_spec_for(crate::fhir::version::instance(), spec)
    }

    /// `from_spec` against the SearchParameters of FHIR `version`.
    pub fn from_spec_for<S: AsRef<str>>(version: FhirVersion, spec: &[S]) -> Result<IndexSet, String> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for item in spec {
            let item = item.as_ref().trim();
            match item {
                "all" => return Ok(IndexSet::All),
                "none" => {}
                "default" => {
                    if let IndexSet::Only(d) = IndexSet::default_for(version) {
                        for (ty, codes) in d {
                            map.entry(ty).or_default().extend(codes);
                        }
                    }
                }
                _ => {
                    let Some((ty, code)) = item.split_once('.') else {
                        return Err(format!("`{item}` is neither all, none, default nor Type.code"));
                    };
                    let known = indexed_params_of(version, ty);
                    if known.is_empty() {
                        return Err(format!("`{item}`: {ty} has no indexable SearchParameter (or is not a resource type)"));
                    }
                    if code == "*" {
                        map.entry(ty.to_owned()).or_default().extend(known.iter().map(|p| p.code.clone()));
                    } else if known.iter().any(|p| p.code == code) {
                        map.entry(ty.to_owned()).or_default().insert(code.to_owned());
                    } else {
                        return Err(format!("`{item}` is not a token, reference, uri, string or date SearchParameter of {ty}"));
                    }
                }
            }
        }
        Ok(IndexSet::Only(map))
    }

    /// Whether parameter `code` of `resource_type` has index entries.
    pub fn covers(&self, resource_type: &str, code: &str) -> bool {
        match self {
            IndexSet::All => true,
            IndexSet::Only(map) => map.get(resource_type).is_some_and(|codes| codes.contains(code)),
        }
    }

    /// Canonical text of the set and key layout, stored beside the index.
    pub fn fingerprint(&self) -> String {
        match self {
            IndexSet::All => format!("{LAYOUT} all"),
            IndexSet::Only(map) if map.values().all(BTreeSet::is_empty) => format!("{LAYOUT} none"),
            IndexSet::Only(map) => {
                let items: Vec<String> = map.iter().flat_map(|(ty, codes)| codes.iter().map(move |c| format!("{ty}.{c}"))).collect();
                format!("{LAYOUT} {}", items.join(","))
            }
        }
    }

    /// The set a fingerprint describes; `None` for another layout or an unknown parameter.
    pub fn from_fingerprint(text: &str) -> Option<IndexSet> {
        let rest = text.strip_prefix(LAYOUT)?.strip_prefix(' ')?;
        match rest {
            "all" => Some(IndexSet::All),
            "none" => Some(IndexSet::none()),
            list => IndexSet::from_spec(&list.split(',').collect::<Vec<_>>()).ok(),
        }
    }
}
